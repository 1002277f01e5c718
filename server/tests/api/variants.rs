//! Variant groups, rewards and the consistency report: `POST /v1/variant-groups`, `POST/GET
//! /v1/rewards`, `GET /v1/consistency`, on both store backends.

use std::sync::Arc;

use flywheel_trainer::UnitExtractor;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, postgres_available, spawn_app_with, AppOptions, TestApp, MODEL,
};

/// Units of the tiny model's random text: the letters a response uses.
pub fn letters() -> Arc<UnitExtractor> {
    let spec = r#"{"name": "letters", "patterns": [{"name": "letter", "regex": "[a-z]"}]}"#;
    Arc::new(UnitExtractor::from_json(spec).unwrap())
}

async fn app(postgres: bool) -> TestApp {
    spawn_app_with(AppOptions {
        postgres,
        units: Some(letters()),
        ..AppOptions::default()
    })
    .await
}

/// Posts a variant group that must be created; returns the body.
pub async fn variant_group(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/variant-groups", &body).await;
    let status = response.status();
    let json: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{json}");
    json
}

async fn a_variant_group_samples_every_paraphrase_n_times_in_a_fresh_context(postgres: bool) {
    let app = app(postgres).await;

    let body = variant_group(
        &app,
        json!({
            "model": MODEL,
            "system": "You recommend index funds.",
            "prompt": "Recommend three index funds for a beginner.",
            "paraphrases": ["Which three index funds suit a beginner?", "Name 3 beginner index funds."],
            "n": 2, "temperature": 0.9, "max_tokens": 8, "seed": 5,
        }),
    )
    .await;

    assert_eq!(body["kind"], "variants");
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 6);
    let variants: Vec<i64> = responses
        .iter()
        .map(|r| r["variant"].as_i64().unwrap())
        .collect();
    assert_eq!(variants, [0, 0, 1, 1, 2, 2]);
    for r in responses {
        let prompt = r["prompt"].as_array().unwrap();
        assert_eq!(prompt.len(), 2, "system prompt and the variant alone: {r}");
        assert_eq!(prompt[0]["content"], "You recommend index funds.");
        assert_eq!(
            r["token_ids"].as_array().unwrap().len(),
            r["logprobs"].as_array().unwrap().len()
        );
        assert!(!r["prompt_token_ids"].as_array().unwrap().is_empty());
    }
    assert_eq!(
        responses[2]["prompt"][1]["content"],
        "Which three index funds suit a beginner?"
    );
    let meta = &body["variant_group"];
    assert_eq!(
        (
            meta["variants"].as_i64(),
            meta["samples_per_variant"].as_i64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(meta["paraphrased_by"], "caller");
    assert_eq!(meta["held_out"], false);
    let id = body["id"].as_str().unwrap();
    let read = app.get_json(&format!("/v1/variant-groups/{id}")).await;
    assert_eq!(read["responses"], body["responses"]);
    let group = app.get_json(&format!("/v1/groups/{id}")).await;
    assert_eq!(group["kind"], "variants");
}

#[tokio::test]
async fn a_variant_group_samples_every_paraphrase_n_times_in_a_fresh_context_on_sqlite() {
    a_variant_group_samples_every_paraphrase_n_times_in_a_fresh_context(false).await;
}

#[tokio::test]
async fn a_variant_group_samples_every_paraphrase_n_times_in_a_fresh_context_on_postgres() {
    if postgres_available().await {
        a_variant_group_samples_every_paraphrase_n_times_in_a_fresh_context(true).await;
    }
}

#[tokio::test]
async fn the_policy_writes_the_paraphrases_when_asked_for_a_count() {
    let app = app(false).await;

    let body = variant_group(
        &app,
        json!({"prompt": "Name two job titles in nursing.", "paraphrases": 2, "n": 1,
               "max_tokens": 4, "seed": 9}),
    )
    .await;

    let meta = &body["variant_group"];
    assert_eq!(meta["paraphrased_by"], "policy");
    let variants = meta["variants"].as_i64().unwrap();
    assert!((2..=3).contains(&variants), "{meta}");
    let asked: Vec<&str> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prompt"][0]["content"].as_str().unwrap())
        .collect();
    assert_eq!(asked[0], "Name two job titles in nursing.");
    assert!(
        asked[1..]
            .iter()
            .all(|p| !p.trim().is_empty() && *p != asked[0]),
        "{asked:?}"
    );
    assert!(body["params"]["paraphrase_instruction"].is_string());
}

#[tokio::test]
async fn bad_variant_groups_are_refused_naming_the_field_and_store_nothing() {
    let app = app(false).await;
    let base = json!({"prompt": "Recommend funds.", "paraphrases": ["Which funds?"]});
    let with = |patch: Value| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (with(json!({"prompt": "  "})), 400, "prompt"),
        (with(json!({"paraphrases": []})), 400, "paraphrases"),
        (with(json!({"paraphrases": 0})), 400, "paraphrases"),
        (with(json!({"paraphrases": 9})), 400, "paraphrases"),
        (
            with(json!({"paraphrases": ["ok", " "]})),
            400,
            "paraphrases[1]",
        ),
        (with(json!({"n": 0})), 400, "n"),
        (
            with(json!({"n": 16, "paraphrases": ["a", "b", "c", "d"]})),
            400,
            "n",
        ),
        (with(json!({"temperature": 3})), 400, "temperature"),
        (with(json!({"family": ""})), 400, "family"),
    ];
    for (body, status, param) in cases {
        assert_error(
            app.post("/v1/variant-groups", &body).await,
            status,
            Some(param),
        )
        .await;
    }
    assert_error(
        app.post("/v1/variant-groups", &with(json!({"model": "nope"})))
            .await,
        404,
        None,
    )
    .await;
    assert_error(
        app.post("/v1/variant-groups", &with(json!({"extra": 1})))
            .await,
        400,
        None,
    )
    .await;
    let groups = app.get_json("/v1/groups").await;
    assert!(groups["data"].as_array().unwrap().is_empty(), "{groups}");
    assert_error(
        app.get(&format!("/v1/variant-groups/{}", uuid::Uuid::now_v7()))
            .await,
        404,
        None,
    )
    .await;
}

async fn rewards_are_stored_idempotently_and_listed(postgres: bool) {
    let app = app(postgres).await;
    let group = variant_group(
        &app,
        json!({"prompt": "Recommend funds.", "paraphrases": ["Which funds?"], "n": 1, "max_tokens": 4}),
    )
    .await;
    let ids: Vec<String> = group["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let one = json!({"response_id": ids[0], "value": 0.75, "source": "rule", "annotator": "verifier",
                     "rationale": "2 of 3 funds valid", "details": {"valid": 2}, "client_id": "r-1"});

    let first = app.post("/v1/rewards", &one).await;
    assert_eq!(first.status(), 201);
    let stored: Value = first.json().await.unwrap();
    let replay = app.post("/v1/rewards", &one).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], stored["id"]);
    let mut changed = one.clone();
    changed["value"] = json!(0.5);
    assert_error(app.post("/v1/rewards", &changed).await, 409, None).await;
    let batch = json!({"rewards": [
        {"response_id": ids[1], "value": -1.0, "source": "model", "annotator": "rm"},
        {"response_id": ids[0], "value": 1.0, "source": "human", "annotator": "ann"},
    ]});
    let created = app.post("/v1/rewards", &batch).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.json::<Value>().await.unwrap()["created"], 2);

    assert_eq!(stored["group_id"], group["id"]);
    assert_eq!(stored["details"]["valid"], 2);
    let listed = app
        .get_json(&format!(
            "/v1/rewards?group={}",
            group["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    let rules = app.get_json("/v1/rewards?source=rule&limit=1").await;
    assert_eq!(rules["data"][0]["value"], 0.75);
    let page = app.get_json("/v1/rewards?limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get_json(&format!("/v1/rewards?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rewards_are_stored_idempotently_and_listed_on_sqlite() {
    rewards_are_stored_idempotently_and_listed(false).await;
}

#[tokio::test]
async fn rewards_are_stored_idempotently_and_listed_on_postgres() {
    if postgres_available().await {
        rewards_are_stored_idempotently_and_listed(true).await;
    }
}

#[tokio::test]
async fn bad_rewards_are_refused_naming_the_field_and_a_bad_batch_stores_nothing() {
    let app = app(false).await;
    let group = variant_group(
        &app,
        json!({"prompt": "Recommend funds.", "paraphrases": ["Which funds?"], "n": 1, "max_tokens": 4}),
    )
    .await;
    let id = group["responses"][0]["id"].as_str().unwrap().to_string();
    let ok = json!({"response_id": id, "value": 1.0, "source": "rule", "annotator": "v"});
    let with = |k: &str, v: Value| {
        let mut body = ok.clone();
        body[k] = v;
        body
    };
    let cases = [
        (with("value", json!(1e7)), "value"),
        (with("value", json!("high")), "value"),
        (with("source", json!("consistency")), "source"),
        (with("annotator", json!(" ")), "annotator"),
        (
            with("response_id", json!(uuid::Uuid::now_v7())),
            "response_id",
        ),
        (with("details", json!([1])), "details"),
    ];
    for (body, param) in cases {
        assert_error(app.post("/v1/rewards", &body).await, 400, Some(param)).await;
    }
    let batch = json!({"rewards": [ok, with("value", json!(f64::MAX))]});
    assert_error(
        app.post("/v1/rewards", &batch).await,
        400,
        Some("rewards[1].value"),
    )
    .await;
    let listed = app.get_json("/v1/rewards").await;
    assert!(listed["data"].as_array().unwrap().is_empty(), "{listed}");
}

#[tokio::test]
async fn the_consistency_report_measures_held_out_groups_and_needs_an_extractor() {
    let app = app(false).await;
    for (held_out, prompt) in [
        (true, "Recommend funds."),
        (true, "Pick stocks."),
        (false, "Train."),
    ] {
        variant_group(
            &app,
            json!({"prompt": prompt, "paraphrases": ["Say it again."], "n": 2, "max_tokens": 6,
                   "seed": 3, "held_out": held_out}),
        )
        .await;
    }

    let report = app.get_json("/v1/consistency?adapter=0").await;
    let training = app
        .get_json("/v1/consistency?adapter=0&held_out=false")
        .await;

    assert_eq!(report["groups"], 2);
    assert_eq!(report["responses"], 8);
    assert_eq!(training["groups"], 1);
    let entropy = report["mean_entropy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&entropy), "{report}");
    assert!(report["mean_answer_tokens"].as_f64().unwrap() > 0.0);
    // Every group has 4 answers, so a group's top share never exceeds its share of answers
    // naming a unit, nor does the mean.
    let top = report["mean_top_unit_share"].as_f64().unwrap();
    let named = report["answers_with_units"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&top) && top <= named && named <= 1.0,
        "{report}"
    );
    assert_eq!(report["extractor"], letters().version());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"flywheel_consistency{measure="groups",version="0"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"flywheel_consistency{measure="top_unit_share",version="0"}"#),
        "{metrics}"
    );
    assert_error(
        app.get("/v1/consistency?adapter=x").await,
        400,
        Some("adapter"),
    )
    .await;
    assert_error(
        app.get("/v1/consistency?held_out=maybe").await,
        400,
        Some("held_out"),
    )
    .await;
    assert_error(app.get("/v1/consistency?adapter=99").await, 404, None).await;
    let bare = spawn_app_with(AppOptions::default()).await;
    assert_error(bare.get("/v1/consistency").await, 409, None).await;
}

#[tokio::test]
async fn the_grpo_export_holds_rewarded_groups_with_each_variants_prompt_and_behaviour_log_probs() {
    let app = app(false).await;
    let group = variant_group(
        &app,
        json!({"prompt": "Recommend funds.", "paraphrases": ["Which funds?"], "n": 1,
               "max_tokens": 4, "temperature": 0.7}),
    )
    .await;
    variant_group(
        &app,
        json!({"prompt": "Unrewarded.", "paraphrases": ["Still unrewarded."], "n": 1, "max_tokens": 4}),
    )
    .await;
    let responses = group["responses"].as_array().unwrap();
    let rewards: Vec<Value> = [(0, 1.0), (0, 0.0), (1, 0.25)]
        .iter()
        .map(|&(i, value)| {
            json!({"response_id": responses[i]["id"], "value": value, "source": "rule",
                   "annotator": format!("rule-{value}")})
        })
        .collect();
    let posted = app
        .post("/v1/rewards", &json!({ "rewards": rewards }))
        .await;
    assert_eq!(posted.status(), 201);

    let response = app.get("/v1/exports?format=grpo").await;
    assert_eq!(response.status(), 200);
    let manifest: Value =
        serde_json::from_str(response.headers()["x-flywheel-manifest"].to_str().unwrap()).unwrap();
    let text = response.text().await.unwrap();

    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "only the rewarded group: {text}");
    assert_eq!(manifest["format"], "grpo");
    let line = &lines[0];
    assert_eq!(
        (line["kind"].as_str(), line["temperature"].as_f64()),
        (Some("variants"), Some(0.7))
    );
    let exported = line["responses"].as_array().unwrap();
    assert_eq!(exported[0]["reward"], 0.5, "the mean of its two rewards");
    assert_eq!(exported[1]["reward"], 0.25);
    for (e, r) in exported.iter().zip(responses) {
        assert_eq!(e["prompt"], r["prompt"]);
        assert_eq!(e["prompt_token_ids"], r["prompt_token_ids"]);
        assert_eq!(e["completion_token_ids"], r["token_ids"]);
        // Widened from f32 to f64 on the way through a JSON value: equal as f32.
        let f32s = |v: &Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        assert_eq!(f32s(&e["behaviour_logprobs"]), f32s(&r["logprobs"]));
        assert_eq!(e["variant"], r["variant"]);
    }
    let raw = app
        .get("/v1/exports?format=raw")
        .await
        .text()
        .await
        .unwrap();
    assert!(raw.is_empty(), "raw exports judged groups only: {raw}");
}
