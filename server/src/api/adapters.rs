//! Adapter versions: read one, and activate it (hot-swap the served policy without dropping a
//! request). Version 0 is the base model; activating it rolls back.

use crate::engine::follow::adapter_dir;
use axum::extract::{Path, State};
use flywheel_store::{Adapter, AdapterStatus};

use super::error::{ApiError, AppJson, ErrorBody};
use super::AppState;

/// One adapter version with its status and provenance.
#[utoipa::path(get, path = "/v1/adapters/{version}", tag = "adapters",
    security(("bearer" = ["admin"])),
    params(("version" = i64, Path, description = "adapter version (0 = base model)")),
    responses(
        (status = 200, body = Adapter),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get_adapter(
    State(state): State<AppState>,
    Path(version): Path<i64>,
) -> Result<AppJson<Adapter>, ApiError> {
    Ok(AppJson(state.store.get_adapter(version).await?))
}

/// Loads the adapter onto the served base model off the request path, then makes it the version
/// new requests get; running requests finish on the version they started on. If the adapter cannot
/// be loaded it is marked `failed` and the current version keeps serving.
#[utoipa::path(post, path = "/v1/adapters/{version}/activate", tag = "adapters",
    security(("bearer" = ["admin"])),
    params(("version" = i64, Path, description = "adapter version (0 = base model)")),
    responses(
        (status = 200, description = "The adapter, now active", body = Adapter),
        (status = 400, description = "The adapter is still training or failed", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The adapter's files could not be loaded; it is now marked failed", body = ErrorBody),
    ))]
#[tracing::instrument(skip(state))]
pub async fn activate_adapter(
    State(state): State<AppState>,
    Path(version): Path<i64>,
) -> Result<AppJson<Adapter>, ApiError> {
    let adapter = state.store.get_adapter(version).await?;
    if matches!(
        adapter.status,
        AdapterStatus::Training | AdapterStatus::Failed
    ) {
        return Err(ApiError::invalid(
            "version",
            format!(
                "adapter {version} is {}; only ready or retired adapters can be activated",
                adapter.status.as_str()
            ),
        ));
    }
    let files = adapter_dir(&adapter).map_err(|e| ApiError::Conflict(e.to_string()))?;
    let source = state.engine.active().source.clone();
    let held = state.engine.swap_lock().await;
    if let Err(e) = state
        .engine
        .load_and_activate_locked(&held, &source, files.as_deref(), version)
        .await
    {
        let message = format!("{e:#}");
        state.store.fail_adapter(version, &message).await?;
        return Err(ApiError::Conflict(format!(
            "adapter {version} could not be loaded and is now marked failed: {message}"
        )));
    }
    Ok(AppJson(state.store.activate_adapter(version).await?))
}
