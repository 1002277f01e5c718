//! `GET /v1/exports`: the judged groups as streamed JSONL in a trainer's format, the same lines
//! `flywheel export` writes (see [`crate::export`]).
//!
//! The manifest travels in the `x-flywheel-manifest` response header (compact JSON), not as a
//! first line, so that every line of the body has the format's shape and loads as a dataset as is.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, AppQuery, ErrorBody};
use super::AppState;
use crate::export::{export, load, Filters, Format};

/// The response header that carries the export's manifest.
pub const MANIFEST_HEADER: &str = "x-flywheel-manifest";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `dpo`, `kto`, `sppo` or `raw`.
    #[param(required = true, value_type = ExportFormat)]
    pub format: Option<String>,
    /// Only groups created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Only groups served by this adapter version.
    #[param(value_type = Option<i64>)]
    pub adapter: Option<String>,
}

/// The trainer formats an export can be written in, for the OpenAPI document; the handler parses
/// the text with [`Format::parse`].
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum ExportFormat {
    Dpo,
    Kto,
    Sppo,
    Raw,
    Grpo,
}

/// The judged (or, for `grpo`, rewarded) groups as JSONL (`application/x-ndjson`), streamed one
/// line per record. `dpo`: one line per judgment with a winner (`prompt`, `chosen`, `rejected` as
/// message lists); `kto`: one line per response that won or lost a judgment (`prompt`,
/// `completion`, `label`); `sppo`: one line per group (`prompt`, `responses`, `win_rates`); `raw`:
/// one line per group with its responses (token ids, log-probs, adapter version, variant),
/// judgments, rewards and variant metadata; `grpo`: one line per rewarded group, each response with
/// its own prompt and prompt token ids, tokens, behaviour log-probs, rewards and their mean. The manifest (base models,
/// adapter versions, filters, counts, `created_at`) is in the `x-flywheel-manifest` header as JSON.
#[utoipa::path(get, path = "/v1/exports", tag = "judgments",
    params(ExportQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "JSONL, one record a line; the manifest in the `x-flywheel-manifest` header",
            content_type = "application/x-ndjson", body = String,
            headers(("x-flywheel-manifest" = String, description = "The export's manifest, JSON"))),
        (status = 400, description = "A missing or unknown `format`, or a malformed `since` or `adapter`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn get_export(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let given = q.format.as_deref().unwrap_or("");
    let format = Format::parse(given).ok_or_else(|| {
        ApiError::invalid(
            "format",
            format!("`format` must be one of dpo, kto, sppo, raw, grpo. Given: {given:?}"),
        )
    })?;
    let since = match q.since.as_deref() {
        None => None,
        Some(v) => Some(v.parse::<DateTime<Utc>>().map_err(|_| {
            ApiError::invalid("since", format!("`since` must be RFC 3339. Given: {v}"))
        })?),
    };
    let adapter = match q.adapter.as_deref() {
        None => None,
        Some(v) => Some(v.parse::<i64>().map_err(|_| {
            ApiError::invalid(
                "adapter",
                format!("`adapter` must be an integer. Given: {v}"),
            )
        })?),
    };
    let filters = Filters { since, adapter };
    let groups = load(&state.store, format, &filters)
        .await
        .map_err(ApiError::Internal)?;
    let (lines, manifest) = export(format, &groups, filters);
    let manifest = serde_json::to_string(&manifest).map_err(|e| ApiError::Internal(e.into()))?;
    let manifest = HeaderValue::from_str(&manifest).map_err(|e| ApiError::Internal(e.into()))?;
    let chunks = lines
        .into_iter()
        .map(|line| Ok::<_, std::convert::Infallible>(format!("{line}\n")));
    let body = Body::from_stream(futures::stream::iter(chunks));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(MANIFEST_HEADER, manifest);
    Ok(response)
}
