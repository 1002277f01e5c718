use serde_json::json;

use crate::helpers::{spawn_app, MODEL};

#[tokio::test]
async fn a_text_completion_has_the_legacy_shape_and_is_stored() {
    let app = spawn_app().await;

    let response = app
        .post(
            "/v1/completions",
            &json!({
                "model": MODEL, "prompt": "The capital of France is", "max_tokens": 6,
                "temperature": 0, "logprobs": 2, "n": 2,
            }),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    let logprobs = &choices[0]["logprobs"];
    let n = logprobs["tokens"].as_array().unwrap().len();
    assert!(n > 0);
    assert_eq!(logprobs["token_logprobs"].as_array().unwrap().len(), n);
    assert_eq!(logprobs["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert_eq!(logprobs["text_offset"][0], 0);
    assert_eq!(
        choices[0]["text"], choices[1]["text"],
        "greedy samples agree"
    );
    let group = app
        .get_json(&format!(
            "/v1/groups/{}",
            body["group_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(group["prompt"], "The capital of France is");
    assert_eq!(group["endpoint"], "completion");
}

#[tokio::test]
async fn completions_default_to_sixteen_tokens_like_openai() {
    let app = spawn_app().await;
    let body: serde_json::Value = app
        .post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": ["x"], "temperature": 0}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= 16);
}

#[tokio::test]
async fn a_text_completion_with_store_false_is_not_logged() {
    let app = spawn_app().await;

    let response = app
        .post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "Off the record", "max_tokens": 4, "store": false}),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["choices"][0]["text"].is_string());
    assert!(body.get("group_id").is_none(), "{body}");
    assert!(body["choices"][0].get("response_id").is_none(), "{body}");
    let groups = app.get_json("/v1/groups?limit=10").await;
    assert_eq!(groups["data"], json!([]));
}
