//! PEFT adapter files: round trip, sha256, immutability, and merge equivalence (W + (α/r)·B·A gives
//! the same logits as the unmerged LoRA forward, which is how mistral.rs applies it).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use flywheel_trainer::{read_adapter, write_adapter, Adapter, Error};
use sha2::{Digest, Sha256};

use crate::{load, max_diff, some_adapter, tiny};

#[test]
fn a_written_adapter_reads_back_with_peft_names_and_its_sha256() {
    // Arrange
    let (_model_dir, model) = tiny(DType::F32);
    let weights = some_adapter(&model, 3);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("adapters").join("1");

    // Act
    let sha = write_adapter(&dir, &model, &weights, "tiny-llama").unwrap();
    let (config, back) = read_adapter(&dir, &model).unwrap();

    // Assert
    let config_bytes = std::fs::read(dir.join("adapter_config.json")).unwrap();
    let weight_bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let mut hasher = Sha256::new();
    hasher.update(&config_bytes);
    hasher.update(&weight_bytes);
    assert_eq!(sha, hex::encode(hasher.finalize()));
    assert_eq!(
        (config.peft_type.as_str(), config.r, config.lora_alpha),
        ("LORA", 4, 8.0)
    );
    assert_eq!(
        config.target_modules,
        ["q_proj", "k_proj", "v_proj", "o_proj"]
    );
    let json: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(json["base_model_name_or_path"], "tiny-llama");
    let tensors =
        candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let a = &tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    let b = &tensors["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"];
    assert_eq!((a.dims(), b.dims()), (&[4, 64][..], &[32, 4][..]));
    assert_eq!(tensors.len(), 2 * 2 * 4);
    for (i, (a, b)) in (0..weights.len())
        .map(|i| (weights.pair(i).unwrap(), back.pair(i).unwrap()))
        .enumerate()
    {
        assert_eq!(max_diff(a.0, b.0), 0.0, "A of module {i}");
        assert_eq!(max_diff(a.1, b.1), 0.0, "B of module {i}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary directory is left behind");
}

#[test]
fn writing_over_an_existing_adapter_fails_and_leaves_it_untouched() {
    // Arrange
    let (_model_dir, model) = tiny(DType::F32);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a");
    let first = write_adapter(&dir, &model, &some_adapter(&model, 1), "tiny").unwrap();

    // Act
    let second = write_adapter(&dir, &model, &some_adapter(&model, 2), "tiny");

    // Assert
    assert!(matches!(second, Err(Error::AdapterIo { .. })));
    let (_, back) = read_adapter(&dir, &model).unwrap();
    let again = root.path().join("b");
    assert_eq!(write_adapter(&again, &model, &back, "tiny").unwrap(), first);
}

#[test]
fn merging_the_adapter_into_the_base_weights_gives_the_unmerged_logits() {
    // Arrange: merge W += (α/r)·B·A the way mistral.rs does at load.
    let (model_dir, model) = tiny(DType::F32);
    let weights = some_adapter(&model, 4);
    let scale = model.lora_config().scale();
    let mut base: HashMap<String, Tensor> =
        candle_core::safetensors::load(model_dir.path().join("model.safetensors"), &Device::Cpu)
            .unwrap();
    for (i, m) in model.lora_modules().iter().enumerate() {
        let (a, b) = weights.pair(i).unwrap();
        let key = format!("{}.weight", m.name);
        let merged = (&base[&key] + (b.matmul(a).unwrap() * scale).unwrap()).unwrap();
        base.insert(key, merged);
    }
    let merged_dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(model_dir.path().join(file), merged_dir.path().join(file)).unwrap();
    }
    candle_core::safetensors::save(&base, merged_dir.path().join("model.safetensors")).unwrap();
    let merged = load(merged_dir.path(), DType::F32);
    let ids = [1, 20, 30, 40, 50, 60, 70];

    // Act
    let unmerged_logits = model.logits(&ids, Adapter::Fixed(&weights)).unwrap();
    let merged_logits = merged.logits(&ids, Adapter::Off).unwrap();

    // Assert
    let base_logits = model.logits(&ids, Adapter::Off).unwrap();
    assert!(max_diff(&merged_logits, &unmerged_logits) < 1e-4);
    assert!(
        max_diff(&base_logits, &unmerged_logits) > 1e-2,
        "the adapter should matter"
    );
}
