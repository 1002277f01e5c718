//! LoRA adapters on disk in PEFT format, the layout mistral.rs 0.8.1 merges at load
//! (`research/trainer.md` §3).
//!
//! A directory holds `adapter_config.json` (`peft_type: LORA`, `r`, `lora_alpha`, `target_modules`, …)
//! and `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` [r, in] and
//! `…lora_B.weight` [out, r], F32. [`write_adapter`] writes into a temporary sibling directory and
//! renames it into place, so a crash never leaves half an adapter under the final name.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{LoraModule, LoraWeights, Model};
use crate::{Error, Result};

pub use flywheel_store::{
    PEFT_CONFIG_FILE as ADAPTER_CONFIG, PEFT_WEIGHTS_FILE as ADAPTER_WEIGHTS,
};
const KEY_PREFIX: &str = "base_model.model.";

/// `adapter_config.json`, with the fields PEFT writes for a plain LoRA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub task_type: String,
    pub base_model_name_or_path: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    pub bias: String,
    pub fan_in_fan_out: bool,
    pub use_rslora: bool,
    pub inference_mode: bool,
}

/// Writes `weights` (the model's LoRA) as a PEFT adapter at `dir`, which must not exist yet.
///
/// # Returns
/// The sha256 (hex) of `adapter_config.json`'s bytes followed by `adapter_model.safetensors`'s.
///
/// # Errors
/// `Error::AdapterIo` when `dir` exists or a write fails; `Error::Shape` when `weights` does not
/// match the model's modules.
pub fn write_adapter(
    dir: &Path,
    model: &Model,
    weights: &LoraWeights,
    base_model: &str,
) -> Result<String> {
    let modules = model.lora_modules();
    if weights.pairs.len() != modules.len() {
        return Err(Error::Shape(format!(
            "{} LoRA pairs for {} modules",
            weights.pairs.len(),
            modules.len()
        )));
    }
    if dir.exists() {
        let exists =
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "adapters are immutable");
        return Err(Error::adapter_io(dir)(exists));
    }
    let lora = model.lora_config();
    let config = AdapterConfig {
        peft_type: "LORA".into(),
        task_type: "CAUSAL_LM".into(),
        base_model_name_or_path: base_model.into(),
        r: lora.rank,
        lora_alpha: lora.alpha,
        lora_dropout: lora.dropout,
        target_modules: lora.target_modules.clone(),
        bias: "none".into(),
        fan_in_fan_out: false,
        use_rslora: false,
        inference_mode: true,
    };
    let mut tensors = HashMap::new();
    for (m, (a, b)) in modules.iter().zip(&weights.pairs) {
        if a.dims() != [lora.rank, m.in_dim] || b.dims() != [m.out_dim, lora.rank] {
            return Err(Error::Shape(format!(
                "`{}`: A {:?} and B {:?}, expected [{}, {}] and [{}, {}]",
                m.name,
                a.dims(),
                b.dims(),
                lora.rank,
                m.in_dim,
                m.out_dim,
                lora.rank
            )));
        }
        let f32_cpu = |t: &Tensor| {
            t.to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .contiguous()
        };
        tensors.insert(format!("{KEY_PREFIX}{}.lora_A.weight", m.name), f32_cpu(a)?);
        tensors.insert(format!("{KEY_PREFIX}{}.lora_B.weight", m.name), f32_cpu(b)?);
    }
    // A fresh hidden directory next to `dir` (same filesystem, so the final rename is atomic);
    // dropped (removed) if anything below fails.
    let tmp = temp_sibling(dir)?;
    let sha = write_files(tmp.path(), &config, &tensors)?;
    fs::rename(tmp.path(), dir).map_err(Error::adapter_io(dir))?;
    // The directory now lives under its final name; nothing is left for the guard to remove.
    let _ = tmp.keep();
    if let Some(parent) = dir.parent() {
        // Best effort: make the rename itself durable.
        let _ = fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(sha)
}

fn write_files(
    tmp: &Path,
    config: &AdapterConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<String> {
    let config_bytes = serde_json::to_vec_pretty(config).expect("the adapter config serialises");
    let config_path = tmp.join(ADAPTER_CONFIG);
    write_synced(&config_path, &config_bytes)?;
    let weights_path = tmp.join(ADAPTER_WEIGHTS);
    candle_core::safetensors::save(tensors, &weights_path)
        .map_err(|e| Error::BadAdapter(format!("cannot write the weights: {e}")))?;
    let weights_bytes = fs::read(&weights_path).map_err(Error::adapter_io(&weights_path))?;
    fs::File::open(&weights_path)
        .and_then(|f| f.sync_all())
        .map_err(Error::adapter_io(&weights_path))?;
    let mut sha = Sha256::new();
    sha.update(&config_bytes);
    sha.update(&weights_bytes);
    Ok(hex::encode(sha.finalize()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(Error::adapter_io(path))?;
    file.write_all(bytes).map_err(Error::adapter_io(path))?;
    file.sync_all().map_err(Error::adapter_io(path))
}

/// A hidden temporary directory beside `dir`, named after it; its name never looks like an adapter.
fn temp_sibling(dir: &Path) -> Result<tempfile::TempDir> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(Error::adapter_io(parent))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("adapter");
    tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(parent)
        .map_err(Error::adapter_io(parent))
}

/// Reads a PEFT adapter written for `model`'s modules, in the model's dtype and device.
///
/// # Errors
/// `Error::AdapterIo` for unreadable files, `Error::BadAdapter` when its rank, alpha or tensors do not
/// match the model's LoRA.
pub fn read_adapter(dir: &Path, model: &Model) -> Result<(AdapterConfig, LoraWeights)> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let text = fs::read_to_string(&config_path).map_err(Error::adapter_io(&config_path))?;
    let config: AdapterConfig = serde_json::from_str(&text)
        .map_err(|e| Error::BadAdapter(format!("`{}`: {e}", config_path.display())))?;
    let lora = model.lora_config();
    if config.r != lora.rank || config.lora_alpha != lora.alpha {
        return Err(Error::BadAdapter(format!(
            "adapter r = {}, alpha = {}; model LoRA r = {}, alpha = {}",
            config.r, config.lora_alpha, lora.rank, lora.alpha
        )));
    }
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let bytes = fs::read(&weights_path).map_err(Error::adapter_io(&weights_path))?;
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, model.device())
        .map_err(|e| Error::BadAdapter(format!("`{}`: {e}", weights_path.display())))?;
    let mut pairs = Vec::with_capacity(model.lora_modules().len());
    for m in model.lora_modules() {
        let a = take(&mut tensors, m, "lora_A", (lora.rank, m.in_dim))?;
        let b = take(&mut tensors, m, "lora_B", (m.out_dim, lora.rank))?;
        pairs.push((
            a.to_dtype(model.lora_dtype())?,
            b.to_dtype(model.lora_dtype())?,
        ));
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(Error::BadAdapter(format!(
            "tensor `{extra}` is for no module of this model"
        )));
    }
    Ok((config, LoraWeights { pairs }))
}

fn take(
    tensors: &mut HashMap<String, Tensor>,
    module: &LoraModule,
    which: &str,
    dims: (usize, usize),
) -> Result<Tensor> {
    let key = format!("{}.{which}.weight", module.name);
    let t = tensors
        .remove(&format!("{KEY_PREFIX}{key}"))
        .or_else(|| tensors.remove(&key))
        .ok_or_else(|| Error::BadAdapter(format!("tensor `{KEY_PREFIX}{key}` is missing")))?;
    if t.dims() != [dims.0, dims.1] {
        return Err(Error::BadAdapter(format!(
            "`{key}` is {:?}, expected {dims:?}",
            t.dims()
        )));
    }
    Ok(t)
}
