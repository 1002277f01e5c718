//! Moving this server from one generation of the policy to another: the only code that does.
//!
//! Startup, the store follower and the admin route all come here, so a version's files are found,
//! checked and loaded one way. What a failure means is the caller's to decide, from its kind:
//! - [`SwapError::Adapter`]: the adapter itself is at fault (not servable, files missing or not
//!   the ones registered, weights that do not fit the base model). A deliberate act (the admin
//!   route) marks it `failed`.
//! - [`SwapError::Local`]: this replica could not load it. It keeps serving what it has and
//!   retries; the store is left alone, so one replica's trouble never rolls the others back.
//!
//! Nothing here writes the store except [`activate`], the deliberate act.

use anyhow::Context;
use flywheel_store::{Adapter, Store};

use super::adapter_fit::{check_fits_base, FitError};
use super::{Engine, Generation};
use crate::model_source::ModelSource;

/// Why this server does not serve the version it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// A fault of the adapter itself.
    #[error("{0}")]
    Adapter(String),
    /// This replica's own trouble loading it.
    #[error("this server cannot load adapter {version}: {cause:#}")]
    Local { version: i64, cause: anyhow::Error },
    #[error(transparent)]
    Store(#[from] flywheel_store::Error),
}

/// What a successful [`serve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    /// The engine already served that version.
    Already,
    /// Moved from the first version to the second.
    From(i64, i64),
}

/// Loads the generation for `adapter` on `source`'s base: its files checked against the record
/// and against the base model first, then merged in by mistral.rs off the request path.
///
/// # Errors
/// [`SwapError::Adapter`] for a fault of the adapter; [`SwapError::Local`] when the load fails.
pub async fn load(
    source: &ModelSource,
    name: String,
    adapter: &Adapter,
) -> Result<Generation, SwapError> {
    let version = adapter.version;
    let dir = adapter
        .verified_directory()
        .map_err(|fault| SwapError::Adapter(fault.to_string()))?;
    if let (Some(dir), ModelSource::HfDir(base)) = (&dir, source) {
        check_fits_base(dir, base).map_err(|e| match e {
            FitError::Adapter(e) => SwapError::Adapter(format!("adapter {version} {e}")),
            base @ FitError::Base(_) => SwapError::Local {
                version,
                cause: anyhow::anyhow!("adapter {version} {base}"),
            },
        })?;
    }
    Generation::load(source, dir.as_deref(), name, version)
        .await
        .map_err(|cause| SwapError::Local { version, cause })
}

/// Makes `engine` serve `version` as the store describes it; running requests finish on the
/// generation they started on. One swap at a time. Writes nothing to the store.
///
/// # Errors
/// See [`SwapError`]; on any error the engine keeps serving what it served.
pub async fn serve(engine: &Engine, store: &Store, version: i64) -> Result<Swapped, SwapError> {
    let _one_at_a_time = engine.inner.swapping.lock().await;
    serve_locked(engine, store, version).await
}

async fn serve_locked(engine: &Engine, store: &Store, version: i64) -> Result<Swapped, SwapError> {
    let current = engine.active();
    if current.version == version {
        return Ok(Swapped::Already);
    }
    let adapter = store.get_adapter(version).await?;
    let next = load(&current.source, current.name.clone(), &adapter).await?;
    engine.replace(next);
    tracing::info!(version, previous = current.version, "now serving");
    Ok(Swapped::From(current.version, version))
}

/// Why [`activate`] did not make a version active.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The version's status forbids it (training, failed); nothing changed.
    #[error("{0}")]
    NotServable(String),
    /// The adapter is at fault and is now marked `failed`; nothing else changed.
    #[error("adapter {version} cannot be served and is now marked failed: {reason}")]
    Failed { version: i64, reason: String },
    /// This server could not load it; the store and the fleet were left alone.
    #[error("{0}")]
    Local(SwapError),
    #[error(transparent)]
    Store(#[from] flywheel_store::Error),
}

/// The deliberate act: load `version` here, then record it as the store's active version, which
/// every replica follows. An adapter at fault is marked `failed`.
///
/// # Errors
/// See [`ActivateError`].
pub async fn activate(
    engine: &Engine,
    store: &Store,
    version: i64,
) -> Result<Adapter, ActivateError> {
    let _one_at_a_time = engine.inner.swapping.lock().await;
    let adapter = store.get_adapter(version).await?;
    if !adapter.is_servable() {
        return Err(ActivateError::NotServable(format!(
            "adapter {version} is {}; only ready, active or retired adapters can be activated",
            adapter.status
        )));
    }
    match serve_locked(engine, store, version).await {
        Ok(_) => Ok(store.activate_adapter(version).await?),
        Err(SwapError::Adapter(reason)) => {
            store.fail_adapter(version, &reason).await?;
            Err(ActivateError::Failed { version, reason })
        }
        Err(SwapError::Store(e)) => Err(e.into()),
        Err(local) => Err(ActivateError::Local(local)),
    }
}

/// The generation a server starts on: the store's active version, or the base model when that
/// does not load here (the follower keeps retrying it). Writes nothing to the store.
///
/// # Errors
/// A store error, or a base model that does not load.
pub async fn startup(
    store: &Store,
    source: &ModelSource,
    name: String,
) -> anyhow::Result<Generation> {
    let wanted = store.active_adapter_version().await?;
    if wanted != 0 {
        let adapter = store.get_adapter(wanted).await?;
        match load(source, name.clone(), &adapter).await {
            Ok(generation) => return Ok(generation),
            Err(e) => tracing::warn!(
                version = wanted,
                error = %e,
                "the active adapter does not load here; serving the base model until it does"
            ),
        }
    }
    Generation::load(source, None, name, 0)
        .await
        .context("cannot load the model")
}
