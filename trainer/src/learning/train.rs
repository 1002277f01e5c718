//! Training steps on preference pairs: frozen log-probs once per example, then AdamW on the adapter.
//!
//! A step packs its pairs' sequences into one batch (`pack`), evaluates the objective on their summed
//! log-probs and back-propagates, through the whole graph or layer by layer (`grad`). Micro-batches
//! accumulate into one optimiser step every `grad_accumulation` calls.

use candle_core::{DType, Device, Tensor};

use super::grad::{recompute_backward, LoraGrads};
use super::objectives::{Objective, PairBatch, Reference};
use super::optim::{AdamW, OptimConfig, UpdateStats};
use crate::model::{packed_logprobs, sequence_logprobs, Adapter, Model, Pack, Sequence};
use crate::{Error, Result};

/// A (chosen, rejected) pair of responses to one prompt, with SPPO's win-rates when known.
#[derive(Debug, Clone, PartialEq)]
pub struct PairExample {
    pub chosen: Sequence,
    pub rejected: Sequence,
    /// P̂(y ≻ π_t) of (chosen, rejected), for SPPO soft.
    pub win_rates: Option<[f64; 2]>,
}

/// A pair with its frozen log-probs, computed once (no graph).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPair {
    pub example: PairExample,
    /// Under the objective's [`Reference`] policy.
    pub reference: [f64; 2],
    /// Under π_t, when the objective needs it besides.
    pub previous: Option<[f64; 2]>,
}

/// Computes each example's frozen log-probs once, without a graph. `previous` is π_t, the policy that
/// sampled the data: `Adapter::Off` when that was the base model (version 0), `Adapter::Fixed` with the
/// parent adapter's weights otherwise.
///
/// # Errors
/// `Error::Setting` when `previous` is `Adapter::Trainable` (it moves during training, π_t must not);
/// shape errors from the sequences.
pub fn prepare_pairs(
    model: &Model,
    objective: &dyn Objective,
    examples: Vec<PairExample>,
    previous: Adapter,
) -> Result<Vec<PreparedPair>> {
    if matches!(previous, Adapter::Trainable) {
        return Err(Error::Setting(
            "π_t must be frozen: pass the parent adapter as Adapter::Fixed (or Off for the base)"
                .into(),
        ));
    }
    let reference = match objective.reference() {
        Reference::Base => Adapter::Off,
        Reference::Previous => previous,
    };
    // One sequence at a time rather than packed: a pack's matmuls may round differently from a single
    // sequence's, and these values must equal `sequence_logprobs`'s exactly.
    let logprob_pair = |e: &PairExample, adapter| -> Result<[f64; 2]> {
        Ok([
            sequence_logprobs(model, &e.chosen, adapter)?.sum,
            sequence_logprobs(model, &e.rejected, adapter)?.sum,
        ])
    };
    examples
        .into_iter()
        .map(|example| {
            let previous = if objective.needs_previous() {
                Some(logprob_pair(&example, previous)?)
            } else {
                None
            };
            Ok(PreparedPair {
                reference: logprob_pair(&example, reference)?,
                previous,
                example,
            })
        })
        .collect()
}

/// Settings of a training run besides the objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    pub optim: OptimConfig,
    /// Micro-batches per optimiser step.
    pub grad_accumulation: usize,
    /// Recompute layer by layer in the backward pass (bounded activation memory, one more forward).
    pub checkpoint: bool,
    /// Seeds LoRA dropout masks.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            optim: OptimConfig::default(),
            grad_accumulation: 1,
            checkpoint: false,
            seed: 0,
        }
    }
}

/// Metrics of one micro-batch (`grad_norm`/`lr` only when it completed an optimiser step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMetrics {
    pub loss: f64,
    /// Mean log π_θ − log π_reference over chosen responses.
    pub chosen_logratio: f64,
    pub rejected_logratio: f64,
    /// Mean chosen-minus-rejected log-ratio (DPO's implicit reward margin / β).
    pub margin: f64,
    pub grad_norm: Option<f64>,
    pub lr: Option<f64>,
}

/// Trains the model's adapter with one objective.
pub struct Trainer<'m> {
    model: &'m Model,
    objective: Box<dyn Objective + 'm>,
    updates: Updates,
}

impl<'m> Trainer<'m> {
    /// # Errors
    /// `Error::Setting` for out-of-range optimiser settings or zero accumulation.
    pub fn new(
        model: &'m Model,
        objective: Box<dyn Objective + 'm>,
        config: TrainConfig,
    ) -> Result<Self> {
        Ok(Self {
            updates: Updates::new(model, config)?,
            model,
            objective,
        })
    }

    /// Gradients of the mean loss over `pairs`, added to the pending accumulation; an optimiser step
    /// when the accumulation is complete.
    ///
    /// # Errors
    /// `Error::NoData` for an empty batch; `Error::Shape` for a batch missing an input the objective
    /// needs.
    pub fn step(&mut self, pairs: &[PreparedPair]) -> Result<StepMetrics> {
        let options = self.updates.next_options();
        let (loss, policy) = accumulate_gradients(
            self.model,
            self.objective.as_ref(),
            pairs,
            options,
            &mut self.updates.pending,
        )?;
        let mut metrics = metrics(loss, pairs, &policy);
        if let Some(stats) = self.updates.finish_micro_batch(self.model)? {
            metrics.grad_norm = Some(stats.grad_norm);
            metrics.lr = Some(stats.lr);
        }
        Ok(metrics)
    }
}

/// The optimiser side every trainer shares: gradient accumulation over micro-batches, a dropout
/// seed per call, and an AdamW step once per `grad_accumulation` micro-batches.
pub(crate) struct Updates {
    config: TrainConfig,
    optimizer: AdamW,
    pub(crate) pending: LoraGrads,
    micro: usize,
    calls: u64,
}

impl Updates {
    pub(crate) fn new(model: &Model, config: TrainConfig) -> Result<Self> {
        if config.grad_accumulation == 0 {
            return Err(Error::Setting(
                "grad_accumulation must be at least 1".into(),
            ));
        }
        Ok(Self {
            optimizer: AdamW::new(config.optim, model.trainable_vars().len())?,
            pending: LoraGrads::new(model),
            config,
            micro: 0,
            calls: 0,
        })
    }

    /// The backward settings of the next micro-batch (its own dropout seed).
    pub(crate) fn next_options(&mut self) -> GradOptions {
        let seed = self
            .config
            .seed
            .wrapping_add(self.calls.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.calls += 1;
        GradOptions {
            scale: 1.0 / self.config.grad_accumulation as f64,
            dropout_seed: Some(seed),
            checkpoint: self.config.checkpoint,
        }
    }

    /// Drops the gradients accumulated since the last optimiser step (after one, or to skip one).
    pub(crate) fn discard_pending(&mut self, model: &Model) {
        self.pending = LoraGrads::new(model);
        self.micro = 0;
    }

    /// Counts a finished micro-batch; steps the optimiser when the accumulation is complete.
    pub(crate) fn finish_micro_batch(&mut self, model: &Model) -> Result<Option<UpdateStats>> {
        self.micro += 1;
        if self.micro < self.config.grad_accumulation {
            return Ok(None);
        }
        let stats = self
            .optimizer
            .step(&model.trainable_vars(), &self.pending.grads)?;
        self.discard_pending(model);
        Ok(Some(stats))
    }
}

/// How [`accumulate_gradients`] runs its backward passes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GradOptions {
    /// Multiplies the gradients (1 / accumulation steps).
    pub(crate) scale: f64,
    pub(crate) dropout_seed: Option<u64>,
    pub(crate) checkpoint: bool,
}

/// Adds `scale · ∂L/∂θ` for the mean loss over `pairs` to `grads`; returns the loss and the policy's
/// summed log-probs (chosen, rejected per pair).
///
/// The pairs' sequences run as one pack. Without `checkpoint`, its forward keeps the whole graph for
/// one backward; with it, only each layer's input is kept and the backward recomputes layer by layer.
pub(crate) fn accumulate_gradients(
    model: &Model,
    objective: &dyn Objective,
    pairs: &[PreparedPair],
    options: GradOptions,
    grads: &mut LoraGrads,
) -> Result<(f64, Vec<f64>)> {
    if pairs.is_empty() {
        return Err(Error::NoData("an empty batch".into()));
    }
    let seqs: Vec<&Sequence> = pairs
        .iter()
        .flat_map(|p| [&p.example.chosen, &p.example.rejected])
        .collect();
    let pack = Pack::new(&seqs)?;
    let batch = pair_batch(pairs)?;
    backward_pack(model, &pack, options, grads, |logprobs: &Tensor| {
        let policy = pack
            .sums(logprobs)?
            .to_dtype(DType::F64)?
            .to_device(&Device::Cpu)?
            .reshape((pairs.len(), 2))?;
        let loss = objective.loss(&policy, &batch)?;
        let value = loss.to_scalar()?;
        Ok((loss, (value, policy.flatten_all()?.to_vec1()?)))
    })
}

/// Adds `scale · ∂L/∂θ` of `loss(per-token log-probs of pack)` to `grads`, through the whole graph
/// or, with `checkpoint`, by per-layer recomputation; returns what `loss` returns besides the
/// scalar.
pub(crate) fn backward_pack<R>(
    model: &Model,
    pack: &Pack,
    options: GradOptions,
    grads: &mut LoraGrads,
    loss: impl FnOnce(&Tensor) -> Result<(Tensor, R)>,
) -> Result<R> {
    let scaled = |logprobs: &Tensor| -> Result<(Tensor, R)> {
        let (value, out) = loss(logprobs)?;
        Ok(((value * options.scale)?, out))
    };
    if options.checkpoint {
        return recompute_backward(model, pack, options.dropout_seed, grads, scaled);
    }
    let pass = model.pass(Adapter::Trainable, true, options.dropout_seed);
    let (value, out) = scaled(&packed_logprobs(model, pack, &pass)?)?;
    grads.add_from(&model.trainable_vars(), &value.backward()?)?;
    Ok(out)
}

/// The batch's fixed inputs as [n, 2] f64 tensors on the CPU.
fn pair_batch(pairs: &[PreparedPair]) -> Result<PairBatch> {
    let device = &Device::Cpu;
    let n = pairs.len();
    let rows = |f: &dyn Fn(&PreparedPair) -> Option<[f64; 2]>| -> Result<Option<Tensor>> {
        let values: Option<Vec<[f64; 2]>> = pairs.iter().map(f).collect();
        Ok(values
            .map(|v| Tensor::from_vec(v.concat(), (n, 2), device))
            .transpose()?)
    };
    let lengths = |s: &Sequence| s.response.len() as f64;
    let both = |p: &PreparedPair| Some([lengths(&p.example.chosen), lengths(&p.example.rejected)]);
    Ok(PairBatch {
        reference: rows(&|p| Some(p.reference))?.expect("every pair has reference log-probs"),
        previous: rows(&|p| p.previous)?,
        win_rates: rows(&|p| p.example.win_rates)?,
        lengths: rows(&both)?.expect("every pair has lengths"),
    })
}

fn metrics(loss: f64, pairs: &[PreparedPair], policy: &[f64]) -> StepMetrics {
    let n = pairs.len() as f64;
    let (mut chosen, mut rejected) = (0.0, 0.0);
    for (i, p) in pairs.iter().enumerate() {
        chosen += policy[2 * i] - p.reference[0];
        rejected += policy[2 * i + 1] - p.reference[1];
    }
    StepMetrics {
        loss,
        chosen_logratio: chosen / n,
        rejected_logratio: rejected / n,
        margin: (chosen - rejected) / n,
        grad_norm: None,
        lr: None,
    }
}
