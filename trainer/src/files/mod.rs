//! The files layer: what the trainer reads and writes on disk. It uses the model layer (whose
//! weights it loads and saves) and nothing above it; `model_files` uses nothing else in the crate.
//!
//! - `base`: a base model's files → [`Model::load`](crate::Model::load): an HF directory or a
//!   llama `.gguf`.
//! - `adapter`: PEFT adapter files, written atomically with a sha256 ([`write_adapter`]).
//! - `model_files`: model directories in the Hugging Face layout mistral.rs loads: a tiny
//!   random-weight Llama for tests ([`write_tiny_llama`]) and GGUF → HF import ([`import_gguf`]).

mod adapter;
mod base;
mod model_files;

pub(crate) use adapter::ADAPTER_CONFIG;
pub use adapter::{read_adapter, write_adapter, AdapterConfig};
#[cfg(test)]
pub(crate) use base::weight_files;
pub use model_files::{
    gguf_tokenizer, import_gguf, write_random_llama, write_tiny_llama, ImportSummary,
    ModelFileError, RandomShape, IMPORT_MARKER, TINY_SPECIAL_TOKENS,
};
