//! `POST /v1/chat/completions`, as OpenAI defines it, plus `group_id`, `response_id` and `adapter`.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, AppJson, ErrorBody};
use super::sampling::{self, SamplingInput, StopParam, StreamOptions};
use super::stream::{self, Choice, Meta, Recording, Render, StreamEvent, Usage};
use super::AppState;
use crate::engine::{ChatMessage, FinishReason, Prompt, TokenLogprob};
use crate::eval_prompts::{content_text, ContentError};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// The served model name, or `name@version`; optional.
    pub model: Option<String>,
    #[schema(min_items = 1)]
    pub messages: Vec<InputMessage>,
    /// How many samples to draw for the prompt (all stored in one group).
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// Deprecated by OpenAI in favour of `max_completion_tokens`; both are accepted.
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// Wins over `max_tokens` when both are given.
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<StopParam>,
    /// Same seed, prompt, parameters and adapter ⇒ the same samples (see README, "Seeds").
    pub seed: Option<i64>,
    pub logprobs: Option<bool>,
    /// Alternatives to report per position; needs `logprobs: true` when above 0.
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<u32>,
    /// Answer `text/event-stream` of `ChatCompletionChunk`s instead of one body.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    /// Not supported; a non-empty map is rejected rather than silently ignored.
    pub logit_bias: Option<HashMap<String, f64>>,
    /// Whether to log the samples as a prompt group (default `true`, unlike OpenAI's default):
    /// `false` serves the request without storing it, so it gets no `group_id` or `response_id`.
    /// Automatic judges send `false`, so that their own questions never become training data.
    pub store: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InputMessage {
    pub role: Role,
    /// A string, or a list of `{"type": "text", "text": ...}` parts.
    #[schema(value_type = Option<MessageContent>)]
    pub content: Option<Value>,
    pub name: Option<String>,
    /// Required on `tool` messages: the call this message answers (as OpenAI requires).
    pub tool_call_id: Option<String>,
}

/// The OpenAPI shape of `InputMessage.content`; the handler reads the JSON itself, so that an
/// error names the failing part.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<TextPart>),
}

/// A content part; only text parts are supported.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TextPart {
    pub r#type: TextPartType,
    pub text: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum TextPartType {
    Text,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// The prompt group these samples were stored in; absent with `store: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub group_id: Option<Uuid>,
    /// The policy version that produced them (0 = base model).
    pub adapter: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: String,
    /// The stored response, for judgments and lookups; absent with `store: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub response_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatTokenLogprob {
    pub token: String,
    /// Natural log, as OpenAI defines it.
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only on the last chunk, with `stream_options.include_usage`.
    pub usage: Option<Usage>,
    /// The prompt group these samples were stored in; absent with `store: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub group_id: Option<Uuid>,
    pub adapter: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
    /// The stored response, for judgments and lookups; absent with `store: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub response_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Creates a chat completion; every choice is stored as a response of one new prompt group.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "inference",
    request_body = ChatCompletionRequest,
    security(("bearer" = ["inference"])),
    responses(
        (status = 200, description = "A `ChatCompletion`; with `stream: true`, `text/event-stream` whose events carry `ChatCompletionChunk`s (see `StreamEvent`)",
            content((ChatCompletion = "application/json"), (StreamEvent = "text/event-stream"))),
        (status = 400, description = "Malformed JSON, an invalid parameter (named in `param`), or a prompt longer than the context", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `inference` scope", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`--max-body-bytes`)", body = ErrorBody),
        (status = 503, description = "The admission queue is full (see `Retry-After`) or the model is not loaded yet", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when the queue is full"))),
    ))]
#[tracing::instrument(skip_all, fields(group_id))]
pub async fn create_chat_completion(
    State(state): State<AppState>,
    AppJson(body): AppJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let route = super::resolve_model(&state, body.model.as_deref())?;
    let messages = parse_messages(&body.messages)?;
    let logprobs = body.logprobs.unwrap_or(false);
    if body.top_logprobs.is_some_and(|k| k > 0) && !logprobs {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`top_logprobs` requires `logprobs` to be true",
        ));
    }
    let max_tokens_param = if body.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let sampling = sampling::validate(
        SamplingInput {
            n: body.n,
            temperature: body.temperature,
            top_p: body.top_p,
            max_tokens: body.max_completion_tokens.or(body.max_tokens),
            stop: body.stop,
            seed: body.seed,
            logit_bias: body.logit_bias.as_ref().is_some_and(|b| !b.is_empty()),
            logprobs,
            top_logprobs: body.top_logprobs,
            presence_penalty: body.presence_penalty,
            frequency_penalty: body.frequency_penalty,
        },
        max_tokens_param,
    )?;
    let prompt = Prompt::Chat(messages);
    let admitted = Arc::new(
        state
            .engine
            .admit(&prompt, sampling, route)
            .await
            .map_err(|e| ApiError::admission(e, "messages", max_tokens_param))?,
    );
    let meta = stream::meta(&admitted, "chatcmpl", body.store.unwrap_or(true));
    tracing::Span::current().record("group_id", tracing::field::display(meta.group_id));
    let Prompt::Chat(messages) = prompt else {
        unreachable!("built as a chat above")
    };
    let stream = body.stream.unwrap_or(false);
    let recording = Recording {
        endpoint: flywheel_store::Endpoint::Chat,
        prompt: serde_json::to_value(&messages).expect("messages serialize"),
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
            ChatRender,
            include_usage,
        ))
    } else {
        stream::complete(state, admitted, meta, recording, ChatRender).await
    }
}

fn parse_messages(input: &[InputMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    if input.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must hold at least one message",
        ));
    }
    input
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if matches!(m.role, Role::Tool) && m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_call_id"),
                    "a `tool` message must carry the `tool_call_id` it answers",
                ));
            }
            let param = format!("messages[{i}].content");
            let content =
                match content_text(m.content.as_ref()) {
                    Ok(text) => text.unwrap_or_default(),
                    Err(ContentError::Part(_)) => return Err(ApiError::invalid(
                        param,
                        "only `{\"type\": \"text\", \"text\": ...}` content parts are supported",
                    )),
                    Err(ContentError::NotText) => {
                        return Err(ApiError::invalid(
                            param,
                            "`content` must be a string or a list of text parts",
                        ))
                    }
                };
            Ok(ChatMessage {
                role: m.role.as_str().to_string(),
                content,
            })
        })
        .collect()
}

struct ChatRender;

fn chat_logprobs(entries: Vec<TokenLogprob>) -> ChatLogprobs {
    ChatLogprobs {
        content: entries
            .into_iter()
            .map(|e| ChatTokenLogprob {
                bytes: e.bytes,
                token: e.token,
                logprob: e.logprob,
                top_logprobs: e
                    .top
                    .into_iter()
                    .map(|t| TopLogprob {
                        bytes: t.bytes,
                        token: t.token,
                        logprob: t.logprob,
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl ChatRender {
    fn chunk_of(meta: &Meta, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Value {
        serde_json::to_value(ChatCompletionChunk {
            id: meta.id.clone(),
            object: "chat.completion.chunk",
            created: meta.created,
            model: meta.model.clone(),
            choices,
            usage,
            group_id: meta.stored_group(),
            adapter: meta.adapter,
        })
        .expect("chunk serializes")
    }
}

impl Render for ChatRender {
    fn chunk(
        &self,
        meta: &Meta,
        index: u32,
        text: String,
        logprobs: Vec<TokenLogprob>,
        first: bool,
    ) -> Value {
        let choice = ChunkChoice {
            index,
            delta: Delta {
                role: first.then_some("assistant"),
                content: Some(text),
            },
            logprobs: (!logprobs.is_empty()).then(|| chat_logprobs(logprobs)),
            finish_reason: None,
            response_id: meta.response_id(index),
        };
        Self::chunk_of(meta, vec![choice], None)
    }

    fn finish_chunk(&self, meta: &Meta, index: u32, reason: FinishReason) -> Value {
        let choice = ChunkChoice {
            index,
            delta: Delta {
                role: None,
                content: None,
            },
            logprobs: None,
            finish_reason: Some(reason.as_str().to_string()),
            response_id: meta.response_id(index),
        };
        Self::chunk_of(meta, vec![choice], None)
    }

    fn usage_chunk(&self, meta: &Meta, usage: Usage) -> Value {
        Self::chunk_of(meta, vec![], Some(usage))
    }

    fn body(&self, meta: &Meta, choices: Vec<Choice>, usage: Usage) -> Value {
        serde_json::to_value(ChatCompletion {
            id: meta.id.clone(),
            object: "chat.completion",
            created: meta.created,
            model: meta.model.clone(),
            choices: choices
                .into_iter()
                .map(|c| ChatChoice {
                    index: c.index,
                    response_id: meta.response_id(c.index),
                    message: AssistantMessage {
                        role: "assistant",
                        content: c.text,
                    },
                    logprobs: meta.logprobs.then(|| chat_logprobs(c.logprobs)),
                    finish_reason: c.finish_reason.as_str().to_string(),
                })
                .collect(),
            usage,
            group_id: meta.stored_group(),
            adapter: meta.adapter,
        })
        .expect("completion serializes")
    }
}
