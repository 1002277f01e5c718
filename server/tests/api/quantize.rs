//! `--quantize`: every generation is the adapter merged into the full-precision weights, then
//! quantized in situ (mistral.rs merges LoRA only into unquantized weights).

use std::path::{Path, PathBuf};

use flywheel_trainer::{write_adapter, PairExample, Rpo, Sequence};
use mistralrs::IsqType;
use serde_json::json;

use crate::helpers::{greedy, serve_adapter, spawn_app_with, AppOptions, TestApp};
use crate::training::trained_on;

const PROMPT: &str = "The same prompt every time";
/// The marker the adapter is trained to say: `!` (token ids 3–258 are the bytes).
const MARKER: u32 = 3 + b'!' as u32;
const TOKENS: u32 = 8;

/// The greedy answer to `PROMPT`: its token ids and log-probs, and the prompt's ids.
async fn answer(app: &TestApp) -> (Vec<u32>, Vec<f64>, Vec<u32>) {
    let mut request = greedy(PROMPT, TOKENS);
    request["logprobs"] = json!(true);
    let body = app.chat(request).await;
    let id = body["group_id"].as_str().unwrap().parse().unwrap();
    let group = app.store.get_group(id).await.unwrap();
    let prompt = app.store.group_prompt_token_ids(id).await.unwrap().unwrap();
    let logprobs = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["logprob"].as_f64().unwrap())
        .collect();
    (group.responses[0].token_ids.clone(), logprobs, prompt)
}

/// A LoRA trained by RPO (DPO plus the chosen answer's likelihood) to answer `prompt` with the marker rather than with `rejected`.
fn marker_adapter(dir: &Path, prompt: &[u32], rejected: &[u32]) -> PathBuf {
    let seq = |r: &[u32]| Sequence::new(prompt.to_vec(), r.to_vec()).unwrap();
    let pair = PairExample {
        chosen: seq(&[MARKER; TOKENS as usize]),
        rejected: seq(rejected),
        win_rates: None,
    };
    let model = trained_on(Rpo::default(), pair, 30);
    let out = dir.join("marker");
    write_adapter(&out, &model, &model.snapshot().unwrap(), "tiny").unwrap();
    out
}

async fn app_quantized(quantize: Option<IsqType>) -> TestApp {
    spawn_app_with(AppOptions {
        quantize,
        ..AppOptions::default()
    })
    .await
}

fn mean_gap(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
}

#[tokio::test]
async fn an_adapter_trained_to_say_a_marker_says_it_under_q8_0_as_in_f32() {
    // Arrange: the base answers in F32 and in Q8_0, and an adapter trained against the former.
    let f32_app = app_quantized(None).await;
    let q8_app = app_quantized(Some(IsqType::Q8_0)).await;
    let (f32_base, f32_base_logprobs, prompt) = answer(&f32_app).await;
    let (q8_base, q8_base_logprobs, q8_prompt) = answer(&q8_app).await;
    assert_eq!(q8_prompt, prompt);
    let dir = tempfile::tempdir().unwrap();
    let adapter = marker_adapter(dir.path(), &prompt, &f32_base);

    // Act
    serve_adapter(&f32_app, &adapter).await;
    serve_adapter(&q8_app, &adapter).await;
    let (f32_adapted, f32_logprobs, _) = answer(&f32_app).await;
    let (q8_adapted, q8_logprobs, _) = answer(&q8_app).await;

    // Assert: both say the marker throughout, which the base says nowhere.
    let markers = vec![MARKER; TOKENS as usize];
    assert!(!f32_base.contains(&MARKER) && !q8_base.contains(&MARKER));
    assert_eq!(f32_adapted, markers);
    assert_eq!(q8_adapted, markers);
    // Quantization did happen (the base's log-probs moved), and only a little: Q8_0 keeps ~8 bits
    // a weight (the adapted answers are near-certain, log-prob ~0, in both). Greedy answers may
    // part after a near-tie, so compare the tokens both bases chose.
    let shared = f32_base
        .iter()
        .zip(&q8_base)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(shared >= 4, "the bases part after {shared} tokens");
    let gap = mean_gap(&q8_base_logprobs[..shared], &f32_base_logprobs[..shared]);
    assert!(
        gap > 0.0,
        "Q8_0 gave the F32 log-probs exactly: not quantized"
    );
    assert!(gap < 0.1, "mean log-prob gap {gap} nats");
    assert!(mean_gap(&q8_logprobs, &f32_logprobs) < 0.1);
}

#[test]
fn an_unknown_quantization_type_is_refused_with_the_known_ones() {
    let err = "q9_9"
        .parse::<flywheel_server::engine::loader::Quantize>()
        .unwrap_err();
    assert!(err.contains("Q8_0"), "{err}");
    for (text, expected) in [("none", None), ("F32", None), ("q8_0", Some(IsqType::Q8_0))] {
        let parsed: flywheel_server::engine::loader::Quantize = text.parse().unwrap();
        assert_eq!(parsed.0, expected);
    }
}

#[tokio::test]
async fn a_gguf_is_not_quantized_again() {
    let source = flywheel_server::model_source::ModelSource::Gguf("model.Q4_1.gguf".into());
    let err = flywheel_server::engine::Generation::load(
        &source,
        None,
        "m".into(),
        0,
        Some(IsqType::Q8_0),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("already quantized"), "{err}");
}
