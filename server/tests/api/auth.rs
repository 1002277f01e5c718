use flywheel_server::api::auth::AuthMode;
use flywheel_store::{hash_api_key, Scope};
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, client_with_key, greedy, spawn_app, spawn_app_with, AppOptions, TestApp,
};

/// Every scope except `needed` and `admin`: the key that must get 403.
fn scopes_without(needed: Scope) -> Vec<Scope> {
    [Scope::Inference, Scope::Annotate]
        .into_iter()
        .filter(|s| *s != needed)
        .collect()
}

/// A request for `method` on the documented `path`, path parameters filled with a fresh id.
fn request(
    app: &TestApp,
    client: &reqwest::Client,
    method: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    let id = uuid::Uuid::now_v7().to_string();
    let concrete: String = path
        .split('/')
        .map(|part| {
            if part.starts_with('{') {
                id.as_str()
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let url = app.url(&concrete);
    match method {
        "get" => client.get(url),
        "post" => client.post(url).json(&json!({})),
        other => panic!("the walk does not know method {other}"),
    }
}

#[tokio::test]
async fn every_documented_route_refuses_a_missing_key_and_a_key_without_its_scope() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let mut walked = 0;

    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let Some(scope) = operation["security"][0]["bearer"][0].as_str() else {
                assert!(
                    ["/health", "/ready"].contains(&path.as_str()),
                    "{method} {path} has no security requirement"
                );
                continue;
            };
            let scope: Scope = scope.parse().unwrap();
            let lacking = app.client_with_scopes(&scopes_without(scope)).await;
            let holding = app.client_with_scopes(&[scope]).await;

            let missing = request(&app, &app.bare, method, path).send().await.unwrap();
            let wrong = request(&app, &lacking, method, path).send().await.unwrap();
            let right = request(&app, &holding, method, path).send().await.unwrap();

            let body = assert_error(missing, 401, None).await;
            assert_eq!(
                body["error"]["type"], "authentication_error",
                "{method} {path}"
            );
            let body = assert_error(wrong, 403, None).await;
            assert_eq!(body["error"]["type"], "permission_error", "{method} {path}");
            assert!(
                ![401, 403].contains(&right.status().as_u16()),
                "{method} {path} refused a key with scope {scope}: {}",
                right.status()
            );
            walked += 1;
        }
    }
    assert!(walked >= 14, "only {walked} operations walked");
}

#[tokio::test]
async fn health_ready_and_the_api_description_are_open() {
    let app = spawn_app().await;
    for path in flywheel_server::api::auth::OPEN_ROUTES {
        let response = app.bare.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let doc = app.get_json("/openapi.json").await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn metrics_need_the_admin_scope() {
    let app = spawn_app().await;
    let inference = app
        .client_with_scopes(&[Scope::Inference, Scope::Annotate])
        .await;
    let admin = app.client_with_scopes(&[Scope::Admin]).await;

    assert_error(
        app.bare.get(app.url("/metrics")).send().await.unwrap(),
        401,
        None,
    )
    .await;
    assert_error(
        inference.get(app.url("/metrics")).send().await.unwrap(),
        403,
        None,
    )
    .await;
    assert_eq!(
        admin
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn an_unknown_or_revoked_key_is_a_401_and_an_admin_key_passes_every_gate() {
    let app = spawn_app().await;
    let unknown = client_with_key("fw_not_a_key_at_all_0123456789");
    let secret = "fw_revoke_me_0123456789abcdef";
    let key = app
        .store
        .create_api_key("soon revoked", &[Scope::Admin], &hash_api_key(secret))
        .await
        .unwrap();
    let admin = client_with_key(secret);

    let before = admin
        .post(app.url("/v1/chat/completions"))
        .json(&greedy("hi", 2))
        .send()
        .await
        .unwrap();
    app.store.revoke_api_key(key.id).await.unwrap();
    let after = admin.get(app.url("/v1/models")).send().await.unwrap();
    let unknown = unknown.get(app.url("/v1/models")).send().await.unwrap();

    assert_eq!(before.status(), 200);
    let body = assert_error(after, 401, None).await;
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_error(unknown, 401, None).await;
}

#[tokio::test]
async fn a_scoped_key_reaches_only_its_routes() {
    let app = spawn_app().await;
    let inference = app.client_with_scopes(&[Scope::Inference]).await;
    let annotate = app.client_with_scopes(&[Scope::Annotate]).await;

    let chat = inference
        .post(app.url("/v1/chat/completions"))
        .json(&greedy("hi", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let group_id = chat.json::<Value>().await.unwrap()["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    let read = annotate
        .get(app.url(&format!("/v1/groups/{group_id}")))
        .send()
        .await
        .unwrap();
    let generate = annotate
        .post(app.url("/v1/chat/completions"))
        .json(&greedy("hi", 2))
        .send()
        .await
        .unwrap();
    let annotators = annotate
        .get(app.url("/v1/annotators"))
        .send()
        .await
        .unwrap();

    assert_eq!(read.status(), 200);
    let body = assert_error(generate, 403, None).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inference"),
        "{body}"
    );
    assert_error(annotators, 403, None).await;
}

#[tokio::test]
async fn without_auth_every_route_is_open() {
    let app = spawn_app_with(AppOptions {
        auth: AuthMode::Disabled,
        ..Default::default()
    })
    .await;
    for path in [
        "/v1/models",
        "/v1/groups",
        "/v1/judgments",
        "/v1/annotators",
        "/metrics",
    ] {
        let response = app.bare.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}
