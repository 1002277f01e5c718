//! The trainer worker and the server following the store: enough new judgments train a child of
//! the active adapter, which (under `--promotion always`) becomes active, and the engine swaps to
//! it. The worker under the gate: `arena.rs`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use flywheel_server::engine::follow::sync_active;
use flywheel_server::engine::swap::Swapped;
use flywheel_store::{AdapterStatus, NewAdapter, TrainRunStatus};
use flywheel_trainer::{
    try_train_once, Algorithm, Compute, GrpoSettings, JobConfig, Outcome, TrainDevice, TrainDtype,
    WorkerConfig,
};

use crate::helpers::{greedy, spawn_app, tiny_model_dir};
use crate::training::{judge, sample};

pub fn worker_config(out: &std::path::Path, min_new_judgments: i64) -> WorkerConfig {
    WorkerConfig {
        job: JobConfig {
            algorithm: Algorithm::Dpo,
            model: tiny_model_dir(),
            parent: None,
            since: None,
            steps: 2,
            lr: 1e-2,
            rank: Some(4),
            lora_targets: None,
            batch: 2,
            out_dir: out.to_path_buf(),
            all_versions: false,
            seed: 0,
            grpo: GrpoSettings::default(),
            compute: Compute {
                device: TrainDevice::Cpu,
                dtype: TrainDtype::F32,
            },
        },
        min_new_judgments,
        activate: true,
        interval: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn enough_new_judgments_train_an_adapter_that_becomes_active_and_is_served() {
    // Arrange: two groups of three samples, judged round-robin (3 judgments each).
    let app = spawn_app().await;
    let out = tempfile::tempdir().unwrap();
    let config = worker_config(out.path(), 6);
    let cancel = Arc::new(AtomicBool::new(false));
    let first = sample(&app, "Name a colour", 3, 1).await;
    judge(&app, first).await;
    let too_few = try_train_once(&app.store, &config, &cancel).await.unwrap();
    let second = sample(&app, "Name an animal", 3, 2).await;
    judge(&app, second).await;

    // Act
    let trained = try_train_once(&app.store, &config, &cancel).await.unwrap();
    let swapped = sync_active(&app.store, &app.engine).await.unwrap();
    let body = app.chat(greedy("Which adapter is this?", 4)).await;
    let again = try_train_once(&app.store, &config, &cancel).await.unwrap();
    let settled = sync_active(&app.store, &app.engine).await.unwrap();

    // Assert
    assert_eq!(too_few, Outcome::NothingNew);
    assert_eq!(trained, Outcome::Trained(1));
    assert_eq!(app.store.active_adapter_version().await.unwrap(), 1);
    let adapter = app.store.get_adapter(1).await.unwrap();
    assert_eq!(adapter.status, AdapterStatus::Active);
    assert_eq!(adapter.parent_version, Some(0));
    assert_eq!(swapped, Swapped::From(0, 1));
    assert_eq!(body["adapter"], 1);
    // The new policy has no judged samples yet.
    assert_eq!(again, Outcome::NothingNew);
    assert_eq!(settled, Swapped::Already);
}

#[tokio::test]
async fn a_failed_run_is_recorded_and_not_retried_until_new_judgments_arrive() {
    // Arrange: judgments that are all ties give no pair to learn from.
    let app = spawn_app().await;
    let out = tempfile::tempdir().unwrap();
    let config = worker_config(out.path(), 1);
    let cancel = Arc::new(AtomicBool::new(false));
    let id = sample(&app, "Tie me", 2, 5).await;
    let group = app.store.get_group(id).await.unwrap();
    let tie = serde_json::json!({
        "group_id": id, "response_a": group.responses[0].id, "response_b": group.responses[1].id,
        "outcome": "tie", "annotator": "ann-1",
    });
    assert_eq!(app.post("/v1/judgments", &tie).await.status(), 201);

    // Act
    let failed = try_train_once(&app.store, &config, &cancel).await;
    let next = try_train_once(&app.store, &config, &cancel).await.unwrap();

    // Assert
    let message = format!("{:#}", failed.unwrap_err());
    assert!(message.contains("no usable training pairs"), "{message}");
    let run = app.store.latest_train_run().await.unwrap().unwrap();
    assert_eq!(run.status, TrainRunStatus::Failed);
    assert_eq!(next, Outcome::NothingNew);
    assert_eq!(app.store.active_adapter_version().await.unwrap(), 0);
}

#[tokio::test]
async fn an_active_adapter_that_does_not_load_here_leaves_the_store_alone_and_the_old_version_serving(
) {
    // Arrange: an adapter activated in the store whose files this server cannot see.
    let app = spawn_app().await;
    let adapter = app
        .store
        .insert_adapter(&NewAdapter {
            parent_version: 0,
            algorithm: "dpo".into(),
            train_run_id: None,
            path: Some("/nonexistent/adapter".into()),
            sha256: Some("ab".repeat(32)),
            status: AdapterStatus::Ready,
            note: None,
            name: None,
        })
        .await
        .unwrap();
    app.store.activate_adapter(adapter.version).await.unwrap();

    // Act
    let result = sync_active(&app.store, &app.engine).await;
    let ready = app.get_json("/ready").await;

    // Assert: this replica's trouble is its own.
    assert!(result.is_err());
    assert_eq!(app.engine.active().version, 0);
    assert_eq!(
        app.store.active_adapter_version().await.unwrap(),
        adapter.version
    );
    let stored = app.store.get_adapter(adapter.version).await.unwrap();
    assert_eq!(stored.status, AdapterStatus::Active);
    assert_eq!(ready["status"], "stale", "{ready}");
    assert_eq!(ready["adapter"], 0);
    assert_eq!(ready["wanted_adapter"], adapter.version);
    assert!(ready["adapter_error"]
        .as_str()
        .is_some_and(|e| e.contains("/nonexistent/adapter")));
    app.chat(greedy("still answering", 2)).await;
    assert!(sync_active(&app.store, &app.engine).await.is_err());
}
