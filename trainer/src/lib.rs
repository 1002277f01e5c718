//! Flywheel's trainer: turns judged groups into LoRA adapters that the server hot-swaps in.
//!
//! # Layout
//! Four layers, each using only the ones above it in this list; every public name is re-exported
//! here, once, and the modules themselves are private.
//! - `model`: the llama-family policy ([`Model`]) from differentiable candle ops, with [`Config`],
//!   LoRA ([`LoraConfig`]), the fused CPU ops, packing ([`Sequence`]s into one batch) and
//!   log-probs ([`sequence_logprobs`]). [`Adapter`] picks π_ref (off), π_θ (trainable) or a frozen
//!   π_t per pass.
//! - `learning`: the [`Objective`] trait and one file per loss ([`Sppo`], [`Inpo`], [`Dpo`],
//!   [`Ipo`], [`Rpo`]); judged groups → best-versus-worst pairs ([`group_pair`], win-rates from
//!   `flywheel_judge`); the training step ([`Trainer`]); AdamW ([`OptimConfig`]). Beside the
//!   pairwise losses, the token-level GRPO family on scalar rewards ([`Grpo`], [`group_advantages`])
//!   and consistency-GRPO's rewards ([`UnitExtractor`], [`consistency_rewards`]; §5.2, our
//!   proposal).
//! - `files`: PEFT adapter files, written atomically with a sha256 ([`write_adapter`]); base
//!   model files ([`Model::load`] from an HF directory or a GGUF; [`import_gguf`];
//!   [`write_tiny_llama`], the test fixture).
//! - `run`: the only part that talks to the store: one training job from recorded run to a
//!   `candidate` adapter ([`run_job`], its data from [`pairs_from_store`]), and the worker that
//!   trains whenever enough new judgments arrive ([`try_train_once`], [`run_every`],
//!   [`WorkerGuard`]).
//!
//! Beside them: `error` ([`Error`], the enum every fallible function returns, except
//! [`ModelFileError`] for model directories) and, in tests only, `guards`, the autograd guards of
//! `research/trainer.md` §7 on the tiny model.

mod error;
mod files;
#[cfg(test)]
mod guards;
mod learning;
mod model;
mod run;

pub use error::{Error, Result};
pub use files::{
    gguf_tokenizer, import_gguf, read_adapter, write_adapter, write_random_llama, write_tiny_llama,
    AdapterConfig, ImportSummary, ModelFileError, RandomShape, IMPORT_MARKER, TINY_SPECIAL_TOKENS,
};
pub use learning::{
    build_pairs, canonical_unit, consistency_entropy, consistency_rewards, entropy_share,
    group_advantages, group_pair, helpfulness, is_zero_variance, jaccard, loo_agreement,
    prepare_pairs, prepare_rollouts, stability, top_unit_share, AdvantageConfig, Aggregation,
    Baseline, Candidate, ConsistencyConfig, ConsistencyRewards, Dpo, ExtractorSpec, Grpo,
    GrpoStats, GrpoStepMetrics, GrpoTrainer, Inpo, Ipo, ItemSpec, JudgedGroup, Objective,
    OptimConfig, PairBatch, PairExample, PairSelection, PatternSpec, PreparedPair, PreparedRollout,
    Reference, RewardStd, Rollout, RolloutCheck, RolloutGroup, RolloutReport, Rpo, ScaleRewards,
    Schedule, Sppo, SppoVariant, StabilityMeasure, StepMetrics, TokenBatch, TrainConfig, Trainer,
    UnitExtractor, UnitSet, EXTRACTOR_CODE_VERSION,
};
pub use model::{
    sampled_logprobs, sequence_logprobs, Adapter, Compute, Config, LoraConfig, LoraModule,
    LoraTargets, LoraWeights, Model, Sequence, SequenceLogprobs, TrainDevice, TrainDtype,
};
pub use run::{
    consistency_report, pairs_from_store, rollouts_from_store, run_every, run_job, spawn_worker,
    try_train_once, Algorithm, ConsistencyReport, DataReport, GrpoRewards, GrpoSettings, JobConfig,
    Outcome, Progress, RolloutData, WorkerConfig, WorkerGuard,
};
