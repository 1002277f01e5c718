//! `POST /v1/adapters`: registering a PEFT adapter trained outside Flywheel. It is checked against
//! the base model and confined to the adapter root before anything is stored, then served like any
//! other version.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use crate::helpers::{assert_error, greedy, register_adapter, spawn_app_with, AppOptions, TestApp};
use crate::hot_swap::write_adapter;
use flywheel_store::{files_sha256, Scope};

/// An app whose adapter root is `<tmp>/root`, with `<tmp>` for files outside it.
async fn app_with_root() -> (TestApp, tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let app = spawn_app_with(AppOptions {
        adapter_root: Some(root.clone()),
        ..Default::default()
    })
    .await;
    (app, tmp, root)
}

async fn register(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/v1/adapters", &body).await
}

/// Asserts a 400 naming `path` whose message mentions `needle`, and that no version was stored.
async fn assert_refused(app: &TestApp, body: Value, needle: &str) {
    let error = assert_error(register(app, body.clone()).await, 400, Some("path")).await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{body}: {message}");
    let next = app.get("/v1/adapters/1").await;
    assert_eq!(next.status(), 404, "{body} stored a version");
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("adapter_config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

/// A zero LoRA of rank `rank` on the tiny model's `q_proj` [64, 64] and `v_proj` [32, 64].
fn write_zero_adapter(dir: &Path, rank: usize) {
    let mut tensors = std::collections::HashMap::new();
    for layer in 0..2 {
        for (module, out) in [("q_proj", 64), ("v_proj", 32)] {
            let prefix = format!("base_model.model.model.layers.{layer}.self_attn.{module}");
            let zeros =
                |shape: (usize, usize)| Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu);
            tensors.insert(
                format!("{prefix}.lora_A.weight"),
                zeros((rank, 64)).unwrap(),
            );
            tensors.insert(
                format!("{prefix}.lora_B.weight"),
                zeros((out, rank)).unwrap(),
            );
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    let config = json!({"peft_type": "LORA", "r": rank, "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"]});
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
}

#[tokio::test]
async fn an_adapter_trained_elsewhere_is_registered_as_a_candidate_and_then_served() {
    // Arrange
    let (app, _tmp, root) = app_with_root().await;
    let dir = write_adapter(&root.join("trl-run-42"), 21);

    // Act
    let response = register(
        &app,
        json!({"path": "trl-run-42", "note": "TRL DPO, cluster job 42"}),
    )
    .await;

    // Assert
    assert_eq!(response.status(), 201);
    let adapter: Value = response.json().await.unwrap();
    let version = adapter["version"].as_i64().unwrap();
    assert_eq!(adapter["status"], "candidate");
    assert_eq!(adapter["algorithm"], "external");
    assert_eq!(adapter["parent_version"], 0);
    assert_eq!(adapter["note"], "TRL DPO, cluster job 42");
    let canonical = dir.canonicalize().unwrap();
    assert_eq!(adapter["path"], canonical.display().to_string());
    assert_eq!(adapter["sha256"], files_sha256(&canonical).unwrap());
    let mut shown = app.get_json(&format!("/v1/adapters/{version}")).await;
    assert_eq!(shown["decisions"], json!([]), "no decision yet");
    shown.as_object_mut().unwrap().remove("decisions");
    assert_eq!(shown, adapter);

    let activated = app
        .post(&format!("/v1/adapters/{version}/activate"), &json!({}))
        .await;
    assert_eq!(activated.status(), 200);
    let body = app.chat(greedy("Hello there", 8)).await;
    assert_eq!(body["adapter"], version);
}

#[tokio::test]
async fn the_parent_defaults_to_the_active_version_and_an_unknown_parent_is_404() {
    // Arrange
    let (app, _tmp, root) = app_with_root().await;
    write_adapter(&root.join("a"), 1);
    let b = write_adapter(&root.join("nested").join("b"), 2);
    let first: Value = register(&app, json!({"path": "a"}))
        .await
        .json()
        .await
        .unwrap();
    let first = first["version"].as_i64().unwrap();
    app.post(&format!("/v1/adapters/{first}/activate"), &json!({}))
        .await;

    // Act
    let unknown = register(
        &app,
        json!({"path": b.display().to_string(), "parent_version": 99}),
    )
    .await;
    let child = register(
        &app,
        json!({"path": b.display().to_string(), "algorithm": "trl-dpo"}),
    )
    .await;

    // Assert
    assert_error(unknown, 404, None).await;
    assert_eq!(child.status(), 201);
    let child: Value = child.json().await.unwrap();
    assert_eq!(child["parent_version"], first);
    assert_eq!(child["algorithm"], "trl-dpo");
    assert_eq!(child["version"], first + 1, "the 404 stored nothing");
}

#[tokio::test]
async fn an_adapter_that_does_not_fit_the_base_model_is_refused_and_nothing_is_stored() {
    let (app, _tmp, root) = app_with_root().await;
    let fresh = |name: &str| write_adapter(&root.join(name), 3);

    let dir = fresh("wrong-rank");
    edit_config(&dir, |c| c["r"] = json!(8));
    assert_refused(
        &app,
        json!({"path": "wrong-rank"}),
        "rank 8 needs lora_A [8, 64]",
    )
    .await;

    let dir = fresh("unknown-module");
    edit_config(&dir, |c| {
        c["target_modules"] = json!(["q_proj", "v_proj", "w_proj"])
    });
    assert_refused(&app, json!({"path": "unknown-module"}), "`w_proj`").await;

    let dir = fresh("missing-weights");
    std::fs::remove_file(dir.join("adapter_model.safetensors")).unwrap();
    assert_refused(
        &app,
        json!({"path": "missing-weights"}),
        "adapter_model.safetensors",
    )
    .await;

    let dir = fresh("ia3");
    edit_config(&dir, |c| c["peft_type"] = json!("IA3"));
    assert_refused(&app, json!({"path": "ia3"}), "`peft_type`").await;

    let dir = fresh("dora");
    edit_config(&dir, |c| c["use_dora"] = json!(true));
    assert_refused(&app, json!({"path": "dora"}), "`use_dora`").await;

    write_zero_adapter(&root.join("huge-rank"), 300);
    assert_refused(&app, json!({"path": "huge-rank"}), "at most 256").await;

    assert_refused(&app, json!({"path": "no-such-dir"}), "names nothing").await;
}

#[tokio::test]
async fn a_path_that_resolves_outside_the_adapter_root_is_refused() {
    // Arrange: a well-formed adapter outside the root, reached four ways.
    let (app, tmp, root) = app_with_root().await;
    let outside = write_adapter(&tmp.path().join("x"), 4);
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let mixed = root.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(
        outside.join("adapter_config.json"),
        mixed.join("adapter_config.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.join("adapter_model.safetensors"),
        mixed.join("adapter_model.safetensors"),
    )
    .unwrap();

    // Act and assert
    for path in [
        "../x".to_string(),
        outside.display().to_string(),
        "link".to_string(),
        "mixed".to_string(),
    ] {
        assert_refused(&app, json!({ "path": path }), "outside the adapter root").await;
    }
}

#[tokio::test]
async fn registering_needs_the_admin_scope_and_valid_fields() {
    let (app, _tmp, root) = app_with_root().await;
    write_adapter(&root.join("a"), 5);
    let annotator = app.client_with_scopes(&[Scope::Annotate]).await;

    let forbidden = annotator
        .post(app.url("/v1/adapters"))
        .json(&json!({"path": "a"}))
        .send()
        .await
        .unwrap();
    let anonymous = app
        .bare
        .post(app.url("/v1/adapters"))
        .json(&json!({"path": "a"}))
        .send()
        .await
        .unwrap();

    assert_error(forbidden, 403, None).await;
    assert_error(anonymous, 401, None).await;
    for (body, param) in [
        (json!({"path": "a", "algorithm": "no spaces"}), "algorithm"),
        (json!({"path": "a", "algorithm": "base"}), "algorithm"),
        (json!({"path": "a", "note": "n".repeat(2001)}), "note"),
        (json!({"path": ""}), "path"),
    ] {
        assert_error(register(&app, body).await, 400, Some(param)).await;
    }
    assert_error(
        register(&app, json!({"path": "a", "colour": 1})).await,
        400,
        None,
    )
    .await;
    assert_eq!(app.get("/v1/adapters/1").await.status(), 404);

    let failed = register_adapter(&app.store, None).await;
    app.store.fail_adapter(failed, "it broke").await.unwrap();
    let body = json!({"path": "a", "parent_version": failed});
    assert_error(register(&app, body).await, 400, Some("parent_version")).await;
    assert_eq!(
        app.get(&format!("/v1/adapters/{}", failed + 1))
            .await
            .status(),
        404
    );
}
