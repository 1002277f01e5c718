//! `flywheel train`: one training job on stored judgments, ending in a PEFT adapter registered
//! `ready` in the store.
//!
//! The run is recorded before any work starts (status `running`, with the next adapter version
//! reserved as `training`), each step's metrics as it goes, and its end together with the adapter's:
//! `succeeded` + `ready`, or `failed` + `failed` with the error. The adapter directory is written
//! atomically under `<out-dir>/<version>/` and removed again if registering it fails, so no partial
//! adapter and no successful run without one is ever left behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use flywheel_store::{Adapter as StoredAdapter, NewTrainRun, Store, TrainRun, TrainStep};
use flywheel_store::{AdapterStatus, TrainingDataFilter};
use flywheel_trainer::{
    pairs_from_store, prepare_pairs, read_adapter, write_adapter, Adapter, AdapterConfig, Dpo,
    Inpo, Ipo, LoraConfig, LoraWeights, Model, Objective, OptimConfig, PairSelection, PreparedPair,
    Rpo, Sppo, StepMetrics, TrainConfig, Trainer,
};
use serde_json::json;

use super::StoreArgs;

/// The preference objectives `flywheel train` runs (research/algorithms.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algo {
    Sppo,
    Inpo,
    Dpo,
    Ipo,
    Rpo,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// The objective.
    #[arg(long, value_enum, env = "FLYWHEEL_TRAIN_ALGO")]
    pub algo: Algo,
    /// The base model: the local HF-format directory the server serves.
    #[arg(long, env = "FLYWHEEL_MODEL")]
    pub model: PathBuf,
    /// The adapter version to improve (π_t): the run learns from its samples and starts from its
    /// weights. Default: the active version.
    #[arg(long, env = "FLYWHEEL_TRAIN_PARENT")]
    pub parent: Option<i64>,
    /// Learn only from groups created at or after this time (RFC 3339, e.g. 2025-01-31T00:00:00Z).
    #[arg(long, env = "FLYWHEEL_TRAIN_SINCE")]
    pub since: Option<DateTime<Utc>>,
    /// Optimiser steps.
    #[arg(long, env = "FLYWHEEL_TRAIN_STEPS", default_value_t = 100)]
    pub steps: usize,
    /// Peak learning rate (10% linear warmup, then linear decay to 0).
    #[arg(long, env = "FLYWHEEL_TRAIN_LR", default_value_t = 5e-6)]
    pub lr: f64,
    /// LoRA rank of a new adapter (α = 2·rank, attention projections). A child of an adapter keeps
    /// its parent's LoRA shape; a different rank is an error.
    #[arg(long, env = "FLYWHEEL_TRAIN_RANK")]
    pub rank: Option<usize>,
    /// Pairs per step.
    #[arg(long, env = "FLYWHEEL_TRAIN_BATCH", default_value_t = 4)]
    pub batch: usize,
    /// Where adapter directories go: `<out-dir>/<version>/`.
    #[arg(long, env = "FLYWHEEL_ADAPTER_DIR", default_value = "adapters")]
    pub out_dir: PathBuf,
    /// Learn from responses of every adapter version, not only the parent's (off-policy).
    #[arg(long)]
    pub all_versions: bool,
    /// Seeds LoRA initialisation and dropout.
    #[arg(long, env = "FLYWHEEL_TRAIN_SEED", default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

const DEFAULT_RANK: usize = 16;

pub async fn run(args: TrainArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let adapter = train(&store, &args).await?;
    println!(
        "adapter {} ready at {} (sha256 {})",
        adapter.version,
        adapter.path.as_deref().unwrap_or_default(),
        adapter.sha256.as_deref().unwrap_or_default()
    );
    Ok(())
}

/// Runs one training job against `store` and returns the adapter it registered.
///
/// # Errors
/// An unknown or unusable parent before anything is recorded; afterwards any failure (no usable
/// pairs, a model that does not fit the parent or the data, I/O) marks the run and its adapter
/// `failed` with the error, and is returned.
pub async fn train(store: &Store, args: &TrainArgs) -> anyhow::Result<StoredAdapter> {
    if args.steps == 0 || args.batch == 0 {
        bail!("`--steps` and `--batch` must be at least 1");
    }
    let parent_version = match args.parent {
        Some(v) => v,
        None => store.active_adapter_version().await?,
    };
    let parent = store
        .get_adapter(parent_version)
        .await
        .with_context(|| format!("unknown parent adapter version {parent_version}"))?;
    let base_model = std::path::absolute(&args.model)
        .with_context(|| format!("bad model path {}", args.model.display()))?;
    let new = NewTrainRun {
        algorithm: algorithm_name(args.algo).into(),
        config: run_config(args),
        base_model: base_model.display().to_string(),
        parent_version,
        data_since: args.since,
        data_until: Utc::now(),
    };
    let run = store
        .create_train_run(&new)
        .await
        .context("cannot start the train run")?;
    let version = run.adapter_version.context("the run reserved no version")?;
    let dir = std::path::absolute(args.out_dir.join(version.to_string()))?;
    tracing::info!(run = %run.id, version, parent = parent_version, "train run started");
    match execute(store, args, &run, &parent, &dir).await {
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

/// Everything after the run is recorded: data, model, steps, adapter files, registration.
async fn execute(
    store: &Store,
    args: &TrainArgs,
    run: &TrainRun,
    parent: &StoredAdapter,
    dir: &Path,
) -> anyhow::Result<StoredAdapter> {
    let parent_dir = parent_dir(parent)?;
    let lora = lora_config(args, parent_dir.as_deref())?;
    let model = Model::load(&args.model, lora, DType::F32, &Device::Cpu)
        .with_context(|| format!("cannot load the model at {}", args.model.display()))?;
    let previous: Option<LoraWeights> = match &parent_dir {
        Some(p) => {
            let (_, weights) = read_adapter(p, &model).with_context(|| {
                format!(
                    "parent adapter {} does not fit the model at {}",
                    parent.version,
                    args.model.display()
                )
            })?;
            model.set_trainable(&weights)?;
            Some(weights)
        }
        None => None,
    };
    let filter = TrainingDataFilter {
        adapter_version: (!args.all_versions).then_some(parent.version),
        since: run.data_since,
        until: Some(run.data_until),
    };
    let groups = store.training_groups(&filter).await?;
    let selection = PairSelection {
        policy_version: (!args.all_versions).then_some(parent.version),
        require_direct_agreement: args.algo == Algo::Inpo,
        ..PairSelection::default()
    };
    let (examples, report) = pairs_from_store(&groups, &selection, model.config().vocab_size)
        .context("no usable training pairs")?;
    eprintln!("{report}");
    let objective = objective(args.algo);
    let frozen = match &previous {
        Some(w) => Adapter::Fixed(w),
        None => Adapter::Off,
    };
    let pairs = prepare_pairs(&model, objective.as_ref(), examples, frozen)?;
    let config = TrainConfig {
        optim: OptimConfig {
            lr: args.lr,
            warmup_steps: args.steps / 10,
            total_steps: args.steps,
            ..OptimConfig::default()
        },
        checkpoint: true,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, objective, config)?;
    let started = Instant::now();
    for step in 0..args.steps {
        let batch = batch_at(&pairs, step, args.batch);
        let metrics = trainer.step(&batch)?;
        store
            .insert_train_step(run.id, &train_step(step, &metrics))
            .await?;
        progress(step + 1, args.steps, &metrics, started.elapsed());
    }
    let weights = model.snapshot()?;
    let sha256 = write_adapter(dir, &model, &weights, &run.base_model)?;
    let adapter = store
        .finish_train_run(run.id, &dir.display().to_string(), &sha256)
        .await?;
    tracing::info!(run = %run.id, version = adapter.version, "adapter ready");
    Ok(adapter)
}

/// The parent's adapter directory, `None` for the base model.
fn parent_dir(parent: &StoredAdapter) -> anyhow::Result<Option<PathBuf>> {
    if parent.version == 0 {
        return Ok(None);
    }
    if parent.status == AdapterStatus::Failed || parent.status == AdapterStatus::Training {
        bail!("adapter {} is {}", parent.version, parent.status);
    }
    let path = parent
        .path
        .as_deref()
        .with_context(|| format!("adapter {} has no files", parent.version))?;
    Ok(Some(PathBuf::from(path)))
}

/// A new adapter's LoRA, or the parent's shape (a child keeps it).
fn lora_config(args: &TrainArgs, parent_dir: Option<&Path>) -> anyhow::Result<LoraConfig> {
    let Some(dir) = parent_dir else {
        let rank = args.rank.unwrap_or(DEFAULT_RANK);
        return Ok(LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            seed: args.seed,
            ..LoraConfig::default()
        });
    };
    let file = dir.join(flywheel_trainer::adapter::ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let parent: AdapterConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a PEFT LoRA config", file.display()))?;
    if let Some(rank) = args.rank.filter(|&r| r != parent.r) {
        bail!(
            "`--rank {rank}` does not match the parent adapter's rank {}",
            parent.r
        );
    }
    Ok(LoraConfig {
        rank: parent.r,
        alpha: parent.lora_alpha,
        target_modules: parent.target_modules,
        seed: args.seed,
        ..LoraConfig::default()
    })
}

fn objective(algo: Algo) -> Box<dyn Objective> {
    match algo {
        Algo::Sppo => Box::new(Sppo::default()),
        Algo::Inpo => Box::new(Inpo::default()),
        Algo::Dpo => Box::new(Dpo::default()),
        Algo::Ipo => Box::new(Ipo::default()),
        Algo::Rpo => Box::new(Rpo::default()),
    }
}

fn algorithm_name(algo: Algo) -> &'static str {
    match algo {
        Algo::Sppo => "sppo",
        Algo::Inpo => "inpo",
        Algo::Dpo => "dpo",
        Algo::Ipo => "ipo",
        Algo::Rpo => "rpo",
    }
}

/// Every setting of the run, stored with it so it can be repeated.
fn run_config(args: &TrainArgs) -> serde_json::Value {
    json!({
        "algo": algorithm_name(args.algo),
        "model": args.model.display().to_string(),
        "parent": args.parent,
        "since": args.since,
        "steps": args.steps,
        "lr": args.lr,
        "rank": args.rank,
        "batch": args.batch,
        "all_versions": args.all_versions,
        "seed": args.seed,
    })
}

/// The `batch` pairs of step `step`, taken in order and wrapping around.
fn batch_at(pairs: &[PreparedPair], step: usize, batch: usize) -> Vec<PreparedPair> {
    (0..batch.min(pairs.len()))
        .map(|i| pairs[(step * batch + i) % pairs.len()].clone())
        .collect()
}

fn train_step(step: usize, m: &StepMetrics) -> TrainStep {
    TrainStep {
        step: step as i64,
        loss: m.loss,
        reward_margin: m.margin,
        chosen_logratio: m.chosen_logratio,
        rejected_logratio: m.rejected_logratio,
        grad_norm: m.grad_norm,
        lr: m.lr,
    }
}

/// One line on stderr per step: where the run is and when it will end.
fn progress(done: usize, total: usize, m: &StepMetrics, elapsed: Duration) {
    let per_step = elapsed.as_secs_f64() / done as f64;
    let eta = per_step * (total - done) as f64;
    eprintln!(
        "step {done}/{total}  loss {:.4}  margin {:+.4}  {per_step:.2} s/step  ETA {}",
        m.loss,
        m.margin,
        clock(eta)
    );
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_clock_shows_hours_minutes_and_seconds() {
        assert_eq!(clock(3725.4), "1:02:05");
        assert_eq!(clock(0.0), "0:00:00");
    }
}
