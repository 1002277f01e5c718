//! Test helpers for [`Grpo`]: per-token policy tensors and the finite-difference gradient guard
//! every objective has (`objectives/testing.rs` is its pairwise twin), in F64 and in F32.

use candle_core::{DType, Device, Tensor, Var};

use super::{Grpo, TokenBatch};

/// log π_θ per token as a `[tokens]` tensor of `dtype` on the CPU.
pub(crate) fn policy_tensor(values: &[f64], dtype: DType) -> Tensor {
    Tensor::new(values, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// The loss as an f64, computed in `dtype`.
pub(crate) fn loss_value(grpo: &Grpo, policy: &[f64], batch: &TokenBatch, dtype: DType) -> f64 {
    let loss = grpo.loss(&policy_tensor(policy, dtype), batch).unwrap();
    assert!(loss.dims().is_empty(), "the loss is a scalar");
    assert_eq!(loss.dtype(), dtype, "the loss keeps the policy's dtype");
    loss.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

fn autograd(grpo: &Grpo, policy: &[f64], batch: &TokenBatch, dtype: DType) -> Vec<f64> {
    let var = Var::from_tensor(&policy_tensor(policy, dtype)).unwrap();
    let grads = grpo
        .loss(var.as_tensor(), batch)
        .unwrap()
        .backward()
        .unwrap();
    grads
        .get(var.as_tensor())
        .expect("the loss reaches the policy")
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Central differences of the loss computed in `dtype`, step `h`.
fn finite_differences(
    grpo: &Grpo,
    policy: &[f64],
    batch: &TokenBatch,
    dtype: DType,
    h: f64,
) -> Vec<f64> {
    (0..policy.len())
        .map(|i| {
            let (mut plus, mut minus) = (policy.to_vec(), policy.to_vec());
            plus[i] += h;
            minus[i] -= h;
            (loss_value(grpo, &plus, batch, dtype) - loss_value(grpo, &minus, batch, dtype))
                / (2.0 * h)
        })
        .collect()
}

fn assert_close(what: &str, analytic: &[f64], numeric: &[f64], floor: f64, tolerance: f64) {
    for (t, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        let error = (a - n).abs() / n.abs().max(floor);
        assert!(
            error < tolerance,
            "{what} ∂L/∂policy[{t}]: autograd {a} vs finite difference {n}"
        );
    }
}

/// Asserts that autograd's gradient of the loss w.r.t. the per-token policy log-probs matches
/// central finite differences:
/// - F64: step 1e-5, relative error 1e-6 (as the pairwise objectives' guard);
/// - F32, against its own finite differences: step 3e-2 (F32 rounding allows no finer), relative
///   error 2e-3;
/// - F32 autograd against the F64 finite differences: relative error 1e-5.
///
/// The policy must sit further than the F32 step from every clip boundary.
pub(crate) fn assert_gradient_matches_finite_differences(
    grpo: &Grpo,
    policy: &[f64],
    batch: &TokenBatch,
) {
    let numeric = finite_differences(grpo, policy, batch, DType::F64, 1e-5);
    assert_close(
        "F64",
        &autograd(grpo, policy, batch, DType::F64),
        &numeric,
        1e-3,
        1e-6,
    );
    let analytic_f32 = autograd(grpo, policy, batch, DType::F32);
    let numeric_f32 = finite_differences(grpo, policy, batch, DType::F32, 3e-2);
    assert_close("F32", &analytic_f32, &numeric_f32, 1e-2, 2e-3);
    assert_close("F32 vs F64", &analytic_f32, &numeric, 1e-3, 1e-5);
}
