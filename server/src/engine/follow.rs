//! Following the store's active adapter version, so that an adapter activated elsewhere (by the
//! trainer worker, or through another replica's admin API) is hot-swapped in here too. Polls: one
//! cheap query per interval on either backend.

use std::path::PathBuf;
use std::time::Duration;

use flywheel_store::{Adapter, Store};
use tokio::task::JoinHandle;

use super::Engine;

/// Makes the engine serve the version the store says is active. Returns the version swapped to,
/// or `None` when it already served it.
///
/// # Errors
/// A store error, or an adapter that does not load: it is then marked failed and the store's active
/// version set back to the one still served, so the next poll does not try it again.
pub async fn sync_active(store: &Store, engine: &Engine) -> anyhow::Result<Option<i64>> {
    let held = engine.swap_lock().await;
    let wanted = store.active_adapter_version().await?;
    let serving = engine.active().version;
    if wanted == serving {
        return Ok(None);
    }
    let adapter = store.get_adapter(wanted).await?;
    let source = engine.active().source.clone();
    let loaded = match adapter_dir(&adapter) {
        Ok(dir) => {
            engine
                .load_and_activate_locked(&held, &source, dir.as_deref(), wanted)
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = loaded {
        let message = format!("{e:#}");
        store.activate_adapter(serving).await?;
        store.fail_adapter(wanted, &message).await?;
        anyhow::bail!("adapter {wanted}, active in the store, does not load here: {message}");
    }
    tracing::info!(
        version = wanted,
        previous = serving,
        "following the store: now serving"
    );
    Ok(Some(wanted))
}

/// The directory to load for `adapter`: `None` for the base model (version 0).
///
/// # Errors
/// An adapter other than the base model without files.
pub fn adapter_dir(adapter: &Adapter) -> anyhow::Result<Option<PathBuf>> {
    match (adapter.version, &adapter.path) {
        (0, _) => Ok(None),
        (_, Some(path)) => Ok(Some(PathBuf::from(path))),
        (version, None) => anyhow::bail!("adapter {version} has no files"),
    }
}

/// A running follower; dropping it stops it.
pub struct FollowerGuard(JoinHandle<()>);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Calls [`sync_active`] every `interval` until the guard is dropped.
pub fn spawn_follower(store: Store, engine: Engine, interval: Duration) -> FollowerGuard {
    FollowerGuard(tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = sync_active(&store, &engine).await {
                tracing::error!(error.cause_chain = ?e, "cannot follow the store's active adapter");
            }
        }
    }))
}
