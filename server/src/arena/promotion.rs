//! The gate read from duel judgments, and the acts that follow from it or from an admin: promote
//! (a compare-and-swap on the active version, through [`swap::activate`]) or retire (the active
//! version untouched). Each act is recorded with the evidence it rested on.

use flywheel_judge::{Action, Decision, GateConfig, HeadToHead, Rule};
use flywheel_store::{
    Adapter, DecidedBy, DecisionAction, Evidence, NewDecision, Store, VersionJudgment,
};

use crate::engine::swap::{self, ActivateError};
use crate::engine::{follow, Engine};

/// The gate's decision on `candidate` against `incumbent` from their duel judgments so far.
///
/// # Errors
/// A store error, or the statistics failing (a bad setting).
pub async fn evaluate(
    store: &Store,
    candidate: i64,
    incumbent: i64,
    config: &GateConfig,
) -> anyhow::Result<Decision> {
    let duels = store.duel_judgments(candidate, incumbent).await?;
    Ok(flywheel_judge::gate(
        candidate,
        incumbent,
        duels.iter().map(VersionJudgment::judged),
        config,
    )?)
}

/// The head-to-head as the store records it.
pub fn evidence(h: &HeadToHead) -> Evidence {
    Evidence {
        judgments: h.tally.judgments as i64,
        wins: h.tally.wins,
        both_bad: h.tally.both_bad as i64,
        probability: Some(h.probability),
        lower: Some(h.interval.lower),
        upper: Some(h.interval.upper),
        confidence: Some(h.confidence),
    }
}

/// The name a rule is recorded under.
pub fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::TooFewJudgments => "too_few_judgments",
        Rule::LowerBoundAboveHalf => "lower_bound_above_half",
        Rule::UpperBoundBelowHalf => "upper_bound_below_half",
        Rule::BudgetSpent => "budget_spent",
        Rule::Undecided => "undecided",
    }
}

/// Carries out the gate's decision. Returns the action taken, or `None` when there was nothing
/// to do or the act did not happen (the active version moved: the next look decides again; the
/// candidate is not loaded here: a replica holding it promotes it).
///
/// # Errors
/// A store error.
pub async fn apply_gate(
    store: &Store,
    engine: &Engine,
    candidate: i64,
    incumbent: i64,
    decision: &Decision,
) -> anyhow::Result<Option<DecisionAction>> {
    let action = match decision.action {
        Action::Continue => return Ok(None),
        Action::Promote => DecisionAction::Promote,
        Action::Retire => DecisionAction::Retire,
    };
    if action == DecisionAction::Promote && engine.loaded(candidate).is_none() {
        // Promote only from a replica that holds the candidate: one that cannot load it (files
        // it cannot see) must not mark it failed. A replica that holds it will promote it.
        return Ok(None);
    }
    let record = NewDecision {
        action,
        decided_by: DecidedBy::Gate,
        rule: rule_name(decision.rule).into(),
        evidence: evidence(&decision.evidence),
        reason: None,
    };
    let done = match action {
        DecisionAction::Promote => {
            match swap::activate(engine, store, candidate, Some(incumbent), Some(&record)).await {
                Ok(_) => true,
                Err(ActivateError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(candidate, incumbent, error = %e, "the gate could not promote");
                    false
                }
            }
        }
        DecisionAction::Retire => {
            match retire(store, engine, candidate, incumbent, &record).await {
                Ok(_) => true,
                Err(flywheel_store::Error::Conflict(message)) => {
                    tracing::info!(candidate, %message, "the active version moved; deciding again");
                    false
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    if done {
        tracing::info!(candidate, incumbent, decision = %decision, "gate decision");
    }
    Ok(done.then_some(action))
}

/// Retires candidate `version` if `expected` is still active, records `decision`, and stops
/// holding it here.
///
/// # Errors
/// As [`Store::retire_candidate`].
pub async fn retire(
    store: &Store,
    engine: &Engine,
    version: i64,
    expected: i64,
    decision: &NewDecision,
) -> flywheel_store::Result<Adapter> {
    let adapter = store.retire_candidate(version, expected, decision).await?;
    follow::sync_resident(store, engine).await?;
    Ok(adapter)
}

/// An admin's `action` on `version`, recorded with its head-to-head against `active` as it stands.
pub async fn by_hand(
    store: &Store,
    config: &GateConfig,
    action: DecisionAction,
    version: i64,
    active: i64,
    reason: Option<String>,
) -> NewDecision {
    let evidence = current_evidence(store, version, active, config).await;
    NewDecision::by_hand(action, evidence, reason)
}

/// The evidence an admin's act on `version` is recorded with: its head-to-head with the active
/// version as it stands (none when it is the active version or has no duels).
async fn current_evidence(
    store: &Store,
    version: i64,
    active: i64,
    config: &GateConfig,
) -> Evidence {
    if version == active {
        return Evidence::default();
    }
    match evaluate(store, version, active, config).await {
        Ok(decision) => evidence(&decision.evidence),
        Err(e) => {
            tracing::debug!(error = %e, "no head-to-head to record");
            Evidence::default()
        }
    }
}
