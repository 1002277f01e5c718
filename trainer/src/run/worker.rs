//! The background trainer: whenever enough judgments arrived since the last run, train a child of
//! the active adapter (the incumbent) on the incumbent's own samples. The child is a candidate:
//! the arena promotes or retires it, or, with `activate` (`--promotion always`), it is made active
//! at once. While a candidate waits for its verdict no other is trained, so candidates never pile
//! up and each is judged against the incumbent it was trained from.
//!
//! Built like an email-delivery worker: [`try_train_once`] is the unit of work, which tests call
//! directly; [`run_every`] is the sleep policy around it; [`WorkerGuard`] stops the loop (and a job
//! between steps) when dropped.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flywheel_store::{NewDecision, Store, TrainingDataFilter, TrainingSelect};
use tokio::task::JoinHandle;

use super::job::{run_job, Algorithm, JobConfig, Progress};

/// When the worker trains and what it does with the result.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The job to run; its `parent` is ignored (the worker always improves the active adapter).
    pub job: JobConfig,
    /// Judgments of the active adapter's samples, made since the last run began, needed to train;
    /// for the GRPO family, new groups it can learn from (rewarded groups, or variant groups).
    pub min_new_judgments: i64,
    /// Make each new adapter active at once, unchecked (`--promotion always`); otherwise it stays
    /// a candidate for the arena, and training waits until no candidate is left.
    pub activate: bool,
    /// Time between checks for new judgments.
    pub interval: Duration,
}

/// What one call of [`try_train_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Trained and registered this adapter version (active if the config says so).
    Trained(i64),
    /// Too few new judgments; nothing recorded.
    NothingNew,
    /// A candidate still waits for the arena's verdict; nothing recorded.
    CandidatePending(i64),
}

/// Trains once if at least `min_new_judgments` judgments of the active adapter's samples arrived
/// since the last run began (every run counts, failed ones too, so bad data is not retried until
/// new judgments come).
///
/// # Errors
/// A store error while looking, or the job's error (its run is then recorded as failed).
pub async fn try_train_once(
    store: &Store,
    config: &WorkerConfig,
    cancel: &Arc<AtomicBool>,
) -> anyhow::Result<Outcome> {
    if !config.activate {
        if let Some(pending) = store.candidates().await?.first() {
            tracing::debug!(
                candidate = pending.version,
                "a candidate waits for the arena; not training another"
            );
            return Ok(Outcome::CandidatePending(pending.version));
        }
    }
    let parent = store.active_adapter_version().await?;
    let since = store.latest_train_run().await?.map(|run| run.data_until);
    let version = (!config.job.all_versions).then_some(parent);
    // Pairwise objectives wait for judgments; the GRPO family for new groups it can learn from,
    // and a gated consistency run for variant groups whose every answer has its verdict.
    let select = match (config.job.algorithm, config.job.grpo.quality_gate) {
        (Algorithm::ConsistencyGrpo, Some(gate)) => TrainingSelect::GatedVariants(gate),
        (algorithm, _) => algorithm.select(config.job.grpo.rewards),
    };
    let new = match select {
        TrainingSelect::Judged => store.count_judgments(version, since).await?,
        select => {
            let filter = TrainingDataFilter {
                adapter_version: version,
                since,
                until: None,
                select,
            };
            store.count_training_groups(&filter).await?
        }
    };
    if new < config.min_new_judgments {
        tracing::debug!(
            new,
            needed = config.min_new_judgments,
            "not enough new judgments to train"
        );
        return Ok(Outcome::NothingNew);
    }
    let job = JobConfig {
        parent: Some(parent),
        ..config.job.clone()
    };
    tracing::info!(new, parent, "training on new judgments");
    let mut log = |p: &Progress| match p {
        Progress::Data(report) => tracing::info!(%report, "training data"),
        Progress::Rollouts(report) => tracing::info!(%report, "training data"),
        Progress::Step {
            done,
            total,
            metrics,
            ..
        } => tracing::info!(
            step = done,
            total,
            loss = metrics.loss,
            margin = metrics.reward_margin,
            details = metrics.details.as_ref().map(ToString::to_string),
            "train step"
        ),
    };
    let adapter = run_job(store, &job, cancel, &mut log).await?;
    if config.activate {
        match store
            .promote_adapter(adapter.version, parent, &NewDecision::always())
            .await
        {
            Ok(_) => tracing::info!(version = adapter.version, "activated the new adapter"),
            // Someone changed the active version while this one trained: it stays a candidate.
            Err(flywheel_store::Error::Conflict(message)) => {
                tracing::warn!(version = adapter.version, %message, "not activated")
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        tracing::info!(
            version = adapter.version,
            "a new candidate waits for the arena"
        );
    }
    Ok(Outcome::Trained(adapter.version))
}

/// Calls `work` forever: again at once after it trained (more may be waiting), after `interval`
/// when there was nothing new or it failed (logged). `sleep` waits for the interval
/// (`tokio::time::sleep` in production; tests pass a virtual clock).
pub async fn run_every<W, F, S, SF>(interval: Duration, mut sleep: S, mut work: W)
where
    W: FnMut() -> F,
    F: Future<Output = anyhow::Result<Outcome>>,
    S: FnMut(Duration) -> SF,
    SF: Future<Output = ()>,
{
    loop {
        match work().await {
            Ok(Outcome::Trained(_)) => continue,
            Ok(Outcome::NothingNew | Outcome::CandidatePending(_)) => {}
            Err(e) => tracing::error!(error.cause_chain = ?e, "training failed"),
        }
        sleep(interval).await;
    }
}

/// A running worker; dropping it stops the loop and any job between two steps.
pub struct WorkerGuard {
    cancel: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// Starts the worker on the current runtime.
pub fn spawn_worker(store: Store, config: WorkerConfig) -> WorkerGuard {
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let interval = config.interval;
        run_every(interval, tokio::time::sleep, || {
            try_train_once(&store, &config, &stop)
        })
        .await;
    });
    WorkerGuard { cancel, task }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use futures::FutureExt;

    /// Runs `run_every` over scripted outcomes (then `NothingNew`) on a virtual clock that each
    /// sleep advances, recording when each call happened, until the clock passes `run_for`.
    fn calls_at(outcomes: Vec<anyhow::Result<Outcome>>, run_for: Duration) -> Vec<u64> {
        let clock = Arc::new(Mutex::new(Duration::ZERO));
        let mut script = outcomes.into_iter();
        let mut calls = Vec::new();
        let sleep = |d: Duration| {
            let mut now = clock.lock().unwrap();
            *now += d;
            let over = *now > run_for;
            async move {
                if over {
                    std::future::pending::<()>().await;
                }
            }
        };
        let work = || {
            calls.push(clock.lock().unwrap().as_secs());
            let next = script.next().unwrap_or(Ok(Outcome::NothingNew));
            async move { next }
        };
        // The loop never returns; it parks in its last sleep, which `now_or_never` gives up on.
        let finished = run_every(Duration::from_secs(60), sleep, work).now_or_never();
        assert!(finished.is_none());
        calls
    }

    #[test]
    fn with_nothing_new_the_worker_checks_once_per_interval() {
        let calls = calls_at(vec![], Duration::from_secs(150));
        assert_eq!(calls, vec![0, 60, 120]);
    }

    #[test]
    fn after_training_the_worker_checks_again_at_once() {
        let calls = calls_at(
            vec![Ok(Outcome::Trained(1)), Ok(Outcome::Trained(2))],
            Duration::from_secs(61),
        );
        assert_eq!(calls, vec![0, 0, 0, 60]);
    }

    #[test]
    fn a_failure_waits_an_interval_and_does_not_stop_the_worker() {
        let calls = calls_at(
            vec![Err(anyhow::anyhow!("disk full")), Ok(Outcome::Trained(1))],
            Duration::from_secs(61),
        );
        assert_eq!(calls, vec![0, 60, 60]);
    }
}
