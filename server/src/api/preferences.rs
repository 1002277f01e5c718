//! `GET /v1/groups/{id}/preferences`: each response's estimated win-rate against its group, from
//! the group's judgments, through `flywheel_judge` (the crate the trainer uses).
//!
//! Ties and both-bad count half; a judgment's `strength` counts as P(a≻b). `win_rate` is the
//! counting estimate (with the self-comparison of `research/algorithms.md` §7.1) when every pair
//! was judged, and Bradley–Terry MAP (§7.2) when some pair was not; both are returned as well.

use axum::extract::State;
use flywheel_judge::{bradley_terry, counting_win_rates, estimate_win_rates, BtPrior, Estimator};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, AppJson, AppPath, ErrorBody};
use super::groups::parse_id;
use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Preferences {
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    /// The estimator behind `win_rate`: `counting` or `bradley_terry`.
    pub estimator: &'static str,
    /// How many judgments of the group went in.
    pub judgments: usize,
    /// One entry per response, in choice order.
    pub responses: Vec<ResponsePreference>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponsePreference {
    #[schema(value_type = String, format = Uuid)]
    pub response_id: Uuid,
    pub index: i32,
    /// The estimate of the chosen `estimator`.
    pub win_rate: f64,
    /// `(½ + wins) / (1 + games)`, ties counting half.
    pub counting_win_rate: f64,
    /// Bradley–Terry (MAP, Gamma(2, 1) prior) log-strength, centred to mean 0.
    pub bt_theta: f64,
    /// `(1/K) Σ_j σ(θ_i − θ_j)`, self included.
    pub bt_win_rate: f64,
    /// Judgments this response took part in.
    pub judgments: usize,
}

/// Estimated win-rates of a group's responses from its judgments.
#[utoipa::path(get, path = "/v1/groups/{id}/preferences", tag = "judgments",
    params(("id" = Uuid, Path, description = "group id")),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, description = "Win-rates of the group's responses", body = Preferences),
        (status = 400, description = "A malformed id", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
        (status = 404, description = "No such group", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
pub async fn get_preferences(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<AppJson<Preferences>, ApiError> {
    let group = state.store.get_group(parse_id("id", &id)?).await?;
    let judgments = state.store.judgments_for_group(group.group.id).await?;
    let comparisons = crate::judging::comparisons(&group.responses, &judgments);
    let k = group.responses.len();
    let mut preferences = Preferences {
        group_id: group.group.id,
        estimator: "counting",
        judgments: comparisons.len(),
        responses: Vec::new(),
    };
    if k == 0 {
        return Ok(AppJson(preferences));
    }
    let failed = |e: flywheel_judge::Error| ApiError::Internal(e.into());
    let (win_rates, estimator) = estimate_win_rates(k, &comparisons).map_err(failed)?;
    let counting = counting_win_rates(k, &comparisons).map_err(failed)?;
    let bt = bradley_terry(k, &comparisons, BtPrior::default()).map_err(failed)?;
    preferences.estimator = match estimator {
        Estimator::Counting => "counting",
        Estimator::BradleyTerry => "bradley_terry",
    };
    preferences.responses = group
        .responses
        .iter()
        .enumerate()
        .map(|(i, r)| ResponsePreference {
            response_id: r.id,
            index: r.index,
            win_rate: win_rates[i],
            counting_win_rate: counting[i],
            bt_theta: bt.theta[i],
            bt_win_rate: bt.win_rates[i],
            judgments: comparisons.iter().filter(|c| c.a == i || c.b == i).count(),
        })
        .collect();
    Ok(AppJson(preferences))
}
