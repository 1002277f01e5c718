use crate::helpers::{greedy, spawn_app, MODEL};

#[tokio::test]
async fn health_and_readiness_report_the_model_and_store() {
    let app = spawn_app().await;
    assert_eq!(app.get_json("/health").await["status"], "ok");
    let ready = app.get_json("/ready").await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["model"], MODEL);
    assert_eq!(ready["store"], "sqlite");
}

#[tokio::test]
async fn models_lists_the_policy_by_name_and_version() {
    let app = spawn_app().await;
    let models = app.get_json("/v1/models").await;
    let ids: Vec<_> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![MODEL.to_string(), format!("{MODEL}@0")]);
    assert_eq!(
        app.get_json(&format!("/v1/models/{MODEL}@0")).await["adapter"],
        0
    );
}

#[tokio::test]
async fn metrics_count_requests_and_tokens_by_route_status_and_adapter() {
    let app = spawn_app().await;
    app.chat(greedy("count me", 3)).await;
    app.post("/v1/chat/completions", &serde_json::json!({"n": 0}))
        .await;

    let text = app.get("/metrics").await.text().await.unwrap();

    assert!(
        text.contains(
            r#"flywheel_requests_total{adapter="0",route="/v1/chat/completions",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"flywheel_requests_total{adapter="none",route="/v1/chat/completions",status="400"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"flywheel_tokens_total{adapter="0",direction="out"}"#));
    assert!(text.contains("flywheel_request_duration_seconds_bucket"));
    assert!(text.contains("flywheel_time_to_first_token_seconds_count"));
    assert!(text.contains("flywheel_queue_depth 0"));
}

#[tokio::test]
async fn the_committed_openapi_document_is_current() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json"))
        .expect("openapi/openapi.json exists; regenerate with `flywheel openapi --out openapi/openapi.json`");
    assert!(
        committed.trim() == flywheel_server::api::openapi_json().trim(),
        "openapi/openapi.json is stale: run `cargo run --release -- openapi --out openapi/openapi.json`"
    );
}

#[tokio::test]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/groups",
        "/v1/groups/{id}",
        "/v1/responses/{id}",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }
    let docs = app.get("/docs").await.text().await.unwrap();
    assert!(docs.contains("swagger-ui") && docs.contains("/openapi.json"));
}
