//! `flywheel bench`: the measurements the benchmark scripts compare Flywheel against, built into
//! the binary so they run where no Rust toolchain is (the GPU check carries only `flywheel`).
//!
//! - `engine`: the bare mistral.rs engine driven in-process, with no HTTP and no logging: the
//!   baseline of `bench/serve_bench.py` and `bench/gpu_check.sh`.
//! - `dpo-step`: one DPO optimiser step on fixed pairs, timed: the candle side of
//!   `bench/dpo_step.sh` (PyTorch + PEFT is `bench/dpo_step.py`).
//!
//! Each prints one JSON line.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use flywheel_trainer::{
    prepare_pairs, Adapter, Dpo, LoraConfig, Model, OptimConfig, PairExample, Schedule, Sequence,
    TrainConfig, TrainDevice, TrainDtype, Trainer,
};
use mistralrs::{RequestBuilder, Response, TextMessageRole};
use serde_json::json;

use crate::engine::loader::{self, Quantize};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Output tokens/s of the bare mistral.rs engine (in-process, no HTTP, no store), loaded as
    /// `serve` loads the model.
    Engine(EngineArgs),
    /// Median time and peak memory of one DPO step (LoRA r = 16 on q/k/v/o, β = 0.1, AdamW at
    /// 5e-6 with clipping at 1.0, as `bench/dpo_step.py`).
    DpoStep(DpoStepArgs),
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// An HF model directory or a GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 8)]
    pub requests: usize,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// As `serve --quantize`.
    #[arg(long, default_value_t = Quantize::default())]
    pub quantize: Quantize,
}

#[derive(Debug, Args)]
pub struct DpoStepArgs {
    /// An HF model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// `{"pairs": [{"prompt": [ids], "chosen": [ids], "rejected": [ids]}]}`, as
    /// `bench/dpo_step.py make-data` writes it.
    #[arg(long)]
    pub data: PathBuf,
    /// Measured steps, after one warm-up step.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Per-layer recomputation (what `flywheel train` uses) instead of the full graph.
    #[arg(long)]
    pub checkpoint: bool,
    #[arg(long, default_value_t = TrainDevice::Cpu)]
    pub device: TrainDevice,
    #[arg(long, default_value_t = TrainDtype::F32)]
    pub dtype: TrainDtype,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Engine(args) => engine(args).await,
        BenchCommand::DpoStep(args) => tokio::task::spawn_blocking(move || dpo_step(args)).await?,
    }
}

/// The prompts both sides of the serving benchmarks send, in turn.
pub const PROMPTS: &[&str] = &[
    "Explain why the sky is blue in two sentences.",
    "Write a short poem about a lighthouse.",
    "List three uses of a paperclip.",
    "What is the difference between a list and a tuple in Python?",
    "Describe a sunrise to someone who has never seen one.",
    "Give me a recipe for a simple tomato soup.",
    "Why do cats purr?",
    "Summarize the plot of Romeo and Juliet.",
];

async fn engine(args: EngineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.concurrency > 0 && args.requests > 0,
        "concurrency and requests must be at least 1"
    );
    // Loaded exactly as `flywheel serve` loads it (F32, prefix cache off), so the comparison
    // isolates what Flywheel adds: HTTP, validation, our sampler, the store.
    let model = if args.model.extension().is_some_and(|e| e == "gguf") {
        anyhow::ensure!(args.quantize.0.is_none(), "a GGUF is quantized already");
        loader::load_gguf(&args.model).await?
    } else {
        loader::load_hf(&args.model, None, args.quantize.0).await?
    };
    let model = Arc::new(model);
    one_request(&model, "warm up", 4).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (model, next) = (model.clone(), next.clone());
        let (requests, max_tokens) = (args.requests, args.max_tokens);
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= requests {
                    return anyhow::Ok(out);
                }
                out.push(one_request(&model, PROMPTS[i % PROMPTS.len()], max_tokens).await?);
            }
        }));
    }
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tokens: usize = results.iter().map(|r| r.1).sum();
    let mut ttft: Vec<f64> = results.iter().map(|r| r.0).collect();
    ttft.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "system": "mistral.rs (bare, in-process)",
            "quantize": args.quantize.to_string(),
            "concurrency": args.concurrency,
            "requests": args.requests,
            "seconds": elapsed,
            "requests_per_s": args.requests as f64 / elapsed,
            "output_tokens_per_s": tokens as f64 / elapsed,
            "ttft_mean_s": ttft.iter().sum::<f64>() / ttft.len() as f64,
            "ttft_p50_s": ttft[ttft.len() / 2],
        })
    );
    Ok(())
}

/// One streamed request at temperature 0.7; returns (time to first token, completion tokens).
async fn one_request(
    model: &mistralrs::Model,
    prompt: &str,
    max_tokens: usize,
) -> anyhow::Result<(f64, usize)> {
    let request = RequestBuilder::new()
        .add_message(TextMessageRole::User, prompt)
        .set_sampler_max_len(max_tokens)
        .set_sampler_temperature(0.7);
    let started = Instant::now();
    let mut stream = model.stream_chat_request(request).await?;
    let mut first = None;
    let mut tokens = 0;
    while let Some(response) = stream.next().await {
        match response {
            Response::Chunk(chunk) => {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                if let Some(usage) = chunk.usage {
                    tokens = usage.completion_tokens;
                }
                if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                    break;
                }
            }
            Response::InternalError(e) | Response::ValidationError(e) => anyhow::bail!("{e}"),
            Response::ModelError(e, _) => anyhow::bail!("{e}"),
            _ => {}
        }
    }
    Ok((first.unwrap_or(0.0), tokens))
}

fn dpo_step(args: DpoStepArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    let lora = LoraConfig {
        rank: 16,
        alpha: 32.0,
        ..LoraConfig::default()
    };
    let device = args.device.open()?;
    let model = Model::load(&args.model, lora, args.dtype.dtype(), &device)
        .with_context(|| format!("cannot load the model at {}", args.model.display()))?;
    let examples = read_pairs(&args.data)?;
    let n_pairs = examples.len();
    let prepared = prepare_pairs(&model, &Dpo::default(), examples, Adapter::Off)?;
    let config = TrainConfig {
        optim: OptimConfig {
            lr: 5e-6,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            ..OptimConfig::default()
        },
        checkpoint: args.checkpoint,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, Box::new(Dpo::default()), config)?;
    let mut times = Vec::with_capacity(args.steps + 1);
    let mut loss = 0.0;
    let mut gpu_used = gpu_used_mib(&device);
    for _ in 0..=args.steps {
        let started = Instant::now();
        // The step reads its loss back to the host, which waits for the device to finish.
        loss = trainer.step(&prepared)?.loss;
        times.push(started.elapsed().as_secs_f64());
        gpu_used = match (gpu_used, gpu_used_mib(&device)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let mut measured = times[1..].to_vec();
    measured.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "impl": "candle",
            "device": args.device.to_string(),
            "dtype": args.dtype.to_string(),
            "pairs": n_pairs,
            "checkpoint": args.checkpoint,
            "step_s_median": measured[measured.len() / 2],
            "steps": args.steps,
            "last_loss": loss,
            "peak_rss_mib": peak_rss_mib(),
            "gpu_used_mib": gpu_used,
        })
    );
    Ok(())
}

fn read_pairs(path: &Path) -> anyhow::Result<Vec<PairExample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let ids = |v: &serde_json::Value| -> anyhow::Result<Vec<u32>> {
        v.as_array()
            .context("token ids must be an array")?
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .context("token ids must be integers below 2^32")
            })
            .collect()
    };
    let pairs = json["pairs"].as_array().context("no `pairs` array")?;
    pairs
        .iter()
        .map(|p| {
            let prompt = ids(&p["prompt"])?;
            Ok(PairExample {
                chosen: Sequence::new(prompt.clone(), ids(&p["chosen"])?)?,
                rejected: Sequence::new(prompt, ids(&p["rejected"])?)?,
                win_rates: None,
            })
        })
        .collect()
}

/// `VmHWM` from `/proc/self/status` (Linux), in MiB; 0 elsewhere.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Device memory in use (total − free, every process's), in MiB; `None` off a GPU.
fn gpu_used_mib(device: &candle_core::Device) -> Option<f64> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = device {
        let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
        return Some((total - free) as f64 / (1024.0 * 1024.0));
    }
    let _ = device;
    None
}
