//! `GET /v1/annotation/next`: the annotation queue hands an annotator one pair to judge, blind.
//!
//! The payload holds the prompt and the two texts in a random left/right order, never the adapter
//! versions or the model. The store picks the pair: a live candidate's duels first (the arena's
//! gate waits on them), then groups of the active policy, then the least judged pairs; with probability `overlap_share` a pair one other annotator judged, so that
//! agreement can be measured; never a pair this annotator had before. To answer, post a judgment
//! with `response_a` = left, `response_b` = right and the `assignment_id`; to pass on a pair
//! (an abstaining judge, a skipping annotator), release the assignment so that it need not expire
//! before someone else gets it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use flywheel_store::{Assignment, StoredPrompt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, AppJson, AppPath, AppQuery, ErrorBody};
use super::groups::parse_id;
use super::AppState;

/// How the queue hands out pairs (`serve --annotation-overlap`, `--assignment-ttl-secs`).
#[derive(Debug, Clone)]
pub struct AnnotationConfig {
    /// The share of picks, 0–1, that go to pairs another annotator judged.
    pub overlap_share: f64,
    /// How long a pair stays reserved for its annotator.
    pub assignment_ttl: Duration,
}

impl Default for AnnotationConfig {
    fn default() -> Self {
        AnnotationConfig {
            overlap_share: 0.2,
            assignment_ttl: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// Who is judging (a pseudonym; the same name as in the judgment's `annotator`). Not blank.
    #[param(required = true, value_type = String, min_length = 1, max_length = 255, pattern = r"\S")]
    pub annotator: Option<String>,
}

/// One pair to judge, blind.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnnotationItem {
    #[schema(value_type = String, format = Uuid)]
    pub assignment_id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    pub annotator: String,
    /// The group's prompt: chat messages or completion text.
    #[schema(value_type = StoredPrompt)]
    pub prompt: Value,
    pub left: ShownResponse,
    pub right: ShownResponse,
    /// After this the pair may go to someone else; an answer is still accepted.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShownResponse {
    #[schema(value_type = String, format = Uuid)]
    pub response_id: Uuid,
    pub text: String,
    /// A variant's own prompt (groups of kind `variants`).
    #[schema(value_type = Option<StoredPrompt>)]
    pub prompt: Option<Value>,
}

/// Takes the next pair for an annotator; 204 when nothing is left to judge.
#[utoipa::path(get, path = "/v1/annotation/next", tag = "judgments", params(NextQuery),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, description = "A pair to judge", body = AnnotationItem),
        (status = 204, description = "Nothing left for this annotator"),
        (status = 400, description = "`annotator` missing, empty or too long", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
        (status = 409, description = "The pair was taken concurrently; ask again", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn next_pair(
    State(state): State<AppState>,
    Extension(config): Extension<AnnotationConfig>,
    AppQuery(q): AppQuery<NextQuery>,
) -> Result<Response, ApiError> {
    let annotator = q
        .annotator
        .ok_or_else(|| ApiError::invalid("annotator", "`annotator` is required"))?;
    let active = state.engine.active().version;
    let assignment = state
        .store
        .next_pair_for(
            &annotator,
            Some(active),
            config.overlap_share,
            config.assignment_ttl,
        )
        .await?;
    let Some(assignment) = assignment else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let group = state.store.get_group(assignment.group_id).await?;
    let shown = |id: Uuid| -> Result<ShownResponse, ApiError> {
        let r =
            group.responses.iter().find(|r| r.id == id).ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("assigned response {id} is gone"))
            })?;
        Ok(ShownResponse {
            response_id: r.id,
            text: r.text.clone(),
            prompt: r.prompt.clone(),
        })
    };
    let item = AnnotationItem {
        assignment_id: assignment.id,
        group_id: assignment.group_id,
        left: shown(assignment.left())?,
        right: shown(assignment.right())?,
        annotator: assignment.annotator,
        prompt: group.group.prompt.clone(),
        expires_at: assignment.expires_at,
    };
    Ok(AppJson(item).into_response())
}

/// Hands an unanswered assignment back: its pair is free for other annotators now rather than at
/// `expires_at`, and is never given to the same annotator again. Releasing twice is harmless.
#[utoipa::path(post, path = "/v1/annotation/assignments/{id}/release", tag = "judgments",
    params(("id" = Uuid, Path, description = "the `assignment_id` of `GET /v1/annotation/next`")),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, description = "The released assignment (`expires_at` is now past)", body = Assignment),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
        (status = 404, description = "No such assignment", body = ErrorBody),
        (status = 409, description = "A judgment answered it already", body = ErrorBody),
    ))]
pub async fn release_assignment(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<AppJson<Assignment>, ApiError> {
    Ok(AppJson(
        state.store.release_assignment(parse_id("id", &id)?).await?,
    ))
}
