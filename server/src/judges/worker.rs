//! The judge worker: `concurrency` loops, each taking one pair at a time from the queue, judging
//! it and posting the verdict (or abstaining), until told to stop.
//!
//! The unit of work, [`judge_next`], is apart from the loop, as the trainer worker's
//! `try_train_once` is. The queue does the scheduling: it never hands this judge a pair twice, so
//! a pair abstained on is not retried (it is released for other annotators at once), and
//! concurrent loops never share a pair.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::queue::{QueueClient, QueueError};
use super::stats::{Counts, Stats};
use super::verdict::Reason;
use super::Judge;

/// How the worker runs (`flywheel judge`'s flags).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The Flywheel server's root URL.
    pub server_url: String,
    /// A key with the `annotate` scope.
    pub api_key: Option<String>,
    /// The annotator name on every judgment: who the judge is to the queue and to agreement.
    pub annotator: String,
    /// Pairs judged at once (each its own loop); at least 1.
    pub concurrency: usize,
    /// How long to wait after the queue is empty or unreachable.
    pub poll_interval: Duration,
    /// How often to log the summary line.
    pub summary_interval: Duration,
    /// Stop once the queue has nothing left for this judge, instead of waiting for new pairs.
    pub until_empty: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            server_url: "http://127.0.0.1:8000".into(),
            api_key: None,
            annotator: "judge".into(),
            concurrency: 1,
            poll_interval: Duration::from_secs(5),
            summary_interval: Duration::from_secs(60),
            until_empty: false,
        }
    }
}

/// What one [`judge_next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A judgment was posted.
    Judged,
    /// A pair was taken and nothing was posted, for this reason.
    Abstained(Reason),
    /// Nothing is left for this judge right now.
    QueueEmpty,
    /// The queue could not be asked (the network, a 5xx); try again later.
    QueueUnavailable,
}

/// Takes the next pair, judges it, and posts the verdict; counts what happened in `stats`.
///
/// # Errors
/// Only when the server refuses the judge itself (a bad key or scope, a bad annotator name, a
/// wrong URL): the worker stops, since no later pair can go better.
pub async fn judge_next(queue: &QueueClient, judge: &Judge, stats: &Stats) -> anyhow::Result<Step> {
    let pair = match queue.next_pair().await {
        Ok(Some(pair)) => pair,
        Ok(None) => return Ok(Step::QueueEmpty),
        Err(QueueError::Fatal(message)) => anyhow::bail!("the server refuses the judge: {message}"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot take a pair from the annotation queue");
            stats.queue_error();
            return Ok(Step::QueueUnavailable);
        }
    };
    let verdict = match judge.judge(&pair).await {
        Ok(verdict) => verdict,
        Err(abstention) => {
            let reason = abstention.reason;
            match reason {
                Reason::Disagreement => tracing::info!(
                    group_id = %pair.group_id, %reason, detail = %abstention.detail, "abstained"
                ),
                _ => tracing::warn!(
                    group_id = %pair.group_id, %reason, detail = %abstention.detail, "abstained"
                ),
            }
            stats.abstained(reason);
            // Another annotator may judge it now; the queue never gives it to this judge again.
            if let Err(e) = queue.release(&pair).await {
                tracing::warn!(group_id = %pair.group_id, error = %e, "cannot release the pair");
            }
            return Ok(Step::Abstained(reason));
        }
    };
    match queue.post_judgment(&pair, &verdict).await {
        Ok(()) => {
            tracing::info!(group_id = %pair.group_id, outcome = %verdict.outcome, "judgment posted");
            stats.posted();
            Ok(Step::Judged)
        }
        Err(e) => {
            stats.abstained(Reason::HttpError);
            if let QueueError::Fatal(message) = e {
                anyhow::bail!("the server refuses the judge's judgments: {message}");
            }
            tracing::warn!(group_id = %pair.group_id, error = %e, "cannot post the judgment");
            Ok(Step::Abstained(Reason::HttpError))
        }
    }
}

/// Runs the worker until `shutdown` resolves (or, with `until_empty`, the queue is empty), then
/// lets every pair in hand finish and returns the final counts. The summary line is logged every
/// `summary_interval` and at the end.
///
/// # Errors
/// The server refused the judge (see [`judge_next`]); the other loops finish their pairs first.
pub async fn run(
    config: WorkerConfig,
    judge: Judge,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Counts> {
    run_counting(config, judge, Arc::default(), shutdown).await
}

/// [`run`], counting into `stats`, which the caller may read while it runs (`--metrics-addr`).
///
/// # Errors
/// As [`run`].
pub async fn run_counting(
    config: WorkerConfig,
    judge: Judge,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Counts> {
    let queue = QueueClient::new(
        &config.server_url,
        config.api_key.clone(),
        &config.annotator,
    )?;
    let shared = Arc::new(Shared {
        queue,
        judge,
        stats,
        config,
    });
    tracing::info!(
        judge = %shared.config.annotator,
        kind = shared.judge.kind(),
        concurrency = shared.config.concurrency,
        server = %shared.config.server_url,
        "judge started"
    );
    let (stop, stopped) = watch::channel(false);
    let mut loops = JoinSet::new();
    for _ in 0..shared.config.concurrency.max(1) {
        loops.spawn(judge_loop(shared.clone(), stopped.clone()));
    }
    let period = shared
        .config
        .summary_interval
        .max(Duration::from_millis(10));
    let mut summary = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut failure = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown, if !*stop.borrow() => {
                tracing::info!("stopping: finishing the pairs in hand");
                stop.send_replace(true);
            }
            _ = summary.tick() => log_summary(&shared),
            joined = loops.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    stop.send_replace(true);
                    failure.get_or_insert(e);
                }
                Some(Err(e)) => {
                    stop.send_replace(true);
                    failure.get_or_insert(anyhow::anyhow!("a judge loop panicked: {e}"));
                }
            },
        }
    }
    log_summary(&shared);
    match failure {
        Some(e) => Err(e),
        None => Ok(shared.stats.counts()),
    }
}

struct Shared {
    queue: QueueClient,
    judge: Judge,
    stats: Arc<Stats>,
    config: WorkerConfig,
}

/// One loop: a pair at a time until stopped (or, with `until_empty`, the queue is empty).
async fn judge_loop(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) -> anyhow::Result<()> {
    while !*stopped.borrow() {
        match judge_next(&shared.queue, &shared.judge, &shared.stats).await? {
            Step::Judged | Step::Abstained(_) => {}
            Step::QueueEmpty if shared.config.until_empty => return Ok(()),
            Step::QueueEmpty | Step::QueueUnavailable => {
                tokio::select! {
                    () = tokio::time::sleep(shared.config.poll_interval) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }
    Ok(())
}

fn log_summary(shared: &Shared) {
    let counts = shared.stats.counts();
    tracing::info!(judge = %shared.config.annotator, "judge summary: {counts}");
}
