//! Where the versions stand: the leaderboard over every judgment of two versions' responses, and
//! each candidate's head-to-head with the incumbent from its duels, as `GET /v1/arena` shows them
//! and the `flywheel_arena_*` gauges export them.

use flywheel_judge::{leaderboard, Bootstrap, BtPrior, GateConfig};
use flywheel_store::{Store, VersionJudgment};
use serde::Serialize;
use utoipa::ToSchema;

use super::promotion::{evaluate, rule_name};
use super::Promotion;

/// Elo points per unit of Bradley–Terry log-strength (400 / ln 10).
const ELO_PER_THETA: f64 = 173.717_792_761_245_6;

/// The arena as it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ArenaReport {
    /// The active version, which candidates duel and which anchors the leaderboard.
    pub incumbent: i64,
    /// `gate`, `always` or `manual` (`--promotion`).
    pub promotion: String,
    pub gate: GateSettings,
    /// Each candidate against the incumbent, newest first.
    pub candidates: Vec<CandidateStanding>,
    /// Every version that has met another in a judgment (and the incumbent), strongest first.
    pub leaderboard: Vec<LeaderboardEntry>,
    /// Judgments of two responses by different versions, all counted in the leaderboard.
    pub judgments: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GateSettings {
    pub min_judgments: usize,
    pub max_judgments: usize,
    /// Coverage of the intervals.
    pub confidence: f64,
}

/// A candidate's head-to-head with the incumbent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CandidateStanding {
    pub version: i64,
    /// Judgments of its duels with the incumbent.
    pub judgments: usize,
    /// Its wins, ties and `both_bad` counting half.
    pub wins: f64,
    pub win_rate: Option<f64>,
    pub both_bad: usize,
    pub both_bad_rate: Option<f64>,
    /// Bradley–Terry P(candidate ≻ incumbent), with its bootstrap interval.
    pub probability: f64,
    pub lower: f64,
    pub upper: f64,
    /// Duels sampled so far, and how many still wait for a judgment.
    pub duels: i64,
    pub unjudged_duels: i64,
    /// What the gate would do now: `promote`, `retire` or `continue`, and the clause that says so.
    pub gate_action: String,
    pub gate_rule: String,
}

/// One version on the leaderboard.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeaderboardEntry {
    pub version: i64,
    /// 1 + the number of versions whose interval lies wholly above this one's.
    pub rank: usize,
    /// Log-odds of beating the incumbent (0 for the incumbent itself), with its interval.
    pub strength: f64,
    pub lower: f64,
    pub upper: f64,
    /// `strength` on the Elo scale (400 / ln 10 per unit), relative to the incumbent.
    pub elo: f64,
    pub judgments: usize,
    pub wins: f64,
    pub win_rate: Option<f64>,
    pub both_bad: usize,
    pub both_bad_rate: Option<f64>,
}

/// Reads the store and computes the arena's standings.
///
/// # Errors
/// A store error, or the statistics failing.
pub async fn report(
    store: &Store,
    promotion: Promotion,
    gate: &GateConfig,
) -> anyhow::Result<ArenaReport> {
    let incumbent = store.active_adapter_version().await?;
    let mut candidates = Vec::new();
    for candidate in store.candidates().await? {
        let version = candidate.version;
        let decision = evaluate(store, version, incumbent, gate).await?;
        let progress = store.duel_progress(version, incumbent).await?;
        let h = decision.evidence;
        candidates.push(CandidateStanding {
            version,
            judgments: h.tally.judgments,
            wins: h.tally.wins,
            win_rate: h.tally.win_rate(),
            both_bad: h.tally.both_bad,
            both_bad_rate: h.tally.both_bad_rate(),
            probability: h.probability,
            lower: h.interval.lower,
            upper: h.interval.upper,
            duels: progress.duels,
            unjudged_duels: progress.unjudged,
            gate_action: format!("{:?}", decision.action).to_lowercase(),
            gate_rule: rule_name(decision.rule).into(),
        });
    }
    let judgments = store.cross_version_judgments().await?;
    Ok(ArenaReport {
        incumbent,
        promotion: promotion.name().into(),
        gate: GateSettings {
            min_judgments: gate.min_judgments,
            max_judgments: gate.max_judgments,
            confidence: gate.bootstrap.confidence,
        },
        candidates,
        leaderboard: board(incumbent, &judgments, gate.prior, &gate.bootstrap)?,
        judgments: judgments.len(),
    })
}

/// The leaderboard anchored at the incumbent; empty without judgments.
fn board(
    incumbent: i64,
    judgments: &[VersionJudgment],
    prior: BtPrior,
    bootstrap: &Bootstrap,
) -> anyhow::Result<Vec<LeaderboardEntry>> {
    if judgments.is_empty() {
        return Ok(Vec::new());
    }
    let mut versions: Vec<i64> = judgments.iter().flat_map(|j| [j.a, j.b]).collect();
    versions.sort_unstable();
    versions.dedup();
    versions.retain(|v| *v != incumbent);
    versions.insert(0, incumbent);
    let standings = leaderboard(
        &versions,
        judgments.iter().map(VersionJudgment::judged),
        prior,
        bootstrap,
    )?;
    Ok(standings
        .into_iter()
        .map(|s| LeaderboardEntry {
            version: s.version,
            rank: s.rank,
            strength: s.strength,
            lower: s.interval.lower,
            upper: s.interval.upper,
            elo: s.strength * ELO_PER_THETA,
            judgments: s.tally.judgments,
            wins: s.tally.wins,
            win_rate: s.tally.win_rate(),
            both_bad: s.tally.both_bad,
            both_bad_rate: s.tally.both_bad_rate(),
        })
        .collect())
}
