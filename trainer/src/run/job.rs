//! One training job against the store, ending in a PEFT adapter registered as a `candidate`: what
//! `flywheel train` runs once and the worker runs whenever enough new judgments arrive.
//!
//! The run is recorded before any work starts (status `running`, with the next adapter version
//! reserved as `training`), each step's metrics as it goes, and its end together with the
//! adapter's: `succeeded` + `candidate`, or `failed` + `failed` with the error. The adapter directory
//! is written atomically under `<out_dir>/<version>/` and removed again if registering it fails, so
//! no partial adapter and no successful run without one is ever left behind.
//!
//! The tensor work runs on a blocking thread, so a server running the worker in-process keeps
//! answering requests; it stops between steps when the job is cancelled.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use flywheel_store::{
    Adapter as StoredAdapter, NewTrainRun, QualityGate, Store, TrainRun, TrainStep,
    TrainingDataFilter, TrainingGroup, TrainingSelect, MAX_JUDGMENT_BATCH,
};
use serde_json::json;
use tokio::sync::mpsc;

use super::rewards::{self, GrpoRewards};
use super::stored::{pairs_from_store, rollouts_from_store, DataReport, RolloutData};
use crate::files::{read_adapter, write_adapter, AdapterConfig, ADAPTER_CONFIG};
use crate::learning::{
    prepare_pairs, prepare_rollouts, ConsistencyConfig, Dpo, Grpo, GrpoStepMetrics, GrpoTrainer,
    Inpo, Ipo, Objective, OptimConfig, PairSelection, PreparedPair, PreparedRollout, RolloutCheck,
    Rpo, Sppo, StepMetrics, TrainConfig, Trainer, UnitExtractor,
};
use crate::model::{Adapter, Compute, LoraConfig, LoraTargets, LoraWeights, Model};

/// The objectives a job runs (research/algorithms.md): pairwise ones on judged groups, and the
/// GRPO family on rewarded groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sppo,
    Inpo,
    Dpo,
    Ipo,
    Rpo,
    /// GRPO on posted rewards, or on win-rates from judgments ([`GrpoRewards`]).
    Grpo,
    /// GRPO on variant groups with §5.2's consistency rewards.
    ConsistencyGrpo,
}

impl Algorithm {
    pub const ALL: [Algorithm; 7] = [
        Algorithm::Sppo,
        Algorithm::Inpo,
        Algorithm::Dpo,
        Algorithm::Ipo,
        Algorithm::Rpo,
        Algorithm::Grpo,
        Algorithm::ConsistencyGrpo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sppo => "sppo",
            Algorithm::Inpo => "inpo",
            Algorithm::Dpo => "dpo",
            Algorithm::Ipo => "ipo",
            Algorithm::Rpo => "rpo",
            Algorithm::Grpo => "grpo",
            Algorithm::ConsistencyGrpo => "consistency-grpo",
        }
    }

    /// The pairwise objective; `None` for the GRPO family.
    fn objective(self) -> Option<Box<dyn Objective>> {
        Some(match self {
            Algorithm::Sppo => Box::new(Sppo::default()),
            Algorithm::Inpo => Box::new(Inpo::default()),
            Algorithm::Dpo => Box::new(Dpo::default()),
            Algorithm::Ipo => Box::new(Ipo::default()),
            Algorithm::Rpo => Box::new(Rpo::default()),
            Algorithm::Grpo | Algorithm::ConsistencyGrpo => return None,
        })
    }

    /// Which stored groups the algorithm learns from.
    pub fn select(self, rewards: GrpoRewards) -> TrainingSelect {
        match (self, rewards) {
            (Algorithm::ConsistencyGrpo, _) => TrainingSelect::Variants,
            (Algorithm::Grpo, GrpoRewards::Posted) => TrainingSelect::Rewarded,
            _ => TrainingSelect::Judged,
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!(
                    "must be one of sppo, inpo, dpo, ipo, rpo, grpo, consistency-grpo. Given: {s}"
                )
            })
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// LoRA rank of a new adapter when none is given.
pub const DEFAULT_RANK: usize = 16;

/// Everything a job needs besides the store.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    pub algorithm: Algorithm,
    /// The base model: the local HF-format directory the server serves.
    pub model: PathBuf,
    /// The adapter version to improve (π_t); `None`: the active one.
    pub parent: Option<i64>,
    /// Learn only from groups created at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub steps: usize,
    /// Peak learning rate (10% linear warmup, then linear decay to 0).
    pub lr: f64,
    /// LoRA rank of a new adapter (α = 2·rank); a child keeps its parent's shape.
    pub rank: Option<usize>,
    /// Which projections a new adapter adapts (default: attention); a child keeps its parent's.
    pub lora_targets: Option<LoraTargets>,
    /// Pairs per step.
    pub batch: usize,
    /// Adapter directories go to `<out_dir>/<version>/`.
    pub out_dir: PathBuf,
    /// Learn from responses of every adapter version, not only the parent's (off-policy).
    pub all_versions: bool,
    pub seed: u64,
    /// The GRPO family's settings; unused by the pairwise objectives.
    pub grpo: GrpoSettings,
    /// Where, and in what precision, the model trains.
    pub compute: Compute,
}

/// How `grpo` and `consistency-grpo` runs turn groups into updates.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoSettings {
    /// The loss. Default: DAPO (clip-higher 0.2/0.28, token-level aggregation, equal-reward groups
    /// dropped) with a k3 KL to the base at β = 0.04, which §5.2 advises for consistency rewards
    /// (they pull towards short consensus answers).
    pub loss: Grpo,
    /// Where plain `grpo` takes its rewards from.
    pub rewards: GrpoRewards,
    /// `consistency-grpo`'s unit extractor: an `ExtractorSpec` JSON file (items with aliases,
    /// regular expressions).
    pub units: Option<PathBuf>,
    pub consistency: ConsistencyConfig,
    /// `consistency-grpo`'s optional quality gate on each reward, from posted rewards or judgments
    /// of the same responses; with one, responses without a gate are left out of training.
    pub quality_gate: Option<QualityGate>,
    /// How far stored behaviour log-probs may stray from the policy's before a response is refused.
    pub check: RolloutCheck,
    /// The drift stop: a run ends at the first batch whose mean k3 KL to the behaviour policy
    /// exceeds this, with the adapter rolled back to before its last update (none: no stop).
    pub stop_kl: Option<f64>,
}

impl Default for GrpoSettings {
    fn default() -> Self {
        Self {
            loss: Grpo {
                beta: 0.04,
                kl_linear_above: 2.5,
                ..Grpo::dapo()
            },
            rewards: GrpoRewards::default(),
            units: None,
            consistency: ConsistencyConfig::default(),
            quality_gate: None,
            check: RolloutCheck::default(),
            stop_kl: None,
        }
    }
}

impl GrpoSettings {
    fn as_json(&self) -> serde_json::Value {
        let loss = &self.loss;
        json!({
            "loss_type": loss.aggregation.name(),
            "scale_rewards": loss.advantages.scale_rewards.name(),
            "baseline": match loss.advantages.baseline {
                crate::learning::Baseline::Mean => "mean",
                crate::learning::Baseline::LeaveOneOut => "loo",
            },
            "drop_zero_variance": loss.advantages.drop_zero_variance,
            "epsilon_low": loss.epsilon_low,
            "epsilon_high": loss.epsilon_high,
            "beta": loss.beta,
            "kl_linear_above": Some(loss.kl_linear_above).filter(|c| c.is_finite()),
            "rewards": self.rewards.name(),
            "units": self.units.as_ref().map(|p| p.display().to_string()),
            "w_help": self.consistency.w_help,
            "w_stab": self.consistency.w_stab,
            "n_max": self.consistency.n_max,
            "stability": self.consistency.stability.name(),
            "empty_agreement": self.consistency.empty_agreement,
            "quality_gate": self.quality_gate.map(QualityGate::name),
            "max_logprob_gap": self.check.max_gap,
            "stop_kl": self.stop_kl,
        })
    }
}

impl JobConfig {
    /// Every setting, stored with the run so it can be repeated.
    fn as_json(&self) -> serde_json::Value {
        let grpo = self
            .algorithm
            .objective()
            .is_none()
            .then(|| self.grpo.as_json());
        json!({
            "grpo": grpo,
            "algo": self.algorithm.name(),
            "model": self.model.display().to_string(),
            "parent": self.parent,
            "since": self.since,
            "steps": self.steps,
            "lr": self.lr,
            "rank": self.rank,
            "lora_targets": self.lora_targets.map(|t| t.to_string()),
            "batch": self.batch,
            "all_versions": self.all_versions,
            "seed": self.seed,
            "device": self.compute.device.to_string(),
            "dtype": self.compute.dtype.to_string(),
        })
    }
}

/// What a running job reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The training data was read: how many groups gave pairs.
    Data(DataReport),
    /// The GRPO family's training data was read.
    Rollouts(RolloutData),
    /// Step `done` of `total` finished, `elapsed` after the first began; `metrics` as recorded.
    Step {
        done: usize,
        total: usize,
        metrics: TrainStep,
        elapsed: Duration,
    },
}

/// Runs one job against `store` and returns the adapter it registered.
///
/// # Errors
/// Bad settings or an unknown or unusable parent before anything is recorded; afterwards any
/// failure (no usable pairs, a model that does not fit the parent or the data, I/O, cancellation)
/// marks the run and its adapter `failed` with the error, and is returned.
pub async fn run_job(
    store: &Store,
    config: &JobConfig,
    cancel: &Arc<AtomicBool>,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> anyhow::Result<StoredAdapter> {
    if config.steps == 0 || config.batch == 0 {
        bail!("`steps` and `batch` must be at least 1");
    }
    let parent_version = match config.parent {
        Some(v) => v,
        None => store.active_adapter_version().await?,
    };
    let parent = store
        .get_adapter(parent_version)
        .await
        .with_context(|| format!("unknown parent adapter version {parent_version}"))?;
    let base_model = std::path::absolute(&config.model)
        .with_context(|| format!("bad model path {}", config.model.display()))?;
    let new = NewTrainRun {
        algorithm: config.algorithm.name().into(),
        config: config.as_json(),
        base_model: base_model.display().to_string(),
        parent_version,
        data_since: config.since,
        data_until: Utc::now(),
    };
    let run = store
        .create_train_run(&new)
        .await
        .context("cannot start the train run")?;
    let version = run.adapter_version.context("the run reserved no version")?;
    let dir = std::path::absolute(config.out_dir.join(version.to_string()))?;
    tracing::info!(run = %run.id, version, parent = parent_version, algorithm = %config.algorithm, "train run started");
    match execute(store, config, &run, &parent, &dir, cancel, on_progress).await {
        Ok(adapter) => Ok(adapter),
        Err(e) => {
            if dir.exists() {
                // Best effort: the adapter row is `failed`, so nothing points here.
                let _ = std::fs::remove_dir_all(&dir);
            }
            let message = format!("{e:#}");
            if let Err(mark) = store.fail_train_run(run.id, &message).await {
                tracing::error!(error.cause_chain = ?mark, "cannot mark the run failed");
            }
            Err(e.context(format!("train run {} failed", run.id)))
        }
    }
}

/// Everything after the run is recorded: data, tensor work on a blocking thread, step metrics
/// into the store as they come, registration.
async fn execute(
    store: &Store,
    config: &JobConfig,
    run: &TrainRun,
    parent: &StoredAdapter,
    dir: &Path,
    cancel: &Arc<AtomicBool>,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> anyhow::Result<StoredAdapter> {
    let parent_dir = parent_dir(parent)?;
    let lora = lora_config(config, parent_dir.as_deref())?;
    let filter = TrainingDataFilter {
        adapter_version: (!config.all_versions).then_some(parent.version),
        since: run.data_since,
        until: Some(run.data_until),
        select: config.algorithm.select(config.grpo.rewards),
    };
    let groups = store.training_groups(&filter).await?;
    let rewards = group_rewards(store, config, run, &groups).await?;
    let work = Work {
        config: config.clone(),
        lora,
        parent_version: parent.version,
        parent_dir,
        groups,
        rewards,
        dir: dir.to_path_buf(),
        base_model: run.base_model.clone(),
        cancel: cancel.clone(),
    };
    let (events, mut received) = mpsc::channel(16);
    let compute = tokio::task::spawn_blocking(move || work.run(events));
    let started = Instant::now();
    let mut recorded = Ok(());
    while let Some(event) = received.recv().await {
        let progress = match event {
            Event::Data(report) => Progress::Data(report),
            Event::Rollouts(report) => Progress::Rollouts(report),
            Event::Step(step, metrics) => {
                if recorded.is_ok() {
                    recorded = store.insert_train_step(run.id, &metrics).await;
                    if recorded.is_err() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                Progress::Step {
                    done: step + 1,
                    total: config.steps,
                    metrics,
                    elapsed: started.elapsed(),
                }
            }
        };
        on_progress(&progress);
    }
    let sha256 = compute.await.context("the training thread panicked")?;
    recorded.context("cannot record a step's metrics")?;
    let sha256 = sha256?;
    let adapter = store
        .finish_train_run(run.id, &dir.display().to_string(), &sha256)
        .await?;
    tracing::info!(run = %run.id, version = adapter.version, "adapter registered as a candidate");
    Ok(adapter)
}

enum Event {
    Data(DataReport),
    Rollouts(RolloutData),
    Step(usize, TrainStep),
}

/// Each group's reward per response for the GRPO family (`None` for the pairwise objectives):
/// posted, win-rates, or consistency rewards, which are computed here and recorded with the run.
async fn group_rewards(
    store: &Store,
    config: &JobConfig,
    run: &TrainRun,
    groups: &[TrainingGroup],
) -> anyhow::Result<Option<Vec<Vec<Option<f64>>>>> {
    match (config.algorithm, config.grpo.rewards) {
        (Algorithm::Grpo, GrpoRewards::Posted) => {
            Ok(Some(groups.iter().map(rewards::posted).collect()))
        }
        (Algorithm::Grpo, GrpoRewards::WinRate) => Ok(Some(
            groups
                .iter()
                .map(rewards::win_rates)
                .collect::<crate::Result<_>>()?,
        )),
        (Algorithm::ConsistencyGrpo, _) => {
            let path = config.grpo.units.as_ref().context(
                "consistency-grpo needs a unit extractor: pass --units FILE (an ExtractorSpec JSON)",
            )?;
            let extractor = UnitExtractor::from_file(path)
                .with_context(|| format!("cannot load the unit extractor {}", path.display()))?;
            let mut out = Vec::with_capacity(groups.len());
            let mut records = Vec::new();
            for group in groups.iter().filter(|g| g.responses.len() >= 2) {
                let scored = rewards::consistency(
                    group,
                    &extractor,
                    &config.grpo.consistency,
                    config.grpo.quality_gate,
                    run.id,
                )?;
                records.extend(scored.records);
                out.push((group.id, scored.rewards));
            }
            for chunk in records.chunks(MAX_JUDGMENT_BATCH) {
                store
                    .insert_rewards(chunk)
                    .await
                    .context("cannot record the consistency rewards")?;
            }
            Ok(Some(
                groups
                    .iter()
                    .map(|g| {
                        out.iter()
                            .find(|(id, _)| *id == g.id)
                            .map_or_else(|| vec![None; g.responses.len()], |(_, r)| r.clone())
                    })
                    .collect(),
            ))
        }
        _ => Ok(None),
    }
}

/// The tensor half of a job, owned by its blocking thread.
struct Work {
    config: JobConfig,
    lora: LoraConfig,
    parent_version: i64,
    parent_dir: Option<PathBuf>,
    groups: Vec<TrainingGroup>,
    /// Per group and response, for the GRPO family.
    rewards: Option<Vec<Vec<Option<f64>>>>,
    dir: PathBuf,
    base_model: String,
    cancel: Arc<AtomicBool>,
}

impl Work {
    /// Trains and writes the adapter; returns its sha256.
    fn run(&self, events: mpsc::Sender<Event>) -> anyhow::Result<String> {
        let config = &self.config;
        let device = config.compute.device.open()?;
        let dtype = config.compute.dtype.dtype();
        let model = Model::load(&config.model, self.lora.clone(), dtype, &device)
            .with_context(|| format!("cannot load the model at {}", config.model.display()))?;
        let previous: Option<LoraWeights> = match &self.parent_dir {
            Some(p) => {
                let (_, weights) = read_adapter(p, &model).with_context(|| {
                    format!(
                        "parent adapter {} does not fit the model at {}",
                        self.parent_version,
                        config.model.display()
                    )
                })?;
                model.set_trainable(&weights)?;
                Some(weights)
            }
            None => None,
        };
        let frozen = match &previous {
            Some(w) => Adapter::Fixed(w),
            None => Adapter::Off,
        };
        let train_config = TrainConfig {
            optim: OptimConfig {
                lr: config.lr,
                warmup_steps: config.steps / 10,
                total_steps: config.steps,
                ..OptimConfig::default()
            },
            checkpoint: true,
            seed: config.seed,
            ..TrainConfig::default()
        };
        match (config.algorithm.objective(), &self.rewards) {
            (Some(objective), _) => {
                self.train_pairs(&model, objective, frozen, train_config, &events)?
            }
            (None, Some(rewards)) => {
                self.train_rollouts(&model, rewards, frozen, train_config, &events)?
            }
            (None, None) => bail!("a GRPO run without rewards"),
        }
        let weights = model.snapshot()?;
        Ok(write_adapter(
            &self.dir,
            &model,
            &weights,
            &self.base_model,
        )?)
    }
}

impl Work {
    fn train_pairs(
        &self,
        model: &Model,
        objective: Box<dyn Objective>,
        frozen: Adapter,
        train_config: TrainConfig,
        events: &mpsc::Sender<Event>,
    ) -> anyhow::Result<()> {
        let config = &self.config;
        let selection = PairSelection {
            policy_version: (!config.all_versions).then_some(self.parent_version),
            require_direct_agreement: config.algorithm == Algorithm::Inpo,
            ..PairSelection::default()
        };
        let (examples, report) =
            pairs_from_store(&self.groups, &selection, model.config().vocab_size)
                .context("no usable training pairs")?;
        let _ = events.blocking_send(Event::Data(report));
        let pairs = prepare_pairs(model, objective.as_ref(), examples, frozen)?;
        let mut trainer = Trainer::new(model, objective, train_config)?;
        for step in 0..config.steps {
            self.check_cancel(step)?;
            let batch = batch_at(&pairs, step, config.batch);
            let metrics = trainer.step(&batch)?;
            let _ = events.blocking_send(Event::Step(step, pair_step(step, &metrics)));
        }
        Ok(())
    }

    /// GRPO: each step takes the responses of `batch` groups (of one sampling temperature), in
    /// order and wrapping around.
    fn train_rollouts(
        &self,
        model: &Model,
        rewards: &[Vec<Option<f64>>],
        frozen: Adapter,
        train_config: TrainConfig,
        events: &mpsc::Sender<Event>,
    ) -> anyhow::Result<()> {
        let config = &self.config;
        let policy_version = (!config.all_versions).then_some(self.parent_version);
        let (groups, mut data) = rollouts_from_store(
            &self.groups,
            rewards,
            policy_version,
            model.config().vocab_size,
        )?;
        let grpo = self.config.grpo.loss;
        let prepared = prepare_rollouts(model, &grpo, groups, frozen, self.config.grpo.check);
        let (rollouts, report) = match prepared {
            Ok(done) => done,
            Err(e) => {
                let _ = events.blocking_send(Event::Rollouts(data));
                return Err(anyhow::Error::new(e).context("no usable GRPO groups"));
            }
        };
        data.prepared = Some(report);
        let _ = events.blocking_send(Event::Rollouts(data));
        let groups = by_group(rollouts);
        let mut trainer = GrpoTrainer::new(model, grpo, train_config)?;
        if let Some(limit) = config.grpo.stop_kl {
            trainer = trainer.with_drift_stop(limit)?;
        }
        for step in 0..config.steps {
            self.check_cancel(step)?;
            let batch = group_batch_at(&groups, step, config.batch);
            let metrics = trainer.step(&batch)?;
            let _ = events.blocking_send(Event::Step(step, grpo_step(step, &metrics)));
            if metrics.stopped {
                tracing::warn!(
                    step,
                    behaviour_kl = metrics.stats.behaviour_kl,
                    "the policy drifted past --grpo-stop-kl: rolled back to before the last update, run ends"
                );
                break;
            }
        }
        Ok(())
    }

    fn check_cancel(&self, step: usize) -> anyhow::Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            bail!("cancelled after {step} of {} steps", self.config.steps);
        }
        Ok(())
    }
}

/// Prepared rollouts regrouped by their group, in order.
fn by_group(rollouts: Vec<PreparedRollout>) -> Vec<Vec<PreparedRollout>> {
    let mut groups: Vec<Vec<PreparedRollout>> = Vec::new();
    for r in rollouts {
        match groups.last_mut() {
            Some(g) if g[0].group == r.group => g.push(r),
            _ => groups.push(vec![r]),
        }
    }
    groups
}

/// The responses of `batch` groups from step `step` on, wrapping around, keeping only groups of the
/// first one's sampling temperature (one pack has one temperature).
fn group_batch_at(
    groups: &[Vec<PreparedRollout>],
    step: usize,
    batch: usize,
) -> Vec<PreparedRollout> {
    let picked: Vec<&Vec<PreparedRollout>> = (0..batch.min(groups.len()))
        .map(|i| &groups[(step * batch + i) % groups.len()])
        .collect();
    let temperature = picked[0][0].temperature;
    picked
        .into_iter()
        .filter(|g| g[0].temperature == temperature)
        .flatten()
        .cloned()
        .collect()
}

/// The parent's adapter directory (`None` for the base model), by the store's one rule.
fn parent_dir(parent: &StoredAdapter) -> anyhow::Result<Option<PathBuf>> {
    Ok(parent.directory()?)
}

/// A new adapter's LoRA, or the parent's shape (a child keeps it).
fn lora_config(config: &JobConfig, parent_dir: Option<&Path>) -> anyhow::Result<LoraConfig> {
    let Some(dir) = parent_dir else {
        let rank = config.rank.unwrap_or(DEFAULT_RANK);
        return Ok(LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            target_modules: config.lora_targets.unwrap_or_default().modules(),
            seed: config.seed,
            ..LoraConfig::default()
        });
    };
    let file = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let parent: AdapterConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a PEFT LoRA config", file.display()))?;
    if let Some(rank) = config.rank.filter(|&r| r != parent.r) {
        bail!(
            "rank {rank} does not match the parent adapter's rank {}",
            parent.r
        );
    }
    if let Some(targets) = config
        .lora_targets
        .filter(|t| LoraTargets::of_modules(&parent.target_modules) != Some(*t))
    {
        bail!(
            "LoRA targets {targets} do not match the parent adapter's target_modules {:?}",
            parent.target_modules
        );
    }
    Ok(LoraConfig {
        rank: parent.r,
        alpha: parent.lora_alpha,
        target_modules: parent.target_modules,
        seed: config.seed,
        ..LoraConfig::default()
    })
}

/// The `batch` pairs of step `step`, taken in order and wrapping around.
fn batch_at(pairs: &[PreparedPair], step: usize, batch: usize) -> Vec<PreparedPair> {
    (0..batch.min(pairs.len()))
        .map(|i| pairs[(step * batch + i) % pairs.len()].clone())
        .collect()
}

fn pair_step(step: usize, m: &StepMetrics) -> TrainStep {
    TrainStep {
        step: step as i64,
        loss: m.loss,
        reward_margin: m.margin,
        chosen_logratio: m.chosen_logratio,
        rejected_logratio: m.rejected_logratio,
        grad_norm: m.grad_norm,
        lr: m.lr,
        details: None,
    }
}

/// A GRPO step has no chosen and rejected responses: those columns are 0 and its own metrics go
/// into `details`.
fn grpo_step(step: usize, m: &GrpoStepMetrics) -> TrainStep {
    TrainStep {
        step: step as i64,
        loss: m.loss,
        reward_margin: 0.0,
        chosen_logratio: 0.0,
        rejected_logratio: 0.0,
        grad_norm: m.grad_norm,
        lr: m.lr,
        details: Some(json!({
            "tokens": m.stats.tokens,
            "mean_advantage": m.mean_advantage,
            "clipped_low": m.stats.clipped_low,
            "clipped_high": m.stats.clipped_high,
            "mean_kl": m.stats.mean_kl,
            "max_abs_log_ratio": m.stats.max_abs_log_ratio,
            "behaviour_kl": m.stats.behaviour_kl,
            "stopped": m.stopped,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_unknown_ones_are_refused() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
        }
        assert!("ppo"
            .parse::<Algorithm>()
            .unwrap_err()
            .contains("Given: ppo"));
    }

    fn job(rank: Option<usize>, lora_targets: Option<LoraTargets>) -> JobConfig {
        JobConfig {
            algorithm: Algorithm::Dpo,
            model: PathBuf::from("model"),
            parent: None,
            since: None,
            steps: 1,
            lr: 1e-4,
            rank,
            lora_targets,
            batch: 1,
            out_dir: PathBuf::from("adapters"),
            all_versions: false,
            seed: 3,
            grpo: GrpoSettings::default(),
            compute: Compute::default(),
        }
    }

    /// A parent adapter directory holding only its PEFT config (r = 8, α = 16).
    fn parent_with(targets: LoraTargets) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let config = AdapterConfig {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            base_model_name_or_path: "m".into(),
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            target_modules: targets.modules(),
            bias: "none".into(),
            fan_in_fan_out: false,
            use_rslora: false,
            inference_mode: true,
        };
        let text = serde_json::to_string(&config).unwrap();
        std::fs::write(dir.path().join(ADAPTER_CONFIG), text).unwrap();
        dir
    }

    #[test]
    fn a_new_adapter_adapts_the_requested_projections_and_attention_by_default() {
        let attention = lora_config(&job(None, None), None).unwrap();
        let all = lora_config(&job(Some(4), Some(LoraTargets::AllLinear)), None).unwrap();

        assert_eq!(
            attention.target_modules,
            ["q_proj", "k_proj", "v_proj", "o_proj"]
        );
        assert_eq!((attention.rank, attention.alpha), (DEFAULT_RANK, 32.0));
        assert_eq!(all.target_modules.len(), 7);
        assert!(all.targets("down_proj") && all.targets("q_proj"));
        assert_eq!((all.rank, all.alpha, all.seed), (4, 8.0, 3));
    }

    #[test]
    fn a_child_keeps_its_parents_shape_and_refuses_a_different_one() {
        let parent = parent_with(LoraTargets::AllLinear);

        let kept = lora_config(&job(None, None), Some(parent.path())).unwrap();
        let same = lora_config(
            &job(Some(8), Some(LoraTargets::AllLinear)),
            Some(parent.path()),
        );
        let other = lora_config(
            &job(None, Some(LoraTargets::Attention)),
            Some(parent.path()),
        );
        let rank = lora_config(&job(Some(4), None), Some(parent.path()));

        assert_eq!(kept.target_modules, LoraTargets::AllLinear.modules());
        assert_eq!((kept.rank, kept.alpha), (8, 16.0));
        assert_eq!(same.unwrap(), kept);
        let other = other.unwrap_err().to_string();
        assert!(
            other.contains("LoRA targets attention do not match"),
            "{other}"
        );
        assert!(rank
            .unwrap_err()
            .to_string()
            .contains("rank 4 does not match"));
    }
}
