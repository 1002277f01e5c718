//! Gradients of the trainable adapter, one sequence at a time, with optional per-layer recomputation.
//!
//! Every objective here is a function of per-sequence summed log-probs, so `∂L/∂θ = Σ_i (∂L/∂ℓ_i)·∂ℓ_i/∂θ`.
//! A step first evaluates `∂L/∂ℓ_i` on a tiny graph over the log-probs, then back-propagates each
//! sequence alone with weight `∂L/∂ℓ_i`: memory is one sequence's graph, never the batch's.
//!
//! With `checkpoint`, the layers run without a graph, keeping only each layer's input; the backward
//! then recomputes one layer at a time (input as a fresh `Var`, `backward` of `Σ out·g_out`) and carries
//! `g_in` down (`research/trainer.md` §1, "Gradient checkpointing": identical gradients, one layer's
//! activations alive at a time).

use candle_core::{Tensor, Var};

use crate::logprobs::{response_logprobs, token_logprobs, Sequence, HEAD_CHUNK};
use crate::model::{Adapter, Model};
use crate::Result;

/// Accumulated gradients, aligned with `Model::trainable_vars` (`A`, `B` per module).
#[derive(Debug)]
pub(crate) struct LoraGrads {
    pub(crate) grads: Vec<Option<Tensor>>,
}

impl LoraGrads {
    pub(crate) fn new(model: &Model) -> Self {
        Self {
            grads: vec![None; model.trainable_vars().len()],
        }
    }

    pub(crate) fn add_from(
        &mut self,
        vars: &[&Var],
        store: &candle_core::backprop::GradStore,
    ) -> Result<()> {
        for (slot, var) in self.grads.iter_mut().zip(vars) {
            if let Some(g) = store.get(var.as_tensor()) {
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Adds `weight · ∂(Σ_t log π_θ(y_t))/∂θ` for `seq` to `grads`; returns the summed log-prob.
pub(crate) fn accumulate_sequence(
    model: &Model,
    seq: &Sequence,
    weight: f64,
    dropout_seed: Option<u64>,
    checkpoint: bool,
    grads: &mut LoraGrads,
) -> Result<f64> {
    let vars = model.trainable_vars();
    let train = model.pass(Adapter::Trainable, true, dropout_seed);
    if !checkpoint {
        let sum = response_logprobs(model, seq, &train)?.sum_all()?;
        let value = sum.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        grads.add_from(&vars, &(sum * weight)?.backward()?)?;
        return Ok(value);
    }
    let ids = seq.ids();
    let frame = model.llama.frame(ids.len())?;
    let frozen = model.pass(Adapter::Trainable, false, dropout_seed);
    let mut x = model.llama.embed(&ids)?;
    let mut inputs = Vec::with_capacity(model.llama.layers.len());
    for layer in &model.llama.layers {
        let next = layer.forward(&x, &frame, &frozen)?;
        inputs.push(x);
        x = next;
    }
    // The head in chunks of response positions, each with its own backward, summing ∂/∂top.
    let top = Var::from_tensor(&x)?;
    let mut value = 0.0;
    let mut g_out = top.zeros_like()?;
    for start in (0..seq.response.len()).step_by(HEAD_CHUNK) {
        let sum = token_logprobs(model, top.as_tensor(), seq, start)?.sum_all()?;
        value += sum.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let store = (sum * weight)?.backward()?;
        g_out = (g_out + grad_of(&store, &top)?)?;
    }
    for (layer, input) in model.llama.layers.iter().zip(inputs).rev() {
        let input = Var::from_tensor(&input)?;
        let out = layer.forward(input.as_tensor(), &frame, &train)?;
        let store = (out * &g_out)?.sum_all()?.backward()?;
        grads.add_from(&vars, &store)?;
        g_out = grad_of(&store, &input)?;
    }
    Ok(value)
}

fn grad_of(store: &candle_core::backprop::GradStore, var: &Var) -> Result<Tensor> {
    Ok(match store.get(var.as_tensor()) {
        Some(g) => g.clone(),
        None => var.zeros_like()?,
    })
}
