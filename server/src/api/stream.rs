//! Running an admitted request for either completion endpoint: collect or stream its samples,
//! record the group, and shape the output through the endpoint's [`Render`].

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use flywheel_store::{Endpoint, GroupKind, NewGroup, NewResponse};
use futures::Stream;
use serde::Serialize;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::engine::{Admitted, Event, FinishReason, FinishedSample, TokenLogprob};
use crate::metrics::ServedBy;

/// Identifies one completion call in every chunk and body it produces.
pub(crate) struct Meta {
    pub id: String,
    pub created: i64,
    pub model: String,
    pub group_id: Uuid,
    pub response_ids: Vec<Uuid>,
    pub adapter: i64,
    /// Whether the client asked for log-probs.
    pub logprobs: bool,
    /// Whether the samples are stored (the request's `store`).
    pub stored: bool,
}

impl Meta {
    /// The group id clients see: none when nothing is stored under it.
    pub fn stored_group(&self) -> Option<Uuid> {
        self.stored.then_some(self.group_id)
    }

    pub fn response_id(&self, index: u32) -> Option<Uuid> {
        self.stored.then(|| self.response_ids[index as usize])
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One server-sent event of a streamed completion, as the OpenAPI document describes each event
/// of a `text/event-stream` body. The stream is never written through this type.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    /// A JSON chunk (`ChatCompletionChunk` for chat, `Completion` for completions), an
    /// `ErrorBody` when generation fails after the stream began, and last the literal `[DONE]`.
    pub data: String,
}

/// One finished choice as both endpoints render it.
pub(crate) struct Choice {
    pub index: u32,
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish_reason: FinishReason,
}

/// How an endpoint shapes its output (OpenAI's chat and legacy completion formats differ).
pub(crate) trait Render: Send + 'static {
    fn chunk(
        &self,
        meta: &Meta,
        index: u32,
        text: String,
        logprobs: Vec<TokenLogprob>,
        first: bool,
    ) -> Value;
    fn finish_chunk(&self, meta: &Meta, index: u32, reason: FinishReason) -> Value;
    fn usage_chunk(&self, meta: &Meta, usage: Usage) -> Value;
    fn body(&self, meta: &Meta, choices: Vec<Choice>, usage: Usage) -> Value;
}

/// What the store keeps about the call besides the samples.
pub(crate) struct Recording {
    pub endpoint: Endpoint,
    pub prompt: Value,
    pub params: Value,
    pub user: Option<String>,
}

pub(crate) fn meta(admitted: &Admitted, id_prefix: &str, stored: bool) -> Meta {
    let group_id = Uuid::now_v7();
    Meta {
        id: format!("{id_prefix}-{}", group_id.simple()),
        created: Utc::now().timestamp(),
        model: admitted.generation.name.clone(),
        group_id,
        response_ids: (0..admitted.sampling.n).map(|_| Uuid::now_v7()).collect(),
        adapter: admitted.generation.version,
        logprobs: admitted.sampling.logprobs,
        stored,
    }
}

/// Runs every sample to its end, records the group, and returns the whole body.
pub(crate) async fn complete(
    state: AppState,
    admitted: Arc<Admitted>,
    meta: Meta,
    recording: Recording,
    render: impl Render,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let n = admitted.sampling.n as usize;
    let mut events = state.engine.start(admitted.clone());
    let mut logprobs: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
    let mut samples = Vec::with_capacity(n);
    while let Some(event) = events.recv().await {
        match event {
            Event::Delta {
                index,
                logprobs: entries,
                ..
            } => logprobs[index as usize].extend(entries),
            Event::Finished(sample) => samples.push(sample),
            Event::Failed(message) => return Err(ApiError::Internal(anyhow::anyhow!(message))),
        }
    }
    if samples.len() != n {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the engine stopped after {} of {n} samples",
            samples.len()
        )));
    }
    let usage = record(&state, &admitted, &meta, recording, &samples, started).await?;
    let choices = samples
        .into_iter()
        .zip(logprobs)
        .map(|(s, lp)| Choice {
            index: s.index,
            text: s.text,
            logprobs: lp,
            finish_reason: s.finish_reason,
        })
        .collect();
    let body = render.body(&meta, choices, usage);
    let mut response = axum::Json(body).into_response();
    response.extensions_mut().insert(ServedBy(meta.adapter));
    Ok(response)
}

/// Streams the samples as server-sent events; the group is recorded before `data: [DONE]`.
pub(crate) fn stream(
    state: AppState,
    admitted: Arc<Admitted>,
    meta: Meta,
    recording: Recording,
    render: impl Render,
    include_usage: bool,
) -> Response {
    let adapter = meta.adapter;
    let events = events_stream(state, admitted, meta, recording, render, include_usage);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    response.extensions_mut().insert(ServedBy(adapter));
    response
}

fn events_stream(
    state: AppState,
    admitted: Arc<Admitted>,
    meta: Meta,
    recording: Recording,
    render: impl Render,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        let started = Instant::now();
        let n = admitted.sampling.n as usize;
        let mut events = state.engine.start(admitted.clone());
        let mut started_choices = vec![false; n];
        let mut samples = Vec::with_capacity(n);
        let mut failure = None;
        while let Some(event) = events.recv().await {
            match event {
                Event::Delta { index, text, logprobs } => {
                    let first = !std::mem::replace(&mut started_choices[index as usize], true);
                    if text.is_empty() && logprobs.is_empty() && !first {
                        continue;
                    }
                    yield Ok(json_event(&render.chunk(&meta, index, text, logprobs, first)));
                }
                Event::Finished(sample) => {
                    if !std::mem::replace(&mut started_choices[sample.index as usize], true) {
                        yield Ok(json_event(&render.chunk(&meta, sample.index, String::new(), vec![], true)));
                    }
                    yield Ok(json_event(&render.finish_chunk(&meta, sample.index, sample.finish_reason)));
                    samples.push(sample);
                }
                Event::Failed(message) => {
                    failure = Some(ApiError::Internal(anyhow::anyhow!(message)));
                    break;
                }
            }
        }
        if failure.is_none() && samples.len() != n {
            failure = Some(ApiError::Internal(anyhow::anyhow!("the engine stopped after {} of {n} samples", samples.len())));
        }
        if failure.is_none() {
            match record(&state, &admitted, &meta, recording, &samples, started).await {
                Ok(usage) if include_usage => yield Ok(json_event(&render.usage_chunk(&meta, usage))),
                Ok(_) => {}
                Err(e) => failure = Some(e),
            }
        }
        if let Some(error) = failure {
            if let ApiError::Internal(cause) = &error {
                tracing::error!(error.cause_chain = ?cause, "streamed request failed");
            }
            yield Ok(json_event(&serde_json::to_value(error.body()).unwrap_or_default()));
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    }
}

fn json_event(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

/// A finished sample as the store keeps it; `adapter_version` only when not the group's.
pub(crate) fn new_response(
    id: Uuid,
    index: i32,
    s: &FinishedSample,
    adapter_version: Option<i64>,
) -> NewResponse {
    NewResponse {
        id,
        index,
        prompt: None,
        text: s.text.clone(),
        token_ids: s.token_ids.clone(),
        logprobs: s.logprobs.clone(),
        finish_reason: s.finish_reason.as_str().to_string(),
        completion_tokens: s.token_ids.len() as i64,
        latency_ms: s.latency.as_millis() as i64,
        adapter_version,
        variant: None,
        prompt_token_ids: None,
    }
}

/// Stores the call as one group (kind `samples`) unless the client said `store: false`, and
/// returns its usage.
async fn record(
    state: &AppState,
    admitted: &Admitted,
    meta: &Meta,
    recording: Recording,
    samples: &[FinishedSample],
    started: Instant,
) -> Result<Usage, ApiError> {
    let prompt_tokens = admitted.prompt_ids.len() as u64;
    let completion_tokens: u64 = samples.iter().map(|s| s.token_ids.len() as u64).sum();
    if meta.stored {
        let mut params = recording.params;
        params["max_tokens_effective"] = admitted.max_tokens.into();
        let group = NewGroup {
            id: meta.group_id,
            kind: GroupKind::Samples,
            endpoint: recording.endpoint,
            model: meta.model.clone(),
            adapter_version: meta.adapter,
            prompt: recording.prompt,
            params,
            seed: Some(admitted.seed),
            user: recording.user,
            prompt_tokens: prompt_tokens as i64,
            prompt_token_ids: Some(admitted.prompt_ids.clone()),
            latency_ms: started.elapsed().as_millis() as i64,
            created_at: Utc::now(),
            responses: samples
                .iter()
                .map(|s| new_response(meta.response_ids[s.index as usize], s.index as i32, s, None))
                .collect(),
        };
        state.store.insert_group(&group).await?;
    }
    state
        .metrics
        .record_tokens(meta.adapter, prompt_tokens, completion_tokens);
    if let Some(first) = samples.iter().find(|s| s.index == 0) {
        state
            .metrics
            .record_time_to_first_token(meta.adapter, first.time_to_first_token.as_secs_f64());
    }
    Ok(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    })
}
