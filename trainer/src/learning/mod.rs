//! The learning layer: judged groups → preference pairs → optimiser steps on the adapter. It uses
//! the model layer and nothing above it.
//!
//! - `objectives`: the [`Objective`] trait and one file per loss ([`Sppo`], [`Inpo`], [`Dpo`],
//!   [`Ipo`], [`Rpo`]), as `research/algorithms.md` defines them.
//! - `grpo`: the token-level GRPO family ([`Grpo`]: DeepSeekMath, DAPO, Dr. GRPO, RLOO; §4) on
//!   scalar rewards: advantages ([`group_advantages`]), the clipped surrogate against the behaviour
//!   log-probs with k3 KL, and the four aggregations ([`Aggregation`]).
//! - `consistency`: consistency-GRPO's rewards (§5.2, our proposal, not the paper's formulas): the
//!   versioned information-unit extractor ([`UnitExtractor`]) and [`consistency_rewards`].
//! - `data`: judged groups → best-versus-worst pairs with win-rates ([`group_pair`]), estimated by
//!   `flywheel_judge`.
//! - `train`: frozen log-probs once per pair ([`prepare_pairs`]), then [`Trainer::step`].
//! - `rollouts`: rewarded groups → advantages, each response's stored behaviour log-probs checked
//!   against the policy being trained ([`prepare_rollouts`]); `grpo_step`: [`GrpoTrainer::step`].
//! - `grad`: per-sequence backward, with optional per-layer recomputation.
//! - `optim`: AdamW on the LoRA parameters, clipping, warmup + decay ([`OptimConfig`]).

mod consistency;
mod data;
mod grad;
mod grpo;
mod grpo_step;
mod objectives;
mod optim;
mod rollouts;
mod train;

pub use consistency::{
    canonical_unit, consistency_entropy, consistency_rewards, entropy_share, helpfulness, jaccard,
    loo_agreement, stability, top_unit_share, ConsistencyConfig, ConsistencyRewards, ExtractorSpec,
    ItemSpec, PatternSpec, StabilityMeasure, UnitExtractor, UnitSet, EXTRACTOR_CODE_VERSION,
};
pub use data::{build_pairs, group_pair, Candidate, JudgedGroup, PairSelection};
#[cfg(test)]
pub(crate) use grad::{recompute_backward, LoraGrads};
pub use grpo::{
    group_advantages, is_zero_variance, AdvantageConfig, Aggregation, Baseline, Grpo, GrpoStats,
    RewardStd, ScaleRewards, TokenBatch,
};
pub use grpo_step::{GrpoStepMetrics, GrpoTrainer};
pub use objectives::{Dpo, Inpo, Ipo, Objective, PairBatch, Reference, Rpo, Sppo, SppoVariant};
pub use optim::{OptimConfig, Schedule};
pub use rollouts::{
    prepare_rollouts, PreparedRollout, Rollout, RolloutCheck, RolloutGroup, RolloutReport,
};
#[cfg(test)]
pub(crate) use train::{accumulate_gradients, GradOptions};
pub use train::{prepare_pairs, PairExample, PreparedPair, StepMetrics, TrainConfig, Trainer};
