//! `GET /v1/consistency?adapter=V`: how consistent one adapter version's answers are across
//! paraphrases, over the held-out variant groups it answered (`POST /v1/variant-groups` with
//! `held_out: true`), measured with the server's unit extractor (`--units`).

use axum::extract::State;
use flywheel_store::VariantGroupFilter;
use flywheel_trainer::{consistency_report, ConsistencyConfig, ConsistencyReport};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, AppJson, AppQuery, ErrorBody};
use super::AppState;

/// Variant groups one report reads, newest last.
const MAX_GROUPS: u32 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The adapter version (0 = base model); default: the active one.
    #[param(value_type = Option<i64>)]
    pub adapter: Option<String>,
    /// `true` (default): held-out groups only; `false`: training groups only.
    #[param(value_type = Option<bool>)]
    pub held_out: Option<String>,
}

/// Mean group consistency entropy, helpfulness, stability, unit count and answer length of one
/// version over variant groups it answered; §5.2's measures (ours, not the paper's).
#[utoipa::path(get, path = "/v1/consistency", tag = "variant groups", params(ConsistencyQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = ConsistencyReport),
        (status = 400, description = "A malformed parameter, named in `param`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No such adapter version", body = ErrorBody),
        (status = 409, description = "The server has no unit extractor (start it with `--units FILE`)", body = ErrorBody),
    ))]
pub async fn get_consistency(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ConsistencyQuery>,
) -> Result<AppJson<ConsistencyReport>, ApiError> {
    let version = match q.adapter.as_deref() {
        Some(v) => v.parse::<i64>().map_err(|_| {
            ApiError::invalid(
                "adapter",
                format!("`adapter` must be an integer. Given: {v}"),
            )
        })?,
        None => state.store.active_adapter_version().await?,
    };
    let held_out = match q.held_out.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "held_out",
                format!("`held_out` must be true or false. Given: {other}"),
            ))
        }
    };
    Ok(AppJson(report(&state, version, held_out).await?))
}

/// The report of `version` over its variant groups (held-out or training ones).
///
/// # Errors
/// 404 for an unknown version, 409 without an extractor, store errors.
pub async fn report(
    state: &AppState,
    version: i64,
    held_out: bool,
) -> Result<ConsistencyReport, ApiError> {
    let Some(extractor) = state.units.as_deref() else {
        return Err(ApiError::Conflict(
            "this server has no unit extractor: start it with `--units FILE` (an ExtractorSpec \
             JSON of items with aliases and regular expressions)"
                .into(),
        ));
    };
    state.store.get_adapter(version).await?;
    let filter = VariantGroupFilter {
        adapter_version: Some(version),
        held_out: Some(held_out),
        since: None,
        until: None,
        limit: MAX_GROUPS,
    };
    let groups = state.store.variant_groups(&filter).await?;
    consistency_report(version, &groups, extractor, &ConsistencyConfig::default())
        .map_err(|e| ApiError::Internal(e.into()))
}
