//! What we train is what we serve: the trainer scores served samples with the server's own
//! log-probs, an adapter it writes makes the server generate what the trainer predicts, and
//! `flywheel train` turns stored judgments into an adapter the engine loads.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use clap::Parser;
use flywheel_server::cli::train::{train, TrainArgs};
use flywheel_server::cli::{Cli, Command};
use flywheel_store::{
    AdapterStatus, Error as StoreError, JudgmentSource, NewJudgment, Outcome, TrainRunStatus,
};
use flywheel_trainer::{
    prepare_pairs, sequence_logprobs, write_adapter, Adapter, Dpo, LoraConfig, LoraTargets,
    LoraWeights, Model, Objective, OptimConfig, PairExample, Sequence, TrainConfig, Trainer,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    greedy, serve_adapter, serve_version, spawn_app, tiny_model_dir, TestApp, MODEL,
};

/// The tiny model with a LoRA on its attention trained for `steps` steps (AdamW at 5e-2) on one
/// pair.
pub fn trained_on(
    objective: impl Objective + Copy + 'static,
    pair: PairExample,
    steps: usize,
) -> Model {
    trained_on_targets(objective, pair, steps, LoraTargets::Attention)
}

fn trained_on_targets(
    objective: impl Objective + Copy + 'static,
    pair: PairExample,
    steps: usize,
    targets: LoraTargets,
) -> Model {
    let model = tiny_model(targets);
    let pairs = prepare_pairs(&model, &objective, vec![pair], Adapter::Off).unwrap();
    let config = TrainConfig {
        optim: OptimConfig {
            lr: 5e-2,
            warmup_steps: 0,
            total_steps: steps,
            ..OptimConfig::default()
        },
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, Box::new(objective), config).unwrap();
    for _ in 0..steps {
        trainer.step(&pairs).unwrap();
    }
    drop(trainer);
    model
}

fn tiny_model(targets: LoraTargets) -> Model {
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        target_modules: targets.modules(),
        ..LoraConfig::default()
    };
    Model::load(&tiny_model_dir(), lora, DType::F32, &Device::Cpu).unwrap()
}

/// `n` samples at temperature 1; returns the group id.
pub async fn sample(app: &TestApp, content: &str, n: u32, seed: i64) -> Uuid {
    let body = app
        .chat(json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "temperature": 1.0,
            "max_tokens": 12,
            "n": n,
            "seed": seed,
        }))
        .await;
    group_id(&body)
}

fn group_id(body: &Value) -> Uuid {
    body["group_id"].as_str().unwrap().parse().unwrap()
}

/// The index of the largest value of a [vocab] row.
fn argmax(row: &Tensor) -> u32 {
    row.argmax(0).unwrap().to_scalar::<u32>().unwrap()
}

#[tokio::test]
async fn the_trainer_scores_a_sampled_response_with_the_log_probs_the_server_sampled_it_with() {
    // Arrange
    let app = spawn_app().await;
    let id = sample(&app, "Tell me a short story about a fox", 2, 11).await;
    let group = app.store.get_group(id).await.unwrap();
    let prompt = app.store.group_prompt_token_ids(id).await.unwrap();
    let prompt = prompt.expect("the server records the prompt token ids");
    assert_eq!(prompt.len() as i64, group.group.prompt_tokens);
    let model = tiny_model(LoraTargets::Attention);

    // Act
    let scored: Vec<Vec<f64>> = group
        .responses
        .iter()
        .map(|r| {
            let seq = Sequence::new(prompt.clone(), r.token_ids.clone()).unwrap();
            sequence_logprobs(&model, &seq, Adapter::Off)
                .unwrap()
                .per_token
        })
        .collect();

    // Assert
    for (r, ours) in group.responses.iter().zip(&scored) {
        assert_eq!(ours.len(), r.logprobs.len());
        for (k, (&trainer, &server)) in ours.iter().zip(&r.logprobs).enumerate() {
            assert!(
                (trainer - server as f64).abs() < 1e-4,
                "response {} token {k}: trainer {trainer}, server {server}",
                r.index
            );
        }
    }
}

#[tokio::test]
async fn an_adapter_the_trainer_wrote_makes_the_server_generate_what_the_trainer_predicts() {
    served_as_trained(LoraTargets::Attention).await;
}

#[tokio::test]
async fn an_adapter_on_every_linear_layer_is_served_as_the_trainer_wrote_it() {
    // Arrange: the adapter served, and one answer sampled from it at temperature 1.
    let served = served_as_trained(LoraTargets::AllLinear).await;
    let model = &served.model;
    let id = sample(&served.app, "Tell me a short story about a fox", 1, 5).await;
    let group = served.app.store.get_group(id).await.unwrap();
    let prompt = served.app.store.group_prompt_token_ids(id).await.unwrap();
    let response = &group.responses[0];
    let seq = Sequence::new(prompt.unwrap(), response.token_ids.clone()).unwrap();
    // The same adapter with its MLP half zeroed: what a server that skipped those modules serves.
    let attention_only = LoraWeights::from_pairs(
        model
            .lora_modules()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (a, b) = served.weights.pair(i).unwrap();
                let b = if m.name.contains(".mlp.") {
                    b.zeros_like().unwrap()
                } else {
                    b.clone()
                };
                (a.clone(), b)
            })
            .collect(),
    );
    let gap = |weights: &LoraWeights| {
        let ours = sequence_logprobs(model, &seq, Adapter::Fixed(weights)).unwrap();
        ours.per_token
            .iter()
            .zip(&response.logprobs)
            .map(|(&trainer, &server)| (trainer - server as f64).abs())
            .fold(0.0, f64::max)
    };

    // Act
    let full = gap(&served.weights);
    let without_mlp = gap(&attention_only);

    // Assert: the server's log-probs are the full adapter's, and the MLP's half matters.
    assert_eq!(
        model.lora_modules().len(),
        7 * model.config().num_hidden_layers
    );
    assert!(
        full < 1e-4,
        "largest gap to the trainer's log-probs: {full}"
    );
    assert!(
        without_mlp > 1e-3,
        "the MLP adapters changed nothing: {without_mlp}"
    );
}

/// A trained model, its LoRA weights and a server serving them.
struct Served {
    model: Model,
    weights: LoraWeights,
    app: TestApp,
}

/// Trains the tiny model's LoRA on `targets`, serves the adapter the trainer writes and checks
/// that the server's greedy answer is the trainer's argmax path.
async fn served_as_trained(targets: LoraTargets) -> Served {
    // Arrange: a few DPO steps, so that B ≠ 0 and the adapter changes the model.
    let seq = |r: &[u32]| Sequence::new(vec![1, 100, 101, 102], r.to_vec()).unwrap();
    let pair = PairExample {
        chosen: seq(&[110, 111, 112]),
        rejected: seq(&[120, 121, 122]),
        win_rates: None,
    };
    let model = trained_on_targets(Dpo::default(), pair, 10, targets);
    let weights = model.snapshot().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("1");
    write_adapter(&dir, &model, &weights, "tiny").unwrap();
    let app = spawn_app().await;
    serve_adapter(&app, &dir).await;

    // Act
    let body = app.chat(greedy("What does the adapter say?", 20)).await;
    let id = group_id(&body);
    let served = app.store.get_group(id).await.unwrap().responses[0]
        .token_ids
        .clone();
    let prompt = app.store.group_prompt_token_ids(id).await.unwrap().unwrap();
    let mut ids = prompt.clone();
    let mut predicted = Vec::new();
    for _ in 0..served.len() {
        let logits = model.logits(&ids, Adapter::Fixed(&weights)).unwrap();
        let next = argmax(&logits.i(ids.len() - 1).unwrap());
        predicted.push(next);
        ids.push(next);
    }

    // Assert
    assert_eq!(body["adapter"], 1);
    assert_eq!(predicted, served);
    let with = model.logits(&prompt, Adapter::Fixed(&weights)).unwrap();
    let without = model.logits(&prompt, Adapter::Off).unwrap();
    let moved: f32 = (with - without)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(moved > 1e-3, "the trained adapter should change the logits");
    Served {
        model,
        weights,
        app,
    }
}

/// Parses a `flywheel train` command line writing adapters under `out`.
pub fn train_args(out: &Path, extra: &[&str]) -> TrainArgs {
    let model = tiny_model_dir();
    let mut argv = vec![
        "flywheel",
        "train",
        "--model",
        model.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--rank",
        "4",
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Train(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

/// Judges a group round-robin: response i beats every response after it.
pub async fn judge(app: &TestApp, id: Uuid) {
    let group = app.store.get_group(id).await.unwrap();
    let mut judgments = Vec::new();
    for (i, a) in group.responses.iter().enumerate() {
        for b in &group.responses[i + 1..] {
            judgments.push(NewJudgment {
                group_id: id,
                response_a: a.id,
                response_b: b.id,
                outcome: Outcome::A,
                strength: None,
                annotator: "rule-1".into(),
                source: JudgmentSource::Rule,
                rationale: None,
                criteria: None,
                idempotency_key: None,
            });
        }
    }
    app.store.insert_judgments(&judgments).await.unwrap();
}

#[tokio::test]
async fn flywheel_train_turns_stored_judgments_into_a_candidate_adapter_the_engine_serves() {
    // Arrange
    let app = spawn_app().await;
    for (i, prompt) in ["Name a colour", "Name an animal"].iter().enumerate() {
        let id = sample(&app, prompt, 3, i as i64).await;
        judge(&app, id).await;
    }
    let out = tempfile::tempdir().unwrap();
    let args = train_args(
        out.path(),
        &[
            "--algo", "dpo", "--steps", "3", "--lr", "1e-2", "--batch", "2",
        ],
    );

    // Act
    let adapter = train(&app.store, &args).await.unwrap();
    let path = adapter.path.clone().unwrap();
    serve_version(&app, adapter.version).await;
    let body = app.chat(greedy("Which adapter is this?", 8)).await;

    // Assert
    assert_eq!(adapter.version, 1);
    assert_eq!(adapter.status, AdapterStatus::Candidate);
    assert_eq!(adapter.parent_version, Some(0));
    assert_eq!(adapter.algorithm, "dpo");
    assert_eq!(Path::new(&path), out.path().join("1"));
    assert_eq!(adapter.sha256.as_ref().map(String::len), Some(64));
    let run_id = adapter.train_run_id.unwrap();
    let run = app.store.get_train_run(run_id).await.unwrap();
    assert_eq!(run.status, TrainRunStatus::Succeeded);
    assert_eq!(run.adapter_version, Some(1));
    let steps = app.store.train_steps(run_id).await.unwrap();
    assert_eq!(steps.len(), 3);
    assert!(steps
        .iter()
        .all(|s| s.loss.is_finite() && s.grad_norm.is_some()));
    assert_eq!(body["adapter"], 1);
}

#[tokio::test]
async fn a_train_run_without_usable_pairs_fails_and_leaves_no_servable_adapter_behind() {
    // Arrange: samples, but no judgments.
    let app = spawn_app().await;
    sample(&app, "Nobody judges this", 2, 3).await;
    let out = tempfile::tempdir().unwrap();
    let args = train_args(out.path(), &["--algo", "sppo", "--steps", "2"]);

    // Act
    let result = train(&app.store, &args).await;

    // Assert
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("no usable training pairs"), "{message}");
    let adapter = app.store.get_adapter(1).await.unwrap();
    assert_eq!(adapter.status, AdapterStatus::Failed);
    let run = app
        .store
        .get_train_run(adapter.train_run_id.unwrap())
        .await
        .unwrap();
    assert_eq!(run.status, TrainRunStatus::Failed);
    assert!(run.error.unwrap().contains("no usable"));
    assert!(!out.path().join("1").exists());
}

#[tokio::test]
async fn a_train_run_from_an_unknown_parent_is_refused_before_anything_is_recorded() {
    // Arrange
    let app = spawn_app().await;
    let out = tempfile::tempdir().unwrap();
    let args = train_args(out.path(), &["--algo", "inpo", "--parent", "7"]);

    // Act
    let result = train(&app.store, &args).await;

    // Assert
    let message = format!("{:#}", result.unwrap_err());
    assert!(
        message.contains("unknown parent adapter version 7"),
        "{message}"
    );
    let next = app.store.get_adapter(1).await;
    assert!(matches!(next, Err(StoreError::NotFound("adapter"))));
}
