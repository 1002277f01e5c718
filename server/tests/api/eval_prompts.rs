//! Held-out evaluation prompts: `POST`/`GET /v1/eval-prompts` (admin) and
//! `flywheel eval-prompts import`, each prompt stored once, every bad field named.

use std::path::Path;
use std::process::Command;

use flywheel_store::{Scope, Store};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, AppOptions, TestApp};

const PATH: &str = "/v1/eval-prompts";

fn eval_prompt(question: &str) -> Value {
    json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]})
}

async fn total(app: &TestApp) -> i64 {
    app.get_json(PATH).await["total"].as_i64().unwrap()
}

#[tokio::test]
async fn a_posted_eval_prompt_is_stored_and_listed() {
    // Arrange
    let app = spawn_app().await;
    let body = json!({
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Name "}, {"type": "text", "text": "a prime."}]},
        ],
        "label": "math",
    });

    // Act
    let response = app.post(PATH, &body).await;

    // Assert
    assert_eq!(response.status(), 201);
    let stored: Value = response.json().await.unwrap();
    assert_eq!(stored["created"], true);
    assert_eq!(stored["label"], "math");
    assert_eq!(stored["source"], "api");
    assert_eq!(
        stored["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}])
    );
    let id = stored["id"].as_str().unwrap().parse().unwrap();
    let read = app.store.get_eval_prompt(id).await.unwrap();
    assert_eq!(read.label.as_deref(), Some("math"));
    let page = app.get_json(PATH).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["data"][0]["id"], stored["id"]);
}

#[tokio::test]
async fn a_batch_is_stored_whole_and_says_which_prompts_were_new() {
    // Arrange
    let app = spawn_app().await;
    assert_eq!(app.post(PATH, &eval_prompt("one")).await.status(), 201);
    let batch =
        json!({"eval_prompts": [eval_prompt("one"), eval_prompt("two"), eval_prompt("two")]});

    // Act
    let response = app.post(PATH, &batch).await;

    // Assert
    assert_eq!(response.status(), 201);
    let list: Value = response.json().await.unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["created"], 1);
    let created: Vec<bool> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["created"].as_bool().unwrap())
        .collect();
    assert_eq!(created, [false, true, false]);
    assert_eq!(list["data"][1]["id"], list["data"][2]["id"]);
    assert_eq!(total(&app).await, 2);
}

#[tokio::test]
async fn posting_the_same_prompt_again_is_a_200_with_the_stored_one() {
    // Arrange
    let app = spawn_app().await;
    let first: Value = app
        .post(PATH, &eval_prompt("again"))
        .await
        .json()
        .await
        .unwrap();
    let mut relabelled = eval_prompt("again");
    relabelled["label"] = json!("other");

    // Act
    let response = app.post(PATH, &relabelled).await;

    // Assert: the stored prompt, with its own (absent) label.
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.unwrap();
    assert_eq!(again["created"], false);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["label"], Value::Null);
    let batch = json!({"eval_prompts": [eval_prompt("again")]});
    assert_eq!(app.post(PATH, &batch).await.status(), 200);
    assert_eq!(total(&app).await, 1);
}

#[tokio::test]
async fn each_invalid_field_is_a_400_naming_it_and_nothing_is_stored() {
    let app = spawn_app().await;
    let user = |content: &str| json!({"role": "user", "content": content});
    let in_batch =
        |bad: Value| json!({"eval_prompts": [eval_prompt("fine"), eval_prompt("fine too"), bad]});
    let cases = [
        (json!({}), "messages"),
        (json!({"messages": []}), "messages"),
        (json!({"messages": "hi"}), "messages"),
        (
            json!({"messages": [user("x")], "temperature": 1}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
        (
            json!({"messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": 4}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "42"}, user("x")]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": [user("x"), {"role": "assistant", "content": "y"}]}),
            "messages[1].role",
        ),
        (json!({"messages": [user("x")], "label": " "}), "label"),
        (json!({"messages": [user("x")], "label": 3}), "label"),
        (
            json!({"messages": [user("x")], "label": "x".repeat(256)}),
            "label",
        ),
        (json!([1]), "body"),
        (json!({"eval_prompts": []}), "eval_prompts"),
        (json!({"eval_prompts": {}}), "eval_prompts"),
        (
            json!({"eval_prompts": [eval_prompt("x")], "label": "l"}),
            "label",
        ),
        (in_batch(json!(7)), "eval_prompts[2]"),
        (
            in_batch(json!({"messages": [{"role": "wizard", "content": "x"}]})),
            "eval_prompts[2].messages[0].role",
        ),
        (
            in_batch(json!({"messages": [user("x")], "label": ""})),
            "eval_prompts[2].label",
        ),
        (
            in_batch(json!({"messages": [user("x")], "n": 2})),
            "eval_prompts[2].n",
        ),
    ];
    for (body, param) in cases {
        let response = app.post(PATH, &body).await;
        let error = assert_error(response, 400, Some(param)).await;
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    }
    let too_many: Vec<Value> = (0..1001).map(|i| eval_prompt(&format!("q{i}"))).collect();
    let response = app.post(PATH, &json!({ "eval_prompts": too_many })).await;
    assert_error(response, 400, Some("eval_prompts")).await;
    assert_eq!(total(&app).await, 0);
}

#[tokio::test]
async fn a_nul_is_a_400_naming_its_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let mut in_content = eval_prompt("a\u{0}b");
    let batch = json!({"eval_prompts": [eval_prompt("fine"), in_content.clone()]});
    assert_error(
        app.post(PATH, &in_content).await,
        400,
        Some("messages[1].content"),
    )
    .await;
    assert_error(
        app.post(PATH, &batch).await,
        400,
        Some("eval_prompts[1].messages[1].content"),
    )
    .await;
    in_content = eval_prompt("fine");
    in_content["label"] = json!("m\u{0}");
    assert_error(app.post(PATH, &in_content).await, 400, Some("label")).await;
    assert_eq!(total(&app).await, 0);
}

#[tokio::test]
async fn eval_prompts_need_the_admin_scope() {
    let app = spawn_app().await;
    let annotate = app.client_with_scopes(&[Scope::Annotate]).await;
    let admin = app.client_with_scopes(&[Scope::Admin]).await;
    let body = eval_prompt("scoped");

    let bare = app
        .bare
        .post(app.url(PATH))
        .json(&body)
        .send()
        .await
        .unwrap();
    let refused = annotate
        .post(app.url(PATH))
        .json(&body)
        .send()
        .await
        .unwrap();
    let listed = annotate.get(app.url(PATH)).send().await.unwrap();
    let allowed = admin.post(app.url(PATH)).json(&body).send().await.unwrap();

    assert_error(bare, 401, None).await;
    let body = assert_error(refused, 403, None).await;
    assert_eq!(body["error"]["type"], "permission_error");
    assert_error(listed, 403, None).await;
    assert_eq!(allowed.status(), 201);
    assert_eq!(total(&app).await, 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = spawn_app_with(AppOptions {
        max_body_bytes: 1024,
        ..Default::default()
    })
    .await;
    let response = app.post(PATH, &eval_prompt(&"x".repeat(2048))).await;
    assert_error(response, 413, None).await;
}

#[tokio::test]
async fn eval_prompts_are_listed_newest_first_in_pages() {
    // Arrange
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..3).map(|i| eval_prompt(&format!("q{i}"))).collect();
    let stored: Value = app
        .post(PATH, &json!({ "eval_prompts": batch }))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = stored["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["id"])
        .collect();

    // Act
    let first = app.get_json(&format!("{PATH}?limit=2")).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .get_json(&format!("{PATH}?limit=2&cursor={cursor}"))
        .await;

    // Assert
    assert_eq!(first["data"][0]["id"], *ids[2]);
    assert_eq!(first["data"][1]["id"], *ids[1]);
    assert_eq!(second["data"][0]["id"], *ids[0]);
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    assert_eq!(second["total"], 3);
    assert_error(
        app.get(&format!("{PATH}?limit=0")).await,
        400,
        Some("limit"),
    )
    .await;
    assert_error(
        app.get(&format!("{PATH}?cursor=nope")).await,
        400,
        Some("cursor"),
    )
    .await;
}

/// Runs `flywheel eval-prompts import` on `file` against `database`; `(success, stdout, stderr)`.
fn import(database: &str, file: &Path, extra: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flywheel"))
        .args(["eval-prompts", "import"])
        .arg(file)
        .args(extra)
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flywheel");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn the_cli_imports_a_good_file_once_and_refuses_a_bad_one_whole() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("eval.db").display());
    let good = dir.path().join("good.jsonl");
    write_lines(
        &good,
        &[
            eval_prompt("Name a prime."),
            json!({"prompt": "Name a colour.", "category": "open"}),
            json!({"prompt": "Name a tree.", "label": "botany"}),
        ],
    );
    let bad = dir.path().join("bad.jsonl");
    write_lines(
        &bad,
        &[
            json!({"prompt": "Fine."}),
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
        ],
    );

    // Act
    let (first_ok, first_out, first_err) = import(&database, &good, &["--label", "smoke"]);
    let (again_ok, again_out, _) = import(&database, &good, &[]);
    let (bad_ok, _, bad_err) = import(&database, &bad, &[]);

    // Assert
    assert!(first_ok, "{first_err}");
    assert!(first_out.contains("3 new"), "{first_out}");
    assert!(again_ok);
    assert!(
        again_out.contains("0 new, 3 already present"),
        "{again_out}"
    );
    assert!(!bad_ok);
    assert!(bad_err.contains("line 2"), "{bad_err}");
    assert!(bad_err.contains("`messages[0].role`"), "{bad_err}");
    let store = Store::connect(&database).await.unwrap();
    assert_eq!(store.count_eval_prompts().await.unwrap(), 3);
    let labels: Vec<Option<String>> = store
        .list_eval_prompts(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.label)
        .collect();
    assert_eq!(
        labels,
        [
            Some("botany".into()),
            Some("smoke".into()),
            Some("smoke".into())
        ]
    );
}
