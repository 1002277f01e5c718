//! The learning layer: judged groups → preference pairs → optimiser steps on the adapter. It uses
//! the model layer and nothing above it.
//!
//! - `objectives`: the [`Objective`] trait and one file per loss ([`Sppo`], [`Inpo`], [`Dpo`],
//!   [`Ipo`], [`Rpo`]), as `research/algorithms.md` defines them.
//! - `data`: judged groups → best-versus-worst pairs with win-rates ([`group_pair`]), estimated by
//!   `flywheel_judge`.
//! - `train`: frozen log-probs once per pair ([`prepare_pairs`]), then [`Trainer::step`].
//! - `grad`: per-sequence backward, with optional per-layer recomputation.
//! - `optim`: AdamW on the LoRA parameters, clipping, warmup + decay ([`OptimConfig`]).

mod data;
mod grad;
mod objectives;
mod optim;
mod train;

pub use data::{build_pairs, group_pair, Candidate, JudgedGroup, PairSelection};
#[cfg(test)]
pub(crate) use grad::{recompute_backward, LoraGrads};
pub use objectives::{Dpo, Inpo, Ipo, Objective, PairBatch, Reference, Rpo, Sppo, SppoVariant};
pub use optim::{OptimConfig, Schedule};
#[cfg(test)]
pub(crate) use train::{accumulate_gradients, GradOptions};
pub use train::{prepare_pairs, PairExample, PreparedPair, StepMetrics, TrainConfig, Trainer};
