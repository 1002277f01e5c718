//! SPPO (Wu et al. 2024, arXiv 2405.00675; `research/algorithms.md` §1.4): regress the log-ratio
//! against π_t onto `η(P̂ − ½)`.
//!
//! - soft (uclaml `sppo_loss`): `((a − η(P̂_w − ½))² + (b − η(P̂_l − ½))²) / 2`;
//! - hard (TRL `sppo_hard`): `(a − η/2)² + (b + η/2)²` (sum, no /2),
//!
//! with `a`, `b` the chosen and rejected log-ratios against π_t; the batch loss is the row mean.

use candle_core::Tensor;

use super::{columns, log_ratios, required, Objective, PairBatch, Reference};
use crate::Result;

/// Which SPPO loss of §1.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SppoVariant {
    /// Targets from estimated win-rates P̂ (the paper runs' default).
    #[default]
    Soft,
    /// P̂_w = 1, P̂_l = 0, summed as TRL does.
    Hard,
}

/// SPPO; `Default` is the paper's η = 1e3 (β = 1e-3), soft.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sppo {
    pub eta: f64,
    pub variant: SppoVariant,
}

impl Default for Sppo {
    fn default() -> Self {
        Self {
            eta: 1e3,
            variant: SppoVariant::Soft,
        }
    }
}

impl Objective for Sppo {
    fn name(&self) -> &'static str {
        "sppo"
    }

    fn reference(&self) -> Reference {
        Reference::Previous
    }

    fn needs_win_rates(&self) -> bool {
        self.variant == SppoVariant::Soft
    }

    fn loss(&self, policy: &Tensor, batch: &PairBatch) -> Result<Tensor> {
        let (n, a, b) = log_ratios(policy, batch)?;
        let per_row = match self.variant {
            SppoVariant::Soft => {
                let p = required(&batch.win_rates, "win rates")?;
                let (pw, pl) = columns(p, n, "win rates")?;
                let target_w = ((pw - 0.5)? * self.eta)?;
                let target_l = ((pl - 0.5)? * self.eta)?;
                (((a - target_w)?.sqr()? + (b - target_l)?.sqr()?)? * 0.5)?
            }
            SppoVariant::Hard => {
                let half = self.eta / 2.0;
                ((a - half)?.sqr()? + (b + half)?.sqr()?)?
            }
        };
        Ok(per_row.mean_all()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::objectives::testing::{
        assert_gradient_matches_finite_differences, batch, loss_value, pairs,
    };

    /// §1.6: π_θ(y_w) = −10, π_t(y_w) = −11, π_θ(y_l) = −12, π_t(y_l) = −11.5, so a = 1, b = −0.5.
    const POLICY: [[f64; 2]; 1] = [[-10.0, -12.0]];
    const PREVIOUS: [[f64; 2]; 1] = [[-11.0, -11.5]];

    fn with_win_rates(p: [f64; 2]) -> PairBatch {
        PairBatch {
            win_rates: Some(pairs(&[p])),
            ..batch(&PREVIOUS)
        }
    }

    fn soft(eta: f64) -> Sppo {
        Sppo {
            eta,
            variant: SppoVariant::Soft,
        }
    }

    // | `sppo` soft | η = 2, P̂_w = 0.8, P̂_l = 0.3 | loss = 0.085 |
    #[test]
    fn soft_sppo_with_eta_2_and_win_rates_0_8_and_0_3_is_0_085() {
        let loss = loss_value(&soft(2.0), &POLICY, &with_win_rates([0.8, 0.3]));
        assert!((loss - 0.085).abs() < 1e-9, "{loss}");
    }

    // | `sppo` soft with P̂ from row 1 | η = 2, P̂_w = 0.7039519, P̂_l = 0.2960481 | 0.1795298298 |
    #[test]
    fn soft_sppo_with_win_rates_from_scores_1_0_minus_1_is_0_1795298298() {
        let p = [0.7039518855, 0.2960481145];
        let loss = loss_value(&soft(2.0), &POLICY, &with_win_rates(p));
        assert!((loss - 0.1795298298).abs() < 1e-9, "{loss}");
    }

    // | TRL `sppo_hard` | β = 0.5 (η = 2) | 0.25 |
    #[test]
    fn hard_sppo_with_beta_0_5_is_0_25() {
        let hard = Sppo {
            eta: 2.0,
            variant: SppoVariant::Hard,
        };
        let loss = loss_value(&hard, &POLICY, &batch(&PREVIOUS));
        assert!((loss - 0.25).abs() < 1e-12, "{loss}");
    }

    // | uclaml `sppo` with P̂ = 1/0 | η = 2 | 0.125 |
    #[test]
    fn soft_sppo_with_win_rates_1_and_0_is_0_125() {
        let loss = loss_value(&soft(2.0), &POLICY, &with_win_rates([1.0, 0.0]));
        assert!((loss - 0.125).abs() < 1e-12, "{loss}");
    }

    // | default scale | η = 1000, P̂_w = 0.8, P̂_l = 0.3 | 64600.625 |
    #[test]
    fn soft_sppo_at_the_default_eta_1000_is_64600_625() {
        let loss = loss_value(&Sppo::default(), &POLICY, &with_win_rates([0.8, 0.3]));
        assert!((loss - 64600.625).abs() < 1e-7, "{loss}");
    }

    // | init (π_θ = π_t, so a = b = 0) | η = 1000, P̂ from row 1 | 41596.3716136743 |
    #[test]
    fn soft_sppo_at_init_with_eta_1000_is_41596_3716136743() {
        // Row 1 exactly: P̂_w = (½ + σ(1) + σ(2)) / 3, P̂_l = 1 − P̂_w.
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        let p_w = (0.5 + sigmoid(1.0) + sigmoid(2.0)) / 3.0;
        let p = [p_w, 1.0 - p_w];
        let loss = loss_value(&Sppo::default(), &PREVIOUS, &with_win_rates(p));
        assert!((loss - 41596.3716136743).abs() < 1e-5, "{loss}");
    }

    #[test]
    fn soft_and_hard_sppo_gradients_match_finite_differences() {
        let policy = [[-10.0, -12.0], [-3.0, -4.5]];
        let mut b = batch(&[[-11.0, -11.5], [-3.5, -4.0]]);
        b.win_rates = Some(pairs(&[[0.8, 0.3], [0.6, 0.45]]));
        assert_gradient_matches_finite_differences(&soft(2.0), &policy, &b);
        let hard = Sppo {
            eta: 2.0,
            variant: SppoVariant::Hard,
        };
        assert_gradient_matches_finite_differences(&hard, &policy, &b);
    }
}
