//! Model-file tests: the tiny fixture model and GGUF import, through the public API only.
//!
//! One test binary (see STYLE.md, zero2prod's `tests/api/main.rs`).

mod gguf_import;
mod tiny_llama;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

/// Reads every tensor of `dir/model.safetensors`.
pub fn load_weights(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

/// Parses `dir/file` as JSON.
pub fn read_json(dir: &Path, file: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
}
