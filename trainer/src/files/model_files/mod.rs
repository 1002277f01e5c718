//! Model directories on disk: the Hugging Face layout mistral.rs 0.8.1 loads, and the tools that write one.
//!
//! A model directory holds `config.json`, `model.safetensors` (F32), `tokenizer.json`,
//! `tokenizer_config.json` (with the chat template) and `generation_config.json`; see
//! `research/mistralrs.md` §1 for what mistral.rs reads from each.
//!
//! - [`write_tiny_llama`] writes a seeded random-weight Llama, the fixture for tests;
//!   [`write_random_llama`] the same at a real model's shape ([`RandomShape`]) for benchmarks.
//! - [`import_gguf`] converts a llama.cpp GGUF (llama architecture, byte-level BPE vocabulary) into one.

mod byte_level;
mod gguf_import;
mod gguf_meta;
mod gguf_tokenizer;
mod hf_dir;
mod safetensors_out;
mod tiny;

use std::path::PathBuf;

pub(crate) use gguf_import::read_gguf_weights;
pub use gguf_import::{import_gguf, ImportSummary, IMPORT_MARKER};
pub use gguf_tokenizer::gguf_tokenizer;
pub use tiny::{write_random_llama, write_tiny_llama, RandomShape, TINY_SPECIAL_TOKENS};

/// What can go wrong while reading or writing a model directory.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("I/O error at `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the GGUF file")]
    Gguf(#[source] candle_core::Error),
    #[error("GGUF metadata key `{0}` is missing")]
    MissingMetadata(String),
    #[error("GGUF metadata key `{key}` is invalid: {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("GGUF tensor `{0}` is missing")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("cannot build the tokenizer: {0}")]
    Tokenizer(String),
    #[error("cannot encode JSON for `{file}`")]
    Json {
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "`{0}` exists and is not empty; only an empty directory or a previous import \
         (one holding `{IMPORT_MARKER}`) is replaced"
    )]
    OutDirInUse(PathBuf),
}

pub type Result<T, E = ModelFileError> = std::result::Result<T, E>;

impl ModelFileError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn bad(key: &str, reason: impl Into<String>) -> Self {
        Self::BadMetadata {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<candle_core::Error> for ModelFileError {
    fn from(e: candle_core::Error) -> Self {
        Self::Gguf(e)
    }
}
