//! Moving this server from one generation of the policy to another: the only code that does.
//!
//! Startup, the store follower, the arena and the admin routes all come here, so a version's files
//! are found, checked and loaded one way. Besides the active generation the engine may hold
//! resident ones (candidates, [`keep_resident`]); a promoted resident becomes active without a
//! second load. What a failure means is the caller's to decide, from its kind:
//! - [`SwapError::Adapter`]: the adapter itself is at fault (not servable, files not the ones
//!   registered, weights that do not fit the base model). A deliberate act (an admin route, the
//!   gate) marks it `failed`, and so does the follower for a candidate, which serves no one.
//! - [`SwapError::Unreadable`]: its files are missing or unreadable here. A deliberate act on this
//!   server marks it `failed`; a follower does not, since it may be only this replica's view.
//! - [`SwapError::Local`]: this replica could not load it. It keeps serving what it has and
//!   retries; the store is left alone, so one replica's trouble never rolls the others back.
//!
//! Nothing here writes the store except [`activate`], the deliberate act.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use flywheel_store::{Adapter, AdapterFault, NewDecision, Store};

use super::adapter_fit::{check_fits_base, FitError};
use super::{Engine, Generation};
use crate::model_source::ModelSource;
use mistralrs::IsqType;

/// Why this server does not serve the version it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// A fault of the adapter itself: files that are not the ones registered, or weights that do
    /// not fit the base model. Every replica would see it.
    #[error("{0}")]
    Adapter(String),
    /// Its files are missing or unreadable here: the adapter's fault for a deliberate act on this
    /// server, but possibly only this replica's view (a volume not mounted) for a follower.
    #[error("{0}")]
    Unreadable(String),
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
    quantize: Option<IsqType>,
    name: String,
    adapter: &Adapter,
) -> Result<Generation, SwapError> {
    let version = adapter.version;
    let dir = adapter.verified_directory().map_err(|fault| match fault {
        AdapterFault::Unreadable { .. } => SwapError::Unreadable(fault.to_string()),
        fault => SwapError::Adapter(fault.to_string()),
    })?;
    if let (Some(dir), ModelSource::HfDir(base)) = (&dir, source) {
        check_fits_base(dir, base).map_err(|e| match e {
            FitError::Adapter(e) => SwapError::Adapter(format!("adapter {version} {e}")),
            base @ FitError::Base(_) => SwapError::Local {
                version,
                cause: anyhow::anyhow!("adapter {version} {base}"),
            },
        })?;
    }
    let mut generation = Generation::load(source, dir.as_deref(), name, version, quantize)
        .await
        .map_err(|cause| SwapError::Local { version, cause })?;
    generation.alias = adapter.name.clone();
    Ok(generation)
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

/// Makes `engine` serve the version the store says is active, read under the swap lock so that an
/// activation in progress here is never undone by a look at the store taken before it committed.
/// Returns that version and what was done. Writes nothing to the store.
///
/// # Errors
/// See [`SwapError`]; the version is known whenever the store could be read.
pub async fn serve_active(
    engine: &Engine,
    store: &Store,
) -> Result<(i64, Swapped), (Option<i64>, SwapError)> {
    let _one_at_a_time = engine.inner.swapping.lock().await;
    let wanted = store
        .active_adapter_version()
        .await
        .map_err(|e| (None, e.into()))?;
    serve_locked(engine, store, wanted)
        .await
        .map(|swapped| (wanted, swapped))
        .map_err(|e| (Some(wanted), e))
}

async fn serve_locked(engine: &Engine, store: &Store, version: i64) -> Result<Swapped, SwapError> {
    let current = engine.active();
    if current.version == version {
        return Ok(Swapped::Already);
    }
    let mut residents = engine.residents();
    // A candidate promoted while resident here is served without loading it again.
    let next = match residents.remove(&version) {
        Some(resident) => resident,
        None => {
            let adapter = store.get_adapter(version).await?;
            let (source, quantize) = (&current.source, current.quantize);
            Arc::new(load(source, quantize, current.name.clone(), &adapter).await?)
        }
    };
    engine.set_residents(residents);
    engine.replace(next);
    tracing::info!(version, previous = current.version, "now serving");
    Ok(Swapped::From(current.version, version))
}

/// Makes the engine hold `wanted` (newest first; at most `max_resident` of them) loaded beside the
/// active generation, so requests may pin them and duels run on them: the others are dropped
/// (requests running on them finish first), the missing ones loaded off the request path while
/// memory allows. Writes nothing to the store.
///
/// Returns the versions that could not be loaded, each with why.
pub async fn keep_resident(engine: &Engine, wanted: &[Adapter]) -> Vec<(i64, SwapError)> {
    let _one_at_a_time = engine.inner.swapping.lock().await;
    let active = engine.active();
    let wanted: Vec<&Adapter> = wanted
        .iter()
        .filter(|a| a.version != active.version)
        .take(engine.config().max_resident)
        .collect();
    let mut residents: BTreeMap<i64, Arc<Generation>> = engine
        .residents()
        .into_iter()
        .filter(|(version, _)| wanted.iter().any(|a| a.version == *version))
        .collect();
    engine.set_residents(residents.clone());
    let mut failures = Vec::new();
    for adapter in wanted {
        if residents.contains_key(&adapter.version) {
            continue;
        }
        let loaded = match room_for_another(&active.source) {
            Ok(()) => {
                let name = active.name.clone();
                load(&active.source, active.quantize, name, adapter).await
            }
            Err(cause) => Err(SwapError::Local {
                version: adapter.version,
                cause,
            }),
        };
        match loaded {
            Ok(generation) => {
                tracing::info!(
                    version = adapter.version,
                    "loaded beside the active version"
                );
                residents.insert(adapter.version, Arc::new(generation));
                engine.set_residents(residents.clone());
            }
            Err(e) => failures.push((adapter.version, e)),
        }
    }
    failures
}

/// Whether this machine has memory for one more generation of `source`: its base weights (F32,
/// as every generation holds them) must fit in half of what the kernel reports available, so a
/// load never pushes the server into swap or the OOM killer. Unknown sizes pass.
fn room_for_another(source: &ModelSource) -> anyhow::Result<()> {
    let ModelSource::HfDir(dir) = source else {
        return Ok(());
    };
    let weights: u64 = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if weights > available / 2 {
        anyhow::bail!(
            "not enough memory for another generation: its weights take {} MiB and {} MiB are \
             available (--max-resident bounds how many are kept)",
            weights >> 20,
            available >> 20
        );
    }
    Ok(())
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux only).
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
    /// The active version was not the one expected (or the version is active already); nothing
    /// changed in the store, and this server serves the store's active version again.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] flywheel_store::Error),
}

/// The deliberate act: load `version` here (or take it from the resident generations), then
/// record it as the store's active version, which every replica follows; with `expected`, only
/// if that is still the active version (a compare-and-swap), and with `decision` recorded in the
/// same transaction. An adapter at fault is marked `failed`.
///
/// # Errors
/// See [`ActivateError`].
pub async fn activate(
    engine: &Engine,
    store: &Store,
    version: i64,
    expected: Option<i64>,
    decision: Option<&NewDecision>,
) -> Result<Adapter, ActivateError> {
    let _one_at_a_time = engine.inner.swapping.lock().await;
    let adapter = store.get_adapter(version).await?;
    if !adapter.is_servable() {
        return Err(ActivateError::NotServable(format!(
            "adapter {version} is {}; only candidate, ready, active or retired adapters can be \
             activated",
            adapter.status
        )));
    }
    if let Some(expected) = expected {
        // A decision on stale evidence changes nothing, here either: without this look the engine
        // would swap to `version` and back (reloading the incumbent, dropping the candidate from
        // the resident ones) before the store's compare-and-swap refused it. That CAS still
        // decides a race with a change made after this look.
        let active = store.active_adapter_version().await?;
        if active != expected {
            return Err(ActivateError::Conflict(format!(
                "the active version is {active}, not the expected {expected}; nothing changed \
                 (look again and decide on the current state)"
            )));
        }
    }
    match serve_locked(engine, store, version).await {
        Ok(_) => {}
        Err(SwapError::Adapter(reason) | SwapError::Unreadable(reason)) => {
            store.fail_adapter(version, &reason).await?;
            return Err(ActivateError::Failed { version, reason });
        }
        Err(SwapError::Store(e)) => return Err(e.into()),
        Err(local) => return Err(ActivateError::Local(local)),
    }
    let recorded = match (expected, decision) {
        (Some(expected), Some(decision)) => {
            store.promote_adapter(version, expected, decision).await
        }
        _ => store.switch_active(version, decision).await,
    };
    match recorded {
        Ok(adapter) => Ok(adapter),
        Err(e) => {
            // The store did not change: serve what it says is active, as the follower would.
            let active = store.active_adapter_version().await?;
            if let Err(back) = serve_locked(engine, store, active).await {
                tracing::warn!(error = %back, active, "cannot go back to the active version yet");
            }
            match e {
                flywheel_store::Error::Conflict(message) => Err(ActivateError::Conflict(message)),
                e => Err(e.into()),
            }
        }
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
    quantize: Option<IsqType>,
    name: String,
) -> anyhow::Result<Generation> {
    let wanted = store.active_adapter_version().await?;
    if wanted != 0 {
        let adapter = store.get_adapter(wanted).await?;
        match load(source, quantize, name.clone(), &adapter).await {
            Ok(generation) => return Ok(generation),
            Err(e) => tracing::warn!(
                version = wanted,
                error = %e,
                "the active adapter does not load here; serving the base model until it does"
            ),
        }
    }
    Generation::load(source, None, name, 0, quantize)
        .await
        .context("cannot load the model")
}
