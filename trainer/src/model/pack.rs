//! Training sequences ([`Sequence`]), and a step's sequences packed into one batch of rows.
//!
//! Projections, norms and the MLP then run once over every row as large matmuls, which keep all
//! cores busy where one 256-token sequence does not; attention stays within each sequence
//! (`ops::CausalAttention`), and the head sees only the rows that predict response tokens. Nothing
//! is padded.

use std::sync::Arc;

use candle_core::Tensor;

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

/// Sequences laid end to end, with where each one's response tokens are predicted.
#[derive(Debug)]
pub(crate) struct Pack {
    /// Every sequence's prompt then response, sequence after sequence.
    pub(crate) ids: Vec<u32>,
    pub(crate) lengths: Vec<usize>,
    /// The row that predicts each response token, in `targets` order.
    predictors: Vec<u32>,
    /// The response tokens, sequence after sequence.
    pub(crate) targets: Arc<[u32]>,
    /// `(first, count)` of each sequence's tokens in `targets`.
    responses: Vec<(usize, usize)>,
    /// The sampling temperature the log-probs are taken at: `log softmax(logits / T)`, the
    /// distribution a sampler at `T` drew from (GRPO's ratio against stored behaviour log-probs
    /// needs it); 1 for everything else.
    pub(crate) temperature: f64,
}

impl Pack {
    /// # Errors
    /// `Error::Shape` for a sequence with an empty prompt or response.
    pub(crate) fn new(seqs: &[&Sequence]) -> Result<Self> {
        let mut pack = Self {
            ids: Vec::new(),
            lengths: Vec::with_capacity(seqs.len()),
            predictors: Vec::new(),
            targets: Arc::from([]),
            responses: Vec::with_capacity(seqs.len()),
            temperature: 1.0,
        };
        let mut targets = Vec::new();
        for seq in seqs {
            seq.check()?;
            // Response token k sits at row p + k of its sequence and is predicted from row p + k − 1.
            let first_row = pack.ids.len() + seq.prompt.len() - 1;
            pack.predictors
                .extend((0..seq.response.len()).map(|k| (first_row + k) as u32));
            pack.responses.push((targets.len(), seq.response.len()));
            targets.extend_from_slice(&seq.response);
            pack.ids.extend_from_slice(&seq.prompt);
            pack.ids.extend_from_slice(&seq.response);
            pack.lengths.push(seq.prompt.len() + seq.response.len());
        }
        pack.targets = targets.into();
        Ok(pack)
    }

    /// The same pack, its log-probs taken at sampling temperature `temperature`.
    ///
    /// # Errors
    /// `Error::Setting` for a temperature that is not finite and positive.
    pub(crate) fn at_temperature(mut self, temperature: f64) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::Setting(format!(
                "log-probs need a positive sampling temperature, got {temperature}"
            )));
        }
        self.temperature = temperature;
        Ok(self)
    }

    /// The rows of `hidden` [rows, h] that predict response tokens: [targets, h].
    pub(crate) fn predicting_rows(&self, hidden: &Tensor) -> Result<Tensor> {
        let rows = Tensor::new(self.predictors.as_slice(), hidden.device())?;
        Ok(hidden.index_select(&rows, 0)?)
    }

    /// Per-sequence sums of per-token values [targets] → [sequences]; differentiable.
    pub(crate) fn sums(&self, per_token: &Tensor) -> Result<Tensor> {
        let sums = self
            .responses
            .iter()
            .map(|&(first, count)| per_token.narrow(0, first, count)?.sum_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&sums, 0)?)
    }

    /// Per-token values [targets] split by sequence.
    pub(crate) fn split<T: Copy>(&self, per_token: &[T]) -> Vec<Vec<T>> {
        self.responses
            .iter()
            .map(|&(first, count)| per_token[first..first + count].to_vec())
            .collect()
    }
}
