//! `flywheel train`: one training job on stored judgments, ending in a PEFT adapter registered as
//! a `candidate` in the store ([`flywheel_trainer::run_job`] says what is recorded when).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use flywheel_store::{Adapter as StoredAdapter, Store};
use flywheel_trainer::{run_job, Algorithm, JobConfig, Progress};

use super::args::{JobArgs, StoreArgs};

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// The objective: sppo, inpo, dpo, ipo, rpo, grpo or consistency-grpo.
    #[arg(long, env = "FLYWHEEL_TRAIN_ALGO")]
    pub algo: Algorithm,
    /// The base model: the local HF-format directory the server serves, or a llama `.gguf` file
    /// (dequantized in memory; mistral.rs applies adapters only to an HF directory, so serve the
    /// `flywheel model import` of that file to use the adapter).
    #[arg(long, env = "FLYWHEEL_MODEL")]
    pub model: PathBuf,
    /// The adapter version to improve (π_t): the run learns from its samples and starts from its
    /// weights. Default: the active version.
    #[arg(long, env = "FLYWHEEL_TRAIN_PARENT")]
    pub parent: Option<i64>,
    /// Learn only from groups created at or after this time (RFC 3339, e.g. 2025-01-31T00:00:00Z).
    #[arg(long, env = "FLYWHEEL_TRAIN_SINCE")]
    pub since: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub job: JobArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run(args: TrainArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let adapter = train(&store, &args).await?;
    println!(
        "adapter {} is a candidate at {} (sha256 {})",
        adapter.version,
        adapter.path.as_deref().unwrap_or_default(),
        adapter.sha256.as_deref().unwrap_or_default()
    );
    Ok(())
}

/// Runs one training job against `store`, showing progress on stderr, and returns the adapter it
/// registered.
///
/// # Errors
/// See [`run_job`]: a failed run is recorded as such and leaves no adapter files.
pub async fn train(store: &Store, args: &TrainArgs) -> anyhow::Result<StoredAdapter> {
    let config = JobConfig {
        parent: args.parent,
        since: args.since,
        ..args.job.config(args.algo, args.model.clone())
    };
    let cancel = Arc::new(AtomicBool::new(false));
    run_job(store, &config, &cancel, &mut show).await
}

/// One line on stderr per step: where the run is and when it will end.
fn show(progress: &Progress) {
    match progress {
        Progress::Data(report) => eprintln!("{report}"),
        Progress::Rollouts(report) => eprintln!("{report}"),
        Progress::Step {
            done,
            total,
            metrics,
            elapsed,
        } => {
            // A GRPO step has no margin: show its KL and clip fractions instead.
            let detail = match &metrics.details {
                Some(d) => {
                    let value = |key: &str| d[key].as_f64().unwrap_or(0.0);
                    format!(
                        "kl {:.4}  clipped {:.3}",
                        value("mean_kl"),
                        value("clipped_low") + value("clipped_high")
                    )
                }
                None => format!("margin {:+.4}", metrics.reward_margin),
            };
            eprintln!(
                "step {done}/{total}  loss {:.4}  {detail}  {:.2} s/step  ETA {}",
                metrics.loss,
                per_step(*elapsed, *done),
                clock(per_step(*elapsed, *done) * (total - done) as f64)
            )
        }
    }
}

fn per_step(elapsed: Duration, done: usize) -> f64 {
    elapsed.as_secs_f64() / done.max(1) as f64
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
