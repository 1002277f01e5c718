//! `flywheel import`: preference JSONL in TRL's `dpo` format → judged groups, tokenized as served,
//! stored once, and usable by the trainer.

use std::path::Path;

use clap::Parser;
use flywheel_server::cli::export::{write_export, ExportArgs};
use flywheel_server::cli::import::{import_file, ImportArgs, ImportReport};
use flywheel_server::cli::{Cli, Command};
use flywheel_store::{JudgmentFilter, JudgmentSource, Outcome, TrainingDataFilter};
use flywheel_trainer::{pairs_from_store, PairSelection};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, MODEL};

fn import_args(file: &Path, extra: &[&str]) -> ImportArgs {
    let mut argv = vec!["flywheel", "import", file.to_str().unwrap()];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Import(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

async fn import(app: &TestApp, file: &Path, extra: &[&str]) -> anyhow::Result<ImportReport> {
    import_file(&app.store, &app.engine.active(), &import_args(file, extra)).await
}

fn write_lines(dir: &Path, lines: &[Value]) -> std::path::PathBuf {
    let path = dir.join("pairs.jsonl");
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

/// A served chat group of three samples, judged 0 > 1 and 2 > 1.
async fn served_judged_group(app: &TestApp) -> uuid::Uuid {
    let body = app
        .chat(json!({
            "model": MODEL,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}],
            "temperature": 1.0, "max_tokens": 12, "n": 3, "seed": 7,
        }))
        .await;
    let group = body["group_id"].as_str().unwrap().to_string();
    let r: Vec<&str> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["response_id"].as_str().unwrap())
        .collect();
    for (a, b) in [(r[0], r[1]), (r[2], r[1])] {
        let judgment = json!({"group_id": group, "response_a": a, "response_b": b, "outcome": "a", "annotator": "ann-1"});
        assert_eq!(app.post("/v1/judgments", &judgment).await.status(), 201);
    }
    group.parse().unwrap()
}

fn dpo_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            json!({"prompt": v["prompt"], "chosen": v["chosen"], "rejected": v["rejected"]})
        })
        .collect()
}

#[tokio::test]
async fn an_exported_dpo_file_imports_into_the_same_pairs_tokenized_as_served() {
    // Arrange: a served, judged group exported as dpo.
    let source = spawn_app().await;
    let served = served_judged_group(&source).await;
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("exported.jsonl");
    let export_args = |out: &Path| -> ExportArgs {
        let argv = [
            "flywheel",
            "export",
            "--format",
            "dpo",
            "--out",
            out.to_str().unwrap(),
        ];
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Export(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    };
    write_export(&source.store, &export_args(&exported))
        .await
        .unwrap();
    let target = spawn_app().await;

    // Act
    let report = import(
        &target,
        &exported,
        &["--annotator", "ultrafeedback", "--source", "model"],
    )
    .await
    .unwrap();

    // Assert: the same pairs come back out.
    assert_eq!(
        report,
        ImportReport {
            records: 2,
            imported: 2,
            already_present: 0,
            invalid: 0
        }
    );
    let reexported = dir.path().join("reexported.jsonl");
    write_export(&target.store, &export_args(&reexported))
        .await
        .unwrap();
    let mut before = dpo_lines(&std::fs::read_to_string(&exported).unwrap());
    let mut after = dpo_lines(&std::fs::read_to_string(&reexported).unwrap());
    let order = |v: &Value| v.to_string();
    before.sort_by_key(order);
    after.sort_by_key(order);
    assert_eq!(before, after);
    // The prompt is tokenized exactly as the server tokenized it when it served the group.
    let served_ids = source.store.group_prompt_token_ids(served).await.unwrap();
    let judgments = target
        .store
        .list_judgments(&JudgmentFilter::default())
        .await
        .unwrap();
    assert_eq!(judgments.len(), 2);
    for j in &judgments {
        assert_eq!(j.outcome, Outcome::A);
        assert_eq!(j.annotator, "ultrafeedback");
        assert_eq!(j.source, JudgmentSource::Model);
        let ids = target
            .store
            .group_prompt_token_ids(j.group_id)
            .await
            .unwrap();
        assert_eq!(ids, served_ids);
        let group = target.store.get_group(j.group_id).await.unwrap();
        assert_eq!(group.responses[0].id, j.response_a);
        let eos = *group.responses[0].token_ids.last().unwrap();
        assert!(target.engine.active().eos().contains(&eos));
    }
}

#[tokio::test]
async fn importing_a_file_again_adds_only_new_records_and_the_trainer_can_use_them() {
    // Arrange: UltraFeedback's shape, then the same file with one more record.
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let record = |q: &str, good: &str, bad: &str| {
        json!({
            "prompt": q, "prompt_id": q.len(),
            "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": good}],
            "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": bad}],
            "messages": [{"role": "user", "content": q}],
            "score_chosen": 8.5, "score_rejected": 3.0,
        })
    };
    let mut lines = vec![
        record("Name a prime.", "7", "8"),
        record("Capital of France?", "Paris.", "Lyon."),
    ];
    let first = write_lines(dir.path(), &lines);
    import(&app, &first, &[]).await.unwrap();
    lines.push(json!({"prompt": "2+2=", "chosen": "4", "rejected": "5"}));
    let second = write_lines(dir.path(), &lines);

    // Act
    let report = import(&app, &second, &[]).await.unwrap();

    // Assert
    assert_eq!(
        report,
        ImportReport {
            records: 3,
            imported: 1,
            already_present: 2,
            invalid: 0
        }
    );
    let groups = app
        .store
        .training_groups(&TrainingDataFilter::default())
        .await
        .unwrap();
    assert_eq!(groups.len(), 3);
    let mut metadata = Vec::new();
    for g in &groups {
        let stored = app.store.get_group(g.id).await.unwrap();
        metadata.push(stored.group.params["import"]["metadata"].clone());
    }
    assert!(
        metadata.contains(&json!({"prompt_id": 13, "score_chosen": 8.5, "score_rejected": 3.0}))
    );
    let selection = PairSelection {
        policy_version: Some(0),
        ..PairSelection::default()
    };
    let vocab = flywheel_trainer::Model::load(
        &crate::helpers::tiny_model_dir(),
        flywheel_trainer::LoraConfig::default(),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .config()
    .vocab_size;
    let (pairs, report) = pairs_from_store(&groups, &selection, vocab).unwrap();
    assert_eq!((pairs.len(), report.pairs), (3, 3));
}

#[tokio::test]
async fn a_file_with_a_bad_record_stores_nothing_unless_told_to_skip_it() {
    // Arrange
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_lines(
        dir.path(),
        &[
            json!({"prompt": "p", "chosen": "x", "rejected": "y"}),
            json!({"prompt": "p", "chosen": "x"}),
            json!({"prompt": "q", "chosen": "same", "rejected": "same"}),
        ],
    );

    // Act
    let refused = import(&app, &file, &[]).await.unwrap_err();
    let nothing = app
        .store
        .list_judgments(&JudgmentFilter::default())
        .await
        .unwrap();
    let skipped = import(&app, &file, &["--skip-invalid"]).await.unwrap();

    // Assert
    let message = format!("{refused:#}");
    assert!(
        message.contains("2 of 3 records cannot be imported; nothing was stored"),
        "{message}"
    );
    assert!(
        message.contains("line 2: `rejected` is missing"),
        "{message}"
    );
    assert!(
        message.contains("line 3: `chosen` and `rejected` are the same text"),
        "{message}"
    );
    assert!(nothing.is_empty());
    assert_eq!(
        skipped,
        ImportReport {
            records: 3,
            imported: 1,
            already_present: 0,
            invalid: 2
        }
    );
}

#[tokio::test]
async fn an_unknown_adapter_version_or_a_missing_file_is_a_clear_error() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_lines(
        dir.path(),
        &[json!({"prompt": "p", "chosen": "x", "rejected": "y"})],
    );

    let unknown = import(&app, &file, &["--adapter-version", "9"])
        .await
        .unwrap_err();
    let missing = import(&app, &dir.path().join("nope.jsonl"), &[])
        .await
        .unwrap_err();

    assert!(format!("{unknown:#}").contains("`--adapter-version 9` is not a known adapter"));
    assert!(format!("{missing:#}").contains("cannot open"));
}
