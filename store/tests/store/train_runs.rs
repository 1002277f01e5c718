//! Train runs, their steps, the adapter each one produces, and the data a run reads.

use chrono::Duration;
use flywheel_store::{
    AdapterStatus, Error, NewAdapter, NewTrainRun, Store, TrainRunStatus, TrainStep,
    TrainingDataFilter, TrainingSelect,
};
use serde_json::json;

use crate::helpers::{group_at, now, on_each_backend};
use crate::judgments::judgment;

fn new_run(parent_version: i64) -> NewTrainRun {
    NewTrainRun {
        algorithm: "dpo".into(),
        config: json!({"lr": 5e-6, "steps": 10}),
        base_model: "tiny".into(),
        parent_version,
        data_since: Some(now() - Duration::hours(1)),
        data_until: now(),
    }
}

fn step(step: i64, loss: f64) -> TrainStep {
    TrainStep {
        step,
        loss,
        reward_margin: 0.25,
        chosen_logratio: 0.5,
        rejected_logratio: 0.25,
        grad_norm: Some(1.5),
        lr: Some(1e-6),
        details: None,
    }
}

fn ready(parent_version: i64) -> NewAdapter {
    NewAdapter {
        parent_version,
        algorithm: "dpo".into(),
        train_run_id: None,
        path: Some("adapters/x".into()),
        sha256: Some("ab".repeat(32)),
        status: AdapterStatus::Ready,
        note: None,
        name: None,
    }
}

#[tokio::test]
async fn a_run_starts_running_and_reserves_the_next_adapter_version_as_training() {
    on_each_backend(|store| async move {
        // Act
        let run = store.create_train_run(&new_run(0)).await.unwrap();

        // Assert
        assert_eq!(run.status, TrainRunStatus::Running);
        assert_eq!(run.config, json!({"lr": 5e-6, "steps": 10}));
        assert_eq!(run.adapter_version, Some(1));
        assert!(run.data_since.unwrap() < run.data_until);
        let adapter = store.get_adapter(1).await.unwrap();
        assert_eq!(adapter.status, AdapterStatus::Training);
        assert_eq!(adapter.parent_version, Some(0));
        assert_eq!(adapter.train_run_id, Some(run.id));
        assert_eq!(adapter.algorithm, "dpo");
    })
    .await;
}

#[tokio::test]
async fn step_metrics_read_back_in_step_order_and_a_step_is_recorded_once() {
    on_each_backend(|store| async move {
        // Arrange
        let run = store.create_train_run(&new_run(0)).await.unwrap();

        // Act
        store
            .insert_train_step(run.id, &step(1, 0.5))
            .await
            .unwrap();
        store
            .insert_train_step(run.id, &step(0, 0.69))
            .await
            .unwrap();
        let grpo = TrainStep {
            details: Some(json!({"tokens": 120, "mean_kl": 0.01})),
            ..step(2, 0.1)
        };
        store.insert_train_step(run.id, &grpo).await.unwrap();
        let again = store.insert_train_step(run.id, &step(1, 0.4)).await;
        let nan = store.insert_train_step(run.id, &step(3, f64::NAN)).await;

        // Assert
        assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
        assert!(matches!(nan, Err(Error::Invalid(_))), "{nan:?}");
        let steps = store.train_steps(run.id).await.unwrap();
        assert_eq!(steps, vec![step(0, 0.69), step(1, 0.5), grpo]);
    })
    .await;
}

#[tokio::test]
async fn a_finished_run_makes_its_adapter_a_candidate_with_its_files() {
    on_each_backend(|store| async move {
        // Arrange
        let run = store.create_train_run(&new_run(0)).await.unwrap();

        // Act
        let adapter = store
            .finish_train_run(run.id, "adapters/1", &"cd".repeat(32))
            .await
            .unwrap();
        let twice = store.fail_train_run(run.id, "late failure").await;

        // Assert
        assert_eq!(adapter.version, 1);
        assert_eq!(adapter.status, AdapterStatus::Candidate);
        assert_eq!(adapter.path.as_deref(), Some("adapters/1"));
        assert_eq!(adapter.sha256, Some("cd".repeat(32)));
        let run = store.get_train_run(run.id).await.unwrap();
        assert_eq!(run.status, TrainRunStatus::Succeeded);
        assert!(run.finished_at.is_some() && run.error.is_none());
        assert!(matches!(twice, Err(Error::Conflict(_))), "{twice:?}");
    })
    .await;
}

#[tokio::test]
async fn a_failed_run_fails_its_adapter_too_and_records_the_error() {
    on_each_backend(|store| async move {
        // Arrange
        let run = store.create_train_run(&new_run(0)).await.unwrap();

        // Act
        store
            .fail_train_run(run.id, "no usable pairs")
            .await
            .unwrap();

        // Assert
        let run = store.get_train_run(run.id).await.unwrap();
        assert_eq!(run.status, TrainRunStatus::Failed);
        assert_eq!(run.error.as_deref(), Some("no usable pairs"));
        let adapter = store.get_adapter(1).await.unwrap();
        assert_eq!(adapter.status, AdapterStatus::Failed);
        assert_eq!(adapter.error.as_deref(), Some("no usable pairs"));
        let child = store.create_train_run(&new_run(1)).await;
        assert!(matches!(child, Err(Error::Invalid(_))), "{child:?}");
    })
    .await;
}

#[tokio::test]
async fn a_run_or_adapter_with_an_unknown_parent_is_not_found() {
    on_each_backend(|store| async move {
        let run = store.create_train_run(&new_run(9)).await;
        let adapter = store.insert_adapter(&ready(9)).await;

        assert!(matches!(run, Err(Error::NotFound("adapter"))), "{run:?}");
        assert!(
            matches!(adapter, Err(Error::NotFound("adapter"))),
            "{adapter:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn registered_adapters_take_consecutive_versions_after_reserved_ones() {
    on_each_backend(|store| async move {
        // Act
        let first = store.insert_adapter(&ready(0)).await.unwrap();
        let run = store
            .create_train_run(&new_run(first.version))
            .await
            .unwrap();
        let third = store.insert_adapter(&ready(first.version)).await.unwrap();

        // Assert
        assert_eq!(
            (first.version, run.adapter_version, third.version),
            (1, Some(2), 3)
        );
        assert_eq!(first.status, AdapterStatus::Ready);
        assert_eq!(third.parent_version, Some(1));
    })
    .await;
}

/// Stores a group of three responses on `version`, with one judgment of 0 against 1 when `judged`.
async fn stored(store: &Store, version: i64, at: chrono::DateTime<chrono::Utc>, judged: bool) {
    let mut g = group_at(at, 3);
    g.adapter_version = version;
    store.insert_group(&g).await.unwrap();
    if judged {
        store.insert_judgments(&[judgment(&g, 0, 1)]).await.unwrap();
    }
}

#[tokio::test]
async fn training_data_holds_judged_groups_of_the_window_and_version_with_prompt_ids() {
    on_each_backend(|store| async move {
        // Arrange
        let t = now();
        stored(&store, 0, t - Duration::hours(2), true).await;
        stored(&store, 0, t - Duration::minutes(5), true).await;
        stored(&store, 0, t - Duration::minutes(4), false).await;
        stored(&store, 1, t - Duration::minutes(3), true).await;
        let filter = TrainingDataFilter {
            adapter_version: Some(0),
            since: Some(t - Duration::hours(1)),
            until: Some(t),
            select: TrainingSelect::Judged,
        };

        // Act
        let groups = store.training_groups(&filter).await.unwrap();
        let every_version = store
            .training_groups(&TrainingDataFilter::default())
            .await
            .unwrap();

        // Assert
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g.adapter_version, 0);
        assert_eq!(g.prompt_token_ids, Some(vec![1, 2, 3, 4_000_000_000]));
        assert!(
            g.params.is_object(),
            "the sampling parameters come along: {}",
            g.params
        );
        let indices: Vec<i32> = g.responses.iter().map(|r| r.index).collect();
        assert_eq!(indices, vec![0, 1, 2]);
        assert_eq!(g.judgments.len(), 1);
        assert_eq!(g.judgments[0].response_a, g.responses[0].id);
        assert_eq!(every_version.len(), 3);
        assert!(every_version.windows(2).all(|w| w[0].id < w[1].id));
        let ids = store.group_prompt_token_ids(g.id).await.unwrap();
        assert_eq!(ids, g.prompt_token_ids);
    })
    .await;
}

#[tokio::test]
async fn the_latest_run_is_the_last_started_whatever_its_status() {
    on_each_backend(|store| async move {
        // Arrange
        assert_eq!(store.latest_train_run().await.unwrap(), None);
        let first = store.create_train_run(&new_run(0)).await.unwrap();
        store.fail_train_run(first.id, "boom").await.unwrap();
        let second = store.create_train_run(&new_run(0)).await.unwrap();
        store.fail_train_run(second.id, "again").await.unwrap();

        // Act
        let latest = store.latest_train_run().await.unwrap().unwrap();

        // Assert
        assert_eq!(latest.id, second.id);
        assert_eq!(latest.status, TrainRunStatus::Failed);
    })
    .await;
}
