//! Preference objectives: one trait, one file per loss, each exactly as `research/algorithms.md` has it.
//!
//! Every loss is a function of summed sequence log-probs of a (chosen, rejected) pair, so each takes
//! the policy's log-probs as a [n, 2] tensor (column 0 chosen, 1 rejected) and the batch's fixed inputs,
//! and returns the mean loss over the n rows. Frozen log-probs are computed once per example, without a
//! graph, by the caller.
//!
//! - `sppo`: SPPO soft (uclaml) and hard (TRL `sppo_hard`), §1.
//! - `inpo`: INPO, §2.
//! - `dpo`: DPO and cDPO, §3.1. `ipo`: IPO, plain or TRL length-normalised, §3.4.
//! - `rpo`: DPO plus the chosen response's length-normalised NLL (Pang et al. 2024).

mod dpo;
mod inpo;
mod ipo;
mod rpo;
mod sppo;

use candle_core::{Tensor, D};

pub use dpo::Dpo;
pub use inpo::Inpo;
pub use ipo::Ipo;
pub use rpo::Rpo;
pub use sppo::{Sppo, SppoVariant};

use crate::{Error, Result};

/// Which frozen policy a loss's log-ratio is taken against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reference {
    /// The base model with the adapter off (π_ref).
    #[default]
    Base,
    /// The previous iterate π_t (the parent adapter, frozen).
    Previous,
}

/// The fixed inputs of a batch of n pairs; every tensor is [n, 2] (chosen, rejected).
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// Log-probs under the policy [`Objective::reference`] names.
    pub reference: Tensor,
    /// Log π_t, for objectives with [`Objective::needs_previous`] (INPO).
    pub previous: Option<Tensor>,
    /// P̂(y ≻ π_t) per response (SPPO soft).
    pub win_rates: Option<Tensor>,
    /// Response token counts (IPO normalisation, RPO's NLL).
    pub lengths: Tensor,
}

/// A preference loss over summed sequence log-probs.
pub trait Objective {
    /// Short name, as stored with a train run (`dpo`, `sppo`, …).
    fn name(&self) -> &'static str;

    /// The frozen policy whose log-probs fill [`PairBatch::reference`].
    fn reference(&self) -> Reference;

    /// Whether [`PairBatch::previous`] must be filled as well.
    fn needs_previous(&self) -> bool {
        false
    }

    /// Whether [`PairBatch::win_rates`] must be filled.
    fn needs_win_rates(&self) -> bool {
        false
    }

    /// Mean loss over the batch, a scalar; `policy` is log π_θ, [n, 2].
    ///
    /// # Errors
    /// `Error::Shape` when a tensor is not [n, 2] or a needed input is missing.
    fn loss(&self, policy: &Tensor, batch: &PairBatch) -> Result<Tensor>;
}

/// The stable `log σ(z)` of §0.1, computed as `−softplus(−z)` with `softplus(x) = relu(x) + ln(1 + e^{−|x|})`.
///
/// Not as `min(z, 0) − ln(1 + e^{−|z|})`: candle's backward gives `min` half the gradient on a tie and
/// `abs` a slope of +1 at 0, so at z = 0 (every pair at initialisation, where policy = reference) that
/// form's gradient is 1 instead of ½. With `relu′(0) = 1` and `abs′(0) = 1` the kinks here cancel to ½.
pub(crate) fn log_sigmoid(z: &Tensor) -> candle_core::Result<Tensor> {
    let x = z.neg()?;
    let softplus = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    softplus.neg()
}

/// Checks that `t` is [n, 2] and returns (chosen, rejected) columns, each [n].
pub(crate) fn columns(t: &Tensor, n: usize, what: &str) -> Result<(Tensor, Tensor)> {
    if t.dims() != [n, 2] {
        return Err(Error::Shape(format!(
            "{what} is {:?}, expected [{n}, 2]",
            t.dims()
        )));
    }
    Ok((
        t.narrow(D::Minus1, 0, 1)?.squeeze(1)?,
        t.narrow(D::Minus1, 1, 1)?.squeeze(1)?,
    ))
}

/// The policy's rows and its (chosen, rejected) log-ratios against [`PairBatch::reference`].
pub(crate) fn log_ratios(policy: &Tensor, batch: &PairBatch) -> Result<(usize, Tensor, Tensor)> {
    let n = policy.dim(0)?;
    let (pw, pl) = columns(policy, n, "policy log-probs")?;
    let (rw, rl) = columns(&batch.reference, n, "reference log-probs")?;
    Ok((n, (pw - rw)?, (pl - rl)?))
}

/// A required optional input, or `Error::Shape` naming it.
pub(crate) fn required<'a>(t: &'a Option<Tensor>, what: &str) -> Result<&'a Tensor> {
    t.as_ref()
        .ok_or_else(|| Error::Shape(format!("{what} missing from the batch")))
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::log_sigmoid;

    // log σ(0) = −ln 2 and d/dz log σ(z) = σ(−z) = ½ at 0; log σ(±800) = 0 and −800 without overflow.
    #[test]
    fn log_sigmoid_at_0_is_minus_ln_2_with_slope_one_half_and_stays_finite_at_800() {
        let z = Var::new(&[0.0f64, 800.0, -800.0], &Device::Cpu).unwrap();
        let y = log_sigmoid(z.as_tensor()).unwrap();
        let values: Vec<f64> = y.to_vec1().unwrap();
        assert!((values[0] + std::f64::consts::LN_2).abs() < 1e-15);
        assert_eq!((values[1], values[2]), (0.0, -800.0));
        let grads = y.sum_all().unwrap().backward().unwrap();
        let slopes: Vec<f64> = grads.get(z.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(slopes, vec![0.5, 0.0, 1.0]);
    }
}
