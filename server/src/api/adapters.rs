//! Adapter versions: read one, and activate it (hot-swap the served policy without dropping a
//! request). Version 0 is the base model; activating it rolls back.

use axum::extract::State;
use flywheel_store::Adapter;

use crate::engine::swap::{self, ActivateError};

use super::error::{ApiError, AppJson, AppPath, ErrorBody};
use super::AppState;

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
