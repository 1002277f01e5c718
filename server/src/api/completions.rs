//! `POST /v1/completions` (OpenAI's legacy text completions), with Flywheel's extensions.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, AppJson, ErrorBody};
use super::sampling::{self, SamplingInput, StopParam, StreamOptions};
use super::stream::{self, Choice, Meta, Recording, Render, StreamEvent, Usage};
use super::AppState;
use crate::engine::{FinishReason, Prompt, TokenLogprob};

/// OpenAI caps legacy `logprobs` at 5.
const MAX_COMPLETION_LOGPROBS: u32 = 5;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub model: Option<String>,
    #[schema(schema_with = prompt_schema)]
    pub prompt: Value,
    /// How many samples to draw for the prompt (all stored in one group).
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// OpenAI's default for this endpoint is 16.
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    pub stop: Option<StopParam>,
    pub seed: Option<i64>,
    /// Number of most likely tokens to report per position (0–5); absent = no log-probs.
    #[schema(minimum = 0, maximum = 5)]
    pub logprobs: Option<u32>,
    /// Not supported: only `false` is accepted.
    pub echo: Option<bool>,
    /// Answer `text/event-stream` of `Completion` chunks instead of one body.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    /// Not supported; a non-empty map is rejected rather than silently ignored.
    pub logit_bias: Option<HashMap<String, f64>>,
    /// Not supported beyond 1; ask for `n` samples and judge the group instead.
    #[schema(minimum = 0, maximum = 1)]
    pub best_of: Option<u32>,
    /// Whether to log the samples as a prompt group (default `true`; a Flywheel extension on this endpoint):
    /// `false` serves the request without storing it, so it gets no `group_id` or `response_id`.
    /// Automatic judges send `false`, so that their own questions never become training data.
    pub store: Option<bool>,
}

/// The OpenAPI shape of `CompletionRequest.prompt`: a string, or a list of exactly one string.
/// The handler reads the JSON itself, so that each wrong shape gets its own message.
fn prompt_schema() -> RefOr<Schema> {
    let text = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
    };
    OneOfBuilder::new()
        .item(text())
        .item(
            ArrayBuilder::new()
                .items(text())
                .min_items(Some(1))
                .max_items(Some(1)),
        )
        .description(Some(
            "One prompt: a non-empty string, or a list holding exactly one.",
        ))
        .into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    /// Absent on streamed chunks unless it is the final usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The prompt group these samples were stored in; absent with `store: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub group_id: Option<Uuid>,
    pub adapter: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
    /// The stored response, for judgments and lookups; absent with `store: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub response_id: Option<Uuid>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    /// Natural logs.
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<HashMap<String, f32>>,
    pub text_offset: Vec<usize>,
}

/// Creates a text completion; stored as one prompt group like chat completions.
#[utoipa::path(post, path = "/v1/completions", tag = "inference",
    request_body = CompletionRequest,
    security(("bearer" = ["inference"])),
    responses(
        (status = 200, description = "A `Completion`; with `stream: true`, `text/event-stream` whose events carry `Completion` chunks (see `StreamEvent`)",
            content((Completion = "application/json"), (StreamEvent = "text/event-stream"))),
        (status = 400, description = "Malformed JSON, an invalid parameter (named in `param`), or a prompt longer than the context", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `inference` scope", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`--max-body-bytes`)", body = ErrorBody),
        (status = 503, description = "The admission queue is full (see `Retry-After`) or the model is not loaded yet", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when the queue is full"))),
    ))]
#[tracing::instrument(skip_all, fields(group_id))]
pub async fn create_completion(
    State(state): State<AppState>,
    AppJson(body): AppJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let route = super::resolve_model(&state, body.model.as_deref())?;
    let text = parse_prompt(&body.prompt)?;
    if body.echo.unwrap_or(false) {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    if body.best_of.is_some_and(|b| b > 1) {
        return Err(ApiError::invalid(
            "best_of",
            "`best_of` is not supported; use `n` and judge the group",
        ));
    }
    if let Some(k) = body.logprobs.filter(|k| *k > MAX_COMPLETION_LOGPROBS) {
        return Err(ApiError::invalid(
            "logprobs",
            format!("`logprobs` must be >= 0 and <= {MAX_COMPLETION_LOGPROBS}. Given: {k}"),
        ));
    }
    let sampling = sampling::validate(
        SamplingInput {
            n: body.n,
            temperature: body.temperature,
            top_p: body.top_p,
            max_tokens: Some(body.max_tokens.unwrap_or(16)),
            stop: body.stop,
            seed: body.seed,
            logit_bias: body.logit_bias.as_ref().is_some_and(|b| !b.is_empty()),
            logprobs: body.logprobs.is_some(),
            top_logprobs: body.logprobs,
            presence_penalty: body.presence_penalty,
            frequency_penalty: body.frequency_penalty,
        },
        "max_tokens",
    )?;
    let prompt = Prompt::Text(text.clone());
    let admitted = Arc::new(
        state
            .engine
            .admit(&prompt, sampling, route)
            .await
            .map_err(|e| ApiError::admission(e, "prompt", "max_tokens"))?,
    );
    let meta = stream::meta(&admitted, "cmpl", body.store.unwrap_or(true));
    tracing::Span::current().record("group_id", tracing::field::display(meta.group_id));
    let stream = body.stream.unwrap_or(false);
    let recording = Recording {
        endpoint: flywheel_store::Endpoint::Completion,
        prompt: Value::String(text),
        params: serde_json::json!({ "sampling": admitted.sampling, "stream": stream }),
        user: body.user,
    };
    if stream {
        let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
        Ok(stream::stream(
            state,
            admitted,
            meta,
            recording,
            CompletionRender,
            include_usage,
        ))
    } else {
        stream::complete(state, admitted, meta, recording, CompletionRender).await
    }
}

fn parse_prompt(prompt: &Value) -> Result<String, ApiError> {
    match prompt {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => Ok(items[0].as_str().unwrap_or_default().to_string()),
        Value::Array(items) if items.len() > 1 => {
            Err(ApiError::invalid("prompt", "one prompt per request: send a string (or a list of one string); use `n` for several samples"))
        }
        _ => Err(ApiError::invalid("prompt", "`prompt` must be a string")),
    }
}

struct CompletionRender;

fn completion_logprobs(entries: Vec<TokenLogprob>, offset: &mut usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for e in entries {
        out.text_offset.push(*offset);
        *offset += e.token.len();
        out.top_logprobs
            .push(e.top.into_iter().map(|t| (t.token, t.logprob)).collect());
        out.token_logprobs.push(e.logprob);
        out.tokens.push(e.token);
    }
    out
}

impl CompletionRender {
    fn of(meta: &Meta, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Value {
        serde_json::to_value(Completion {
            id: meta.id.clone(),
            object: "text_completion",
            created: meta.created,
            model: meta.model.clone(),
            choices,
            usage,
            group_id: meta.stored_group(),
            adapter: meta.adapter,
        })
        .expect("completion serializes")
    }
}

impl Render for CompletionRender {
    fn chunk(
        &self,
        meta: &Meta,
        index: u32,
        text: String,
        logprobs: Vec<TokenLogprob>,
        _first: bool,
    ) -> Value {
        // Offsets within a streamed chunk restart at 0; clients that need absolute offsets use
        // the non-streamed body.
        let choice = CompletionChoice {
            index,
            text,
            logprobs: meta.logprobs.then(|| completion_logprobs(logprobs, &mut 0)),
            finish_reason: None,
            response_id: meta.response_id(index),
        };
        Self::of(meta, vec![choice], None)
    }

    fn finish_chunk(&self, meta: &Meta, index: u32, reason: FinishReason) -> Value {
        let choice = CompletionChoice {
            index,
            text: String::new(),
            logprobs: None,
            finish_reason: Some(reason.as_str().to_string()),
            response_id: meta.response_id(index),
        };
        Self::of(meta, vec![choice], None)
    }

    fn usage_chunk(&self, meta: &Meta, usage: Usage) -> Value {
        Self::of(meta, vec![], Some(usage))
    }

    fn body(&self, meta: &Meta, choices: Vec<Choice>, usage: Usage) -> Value {
        let choices = choices
            .into_iter()
            .map(|c| CompletionChoice {
                index: c.index,
                response_id: meta.response_id(c.index),
                logprobs: meta
                    .logprobs
                    .then(|| completion_logprobs(c.logprobs, &mut 0)),
                text: c.text,
                finish_reason: Some(c.finish_reason.as_str().to_string()),
            })
            .collect();
        Self::of(meta, choices, Some(usage))
    }
}
