//! `GET /v1/exports` and `flywheel export` write judged groups as JSONL in TRL's `dpo` and `kto`
//! formats, SPPO's win-rate format and a raw format with provenance, each with a manifest.

use clap::Parser;
use flywheel_server::cli::export::{manifest_path, write_export, ExportArgs};
use flywheel_server::cli::{Cli, Command};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, TestApp};
use crate::judgments::{judgment, sampled_group};

/// One group of three samples judged `r0 ≻ r1` and `r1 ≻ r2` (as `b` wins), and a tie `r0 = r2`.
async fn judged_group(app: &TestApp) -> (String, Vec<String>) {
    let (group, r) = sampled_group(app, 3).await;
    let batch = json!([
        judgment(&group, &r[0], &r[1], "a"),
        judgment(&group, &r[2], &r[1], "b"),
        judgment(&group, &r[0], &r[2], "tie"),
    ]);
    for body in batch.as_array().unwrap() {
        assert_eq!(app.post("/v1/judgments", body).await.status(), 201);
    }
    (group, r)
}

/// The export's lines, parsed, and its manifest header.
async fn export(app: &TestApp, query: &str) -> (Vec<Value>, Value) {
    let response = app.get(&format!("/v1/exports?{query}")).await;
    assert_eq!(response.status(), 200, "{query}");
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "{query}"
    );
    let manifest =
        serde_json::from_str(response.headers()["x-flywheel-manifest"].to_str().unwrap()).unwrap();
    let text = response.text().await.unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, manifest)
}

/// The texts of the group's responses in choice order.
async fn texts(app: &TestApp, group: &str) -> Vec<String> {
    let body = app.get_json(&format!("/v1/groups/{group}")).await;
    body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_dpo_export_has_one_chosen_and_rejected_pair_per_clear_judgment() {
    let app = spawn_app().await;
    let (group, _) = judged_group(&app).await;
    let t = texts(&app, &group).await;

    let (lines, manifest) = export(&app, "format=dpo").await;

    assert_eq!(lines.len(), 2, "the tie gives no pair");
    assert_eq!(lines[0]["prompt"][0]["role"], "user");
    assert_eq!(lines[0]["prompt"][0]["content"], "judge us");
    assert_eq!(
        lines[0]["chosen"],
        json!([{"role": "assistant", "content": t[0]}])
    );
    assert_eq!(
        lines[0]["rejected"],
        json!([{"role": "assistant", "content": t[1]}])
    );
    assert_eq!(lines[1]["chosen"][0]["content"], t[1]);
    assert_eq!(lines[1]["rejected"][0]["content"], t[2]);
    assert_eq!(manifest["format"], "dpo");
    assert_eq!(manifest["records"], 2);
    assert_eq!(manifest["groups"], 1);
    assert_eq!(manifest["judgments"], 3);
    assert_eq!(manifest["adapter_versions"], json!([0]));
    assert!(manifest["created_at"].is_string());
}

#[tokio::test]
async fn a_kto_export_labels_winners_true_and_losers_false() {
    let app = spawn_app().await;
    let (group, _) = judged_group(&app).await;
    let t = texts(&app, &group).await;

    let (lines, _) = export(&app, "format=kto").await;

    let labelled: Vec<(String, bool)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["completion"][0]["role"], "assistant");
            (
                l["completion"][0]["content"].as_str().unwrap().to_string(),
                l["label"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        labelled,
        vec![
            (t[0].clone(), true),
            (t[1].clone(), false),
            (t[1].clone(), true),
            (t[2].clone(), false)
        ]
    );
    assert_eq!(lines[0]["prompt"][0]["content"], "judge us");
}

#[tokio::test]
async fn an_sppo_export_gives_each_group_its_responses_and_win_rates() {
    let app = spawn_app().await;
    let (group, _) = judged_group(&app).await;
    let t = texts(&app, &group).await;
    let preferences = app
        .get_json(&format!("/v1/groups/{group}/preferences"))
        .await;

    let (lines, _) = export(&app, "format=sppo").await;

    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["responses"], json!(t));
    let rates: Vec<f64> = lines[0]["win_rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(rates.len(), 3);
    assert!(rates[0] > rates[2], "{rates:?}");
    for (i, rate) in rates.iter().enumerate() {
        let expected = preferences["responses"][i]["win_rate"].as_f64().unwrap();
        assert!((rate - expected).abs() < 1e-9, "{rates:?} vs {preferences}");
    }
}

#[tokio::test]
async fn a_raw_export_keeps_token_ids_logprobs_adapter_versions_and_judgments() {
    let app = spawn_app().await;
    let (group, r) = judged_group(&app).await;
    let (unjudged, _) = sampled_group(&app, 2).await;

    let (lines, manifest) = export(&app, "format=raw&adapter=0").await;

    assert_eq!(
        lines.len(),
        1,
        "only judged groups are exported, not {unjudged}"
    );
    let line = &lines[0];
    assert_eq!(line["group"]["id"], group);
    let responses = line["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3);
    assert_eq!(responses[0]["id"], r[0]);
    let ids = responses[0]["token_ids"].as_array().unwrap();
    assert!(!ids.is_empty());
    assert_eq!(
        responses[0]["logprobs"].as_array().unwrap().len(),
        ids.len()
    );
    assert_eq!(responses[0]["adapter_version"], 0);
    assert_eq!(line["judgments"].as_array().unwrap().len(), 3);
    assert_eq!(manifest["filters"]["adapter"], 0);
}

#[tokio::test]
async fn filters_select_groups_by_adapter_and_creation_time() {
    let app = spawn_app().await;
    judged_group(&app).await;

    let (other_adapter, _) = export(&app, "format=raw&adapter=7").await;
    let (future, _) = export(&app, "format=raw&since=2999-01-01T00:00:00Z").await;
    let (past, manifest) = export(&app, "format=raw&since=2000-01-01T00:00:00Z").await;

    assert!(other_adapter.is_empty());
    assert!(future.is_empty());
    assert_eq!(past.len(), 1);
    assert_eq!(manifest["filters"]["since"], "2000-01-01T00:00:00Z");
}

#[tokio::test]
async fn an_unknown_or_missing_format_is_a_400_naming_format() {
    let app = spawn_app().await;

    let unknown = app.get("/v1/exports?format=csv").await;
    let missing = app.get("/v1/exports").await;
    let bad_since = app.get("/v1/exports?format=dpo&since=yesterday").await;

    assert_error(unknown, 400, Some("format")).await;
    assert_error(missing, 400, Some("format")).await;
    assert_error(bad_since, 400, Some("since")).await;
}

#[tokio::test]
async fn flywheel_export_writes_the_jsonl_file_and_its_manifest() {
    let app = spawn_app().await;
    judged_group(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prefs.jsonl");
    let argv = [
        "flywheel",
        "export",
        "--format",
        "dpo",
        "--since",
        "2000-01-01T00:00:00Z",
        "--out",
        out.to_str().unwrap(),
    ];
    let args: ExportArgs = match Cli::try_parse_from(argv).unwrap().command {
        Command::Export(args) => args,
        other => panic!("parsed as {other:?}"),
    };

    write_export(&app.store, &args).await.unwrap();

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["chosen"][0]["role"] == "assistant"));
    let manifest_file = manifest_path(&out);
    assert_eq!(manifest_file, dir.path().join("prefs.jsonl.manifest.json"));
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest_file).unwrap()).unwrap();
    assert_eq!(manifest["format"], "dpo");
    assert_eq!(manifest["records"], 2);
    assert_eq!(manifest["filters"]["since"], "2000-01-01T00:00:00Z");
    assert_eq!(manifest["adapter_versions"], json!([0]));
    assert_eq!(manifest["base_models"].as_array().unwrap().len(), 1);
}
