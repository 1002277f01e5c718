//! The GRPO family end to end on the tiny model: `flywheel train --algo consistency-grpo` on variant
//! groups, `--algo grpo` on posted rewards and on win-rates from judgments; each ends in a
//! candidate adapter the engine serves, with its rewards and per-step metrics recorded.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use flywheel_server::cli::train::train;
use flywheel_store::{AdapterStatus, QualityGate, RewardFilter, RewardSource, TrainRunStatus};
use flywheel_trainer::{try_train_once, Algorithm, Outcome};
use serde_json::json;

use crate::helpers::{
    greedy, postgres_available, serve_version, spawn_app_with, AppOptions, TestApp, MODEL,
};
use crate::training::{judge, sample, train_args};
use crate::variants::{letters, variant_group};
use crate::worker::worker_config;

async fn app() -> TestApp {
    app_on(false).await
}

async fn app_on(postgres: bool) -> TestApp {
    spawn_app_with(AppOptions {
        postgres,
        units: Some(letters()),
        ..AppOptions::default()
    })
    .await
}

fn units_file(dir: &std::path::Path) -> String {
    let path = dir.join("units.json");
    std::fs::write(
        &path,
        r#"{"name": "letters", "patterns": [{"name": "letter", "regex": "[a-z]"}]}"#,
    )
    .unwrap();
    path.display().to_string()
}

/// The run that made `adapter`, checked to have succeeded.
async fn succeeded_run(
    app: &TestApp,
    adapter: &flywheel_store::Adapter,
) -> flywheel_store::TrainRun {
    let run = app
        .store
        .get_train_run(adapter.train_run_id.unwrap())
        .await
        .unwrap();
    assert_eq!(run.status, TrainRunStatus::Succeeded);
    run
}

/// Posts each response's index in its group as its rule reward.
async fn reward_by_index(app: &TestApp, group_id: uuid::Uuid) {
    let group = app.store.get_group(group_id).await.unwrap();
    for (k, r) in group.responses.iter().enumerate() {
        let reward = json!({"response_id": r.id, "value": k as f64, "source": "rule",
                            "annotator": "length-rule"});
        assert_eq!(app.post("/v1/rewards", &reward).await.status(), 201);
    }
}

#[tokio::test]
async fn consistency_grpo_trains_on_variant_groups_and_records_its_rewards() {
    // Arrange: two training families and one held-out family.
    let app = app().await;
    for (seed, prompt) in [(1, "Recommend three funds."), (2, "Name two nursing jobs.")] {
        variant_group(
            &app,
            json!({"model": MODEL, "prompt": prompt, "paraphrases": ["Say it another way.", "Once more."],
                   "n": 2, "temperature": 1.0, "max_tokens": 10, "seed": seed}),
        )
        .await;
    }
    let held_out = variant_group(
        &app,
        json!({"prompt": "Pick a bond.", "paraphrases": ["Which bond?"], "n": 2, "max_tokens": 6,
               "held_out": true}),
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let units = units_file(out.path());
    let args = train_args(
        out.path(),
        &[
            "--algo",
            "consistency-grpo",
            "--units",
            &units,
            "--steps",
            "3",
            "--lr",
            "1e-2",
            "--batch",
            "1",
            "--lora-targets",
            "all-linear",
        ],
    );

    // Act
    let adapter = train(&app.store, &args).await.unwrap();
    serve_version(&app, adapter.version).await;
    let body = app.chat(greedy("Which adapter is this?", 6)).await;

    // Assert
    assert_eq!(adapter.status, AdapterStatus::Candidate);
    assert_eq!(adapter.algorithm, "consistency-grpo");
    let run = succeeded_run(&app, &adapter).await;
    assert_eq!(run.config["grpo"]["loss_type"], "dapo");
    assert_eq!(run.config["lora_targets"], "all-linear");
    let dir = adapter.directory().unwrap().unwrap();
    let peft: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        peft["target_modules"].as_array().unwrap().len(),
        7,
        "{peft}"
    );
    let steps = app.store.train_steps(run.id).await.unwrap();
    assert_eq!(steps.len(), 3);
    for step in &steps {
        let details = step
            .details
            .as_ref()
            .expect("GRPO steps record their metrics");
        assert!(details["tokens"].as_u64().unwrap() > 0);
        assert!(details["max_abs_log_ratio"].as_f64().unwrap().is_finite());
    }
    // The first step is on-policy: π_θ is the sampler, so the ratio is 1 to rounding.
    let first = steps[0].details.as_ref().unwrap();
    assert!(
        first["max_abs_log_ratio"].as_f64().unwrap() < 1e-3,
        "{first}"
    );
    let rewards = app
        .store
        .list_rewards(&RewardFilter {
            source: Some(RewardSource::Consistency),
            limit: 100,
            ..RewardFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rewards.len(),
        12,
        "2 training groups of 3 variants × 2 samples"
    );
    let details = rewards[0].details.as_ref().unwrap();
    assert_eq!(details["extractor"], letters().version());
    assert!(details["units"].is_array() && details["group_entropy"].is_number());
    let held_out_id: uuid::Uuid = held_out["id"].as_str().unwrap().parse().unwrap();
    assert!(rewards.iter().all(|r| r.group_id != held_out_id));
    assert_eq!(body["adapter"], adapter.version);
}

/// The consistency rewards one run recorded for `group`, by response id, read through the API.
async fn consistency_rewards_of_run(
    app: &TestApp,
    group: &str,
    run: uuid::Uuid,
) -> std::collections::HashMap<String, serde_json::Value> {
    let listed = app
        .get_json(&format!("/v1/rewards?group={group}&source=consistency"))
        .await;
    listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["details"]["train_run"] == run.to_string())
        .map(|w| (w["response_id"].as_str().unwrap().to_string(), w.clone()))
        .collect()
}

/// `--quality-gate`: each consistency reward is the ungated one times the response's gate, from
/// rewards or judgments posted through the API, and recorded with it; a response without a gate
/// is left out of training and gets no record.
async fn a_quality_gate_from_posted_rewards_or_judgments_scales_consistency_rewards(
    postgres: bool,
) {
    // Arrange: one variant group of 4 responses, trained once ungated to learn its rewards.
    let app = app_on(postgres).await;
    let body = variant_group(
        &app,
        json!({"model": MODEL, "prompt": "Recommend three funds.", "paraphrases": ["Which funds?"],
               "n": 2, "temperature": 1.0, "max_tokens": 10, "seed": 5}),
    )
    .await;
    let group = body["id"].as_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let units = units_file(out.path());
    let base = [
        "--algo",
        "consistency-grpo",
        "--units",
        &units,
        "--steps",
        "1",
    ];
    let plain = train(&app.store, &train_args(out.path(), &base))
        .await
        .unwrap();
    let plain = consistency_rewards_of_run(&app, &group, plain.train_run_id.unwrap()).await;
    assert_eq!(plain.len(), 4);
    let value = |rewards: &std::collections::HashMap<String, serde_json::Value>, id: &str| {
        rewards[id]["value"].as_f64().unwrap()
    };
    // The best-rewarded answer gets gate 1, so the gated group still has a spread to learn from.
    let mut ids: Vec<String> = plain.keys().cloned().collect();
    ids.sort_by(|a, b| value(&plain, b).total_cmp(&value(&plain, a)));
    assert!(value(&plain, &ids[0]) > 0.0);
    let rewards = json!({"rewards": [
        {"response_id": ids[0], "value": 1.0, "source": "rule", "annotator": "verifier"},
        {"response_id": ids[1], "value": 0.25, "source": "rule", "annotator": "verifier"},
        {"response_id": ids[1], "value": 0.75, "source": "model", "annotator": "rm"},
        {"response_id": ids[2], "value": 0.0, "source": "human", "annotator": "ann"},
    ]});
    assert_eq!(app.post("/v1/rewards", &rewards).await.status(), 201);
    for (a, b, outcome) in [(0, 1, "a"), (0, 2, "tie"), (2, 1, "both_bad")] {
        let judgment = json!({"group_id": group, "response_a": ids[a], "response_b": ids[b],
                              "outcome": outcome, "annotator": "judge-1"});
        assert_eq!(app.post("/v1/judgments", &judgment).await.status(), 201);
    }
    let gated_args =
        |gate: &str| train_args(out.path(), &[&base[..], &["--quality-gate", gate]].concat());

    // Act
    let by_rewards = train(&app.store, &gated_args("posted")).await.unwrap();
    let by_judgments = train(&app.store, &gated_args("judgments")).await.unwrap();

    // Assert: gates 1, ½(0.25 + 0.75), 0 from the rewards; ½(1 + ½), ½(0 + 0), ½(½ + 0) from the
    // judgments. The fourth answer has neither.
    for (adapter, name, gates) in [
        (&by_rewards, "posted", [1.0, 0.5, 0.0]),
        (&by_judgments, "judgments", [0.75, 0.0, 0.25]),
    ] {
        let run = succeeded_run(&app, adapter).await;
        assert_eq!(run.config["grpo"]["quality_gate"], name);
        let gated = consistency_rewards_of_run(&app, &group, run.id).await;
        assert_eq!(gated.len(), 3, "{name}: the ungated answer has no record");
        assert!(!gated.contains_key(&ids[3]));
        for (id, gate) in ids.iter().zip(gates) {
            let details = &gated[id]["details"];
            assert_eq!(details["quality_gate"], name);
            assert_eq!(details["gate"], gate, "{name}");
            let expected = gate * value(&plain, id);
            assert!(
                (value(&gated, id) - expected).abs() < 1e-9,
                "{name}: {details}"
            );
        }
    }
}

#[tokio::test]
async fn a_quality_gate_from_posted_rewards_or_judgments_scales_consistency_rewards_on_sqlite() {
    a_quality_gate_from_posted_rewards_or_judgments_scales_consistency_rewards(false).await;
}

#[tokio::test]
async fn a_quality_gate_from_posted_rewards_or_judgments_scales_consistency_rewards_on_postgres() {
    if postgres_available().await {
        a_quality_gate_from_posted_rewards_or_judgments_scales_consistency_rewards(true).await;
    }
}

/// With a quality gate the worker counts a variant group as new only once every answer has its
/// verdict, so it does not train, and spend the group, before the judges have spoken.
#[tokio::test]
async fn a_gated_consistency_worker_waits_until_every_answer_of_a_group_has_its_verdict() {
    // Arrange: one variant group of 4 answers; a worker that trains on one new group.
    let app = app().await;
    let body = variant_group(
        &app,
        json!({"model": MODEL, "prompt": "Recommend three funds.", "paraphrases": ["Which funds?"],
               "n": 2, "temperature": 1.0, "max_tokens": 10, "seed": 9}),
    )
    .await;
    let ids: Vec<&str> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let out = tempfile::tempdir().unwrap();
    let mut config = worker_config(out.path(), 1);
    config.job.algorithm = Algorithm::ConsistencyGrpo;
    config.job.steps = 1;
    config.job.grpo.units = Some(units_file(out.path()).into());
    config.job.grpo.quality_gate = Some(QualityGate::Judgments);
    let cancel = Arc::new(AtomicBool::new(false));
    let judge_pair = |a: usize, b: usize| {
        json!({"group_id": body["id"], "response_a": ids[a], "response_b": ids[b], "outcome": "a",
               "annotator": "judge-1"})
    };

    // Act
    assert_eq!(
        app.post("/v1/judgments", &judge_pair(0, 1)).await.status(),
        201
    );
    let half_judged = try_train_once(&app.store, &config, &cancel).await.unwrap();
    assert_eq!(
        app.post("/v1/judgments", &judge_pair(2, 3)).await.status(),
        201
    );
    let judged = try_train_once(&app.store, &config, &cancel).await.unwrap();

    // Assert
    assert_eq!(half_judged, Outcome::NothingNew);
    assert_eq!(judged, Outcome::Trained(1));
    let adapter = app.store.get_adapter(1).await.unwrap();
    let run = succeeded_run(&app, &adapter).await;
    assert_eq!(run.config["grpo"]["quality_gate"], "judgments");
}

#[tokio::test]
async fn grpo_trains_on_posted_rewards_and_on_win_rates_from_judgments() {
    // Arrange: two sample groups, rewarded through the API and judged round-robin.
    let app = app().await;
    let mut groups = Vec::new();
    for (i, prompt) in ["Name a colour", "Name an animal"].iter().enumerate() {
        let id = sample(&app, prompt, 3, i as i64).await;
        judge(&app, id).await;
        groups.push(id);
    }
    for id in &groups {
        reward_by_index(&app, *id).await;
    }
    let out = tempfile::tempdir().unwrap();
    let steps = ["--steps", "2", "--lr", "1e-2", "--batch", "2"];
    let posted = train_args(out.path(), &[&["--algo", "grpo"][..], &steps].concat());
    let win_rates = train_args(
        out.path(),
        &[
            &[
                "--algo",
                "grpo",
                "--grpo-rewards",
                "win-rate",
                "--grpo-loss",
                "grpo",
            ][..],
            &steps,
        ]
        .concat(),
    );

    // Act
    let first = train(&app.store, &posted).await.unwrap();
    let second = train(&app.store, &win_rates).await.unwrap();

    // Assert
    for adapter in [&first, &second] {
        assert_eq!(adapter.status, AdapterStatus::Candidate);
        assert_eq!(adapter.algorithm, "grpo");
        let run = succeeded_run(&app, adapter).await;
        assert_eq!(app.store.train_steps(run.id).await.unwrap().len(), 2);
    }
    let run = app
        .store
        .get_train_run(second.train_run_id.unwrap())
        .await
        .unwrap();
    assert_eq!(run.config["grpo"]["rewards"], "win-rate");
    assert_eq!(run.config["grpo"]["loss_type"], "grpo");
}

/// `--grpo-stop-kl`: on the tiny model one update at lr 1e-2 carries the policy far from the
/// sampler, so the second step finds the drift, trains nothing, and rolls the adapter back to the
/// parent's weights; the run still succeeds and says where it stopped.
#[tokio::test]
async fn the_drift_stop_ends_a_grpo_run_that_moved_too_far_and_records_where() {
    // Arrange
    let app = app().await;
    for (i, prompt) in ["Name a colour", "Name an animal"].iter().enumerate() {
        let id = sample(&app, prompt, 3, i as i64).await;
        reward_by_index(&app, id).await;
    }
    let out = tempfile::tempdir().unwrap();
    let args = train_args(
        out.path(),
        &[
            "--algo",
            "grpo",
            "--steps",
            "6",
            "--lr",
            "1e-2",
            "--batch",
            "1",
            "--grpo-stop-kl",
            "1e-3",
        ],
    );

    // Act
    let adapter = train(&app.store, &args).await.unwrap();

    // Assert
    let run = succeeded_run(&app, &adapter).await;
    assert_eq!(run.config["grpo"]["stop_kl"], 1e-3);
    let steps = app.store.train_steps(run.id).await.unwrap();
    assert_eq!(steps.len(), 2, "stopped at the second of six steps");
    let first = steps[0].details.as_ref().unwrap();
    assert_eq!(first["stopped"], false);
    assert!(first["behaviour_kl"].as_f64().unwrap() < 1e-3, "{first}");
    let second = steps[1].details.as_ref().unwrap();
    assert_eq!(second["stopped"], true);
    assert!(second["behaviour_kl"].as_f64().unwrap() > 1e-3, "{second}");
    assert!(
        steps[1].grad_norm.is_none(),
        "the stopped step trained nothing"
    );
    // Rolled back to before the only update: LoRA B is its zero initialisation again.
    let dir = adapter.directory().unwrap().unwrap();
    let weights = std::fs::read(dir.join(flywheel_store::PEFT_WEIGHTS_FILE)).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let mut b_matrices = 0;
    for (name, view) in tensors.tensors() {
        if name.contains("lora_B") {
            b_matrices += 1;
            assert!(view.data().iter().all(|&byte| byte == 0), "{name}");
        }
    }
    assert!(b_matrices > 0);
}

#[tokio::test]
async fn a_grpo_run_without_rewards_fails_and_says_why() {
    let app = app().await;
    sample(&app, "Nobody rewards this", 2, 3).await;
    let out = tempfile::tempdir().unwrap();
    let args = train_args(out.path(), &["--algo", "grpo", "--steps", "1"]);

    let message = format!("{:#}", train(&app.store, &args).await.unwrap_err());

    assert!(message.contains("no usable GRPO groups"), "{message}");
    let adapter = app.store.get_adapter(1).await.unwrap();
    assert_eq!(adapter.status, AdapterStatus::Failed);
}

#[tokio::test]
async fn consistency_grpo_without_an_extractor_fails_before_training() {
    let app = app().await;
    variant_group(
        &app,
        json!({"prompt": "Recommend funds.", "paraphrases": ["Which funds?"], "n": 2, "max_tokens": 4}),
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let args = train_args(out.path(), &["--algo", "consistency-grpo", "--steps", "1"]);

    let message = format!("{:#}", train(&app.store, &args).await.unwrap_err());

    assert!(message.contains("--units"), "{message}");
}
