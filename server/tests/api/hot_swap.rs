//! Loading adapters into new generations and swapping them in while requests run.
//!
//! mistral.rs 0.8.1 resolves adapter ids through the hub (a local directory fails), keeps applied
//! LoRAs in thread-local state that leaks into later loads, and panics when `remove_model` runs in
//! async code; Flywheel loads from local paths, clears that state around every load, and retires
//! a generation by dropping its last `Arc` instead of calling `remove_model`.

use candle_core::{Device, Tensor};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::helpers::{
    assert_error, greedy, register_adapter, serve_adapter, serve_version, spawn_app, TestApp,
};
use flywheel_server::engine::swap::{self, SwapError};
use flywheel_store::AdapterStatus;

/// A PEFT LoRA adapter for the tiny model (hidden 64, 2 layers, kv dim 32) with random A and B.
pub fn write_adapter(dir: &Path, seed: u64) -> PathBuf {
    let device = Device::Cpu;
    let rank = 4;
    let mut tensors = HashMap::new();
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut random = |(rows, cols): (usize, usize)| {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.5
            })
            .collect();
        Tensor::from_vec(values, (rows, cols), &device).unwrap()
    };
    for layer in 0..2 {
        for (module, out) in [("q_proj", 64), ("v_proj", 32)] {
            let prefix = format!("base_model.model.model.layers.{layer}.self_attn.{module}");
            tensors.insert(format!("{prefix}.lora_A.weight"), random((rank, 64)));
            tensors.insert(format!("{prefix}.lora_B.weight"), random((out, rank)));
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    let config = json!({"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "bias": "none"});
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    dir.to_path_buf()
}

async fn answer(app: &TestApp) -> (String, Value) {
    let body = app.chat(greedy("The same prompt every time", 24)).await;
    (
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
        body["adapter"].clone(),
    )
}

#[tokio::test]
async fn adapters_load_from_local_directories_without_leaking_into_later_loads() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let a = write_adapter(&dir.path().join("a"), 1);
    let b = write_adapter(&dir.path().join("b"), 2);
    let (base_text, _) = answer(&app).await;

    let version_a = serve_adapter(&app, &a).await;
    let (a_text, version) = answer(&app).await;
    assert_eq!(version, version_a);
    assert_ne!(a_text, base_text, "the adapter must change the output");

    serve_version(&app, 0).await;
    assert_eq!(
        answer(&app).await.0,
        base_text,
        "a base load after an adapter load is the plain base"
    );

    serve_adapter(&app, &b).await;
    let (b_text, _) = answer(&app).await;
    serve_version(&app, version_a).await;
    assert_eq!(
        answer(&app).await.0,
        a_text,
        "loading A after B gives A alone, not A+B"
    );
    assert_ne!(b_text, a_text);
}

#[tokio::test]
async fn a_swap_during_a_streamed_request_lets_it_finish_on_its_own_generation() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let adapter = write_adapter(&dir.path().join("a"), 3);
    let mut request = greedy("a long answer please", 300);
    request["stream"] = json!(true);
    let response = app
        .client
        .post(format!("{}/v1/chat/completions", app.address))
        .json(&request)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"adapter\":0"));

    serve_adapter(&app, &adapter).await;

    let mut rest = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "the request was not dropped"
    );
    assert!(
        !rest.contains("\"adapter\":1"),
        "a running request stays on the generation it started on"
    );
    assert!(!rest.contains("\"error\""));
    let group_id = rest
        .split("\"group_id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let group = app.get_json(&format!("/v1/groups/{group_id}")).await;
    assert_eq!(group["adapter_version"], 0);
    assert_eq!(
        answer(&app).await.1,
        1,
        "new requests start on the new generation"
    );
}

#[tokio::test]
async fn a_failed_load_leaves_the_old_generation_serving() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("adapter_config.json"), "{\"r\": 4}").unwrap();

    let version = register_adapter(&app.store, Some(&broken)).await;

    let result = swap::serve(&app.engine, &app.store, version).await;

    // Its weights are missing: unreadable here, which only a deliberate act holds against it.
    assert!(
        matches!(result, Err(SwapError::Unreadable(_))),
        "{result:?}"
    );
    assert_eq!(answer(&app).await.1, 0);
    assert_eq!(
        app.store.get_adapter(version).await.unwrap().status,
        AdapterStatus::Ready,
        "only a deliberate act marks an adapter failed"
    );
}

#[tokio::test]
async fn activating_an_adapter_over_the_api_swaps_the_policy_and_rolls_back() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let version =
        register_adapter(&app.store, Some(&write_adapter(&dir.path().join("a"), 5))).await;
    let (base_text, _) = answer(&app).await;

    let activated: Value = app
        .post(&format!("/v1/adapters/{version}/activate"), &json!({}))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(activated["status"], "active");
    let (text, served) = answer(&app).await;
    assert_eq!(served, version);
    assert_ne!(text, base_text);
    assert_eq!(app.get_json("/v1/adapters/0").await["status"], "retired");
    assert_eq!(app.store.active_adapter_version().await.unwrap(), version);

    app.post("/v1/adapters/0/activate", &json!({})).await;
    assert_eq!(answer(&app).await, (base_text, json!(0)));
    assert_eq!(
        app.get_json(&format!("/v1/adapters/{version}")).await["status"],
        "retired"
    );
}

#[tokio::test]
async fn an_adapter_that_does_not_load_is_marked_failed_and_the_policy_stays() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("adapter_config.json"), "{\"r\": 4}").unwrap();
    let version = register_adapter(&app.store, Some(&broken)).await;

    let response = app
        .post(&format!("/v1/adapters/{version}/activate"), &json!({}))
        .await;

    assert_error(response, 409, None).await;
    assert_eq!(
        app.get_json(&format!("/v1/adapters/{version}")).await["status"],
        "failed"
    );
    assert_eq!(answer(&app).await.1, 0);
    let again = app
        .post(&format!("/v1/adapters/{version}/activate"), &json!({}))
        .await;
    assert_error(again, 400, Some("version")).await;
    assert_error(
        app.post("/v1/adapters/99/activate", &json!({})).await,
        404,
        None,
    )
    .await;
}
