//! Log-probabilities of a response given its prompt: per token and summed (`research/algorithms.md`
//! §0.2).
//!
//! `log π(y|x) = Σ_t log softmax(logits_{t-1})[y_t]` over the response tokens only (EOS included when
//! the response holds it). Sequences are packed into one batch (`pack`), and logits are computed only
//! at the rows that predict response tokens, so the `[t, vocab]` head and log-softmax cost is paid
//! for the responses alone.

use candle_core::{DType, Tensor};

use crate::model::{Adapter, Frame, LoraPass, Model};
use crate::pack::Pack;
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

    pub(crate) fn check(&self) -> Result<()> {
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
    let pack = Pack::new(&[seq])?;
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
        .head_logprobs(&rows, &pack.targets, frame, keep_logits)
}
