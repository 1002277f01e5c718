//! Held-out evaluation prompts: `POST /v1/eval-prompts` (one, or a batch of up to 1000, stored
//! all-or-nothing, each prompt once) and `GET /v1/eval-prompts` (newest first, keyset pages).
//! Admin only.
//!
//! Training never sees them: they are kept in a table of their own that no training query reads;
//! duels are drawn from them. A prompt is known by its messages, so posting it again stores nothing
//! and answers the stored one (with its own label).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flywheel_store::{EvalPrompt, NewEvalPrompt, MAX_EVAL_PROMPT_BATCH};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::chat::{MessageContent, Role};
use super::error::{ApiError, AppJson, AppQuery, ErrorBody};
use super::groups::{parse_id, parse_limit};
use super::AppState;
use crate::eval_prompts::{parse_label, parse_messages, Invalid};

/// What `source` records for prompts posted here.
const API_SOURCE: &str = "api";

/// One evaluation prompt: chat messages as `POST /v1/chat/completions` takes them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EvalPromptBody {
    /// At least one message; the last from the `user`. Content is stored flattened to text.
    #[schema(min_items = 1)]
    pub messages: Vec<EvalPromptMessage>,
    /// A name for a subset (`math`, `safety`); not part of the prompt's identity.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub label: Option<String>,
}

/// A chat message of an evaluation prompt: a chat request's message, with `content` required.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct EvalPromptMessage {
    pub role: Role,
    /// A string, or a list of `{"type": "text", "text": ...}` parts.
    #[schema(value_type = MessageContent)]
    pub content: Value,
    pub name: Option<String>,
    /// Required on `tool` messages: the call this message answers (as the chat API requires).
    pub tool_call_id: Option<String>,
}

/// A batch: `{"eval_prompts": [...]}`, stored all-or-nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EvalPromptBatch {
    #[schema(min_items = 1, max_items = 1000)]
    pub eval_prompts: Vec<EvalPromptBody>,
}

/// The body of `POST /v1/eval-prompts`, for the OpenAPI document. The handler reads the JSON
/// itself, so that an error names the failing field (`eval_prompts[2].messages[0].role`).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EvalPromptRequest {
    One(EvalPromptBody),
    Batch(EvalPromptBatch),
}

/// A stored evaluation prompt, and whether this request stored it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredEvalPrompt {
    #[serde(flatten)]
    pub eval_prompt: EvalPrompt,
    /// `true` when new; `false` when the same messages were stored before (this is that prompt,
    /// with its own id, label and source).
    pub created: bool,
}

/// What was stored for a batch, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalPromptList {
    pub object: &'static str,
    pub data: Vec<StoredEvalPrompt>,
    /// How many were new.
    pub created: usize,
}

/// The body of a 200 or 201 from `POST /v1/eval-prompts`, for the OpenAPI document: the prompt
/// for one, the list for a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EvalPromptCreated {
    One(Box<StoredEvalPrompt>),
    Batch(EvalPromptList),
}

/// Stores one evaluation prompt, or a batch of up to 1000 all-or-nothing; each prompt once.
#[utoipa::path(post, path = "/v1/eval-prompts", tag = "eval prompts",
    request_body(content = EvalPromptRequest, description = "One prompt `{\"messages\": [...], \"label\"?}`, or a batch `{\"eval_prompts\": [...]}`"),
    security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "Stored: a `StoredEvalPrompt` for one, an `EvalPromptList` for a batch (201 when at least one is new)", body = EvalPromptCreated),
        (status = 200, description = "Every prompt was stored before; the same shapes as 201, each with `created: false`", body = EvalPromptCreated),
        (status = 400, description = "Malformed JSON, an empty or too large batch, or an invalid field, named in `param` (`eval_prompts[2].messages[0].role`): an unknown role, content that is not a string or text parts, no messages, a last message not from the `user`, a `tool` message without `tool_call_id`, a blank or too long label, a NUL character", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`--max-body-bytes`)", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(count))]
pub async fn create_eval_prompts(
    State(state): State<AppState>,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    let (items, batch) = parse_body(body)?;
    tracing::Span::current().record("count", items.len());
    let stored = state.store.insert_eval_prompts(&items).await?;
    let created = stored.iter().filter(|(_, new)| *new).count();
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut data: Vec<StoredEvalPrompt> = stored
        .into_iter()
        .map(|(eval_prompt, created)| StoredEvalPrompt {
            eval_prompt,
            created,
        })
        .collect();
    Ok(match batch {
        false => (status, AppJson(data.remove(0))).into_response(),
        true => {
            let list = EvalPromptList {
                object: "list",
                data,
                created,
            };
            (status, AppJson(list)).into_response()
        }
    })
}

/// The prompts of a body, and whether it was a batch.
fn parse_body(body: Value) -> Result<(Vec<NewEvalPrompt>, bool), ApiError> {
    let Value::Object(mut object) = body else {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    };
    let Some(batch) = object.remove("eval_prompts") else {
        return Ok((vec![parse_item(Value::Object(object), "")?], false));
    };
    if let Some(extra) = object.keys().next() {
        return Err(ApiError::invalid(
            extra.clone(),
            format!("`{extra}` is not allowed beside `eval_prompts` in a batch"),
        ));
    }
    let Value::Array(items) = batch else {
        return Err(ApiError::invalid(
            "eval_prompts",
            "`eval_prompts` must be an array",
        ));
    };
    if items.is_empty() || items.len() > MAX_EVAL_PROMPT_BATCH {
        return Err(ApiError::invalid(
            "eval_prompts",
            format!(
                "`eval_prompts` must hold at least 1 and at most {MAX_EVAL_PROMPT_BATCH} \
                 prompts. Given: {}",
                items.len()
            ),
        ));
    }
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_item(item, &format!("eval_prompts[{i}].")))
        .collect::<Result<_, _>>()?;
    Ok((items, true))
}

/// One prompt object; `prefix` is its place in the body (`eval_prompts[2].`, or empty).
fn parse_item(value: Value, prefix: &str) -> Result<NewEvalPrompt, ApiError> {
    let Value::Object(object) = value else {
        let param = prefix.trim_end_matches('.');
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be an object with `messages` and optionally `label`"),
        ));
    };
    parse_fields(&object, prefix).map_err(|e| ApiError::invalid(e.param, e.message))
}

fn parse_fields(object: &Map<String, Value>, prefix: &str) -> Result<NewEvalPrompt, Invalid> {
    if let Some(extra) = object
        .keys()
        .find(|k| !["messages", "label"].contains(&k.as_str()))
    {
        return Err(Invalid::new(
            format!("{prefix}{extra}"),
            "is not a field of an eval prompt (`messages` and optionally `label`)",
        ));
    }
    let messages_param = format!("{prefix}messages");
    let messages = match object.get("messages") {
        Some(messages) => parse_messages(messages, &messages_param)?,
        None => return Err(Invalid::new(messages_param, "is missing")),
    };
    let label = match object.get("label") {
        None | Some(Value::Null) => None,
        Some(label) => Some(parse_label(label, &format!("{prefix}label"))?),
    };
    Ok(NewEvalPrompt {
        messages,
        label,
        source: Some(API_SOURCE.into()),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EvalPromptQuery {
    /// Keyset cursor: the `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvalPromptPage {
    pub object: &'static str,
    pub data: Vec<EvalPrompt>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_cursor: Option<Uuid>,
    /// How many evaluation prompts are stored in all.
    pub total: i64,
}

/// Lists evaluation prompts, newest first.
#[utoipa::path(get, path = "/v1/eval-prompts", tag = "eval prompts", params(EvalPromptQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "One page, newest first", body = EvalPromptPage),
        (status = 400, description = "A malformed `cursor` or `limit`, named in `param`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
    ))]
pub async fn list_eval_prompts(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<EvalPromptQuery>,
) -> Result<AppJson<EvalPromptPage>, ApiError> {
    let limit = parse_limit(q.limit.as_deref())?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| parse_id("cursor", c))
        .transpose()?;
    let data = state.store.list_eval_prompts(limit, before).await?;
    let total = state.store.count_eval_prompts().await?;
    let next_cursor = (data.len() == limit as usize)
        .then(|| data.last().map(|p| p.id))
        .flatten();
    Ok(AppJson(EvalPromptPage {
        object: "list",
        data,
        next_cursor,
        total,
    }))
}
