//! Per-token terms of the GRPO loss (`research/algorithms.md` §4.1), on tensors of any float dtype:
//!
//! - the ratio to the behaviour policy, `ρ = exp(log π_θ − log π_behaviour)`, from the stored
//!   log-probs of the policy version that sampled the response (π_old);
//! - the clipped surrogate `−min(ρ·Â, clip(ρ, 1−ε_low, 1+ε_high)·Â)`, clip-higher when ε_high > ε_low
//!   (DAPO, §4.2);
//! - Schulman's k3 estimator of KL(π_θ ‖ π_ref), `exp(x) − x − 1` with `x = log π_ref − log π_θ`,
//!   unbiased and ≥ 0, added to the loss (not to the reward); optionally continued as its tangent
//!   above a cap on `x`, so that one rare token cannot outweigh the batch.

use candle_core::Tensor;

use crate::Result;

/// `ρ = exp(log π_θ − log π_behaviour)` per token.
pub(crate) fn ratio(policy: &Tensor, behaviour: &Tensor) -> Result<Tensor> {
    Ok((policy - behaviour)?.exp()?)
}

/// `−min(ρ·Â, clip(ρ, 1−ε_low, 1+ε_high)·Â)` per token; `advantages` holds each token's sequence
/// advantage.
///
/// The minimum is taken on the values, without a graph: where the clipped term is strictly smaller,
/// the token's term is that constant (no gradient, as the clip makes it constant in ρ); otherwise
/// it is `−ρ·Â` with the full gradient `−Â` in ρ. A tie (ρ inside the clip range, or Â = 0) takes
/// the unclipped branch. Doing it this way, rather than with candle's `minimum`, keeps the gradient
/// from depending on how `minimum`'s backward splits ties (it halves it on each side).
pub(crate) fn clipped_surrogate(
    ratio: &Tensor,
    advantages: &Tensor,
    epsilon_low: f64,
    epsilon_high: f64,
) -> Result<Tensor> {
    let fixed = ratio.detach();
    let clipped = (fixed.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)? * advantages)?;
    let take_clipped = (&fixed * advantages)?.gt(&clipped)?;
    let unclipped = (ratio * advantages)?;
    Ok(take_clipped.where_cond(&clipped, &unclipped)?.neg()?)
}

/// k3 `exp(x) − x − 1`, `x = log π_ref − log π_θ`, per token; above `x = linear_above` it goes on
/// as its tangent there, `k3(c) + (e^c − 1)(x − c)`, so a token's pull back towards π_ref is at most
/// `e^c − 1`. An infinite `linear_above` is the exact k3.
///
/// Why: sampled from π_θ, a token that π_θ has made far less likely than π_ref does is rare, but when
/// it comes its term is `e^x` (x = 16 gives 9·10⁶), so the estimator's variance is unbounded. One
/// such token then sets the direction of a whole clipped-norm step. verl's `low_var_kl` clamps the
/// value at 10 (x ≈ 2.5) and so drops that token's gradient; the tangent keeps a bounded pull.
pub(crate) fn k3_kl(policy: &Tensor, reference: &Tensor, linear_above: f64) -> Result<Tensor> {
    let x = (reference - policy)?;
    if linear_above == f64::INFINITY {
        return Ok(((x.exp()? - &x)? - 1.0)?);
    }
    let c = linear_above;
    let above = x.gt(c)?;
    // The exponential branch only ever sees x ≤ c, so an overflowing e^x cannot turn the masked-out
    // gradient into NaN (0 · ∞).
    let capped = above.where_cond(&(x.ones_like()? * c)?, &x)?;
    let below = ((capped.exp()? - &capped)? - 1.0)?;
    let slope = c.exp() - 1.0;
    let tangent = x.affine(slope, (c.exp() - c - 1.0) - slope * c)?;
    Ok(above.where_cond(&tangent, &below)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    fn tensor(values: &[f64], dtype: DType) -> Tensor {
        Tensor::new(values, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
    }

    /// §4.3, clipped per-token loss `−min(ρA, clip(ρ)A)`, rows (ρ, A):
    /// (1.5, +1) → −1.2 (clipped, no grad) | DAPO −1.28; (0.5, −1) → 0.8 (clipped, no grad) | 0.8;
    /// (1.5, −1) → 1.5 (unclipped, grad flows) | 1.5; (0.5, +1) → −0.5 | −0.5;
    /// (1.25, +1) → −1.2 | −1.25. ε = 0.2 against DAPO's (ε_low, ε_high) = (0.2, 0.28).
    #[test]
    fn clipped_surrogate_reproduces_the_section_4_3_table_with_its_gradients() {
        let rho = [1.5, 0.5, 1.5, 0.5, 1.25];
        let a = [1.0, -1.0, -1.0, 1.0, 1.0];
        // (ε_high, expected loss, expected ∂loss/∂ρ = −A where unclipped, 0 where clipped)
        let cases = [
            (
                0.2,
                [-1.2, 0.8, 1.5, -0.5, -1.2],
                [0.0, 0.0, 1.0, -1.0, 0.0],
            ),
            (
                0.28,
                [-1.28, 0.8, 1.5, -0.5, -1.25],
                [0.0, 0.0, 1.0, -1.0, -1.0],
            ),
        ];
        for dtype in [DType::F64, DType::F32] {
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-6 };
            for (epsilon_high, loss, slope) in cases {
                let var = Var::from_tensor(&tensor(&rho, dtype)).unwrap();
                let terms =
                    clipped_surrogate(var.as_tensor(), &tensor(&a, dtype), 0.2, epsilon_high)
                        .unwrap();
                let got = values(&terms);
                let grads = terms.sum_all().unwrap().backward().unwrap();
                let got_slope = values(grads.get(var.as_tensor()).unwrap());
                for i in 0..rho.len() {
                    assert!(
                        (got[i] - loss[i]).abs() < tolerance,
                        "{dtype:?} ε_high {epsilon_high}: {got:?}"
                    );
                    assert_eq!(
                        got_slope[i], slope[i],
                        "{dtype:?} ε_high {epsilon_high}: {got_slope:?}"
                    );
                }
            }
        }
    }

    /// §4.3, k3 KL values (log π_θ, log π_ref → KL): (−1.0, −1.5) → 0.1065306597;
    /// (−1.0, −0.5) → 0.1487212707; (−1.0, −1.0) → 0; (−2.0, −0.2) → 3.2496474644.
    #[test]
    fn k3_kl_reproduces_the_section_4_3_values() {
        let policy = tensor(&[-1.0, -1.0, -1.0, -2.0], DType::F64);
        let reference = tensor(&[-1.5, -0.5, -1.0, -0.2], DType::F64);
        for linear_above in [f64::INFINITY, 2.5] {
            let kl = values(&k3_kl(&policy, &reference, linear_above).unwrap());
            let expected = [0.1065306597, 0.1487212707, 0.0, 3.2496474644];
            for (k, e) in kl.iter().zip(expected) {
                assert!((k - e).abs() < 1e-9, "{linear_above}: {kl:?}");
            }
            assert_eq!(kl[2], 0.0);
        }
    }

    /// Ours: with the tangent above c = 1, the §4.3 rows below 1 keep their values and gradients
    /// `∂/∂log π_θ = 1 − e^x`, and x = 1.8 (−2.0, −0.2) becomes `(e − 2) + (e − 1)·0.8 =
    /// 2.0929072912` with gradient `1 − e = −1.7182818285` instead of 3.2496474644 and −5.0496474644.
    #[test]
    fn k3_kl_continues_as_its_tangent_above_the_cap() {
        let policy = [-1.0, -1.0, -1.0, -2.0];
        let reference = tensor(&[-1.5, -0.5, -1.0, -0.2], DType::F64);
        let expected = [0.1065306597, 0.1487212707, 0.0, 2.0929072912];
        let slopes = [0.3934693403, -0.6487212707, 0.0, -1.7182818285];
        for dtype in [DType::F64, DType::F32] {
            let tolerance = if dtype == DType::F64 { 1e-9 } else { 1e-6 };
            let var = Var::from_tensor(&tensor(&policy, dtype)).unwrap();
            let kl = k3_kl(var.as_tensor(), &reference.to_dtype(dtype).unwrap(), 1.0).unwrap();
            let got = values(&kl);
            let grads = kl.sum_all().unwrap().backward().unwrap();
            let got_slopes = values(grads.get(var.as_tensor()).unwrap());
            for i in 0..policy.len() {
                assert!(
                    (got[i] - expected[i]).abs() < tolerance,
                    "{dtype:?}: {got:?}"
                );
                assert!(
                    (got_slopes[i] - slopes[i]).abs() < tolerance,
                    "{dtype:?}: {got_slopes:?}"
                );
            }
        }
    }

    /// Ours: a token π_θ has all but ruled out (log π_θ = −120 where log π_ref = −0.1) overflows the
    /// exact k3 in f32 (e^119.9) and would own the step in f64 (≈ 10⁵²); with the tangent above 2.5
    /// its term is `k3(2.5) + (e^2.5 − 1)(119.9 − 2.5)` ≈ 1,320 and its gradient e^2.5 − 1 ≈ 11.2,
    /// finite in both dtypes.
    #[test]
    fn a_collapsed_token_has_a_bounded_pull_above_the_cap() {
        let expected_slope = 1.0 - 2.5f64.exp();
        let expected = (2.5f64.exp() - 3.5) - expected_slope * (119.9 - 2.5);
        for dtype in [DType::F32, DType::F64] {
            let var = Var::from_tensor(&tensor(&[-120.0, -1.0], dtype)).unwrap();
            let reference = tensor(&[-0.1, -1.0], dtype);
            let exact = values(&k3_kl(var.as_tensor(), &reference, f64::INFINITY).unwrap());
            assert!(exact[0] > 1e50, "{dtype:?}: {exact:?}");
            let kl = k3_kl(var.as_tensor(), &reference, 2.5).unwrap();
            let got = values(&kl);
            assert!((got[0] - expected).abs() < 1e-3, "{dtype:?}: {got:?}");
            assert_eq!(got[1], 0.0);
            let grads = kl.sum_all().unwrap().backward().unwrap();
            let slopes = values(grads.get(var.as_tensor()).unwrap());
            assert!(
                (slopes[0] - expected_slope).abs() < 1e-5,
                "{dtype:?}: {slopes:?}"
            );
            assert_eq!(slopes[1], 0.0);
        }
    }

    #[test]
    fn ratio_is_the_exponential_of_the_log_prob_difference() {
        let policy = tensor(&[-1.0, -2.0], DType::F64);
        let behaviour = tensor(&[-1.1, -2.0], DType::F64);
        let rho = values(&ratio(&policy, &behaviour).unwrap());
        assert!((rho[0] - 1.1051709181).abs() < 1e-9, "{rho:?}");
        assert_eq!(rho[1], 1.0);
    }
}
