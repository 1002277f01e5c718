//! IPO (Azar et al., arXiv 2310.12036; `research/algorithms.md` §3.4): `(Δ − 1/(2τ))²`.
//!
//! With `length_normalized`, TRL `DPOTrainer`'s form: `(Δ_w/|y_w| − Δ_l/|y_l| − 1/(2τ))²`; TRL's
//! `OnlineDPOTrainer`, uclaml and RLHFlow use the plain form, which is the default here.

use candle_core::Tensor;

use super::{columns, log_ratios, Objective, PairBatch, Reference};
use crate::Result;

/// IPO; `Default` is τ = 0.1 (TRL's β), unnormalised, the base model as reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ipo {
    pub tau: f64,
    pub length_normalized: bool,
    pub reference: Reference,
}

impl Default for Ipo {
    fn default() -> Self {
        Self {
            tau: 0.1,
            length_normalized: false,
            reference: Reference::Base,
        }
    }
}

impl Objective for Ipo {
    fn name(&self) -> &'static str {
        "ipo"
    }

    fn reference(&self) -> Reference {
        self.reference
    }

    fn loss(&self, policy: &Tensor, batch: &PairBatch) -> Result<Tensor> {
        let (n, a, b) = log_ratios(policy, batch)?;
        let delta = if self.length_normalized {
            let (lw, ll) = columns(&batch.lengths, n, "lengths")?;
            ((a / lw)? - (b / ll)?)?
        } else {
            (a - b)?
        };
        Ok((delta - 1.0 / (2.0 * self.tau))?.sqr()?.mean_all()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::objectives::testing::{
        assert_gradient_matches_finite_differences, batch, loss_value, pairs,
    };

    /// §3.5: π_θ −10/−12, π_ref −11/−11.5, so Δ = 1.5.
    const POLICY: [[f64; 2]; 1] = [[-10.0, -12.0]];
    const REFERENCE: [[f64; 2]; 1] = [[-11.0, -11.5]];

    fn ipo(length_normalized: bool) -> Ipo {
        Ipo {
            length_normalized,
            ..Ipo::default()
        }
    }

    // | IPO τ = 0.1, unnormalised | (1.5 − 5)² = 12.25 |
    #[test]
    fn ipo_with_tau_0_1_unnormalised_is_12_25() {
        let loss = loss_value(&ipo(false), &POLICY, &batch(&REFERENCE));
        assert!((loss - 12.25).abs() < 1e-12, "{loss}");
    }

    // | IPO τ = 0.1, TRL-normalised, |y_w| = 10, |y_l| = 20 tokens | 23.765625 |
    #[test]
    fn ipo_length_normalised_with_10_and_20_tokens_is_23_765625() {
        let mut b = batch(&REFERENCE);
        b.lengths = pairs(&[[10.0, 20.0]]);
        let loss = loss_value(&ipo(true), &POLICY, &b);
        assert!((loss - 23.765625).abs() < 1e-12, "{loss}");
    }

    #[test]
    fn ipo_gradients_match_finite_differences() {
        let policy = [[-10.0, -12.0], [-5.0, -6.0]];
        let mut b = batch(&[[-11.0, -11.5], [-4.0, -8.0]]);
        b.lengths = pairs(&[[10.0, 20.0], [3.0, 7.0]]);
        assert_gradient_matches_finite_differences(&ipo(false), &policy, &b);
        assert_gradient_matches_finite_differences(&ipo(true), &policy, &b);
    }
}
