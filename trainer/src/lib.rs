//! Flywheel's trainer: turns judged groups into LoRA adapters that the server hot-swaps in.
//!
//! # Layout
//! - `model_files`: model directories on disk in the Hugging Face layout mistral.rs loads: a tiny
//!   random-weight Llama for tests ([`write_tiny_llama`]) and GGUF → HF import ([`import_gguf`]).

pub mod model_files;

pub use model_files::{
    gguf_tokenizer, import_gguf, write_tiny_llama, ImportSummary, ModelFileError, IMPORT_MARKER,
    TINY_SPECIAL_TOKENS,
};
