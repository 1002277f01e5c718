//! The model's `config.json` (Hugging Face names) and the family switches read from it.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// The `config.json` fields we use, under their Hugging Face names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for q/k/v/o biases; Qwen2 always has q/k/v biases.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2 only uses its `sliding_window` when this is set.
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

impl Config {
    /// Reads and checks `dir/config.json`.
    ///
    /// # Errors
    /// `Error::Config` for an unreadable file or a feature we do not implement (RoPE scaling, a
    /// non-SiLU activation, heads that do not divide).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("cannot read `{}`: {e}", path.display())))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("`{}`: {e}", path.display())))?;
        config.check()?;
        Ok(config)
    }

    /// Reads and checks a `config.json` already parsed (e.g. one derived from GGUF metadata).
    pub(crate) fn from_json(value: serde_json::Value, origin: &Path) -> Result<Self> {
        let config: Self = serde_json::from_value(value)
            .map_err(|e| Error::Config(format!("`{}`: {e}", origin.display())))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::Config("rope_scaling is not supported".into()));
        }
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(Error::Config(format!("hidden_act `{act}` (only silu)")));
        }
        if self.kv_heads() == 0 || !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(Error::Config(
                "heads not a multiple of key/value heads".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub(super) fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub(super) fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type.as_deref() == Some("qwen2")
    }

    pub(super) fn window(&self) -> Option<usize> {
        match self.model_type.as_deref() {
            Some("qwen2") if self.use_sliding_window != Some(true) => None,
            _ => self.sliding_window,
        }
    }
}
