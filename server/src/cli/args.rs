//! The flag groups several subcommands share: where the store is (every command), a training
//! job's settings (`train`, `worker`, `serve`) and when the worker trains (`worker`, `serve`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flywheel_trainer::{Algorithm, JobConfig, WorkerConfig};

/// Where the store lives; shared by every subcommand that needs it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `postgres://user@host/db`, or `sqlite://path/to/file.db`. Default: an embedded SQLite file.
    #[arg(long, env = "DATABASE_URL", default_value = flywheel_store::DEFAULT_SQLITE_URL)]
    pub database_url: String,
    /// Most database connections open at once. Raise it towards the number of concurrent writers
    /// (for example judgment ingestion at high concurrency on Postgres).
    #[arg(long, env = "FLYWHEEL_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
}

impl StoreArgs {
    pub async fn open(&self) -> anyhow::Result<flywheel_store::Store> {
        use anyhow::Context;
        let pool = flywheel_store::PoolConfig {
            max_connections: self.db_max_connections,
        };
        let store = flywheel_store::Store::connect_with(&self.database_url, &pool)
            .await
            .with_context(|| format!("cannot open the store at {}", redact(&self.database_url)))?;
        store.migrate().await.context("cannot apply migrations")?;
        Ok(store)
    }
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The settings of a training job shared by `train` and `worker`.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Optimiser steps.
    #[arg(long, env = "FLYWHEEL_TRAIN_STEPS", default_value_t = 100)]
    pub steps: usize,
    /// Peak learning rate (10% linear warmup, then linear decay to 0).
    #[arg(long, env = "FLYWHEEL_TRAIN_LR", default_value_t = 5e-6)]
    pub lr: f64,
    /// LoRA rank of a new adapter (α = 2·rank, attention projections; default 16). A child of an
    /// adapter keeps its parent's LoRA shape; a different rank is an error.
    #[arg(long, env = "FLYWHEEL_TRAIN_RANK")]
    pub rank: Option<usize>,
    /// Pairs per step.
    #[arg(long, env = "FLYWHEEL_TRAIN_BATCH", default_value_t = 4)]
    pub batch: usize,
    /// Where adapter directories go: `<adapter-dir>/<version>/`.
    #[arg(
        long = "adapter-dir",
        alias = "out-dir",
        env = "FLYWHEEL_ADAPTER_DIR",
        default_value = "adapters"
    )]
    pub out_dir: PathBuf,
    /// Learn from responses of every adapter version, not only the parent's (off-policy).
    #[arg(long)]
    pub all_versions: bool,
    /// Seeds LoRA initialisation and dropout.
    #[arg(long, env = "FLYWHEEL_TRAIN_SEED", default_value_t = 0)]
    pub seed: u64,
}

impl JobArgs {
    pub fn config(&self, algorithm: Algorithm, model: PathBuf) -> JobConfig {
        JobConfig {
            algorithm,
            model,
            parent: None,
            since: None,
            steps: self.steps,
            lr: self.lr,
            rank: self.rank,
            batch: self.batch,
            out_dir: self.out_dir.clone(),
            all_versions: self.all_versions,
            seed: self.seed,
        }
    }
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

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_pool_size_flag_reaches_the_store_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let args = |n| super::StoreArgs {
            database_url: format!("sqlite://{}", dir.path().join("f.db").display()),
            db_max_connections: n,
        };
        assert!(args(0).open().await.is_err());
        assert!(args(4).open().await.is_ok());
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
