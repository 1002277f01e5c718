//! INPO (Zhang et al., arXiv 2407.00617, Algorithm 1 / eq. 8; `research/algorithms.md` §2.2):
//! `(h − 1/(2η))²` with
//! `h = [log π_θ(y_w) − log π_θ(y_l)] − (τ/η)·[ref margin] − ((η−τ)/η)·[π_t margin]`.
//!
//! `PairBatch::reference` holds log π_ref, `PairBatch::previous` log π_t.

use candle_core::Tensor;

use super::{columns, required, Objective, PairBatch, Reference};
use crate::Result;

/// INPO; `Default` is the paper's η = 0.005 and τ = η/3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inpo {
    pub eta: f64,
    pub tau: f64,
}

impl Default for Inpo {
    fn default() -> Self {
        Self {
            eta: 0.005,
            tau: 0.005 / 3.0,
        }
    }
}

impl Objective for Inpo {
    fn name(&self) -> &'static str {
        "inpo"
    }

    fn reference(&self) -> Reference {
        Reference::Base
    }

    fn needs_previous(&self) -> bool {
        true
    }

    fn loss(&self, policy: &Tensor, batch: &PairBatch) -> Result<Tensor> {
        let n = policy.dim(0)?;
        let margin = |t: &Tensor, what: &str| -> Result<Tensor> {
            let (w, l) = columns(t, n, what)?;
            Ok((w - l)?)
        };
        let theta = margin(policy, "policy log-probs")?;
        let reference = margin(&batch.reference, "reference log-probs")?;
        let previous = margin(required(&batch.previous, "π_t log-probs")?, "π_t log-probs")?;
        let h = ((theta - (reference * (self.tau / self.eta))?)?
            - (previous * ((self.eta - self.tau) / self.eta))?)?;
        Ok((h - 1.0 / (2.0 * self.eta))?.sqr()?.mean_all()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::objectives::testing::{
        assert_gradient_matches_finite_differences, batch, loss_value, pairs,
    };

    /// §2.4: π_θ −10/−12 (margin 2), π_ref −11/−11.5 (margin 0.5), π_t −10.5/−12 (margin 1.5).
    const POLICY: [[f64; 2]; 1] = [[-10.0, -12.0]];
    const PREVIOUS: [[f64; 2]; 1] = [[-10.5, -12.0]];

    fn inpo_batch() -> PairBatch {
        PairBatch {
            previous: Some(pairs(&PREVIOUS)),
            ..batch(&[[-11.0, -11.5]])
        }
    }

    fn inpo(eta: f64, tau: f64) -> Inpo {
        Inpo { eta, tau }
    }

    // | 0.5 | η/3 | h = 0.8333333333 | target 1.0 | 0.0277777778 (= 1/36) |
    #[test]
    fn inpo_with_eta_0_5_and_tau_eta_over_3_is_one_36th() {
        let loss = loss_value(&inpo(0.5, 0.5 / 3.0), &POLICY, &inpo_batch());
        assert!((loss - 1.0 / 36.0).abs() < 1e-12, "{loss}");
    }

    // | 0.5 | 0 | 0.5 | 1.0 | 0.25 |  and  | 0.5 | 0.5 | 1.5 | 1.0 | 0.25 |
    #[test]
    fn inpo_with_tau_0_or_tau_eta_is_0_25() {
        for tau in [0.0, 0.5] {
            let loss = loss_value(&inpo(0.5, tau), &POLICY, &inpo_batch());
            assert!((loss - 0.25).abs() < 1e-12, "τ = {tau}: {loss}");
        }
    }

    // | 0.005 | η/3 | 0.8333333333 | 100 | 9834.0277777778 |
    #[test]
    fn inpo_at_the_default_eta_0_005_is_9834_0277777778() {
        let loss = loss_value(&Inpo::default(), &POLICY, &inpo_batch());
        assert!((loss - 9834.0277777778).abs() < 1e-8, "{loss}");
    }

    // | 0.5 | η/3, init π_θ = π_t | 0.3333333333 | 1.0 | 0.4444444444 |
    #[test]
    fn inpo_at_init_with_eta_0_5_is_0_4444444444() {
        let loss = loss_value(&inpo(0.5, 0.5 / 3.0), &PREVIOUS, &inpo_batch());
        assert!((loss - 4.0 / 9.0).abs() < 1e-12, "{loss}");
    }

    #[test]
    fn inpo_gradient_matches_finite_differences() {
        let mut b = batch(&[[-11.0, -11.5], [-2.0, -3.0]]);
        b.previous = Some(pairs(&[[-10.5, -12.0], [-2.5, -2.0]]));
        let policy = [[-10.0, -12.0], [-1.0, -4.0]];
        assert_gradient_matches_finite_differences(&inpo(0.5, 0.5 / 3.0), &policy, &b);
    }
}
