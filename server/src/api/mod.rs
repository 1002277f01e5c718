//! The HTTP API: OpenAI-compatible inference plus Flywheel's own resources. One resource a file;
//! every route is documented through utoipa and listed in [`ApiDoc`].

pub mod chat;
pub mod completions;
pub mod error;
pub mod groups;
pub mod health;
pub mod models;
pub mod sampling;
mod stream;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use utoipa::OpenApi;

use crate::engine::Engine;
use crate::metrics::Metrics;
use error::ApiError;

/// Everything a handler may touch. Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub store: flywheel_store::Store,
    pub engine: Engine,
    pub metrics: Metrics,
}

impl axum::extract::FromRef<AppState> for Metrics {
    fn from_ref(state: &AppState) -> Metrics {
        state.metrics.clone()
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flywheel",
        description = "OpenAI-compatible serving that logs every sample for preference learning."
    ),
    paths(
        chat::create_chat_completion,
        completions::create_completion,
        models::list_models,
        models::retrieve_model,
        groups::list_groups,
        groups::get_group,
        groups::get_response,
        health::health,
        health::ready,
        health::metrics,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail))
)]
pub struct ApiDoc;

pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

pub fn router(state: AppState, config: &ApiConfig) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::create_chat_completion))
        .route("/v1/completions", post(completions::create_completion))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{model}", get(models::retrieve_model))
        .route("/v1/groups", get(groups::list_groups))
        .route("/v1/groups/{id}", get(groups::get_group))
        .route("/v1/responses/{id}", get(groups::get_response))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .route("/docs", get(health::docs))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}

/// Resolves the `model` field of a request: the served name, or `name@version` of the active
/// version. Anything else is 404, as OpenAI answers for an unknown model.
pub fn check_model(state: &AppState, requested: Option<&str>) -> Result<(), ApiError> {
    let Some(requested) = requested else {
        return Ok(());
    };
    let active = state.engine.active();
    let matches = requested == active.name
        || requested.split_once('@').is_some_and(|(name, version)| {
            name == active.name && version.parse::<i64>().ok() == Some(active.version)
        });
    if matches {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "The model `{requested}` does not exist"
        )))
    }
}
