//! Log-probabilities of a response given its prompt: per token and summed (`research/algorithms.md`
//! §0.2).
//!
//! `log π(y|x) = Σ_t log softmax(logits_{t-1})[y_t]` over the response tokens only (EOS included when
//! the response holds it). Sequences are packed into one batch (`pack`), and logits are computed only
//! at the rows that predict response tokens, so the `[t, vocab]` head and log-softmax cost is paid
//! for the responses alone.

use candle_core::{DType, Tensor};

use super::frame::Frame;
use super::lora::LoraPass;
use super::pack::{Pack, Sequence};
use super::policy::{Adapter, Model};
use crate::Result;

/// Log-probs of a response's tokens under one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceLogprobs {
    /// `log π(y_t | x, y_<t)`, one per response token.
    pub per_token: Vec<f64>,
    /// Their sum, `log π(y|x)`.
    pub sum: f64,
}

/// Per-token and summed log-probs of `seq.response` under `adapter`, with no autograd graph.
///
/// # Errors
/// `Error::Shape` for an empty prompt or response; candle errors.
pub fn sequence_logprobs(
    model: &Model,
    seq: &Sequence,
    adapter: Adapter,
) -> Result<SequenceLogprobs> {
    sampled_logprobs(model, seq, adapter, 1.0)
}

/// [`sequence_logprobs`] of the distribution a sampler at `temperature` drew from,
/// `log softmax(logits / T)`: what the server stores as a response's behaviour log-probs.
///
/// # Errors
/// As [`sequence_logprobs`]; `Error::Setting` for a temperature that is not finite and positive.
pub fn sampled_logprobs(
    model: &Model,
    seq: &Sequence,
    adapter: Adapter,
    temperature: f64,
) -> Result<SequenceLogprobs> {
    let pack = Pack::new(&[seq])?.at_temperature(temperature)?;
    let mut out = pack_logprobs(model, &pack, adapter)?;
    Ok(out.pop().expect("one sequence"))
}

fn pack_logprobs(model: &Model, pack: &Pack, adapter: Adapter) -> Result<Vec<SequenceLogprobs>> {
    let pass = model.pass(adapter, false, None);
    let per_token: Vec<f64> = packed_logprobs(model, pack, &pass)?
        .to_dtype(DType::F64)?
        .to_vec1()?;
    Ok(pack
        .split(&per_token)
        .into_iter()
        .map(|per_token| {
            let sum = per_token.iter().sum();
            SequenceLogprobs { per_token, sum }
        })
        .collect())
}

/// Log-probs of every response token of `pack` [targets] under `pass`; differentiable when the pass
/// is, and then ready for one backward through the whole graph.
pub(crate) fn packed_logprobs(model: &Model, pack: &Pack, pass: &LoraPass) -> Result<Tensor> {
    let frame = model.llama.frame(&pack.lengths)?;
    let hidden = model.hidden(&pack.ids, &frame, pass)?;
    let keep_logits = hidden.track_op();
    head_logprobs(model, &hidden, pack, &frame, keep_logits)
}

/// The head on the rows of `hidden` [rows, h] that predict `pack`'s response tokens → [targets].
pub(crate) fn head_logprobs(
    model: &Model,
    hidden: &Tensor,
    pack: &Pack,
    frame: &Frame,
    keep_logits: bool,
) -> Result<Tensor> {
    let rows = pack.predicting_rows(hidden)?;
    model
        .llama
        .head_logprobs(&rows, &pack.targets, frame, keep_logits, pack.temperature)
}
