//! The engine: admission, the active generation of the policy, and sampling through mistral.rs.
//!
//! Only validated requests reach it ([`Sampling`] comes out of `api::sampling::validate`). Each
//! request is admitted into a bounded queue (full ⇒ 503), pins the generation that is active when
//! it starts, and runs its `n` samples one after another. On CPU at most `decode_slots` (default 1)
//! samples decode at once: mistral.rs 0.8.1's CPU attention mixes up sequences that share a decode
//! step (research/mistralrs.md §6), so sequences never share one there.

pub mod adapter_fit;
mod detokenize;
pub mod follow;
mod generation;
pub mod loader;
mod sample;
pub mod sampler;
pub mod stop;
pub mod swap;
mod token_bytes;

pub use generation::{AdmitError, ChatMessage, Generation, Prompt};

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;
use sampler::SamplerConfig;

/// Sampling parameters after validation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sampling {
    pub n: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    /// Whether the client asked for log-probs (they are always recorded in the store).
    pub logprobs: bool,
    pub top_logprobs: usize,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinishReason {
    #[default]
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A generated token as the client sees it in `logprobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's bytes as text (lossy when it holds part of a character).
    pub token: String,
    /// The token's exact bytes.
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely alternatives at this position (their own `top` is empty).
    pub top: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, Default)]
pub struct FinishedSample {
    pub index: u32,
    pub text: String,
    /// Every sampled token, the end-of-sequence token included when it ended the sample.
    pub token_ids: Vec<u32>,
    /// Natural log-probability of each of `token_ids` under the sampling distribution.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
    pub latency: Duration,
    pub time_to_first_token: Duration,
}

/// What a running request reports, in order: deltas of each sample, then its end.
#[derive(Debug)]
pub enum Event {
    Delta {
        index: u32,
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Finished(FinishedSample),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Requests admitted (queued or running) before new ones get 503.
    pub queue_capacity: usize,
    /// Samples decoding at once. 1 on CPU (see the module docs).
    pub decode_slots: usize,
    /// Generations kept loaded besides the active one (candidates), memory permitting.
    pub max_resident: usize,
    /// The share of requests that do not name a version which go to the newest resident
    /// candidate (the canary), in `[0, 1]`.
    pub canary_share: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            queue_capacity: 64,
            decode_slots: 1,
            max_resident: 1,
            canary_share: 0.0,
        }
    }
}

/// Which generation a request runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The active one, or the canary for `canary_share` of requests.
    Default,
    /// This version, if it is loaded here (active or resident).
    Pinned(i64),
}

/// The version the store says is active, as this server last read it, and why it does not serve
/// it (`/ready` reports both).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// `None` until the follower's first look at the store.
    pub version: Option<i64>,
    /// The last failure to load it here, while it is not served.
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    /// The generation new requests start on. A std `RwLock`: it is held only to clone or
    /// replace the `Arc`, never across an await.
    active: RwLock<Arc<Generation>>,
    /// Other loaded generations by version (candidates), changed only by [`swap`]; a std
    /// `RwLock` held only to clone or edit the map.
    resident: RwLock<BTreeMap<i64, Arc<Generation>>>,
    admission: Arc<Semaphore>,
    decode: Arc<Semaphore>,
    /// Held by [`swap`] while it moves the engine to another generation, so two swaps never hold
    /// three models at once and a deliberate activation is not interleaved with the follower.
    swapping: tokio::sync::Mutex<()>,
    /// What the follower last learned; a std `RwLock`, never held across an await.
    target: RwLock<Target>,
    config: EngineConfig,
    metrics: Metrics,
}

/// A request that passed admission: it holds its queue slot until dropped.
pub struct Admitted {
    pub generation: Arc<Generation>,
    pub prompt_ids: Vec<u32>,
    pub sampling: Sampling,
    pub max_tokens: u32,
    /// The seed actually used (drawn at random when the client sent none), so every stored
    /// sample can be reproduced.
    pub seed: i64,
    _slot: QueueSlot,
}

struct QueueSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Metrics,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.metrics.queue_depth.dec();
    }
}

impl Engine {
    pub fn new(generation: Generation, config: EngineConfig, metrics: Metrics) -> Self {
        let inner = Inner {
            active: RwLock::new(Arc::new(generation)),
            resident: RwLock::new(BTreeMap::new()),
            admission: Arc::new(Semaphore::new(config.queue_capacity)),
            decode: Arc::new(Semaphore::new(config.decode_slots.max(1))),
            swapping: tokio::sync::Mutex::new(()),
            target: RwLock::new(Target::default()),
            config,
            metrics,
        };
        Engine {
            inner: Arc::new(inner),
        }
    }

    pub fn active(&self) -> Arc<Generation> {
        self.inner
            .active
            .read()
            .expect("active generation lock poisoned")
            .clone()
    }

    /// Makes `next` the generation new requests start on; running requests finish on theirs.
    /// Only [`swap`] calls it.
    fn replace(&self, next: Arc<Generation>) -> Arc<Generation> {
        std::mem::replace(
            &mut *self.inner.active.write().expect("lock poisoned"),
            next,
        )
    }

    /// The versions loaded besides the active one, with their aliases, lowest first.
    pub fn resident(&self) -> Vec<(i64, Option<String>)> {
        self.residents()
            .iter()
            .map(|(v, g)| (*v, g.alias.clone()))
            .collect()
    }

    pub(crate) fn residents(&self) -> BTreeMap<i64, Arc<Generation>> {
        self.inner.resident.read().expect("lock poisoned").clone()
    }

    /// Replaces the resident set. Only [`swap`] calls it.
    fn set_residents(&self, residents: BTreeMap<i64, Arc<Generation>>) {
        *self.inner.resident.write().expect("lock poisoned") = residents;
    }

    /// The generation of `version` if it is loaded here, active or resident.
    pub fn loaded(&self, version: i64) -> Option<Arc<Generation>> {
        let active = self.active();
        if active.version == version {
            return Some(active);
        }
        self.inner
            .resident
            .read()
            .expect("lock poisoned")
            .get(&version)
            .cloned()
    }

    /// The loaded version called `alias` (a vLLM `lora_name`): the active one (a loaded LoRA
    /// that was promoted keeps its name) or a resident one.
    pub fn version_of_alias(&self, alias: &str) -> Option<i64> {
        let active = self.active();
        if active.alias.as_deref() == Some(alias) {
            return Some(active.version);
        }
        self.inner
            .resident
            .read()
            .expect("lock poisoned")
            .iter()
            .find(|(_, g)| g.alias.as_deref() == Some(alias))
            .map(|(v, _)| *v)
    }

    /// The generation a request on `route` starts on.
    fn pick(&self, route: Route) -> Result<Arc<Generation>, AdmitError> {
        match route {
            Route::Pinned(version) => self.loaded(version).ok_or_else(|| AdmitError::NotLoaded {
                version,
                loaded: std::iter::once(self.active().version)
                    .chain(self.resident().into_iter().map(|(v, _)| v))
                    .collect(),
            }),
            Route::Default => {
                let share = self.inner.config.canary_share;
                if share > 0.0 && rand::random::<f64>() < share {
                    let canary = self.inner.resident.read().expect("lock poisoned");
                    if let Some((_, newest)) = canary.iter().next_back() {
                        return Ok(newest.clone());
                    }
                }
                Ok(self.active())
            }
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The version the store asks this server to serve, and why it does not serve it, if so.
    pub fn target(&self) -> Target {
        self.inner.target.read().expect("lock poisoned").clone()
    }

    /// Records what the follower last learned (see [`Engine::target`]).
    pub fn set_target(&self, target: Target) {
        *self.inner.target.write().expect("lock poisoned") = target;
    }

    /// Takes a queue slot, pins the generation `route` names, tokenizes and checks the prompt
    /// length.
    ///
    /// # Errors
    /// [`AdmitError`]: a full queue, a version not loaded here, or a prompt (with `max_tokens`)
    /// that does not fit.
    pub async fn admit(
        &self,
        prompt: &Prompt,
        sampling: Sampling,
        route: Route,
    ) -> Result<Admitted, AdmitError> {
        let permit = self
            .inner
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| AdmitError::Overloaded {
                capacity: self.inner.config.queue_capacity,
            })?;
        self.inner.metrics.queue_depth.inc();
        let slot = QueueSlot {
            _permit: permit,
            metrics: self.inner.metrics.clone(),
        };
        let generation = self.pick(route)?;
        let prompt_ids = generation.prompt_ids(prompt).await?;
        let (context, prompt_len) = (generation.max_context, prompt_ids.len());
        let room = (context - prompt_len) as u32;
        let max_tokens = match sampling.max_tokens {
            Some(m) if m > room => {
                return Err(AdmitError::TooManyTokens {
                    context,
                    prompt: prompt_len,
                    max_tokens: m as usize,
                })
            }
            Some(m) => m,
            None => room,
        };
        let seed = sampling
            .seed
            .unwrap_or_else(|| rand::random::<i64>() & i64::MAX);
        Ok(Admitted {
            generation,
            prompt_ids,
            sampling,
            max_tokens,
            seed,
            _slot: slot,
        })
    }

    /// Runs the admitted request's samples on a task of their own, reporting through the channel.
    /// The task stops early if the receiver is dropped.
    pub fn start(&self, admitted: Arc<Admitted>) -> mpsc::Receiver<Event> {
        let (events, receiver) = mpsc::channel(256);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let a = &*admitted;
            for index in 0..a.sampling.n {
                let Ok(_decode) = inner.decode.clone().acquire_owned().await else {
                    return;
                };
                inner.metrics.decoding.inc();
                let job = sample::SampleJob {
                    generation: &a.generation,
                    prompt_ids: &a.prompt_ids,
                    index,
                    max_tokens: a.max_tokens,
                    stop: &a.sampling.stop,
                    sampler: SamplerConfig {
                        temperature: a.sampling.temperature,
                        top_p: a.sampling.top_p,
                        presence_penalty: a.sampling.presence_penalty,
                        frequency_penalty: a.sampling.frequency_penalty,
                        top_logprobs: a.sampling.top_logprobs,
                        seed: sample_seed(a.seed, index),
                    },
                    with_logprobs: a.sampling.logprobs,
                    events: &events,
                };
                let outcome = sample::run(job).await;
                inner.metrics.decoding.dec();
                let event = match outcome {
                    Ok(Some(sample)) => Event::Finished(sample),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!(error.cause_chain = ?e, "sample failed");
                        Event::Failed(e.to_string())
                    }
                };
                let failed = matches!(event, Event::Failed(_));
                if events.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        receiver
    }
}

/// Sample `i` of a request with seed `s` draws from its own stream, so `n` samples differ while the
/// request as a whole stays reproducible.
fn sample_seed(seed: i64, index: u32) -> u64 {
    (seed as u64).wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
