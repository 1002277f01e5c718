//! Annotator quality: `GET /v1/annotators` and `GET /v1/annotators/{id}`: counts, speed, tie and
//! both-bad rates, agreement with the majority on shared pairs, and Cohen's kappa per pair of
//! annotators (the math is in `flywheel_judge`). The same figures are Prometheus gauges.

use axum::extract::State;
use chrono::{DateTime, Utc};
use flywheel_judge::Agreement;
use flywheel_store::AnnotatorStats;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, AppJson, AppPath, AppQuery, ErrorBody};
use super::AppState;
use crate::judging::agreement;

/// The fewest pairs two annotators must share for their kappa to be reported, by default.
pub const MIN_SHARED_ITEMS: usize = 5;

#[derive(Debug, Serialize, ToSchema)]
pub struct AnnotatorSummary {
    pub annotator: String,
    pub judgments: i64,
    pub ties: i64,
    pub both_bad: i64,
    pub tie_rate: f64,
    pub both_bad_rate: f64,
    pub first_judgment_at: DateTime<Utc>,
    pub last_judgment_at: DateTime<Utc>,
    /// Median seconds from assignment to judgment (queue answers only).
    pub median_seconds_to_judge: Option<f64>,
    /// Pairs this annotator judged that others judged too.
    pub shared_items: usize,
    /// The share of shared pairs (with a majority among the others) where this annotator gave
    /// the majority verdict; `null` when there is none.
    pub majority_agreement: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnnotatorList {
    pub object: &'static str,
    pub data: Vec<AnnotatorSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnnotatorDetail {
    #[serde(flatten)]
    pub summary: AnnotatorSummary,
    /// Cohen's kappa with each annotator sharing at least `min_shared` pairs.
    pub kappa: Vec<KappaWith>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KappaWith {
    pub annotator: String,
    pub shared_items: usize,
    /// The share of shared pairs with the same verdict.
    pub observed_agreement: f64,
    /// `null` when undefined (both always gave the same single verdict).
    pub kappa: Option<f64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KappaQuery {
    /// The fewest shared pairs for a kappa to be reported (default 5).
    #[param(value_type = Option<u64>, minimum = 1)]
    pub min_shared: Option<String>,
}

/// Every annotator who has judged anything, by name.
#[utoipa::path(get, path = "/v1/annotators", tag = "annotators",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Every annotator", body = AnnotatorList),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
    ))]
pub async fn list_annotators(
    State(state): State<AppState>,
) -> Result<AppJson<AnnotatorList>, ApiError> {
    let (stats, agreement) = load(&state, MIN_SHARED_ITEMS).await?;
    let data = stats.into_iter().map(|s| summary(s, &agreement)).collect();
    Ok(AppJson(AnnotatorList {
        object: "list",
        data,
    }))
}

/// One annotator, with Cohen's kappa against each annotator sharing enough pairs.
#[utoipa::path(get, path = "/v1/annotators/{id}", tag = "annotators",
    params(("id" = String, Path, description = "the annotator's name"), KappaQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The annotator", body = AnnotatorDetail),
        (status = 400, description = "A malformed `min_shared`, or an `id` that is not valid UTF-8", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No judgments by this annotator", body = ErrorBody),
    ))]
pub async fn get_annotator(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    AppQuery(q): AppQuery<KappaQuery>,
) -> Result<AppJson<AnnotatorDetail>, ApiError> {
    let min_shared = match q.min_shared.as_deref() {
        None => MIN_SHARED_ITEMS,
        Some(v) => v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::invalid(
                "min_shared",
                format!("`min_shared` must be >= 1. Given: {v}"),
            )
        })?,
    };
    let (stats, agreement) = load(&state, min_shared).await?;
    let stats = stats
        .into_iter()
        .find(|s| s.annotator == id)
        .ok_or_else(|| ApiError::NotFound(format!("annotator `{id}` has no judgments")))?;
    let kappa = agreement
        .pairs
        .iter()
        .filter_map(|p| {
            let other = match (&p.first, &p.second) {
                (first, second) if *first == id => second,
                (first, second) if *second == id => first,
                _ => return None,
            };
            Some(KappaWith {
                annotator: other.clone(),
                shared_items: p.shared_items,
                observed_agreement: p.observed,
                kappa: p.kappa,
            })
        })
        .collect();
    Ok(AppJson(AnnotatorDetail {
        summary: summary(stats, &agreement),
        kappa,
    }))
}

/// Sets the annotator gauges of `/metrics` from the store.
pub async fn refresh_gauges(state: &AppState) -> Result<(), ApiError> {
    let (stats, agreement) = load(state, MIN_SHARED_ITEMS).await?;
    let summaries: Vec<AnnotatorSummary> =
        stats.into_iter().map(|s| summary(s, &agreement)).collect();
    state.metrics.record_annotators(
        summaries
            .iter()
            .map(|s| (s.annotator.as_str(), s.judgments, s.majority_agreement)),
        agreement
            .pairs
            .iter()
            .filter_map(|p| Some((p.first.as_str(), p.second.as_str(), p.kappa?))),
    );
    Ok(())
}

async fn load(
    state: &AppState,
    min_shared: usize,
) -> Result<(Vec<AnnotatorStats>, Agreement), ApiError> {
    let stats = state.store.annotator_stats().await?;
    let shared = state.store.judgments_on_shared_pairs().await?;
    Ok((stats, agreement(&shared, min_shared)))
}

fn summary(s: AnnotatorStats, agreement: &Agreement) -> AnnotatorSummary {
    let majority = agreement.majority.get(&s.annotator);
    let rate = |n: i64| {
        if s.judgments > 0 {
            n as f64 / s.judgments as f64
        } else {
            0.0
        }
    };
    AnnotatorSummary {
        tie_rate: rate(s.ties),
        both_bad_rate: rate(s.both_bad),
        shared_items: majority.map_or(0, |m| m.shared_items),
        majority_agreement: majority.and_then(|m| m.rate()),
        annotator: s.annotator,
        judgments: s.judgments,
        ties: s.ties,
        both_bad: s.both_bad,
        first_judgment_at: s.first_judgment_at,
        last_judgment_at: s.last_judgment_at,
        median_seconds_to_judge: s.median_seconds_to_judge,
    }
}
