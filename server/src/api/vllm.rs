//! vLLM's names for loading and unloading LoRA adapters at run time, so tooling written for vLLM
//! works here: `POST /v1/load_lora_adapter` registers the directory (under the adapter root) as a
//! candidate named `lora_name` and loads it beside the active version, after which requests may
//! name `lora_name` as their `model`; `POST /v1/unload_lora_adapter` retires it. Both act through
//! the same lifecycle as `POST /v1/adapters` and the arena: loading never makes an adapter active
//! (except under `--promotion always`).

use axum::extract::State;
use flywheel_store::{Adapter, AdapterStatus, DecisionAction};
use serde::Deserialize;
use utoipa::ToSchema;

use super::adapters::register;
use super::error::{ApiError, AppJson, ErrorBody};
use super::AppState;
use crate::arena::promotion::{by_hand, retire};
use crate::engine::follow;

/// The longest `lora_name`, in characters.
const MAX_LORA_NAME_CHARS: usize = 128;

/// vLLM's request to load a LoRA adapter.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoadLoraAdapter {
    /// The name requests will use as their `model`: 1–128 characters, no `@`, not the served
    /// model's name.
    #[schema(min_length = 1, max_length = 128, example = "support-tone-v3")]
    pub lora_name: String,
    /// The PEFT directory: relative to the adapter root (`--adapter-root`), or absolute inside it.
    #[schema(min_length = 1)]
    pub lora_path: String,
}

/// vLLM's request to unload a LoRA adapter.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UnloadLoraAdapter {
    pub lora_name: String,
    /// Accepted for vLLM compatibility and ignored: adapters are known by name here.
    pub lora_int_id: Option<i64>,
}

/// Registers the PEFT directory at `lora_path` as a candidate named `lora_name` (checked as
/// `POST /v1/adapters` checks it) and loads it beside the active version, so requests naming
/// `lora_name` as their `model` run on it. It is not made active: the arena (or an admin)
/// decides that.
#[utoipa::path(post, path = "/v1/load_lora_adapter", tag = "adapters",
    security(("bearer" = ["admin"])),
    request_body = LoadLoraAdapter,
    responses(
        (status = 200, description = "Registered and loaded", body = Adapter),
        (status = 400, description = "A bad `lora_name`, or `lora_path` outside the adapter root or not an adapter that fits the base model", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 409, description = "`lora_name` is taken, the adapter failed to load (now marked failed), or the served model cannot take adapters", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`--max-body-bytes`)", body = ErrorBody),
        (status = 503, description = "Registered, but this server cannot hold it loaded now (`--max-resident`, memory)", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(lora_name = %body.lora_name))]
pub async fn load_lora_adapter(
    State(state): State<AppState>,
    AppJson(body): AppJson<LoadLoraAdapter>,
) -> Result<AppJson<Adapter>, ApiError> {
    let name = body.lora_name;
    let served = state.engine.active().name.clone();
    let chars = name.chars().count();
    if !(1..=MAX_LORA_NAME_CHARS).contains(&chars) || name.trim() != name || name.contains('@') {
        return Err(ApiError::invalid(
            "lora_name",
            format!(
                "`lora_name` must be 1 to {MAX_LORA_NAME_CHARS} characters without `@` or \
                 surrounding spaces. Given: {name:?}"
            ),
        ));
    }
    if name == served {
        return Err(ApiError::invalid(
            "lora_name",
            format!("`lora_name` {name:?} is the served model's own name"),
        ));
    }
    let adapter = register(
        &state,
        body.lora_path,
        None,
        Some("external".into()),
        Some("loaded through POST /v1/load_lora_adapter".into()),
        Some(name.clone()),
    )
    .await
    .map_err(|e| match e {
        // `register` names the field of `POST /v1/adapters`; here it is `lora_path`.
        ApiError::Invalid {
            message,
            param: Some(param),
        } if param == "path" => {
            ApiError::invalid("lora_path", message.replace("`path`", "`lora_path`"))
        }
        e => e,
    })?;
    if adapter.status == AdapterStatus::Active {
        return Ok(AppJson(adapter));
    }
    follow::sync_resident(&state.store, &state.engine).await?;
    if state.engine.version_of_alias(&name).is_some() {
        return Ok(AppJson(adapter));
    }
    let adapter = state.store.get_adapter(adapter.version).await?;
    match adapter.status {
        AdapterStatus::Failed => Err(ApiError::Conflict(format!(
            "adapter {} ({name:?}) cannot be served and is now marked failed: {}",
            adapter.version,
            adapter.error.as_deref().unwrap_or("no reason recorded")
        ))),
        _ => Err(ApiError::Unavailable(format!(
            "adapter {} ({name:?}) is registered as a candidate, but this server does not hold it \
             loaded now (--max-resident {}, or not enough memory; the server log says which)",
            adapter.version,
            state.engine.config().max_resident
        ))),
    }
}

/// Retires the candidate named `lora_name` and stops serving it by that name. The active version
/// cannot be unloaded (promote or activate another first).
#[utoipa::path(post, path = "/v1/unload_lora_adapter", tag = "adapters",
    security(("bearer" = ["admin"])),
    request_body = UnloadLoraAdapter,
    responses(
        (status = 200, description = "Retired (or already not a candidate) and unloaded", body = Adapter),
        (status = 400, description = "A field is invalid", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No adapter has that `lora_name`", body = ErrorBody),
        (status = 409, description = "It is the active version", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(lora_name = %body.lora_name))]
pub async fn unload_lora_adapter(
    State(state): State<AppState>,
    AppJson(body): AppJson<UnloadLoraAdapter>,
) -> Result<AppJson<Adapter>, ApiError> {
    let name = body.lora_name;
    let Some(adapter) = state.store.adapter_named(&name).await? else {
        return Err(ApiError::NotFound(format!(
            "no LoRA adapter named {name:?} is loaded"
        )));
    };
    match adapter.status {
        AdapterStatus::Active => Err(ApiError::Conflict(format!(
            "{name:?} is adapter {}, the active version; promote or activate another before \
             unloading it",
            adapter.version
        ))),
        AdapterStatus::Candidate => {
            let active = state.store.active_adapter_version().await?;
            let decision = by_hand(
                &state.store,
                &state.arena.gate,
                DecisionAction::Retire,
                adapter.version,
                active,
                Some("unloaded through POST /v1/unload_lora_adapter".into()),
            )
            .await;
            Ok(AppJson(
                retire(
                    &state.store,
                    &state.engine,
                    adapter.version,
                    active,
                    &decision,
                )
                .await?,
            ))
        }
        _ => {
            follow::sync_resident(&state.store, &state.engine).await?;
            Ok(AppJson(adapter))
        }
    }
}
