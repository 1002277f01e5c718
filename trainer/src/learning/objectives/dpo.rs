//! DPO (Rafailov et al. 2023, arXiv 2305.18290; `research/algorithms.md` §3.1):
//! `−(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)`, Δ the chosen-minus-rejected log-ratio against the reference.
//!
//! ε = 0 is plain DPO, ε > 0 conservative DPO (TRL `sigmoid` with `label_smoothing`). The reference is
//! the base model or the previous iterate, a switch (§3.2: the sources disagree).

use candle_core::Tensor;

use super::{log_ratios, log_sigmoid, Objective, PairBatch, Reference};
use crate::Result;

/// DPO; `Default` is TRL's β = 0.1, no label smoothing, the base model as reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dpo {
    pub beta: f64,
    pub label_smoothing: f64,
    pub reference: Reference,
}

impl Default for Dpo {
    fn default() -> Self {
        Self {
            beta: 0.1,
            label_smoothing: 0.0,
            reference: Reference::Base,
        }
    }
}

impl Objective for Dpo {
    fn name(&self) -> &'static str {
        "dpo"
    }

    fn reference(&self) -> Reference {
        self.reference
    }

    fn loss(&self, policy: &Tensor, batch: &PairBatch) -> Result<Tensor> {
        let (_, a, b) = log_ratios(policy, batch)?;
        let z = ((a - b)? * self.beta)?;
        let eps = self.label_smoothing;
        let loss = ((log_sigmoid(&z)? * -(1.0 - eps))? - (log_sigmoid(&z.neg()?)? * eps)?)?;
        Ok(loss.mean_all()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::objectives::testing::{
        assert_gradient_matches_finite_differences, batch, loss_value,
    };

    /// §3.5: π_θ −10/−12, π_ref −11/−11.5, so Δ = 1.5.
    const POLICY: [[f64; 2]; 1] = [[-10.0, -12.0]];
    const REFERENCE: [[f64; 2]; 1] = [[-11.0, -11.5]];

    fn dpo(beta: f64, label_smoothing: f64) -> Dpo {
        Dpo {
            beta,
            label_smoothing,
            ..Dpo::default()
        }
    }

    // | DPO β = 0.1 | 0.6209570478 |  and  | DPO β = 0.5 | 0.3868710061 |
    #[test]
    fn dpo_with_beta_0_1_is_0_6209570478_and_with_beta_0_5_is_0_3868710061() {
        let loss = loss_value(&dpo(0.1, 0.0), &POLICY, &batch(&REFERENCE));
        assert!((loss - 0.6209570478).abs() < 1e-9, "{loss}");
        let loss = loss_value(&dpo(0.5, 0.0), &POLICY, &batch(&REFERENCE));
        assert!((loss - 0.3868710061).abs() < 1e-9, "{loss}");
    }

    // | DPO at init (Δ = 0) | ln 2 = 0.6931471806 |
    #[test]
    fn dpo_at_init_is_ln_2() {
        let loss = loss_value(&Dpo::default(), &REFERENCE, &batch(&REFERENCE));
        assert!((loss - std::f64::consts::LN_2).abs() < 1e-12, "{loss}");
    }

    // | cDPO β = 0.1, ε = 0.1 | 0.6359570478 |
    #[test]
    fn conservative_dpo_with_beta_0_1_and_epsilon_0_1_is_0_6359570478() {
        let loss = loss_value(&dpo(0.1, 0.1), &POLICY, &batch(&REFERENCE));
        assert!((loss - 0.6359570478).abs() < 1e-9, "{loss}");
    }

    #[test]
    fn dpo_gradient_matches_finite_differences() {
        let policy = [[-10.0, -12.0], [-40.0, -3.0]];
        let b = batch(&[[-11.0, -11.5], [-4.0, -20.0]]);
        assert_gradient_matches_finite_differences(&dpo(0.5, 0.1), &policy, &b);
    }
}
