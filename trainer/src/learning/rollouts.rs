//! GRPO's training data: groups of sampled responses with scalar rewards → per-response advantages,
//! each response checked against the policy that is said to have sampled it.
//!
//! The ratio `π_θ / π_behaviour` uses the behaviour log-probs the server stored while sampling
//! (`research/algorithms.md` §0.3), so they must be those of the policy being trained, at the
//! temperature it sampled at. Before the first step π_θ *is* that policy, so its recomputed
//! log-probs must match the stored ones: a response whose mean per-token gap exceeds
//! [`RolloutCheck::max_gap`] was not sampled by it (another adapter version, another base model, a
//! quantized server, a sampler bug) and is refused, counted, never trained on (§0.2's warning).

use super::grpo::Grpo;
use crate::model::{sampled_logprobs, Adapter, Model, Sequence};
use crate::{Error, Result};

/// One sampled response with its reward.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Its own prompt (a variant's, for consistency-GRPO) and its tokens.
    pub sequence: Sequence,
    /// The stored behaviour log-probs, one per response token (natural log, at the group's
    /// temperature).
    pub behaviour: Vec<f64>,
    pub reward: f64,
}

/// The responses that share one baseline: the `n` samples of a prompt, or every sample of every
/// variant of one canonical prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutGroup {
    pub rollouts: Vec<Rollout>,
    /// The sampling temperature the group was drawn at (> 0).
    pub temperature: f64,
}

/// A response ready for [`GrpoTrainer::step`](super::GrpoTrainer::step).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRollout {
    pub sequence: Sequence,
    pub advantage: f64,
    pub behaviour: Vec<f64>,
    /// `log π_ref` per token at the sampling temperature, when the loss has a KL term.
    pub reference: Option<Vec<f64>>,
    pub temperature: f64,
    /// The group's index in the input, so a step can keep a group together.
    pub group: usize,
}

/// How the behaviour log-probs are checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RolloutCheck {
    /// The largest mean |stored − recomputed| log-prob per token (nats) a response may show.
    pub max_gap: f64,
}

impl Default for RolloutCheck {
    /// 0.05 nats: the server and the trainer compute the same f32 model along different kernels,
    /// which agree to ~1e-3 per token; a different policy is off by far more.
    fn default() -> Self {
        Self { max_gap: 0.05 }
    }
}

/// What happened to the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutReport {
    pub groups: usize,
    pub rollouts: usize,
    /// Responses refused because their stored log-probs are not the policy's.
    pub mismatched: usize,
    /// Groups left with fewer than two responses.
    pub too_small: usize,
    /// Groups whose rewards are all equal, dropped (DAPO's dynamic sampling) or kept at advantage 0.
    pub zero_variance: usize,
    /// Responses that reach training.
    pub kept: usize,
}

impl std::fmt::Display for RolloutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} responses kept, {} refused (stored log-probs not the policy's), {} groups \
             too small, {} groups with equal rewards",
            self.kept, self.rollouts, self.mismatched, self.too_small, self.zero_variance
        )
    }
}

/// Checks each response against `policy` (the adapter being improved, as it was when it sampled),
/// computes advantages over the groups that remain, and the reference log-probs when `grpo` has a
/// KL term.
///
/// # Errors
/// `Error::NoData` (naming the [`RolloutReport`]) when no response is left with a non-zero
/// advantage; `Error::Shape` for a rollout whose behaviour log-probs do not match its tokens in
/// number; `Error::Setting` for a temperature that is not positive.
pub fn prepare_rollouts(
    model: &Model,
    grpo: &Grpo,
    groups: Vec<RolloutGroup>,
    policy: Adapter,
    check: RolloutCheck,
) -> Result<(Vec<PreparedRollout>, RolloutReport)> {
    grpo.validate()?;
    let mut report = RolloutReport {
        groups: groups.len(),
        rollouts: groups.iter().map(|g| g.rollouts.len()).sum(),
        ..RolloutReport::default()
    };
    let mut kept_groups = Vec::new();
    for group in groups {
        let mut kept = Vec::new();
        for rollout in group.rollouts {
            if rollout.behaviour.len() != rollout.sequence.response.len() {
                return Err(Error::Shape(format!(
                    "{} behaviour log-probs for {} response tokens",
                    rollout.behaviour.len(),
                    rollout.sequence.response.len()
                )));
            }
            let recomputed = sampled_logprobs(model, &rollout.sequence, policy, group.temperature)?;
            if mean_gap(&rollout.behaviour, &recomputed.per_token) > check.max_gap {
                report.mismatched += 1;
            } else {
                kept.push(rollout);
            }
        }
        if kept.len() < 2 {
            report.too_small += 1;
        } else {
            kept_groups.push((kept, group.temperature));
        }
    }
    let rewards: Vec<Vec<f64>> = kept_groups
        .iter()
        .map(|(g, _)| g.iter().map(|r| r.reward).collect())
        .collect();
    let advantages = grpo.advantages(&rewards)?;
    let mut prepared = Vec::new();
    for (index, ((rollouts, temperature), advantages)) in
        kept_groups.into_iter().zip(advantages).enumerate()
    {
        let Some(advantages) = advantages else {
            report.zero_variance += 1;
            continue;
        };
        if advantages.iter().all(|&a| a == 0.0) {
            report.zero_variance += 1;
            continue;
        }
        for (rollout, advantage) in rollouts.into_iter().zip(advantages) {
            let reference = if grpo.needs_reference() {
                Some(
                    sampled_logprobs(model, &rollout.sequence, Adapter::Off, temperature)?
                        .per_token,
                )
            } else {
                None
            };
            prepared.push(PreparedRollout {
                sequence: rollout.sequence,
                advantage,
                behaviour: rollout.behaviour,
                reference,
                temperature,
                group: index,
            });
        }
    }
    report.kept = prepared.len();
    if prepared.is_empty() {
        return Err(Error::NoData(report.to_string()));
    }
    Ok((prepared, report))
}

fn mean_gap(stored: &[f64], recomputed: &[f64]) -> f64 {
    let total: f64 = stored
        .iter()
        .zip(recomputed)
        .map(|(s, r)| (s - r).abs())
        .sum();
    total / stored.len().max(1) as f64
}
