//! `/v1/models`: the policy being served and the versions loaded beside it, as OpenAI lists models.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, AppJson, AppPath, ErrorBody};
use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    /// `name`, `name@version`, or a resident version's LoRA name.
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
    /// Adapter version (0 = base model).
    pub adapter: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

fn cards(state: &AppState) -> Vec<ModelCard> {
    let active = state.engine.active();
    let card = |id: String, adapter: i64| ModelCard {
        id,
        object: "model",
        created: 0,
        owned_by: "flywheel",
        adapter,
    };
    let mut cards = vec![
        card(active.name.clone(), active.version),
        card(
            format!("{}@{}", active.name, active.version),
            active.version,
        ),
    ];
    cards.extend(
        active
            .alias
            .clone()
            .map(|alias| card(alias, active.version)),
    );
    for (version, alias) in state.engine.resident() {
        cards.push(card(format!("{}@{version}", active.name), version));
        cards.extend(alias.map(|alias| card(alias, version)));
    }
    cards
}

/// Lists the served policy under its name, as `name@version` and under its LoRA name if it has
/// one, then each version loaded beside it (candidates) as `name@version` and under its LoRA name.
#[utoipa::path(get, path = "/v1/models", tag = "inference", security(("bearer" = ["inference"])),
    responses(
        (status = 200, description = "The served policy, twice, then the versions loaded beside it", body = ModelList),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `inference` scope", body = ErrorBody),
    ))]
pub async fn list_models(State(state): State<AppState>) -> AppJson<ModelList> {
    AppJson(ModelList {
        object: "list",
        data: cards(&state),
    })
}

/// One model by id.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "inference",
    params(("model" = String, Path, description = "`name` or `name@version`")),
    security(("bearer" = ["inference"])),
    responses(
        (status = 200, description = "The model", body = ModelCard),
        (status = 400, description = "The path segment is not valid UTF-8", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `inference` scope", body = ErrorBody),
        (status = 404, description = "Not the served model", body = ErrorBody),
    ))]
pub async fn retrieve_model(
    State(state): State<AppState>,
    AppPath(model): AppPath<String>,
) -> Result<AppJson<ModelCard>, ApiError> {
    cards(&state)
        .into_iter()
        .find(|c| c.id == model)
        .map(AppJson)
        .ok_or_else(|| ApiError::NotFound(format!("The model `{model}` does not exist")))
}
