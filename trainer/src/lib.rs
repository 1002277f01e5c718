//! Flywheel's trainer: turns judged groups into LoRA adapters that the server hot-swaps in.
//!
//! # Layout
//! - `model_files`: model directories on disk in the Hugging Face layout mistral.rs loads: a tiny
//!   random-weight Llama for tests ([`write_tiny_llama`]) and GGUF → HF import ([`import_gguf`]).
//! - `model`: the llama-family policy ([`Model`]) from differentiable candle ops, frozen base weights,
//!   LoRA ([`LoraConfig`]); [`Adapter`] picks π_ref (off), π_θ (trainable) or a frozen π_t per pass.
//! - `logprobs`: per-token and summed response log-probs ([`sequence_logprobs`]).
//! - `pack`: a step's sequences as one batch of rows (attention kept within each sequence).
//! - `ops`: fused CPU ops with their own backward (attention, RMSNorm, SwiGLU, head log-probs).
//! - `objectives`: the [`Objective`] trait and one file per loss ([`Sppo`], [`Inpo`], [`Dpo`], [`Ipo`],
//!   [`Rpo`]), as `research/algorithms.md` defines them.
//! - `preference`: win-rates from pairwise judgments (counting with ties, Bradley–Terry).
//! - `data`: judged groups → best-versus-worst pairs with win-rates ([`build_pairs`]).
//! - `stored`: the store's judged groups (served prompt ids, responses, judgments) → pairs
//!   ([`pairs_from_store`]).
//! - `grad`: per-sequence backward, with optional per-layer recomputation.
//! - `optim`: AdamW on the LoRA parameters, clipping, warmup + decay ([`OptimConfig`]).
//! - `train`: frozen log-probs once per pair, then [`Trainer::step`].
//! - `job`: one training job against the store, from recorded run to `ready` adapter ([`run_job`]).
//! - `worker`: trains whenever enough new judgments arrive ([`try_train_once`], [`spawn_worker`]).
//! - `adapter`: PEFT adapter files, written atomically with a sha256 ([`write_adapter`]).
//! - `guards` (tests only): the autograd guards of `research/trainer.md` §7 on the tiny model.
//! - `error`: [`Error`], the enum every fallible function here returns (except `model_files`).

pub mod adapter;
pub mod data;
mod error;
mod grad;
#[cfg(test)]
mod guards;
pub mod job;
pub mod logprobs;
pub mod model;
pub mod model_files;
pub mod objectives;
mod ops;
pub mod optim;
mod pack;
pub mod preference;
pub mod stored;
pub mod train;
pub mod worker;

pub use adapter::{read_adapter, write_adapter, AdapterConfig};
pub use data::{build_pairs, group_pair, Candidate, JudgedGroup, PairSelection};
pub use error::{Error, Result};
pub use job::{run_job, Algorithm, JobConfig, Progress};
pub use logprobs::{sequence_logprobs, Sequence, SequenceLogprobs};
pub use model::{Adapter, Config, LoraConfig, LoraModule, LoraWeights, Model};
pub use model_files::{
    gguf_tokenizer, import_gguf, write_tiny_llama, ImportSummary, ModelFileError, IMPORT_MARKER,
    TINY_SPECIAL_TOKENS,
};
pub use objectives::{Dpo, Inpo, Ipo, Objective, PairBatch, Reference, Rpo, Sppo, SppoVariant};
pub use optim::{OptimConfig, Schedule};
pub use stored::{judged_group, pairs_from_store, DataReport};
pub use train::{prepare_pairs, PairExample, PreparedPair, StepMetrics, TrainConfig, Trainer};
pub use worker::{run_every, spawn_worker, try_train_once, Outcome, WorkerConfig, WorkerGuard};
