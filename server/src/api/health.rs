//! Liveness, readiness, metrics, and the API's own documentation.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub model: String,
    pub adapter: i64,
    pub store: String,
}

/// The model is loaded and the store answers.
#[utoipa::path(get, path = "/ready", tag = "ops", responses(
    (status = 200, body = Readiness),
    (status = 503, description = "the store does not answer", body = Readiness),
))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let active = state.engine.active();
    let store_ok = state.store.ping().await.is_ok();
    let body = Readiness {
        status: if store_ok { "ready" } else { "unavailable" },
        model: active.name.clone(),
        adapter: active.version,
        store: if store_ok {
            state.store.backend().to_string()
        } else {
            "unreachable".into()
        },
    };
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Prometheus text exposition of the `flywheel_*` metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = ["admin"])),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 401, description = "Missing, unknown or revoked API key", body = super::error::ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = super::error::ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Err(e) = super::annotators::refresh_gauges(&state).await {
        tracing::warn!(error = ?e, "cannot refresh the annotator gauges");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_json(),
    )
}

/// Swagger UI for `/openapi.json`. The UI's assets come from a CDN, so the page needs a browser
/// with internet access; the document itself is served locally.
pub async fn docs() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html><head><meta charset="utf-8"><title>Flywheel API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"##,
    )
}
