//! The arena: a new adapter is a candidate until blind duels against the incumbent show it better.
//!
//! - `duels`: sampling a candidate and the incumbent on the held-out evaluation prompts, alike,
//!   each pair stored as a group of kind `duel` for humans and judges to judge.
//! - `promotion`: the gate read from duel judgments, and the acts it (or an admin) takes: a
//!   promotion is a compare-and-swap on the active version, a retirement leaves it alone.
//! - `standings`: the leaderboard and the candidate's head-to-head (`GET /v1/arena`, gauges).
//!
//! [`spawn_arena`] runs one [`tick`] after another: keep the candidates loaded, let the gate decide,
//! then sample more duels while the candidate is undecided. Every replica may run it: duels are
//! keyed in the store (a duel sampled twice is stored once) and decisions are compare-and-swaps.

pub mod duels;
pub mod promotion;
pub mod standings;

use std::time::Duration;

use flywheel_judge::GateConfig;
use flywheel_store::Store;
use tokio::task::JoinHandle;

use crate::engine::{follow, Engine};
use duels::DuelConfig;

/// What happens to a new adapter (`--promotion`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Promotion {
    /// It is a candidate until the gate promotes or retires it from duel judgments.
    #[default]
    Gate,
    /// It is activated at once, unchecked.
    Always,
    /// It is a candidate until an admin promotes or retires it (duels still run, for evidence).
    Manual,
}

impl Promotion {
    pub fn name(self) -> &'static str {
        match self {
            Promotion::Gate => "gate",
            Promotion::Always => "always",
            Promotion::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ArenaConfig {
    pub promotion: Promotion,
    pub gate: GateConfig,
    pub duels: DuelConfig,
    /// Time between ticks.
    pub interval: Duration,
}

impl Default for ArenaConfig {
    fn default() -> Self {
        ArenaConfig {
            promotion: Promotion::Gate,
            gate: GateConfig::default(),
            duels: DuelConfig::default(),
            interval: Duration::from_secs(5),
        }
    }
}

/// What one [`tick`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickReport {
    /// Duels sampled and stored.
    pub duels: usize,
    /// Decisions taken, as `(candidate, action)`.
    pub decisions: Vec<(i64, flywheel_store::DecisionAction)>,
    /// A candidate that waits for duels while there is no evaluation prompt to duel on.
    pub starved: Option<i64>,
}

/// One pass: keep the candidates loaded; for each candidate (newest first), let the gate decide
/// (under `--promotion gate`); then sample duels for those still undecided.
///
/// # Errors
/// A store error, or a duel that failed to sample.
pub async fn tick(
    store: &Store,
    engine: &Engine,
    config: &ArenaConfig,
) -> anyhow::Result<TickReport> {
    follow::sync_resident(store, engine).await?;
    let mut report = TickReport::default();
    let incumbent = store.active_adapter_version().await?;
    let candidates = store.candidates().await?;
    if !candidates.is_empty() && store.count_eval_prompts().await? == 0 {
        report.starved = candidates.first().map(|c| c.version);
    }
    for candidate in candidates {
        let candidate = candidate.version;
        if config.promotion == Promotion::Gate {
            let decision = promotion::evaluate(store, candidate, incumbent, &config.gate).await?;
            match promotion::apply_gate(store, engine, candidate, incumbent, &decision).await? {
                Some(action) => {
                    report.decisions.push((candidate, action));
                    // The incumbent may have changed: the next tick looks again.
                    return Ok(report);
                }
                None if decision.evidence.tally.judgments >= config.gate.max_judgments => continue,
                None => {}
            }
        }
        report.duels +=
            duels::sample_some(store, engine, candidate, incumbent, &config.duels).await?;
    }
    Ok(report)
}

/// A running arena; dropping it stops it.
pub struct ArenaGuard(JoinHandle<()>);

impl Drop for ArenaGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs [`tick`] every `config.interval` (at once again after a tick that did something) until the
/// guard is dropped. Failures are logged and the loop goes on.
pub fn spawn_arena(store: Store, engine: Engine, config: ArenaConfig) -> ArenaGuard {
    ArenaGuard(tokio::spawn(async move {
        let mut warned_starved = None;
        loop {
            let busy = match tick(&store, &engine, &config).await {
                Ok(report) => {
                    if report.starved.is_some() && report.starved != warned_starved {
                        tracing::warn!(
                            candidate = report.starved,
                            "a candidate waits for duels, but there are no evaluation prompts to \
                             duel on: add some (POST /v1/eval-prompts, flywheel eval-prompts \
                             import), or decide by hand (--promotion manual, or always)"
                        );
                    }
                    warned_starved = report.starved;
                    if !report.decisions.is_empty() || report.duels > 0 {
                        tracing::info!(duels = report.duels, decisions = ?report.decisions, "arena tick");
                    }
                    report.duels > 0 || !report.decisions.is_empty()
                }
                Err(e) => {
                    tracing::warn!(error.cause_chain = ?e, "arena tick failed");
                    false
                }
            };
            if !busy {
                tokio::time::sleep(config.interval).await;
            }
        }
    }))
}
