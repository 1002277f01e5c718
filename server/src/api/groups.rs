//! Prompt groups and their responses, as stored: `/v1/groups`, `/v1/groups/{id}`,
//! `/v1/responses/{id}`.

use axum::extract::State;
use chrono::{DateTime, Utc};
use flywheel_store::{Group, GroupFilter, GroupWithResponses, Response as StoredResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, AppJson, AppPath, AppQuery, ErrorBody};
use super::AppState;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupQuery {
    /// Only groups produced by this adapter version (0 = base model).
    pub adapter: Option<i64>,
    /// Only groups created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Only groups created before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Keyset cursor: the `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupPage {
    pub object: &'static str,
    pub data: Vec<Group>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_cursor: Option<Uuid>,
}

/// Lists prompt groups, newest first.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", params(GroupQuery),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, description = "One page, newest first", body = GroupPage),
        (status = 400, description = "A malformed filter or `limit`, named in `param`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
    ))]
pub async fn list_groups(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<GroupQuery>,
) -> Result<AppJson<GroupPage>, ApiError> {
    let limit = parse_limit(q.limit.as_deref())?;
    let filter = GroupFilter {
        adapter_version: q.adapter,
        since: q
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
        before: q
            .cursor
            .as_deref()
            .map(|c| parse_id("cursor", c))
            .transpose()?,
        limit,
    };
    let data = state.store.list_groups(&filter).await?;
    let next_cursor = (data.len() == limit as usize)
        .then(|| data.last().map(|g| g.id))
        .flatten();
    Ok(AppJson(GroupPage {
        object: "list",
        data,
        next_cursor,
    }))
}

/// One prompt group with all its responses.
#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups",
    params(("id" = Uuid, Path, description = "group id")),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, description = "The group and its responses", body = GroupWithResponses),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
        (status = 404, description = "No such group", body = ErrorBody),
    ))]
pub async fn get_group(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<AppJson<GroupWithResponses>, ApiError> {
    Ok(AppJson(state.store.get_group(parse_id("id", &id)?).await?))
}

/// One stored response with its provenance.
#[utoipa::path(get, path = "/v1/responses/{id}", tag = "groups",
    params(("id" = Uuid, Path, description = "response id")),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, description = "The response", body = StoredResponse),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
        (status = 404, description = "No such response", body = ErrorBody),
    ))]
pub async fn get_response(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<AppJson<StoredResponse>, ApiError> {
    Ok(AppJson(
        state.store.get_response(parse_id("id", &id)?).await?,
    ))
}

pub(crate) fn parse_id(param: &str, value: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value)
        .map_err(|_| ApiError::invalid(param, format!("`{param}` must be a UUID. Given: {value}")))
}

pub(crate) fn parse_time(param: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid(
                param,
                format!("`{param}` must be an RFC 3339 time. Given: {value}"),
            )
        })
}

/// A page size: absent means the default, otherwise 1 to the maximum.
pub(crate) fn parse_limit(value: Option<&str>) -> Result<u32, ApiError> {
    let Some(value) = value else {
        return Ok(DEFAULT_PAGE);
    };
    match value.parse::<u32>() {
        Ok(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        _ => Err(ApiError::invalid(
            "limit",
            format!("`limit` must be >= 1 and <= {MAX_PAGE}. Given: {value}"),
        )),
    }
}
