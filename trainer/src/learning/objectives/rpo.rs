//! RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization", arXiv 2404.19733): DPO plus
//! `α ·` the chosen response's negative log-likelihood per token, `−log π_θ(y_w)/|y_w|` (TRL
//! `rpo_alpha`, which normalises by the chosen tokens). `research/algorithms.md` has no RPO section;
//! the test vector below is §3.5's DPO vector plus that term.

use candle_core::Tensor;

use super::{columns, Dpo, Objective, PairBatch, Reference};
use crate::Result;

/// RPO; `Default` is DPO's defaults and α = 1 (the paper's weight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rpo {
    pub dpo: Dpo,
    pub alpha: f64,
}

impl Default for Rpo {
    fn default() -> Self {
        Self {
            dpo: Dpo::default(),
            alpha: 1.0,
        }
    }
}

impl Objective for Rpo {
    fn name(&self) -> &'static str {
        "rpo"
    }

    fn reference(&self) -> Reference {
        self.dpo.reference
    }

    fn loss(&self, policy: &Tensor, batch: &PairBatch) -> Result<Tensor> {
        let n = policy.dim(0)?;
        let (chosen, _) = columns(policy, n, "policy log-probs")?;
        let (chosen_len, _) = columns(&batch.lengths, n, "lengths")?;
        let nll = (chosen / chosen_len)?.neg()?.mean_all()?;
        Ok((self.dpo.loss(policy, batch)? + (nll * self.alpha)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::objectives::testing::{
        assert_gradient_matches_finite_differences, batch, loss_value,
    };

    // §3.5's DPO β = 0.1 vector (0.6209570478) with |y_w| = 10: NLL = 10/10 = 1, α = 1 → 1.6209570478.
    #[test]
    fn rpo_with_beta_0_1_alpha_1_and_10_chosen_tokens_is_1_6209570478() {
        let loss = loss_value(
            &Rpo::default(),
            &[[-10.0, -12.0]],
            &batch(&[[-11.0, -11.5]]),
        );
        assert!((loss - 1.6209570478).abs() < 1e-9, "{loss}");
    }

    #[test]
    fn rpo_gradient_matches_finite_differences() {
        let policy = [[-10.0, -12.0], [-7.0, -3.0]];
        let b = batch(&[[-11.0, -11.5], [-6.0, -5.0]]);
        assert_gradient_matches_finite_differences(&Rpo::default(), &policy, &b);
    }
}
