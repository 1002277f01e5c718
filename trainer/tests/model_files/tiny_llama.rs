//! `write_tiny_llama`: the files parse, have the promised shapes, and depend only on the seed.

use flywheel_trainer::{write_random_llama, write_tiny_llama, RandomShape, TINY_SPECIAL_TOKENS};
use tokenizers::Tokenizer;

use crate::{load_weights, read_json};

#[test]
fn the_tiny_tokenizer_round_trips_any_text_and_keeps_special_tokens_whole() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path(), 1).unwrap();

    // Act
    let tokenizer = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();

    // Assert
    for text in [
        "héllo 日本",
        "The cat and the hat.\n\n  x",
        "🦀 \t\u{0}",
        "",
    ] {
        let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    }
    let ids = tokenizer.encode(" the", false).unwrap().get_ids().to_vec();
    assert_eq!(ids.len(), 1, "the merges should make ` the` one token");
    let chat = "<|im_start|>user\nhi<|im_end|>\n";
    let ids = tokenizer.encode(chat, false).unwrap().get_ids().to_vec();
    assert_eq!((ids[0], ids[ids.len() - 2]), (1, 2));
    for (id, token) in TINY_SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tokenizer.token_to_id(token), Some(id as u32));
    }
}

#[test]
fn the_tiny_model_has_every_llama_tensor_with_its_shape() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();

    // Act
    write_tiny_llama(dir.path(), 1).unwrap();

    // Assert
    let config = read_json(dir.path(), "config.json");
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    let tokenizer = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(tokenizer.get_vocab_size(true), vocab);
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["torch_dtype"], "float32");
    assert_eq!(config["hidden_act"], "silu");
    assert_eq!(config["rope_theta"], 10000.0);

    let weights = load_weights(dir.path());
    let mut expected = vec![
        ("model.embed_tokens.weight".to_owned(), vec![vocab, 64]),
        ("model.norm.weight".to_owned(), vec![64]),
    ];
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", vec![64, 64]),
            ("self_attn.k_proj", vec![32, 64]),
            ("self_attn.v_proj", vec![32, 64]),
            ("self_attn.o_proj", vec![64, 64]),
            ("mlp.gate_proj", vec![128, 64]),
            ("mlp.up_proj", vec![128, 64]),
            ("mlp.down_proj", vec![64, 128]),
            ("input_layernorm", vec![64]),
            ("post_attention_layernorm", vec![64]),
        ] {
            expected.push((format!("{p}.{name}.weight"), shape));
        }
    }
    assert_eq!(weights.len(), expected.len());
    for (name, shape) in expected {
        let tensor = weights
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(tensor.dims(), shape.as_slice(), "{name}");
        assert_eq!(tensor.dtype(), candle_core::DType::F32);
    }
    let norm = weights["model.norm.weight"].to_vec1::<f32>().unwrap();
    assert!(norm.iter().all(|&w| w == 1.0));
}

#[test]
fn the_tiny_model_declares_chatml_and_im_end_as_eos() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();

    // Act
    write_tiny_llama(dir.path(), 1).unwrap();

    // Assert
    let tc = read_json(dir.path(), "tokenizer_config.json");
    let template = tc["chat_template"].as_str().unwrap();
    assert!(template.contains("'<|im_start|>' + message['role'] + '\\n'"));
    assert!(template.contains("{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"));
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert_eq!(
        read_json(dir.path(), "generation_config.json")["eos_token_id"][0],
        2
    );
    assert_eq!(read_json(dir.path(), "config.json")["eos_token_id"], 2);
}

#[test]
fn the_same_seed_writes_identical_bytes_and_another_seed_other_weights() {
    // Arrange
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );

    // Act
    write_tiny_llama(a.path(), 42).unwrap();
    write_tiny_llama(b.path(), 42).unwrap();
    write_tiny_llama(c.path(), 43).unwrap();

    // Assert
    let files = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ];
    for file in files {
        let bytes = |d: &tempfile::TempDir| std::fs::read(d.path().join(file)).unwrap();
        assert_eq!(bytes(&a), bytes(&b), "{file} differs for the same seed");
    }
    let weights =
        |d: &tempfile::TempDir| std::fs::read(d.path().join("model.safetensors")).unwrap();
    assert_ne!(weights(&a), weights(&c));
}

#[test]
fn a_named_shape_has_the_real_models_dimensions_and_a_full_vocabulary() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let shape: RandomShape = "smollm2-135m".parse().unwrap();

    // Act
    write_random_llama(dir.path(), shape, 2).unwrap();

    // Assert: SmolLM2-135M's config, a tokenizer as large as the vocabulary, 134.5 M parameters.
    let config = read_json(dir.path(), "config.json");
    for (key, value) in [
        ("hidden_size", 576),
        ("intermediate_size", 1536),
        ("num_hidden_layers", 30),
        ("num_attention_heads", 9),
        ("num_key_value_heads", 3),
        ("vocab_size", 49_152),
    ] {
        assert_eq!(config[key], value, "{key}");
    }
    let tokenizer = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(tokenizer.get_vocab_size(true), 49_152);
    let ids = tokenizer
        .encode(" the cat", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), " the cat");
    assert_eq!(tokenizer.decode(&[49_151], false).unwrap(), "[49151]");
    let weights = load_weights(dir.path());
    let parameters: usize = weights.values().map(|t| t.elem_count()).sum();
    assert_eq!(parameters, 134_515_008);
    let q = weights["model.layers.0.self_attn.q_proj.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let std = (q.iter().map(|v| v * v).sum::<f32>() / q.len() as f32).sqrt();
    assert!((std - 0.2 / 3.0).abs() < 0.002, "projection std {std}");
    assert!("llama-7b"
        .parse::<RandomShape>()
        .unwrap_err()
        .contains("smollm2-135m"));
}
