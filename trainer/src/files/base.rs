//! A base model's files → [`Model`]: an HF directory (`config.json` + `model*.safetensors`,
//! memory-mapped) or a llama `.gguf` file, dequantized in memory through `model_files`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::model_files::read_gguf_weights;
use crate::model::{Config, LoraConfig, Model};
use crate::{Error, Result};

impl Model {
    /// Loads `path` in `dtype`, with a fresh adapter: `A` seeded by `lora.seed`, `B` zero. `path`
    /// is an HF directory (`config.json` + `model*.safetensors`, memory-mapped) or a llama `.gguf`
    /// file, dequantized in memory (the weights `flywheel model import` would write).
    ///
    /// # Errors
    /// `Error::Config` for an unsupported config or missing files, `Error::Candle` for a tensor with
    /// the wrong shape, `Error::Setting` for rank 0.
    pub fn load(path: &Path, lora: LoraConfig, dtype: DType, device: &Device) -> Result<Self> {
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Self::load_gguf(path, lora, dtype, device);
        }
        let dir = path;
        let config = Config::from_dir(dir)?;
        let files = weight_files(dir)?;
        // SAFETY: the files are only read; a concurrent writer would be a broken model directory,
        // which `import_gguf` avoids by writing to a temporary directory first.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        Self::new(config, lora, vb)
    }

    fn load_gguf(gguf: &Path, lora: LoraConfig, dtype: DType, device: &Device) -> Result<Self> {
        let (config, weights) = read_gguf_weights(gguf)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", gguf.display())))?;
        let config = Config::from_json(config, gguf)?;
        let vb = VarBuilder::from_tensors(weights, dtype, device);
        Self::new(config, lora, vb)
    }
}

/// The safetensors files of an HF model directory (`model.safetensors` or the shards).
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir)
        .map_err(|e| Error::Config(format!("cannot list `{}`: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("model"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Config(format!(
            "no model*.safetensors in `{}`",
            dir.display()
        )));
    }
    Ok(files)
}
