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
    /// `ready`; `stale` while it serves another version than the store's active one (it keeps
    /// serving and retries); `unavailable` when the store does not answer.
    pub status: &'static str,
    pub model: String,
    /// The adapter version served.
    pub adapter: i64,
    /// The store's active version, as this server last read it (absent before its first look).
    pub wanted_adapter: Option<i64>,
    /// Why the wanted version is not served here, while it is not.
    pub adapter_error: Option<String>,
    pub store: String,
}

/// The model is loaded and the store answers.
#[utoipa::path(get, path = "/ready", tag = "ops", responses(
    (status = 200, description = "Serving; `status` says whether it serves the store's active version", body = Readiness),
    (status = 503, description = "the store does not answer", body = Readiness),
))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let active = state.engine.active();
    let target = state.engine.target();
    let store_ok = state.store.ping().await.is_ok();
    let stale = target.version.is_some_and(|v| v != active.version);
    let body = Readiness {
        status: match (store_ok, stale) {
            (false, _) => "unavailable",
            (true, true) => "stale",
            (true, false) => "ready",
        },
        model: active.name.clone(),
        adapter: active.version,
        wanted_adapter: target.version,
        adapter_error: target.error.filter(|_| stale),
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
    match crate::arena::standings::report(&state.store, state.arena.promotion, &state.arena.gate)
        .await
    {
        Ok(report) => state.metrics.set_arena(&report),
        Err(e) => tracing::warn!(error = ?e, "cannot refresh the arena gauges"),
    }
    if state.units.is_some() {
        let active = state.engine.active().version;
        match super::consistency::report(&state, active, true).await {
            Ok(report) => state.metrics.set_consistency(&report),
            Err(e) => tracing::warn!(error = ?e, "cannot refresh the consistency gauges"),
        }
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
