//! Gradients of the trainable adapter, and their per-layer recomputation.
//!
//! With recomputation, the layers run without a graph, keeping only each layer's input; the head and
//! the loss then run with a graph from the top hidden states alone, and the backward recomputes one
//! layer at a time (input as a fresh `Var`, `backward` of `Σ out·g_out` as
//! `DecoderLayer::backward_seed` builds it) and carries `g_in` down (`research/trainer.md` §1,
//! "Gradient checkpointing": identical gradients, one layer's activations alive at a time).

use candle_core::{Tensor, Var};

use crate::model::{head_logprobs, Adapter, Model, Pack};
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

/// Back-propagates `loss(per-token log-probs of pack)` through the trainable adapter by per-layer
/// recomputation, adding its gradients to `grads`; returns what `loss` returns besides the scalar.
///
/// Memory: the layer inputs of the pack, plus one layer's graph at a time.
pub(crate) fn recompute_backward<R>(
    model: &Model,
    pack: &Pack,
    dropout_seed: Option<u64>,
    grads: &mut LoraGrads,
    loss: impl FnOnce(&Tensor) -> Result<(Tensor, R)>,
) -> Result<R> {
    let vars = model.trainable_vars();
    let frame = model.llama.frame(&pack.lengths)?;
    let train = model.pass(Adapter::Trainable, true, dropout_seed);
    let frozen = model.pass(Adapter::Trainable, false, dropout_seed);
    let mut x = model.llama.embed(&pack.ids)?;
    let mut inputs = Vec::with_capacity(model.llama.layers.len());
    for layer in &model.llama.layers {
        let next = layer.forward(&x, &frame, &frozen)?;
        inputs.push(x);
        x = next;
    }
    let top = Var::from_tensor(&x)?;
    // The head's logits are made again in its backward rather than kept: memory stays one block.
    let (value, out) = loss(&head_logprobs(model, top.as_tensor(), pack, &frame, false)?)?;
    let mut g_out = grad_of(&value.backward()?, &top)?;
    for (layer, input) in model.llama.layers.iter().zip(inputs).rev() {
        let input = Var::from_tensor(&input)?;
        let store = layer
            .backward_seed(input.as_tensor(), &frame, &train, &g_out)?
            .backward()?;
        grads.add_from(&vars, &store)?;
        g_out = grad_of(&store, &input)?;
    }
    Ok(out)
}

fn grad_of(store: &candle_core::backprop::GradStore, var: &Var) -> Result<Tensor> {
    Ok(match store.get(var.as_tensor()) {
        Some(g) => g.clone(),
        None => var.zeros_like()?,
    })
}
