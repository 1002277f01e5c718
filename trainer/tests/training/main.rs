//! Trainer tests through the public API: log-probs, adapters on disk, a short training run, and the
//! real SmolLM2 when its imported directory is present.
//!
//! One test binary (see STYLE.md, zero2prod's `tests/api/main.rs`).

mod adapter_files;
mod logprobs;
mod smollm2;
mod training_run;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use flywheel_trainer::{write_tiny_llama, LoraConfig, LoraWeights, Model};

/// A tiny model directory (seed 7) and the model loaded from it with LoRA r = 4, α = 8.
pub fn tiny(dtype: DType) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path(), 7).unwrap();
    let model = load(dir.path(), dtype);
    (dir, model)
}

pub fn load(dir: &Path, dtype: DType) -> Model {
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    };
    Model::load(dir, lora, dtype, &Device::Cpu).unwrap()
}

/// LoRA values drawn from U(−0.1, 0.1) by a fixed linear congruential sequence.
pub fn some_adapter(model: &Model, seed: u64) -> LoraWeights {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.2
    };
    let rank = model.lora_config().rank;
    let mut tensors = Vec::new();
    for m in model.lora_modules() {
        let mut t = |r: usize, c: usize| {
            let v: Vec<f32> = (0..r * c).map(|_| next() as f32).collect();
            Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap()
        };
        tensors.push((t(rank, m.in_dim), t(m.out_dim, rank)));
    }
    LoraWeights::from_pairs(tensors)
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}
