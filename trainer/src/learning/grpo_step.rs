//! Training steps on GRPO rollouts: per-token log π_θ of a pack of responses at their sampling
//! temperature, [`Grpo::loss`] against the stored behaviour log-probs, AdamW on the adapter.
//!
//! Optionally a drift stop, PPO's early stopping on the approximate KL with a rollback: once a
//! micro-batch finds the policy further than a limit from the behaviour policy that sampled it
//! (mean k3 per token), its gradient is dropped, the adapter goes back to its weights before the
//! last optimiser step (the step that moved it there), and the run takes no more steps. The clip
//! bounds each token's incentive, not how far shared LoRA weights carry the policy between passes
//! over a round's data; the consistency benchmark saw that drift reach 20 nats (bench/RESULTS.md).

use candle_core::{DType, Tensor};

use super::grpo::{Grpo, GrpoStats, TokenBatch};
use super::rollouts::PreparedRollout;
use super::train::{backward_pack, TrainConfig, Updates};
use crate::model::{LoraWeights, Model, Pack, Sequence};
use crate::{Error, Result};

/// Metrics of one micro-batch (`grad_norm`/`lr` only when it completed an optimiser step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoStepMetrics {
    pub loss: f64,
    /// Mean advantage over the batch's responses (0 for whole groups with mean baselines).
    pub mean_advantage: f64,
    pub stats: GrpoStats,
    pub grad_norm: Option<f64>,
    pub lr: Option<f64>,
    /// This micro-batch tripped the drift stop: it did not train, the adapter holds its weights
    /// from before the last optimiser step, and the trainer takes no more steps.
    pub stopped: bool,
}

/// Trains the model's adapter with a GRPO-family loss.
pub struct GrpoTrainer<'m> {
    model: &'m Model,
    grpo: Grpo,
    updates: Updates,
    drift: Option<DriftStop>,
}

/// The drift stop's limit and the adapter weights a rollback needs.
struct DriftStop {
    /// The largest mean k3 KL to the behaviour policy a micro-batch may find.
    limit: f64,
    /// The adapter at the start of the accumulation window under way.
    window_start: LoraWeights,
    /// The adapter before the last optimiser step (none before the first).
    before_last_update: Option<LoraWeights>,
    stopped: bool,
}

impl<'m> GrpoTrainer<'m> {
    /// # Errors
    /// `Error::Setting` for out-of-range loss or optimiser settings or zero accumulation.
    pub fn new(model: &'m Model, grpo: Grpo, config: TrainConfig) -> Result<Self> {
        grpo.validate()?;
        Ok(Self {
            updates: Updates::new(model, config)?,
            model,
            grpo,
            drift: None,
        })
    }

    /// Stops the run at the first micro-batch whose [`GrpoStats::behaviour_kl`] exceeds `limit`,
    /// rolling the adapter back to its weights before the last optimiser step.
    ///
    /// # Errors
    /// `Error::Setting` for a limit that is not a positive finite number.
    pub fn with_drift_stop(mut self, limit: f64) -> Result<Self> {
        if !(limit.is_finite() && limit > 0.0) {
            return Err(Error::Setting(format!(
                "the drift stop's KL limit must be a positive number, not {limit}"
            )));
        }
        self.drift = Some(DriftStop {
            limit,
            window_start: self.model.snapshot()?,
            before_last_update: None,
            stopped: false,
        });
        Ok(self)
    }

    /// Gradients of the loss over `batch`, added to the pending accumulation; an optimiser step
    /// when the accumulation is complete.
    ///
    /// # Errors
    /// `Error::NoData` for an empty batch; `Error::Shape` for responses sampled at different
    /// temperatures in one batch, or inputs that do not fit together.
    pub fn step(&mut self, batch: &[PreparedRollout]) -> Result<GrpoStepMetrics> {
        if self.drift.as_ref().is_some_and(|d| d.stopped) {
            return Err(Error::Setting(
                "the run has stopped: the policy drifted past the KL limit".into(),
            ));
        }
        let Some(first) = batch.first() else {
            return Err(Error::NoData("an empty batch".into()));
        };
        if let Some(other) = batch.iter().find(|r| r.temperature != first.temperature) {
            return Err(Error::Shape(format!(
                "one batch mixes sampling temperatures {} and {}",
                first.temperature, other.temperature
            )));
        }
        let seqs: Vec<&Sequence> = batch.iter().map(|r| &r.sequence).collect();
        let pack = Pack::new(&seqs)?.at_temperature(first.temperature)?;
        let tokens = token_batch(batch);
        let options = self.updates.next_options();
        let grpo = self.grpo;
        let (loss, stats) = backward_pack(
            self.model,
            &pack,
            options,
            &mut self.updates.pending,
            |logprobs: &Tensor| {
                let loss = grpo.loss(logprobs, &tokens)?;
                let stats = grpo.stats(logprobs, &tokens)?;
                let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                Ok((loss, (value, stats)))
            },
        )?;
        let mut metrics = GrpoStepMetrics {
            loss,
            mean_advantage: batch.iter().map(|r| r.advantage).sum::<f64>() / batch.len() as f64,
            stats,
            grad_norm: None,
            lr: None,
            stopped: false,
        };
        if let Some(drift) = self.drift.as_mut() {
            if stats.behaviour_kl > drift.limit {
                if let Some(weights) = drift.before_last_update.take() {
                    self.model.set_trainable(&weights)?;
                }
                self.updates.discard_pending(self.model);
                drift.stopped = true;
                metrics.stopped = true;
                return Ok(metrics);
            }
        }
        if let Some(update) = self.updates.finish_micro_batch(self.model)? {
            metrics.grad_norm = Some(update.grad_norm);
            metrics.lr = Some(update.lr);
            if let Some(drift) = self.drift.as_mut() {
                let before = std::mem::replace(&mut drift.window_start, self.model.snapshot()?);
                drift.before_last_update = Some(before);
            }
        }
        Ok(metrics)
    }
}

fn token_batch(batch: &[PreparedRollout]) -> TokenBatch {
    let reference: Option<Vec<f64>> = batch
        .iter()
        .map(|r| r.reference.clone())
        .collect::<Option<Vec<_>>>()
        .map(|v| v.concat());
    TokenBatch {
        lengths: batch.iter().map(|r| r.sequence.response.len()).collect(),
        advantages: batch.iter().map(|r| r.advantage).collect(),
        behaviour: batch.iter().flat_map(|r| r.behaviour.clone()).collect(),
        reference,
        step_tokens: None,
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::files::write_tiny_llama;
    use crate::learning::optim::OptimConfig;
    use crate::learning::rollouts::{prepare_rollouts, Rollout, RolloutCheck, RolloutGroup};
    use crate::model::{sampled_logprobs, Adapter, LoraConfig, LoraTargets};

    /// The tiny model with a fresh LoRA (r = 4, no dropout) on all seven projections; the model
    /// keeps no handle on its files once loaded.
    fn tiny_model() -> Model {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), 7).unwrap();
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: LoraTargets::AllLinear.modules(),
            seed: 3,
        };
        Model::load(dir.path(), lora, DType::F32, &Device::Cpu).unwrap()
    }

    fn rollout(
        model: &Model,
        prompt: Vec<u32>,
        response: Vec<u32>,
        reward: f64,
        t: f64,
    ) -> Rollout {
        let sequence = Sequence::new(prompt, response).unwrap();
        let behaviour = sampled_logprobs(model, &sequence, Adapter::Off, t)
            .unwrap()
            .per_token;
        Rollout {
            sequence,
            behaviour,
            reward,
        }
    }

    /// A group of a rewarded and a punished answer to one prompt, sampled at `t` by the base, ready
    /// to train on.
    fn good_and_bad(model: &Model, t: f64) -> (Vec<PreparedRollout>, Rollout, Rollout) {
        let good = rollout(model, vec![1, 9, 4], vec![10, 11, 2], 1.0, t);
        let bad = rollout(model, vec![1, 9, 4], vec![20, 21, 2], 0.0, t);
        let group = RolloutGroup {
            rollouts: vec![good.clone(), bad.clone()],
            temperature: t,
        };
        let (prepared, _) = prepare_rollouts(
            model,
            &Grpo::dapo(),
            vec![group],
            Adapter::Off,
            RolloutCheck::default(),
        )
        .unwrap();
        (prepared, good, bad)
    }

    #[test]
    fn log_probs_at_a_temperature_are_those_of_the_scaled_logits() {
        let model = tiny_model();
        let seq = Sequence::new(vec![1, 5, 6], vec![7, 8, 2]).unwrap();
        let logits = model.logits(&seq.ids(), Adapter::Off).unwrap();
        let t = 0.7;
        let scaled = (logits / t).unwrap();
        let lsm = candle_nn::ops::log_softmax(&scaled, 1).unwrap();
        let rows: Vec<Vec<f32>> = lsm.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
        let expected: Vec<f64> = [7u32, 8, 2]
            .iter()
            .enumerate()
            .map(|(k, &tok)| f64::from(rows[seq.prompt.len() - 1 + k][tok as usize]))
            .collect();
        let got = sampled_logprobs(&model, &seq, Adapter::Off, t)
            .unwrap()
            .per_token;
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-4, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn stored_log_probs_of_another_policy_are_refused_and_the_rest_trains() {
        let model = tiny_model();
        let t = 0.8;
        let mut foreign = rollout(&model, vec![1, 9], vec![12, 2], 0.0, t);
        foreign.behaviour = foreign.behaviour.iter().map(|b| b - 0.5).collect();
        let group = RolloutGroup {
            rollouts: vec![
                rollout(&model, vec![1, 9], vec![10, 11, 2], 1.0, t),
                rollout(&model, vec![1, 9], vec![13, 2], 0.0, t),
                foreign,
            ],
            temperature: t,
        };
        let grpo = Grpo::default();
        let (prepared, report) = prepare_rollouts(
            &model,
            &grpo,
            vec![group],
            Adapter::Off,
            RolloutCheck::default(),
        )
        .unwrap();
        assert_eq!((report.mismatched, report.kept), (1, 2));
        assert!(prepared[0].advantage > 0.0 && prepared[1].advantage < 0.0);
    }

    #[test]
    fn equal_rewards_leave_nothing_to_train_on() {
        let model = tiny_model();
        let group = RolloutGroup {
            rollouts: vec![
                rollout(&model, vec![1, 9], vec![10, 2], 0.5, 1.0),
                rollout(&model, vec![1, 9], vec![11, 2], 0.5, 1.0),
            ],
            temperature: 1.0,
        };
        let result = prepare_rollouts(
            &model,
            &Grpo::default(),
            vec![group],
            Adapter::Off,
            RolloutCheck::default(),
        );
        let Err(Error::NoData(message)) = result else {
            panic!("expected NoData, got {result:?}")
        };
        assert!(message.contains("1 groups with equal rewards"), "{message}");
    }

    /// At μ = 1 the ratio is 1, so the first step follows the advantage: the rewarded response
    /// gains log-probability and the punished one loses it, in both backward modes.
    #[test]
    fn steps_raise_the_rewarded_response_and_lower_the_punished_one() {
        for checkpoint in [false, true] {
            let model = tiny_model();
            let t = 0.9;
            let (prepared, good, bad) = good_and_bad(&model, t);
            let config = TrainConfig {
                optim: OptimConfig {
                    lr: 1e-2,
                    warmup_steps: 0,
                    total_steps: 5,
                    ..OptimConfig::default()
                },
                checkpoint,
                ..TrainConfig::default()
            };
            let mut trainer = GrpoTrainer::new(&model, Grpo::dapo(), config).unwrap();
            let first = trainer.step(&prepared).unwrap();
            assert!(first.stats.max_abs_log_ratio < 1e-4, "{first:?}");
            for _ in 0..4 {
                trainer.step(&prepared).unwrap();
            }
            let after = |r: &Rollout| {
                sampled_logprobs(&model, &r.sequence, Adapter::Trainable, t)
                    .unwrap()
                    .sum
            };
            let before = |r: &Rollout| r.behaviour.iter().sum::<f64>();
            assert!(after(&good) > before(&good), "checkpoint {checkpoint}");
            assert!(after(&bad) < before(&bad), "checkpoint {checkpoint}");
        }
    }

    fn flat(weights: &LoraWeights) -> Vec<f64> {
        weights
            .pairs
            .iter()
            .flat_map(|(a, b)| [a, b])
            .flat_map(|t| {
                t.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
            .collect()
    }

    /// A steep learning rate on one batch: the drift stop trips at the first micro-batch whose mean
    /// k3 to the behaviour policy passes the limit, trains nothing there, rolls the adapter back to
    /// its weights before the last update, and refuses further steps. A limit never reached
    /// changes nothing.
    #[test]
    fn the_drift_stop_rolls_back_the_step_that_drifted_and_ends_the_run() {
        let t = 1.0;
        let run = |limit: Option<f64>| {
            let model = tiny_model();
            let (prepared, _, _) = good_and_bad(&model, t);
            let config = TrainConfig {
                optim: OptimConfig {
                    lr: 2e-3,
                    warmup_steps: 0,
                    total_steps: 1_000,
                    schedule: crate::learning::optim::Schedule::Constant,
                    ..OptimConfig::default()
                },
                ..TrainConfig::default()
            };
            let mut trainer = GrpoTrainer::new(&model, Grpo::dapo(), config).unwrap();
            if let Some(limit) = limit {
                trainer = trainer.with_drift_stop(limit).unwrap();
            }
            let mut before = Vec::new();
            let mut metrics = Vec::new();
            for _ in 0..12 {
                before.push(flat(&model.snapshot().unwrap()));
                let m = trainer.step(&prepared).unwrap();
                metrics.push(m);
                if m.stopped {
                    assert!(matches!(trainer.step(&prepared), Err(Error::Setting(_))));
                    break;
                }
            }
            (before, metrics, flat(&model.snapshot().unwrap()))
        };

        let (free_before, free, free_after) = run(None);
        assert_eq!(free.len(), 12);
        assert!(free.iter().all(|m| !m.stopped));
        // On the random tiny model the k3 grows fast: about 2.3 after one update, 17 after two.
        let limit = 5.0;
        let tripped = free.iter().position(|m| m.stats.behaviour_kl > limit);
        let s = tripped.expect("lr 2e-3 drifts past the limit within 12 steps");
        assert!(s >= 2, "a rollback past the first update: {free:?}");

        let (before, stopped, after) = run(Some(limit));
        assert_eq!(stopped.len(), s + 1);
        let last = stopped[s];
        assert!(last.stopped && last.grad_norm.is_none(), "{last:?}");
        assert_eq!(last.stats.behaviour_kl, free[s].stats.behaviour_kl);
        assert_eq!(before[..=s], free_before[..=s]);
        assert_eq!(
            after,
            before[s - 1],
            "rolled back to before the last update"
        );
        assert_ne!(after, before[s]);

        let (_, unreached, unreached_after) = run(Some(1e300));
        assert_eq!(unreached.len(), 12);
        assert_eq!(unreached_after, free_after);

        let model = tiny_model();
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let trainer = GrpoTrainer::new(&model, Grpo::dapo(), TrainConfig::default()).unwrap();
            assert!(matches!(
                trainer.with_drift_stop(bad),
                Err(Error::Setting(_))
            ));
        }
    }

    #[test]
    fn one_batch_may_not_mix_temperatures() {
        let model = tiny_model();
        let mut a = PreparedRollout {
            sequence: Sequence::new(vec![1], vec![3]).unwrap(),
            advantage: 1.0,
            behaviour: vec![-1.0],
            reference: None,
            temperature: 1.0,
            group: 0,
        };
        let mut trainer =
            GrpoTrainer::new(&model, Grpo::default(), TrainConfig::default()).unwrap();
        let b = PreparedRollout {
            temperature: 0.5,
            ..a.clone()
        };
        a.advantage = -1.0;
        assert!(matches!(trainer.step(&[a, b]), Err(Error::Shape(_))));
    }
}
