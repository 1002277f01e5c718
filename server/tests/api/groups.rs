use serde_json::{json, Value};

use crate::helpers::{assert_error, greedy, spawn_app, spawn_app_with, AppOptions};

#[tokio::test]
async fn groups_are_listed_newest_first_with_a_cursor_that_visits_each_once() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.chat(greedy(&format!("prompt {i}"), 2)).await["group_id"].clone());
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/groups?limit=2&cursor={c}"),
            None => "/v1/groups?limit=2".to_string(),
        };
        let page = app.get_json(&path).await;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, created);
}

#[tokio::test]
async fn groups_filter_by_adapter_version_and_time() {
    let app = spawn_app().await;
    let before = chrono::Utc::now();
    let id = app.chat(greedy("filter me", 2)).await["group_id"].clone();
    let after = chrono::Utc::now();
    let q = |s: chrono::DateTime<chrono::Utc>| {
        s.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .replace('+', "%2B")
    };

    let base = app.get_json("/v1/groups?adapter=0").await;
    let other = app.get_json("/v1/groups?adapter=1").await;
    let window = app
        .get_json(&format!(
            "/v1/groups?since={}&until={}",
            q(before),
            q(after)
        ))
        .await;
    let later = app
        .get_json(&format!("/v1/groups?since={}", q(after)))
        .await;

    assert_eq!(base["data"][0]["id"], id);
    assert_eq!(other["data"], json!([]));
    assert_eq!(
        window["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].clone())
            .collect::<Vec<Value>>(),
        vec![id]
    );
    assert_eq!(later["data"], json!([]));
}

#[tokio::test]
async fn missing_and_malformed_ids_are_404_and_400() {
    let app = spawn_app().await;
    let absent = uuid::Uuid::now_v7();
    assert_error(app.get(&format!("/v1/groups/{absent}")).await, 404, None).await;
    assert_error(app.get(&format!("/v1/responses/{absent}")).await, 404, None).await;
    assert_error(app.get("/v1/groups/not-a-uuid").await, 400, Some("id")).await;
    assert_error(app.get("/v1/groups?limit=0").await, 400, Some("limit")).await;
    assert_error(
        app.get("/v1/groups?since=yesterday").await,
        400,
        Some("since"),
    )
    .await;
}

#[tokio::test]
async fn samples_are_logged_to_postgres_too() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = spawn_app_with(AppOptions {
        postgres: true,
        ..Default::default()
    })
    .await;
    assert_eq!(app.store.backend(), flywheel_store::Backend::Postgres);
    let mut request = greedy("to postgres", 6);
    request["n"] = json!(2);

    let body = app.chat(request).await;

    let group = app
        .get_json(&format!(
            "/v1/groups/{}",
            body["group_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(group["responses"].as_array().unwrap().len(), 2);
    assert_eq!(
        group["responses"][0]["text"],
        body["choices"][0]["message"]["content"]
    );
    let listed = app.get_json("/v1/groups").await;
    assert_eq!(listed["data"][0]["id"], body["group_id"]);
}
