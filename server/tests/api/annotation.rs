use flywheel_server::api::annotation::AnnotationConfig;
use flywheel_store::{Endpoint, GroupKind, NewGroup, NewResponse};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, AppOptions, TestApp};
use crate::judgments::sampled_group;

fn with_overlap(overlap_share: f64) -> AppOptions {
    AppOptions {
        annotation: AnnotationConfig {
            overlap_share,
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn next(app: &TestApp, annotator: &str) -> reqwest::Response {
    app.get(&format!("/v1/annotation/next?annotator={annotator}"))
        .await
}

async fn next_item(app: &TestApp, annotator: &str) -> Value {
    let response = next(app, annotator).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The judgment answering `item`: left wins.
fn answer(item: &Value, annotator: &str) -> Value {
    json!({
        "group_id": item["group_id"], "response_a": item["left"]["response_id"],
        "response_b": item["right"]["response_id"], "outcome": "a",
        "annotator": annotator, "assignment_id": item["assignment_id"],
    })
}

#[tokio::test]
async fn the_next_pair_is_blind_and_answering_it_completes_the_assignment() {
    let app = spawn_app().await;
    let (group, responses) = sampled_group(&app, 2).await;

    let item = next_item(&app, "alice").await;
    let stored = app.post("/v1/judgments", &answer(&item, "alice")).await;

    assert_eq!(item["group_id"], group.as_str());
    assert_eq!(item["prompt"][0]["role"], "user");
    let shown = [
        item["left"]["response_id"].as_str().unwrap(),
        item["right"]["response_id"].as_str().unwrap(),
    ];
    assert!(shown.iter().all(|id| responses.contains(&id.to_string())));
    assert_ne!(shown[0], shown[1]);
    assert!(item["left"]["text"].is_string());
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let mut top = keys(&item);
    top.sort();
    let expected = [
        "annotator",
        "assignment_id",
        "expires_at",
        "group_id",
        "left",
        "prompt",
        "right",
    ];
    assert_eq!(top, expected, "no adapter version or model may leak");
    assert_eq!(keys(&item["left"]).len(), 3, "{item}");
    assert_eq!(stored.status(), 201);
    let judgment: Value = stored.json().await.unwrap();
    let assignment_id: Uuid = item["assignment_id"].as_str().unwrap().parse().unwrap();
    let assignment = app.store.get_assignment(assignment_id).await.unwrap();
    assert_eq!(
        assignment.judgment_id.unwrap().to_string(),
        judgment["id"].as_str().unwrap()
    );
    assert_eq!(
        next(&app, "alice").await.status(),
        204,
        "one pair, judged already"
    );
}

#[tokio::test]
async fn an_answer_must_match_its_assignment() {
    let app = spawn_app().await;
    sampled_group(&app, 2).await;
    let item = next_item(&app, "alice").await;

    let by_someone_else = app.post("/v1/judgments", &answer(&item, "bob")).await;
    let mut unknown = answer(&item, "alice");
    unknown["assignment_id"] = json!(Uuid::now_v7());
    let unknown = app.post("/v1/judgments", &unknown).await;
    let mut keyed = answer(&item, "alice");
    keyed["client_id"] = json!("answer-1");
    let first = app.post("/v1/judgments", &keyed).await;
    let replay = app.post("/v1/judgments", &keyed).await;
    let mut second = answer(&item, "alice");
    second["outcome"] = json!("b");
    let second = app.post("/v1/judgments", &second).await;

    assert_error(by_someone_else, 400, Some("assignment_id")).await;
    assert_error(unknown, 400, Some("assignment_id")).await;
    assert_eq!(first.status(), 201);
    assert_eq!(replay.status(), 200);
    assert_error(second, 409, None).await;
    assert_eq!(
        app.get_json("/v1/judgments").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_annotation_page_is_served_without_a_key_and_uses_only_the_public_api() {
    let app = spawn_app().await;

    let page = app.bare.get(app.url("/annotate")).send().await.unwrap();

    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for needle in [
        "/v1/annotation/next",
        "/v1/judgments",
        "/release",
        "Authorization",
        "both_bad",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
}

#[tokio::test]
async fn the_annotator_is_required() {
    let app = spawn_app().await;
    assert_error(app.get("/v1/annotation/next").await, 400, Some("annotator")).await;
    assert_error(next(&app, "").await, 400, Some("annotator")).await;
}

#[tokio::test]
async fn the_overlap_share_decides_whether_a_pending_pair_goes_to_a_second_annotator() {
    let never = spawn_app_with(with_overlap(0.0)).await;
    let always = spawn_app_with(with_overlap(1.0)).await;
    for app in [&never, &always] {
        sampled_group(app, 2).await;
        next_item(app, "alice").await;
    }

    let refused = next(&never, "bob").await;
    let shared = next(&always, "bob").await;

    assert_eq!(refused.status(), 204);
    assert_eq!(shared.status(), 200);
}

#[tokio::test]
async fn groups_of_the_active_policy_come_first() {
    let app = spawn_app().await;
    let (served, _) = sampled_group(&app, 2).await;
    // A newer group from another adapter version, which the queue would otherwise pick first.
    let other = NewGroup {
        id: Uuid::now_v7(),
        kind: GroupKind::Samples,
        endpoint: Endpoint::Chat,
        model: "tiny".into(),
        adapter_version: 7,
        prompt: json!([{"role": "user", "content": "old policy"}]),
        params: json!({}),
        seed: None,
        user: None,
        prompt_tokens: 3,
        prompt_token_ids: None,
        latency_ms: 1,
        created_at: chrono::Utc::now(),
        responses: (0..2)
            .map(|i| NewResponse {
                id: Uuid::now_v7(),
                index: i,
                prompt: None,
                text: format!("answer {i}"),
                token_ids: vec![1],
                logprobs: vec![-0.5],
                finish_reason: "stop".into(),
                completion_tokens: 1,
                latency_ms: 1,
                adapter_version: None,
                variant: None,
                prompt_token_ids: None,
            })
            .collect(),
    };
    app.store.insert_group(&other).await.unwrap();

    let first = next_item(&app, "alice").await;
    let second = next_item(&app, "alice").await;

    assert_eq!(first["group_id"], served.as_str());
    assert_eq!(second["group_id"], other.id.to_string());
}

#[tokio::test]
async fn a_released_pair_goes_to_the_next_annotator_at_once() {
    let app = spawn_app_with(with_overlap(0.0)).await;
    sampled_group(&app, 2).await;
    let item = next_item(&app, "alice").await;
    assert_eq!(next(&app, "bob").await.status(), 204, "held by alice");
    let release = |id: &str| format!("/v1/annotation/assignments/{id}/release");
    let id = item["assignment_id"].as_str().unwrap();

    let released = app.post(&release(id), &json!({})).await;
    let bobs = next_item(&app, "bob").await;

    assert_eq!(released.status(), 200);
    let released: Value = released.json().await.unwrap();
    assert_eq!(released["id"], id);
    assert!(released["judgment_id"].is_null());
    assert_eq!(bobs["group_id"], item["group_id"]);
    assert_eq!(
        next(&app, "alice").await.status(),
        204,
        "never the same pair twice"
    );
    let answered = app.post("/v1/judgments", &answer(&bobs, "bob")).await;
    assert_eq!(answered.status(), 201);
    let bobs_id = bobs["assignment_id"].as_str().unwrap();
    assert_error(app.post(&release(bobs_id), &json!({})).await, 409, None).await;
    let unknown = Uuid::now_v7().to_string();
    assert_error(app.post(&release(&unknown), &json!({})).await, 404, None).await;
    assert_error(
        app.post(&release("nope"), &json!({})).await,
        400,
        Some("id"),
    )
    .await;
}
