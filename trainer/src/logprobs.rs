//! Log-probabilities of a response given its prompt: per token and summed (`research/algorithms.md`
//! §0.2).
//!
//! `log π(y|x) = Σ_t log softmax(logits_{t-1})[y_t]` over the response tokens only (EOS included when
//! the response holds it). Logits are computed only at the positions that predict response tokens, so
//! the `[t, vocab]` head and log-softmax cost is paid for the response alone.

use candle_core::{DType, Tensor, D};

use crate::model::{Adapter, LoraPass, Model};
use crate::{Error, Result};

/// One training sequence: the prompt's token ids (chat template already applied) and the response's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
}

impl Sequence {
    /// # Errors
    /// `Error::Shape` when the prompt or the response is empty (the first response token needs a
    /// position to be predicted from).
    pub fn new(prompt: Vec<u32>, response: Vec<u32>) -> Result<Self> {
        let seq = Self { prompt, response };
        seq.check()?;
        Ok(seq)
    }

    fn check(&self) -> Result<()> {
        if self.prompt.is_empty() || self.response.is_empty() {
            return Err(Error::Shape(format!(
                "a sequence needs a prompt and a response (got {} and {} tokens)",
                self.prompt.len(),
                self.response.len()
            )));
        }
        Ok(())
    }

    /// Prompt then response.
    pub fn ids(&self) -> Vec<u32> {
        [self.prompt.as_slice(), self.response.as_slice()].concat()
    }
}

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
    let pass = model.pass(adapter, false, None);
    let per_token = response_logprobs(model, seq, &pass)?;
    let per_token: Vec<f64> = per_token.to_dtype(DType::F64)?.to_vec1()?;
    let sum = per_token.iter().sum();
    Ok(SequenceLogprobs { per_token, sum })
}

/// Per-token log-probs [response len] of `seq` under `pass`; differentiable when the pass is.
pub(crate) fn response_logprobs(model: &Model, seq: &Sequence, pass: &LoraPass) -> Result<Tensor> {
    seq.check()?;
    let hidden = model.hidden(&seq.ids(), pass)?;
    logprobs_from_hidden(model, &hidden, seq)
}

/// Response positions per head evaluation: `[chunk, vocab]` logits at a time, so a long response over a
/// large vocabulary (152k for Qwen2) never materialises all its logits at once when no graph is kept.
pub(crate) const HEAD_CHUNK: usize = 128;

/// The head applied to the response-predicting positions of `hidden` [1, t, h] → [response len].
fn logprobs_from_hidden(model: &Model, hidden: &Tensor, seq: &Sequence) -> Result<Tensor> {
    let chunks = (0..seq.response.len())
        .step_by(HEAD_CHUNK)
        .map(|start| token_logprobs(model, hidden, seq, start))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&chunks, 0)?)
}

/// Log-probs of response tokens `start..start + HEAD_CHUNK` (clipped to the response).
pub(crate) fn token_logprobs(
    model: &Model,
    hidden: &Tensor,
    seq: &Sequence,
    start: usize,
) -> Result<Tensor> {
    let len = HEAD_CHUNK.min(seq.response.len() - start);
    // Response token k sits at position p + k and is predicted from position p + k − 1.
    let at = hidden.narrow(1, seq.prompt.len() - 1 + start, len)?;
    let logits = model.llama.head(&at)?.squeeze(0)?;
    let logp = log_softmax(&logits)?;
    let targets = &seq.response[start..start + len];
    let targets = Tensor::new(targets, hidden.device())?.unsqueeze(1)?;
    Ok(logp.gather(&targets, 1)?.squeeze(1)?)
}

/// `x − max − log Σ exp(x − max)` over the last dimension, from primitives.
fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}
