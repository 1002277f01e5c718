//! Pairwise judgments: `POST /v1/judgments` (one, or a batch of up to 1000, all-or-nothing and
//! idempotent) and `GET /v1/judgments` (filtered, newest first, keyset pages).
//!
//! A 2xx means the judgments are committed. The idempotency key of a judgment is its `client_id`,
//! or the `Idempotency-Key` header (a batch gets `<header>:<index>` for each item without one);
//! the same key with the same body returns the stored judgment (200), with another body 409.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flywheel_store::{
    IdempotencyKey, Judgment, JudgmentFilter, JudgmentSource, NewJudgment, Outcome,
    MAX_JUDGMENT_BATCH,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, AppJson, AppQuery, ErrorBody};
use super::groups::{parse_id, parse_limit, parse_time};
use super::AppState;

/// One judgment of two responses of a group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgmentBody {
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub response_a: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub response_b: Uuid,
    /// `a`, `b`, `tie` or `both_bad`.
    pub outcome: Outcome,
    /// The probability that `response_a` beats `response_b`, 0–1.
    #[schema(minimum = 0, maximum = 1)]
    pub strength: Option<f64>,
    /// Who judged: a person's pseudonym, a judge model's name, a rule's name. Not blank.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub annotator: String,
    /// `human` (default), `model` or `rule`.
    #[serde(default = "human")]
    pub source: JudgmentSource,
    pub rationale: Option<String>,
    /// Free-form JSON: criterion names, or scores per criterion.
    #[schema(value_type = Option<Value>)]
    pub criteria: Option<Value>,
    /// The idempotency key; overrides the `Idempotency-Key` header. Not blank.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub client_id: Option<String>,
    /// The annotation-queue assignment this judgment answers (`GET /v1/annotation/next`).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub assignment_id: Option<Uuid>,
}

fn human() -> JudgmentSource {
    JudgmentSource::Human
}

/// A batch: `{"judgments": [...]}`, stored all-or-nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgmentBatch {
    #[schema(min_items = 1, max_items = 1000)]
    pub judgments: Vec<JudgmentBody>,
}

/// The body of `POST /v1/judgments`, for the OpenAPI document. The handler parses the JSON itself,
/// so that an error names the failing field (`judgments[3].outcome`), which `untagged` cannot.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum JudgmentRequest {
    One(Box<JudgmentBody>),
    Batch(JudgmentBatch),
}

/// The body of a 200 or 201 from `POST /v1/judgments`, for the OpenAPI document: the judgment for
/// one, the list for a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum JudgmentCreated {
    One(Box<Judgment>),
    Batch(JudgmentList),
}

/// What was stored for a batch, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct JudgmentList {
    pub object: &'static str,
    pub data: Vec<Judgment>,
    /// How many were new; the rest replayed an earlier request with the same key.
    pub created: usize,
}

/// Stores one judgment, or a batch of up to 1000 judgments all-or-nothing.
#[utoipa::path(post, path = "/v1/judgments", tag = "judgments",
    request_body(content = JudgmentRequest, description = "One judgment, or a batch `{\"judgments\": [...]}`"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key when the body has no `client_id`")),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 201, description = "Stored: a `Judgment` for one, a `JudgmentList` for a batch (201 when at least one is new)", body = JudgmentCreated),
        (status = 200, description = "Replayed: every judgment's key and body were stored before; the same shapes as 201", body = JudgmentCreated),
        (status = 400, description = "Malformed JSON, an invalid field (named in `param`), an unknown group, response or assignment, a response of another group, an `Idempotency-Key` that is not visible ASCII", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
        (status = 409, description = "The idempotency key is stored with a different body, or the assignment was answered by another judgment", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`--max-body-bytes`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(count))]
pub async fn create_judgments(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    let header_key = idempotency_header(&headers)?;
    let (items, batch) = parse_body(body)?;
    tracing::Span::current().record("count", items.len());
    let mut judgments = Vec::with_capacity(items.len());
    let mut assignments = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let item_key = header_key.as_ref().map(|k| match batch {
            true => format!("{k}:{i}"),
            false => k.clone(),
        });
        let prefix = if batch {
            format!("judgments[{i}].")
        } else {
            String::new()
        };
        let assignment = item.assignment_id;
        let judgment = new_judgment(item, item_key, &prefix)?;
        if let Some(assignment) = assignment {
            check_assignment(&state, assignment, &judgment, &prefix).await?;
            assignments.push((i, assignment));
        }
        judgments.push(judgment);
    }
    let stored = state.store.insert_judgments(&judgments).await?;
    for (i, assignment) in assignments {
        state
            .store
            .complete_assignment(assignment, stored[i].0.id)
            .await?;
    }
    let created = stored.iter().filter(|(_, new)| *new).count();
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut data: Vec<Judgment> = stored.into_iter().map(|(j, _)| j).collect();
    Ok(match batch {
        false => (status, AppJson(data.remove(0))).into_response(),
        true => {
            let list = JudgmentList {
                object: "list",
                data,
                created,
            };
            (status, AppJson(list)).into_response()
        }
    })
}

pub(crate) fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ApiError::invalid("Idempotency-Key", "`Idempotency-Key` must be visible ASCII")
            })
        })
        .transpose()
}

/// The judgments of a body, and whether it was a batch.
fn parse_body(body: Value) -> Result<(Vec<JudgmentBody>, bool), ApiError> {
    parse_one_or_batch(body, "judgments", MAX_JUDGMENT_BATCH)
}

/// One item, or a batch `{"<key>": [...]}` of 1 to `max` items, and whether it was a batch. Each
/// serde error names its field (`<key>[3].outcome` in a batch).
pub(crate) fn parse_one_or_batch<T: DeserializeOwned>(
    body: Value,
    key: &str,
    max: usize,
) -> Result<(Vec<T>, bool), ApiError> {
    let Value::Object(mut object) = body else {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    };
    let Some(batch) = object.remove(key) else {
        return Ok((vec![deserialize(Value::Object(object), "")?], false));
    };
    if let Some(extra) = object.keys().next() {
        return Err(ApiError::invalid(
            extra.clone(),
            format!("`{extra}` is not allowed beside `{key}` in a batch"),
        ));
    }
    let Value::Array(items) = batch else {
        return Err(ApiError::invalid(key, format!("`{key}` must be an array")));
    };
    if items.is_empty() || items.len() > max {
        return Err(ApiError::invalid(
            key,
            format!(
                "`{key}` must hold at least 1 and at most {max} {key}. Given: {}",
                items.len()
            ),
        ));
    }
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| deserialize(item, &format!("{key}[{i}].")))
        .collect::<Result<_, _>>()?;
    Ok((items, true))
}

/// Deserializes `value`, naming the failing field in `param` (after `prefix`).
fn deserialize<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // Missing and unknown fields are reported at the object's own path: take the name from
        // serde's message (`missing field `outcome``).
        let field = if path == "." || path.is_empty() {
            message.split('`').nth(1).unwrap_or("body").to_string()
        } else {
            path
        };
        let param = format!("{prefix}{field}");
        ApiError::invalid(param.clone(), format!("`{param}`: {message}"))
    })
}

fn new_judgment(
    item: JudgmentBody,
    header_key: Option<String>,
    prefix: &str,
) -> Result<NewJudgment, ApiError> {
    let idempotency_key = item
        .client_id
        .or(header_key)
        .map(IdempotencyKey::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("{prefix}client_id"), e.to_string()))?;
    Ok(NewJudgment {
        group_id: item.group_id,
        response_a: item.response_a,
        response_b: item.response_b,
        outcome: item.outcome,
        strength: item.strength,
        annotator: item.annotator,
        source: item.source,
        rationale: item.rationale,
        criteria: item.criteria,
        idempotency_key,
    })
}

/// The assignment must exist, be the annotator's, be of this pair (either order) and be
/// unanswered, or answered by a judgment with this idempotency key (a replay). Checked before the
/// insert, so a judgment that cannot answer its assignment is not stored.
async fn check_assignment(
    state: &AppState,
    id: Uuid,
    item: &NewJudgment,
    prefix: &str,
) -> Result<(), ApiError> {
    let param = format!("{prefix}assignment_id");
    let assignment = match state.store.get_assignment(id).await {
        Err(flywheel_store::Error::NotFound(_)) => {
            return Err(ApiError::invalid(
                param,
                format!("assignment {id} does not exist"),
            ))
        }
        other => other?,
    };
    let pair = [assignment.response_a, assignment.response_b];
    let same_pair =
        pair == [item.response_a, item.response_b] || pair == [item.response_b, item.response_a];
    if assignment.annotator != item.annotator || !same_pair {
        return Err(ApiError::invalid(
            param,
            format!(
                "assignment {id} is for annotator `{}` and responses {} and {}",
                assignment.annotator, assignment.response_a, assignment.response_b
            ),
        ));
    }
    let Some(answer) = assignment.judgment_id else {
        return Ok(());
    };
    let answer = state.store.get_judgment(answer).await?;
    let key = item.idempotency_key.as_ref().map(|k| k.as_str());
    if key.is_some() && answer.idempotency_key.as_deref() == key {
        return Ok(());
    }
    Err(ApiError::Conflict(format!(
        "assignment {id} was already answered by judgment {}",
        answer.id
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JudgmentQuery {
    /// Only judgments of this group.
    #[param(value_type = Option<String>, format = Uuid)]
    pub group: Option<String>,
    pub annotator: Option<String>,
    /// `human`, `model` or `rule`.
    #[param(value_type = Option<JudgmentSource>)]
    pub source: Option<String>,
    /// Only judgments of groups produced by this adapter version (0 = base model).
    #[param(value_type = Option<i64>)]
    pub adapter: Option<String>,
    /// Only judgments made at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Only judgments made before this time (RFC 3339).
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
pub struct JudgmentPage {
    pub object: &'static str,
    pub data: Vec<Judgment>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_cursor: Option<Uuid>,
}

/// Lists judgments, newest first.
#[utoipa::path(get, path = "/v1/judgments", tag = "judgments", params(JudgmentQuery),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, body = JudgmentPage),
        (status = 400, description = "A malformed filter, named in `param`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
    ))]
pub async fn list_judgments(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<JudgmentQuery>,
) -> Result<AppJson<JudgmentPage>, ApiError> {
    let filter = JudgmentFilter {
        group_id: q
            .group
            .as_deref()
            .map(|g| parse_id("group", g))
            .transpose()?,
        annotator: q.annotator,
        source: q.source.as_deref().map(parse_source).transpose()?,
        adapter_version: q.adapter.as_deref().map(parse_adapter).transpose()?,
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
        limit: parse_limit(q.limit.as_deref())?,
    };
    let data = state.store.list_judgments(&filter).await?;
    let next_cursor = (data.len() == filter.limit as usize)
        .then(|| data.last().map(|j| j.id))
        .flatten();
    Ok(AppJson(JudgmentPage {
        object: "list",
        data,
        next_cursor,
    }))
}

fn parse_source(value: &str) -> Result<JudgmentSource, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid(
            "source",
            format!("`source` must be one of human, model, rule. Given: {value}"),
        )
    })
}

fn parse_adapter(value: &str) -> Result<i64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid(
            "adapter",
            format!("`adapter` must be an integer. Given: {value}"),
        )
    })
}
