//! `GET /v1/arena`: where the adapter versions stand: the leaderboard over every judgment of two
//! versions' responses, and each candidate's head-to-head with the incumbent.

use axum::extract::State;

use super::error::{ApiError, AppJson, ErrorBody};
use super::AppState;
use crate::arena::standings::{self, ArenaReport};

/// The leaderboard of adapter versions by Bradley–Terry over all judgments of two versions'
/// responses (ties and `both_bad` count half; the `both_bad` rate is shown apart), anchored at the
/// incumbent, with bootstrap intervals; and for each candidate its duels with the incumbent:
/// judgments, win-rate, P(candidate ≻ incumbent) with its interval, and what the gate would do.
#[utoipa::path(get, path = "/v1/arena", tag = "arena",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The arena's standings", body = ArenaReport),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
    ))]
pub async fn get_arena(State(state): State<AppState>) -> Result<AppJson<ArenaReport>, ApiError> {
    let report = standings::report(&state.store, state.arena.promotion, &state.arena.gate)
        .await
        .map_err(ApiError::Internal)?;
    state.metrics.set_arena(&report);
    Ok(AppJson(report))
}
