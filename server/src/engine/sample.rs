//! One sample: one mistral.rs sequence, driven token by token by our own `TokenSampler`.

use candle_core::Tensor;
use mistralrs::{
    Constraint, CustomLogitsProcessor, NormalRequest, Request, RequestMessage, Response,
    SamplingParams,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

use super::detokenize::Detokenizer;
use super::sampler::{SampledToken, SamplerConfig, TokenSampler};
use super::stop::{Scan, StopMatcher};
use super::{Event, FinishReason, FinishedSample, Generation, TokenLogprob};

/// The logits processor that does the sampling: it draws the token, reports it to the request's
/// task, and leaves mistral.rs a row where only that token is possible.
struct SamplingProcessor {
    sampler: Mutex<TokenSampler>,
    tokens: mpsc::UnboundedSender<SampledToken>,
}

impl CustomLogitsProcessor for SamplingProcessor {
    fn apply(&self, logits: &Tensor, _context: &[u32]) -> candle_core::Result<Tensor> {
        let mut row: Vec<f32> = logits.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let token = self
            .sampler
            .lock()
            .expect("sampler lock poisoned")
            .sample(&mut row);
        let mut forced = vec![f32::NEG_INFINITY; row.len()];
        forced[token.id as usize] = 0.0;
        // A closed receiver means the request is over; mistral.rs cancels the sequence when its
        // own response channel fails on the next chunk.
        let _ = self.tokens.send(token);
        Tensor::from_vec(forced, row.len(), logits.device())
    }
}

pub(crate) struct SampleJob<'a> {
    pub generation: &'a Generation,
    pub prompt_ids: &'a [u32],
    pub index: u32,
    pub max_tokens: u32,
    pub stop: &'a [String],
    pub sampler: SamplerConfig,
    pub with_logprobs: bool,
    pub events: &'a mpsc::Sender<Event>,
}

/// Runs one sample to its end, sending text deltas as they complete.
/// Returns `None` when the receiver of `events` went away (the client left).
pub(crate) async fn run(job: SampleJob<'_>) -> anyhow::Result<Option<FinishedSample>> {
    let started = Instant::now();
    let (token_tx, mut tokens) = mpsc::unbounded_channel();
    let processor = Arc::new(SamplingProcessor {
        sampler: Mutex::new(TokenSampler::new(job.sampler.clone())),
        tokens: token_tx,
    });
    let (response_tx, mut responses) = mpsc::channel(64);
    let sampling = SamplingParams {
        max_len: Some(job.max_tokens as usize),
        ..SamplingParams::neutral()
    };
    let request = Request::Normal(Box::new(NormalRequest {
        messages: RequestMessage::CompletionTokens(job.prompt_ids.to_vec()),
        sampling_params: sampling,
        response: response_tx,
        return_logprobs: false,
        is_streaming: true,
        id: 0,
        constraint: Constraint::None,
        suffix: None,
        tools: None,
        tool_choice: None,
        logits_processors: Some(vec![processor]),
        return_raw_logits: false,
        web_search_options: None,
        model_id: None,
        truncate_sequence: false,
    }));
    job.generation
        .model
        .inner()
        .get_sender(None)?
        .send(request)
        .await?;

    let mut detokenizer = Detokenizer::new(&job.generation.tokenizer);
    let mut stop = StopMatcher::new(job.stop.to_vec());
    let mut sample = FinishedSample {
        index: job.index,
        ..FinishedSample::default()
    };
    let mut engine_open = true;
    let finish = loop {
        tokio::select! {
            biased;
            token = tokens.recv() => {
                let Some(token) = token else { anyhow::bail!("the engine dropped the sampler") };
                if sample.token_ids.is_empty() {
                    sample.time_to_first_token = started.elapsed();
                }
                sample.token_ids.push(token.id);
                sample.logprobs.push(token.logprob);
                if job.generation.eos.contains(&token.id) {
                    break FinishReason::Stop;
                }
                let piece = detokenizer.push(token.id).map_err(|e| anyhow::anyhow!("detokenize: {e}"))?;
                let entry = job.with_logprobs.then(|| token_logprob(&job.generation.tokenizer, &token));
                let (text, stopped) = match stop.push(&piece) {
                    Scan::Continue(text) => (text, false),
                    Scan::Stopped(text) => (text, true),
                };
                sample.text.push_str(&text);
                let delta = Event::Delta { index: job.index, text, logprobs: entry.into_iter().collect() };
                if job.events.send(delta).await.is_err() {
                    return Ok(None);
                }
                if stopped {
                    break FinishReason::Stop;
                }
                if sample.token_ids.len() as u32 >= job.max_tokens {
                    break FinishReason::Length;
                }
            }
            response = responses.recv(), if engine_open => match response {
                Some(Response::InternalError(e)) | Some(Response::ValidationError(e)) => anyhow::bail!("engine error: {e}"),
                Some(Response::ModelError(e, _)) | Some(Response::CompletionModelError(e, _)) => anyhow::bail!("model error: {e}"),
                Some(Response::CompletionDone(_)) | Some(Response::Done(_)) | None => {
                    // Every token is reported to us before mistral.rs sends its chunk, so a
                    // finished sequence leaves nothing unread but what `tokens` still holds.
                    engine_open = false;
                    if tokens.is_empty() {
                        anyhow::bail!("the engine ended the sequence after {} tokens", sample.token_ids.len());
                    }
                }
                Some(_) => {}
            },
        }
    };
    let mut finish = finish;
    let mut tail = String::new();
    if finish == FinishReason::Length {
        match stop.push(
            &detokenizer
                .flush()
                .map_err(|e| anyhow::anyhow!("detokenize: {e}"))?,
        ) {
            Scan::Continue(text) => tail.push_str(&text),
            Scan::Stopped(text) => {
                tail.push_str(&text);
                finish = FinishReason::Stop;
            }
        }
    }
    tail.push_str(&stop.finish());
    if !tail.is_empty() {
        sample.text.push_str(&tail);
        let delta = Event::Delta {
            index: job.index,
            text: tail,
            logprobs: vec![],
        };
        if job.events.send(delta).await.is_err() {
            return Ok(None);
        }
    }
    sample.finish_reason = finish;
    sample.latency = started.elapsed();
    Ok(Some(sample))
}

fn token_logprob(tokenizer: &tokenizers::Tokenizer, token: &SampledToken) -> TokenLogprob {
    let entry = |id: u32, logprob: f32, top: Vec<TokenLogprob>| {
        let bytes = super::token_bytes::token_bytes(tokenizer, id);
        TokenLogprob {
            token: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            logprob,
            top,
        }
    };
    let top = token
        .top
        .iter()
        .map(|(id, lp)| entry(*id, *lp, Vec::new()))
        .collect();
    entry(token.id, token.logprob, top)
}
