//! Hostile inputs: NUL characters, unparsable path and query values, incomplete tool messages. Each
//! is refused with an OpenAI-shaped 400 naming the field, before any work, on both backends.

use serde_json::{json, Value};

use crate::helpers::{
    assert_error, greedy, postgres_available, spawn_app_with, AppOptions, TestApp, MODEL,
};
use crate::judgments::{judgment, sampled_group};

/// The app on SQLite, then on Postgres when it answers.
async fn apps_on_both_backends() -> Vec<TestApp> {
    let mut apps = vec![spawn_app_with(AppOptions::default()).await];
    if postgres_available().await {
        apps.push(
            spawn_app_with(AppOptions {
                postgres: true,
                ..Default::default()
            })
            .await,
        );
    }
    apps
}

async fn group_count(app: &TestApp) -> usize {
    app.get_json("/v1/groups?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_nul_in_a_generation_request_is_a_400_naming_the_field_and_nothing_is_sampled() {
    for app in apps_on_both_backends().await {
        let before = group_count(&app).await;
        let mut chat = greedy("a\u{0}b", 3);
        assert_error(
            app.post("/v1/chat/completions", &chat).await,
            400,
            Some("messages[0].content"),
        )
        .await;
        chat = greedy("fine", 3);
        chat["user"] = json!("eve\u{0}");
        assert_error(
            app.post("/v1/chat/completions", &chat).await,
            400,
            Some("user"),
        )
        .await;
        let parts = json!([{"type": "text", "text": "x\u{0}"}]);
        chat = greedy("fine", 3);
        chat["messages"][0]["content"] = parts;
        assert_error(
            app.post("/v1/chat/completions", &chat).await,
            400,
            Some("messages[0].content[0].text"),
        )
        .await;
        let completion = json!({"model": MODEL, "prompt": "\u{0}", "max_tokens": 2});
        assert_error(
            app.post("/v1/completions", &completion).await,
            400,
            Some("prompt"),
        )
        .await;
        assert_eq!(group_count(&app).await, before);
    }
}

#[tokio::test]
async fn a_nul_in_a_judgment_is_a_400_naming_the_field_and_nothing_is_stored() {
    for app in apps_on_both_backends().await {
        let (group, r) = sampled_group(&app, 2).await;
        let base = judgment(&group, &r[0], &r[1], "a");
        for (field, value) in [
            ("annotator", json!("al\u{0}ice")),
            ("rationale", json!("because\u{0}")),
            ("criteria", json!({"note": "\u{0}"})),
            ("client_id", json!("key-\u{0}")),
        ] {
            let mut body = base.clone();
            body[field] = value;
            let error = assert_error(app.post("/v1/judgments", &body).await, 400, None).await;
            let param = error["error"]["param"].as_str().unwrap();
            assert!(param.starts_with(field), "{field}: {error}");
        }
        let batch = json!({"judgments": [base.clone(), {"annotator": "\u{0}"}]});
        assert_error(
            app.post("/v1/judgments", &batch).await,
            400,
            Some("judgments[1].annotator"),
        )
        .await;
        assert_eq!(app.get_json("/v1/judgments").await["data"], json!([]));
        for path in [
            "/v1/judgments?annotator=%00",
            "/v1/annotation/next?annotator=a%00b",
        ] {
            assert_error(app.get(path).await, 400, Some("annotator")).await;
        }
        // The store refuses it too, so a caller that skips the API cannot lose data either.
        let stored = app.post("/v1/judgments", &base).await;
        assert_eq!(stored.status(), 201);
    }
}

#[tokio::test]
async fn other_control_characters_are_stored_faithfully_on_both_backends() {
    let text = "tab\tbell\u{7}esc\u{1b}unit\u{1f}del\u{7f}";
    for app in apps_on_both_backends().await {
        let mut chat = greedy(text, 2);
        chat["user"] = json!(text);
        let body = app.chat(chat).await;
        let group = app
            .get_json(&format!(
                "/v1/groups/{}",
                body["group_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(group["prompt"][0]["content"], text, "{group}");
        assert_eq!(group["user"], text, "{group}");
        let (group, r) = sampled_group(&app, 2).await;
        let mut j = judgment(&group, &r[0], &r[1], "b");
        j["rationale"] = json!(text);
        j["annotator"] = json!("ctl\u{1}");
        assert_eq!(app.post("/v1/judgments", &j).await.status(), 201);
        let listed = app.get_json("/v1/judgments").await;
        assert_eq!(listed["data"][0]["rationale"], text);
        assert_eq!(listed["data"][0]["annotator"], "ctl\u{1}");
    }
}

#[tokio::test]
async fn unparsable_path_and_query_values_are_json_400s_naming_the_parameter() {
    let app = spawn_app_with(AppOptions::default()).await;
    for (path, param) in [
        ("/v1/adapters/abc", "version"),
        ("/v1/adapters/9223372036854775808", "version"),
        ("/v1/adapters/abc/activate", "version"),
        ("/v1/groups?adapter=abc", "adapter"),
        ("/v1/groups?limit=-1", "limit"),
    ] {
        let response = if path.ends_with("/activate") {
            app.client.post(app.url(path)).send().await.unwrap()
        } else {
            app.get(path).await
        };
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        assert_error(response, 400, Some(param)).await;
    }
}

#[tokio::test]
async fn a_tool_message_needs_the_call_it_answers() {
    let app = spawn_app_with(AppOptions::default()).await;
    let mut request = greedy("what is the weather", 2);
    let messages = request["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": "calling the tool"}));
    messages.push(json!({"role": "tool", "content": "sunny"}));
    assert_error(
        app.post("/v1/chat/completions", &request).await,
        400,
        Some("messages[2].tool_call_id"),
    )
    .await;
    request["messages"][2]["tool_call_id"] = Value::from("call_1");
    app.chat(request).await;
}
