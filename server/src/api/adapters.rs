//! Adapter versions: register one trained elsewhere, read one with its decisions, and decide a
//! candidate's fate by hand: promote or retire it against an expected active version, or activate
//! any version outright (hot-swap the served policy without dropping a request). Version 0 is the
//! base model; activating it rolls back.
//!
//! A registered adapter is checked before anything is stored: its directory lies under the
//! server's adapter root (`--adapter-root`, links followed), and its PEFT files fit the served base
//! model as mistral.rs will merge them ([`check_fits_base`]). Its sha256 is recorded, so the files
//! served later are the ones checked here.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::StatusCode;
use flywheel_store::{
    files_sha256, Adapter, AdapterDecision, AdapterStatus, DecisionAction, NewAdapter, NewDecision,
    PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::arena::promotion::{by_hand, retire};
use crate::arena::Promotion;
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

/// Registers a PEFT LoRA adapter trained elsewhere (TRL on a cluster, from an export) as a
/// `candidate` under the next version, after checking it against the served base model: a LORA
/// config mistral.rs can apply (`r` 1–256, `lora_alpha`, a list of `target_modules` naming linear
/// layers of the base), every targeted layer's `lora_A`/`lora_B` of the right shape, nothing else
/// in the weights. The files' sha256 is recorded. It then enters the lifecycle every new adapter
/// does: the arena judges it (`--promotion gate`), an admin decides (`manual`), or it is activated
/// at once (`always`).
#[utoipa::path(post, path = "/v1/adapters", tag = "adapters",
    security(("bearer" = ["admin"])),
    request_body = RegisterAdapter,
    responses(
        (status = 201, description = "Registered as a `candidate` under the next version (active at once under `--promotion always`)", body = Adapter),
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
    let adapter = register(
        &state,
        body.path,
        body.parent_version,
        body.algorithm,
        body.note,
        None,
    )
    .await?;
    Ok((StatusCode::CREATED, AppJson(adapter)))
}

/// Checks and registers the adapter at `path` (under the adapter root) as a candidate, named
/// `name` if given, then activates it under `--promotion always`. Shared with vLLM's
/// `POST /v1/load_lora_adapter`.
pub(crate) async fn register(
    state: &AppState,
    path: String,
    parent_version: Option<i64>,
    algorithm: Option<String>,
    note: Option<String>,
    name: Option<String>,
) -> Result<Adapter, ApiError> {
    let ModelSource::HfDir(base) = state.engine.active().source.clone() else {
        return Err(ApiError::Conflict(
            "this server's model is not an HF-format directory (it is a GGUF file or a hub id), \
             and LoRA adapters apply only to one; serve `flywheel model import` of it"
                .into(),
        ));
    };
    let algorithm = parse_algorithm(algorithm)?;
    let note = free_text("note", note)?;
    let parent_version = match parent_version {
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
    let (dir, sha256) = tokio::task::spawn_blocking(move || inspect(&root, &path, &base))
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
            status: AdapterStatus::Candidate,
            note,
            name,
        })
        .await?;
    tracing::info!(
        version = adapter.version,
        parent_version,
        path = adapter.path.as_deref(),
        "registered an adapter trained elsewhere"
    );
    if state.arena.promotion != Promotion::Always {
        return Ok(adapter);
    }
    let decision = NewDecision::always();
    swap::activate(
        &state.engine,
        &state.store,
        adapter.version,
        None,
        Some(&decision),
    )
    .await
    .map_err(activate_error)
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

/// Free text of at most [`MAX_NOTE_CHARS`] characters (`note`, `reason`).
fn free_text(param: &str, text: Option<String>) -> Result<Option<String>, ApiError> {
    match text {
        Some(t) if t.chars().count() > MAX_NOTE_CHARS => Err(ApiError::invalid(
            param,
            format!(
                "`{param}` must be at most {MAX_NOTE_CHARS} characters. Given: {}",
                t.chars().count()
            ),
        )),
        text => Ok(text),
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

/// An adapter version with the decisions recorded about it, oldest first.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct AdapterView {
    #[serde(flatten)]
    pub adapter: Adapter,
    /// Each promotion or retirement of this version, with the evidence it rested on.
    pub decisions: Vec<AdapterDecision>,
}

/// One adapter version with its status, provenance, and every decision about it.
#[utoipa::path(get, path = "/v1/adapters/{version}", tag = "adapters",
    security(("bearer" = ["admin"])),
    params(("version" = i64, Path, description = "adapter version (0 = base model)")),
    responses(
        (status = 200, description = "The adapter", body = AdapterView),
        (status = 400, description = "`version` is not an integer", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
    ))]
pub async fn get_adapter(
    State(state): State<AppState>,
    AppPath(version): AppPath<i64>,
) -> Result<AppJson<AdapterView>, ApiError> {
    Ok(AppJson(
        view(&state, state.store.get_adapter(version).await?).await?,
    ))
}

async fn view(state: &AppState, adapter: Adapter) -> Result<AdapterView, ApiError> {
    let decisions = state.store.adapter_decisions(adapter.version).await?;
    Ok(AdapterView { adapter, decisions })
}

/// Loads the adapter onto the served base model off the request path, then makes it the version
/// new requests get, here and (through the store) on every replica, whatever is active now;
/// running requests finish on the version they started on. Recorded as an admin's promotion. An
/// adapter at fault (files missing or not the ones registered, weights that do not fit the base
/// model) is marked `failed` and the current version keeps serving. To act only if the active
/// version is the one you looked at, use `promote`.
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
    let active = state.store.active_adapter_version().await?;
    let reason = "activated whatever was active (POST /v1/adapters/{version}/activate)";
    let decision = by_hand(
        &state.store,
        &state.arena.gate,
        DecisionAction::Promote,
        version,
        active,
        Some(reason.into()),
    )
    .await;
    swap::activate(&state.engine, &state.store, version, None, Some(&decision))
        .await
        .map(AppJson)
        .map_err(activate_error)
}

pub(crate) fn activate_error(e: ActivateError) -> ApiError {
    match e {
        ActivateError::NotServable(message) => ApiError::invalid("version", message),
        e @ ActivateError::Failed { .. } => ApiError::Conflict(e.to_string()),
        ActivateError::Conflict(message) => ApiError::Conflict(message),
        ActivateError::Local(e) => ApiError::Unavailable(e.to_string()),
        ActivateError::Store(e) => e.into(),
    }
}

/// An admin's decision on a candidate, valid only while `expected_active` is the active version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// The version you expect to be active; if another is, nothing changes (409).
    pub expected_active: i64,
    /// Why, kept with the decision.
    #[schema(max_length = 2000)]
    pub reason: Option<String>,
}

/// Promotes a version by hand: it becomes active only if `expected_active` still is (a
/// compare-and-swap; 409 otherwise, nothing changed). It is loaded here first (or taken from the
/// loaded candidates), and the decision is recorded with its head-to-head against the incumbent.
#[utoipa::path(post, path = "/v1/adapters/{version}/promote", tag = "adapters",
    security(("bearer" = ["admin"])),
    params(("version" = i64, Path, description = "the candidate (or a ready or retired version)")),
    request_body = Decide,
    responses(
        (status = 200, description = "The adapter, now active, with its decisions", body = AdapterView),
        (status = 400, description = "The version is training or failed, or a field is invalid", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "The active version is not `expected_active` (or the version is active already, or at fault and now failed); nothing changed", body = ErrorBody),
        (status = 503, description = "This server could not load it; nothing changed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body))]
pub async fn promote_adapter(
    State(state): State<AppState>,
    AppPath(version): AppPath<i64>,
    AppJson(body): AppJson<Decide>,
) -> Result<AppJson<AdapterView>, ApiError> {
    let reason = free_text("reason", body.reason)?;
    let decision = by_hand(
        &state.store,
        &state.arena.gate,
        DecisionAction::Promote,
        version,
        body.expected_active,
        reason,
    )
    .await;
    let adapter = swap::activate(
        &state.engine,
        &state.store,
        version,
        Some(body.expected_active),
        Some(&decision),
    )
    .await
    .map_err(activate_error)?;
    Ok(AppJson(view(&state, adapter).await?))
}

/// Retires a candidate by hand, only if `expected_active` is still the active version (409
/// otherwise, nothing changed); the active version keeps serving. Recorded with the candidate's
/// head-to-head against it.
#[utoipa::path(post, path = "/v1/adapters/{version}/retire", tag = "adapters",
    security(("bearer" = ["admin"])),
    params(("version" = i64, Path, description = "the candidate")),
    request_body = Decide,
    responses(
        (status = 200, description = "The adapter, now retired, with its decisions", body = AdapterView),
        (status = 400, description = "The version is not a candidate, or a field is invalid", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "The active version is not `expected_active`; nothing changed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state, body))]
pub async fn retire_adapter(
    State(state): State<AppState>,
    AppPath(version): AppPath<i64>,
    AppJson(body): AppJson<Decide>,
) -> Result<AppJson<AdapterView>, ApiError> {
    let reason = free_text("reason", body.reason)?;
    let decision = by_hand(
        &state.store,
        &state.arena.gate,
        DecisionAction::Retire,
        version,
        body.expected_active,
        reason,
    )
    .await;
    let adapter = retire(
        &state.store,
        &state.engine,
        version,
        body.expected_active,
        &decision,
    )
    .await
    .map_err(|e| match e {
        flywheel_store::Error::Invalid(message) => ApiError::invalid("version", message),
        e => e.into(),
    })?;
    Ok(AppJson(view(&state, adapter).await?))
}
