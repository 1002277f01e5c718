//! Following the store's active adapter version, so that a version activated elsewhere (by the
//! trainer worker, the arena, or another replica's admin API) is served here too; and its
//! candidates, kept loaded beside it (up to `--max-resident`) for pinned requests, the canary and
//! duels.
//!
//! On Postgres an activation is announced (`LISTEN/NOTIFY`) and heard at once; polling every
//! interval stays as the fallback, and is all SQLite gets. A version that does not load here is
//! this replica's trouble: it keeps serving what it has, reports it (`/ready`, the
//! `flywheel_adapter_load_failures_total` counter, a warning) and retries with backoff. The store
//! is written from here only to mark a candidate whose files are at fault (altered, or not fitting
//! the base) `failed`: every replica would find the same, and a candidate serves no one by default.

use std::time::Duration;

use flywheel_store::{ActivationListener, Store};
use tokio::task::JoinHandle;

use super::swap::{self, SwapError, Swapped};
use super::{Engine, Target};

/// The first retry of a version that failed to load comes after this; each further one after
/// twice as long, up to the polling interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Makes the engine serve the version the store says is active, and records the outcome for
/// `/ready`.
///
/// # Errors
/// A store error, or the version does not load here (counted and logged by the caller's loop);
/// the engine then keeps serving what it served.
pub async fn sync_active(store: &Store, engine: &Engine) -> Result<Swapped, SwapError> {
    match swap::serve_active(engine, store).await {
        Ok((wanted, swapped)) => {
            engine.set_target(Target {
                version: Some(wanted),
                error: None,
            });
            Ok(swapped)
        }
        Err((wanted, e)) => {
            if wanted.is_some() {
                engine.set_target(Target {
                    version: wanted,
                    error: Some(e.to_string()),
                });
            }
            Err(e)
        }
    }
}

/// Loads the store's candidates (newest first, up to `--max-resident`) beside the active version
/// and drops the rest. A candidate whose files are at fault (not the ones registered, or not
/// fitting the base model) is marked `failed`; one this replica cannot load now (files it cannot
/// see, memory) is counted, logged and tried again next time.
///
/// # Errors
/// A store error.
pub async fn sync_resident(store: &Store, engine: &Engine) -> flywheel_store::Result<()> {
    let candidates = store.candidates().await?;
    for (version, e) in swap::keep_resident(engine, &candidates).await {
        engine.inner.metrics.adapter_load_failures.inc();
        match e {
            SwapError::Adapter(reason) => {
                tracing::warn!(version, %reason, "candidate cannot be served; marking it failed");
                store.fail_adapter(version, &reason).await?;
            }
            e => tracing::warn!(version, error = %e, "cannot load the candidate here yet"),
        }
    }
    Ok(())
}

/// A running follower; dropping it stops it.
pub struct FollowerGuard(JoinHandle<()>);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Calls [`sync_active`] whenever an activation is announced, every `interval` in any case, and
/// sooner (with backoff) after a failure, until the guard is dropped.
pub fn spawn_follower(store: Store, engine: Engine, interval: Duration) -> FollowerGuard {
    FollowerGuard(tokio::spawn(async move {
        let mut listener = listen(&store).await;
        // Look at once: startup may have fallen back to the base model.
        let mut wait = Duration::ZERO;
        let mut retry = FIRST_RETRY;
        loop {
            tokio::select! {
                heard = next_activation(&mut listener) => {
                    if heard.is_err() {
                        // The connection dropped; the next call reconnects, polling covers the gap.
                        tokio::time::sleep(FIRST_RETRY).await;
                    }
                    retry = FIRST_RETRY;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            let synced = sync_active(&store, &engine).await;
            if let Err(e) = sync_resident(&store, &engine).await {
                tracing::warn!(error = %e, "cannot read the candidates");
            }
            match synced {
                Ok(_) => {
                    wait = interval;
                    retry = FIRST_RETRY;
                }
                Err(e) => {
                    if !matches!(e, SwapError::Store(_)) {
                        engine.inner.metrics.adapter_load_failures.inc();
                    }
                    tracing::warn!(error = %e, retry_secs = retry.as_secs_f32(), "still serving the previous version");
                    wait = retry.min(interval);
                    retry = (retry * 2).min(interval);
                }
            }
        }
    }))
}

async fn listen(store: &Store) -> Option<ActivationListener> {
    match store.activation_listener().await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(error = ?e, "cannot listen for activations; polling only");
            None
        }
    }
}

/// The next announced activation; never resolves without a listener (SQLite).
async fn next_activation(listener: &mut Option<ActivationListener>) -> flywheel_store::Result<i64> {
    match listener {
        Some(listener) => listener.next().await,
        None => std::future::pending().await,
    }
}
