use flywheel_server::engine::EngineConfig;
use serde_json::json;

use crate::helpers::{assert_error, greedy, spawn_app, spawn_app_with, AppOptions, MODEL};

#[tokio::test]
async fn malformed_json_is_a_400_in_the_openai_shape() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/v1/chat/completions", app.address))
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 400, None).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_wrongly_typed_field_names_the_field() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}),
        )
        .await;
    let body = assert_error(response, 400, None).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].role"),
        "{body}"
    );
}

#[tokio::test]
async fn each_invalid_parameter_is_a_400_naming_it() {
    let app = spawn_app().await;
    let cases = [
        (json!({"n": 0}), "n"),
        (json!({"n": 17}), "n"),
        (json!({"temperature": -1}), "temperature"),
        (json!({"top_p": 1.5}), "top_p"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"max_completion_tokens": 0}), "max_completion_tokens"),
        (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (
            json!({"logprobs": true, "top_logprobs": 30}),
            "top_logprobs",
        ),
        (json!({"logit_bias": {"1": 5}}), "logit_bias"),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "messages[0].content",
        ),
    ];
    for (patch, param) in cases {
        let mut request = greedy("hi", 4);
        for (k, v) in patch.as_object().unwrap() {
            request[k] = v.clone();
        }
        assert_error(
            app.post("/v1/chat/completions", &request).await,
            400,
            Some(param),
        )
        .await;
    }
    for (patch, param) in [
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"logprobs": 6}), "logprobs"),
        (json!({"echo": true}), "echo"),
    ] {
        let mut request = json!({"model": MODEL, "prompt": "x"});
        for (k, v) in patch.as_object().unwrap() {
            request[k] = v.clone();
        }
        assert_error(
            app.post("/v1/completions", &request).await,
            400,
            Some(param),
        )
        .await;
    }
}

#[tokio::test]
async fn an_unknown_model_is_a_404() {
    let app = spawn_app().await;
    let mut request = greedy("hi", 4);
    request["model"] = json!("gpt-9");
    let body = assert_error(app.post("/v1/chat/completions", &request).await, 404, None).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("gpt-9"));
    request["model"] = json!(format!("{MODEL}@3"));
    assert_error(app.post("/v1/chat/completions", &request).await, 404, None).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = spawn_app_with(AppOptions {
        max_body_bytes: 1024,
        ..Default::default()
    })
    .await;
    let request = greedy(&"x".repeat(4096), 4);
    assert_error(app.post("/v1/chat/completions", &request).await, 413, None).await;
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_a_400_and_so_is_too_much_max_tokens() {
    let app = spawn_app().await;
    // The tiny model's context is 512 tokens.
    let long = "word ".repeat(2000);
    let body = assert_error(
        app.post("/v1/chat/completions", &greedy(&long, 4)).await,
        400,
        Some("messages"),
    )
    .await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length"));
    assert_error(
        app.post("/v1/chat/completions", &greedy("short", 5000))
            .await,
        400,
        Some("max_tokens"),
    )
    .await;
    assert_error(
        app.post("/v1/completions", &json!({"prompt": long})).await,
        400,
        Some("prompt"),
    )
    .await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_recovers() {
    let app = spawn_app_with(AppOptions {
        engine: EngineConfig {
            queue_capacity: 1,
            decode_slots: 1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let client = app.client.clone();
    let url = format!("{}/v1/chat/completions", app.address);
    let mut slow = greedy("keep going", 400);
    slow["n"] = json!(4);
    let running =
        tokio::spawn(async move { client.post(url).json(&slow).send().await.unwrap().status() });
    // Wait until the slow request holds the only slot.
    for _ in 0..200 {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        if metrics.contains("flywheel_queue_depth 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let refused = app.post("/v1/chat/completions", &greedy("me too", 4)).await;

    assert_eq!(refused.headers()["retry-after"], "1");
    assert_error(refused, 503, None).await;
    assert_eq!(running.await.unwrap(), 200);
    app.chat(greedy("now there is room", 4)).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    assert_error(app.get("/v1/nothing").await, 404, None).await;
    assert_error(app.get("/v1/chat/completions").await, 405, None).await;
}
