//! Building mistral.rs models from local files: an HF-format base directory, optionally with a
//! PEFT LoRA adapter merged in and then quantized in situ (`--quantize`), and GGUF files.
//!
//! Everything goes through mistral.rs's low-level `Loader::load_model_from_path` with paths we
//! build ourselves, because its builders resolve adapter ids through the hub even for local
//! directories (research/mistralrs.md §2). mistral.rs also records applied LoRAs in a thread-local
//! list it never clears, so a later load on the same thread would silently stack them: every load
//! here clears that list before and after.

use anyhow::{bail, Context, Result};
use mistralrs::core::{
    AdapterPaths, GGUFLoaderBuilder, GGUFSpecificConfig, LocalModelPaths, LoraAdapterPaths,
    MistralRsBuilder, ModelPaths, NormalLoaderBuilder, NormalSpecificConfig, Pipeline,
};
use mistralrs::{
    AutoDeviceMapParams, DefaultSchedulerMethod, DeviceMapSetting, IsqType, Model, ModelDType,
    SchedulerConfig, TokenSource,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sequences one engine may hold; decoding concurrency is bounded by the engine's decode slots.
const MAX_SEQS: usize = 16;

type SharedPipeline = Arc<tokio::sync::Mutex<dyn Pipeline + Send + Sync>>;

/// `--quantize`: `none` (serve full precision) or an in-situ quantization type mistral.rs knows
/// (`q8_0`, `q4_0`, `q4k`, `q6k`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quantize(pub Option<IsqType>);

impl std::str::FromStr for Quantize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "f32" => Ok(Quantize(None)),
            other => mistralrs::parse_isq_value(other, None).map(|q| Quantize(Some(q))),
        }
    }
}

impl std::fmt::Display for Quantize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(q) => write!(f, "{q}"),
            None => f.write_str("none"),
        }
    }
}

/// Loads `base` (an HF-format directory) with `adapter` (a PEFT directory) merged in, if any,
/// then quantized to `quantize`: mistral.rs merges a LoRA only into full-precision weights, so
/// the merge comes first and quantization after it (research/mistralrs.md §LoRA).
pub async fn load_hf(
    base: &Path,
    adapter: Option<&Path>,
    quantize: Option<IsqType>,
) -> Result<Model> {
    let (base, adapter) = (base.to_path_buf(), adapter.map(Path::to_path_buf));
    // The load reads, merges and quantizes every weight: keep it off the async workers.
    let pipeline =
        tokio::task::spawn_blocking(move || load_hf_pipeline(&base, adapter.as_deref(), quantize))
            .await??;
    Ok(model_from_pipeline(pipeline).await)
}

fn load_hf_pipeline(
    base: &Path,
    adapter: Option<&Path>,
    quantize: Option<IsqType>,
) -> Result<SharedPipeline> {
    let mut builder = NormalLoaderBuilder::new(
        NormalSpecificConfig::default(),
        None,
        None,
        Some(base.to_string_lossy().into_owned()),
        false,
        None,
    );
    let adapter_paths = match adapter {
        Some(dir) => {
            builder = builder.with_lora(vec![dir.to_string_lossy().into_owned()]);
            AdapterPaths::Lora(vec![lora_paths(dir)?])
        }
        None => AdapterPaths::None,
    };
    let loader = builder.build(None)?;
    let optional = |name: &str| Some(base.join(name)).filter(|p| p.is_file());
    let paths: Box<dyn ModelPaths> = Box::new(LocalModelPaths {
        tokenizer_filename: base.join("tokenizer.json"),
        config_filename: base.join("config.json"),
        template_filename: optional("tokenizer_config.json"),
        filenames: safetensors_files(base)?,
        adapter_paths,
        gen_conf: optional("generation_config.json"),
        preprocessor_config: None,
        processor_config: None,
        chat_template_json_filename: None,
    });
    mistralrs_quant::clear_applied_loras();
    let pipeline = loader.load_model_from_path(
        &paths,
        &ModelDType::F32,
        &device()?,
        true,
        DeviceMapSetting::Auto(AutoDeviceMapParams::default_text()),
        quantize,
        None,
    );
    mistralrs_quant::clear_applied_loras();
    pipeline
}

fn lora_paths(dir: &Path) -> Result<LoraAdapterPaths> {
    let config_file = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&config_file)
        .with_context(|| format!("cannot read {}", config_file.display()))?;
    let lora_config = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a PEFT LoRA config", config_file.display()))?;
    let adapter_path = dir.join("adapter_model.safetensors");
    if !adapter_path.is_file() {
        bail!("{} is missing", adapter_path.display());
    }
    Ok(LoraAdapterPaths {
        lora_config,
        adapter_path,
    })
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .safetensors weights", dir.display());
    }
    Ok(files)
}

/// A GGUF file in F32: `GgufModelBuilder` 0.8.1 hard-codes `ModelDType::Auto`, which means F16
/// activations on CPU, slower there than F32.
pub async fn load_gguf(file: &Path) -> Result<Model> {
    let dir = file
        .parent()
        .unwrap_or(Path::new("."))
        .to_string_lossy()
        .into_owned();
    let name = file
        .file_name()
        .context("GGUF path has no file name")?
        .to_string_lossy()
        .into_owned();
    let pipeline = tokio::task::spawn_blocking(move || -> Result<SharedPipeline> {
        let loader = GGUFLoaderBuilder::new(
            None,
            None,
            dir,
            vec![name],
            GGUFSpecificConfig { topology: None },
            false,
            None,
        )
        .build();
        loader.load_model_from_hf(
            None,
            TokenSource::None,
            &ModelDType::F32,
            &device()?,
            true,
            DeviceMapSetting::Auto(AutoDeviceMapParams::default_text()),
            None,
            None,
        )
    })
    .await??;
    Ok(model_from_pipeline(pipeline).await)
}

fn device() -> Result<candle_core::Device> {
    Ok(mistralrs::best_device(!cfg!(feature = "cuda"))?)
}

/// One engine (its own thread) around a loaded pipeline. The prefix cache stays off: each sample
/// is prefilled on its own, which keeps decoding reproducible.
async fn model_from_pipeline(pipeline: SharedPipeline) -> Model {
    let scheduler = SchedulerConfig::DefaultScheduler {
        method: DefaultSchedulerMethod::Fixed(
            std::num::NonZeroUsize::new(MAX_SEQS).expect("not zero"),
        ),
    };
    let runner = MistralRsBuilder::new(pipeline, scheduler, false, None)
        .with_no_prefix_cache(true)
        .build()
        .await;
    Model::new(runner)
}
