//! One DPO optimiser step on fixed pairs, timed: the candle side of `bench/dpo_step.sh`.
//!
//! `cargo run --release -p flywheel-trainer --example dpo_step -- <HF model dir> <pairs.json> [steps]
//! [--checkpoint]`. `pairs.json` is `{"pairs": [{"prompt": [..], "chosen": [..], "rejected": [..]}]}`
//! (written by `bench/dpo_step.py make-data`). LoRA r = 16, α = 32 on q/k/v/o, f32, CPU, β = 0.1,
//! AdamW lr 5e-6 with clipping at 1.0, as the PyTorch side. Prints one JSON line: the median step
//! time after one warm-up step, and the peak resident memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use flywheel_trainer::{
    prepare_pairs, Adapter, Dpo, LoraConfig, Model, OptimConfig, PairExample, Schedule, Sequence,
    TrainConfig, Trainer,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let checkpoint = args.iter().any(|a| a == "--checkpoint");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (model_dir, data) = match positional.as_slice() {
        [model, data, ..] => (PathBuf::from(model), PathBuf::from(data)),
        _ => return Err("usage: dpo_step <model dir> <pairs.json> [steps] [--checkpoint]".into()),
    };
    let steps: usize = positional.get(2).map_or(Ok(5), |s| s.parse())?;
    let lora = LoraConfig {
        rank: 16,
        alpha: 32.0,
        ..LoraConfig::default()
    };
    let model = Model::load(&model_dir, lora, DType::F32, &Device::Cpu)?;
    let examples = read_pairs(&data)?;
    let n_pairs = examples.len();
    let prepared = prepare_pairs(&model, &Dpo::default(), examples, Adapter::Off)?;
    let config = TrainConfig {
        optim: OptimConfig {
            lr: 5e-6,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            ..OptimConfig::default()
        },
        checkpoint,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, Box::new(Dpo::default()), config)?;
    let mut times = Vec::with_capacity(steps);
    let mut loss = 0.0;
    for _ in 0..steps + 1 {
        let started = Instant::now();
        loss = trainer.step(&prepared)?.loss;
        times.push(started.elapsed().as_secs_f64());
    }
    let mut measured = times[1..].to_vec();
    measured.sort_by(f64::total_cmp);
    let median = measured[measured.len() / 2];
    println!(
        "{{\"impl\": \"candle\", \"pairs\": {n_pairs}, \"checkpoint\": {checkpoint}, \
         \"step_s_median\": {median:.3}, \"steps\": {steps}, \"last_loss\": {loss:.6}, \
         \"peak_rss_mib\": {:.0}}}",
        peak_rss_mib()
    );
    Ok(())
}

fn read_pairs(path: &Path) -> Result<Vec<PairExample>, Box<dyn std::error::Error>> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut pairs = Vec::new();
    for p in json["pairs"].as_array().ok_or("no `pairs` array")? {
        let prompt = ids(&p["prompt"]);
        pairs.push(PairExample {
            chosen: Sequence::new(prompt.clone(), ids(&p["chosen"]))?,
            rejected: Sequence::new(prompt, ids(&p["rejected"]))?,
            win_rates: None,
        });
    }
    Ok(pairs)
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
