//! The `Config` family switches on one-layer random models: Qwen2's q/k/v biases and Mistral's
//! sliding window.

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use serde_json::json;

use super::{Adapter, Config, LoraConfig, Model};

const HIDDEN: usize = 16;
const VOCAB: usize = 20;

fn config(extra: serde_json::Value) -> Config {
    let mut base = json!({
        "hidden_size": HIDDEN, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "vocab_size": VOCAB, "tie_word_embeddings": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

/// Random weights for one layer; `v_bias` sets every value of the v_proj bias (None: no biases).
fn weights(v_bias: Option<f32>) -> HashMap<String, Tensor> {
    let dev = &Device::Cpu;
    let randn = |r: usize, c: usize| Tensor::randn(0f32, 0.3, (r, c), dev).unwrap();
    let p = "model.layers.0";
    let mut w = HashMap::from([
        ("model.embed_tokens.weight".to_owned(), randn(VOCAB, HIDDEN)),
        (
            "model.norm.weight".to_owned(),
            Tensor::ones(HIDDEN, DType::F32, dev).unwrap(),
        ),
        (
            format!("{p}.input_layernorm.weight"),
            Tensor::ones(HIDDEN, DType::F32, dev).unwrap(),
        ),
        (
            format!("{p}.post_attention_layernorm.weight"),
            Tensor::ones(HIDDEN, DType::F32, dev).unwrap(),
        ),
        (format!("{p}.self_attn.q_proj.weight"), randn(16, HIDDEN)),
        (format!("{p}.self_attn.k_proj.weight"), randn(8, HIDDEN)),
        (format!("{p}.self_attn.v_proj.weight"), randn(8, HIDDEN)),
        (format!("{p}.self_attn.o_proj.weight"), randn(HIDDEN, 16)),
        (format!("{p}.mlp.gate_proj.weight"), randn(32, HIDDEN)),
        (format!("{p}.mlp.up_proj.weight"), randn(32, HIDDEN)),
        (format!("{p}.mlp.down_proj.weight"), randn(HIDDEN, 32)),
    ]);
    if let Some(v) = v_bias {
        for (name, n) in [("q_proj", 16), ("k_proj", 8)] {
            w.insert(
                format!("{p}.self_attn.{name}.bias"),
                Tensor::zeros(n, DType::F32, dev).unwrap(),
            );
        }
        let bias = Tensor::full(v, 8, dev).unwrap();
        w.insert(format!("{p}.self_attn.v_proj.bias"), bias);
    }
    w
}

fn model(config: Config, weights: &HashMap<String, Tensor>) -> crate::Result<Model> {
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    Model::new(config, LoraConfig::default(), vb)
}

#[test]
fn a_qwen2_config_loads_q_k_v_biases_and_its_v_bias_moves_the_logits() {
    // Arrange
    let qwen2 = config(json!({"model_type": "qwen2"}));
    let mut w = weights(Some(0.0));
    let ids = [3, 4, 5];

    // Act
    let without = model(qwen2.clone(), &w)
        .unwrap()
        .logits(&ids, Adapter::Off)
        .unwrap();
    w.insert(
        "model.layers.0.self_attn.v_proj.bias".into(),
        Tensor::full(0.5f32, 8, &Device::Cpu).unwrap(),
    );
    let with = model(qwen2.clone(), &w)
        .unwrap()
        .logits(&ids, Adapter::Off)
        .unwrap();

    // Assert
    let diff = (with - without)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff > 1e-3);
    assert!(
        model(qwen2, &weights(None)).is_err(),
        "qwen2 needs its biases"
    );
}

#[test]
fn a_mistral_sliding_window_of_2_hides_token_0_from_position_2_on() {
    // Arrange: one layer, so position i sees only tokens i−1 and i.
    let mistral = config(json!({"model_type": "mistral", "sliding_window": 2}));
    let m = model(mistral, &weights(None)).unwrap();

    // Act
    let a = m.logits(&[3, 4, 5, 6], Adapter::Off).unwrap();
    let b = m.logits(&[9, 4, 5, 6], Adapter::Off).unwrap();

    // Assert
    let row_diff = |i: usize| {
        (a.i(i).unwrap() - b.i(i).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(row_diff(1) > 1e-4);
    assert_eq!((row_diff(2), row_diff(3)), (0.0, 0.0));
}

#[test]
fn qwen2_ignores_its_sliding_window_unless_use_sliding_window_is_set() {
    let qwen2 = config(json!({"model_type": "qwen2", "sliding_window": 2}));
    let m = model(qwen2, &weights(Some(0.0))).unwrap();
    let a = m.logits(&[3, 4, 5], Adapter::Off).unwrap().i(2).unwrap();
    let b = m.logits(&[9, 4, 5], Adapter::Off).unwrap().i(2).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff > 1e-4);
}

#[test]
fn rope_scaling_is_refused_rather_than_silently_ignored() {
    let mut value = json!({"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "rms_norm_eps": 1e-6, "vocab_size": 4,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0}});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), value.to_string()).unwrap();
    assert!(matches!(
        Config::from_dir(dir.path()),
        Err(crate::Error::Config(_))
    ));
    value["rope_scaling"] = serde_json::Value::Null;
    std::fs::write(dir.path().join("config.json"), value.to_string()).unwrap();
    assert!(Config::from_dir(dir.path()).is_ok());
}
