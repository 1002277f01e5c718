//! # Layout
//!
//! The data model of Flywheel and every SQL statement in the workspace: nothing outside this crate
//! talks SQL. Each query is written once, with `$N` placeholders that both Postgres and SQLite accept,
//! and runs on either backend through [`Store`].
//!
//! - `connect`: [`Store`] (a pool for one of the two backends), [`Store::connect`] from a URL
//!   (sized by [`PoolConfig`] through [`Store::connect_with`]), migrations, health ping.
//! - `groups`: insert and read groups and their responses, list groups newest first.
//! - `adapter_files`: which PEFT directory a version is served from, verified against its sha256;
//!   [`AdapterFault`], the faults of an adapter itself.
//! - `adapters`: the adapter versions (version 0 is the base model), which one is active, and
//!   registering a new one under the next version.
//! - `decisions`: the one transaction that changes the active version; promotions and
//!   retirements of candidates, conditional on the expected active version and recorded with
//!   their evidence.
//! - `duels`: duels (a candidate and the incumbent on one evaluation prompt), and the judgments of
//!   responses by different versions that the arena reads.
//! - `train_runs`: training jobs, their per-step metrics, and the adapter each one produces.
//! - `training_data`: the groups of a data window a train run reads (judged, rewarded, or variant
//!   groups), never duels nor held-out variant groups.
//! - `imports`: judged groups from a preference dataset, stored whole and at most once.
//! - `eval_prompts`: the held-out evaluation prompts duels are drawn from; no training query
//!   reads them. Each prompt is stored once, known by the sha256 of its messages.
//! - `judgments`: store judgments in all-or-nothing, idempotent batches; read and list them.
//! - `judgment_types`: the judgment values and their parsed nouns (`Outcome`, `JudgmentSource`,
//!   `IdempotencyKey`).
//! - `variants`: variant groups (a canonical prompt and its paraphrases, each sampled alike): a
//!   group of kind `variants` and what it is, stored together; listed oldest first.
//! - `rewards`: store rewards (a scalar score of one response) in all-or-nothing, idempotent
//!   batches, as judgments are; read and list them.
//! - `reward_types`: the reward values (`RewardSource`, `NewReward`, `Reward`, `RewardFilter`).
//! - `assignments`: the annotation queue: which pair an annotator judges next, and its answer.
//! - `agreement`: counts and speed per annotator, and the verdicts on pairs judged by several.
//! - `api_keys`: API keys, stored as the sha256 of their secret, with their scopes.
//! - `hash`: sha256 hex and the canonical JSON that request hashes are taken over.
//! - `types`: the group and response values callers build and read back.
//! - `text`: what text can be stored (no NUL, on either backend), checked at the edge and here.
//! - `text_enum`: the small string-backed enums (`kind`, `endpoint`, `status` columns).
//! - `timestamp`: how a point in time is stored, so SQLite text timestamps sort as time.
//! - `error`: [`Error`], the causes a caller can match on.

mod adapter_files;
mod adapters;
mod agreement;
mod api_keys;
mod assignments;
mod connect;
mod decisions;
mod duels;
mod error;
mod eval_prompts;
mod groups;
mod hash;
mod imports;
mod judgment_types;
mod judgments;
mod reward_types;
mod rewards;
pub mod text;
mod text_enum;
mod timestamp;
mod train_runs;
mod training_data;
mod types;
mod variants;

pub use adapter_files::{files_sha256, AdapterFault, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
pub use adapters::{ActivationListener, Adapter, AdapterStatus, NewAdapter};
pub use agreement::{AnnotatorStats, SharedJudgment};
pub use api_keys::{hash_api_key, ApiKey, Scope};
pub use assignments::Assignment;
pub use connect::{Backend, PoolConfig, Store, DEFAULT_SQLITE_URL};
pub use decisions::{AdapterDecision, DecidedBy, DecisionAction, Evidence, NewDecision};
pub use duels::{DuelProgress, NewDuel, VersionJudgment};
pub use error::{Error, Result};
pub use eval_prompts::{EvalPrompt, NewEvalPrompt, MAX_EVAL_LABEL_CHARS, MAX_EVAL_PROMPT_BATCH};
pub use imports::ImportedGroup;
pub use judgment_types::{
    IdempotencyKey, Judgment, JudgmentFilter, JudgmentSource, NewJudgment, Outcome,
    MAX_JUDGMENT_BATCH, MAX_KEY_CHARS,
};
pub use reward_types::{
    NewReward, Reward, RewardFilter, RewardSource, MAX_REWARD_BATCH, MAX_REWARD_MAGNITUDE,
};
pub use train_runs::{NewTrainRun, TrainRun, TrainRunStatus, TrainStep};
pub use training_data::{QualityGate, TrainingDataFilter, TrainingGroup, TrainingSelect};
pub use types::{
    Endpoint, Group, GroupFilter, GroupKind, GroupWithResponses, NewGroup, NewResponse, Response,
    StoredMessage, StoredPrompt, MAX_LIST_LIMIT,
};
pub use variants::{
    NewVariantGroup, ParaphraseSource, VariantGroup, VariantGroupFilter, MAX_FAMILY_CHARS,
};
