//! DPO step timing on a random-weight model of SmolLM2-135M's shape, for when the real weights are
//! not at hand (`bench/RESULTS.md`). Env: `LAYERS` (30), `STEPS` (2), `PAIRS` (4), `F64` (set for f64);
//! `--checkpoint` for per-layer recomputation. Prints each step's time and the peak RSS to stderr.
use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use flywheel_trainer::{
    prepare_pairs, Adapter, Config, Dpo, LoraConfig, Model, OptimConfig, PairExample, Schedule,
    Sequence, TrainConfig, Trainer,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let checkpoint = args.iter().any(|a| a == "--checkpoint");
    let layers: usize = std::env::var("LAYERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let steps: usize = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let pairs_n: usize = std::env::var("PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let cfg: Config = serde_json::from_str(&format!(
        r#"{{"model_type":"llama","hidden_size":576,"intermediate_size":1536,"num_hidden_layers":{layers},
        "num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000.0,
        "vocab_size":49152,"tie_word_embeddings":true,"hidden_act":"silu"}}"#
    ))?;
    let dev = Device::Cpu;
    let mut map = HashMap::new();
    let (h, i, v) = (576usize, 1536usize, 49152usize);
    map.insert(
        "model.embed_tokens.weight".to_string(),
        Tensor::randn(0f32, 0.02, (v, h), &dev)?,
    );
    map.insert(
        "model.norm.weight".to_string(),
        Tensor::ones(h, DType::F32, &dev)?,
    );
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (n, o, inn) in [
            ("self_attn.q_proj", 576, h),
            ("self_attn.k_proj", 192, h),
            ("self_attn.v_proj", 192, h),
            ("self_attn.o_proj", h, 576),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            map.insert(
                format!("{p}.{n}.weight"),
                Tensor::randn(0f32, 0.05, (o, inn), &dev)?,
            );
        }
        map.insert(
            format!("{p}.input_layernorm.weight"),
            Tensor::ones(h, DType::F32, &dev)?,
        );
        map.insert(
            format!("{p}.post_attention_layernorm.weight"),
            Tensor::ones(h, DType::F32, &dev)?,
        );
    }
    let dt = if std::env::var("F64").is_ok() {
        DType::F64
    } else {
        DType::F32
    };
    let vb = VarBuilder::from_tensors(map, dt, &dev);
    let lora = LoraConfig {
        rank: 16,
        alpha: 32.0,
        ..LoraConfig::default()
    };
    let model = Model::new(cfg, lora, vb)?;
    let mut s = 12345u64;
    let mut ids = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                3 + ((s >> 33) % (v as u64 - 3)) as u32
            })
            .collect()
    };
    let mut examples = Vec::new();
    for _ in 0..pairs_n {
        let p = ids(128);
        examples.push(PairExample {
            chosen: Sequence::new(p.clone(), ids(128))?,
            rejected: Sequence::new(p, ids(128))?,
            win_rates: None,
        });
    }
    let t = Instant::now();
    let prepared = prepare_pairs(&model, &Dpo::default(), examples, Adapter::Off)?;
    eprintln!("prepare {:.2}s", t.elapsed().as_secs_f64());
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
    for _ in 0..steps {
        let t = Instant::now();
        let m = trainer.step(&prepared)?;
        eprintln!(
            "step {:.2}s loss {:.6} gn {:?}",
            t.elapsed().as_secs_f64(),
            m.loss,
            m.grad_norm
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    eprintln!(
        "{}",
        status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("")
    );
    Ok(())
}
