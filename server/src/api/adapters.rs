//! Adapter versions: register one trained elsewhere, read one, and activate it (hot-swap the
//! served policy without dropping a request). Version 0 is the base model; activating it rolls
//! back.
//!
//! A registered adapter is checked before anything is stored: its directory lies under the
//! server's adapter root (`--adapter-root`, links followed), and its PEFT files fit the served base
//! model as mistral.rs will merge them ([`check_fits_base`]). Its sha256 is recorded, so the files
//! served later are the ones checked here.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::StatusCode;
use flywheel_store::{
    files_sha256, Adapter, AdapterStatus, NewAdapter, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::engine::adapter_fit::{check_fits_base, FitError};
use crate::engine::swap::{self, ActivateError};
use crate::model_source::ModelSource;

use super::error::{ApiError, AppJson, AppPath, ErrorBody};
use super::AppState;

/// The largest LoRA rank registered from outside. Adapters trained with PEFT/TRL use ranks of 8 to
/// 64; a larger one is most likely the wrong file, and mistral.rs merges all of it into every
/// targeted layer at each load.
pub const MAX_REGISTERED_RANK: usize = 256;

/// The longest `note`, in characters.
const MAX_NOTE_CHARS: usize = 2000;

/// A PEFT LoRA directory trained outside Flywheel, to register under the next version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAdapter {
    /// The directory holding `adapter_config.json` and `adapter_model.safetensors`: relative to
    /// the server's adapter root (`--adapter-root`), or absolute inside it.
    #[schema(min_length = 1, example = "trl-dpo-run-42")]
    pub path: String,
    /// The adapter it was trained from (default: the active version).
    pub parent_version: Option<i64>,
    /// How it was trained (default `external`): 1–64 letters, digits, `-`, `_` or `.`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub algorithm: Option<String>,
    /// Free text kept with the version, such as the job that trained it.
    #[schema(max_length = 2000)]
    pub note: Option<String>,
}

/// Registers a PEFT LoRA adapter trained elsewhere (TRL on a cluster, from an export) as `ready`
/// under the next version, after checking it against the served base model: a LORA config
/// mistral.rs can apply (`r` 1–256, `lora_alpha`, a list of `target_modules` naming linear layers
/// of the base), every targeted layer's `lora_A`/`lora_B` of the right shape, nothing else in the
/// weights. The files' sha256 is recorded. Activate it like any other version.
#[utoipa::path(post, path = "/v1/adapters", tag = "adapters",
    security(("bearer" = ["admin"])),
    request_body = RegisterAdapter,
    responses(
        (status = 201, description = "Registered as `ready` under the next version", body = Adapter),
        (status = 400, description = "`path` is outside the adapter root, missing, or not an adapter that fits the base model (the message says why); `parent_version` is training or failed; or another field is invalid (named in `param`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "`parent_version` does not exist", body = ErrorBody),
        (status = 409, description = "The served model is not an HF-format directory, so it cannot take adapters", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`--max-body-bytes`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn register_adapter(
    State(state): State<AppState>,
    AppJson(body): AppJson<RegisterAdapter>,
) -> Result<(StatusCode, AppJson<Adapter>), ApiError> {
    let ModelSource::HfDir(base) = state.engine.active().source.clone() else {
        return Err(ApiError::Conflict(
            "this server's model is not an HF-format directory (it is a GGUF file or a hub id), \
             and LoRA adapters apply only to one; serve `flywheel model import` of it"
                .into(),
        ));
    };
    let algorithm = parse_algorithm(body.algorithm)?;
    let note = parse_note(body.note)?;
    let parent_version = match body.parent_version {
        Some(version) => match state.store.get_adapter(version).await {
            Ok(parent) if parent.is_servable() => version,
            Ok(parent) => {
                return Err(ApiError::invalid(
                    "parent_version",
                    format!(
                        "`parent_version` {version} is {}; only a trained adapter can be a parent",
                        parent.status
                    ),
                ))
            }
            Err(flywheel_store::Error::NotFound(_)) => {
                return Err(ApiError::NotFound(format!(
                    "`parent_version` {version} does not exist"
                )))
            }
            Err(e) => return Err(e.into()),
        },
        None => state.store.active_adapter_version().await?,
    };
    let root = state.adapter_root.clone();
    let (dir, sha256) = tokio::task::spawn_blocking(move || inspect(&root, &body.path, &base))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let adapter = state
        .store
        .insert_adapter(&NewAdapter {
            parent_version,
            algorithm,
            train_run_id: None,
            path: Some(dir),
            sha256: Some(sha256),
            status: AdapterStatus::Ready,
            note,
        })
        .await?;
    tracing::info!(
        version = adapter.version,
        parent_version,
        path = adapter.path.as_deref(),
        "registered an adapter trained elsewhere"
    );
    Ok((StatusCode::CREATED, AppJson(adapter)))
}

fn parse_algorithm(algorithm: Option<String>) -> Result<String, ApiError> {
    let algorithm = algorithm.unwrap_or_else(|| "external".into());
    let valid = (1..=64).contains(&algorithm.len())
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(ApiError::invalid(
            "algorithm",
            format!(
                "`algorithm` must be 1 to 64 letters, digits, `.`, `_` or `-`. Given: {algorithm:?}"
            ),
        ));
    }
    if algorithm == "base" {
        return Err(ApiError::invalid(
            "algorithm",
            "`algorithm` `base` is reserved for version 0, the base model",
        ));
    }
    Ok(algorithm)
}

fn parse_note(note: Option<String>) -> Result<Option<String>, ApiError> {
    match note {
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => Err(ApiError::invalid(
            "note",
            format!(
                "`note` must be at most {MAX_NOTE_CHARS} characters. Given: {}",
                n.chars().count()
            ),
        )),
        note => Ok(note),
    }
}

/// The adapter directory `given` names under `root` and its files' sha256, once it is known to lie
/// inside the root and to fit the base model in `base`. Blocking: it reads the files.
fn inspect(root: &Path, given: &str, base: &Path) -> Result<(String, String), ApiError> {
    let dir = confine(root, given)?;
    let refuse = |detail: String| {
        ApiError::invalid("path", format!("the adapter at `path` {given:?} {detail}"))
    };
    let fit = check_fits_base(&dir, base).map_err(|e| match e {
        FitError::Adapter(detail) => refuse(detail),
        unreadable @ FitError::Base(_) => {
            ApiError::Internal(anyhow::anyhow!("the adapter at {given:?} {unreadable}"))
        }
    })?;
    if fit.rank > MAX_REGISTERED_RANK {
        return Err(refuse(format!(
            "has rank `r` {}; an adapter registered from outside may have rank at most \
             {MAX_REGISTERED_RANK}",
            fit.rank
        )));
    }
    let sha256 = files_sha256(&dir)
        .map_err(|(path, cause)| refuse(format!("cannot be read: {}: {cause}", path.display())))?;
    let dir = dir
        .into_os_string()
        .into_string()
        .map_err(|_| refuse("is not a UTF-8 path".into()))?;
    Ok((dir, sha256))
}

/// `given` resolved under `root` (a relative path starts at the root), every link followed: the
/// directory it names, if that and both PEFT files in it lie inside the root.
fn confine(root: &Path, given: &str) -> Result<PathBuf, ApiError> {
    let refuse = |message: String| ApiError::invalid("path", message);
    if given.trim().is_empty() {
        return Err(refuse(
            "`path` must name an adapter directory; it is empty".into(),
        ));
    }
    let root = root.canonicalize().map_err(|e| {
        refuse(format!(
            "`path` must lie under the adapter root {} (--adapter-root), which this server cannot \
             open: {e}",
            root.display()
        ))
    })?;
    let dir = root.join(given).canonicalize().map_err(|e| {
        refuse(format!(
            "`path` {given:?} names nothing under the adapter root {}: {e}",
            root.display()
        ))
    })?;
    let outside = |what: &str, real: &Path| {
        refuse(format!(
            "`path` {given:?}: {what} resolves to {}, outside the adapter root {} \
             (--adapter-root)",
            real.display(),
            root.display()
        ))
    };
    if !dir.starts_with(&root) {
        return Err(outside("it", &dir));
    }
    if !dir.is_dir() {
        return Err(refuse(format!("`path` {given:?} is not a directory")));
    }
    for name in [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE] {
        let file = dir
            .join(name)
            .canonicalize()
            .map_err(|e| refuse(format!("`path` {given:?} holds no readable {name}: {e}")))?;
        if !file.starts_with(&root) {
            return Err(outside(name, &file));
        }
    }
    Ok(dir)
}

/// One adapter version with its status and provenance.
#[utoipa::path(get, path = "/v1/adapters/{version}", tag = "adapters",
    security(("bearer" = ["admin"])),
    params(("version" = i64, Path, description = "adapter version (0 = base model)")),
    responses(
        (status = 200, description = "The adapter", body = Adapter),
        (status = 400, description = "`version` is not an integer", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
    ))]
pub async fn get_adapter(
    State(state): State<AppState>,
    AppPath(version): AppPath<i64>,
) -> Result<AppJson<Adapter>, ApiError> {
    Ok(AppJson(state.store.get_adapter(version).await?))
}

/// Loads the adapter onto the served base model off the request path, then makes it the version
/// new requests get, here and (through the store) on every replica; running requests finish on
/// the version they started on. An adapter at fault (files missing or not the ones registered,
/// weights that do not fit the base model) is marked `failed` and the current version keeps
/// serving.
#[utoipa::path(post, path = "/v1/adapters/{version}/activate", tag = "adapters",
    security(("bearer" = ["admin"])),
    params(("version" = i64, Path, description = "adapter version (0 = base model)")),
    responses(
        (status = 200, description = "The adapter, now active", body = Adapter),
        (status = 400, description = "The adapter is still training or failed, or the version is not an integer", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The adapter is at fault; it is now marked failed", body = ErrorBody),
        (status = 503, description = "This server could not load it; nothing changed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub async fn activate_adapter(
    State(state): State<AppState>,
    AppPath(version): AppPath<i64>,
) -> Result<AppJson<Adapter>, ApiError> {
    match swap::activate(&state.engine, &state.store, version).await {
        Ok(adapter) => Ok(AppJson(adapter)),
        Err(ActivateError::NotServable(message)) => Err(ApiError::invalid("version", message)),
        Err(e @ ActivateError::Failed { .. }) => Err(ApiError::Conflict(e.to_string())),
        Err(ActivateError::Local(e)) => Err(ApiError::Unavailable(e.to_string())),
        Err(ActivateError::Store(e)) => Err(e.into()),
    }
}
