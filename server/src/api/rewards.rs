//! Scalar rewards of responses, for GRPO: `POST /v1/rewards` (one, or a batch of up to 1000,
//! all-or-nothing and idempotent exactly as judgments are) and `GET /v1/rewards`.
//!
//! Verifiers, reward models and people post them; `flywheel train --algo grpo` learns from the
//! mean posted reward of each response (sources `human`, `model`, `rule`). The trainer records the
//! rewards it derives itself (`consistency`, `win_rate`) with their inputs, which cannot be posted.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flywheel_store::{IdempotencyKey, NewReward, Reward, RewardFilter, RewardSource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, AppJson, AppQuery, ErrorBody};
use super::groups::{parse_id, parse_limit};
use super::judgments::{idempotency_header, parse_one_or_batch};
use super::AppState;

const MAX_BATCH: usize = flywheel_store::MAX_JUDGMENT_BATCH;

/// Who may post a reward: the sources the trainer derives itself are not accepted.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PostedSource {
    Human,
    Model,
    Rule,
}

impl From<PostedSource> for RewardSource {
    fn from(s: PostedSource) -> Self {
        match s {
            PostedSource::Human => RewardSource::Human,
            PostedSource::Model => RewardSource::Model,
            PostedSource::Rule => RewardSource::Rule,
        }
    }
}

/// One scalar reward of one response.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardBody {
    #[schema(value_type = String, format = Uuid)]
    pub response_id: Uuid,
    /// Any finite number with |value| ≤ 1e6; GRPO normalises rewards within each group.
    #[schema(minimum = -1000000, maximum = 1000000)]
    pub value: f64,
    /// `rule` (a verifier or program), `model` (a reward model or LLM judge) or `human`.
    pub source: PostedSource,
    /// Who gave it: a verifier's, reward model's or person's name. Not blank.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub annotator: String,
    pub rationale: Option<String>,
    /// Free-form JSON (for example the checks a verifier ran).
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// The idempotency key; overrides the `Idempotency-Key` header. Not blank.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub client_id: Option<String>,
}

/// A batch: `{"rewards": [...]}`, stored all-or-nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardBatch {
    #[schema(min_items = 1, max_items = 1000)]
    pub rewards: Vec<RewardBody>,
}

/// The body of `POST /v1/rewards`, for the OpenAPI document (the handler parses it itself, so
/// that an error names its field).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum RewardRequest {
    One(Box<RewardBody>),
    Batch(RewardBatch),
}

/// What was stored for a batch, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct RewardList {
    pub object: &'static str,
    pub data: Vec<Reward>,
    /// How many were new; the rest replayed an earlier request with the same key.
    pub created: usize,
}

/// The body of a 200 or 201 from `POST /v1/rewards`, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum RewardCreated {
    One(Box<Reward>),
    Batch(RewardList),
}

/// Stores one reward, or a batch of up to 1000 all-or-nothing.
#[utoipa::path(post, path = "/v1/rewards", tag = "rewards",
    request_body(content = RewardRequest, description = "One reward, or a batch `{\"rewards\": [...]}`"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key when the body has no `client_id`")),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 201, description = "Stored: a `Reward` for one, a `RewardList` for a batch (201 when at least one is new)", body = RewardCreated),
        (status = 200, description = "Replayed: every reward's key and body were stored before", body = RewardCreated),
        (status = 400, description = "Malformed JSON, an invalid field (named in `param`), an unknown response", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
        (status = 409, description = "The idempotency key is stored with a different body", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`--max-body-bytes`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(count))]
pub async fn create_rewards(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    let header_key = idempotency_header(&headers)?;
    let (items, batch) = parse_one_or_batch::<RewardBody>(body, "rewards", MAX_BATCH)?;
    tracing::Span::current().record("count", items.len());
    let rewards = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let (prefix, key) = match batch {
                true => (
                    format!("rewards[{i}]."),
                    header_key.as_ref().map(|k| format!("{k}:{i}")),
                ),
                false => (String::new(), header_key.clone()),
            };
            new_reward(item, key, &prefix)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stored = state.store.insert_rewards(&rewards).await?;
    let created = stored.iter().filter(|(_, new)| *new).count();
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut data: Vec<Reward> = stored.into_iter().map(|(r, _)| r).collect();
    Ok(match batch {
        false => (status, AppJson(data.remove(0))).into_response(),
        true => {
            let list = RewardList {
                object: "list",
                data,
                created,
            };
            (status, AppJson(list)).into_response()
        }
    })
}

fn new_reward(
    item: RewardBody,
    header_key: Option<String>,
    prefix: &str,
) -> Result<NewReward, ApiError> {
    let idempotency_key = item
        .client_id
        .or(header_key)
        .map(IdempotencyKey::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("{prefix}client_id"), e.to_string()))?;
    let limit = flywheel_store::MAX_REWARD_MAGNITUDE;
    if !(item.value.is_finite() && item.value.abs() <= limit) {
        return Err(ApiError::invalid(
            format!("{prefix}value"),
            format!(
                "`{prefix}value` must be >= -{limit} and <= {limit}. Given: {:e}",
                item.value
            ),
        ));
    }
    if let Some(details) = &item.details {
        if !details.is_object() {
            return Err(ApiError::invalid(
                format!("{prefix}details"),
                format!("`{prefix}details` must be a JSON object"),
            ));
        }
    }
    Ok(NewReward {
        response_id: item.response_id,
        value: item.value,
        source: item.source.into(),
        annotator: item.annotator,
        rationale: item.rationale,
        details: item.details,
        idempotency_key,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RewardQuery {
    /// Only rewards of this group's responses.
    #[param(value_type = Option<String>, format = Uuid)]
    pub group: Option<String>,
    /// Only rewards of this response.
    #[param(value_type = Option<String>, format = Uuid)]
    pub response: Option<String>,
    /// `human`, `model`, `rule`, `consistency` or `win_rate`.
    #[param(value_type = Option<RewardSource>)]
    pub source: Option<String>,
    /// Keyset cursor: the `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RewardPage {
    pub object: &'static str,
    pub data: Vec<Reward>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_cursor: Option<Uuid>,
}

/// Lists rewards, newest first.
#[utoipa::path(get, path = "/v1/rewards", tag = "rewards", params(RewardQuery),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, body = RewardPage),
        (status = 400, description = "A malformed filter, named in `param`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
    ))]
pub async fn list_rewards(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<RewardQuery>,
) -> Result<AppJson<RewardPage>, ApiError> {
    let filter = RewardFilter {
        group_id: q
            .group
            .as_deref()
            .map(|g| parse_id("group", g))
            .transpose()?,
        response_id: q
            .response
            .as_deref()
            .map(|r| parse_id("response", r))
            .transpose()?,
        source: q
            .source
            .as_deref()
            .map(|s| {
                s.parse::<RewardSource>().map_err(|_| {
                    ApiError::invalid(
                        "source",
                        format!(
                            "`source` must be one of human, model, rule, consistency, win_rate. \
                             Given: {s}"
                        ),
                    )
                })
            })
            .transpose()?,
        before: q
            .cursor
            .as_deref()
            .map(|c| parse_id("cursor", c))
            .transpose()?,
        limit: parse_limit(q.limit.as_deref())?,
    };
    let data = state.store.list_rewards(&filter).await?;
    let next_cursor = (data.len() == filter.limit as usize)
        .then(|| data.last().map(|r| r.id))
        .flatten();
    Ok(AppJson(RewardPage {
        object: "list",
        data,
        next_cursor,
    }))
}
