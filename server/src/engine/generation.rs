//! A generation: one loaded `(base, adapter)` pair of the policy, with its tokenizer.
//!
//! Requests clone the `Arc<Generation>` they start on and keep it to the end, so a hot swap never
//! pulls a model out from under a request (DESIGN.md, "Engine and hot-swap").

use anyhow::{bail, Context, Result};
use either::Either;
use mistralrs::{
    IsqType, Model, ModelDType, TextMessageRole, TextMessages, TextModelBuilder, TokenSource,
};
use std::path::Path;
use tokenizers::Tokenizer;

use crate::model_source::ModelSource;

/// A message of a chat prompt, already validated.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(Vec<ChatMessage>),
    Text(String),
}

/// Why a request cannot run; the API turns each into an OpenAI error naming its own parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The admission queue is full.
    #[error("the server is at capacity ({capacity} requests queued); retry later")]
    Overloaded { capacity: usize },
    /// A pinned version that is neither active nor resident here.
    #[error("adapter version {version} is not loaded on this server (loaded: {loaded:?})")]
    NotLoaded { version: i64, loaded: Vec<i64> },
    #[error("cannot tokenize the prompt: {0}")]
    Tokenize(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("This model's maximum context length is {context} tokens. However, your prompt is {prompt} tokens.")]
    PromptTooLong { context: usize, prompt: usize },
    #[error("This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt} in the prompt, {max_tokens} for the completion).", prompt + max_tokens)]
    TooManyTokens {
        context: usize,
        prompt: usize,
        max_tokens: usize,
    },
}

pub struct Generation {
    /// Adapter version; the base model is 0.
    pub version: i64,
    /// The name clients address it by (`model` in requests).
    pub name: String,
    /// The base weights, kept so a swap can load the next adapter onto the same base.
    pub source: ModelSource,
    /// The in-situ quantization applied after the adapter merge (`--quantize`); every generation
    /// of a server is built the same way.
    pub quantize: Option<IsqType>,
    pub(crate) model: Model,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) eos: Vec<u32>,
    pub max_context: usize,
    /// The LoRA name (a vLLM `lora_name`) its adapter was registered under, if any: requests may
    /// name it as their `model` while this generation is loaded, active or resident.
    pub alias: Option<String>,
}

impl Generation {
    /// Loads the base model of `source` with `adapter` (a PEFT LoRA directory) merged in, if any.
    /// `version` is the adapter version it will be reported as (0 = base model).
    pub async fn load(
        source: &ModelSource,
        adapter: Option<&Path>,
        name: String,
        version: i64,
        quantize: Option<IsqType>,
    ) -> Result<Generation> {
        let started = std::time::Instant::now();
        if adapter.is_some() && !matches!(source, ModelSource::HfDir(_)) {
            bail!("LoRA adapters need an HF-format base directory (`flywheel model import` turns a GGUF into one)");
        }
        if let (Some(isq), ModelSource::Gguf(file)) = (quantize, source) {
            bail!(
                "--quantize {isq} applies to full-precision weights; {} is a GGUF, already quantized \
                 (`flywheel model import` turns it into an HF-format directory)",
                file.display()
            );
        }
        let (model, tokenizer, eos) = match source {
            ModelSource::HfDir(dir) => {
                let model = super::loader::load_hf(dir, adapter, quantize)
                    .await
                    .with_context(|| format!("mistral.rs cannot load {}", dir.display()))?;
                let (tokenizer, eos) = hf_tokenizer(dir)?;
                (model, tokenizer, eos)
            }
            ModelSource::Gguf(file) => {
                let model = super::loader::load_gguf(file)
                    .await
                    .with_context(|| format!("mistral.rs cannot load {}", file.display()))?;
                let (tokenizer, eos) = flywheel_trainer::gguf_tokenizer(file)
                    .with_context(|| format!("cannot read the tokenizer of {}", file.display()))?;
                (model, tokenizer, eos)
            }
            ModelSource::HubId(id) => {
                let mut builder = configure(TextModelBuilder::new(id.clone()))
                    .with_token_source(TokenSource::CacheToken);
                if let Some(isq) = quantize {
                    builder = builder.with_isq(isq);
                }
                let model = builder
                    .build()
                    .await
                    .with_context(|| format!("mistral.rs cannot load {id} from the hub"))?;
                let dir = hub_snapshot_dir(id)?;
                let (tokenizer, eos) = hf_tokenizer(&dir)?;
                (model, tokenizer, eos)
            }
        };
        if eos.is_empty() {
            bail!("the model declares no end-of-sequence token");
        }
        let max_context = model.max_sequence_length().ok().flatten().unwrap_or(4096);
        let quantized = quantize.map(|q| q.to_string());
        tracing::info!(%name, version, max_context, quantized, seconds = started.elapsed().as_secs_f32(), "model loaded");
        Ok(Generation {
            version,
            name,
            source: source.clone(),
            quantize,
            model,
            tokenizer,
            eos,
            max_context,
            alias: None,
        })
    }

    /// The prompt's token ids, checked to leave room for at least one generated token.
    ///
    /// # Errors
    /// [`AdmitError::Tokenize`], [`AdmitError::EmptyPrompt`] or [`AdmitError::PromptTooLong`].
    pub async fn prompt_ids(
        self: &std::sync::Arc<Self>,
        prompt: &Prompt,
    ) -> std::result::Result<Vec<u32>, AdmitError> {
        let ids = self
            .tokenize(prompt)
            .await
            .map_err(|e| AdmitError::Tokenize(format!("{e:#}")))?;
        if ids.is_empty() {
            return Err(AdmitError::EmptyPrompt);
        }
        if ids.len() >= self.max_context {
            return Err(AdmitError::PromptTooLong {
                context: self.max_context,
                prompt: ids.len(),
            });
        }
        Ok(ids)
    }

    /// The exact prompt token ids the model will see (chat template applied for chats).
    ///
    /// Runs on its own task: mistral.rs `expect`s the reply channel of a tokenization request to be
    /// open, so a caller dropping the future mid-request would panic its engine thread.
    pub async fn tokenize(self: &std::sync::Arc<Self>, prompt: &Prompt) -> Result<Vec<u32>> {
        let this = self.clone();
        let prompt = prompt.clone();
        tokio::spawn(async move {
            let ids = match prompt {
                Prompt::Chat(messages) => {
                    let mut m = TextMessages::new();
                    for message in messages {
                        m = m.add_message(role_of(&message.role), message.content);
                    }
                    this.model
                        .tokenize(Either::Left(m), None, true, true, None)
                        .await
                }
                Prompt::Text(text) => {
                    this.model
                        .tokenize(Either::Right(text), None, true, false, None)
                        .await
                }
            };
            ids.map_err(|e| anyhow::anyhow!("{e}"))
        })
        .await?
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The end-of-sequence token ids.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }
}

fn configure(builder: TextModelBuilder) -> TextModelBuilder {
    // F32: BF16 matmul is unsupported on CPU and F16 is slower there (research/mistralrs.md §1).
    // Prefix cache off: each sample's prompt is prefilled alone, which keeps decoding reproducible.
    let builder = builder
        .with_token_source(TokenSource::None)
        .with_dtype(ModelDType::F32)
        .with_prefix_cache_n(None)
        .with_max_num_seqs(16);
    if cfg!(feature = "cuda") {
        builder
    } else {
        builder.with_force_cpu()
    }
}

fn role_of(role: &str) -> TextMessageRole {
    match role {
        "system" | "developer" => TextMessageRole::System,
        "user" => TextMessageRole::User,
        "assistant" => TextMessageRole::Assistant,
        "tool" => TextMessageRole::Tool,
        other => TextMessageRole::Custom(other.to_string()),
    }
}

/// `tokenizer.json` plus the end-of-sequence ids declared by the model's configs.
fn hf_tokenizer(dir: &Path) -> Result<(Tokenizer, Vec<u32>)> {
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
        anyhow::anyhow!("cannot load {}: {e}", dir.join("tokenizer.json").display())
    })?;
    let mut eos = Vec::new();
    for file in ["generation_config.json", "config.json"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            let json: serde_json::Value = serde_json::from_str(&text)?;
            match &json["eos_token_id"] {
                serde_json::Value::Number(n) => eos.extend(n.as_u64().map(|v| v as u32)),
                serde_json::Value::Array(a) => {
                    eos.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
                }
                _ => {}
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("tokenizer_config.json")) {
        let json: serde_json::Value = serde_json::from_str(&text)?;
        let token = match &json["eos_token"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            _ => None,
        };
        eos.extend(token.and_then(|t| tokenizer.token_to_id(&t)));
    }
    eos.sort_unstable();
    eos.dedup();
    Ok((tokenizer, eos))
}

/// Where hf-hub keeps a model it downloaded: `$HF_HOME/hub/models--org--name/snapshots/<rev>`.
fn hub_snapshot_dir(id: &str) -> Result<std::path::PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let repo = cache.model(id.to_string());
    let file = repo
        .get("tokenizer.json")
        .with_context(|| format!("{id} has no cached tokenizer.json"))?;
    Ok(file
        .parent()
        .context("cached file without a parent")?
        .to_path_buf())
}
