//! Test helpers for objectives: f64 batches from the test-vector tables and a finite-difference check.

use candle_core::{Device, Tensor, Var};

use super::{Objective, PairBatch};

/// A [n, 2] f64 tensor.
pub(crate) fn pairs(rows: &[[f64; 2]]) -> Tensor {
    Tensor::from_vec(rows.concat(), (rows.len(), 2), &Device::Cpu).unwrap()
}

/// A batch with only `reference` and `lengths` (all responses 10 tokens long).
pub(crate) fn batch(reference: &[[f64; 2]]) -> PairBatch {
    PairBatch {
        reference: pairs(reference),
        previous: None,
        win_rates: None,
        lengths: pairs(&vec![[10.0, 10.0]; reference.len()]),
    }
}

/// The loss as an f64.
pub(crate) fn loss_value(objective: &dyn Objective, policy: &[[f64; 2]], batch: &PairBatch) -> f64 {
    let loss = objective.loss(&pairs(policy), batch).unwrap();
    assert!(loss.dims().is_empty(), "the loss is a scalar");
    loss.to_scalar::<f64>().unwrap()
}

/// Asserts that autograd's gradient of the loss w.r.t. the policy log-probs matches central finite
/// differences (f64, step 1e-5) to a relative error of 1e-6.
pub(crate) fn assert_gradient_matches_finite_differences(
    objective: &dyn Objective,
    policy: &[[f64; 2]],
    batch: &PairBatch,
) {
    let var = Var::from_tensor(&pairs(policy)).unwrap();
    let loss = objective.loss(var.as_tensor(), batch).unwrap();
    let grads = loss.backward().unwrap();
    let analytic: Vec<Vec<f64>> = grads.get(var.as_tensor()).unwrap().to_vec2().unwrap();
    let h = 1e-5;
    for (i, row) in policy.iter().enumerate() {
        for j in 0..2 {
            let mut plus = policy.to_vec();
            let mut minus = policy.to_vec();
            plus[i][j] = row[j] + h;
            minus[i][j] = row[j] - h;
            let numeric = (loss_value(objective, &plus, batch)
                - loss_value(objective, &minus, batch))
                / (2.0 * h);
            let error = (analytic[i][j] - numeric).abs() / numeric.abs().max(1e-3);
            assert!(
                error < 1e-6,
                "∂L/∂policy[{i}][{j}]: autograd {} vs finite difference {numeric}",
                analytic[i][j]
            );
        }
    }
}
