//! The real SmolLM2-135M-Instruct, when `flywheel model import` has put it in the cache: our forward
//! answers a factual question the way the model is known to, and a DPO step runs on it.
//! Skipped, with a note, when the directory is absent (CI without the download).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, D};
use flywheel_trainer::{
    prepare_pairs, Adapter, Dpo, LoraConfig, Model, PairExample, Sequence, TrainConfig, Trainer,
};
use tokenizers::Tokenizer;

fn smollm2_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let dir = PathBuf::from(home).join(".cache/flywheel/models/smollm2-135m-instruct/hf");
    if dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: no SmolLM2 at {} (run `flywheel model import`)",
            dir.display()
        );
        None
    }
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    tokenizer.encode(text, false).unwrap().get_ids().to_vec()
}

#[test]
fn smollm2_greedily_answers_that_the_capital_of_france_is_paris_and_takes_a_dpo_step() {
    let Some(dir) = smollm2_dir() else {
        return;
    };
    // Arrange
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let model = Model::load(&dir, LoraConfig::default(), DType::F32, &Device::Cpu).unwrap();
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let mut ids = encode(&tokenizer, prompt);

    // Act: greedy decoding without a cache (the trainer's model has none).
    for _ in 0..8 {
        let logits = model.logits(&ids, Adapter::Off).unwrap();
        let last = logits.get(ids.len() - 1).unwrap();
        ids.push(last.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap());
    }

    // Assert
    let answer = tokenizer
        .decode(&ids[encode(&tokenizer, prompt).len()..], true)
        .unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");

    // One DPO step with per-layer recomputation, timed for the record.
    let prompt = encode(&tokenizer, prompt);
    let example = PairExample {
        chosen: Sequence::new(
            prompt.clone(),
            encode(&tokenizer, "The capital of France is Paris.<|im_end|>"),
        )
        .unwrap(),
        rejected: Sequence::new(prompt, encode(&tokenizer, "It is Lyon.<|im_end|>")).unwrap(),
        win_rates: None,
    };
    let pairs = prepare_pairs(&model, &Dpo::default(), vec![example], Adapter::Off).unwrap();
    let config = TrainConfig {
        checkpoint: true,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, Box::new(Dpo::default()), config).unwrap();
    let start = Instant::now();
    let metrics = trainer.step(&pairs).unwrap();
    eprintln!(
        "SmolLM2 DPO step (1 pair, {:?}): {metrics:?}",
        start.elapsed()
    );
    assert!((metrics.loss - std::f64::consts::LN_2).abs() < 1e-6);
    assert!(metrics.grad_norm.unwrap() > 0.0);
}
