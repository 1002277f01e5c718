//! The HTTP API: OpenAI-compatible inference plus Flywheel's own resources. One resource a file;
//! every route is documented through utoipa and listed in [`ApiDoc`].

pub mod adapters;
pub mod annotate;
pub mod annotation;
pub mod annotators;
pub mod arena;
pub mod auth;
pub mod chat;
pub mod completions;
pub mod consistency;
pub mod error;
pub mod eval_prompts;
pub mod exports;
pub mod groups;
pub mod health;
pub mod judgments;
pub mod models;
pub mod preferences;
pub mod rewards;
pub mod sampling;
pub(crate) mod stream;
pub mod variants;
pub mod vllm;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use flywheel_store::Scope;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::engine::{Engine, Route};
use crate::metrics::Metrics;
use annotation::AnnotationConfig;
use auth::{AuthMode, Gate};
use error::ApiError;

/// Everything a handler may touch. Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub store: flywheel_store::Store,
    pub engine: Engine,
    pub metrics: Metrics,
    /// The only directory adapters may be registered from (`--adapter-root`), as configured.
    pub adapter_root: std::sync::Arc<std::path::Path>,
    /// How new adapters are judged (`--promotion`, the gate's settings).
    pub arena: std::sync::Arc<crate::arena::ArenaConfig>,
    /// The information-unit extractor of consistency reports (`--units`), if configured.
    pub units: Option<std::sync::Arc<flywheel_trainer::UnitExtractor>>,
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
    /// Whether routes check API keys (`--no-auth` turns it off).
    pub auth: AuthMode,
    pub annotation: AnnotationConfig,
    /// How long a verified API key is trusted without a store lookup ([`auth::KeyCache`]).
    pub key_cache_ttl: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 4 * 1024 * 1024,
            auth: AuthMode::Required,
            annotation: AnnotationConfig::default(),
            key_cache_ttl: std::time::Duration::from_secs(5),
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
        judgments::create_judgments,
        judgments::list_judgments,
        preferences::get_preferences,
        annotation::next_pair,
        annotation::release_assignment,
        annotators::list_annotators,
        annotators::get_annotator,
        adapters::register_adapter,
        adapters::get_adapter,
        adapters::activate_adapter,
        adapters::promote_adapter,
        adapters::retire_adapter,
        vllm::load_lora_adapter,
        vllm::unload_lora_adapter,
        arena::get_arena,
        exports::get_export,
        eval_prompts::create_eval_prompts,
        eval_prompts::list_eval_prompts,
        variants::create_variant_group,
        variants::get_variant_group,
        rewards::create_rewards,
        rewards::list_rewards,
        consistency::get_consistency,
    ),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        judgments::JudgmentBatch,
        judgments::JudgmentList,
        chat::ChatCompletionChunk,
        exports::ExportFormat,
        eval_prompts::EvalPromptBatch,
        eval_prompts::EvalPromptList,
        rewards::RewardBatch,
        rewards::RewardList,
    )),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme that each gated path names with its scope.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "An API key (`flywheel keys create`). The path's scope list names the scope it needs; \
             a key with `admin` may call every path."
                .into(),
        );
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// The routes, each group behind the [`Gate`] of its scope; only [`auth::OPEN_ROUTES`] are open.
pub fn router(state: AppState, config: &ApiConfig) -> Router {
    let keys = auth::KeyCache::new(config.key_cache_ttl);
    let gate = |scope| {
        axum::middleware::from_fn_with_state(
            Gate::new(config.auth, state.store.clone(), scope, keys.clone()),
            auth::require,
        )
    };
    let inference = Router::new()
        .route("/v1/chat/completions", post(chat::create_chat_completion))
        .route("/v1/completions", post(completions::create_completion))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{model}", get(models::retrieve_model))
        .route("/v1/variant-groups", post(variants::create_variant_group))
        .route_layer(gate(Scope::Inference));
    let annotate = Router::new()
        .route("/v1/groups", get(groups::list_groups))
        .route("/v1/groups/{id}", get(groups::get_group))
        .route(
            "/v1/groups/{id}/preferences",
            get(preferences::get_preferences),
        )
        .route("/v1/responses/{id}", get(groups::get_response))
        .route(
            "/v1/judgments",
            post(judgments::create_judgments).get(judgments::list_judgments),
        )
        .route("/v1/annotation/next", get(annotation::next_pair))
        .route(
            "/v1/annotation/assignments/{id}/release",
            post(annotation::release_assignment),
        )
        .route("/v1/variant-groups/{id}", get(variants::get_variant_group))
        .route(
            "/v1/rewards",
            post(rewards::create_rewards).get(rewards::list_rewards),
        )
        .route_layer(gate(Scope::Annotate));
    let admin = Router::new()
        .route("/metrics", get(health::metrics))
        .route("/v1/annotators", get(annotators::list_annotators))
        .route("/v1/exports", get(exports::get_export))
        .route(
            "/v1/eval-prompts",
            post(eval_prompts::create_eval_prompts).get(eval_prompts::list_eval_prompts),
        )
        .route("/v1/annotators/{id}", get(annotators::get_annotator))
        .route("/v1/adapters", post(adapters::register_adapter))
        .route("/v1/adapters/{version}", get(adapters::get_adapter))
        .route(
            "/v1/adapters/{version}/activate",
            post(adapters::activate_adapter),
        )
        .route(
            "/v1/adapters/{version}/promote",
            post(adapters::promote_adapter),
        )
        .route(
            "/v1/adapters/{version}/retire",
            post(adapters::retire_adapter),
        )
        .route("/v1/load_lora_adapter", post(vllm::load_lora_adapter))
        .route("/v1/unload_lora_adapter", post(vllm::unload_lora_adapter))
        .route("/v1/arena", get(arena::get_arena))
        .route("/v1/consistency", get(consistency::get_consistency))
        .route_layer(gate(Scope::Admin));
    Router::new()
        .merge(inference)
        .merge(annotate)
        .merge(admin)
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/openapi.json", get(health::openapi))
        .route("/docs", get(health::docs))
        .route("/annotate", get(annotate::page))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::Extension(config.annotation.clone()))
        .with_state(state)
}

/// Resolves the `model` field of a request to the generation it runs on: none or the served name
/// (the active version, or the canary), `name@version` of a version loaded here (active or
/// resident), or the alias of a resident version (a vLLM `lora_name`). Anything else is 404, as
/// OpenAI answers for an unknown model.
pub fn resolve_model(state: &AppState, requested: Option<&str>) -> Result<Route, ApiError> {
    let Some(requested) = requested else {
        return Ok(Route::Default);
    };
    let engine = &state.engine;
    let name = engine.active().name.clone();
    if requested == name {
        return Ok(Route::Default);
    }
    let pinned = requested
        .split_once('@')
        .filter(|(n, _)| *n == name)
        .and_then(|(_, version)| version.parse::<i64>().ok());
    if let Some(version) = pinned {
        return match engine.loaded(version) {
            Some(_) => Ok(Route::Pinned(version)),
            None => Err(ApiError::NotFound(format!(
                "The model `{requested}` is not loaded on this server; `GET /v1/models` lists the \
                 versions it serves"
            ))),
        };
    }
    match engine.version_of_alias(requested) {
        Some(version) => Ok(Route::Pinned(version)),
        None => Err(ApiError::NotFound(format!(
            "The model `{requested}` does not exist"
        ))),
    }
}
