//! The model layer: a llama-family policy from differentiable candle ops, with LoRA, and the
//! log-probs every objective is computed from. It knows nothing of training, files or the store.
//!
//! - `config`: [`Config`], the HF `config.json` and its family switches (Llama, Mistral, Qwen2).
//! - `policy`: [`Model`], a frozen base plus one trainable adapter; [`Adapter`] picks π_ref (off),
//!   π_θ (trainable) or a frozen π_t for each pass.
//! - `llama`: the decoder itself, written out so every op keeps its backward.
//! - `lora`: [`LoraConfig`], the `LoraLinear` wrapper, fixed [`LoraWeights`] (e.g. π_t).
//! - `frozen`: the frozen-weight matmul op, so base weights hold no gradients.
//! - `seed`: a scalar that starts a backward from a given gradient (per-layer recomputation).
//! - `frame`: what every layer of a pass shares (packed sequence extents, RoPE, which kernels run).
//! - `ops`: fused CPU ops with their own backward (attention, RMSNorm, SwiGLU, head log-probs).
//! - `pack`: [`Sequence`], and a step's sequences as one batch of rows (attention within each).
//! - `logprobs`: per-token and summed response log-probs ([`sequence_logprobs`]).

mod compute;
mod config;
#[cfg(test)]
mod families;
mod frame;
mod frozen;
mod llama;
mod logprobs;
mod lora;
mod ops;
mod pack;
mod policy;
mod seed;

pub use compute::{Compute, TrainDevice, TrainDtype};
pub use config::Config;
#[cfg(test)]
pub(crate) use frame::Frame;
pub(crate) use logprobs::{head_logprobs, packed_logprobs};
pub use logprobs::{sampled_logprobs, sequence_logprobs, SequenceLogprobs};
pub use lora::{LoraConfig, LoraModule, LoraTargets, LoraWeights};
pub(crate) use pack::Pack;
pub use pack::Sequence;
pub use policy::{Adapter, Model};
