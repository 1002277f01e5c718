//! Stored groups → training pairs: the store's judged groups become [`JudgedGroup`]s, then
//! best-versus-worst [`PairExample`]s (`data`).
//!
//! The prompt is the token ids the server fed the model (`groups.prompt_token_ids`), never a
//! re-rendering of the messages, so the trainer scores exactly the sequences that were sampled
//! (`research/algorithms.md` §0.2). Groups recorded without them are skipped and counted.

use flywheel_judge::comparisons;
use flywheel_store::{Judgment, TrainingGroup};
use uuid::Uuid;

use crate::learning::{
    group_pair, Candidate, JudgedGroup, PairExample, PairSelection, Rollout, RolloutGroup,
    RolloutReport,
};
use crate::model::Sequence;
use crate::{Error, Result};

/// How many groups gave a pair, and why the others did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataReport {
    pub groups: usize,
    pub pairs: usize,
    /// Recorded before prompt token ids were kept.
    pub without_prompt_ids: usize,
    /// No preference among the selected responses (ties only, one response of π_t, …).
    pub without_preference: usize,
}

impl std::fmt::Display for DataReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} judged groups read: {} gave a pair, {} lack prompt token ids, {} show no \
             preference among the selected responses",
            self.groups, self.pairs, self.without_prompt_ids, self.without_preference
        )
    }
}

/// The group in the builders' terms: responses with tokens, judgments over their indices.
/// `None` when the group has no prompt token ids. Empty responses and the judgments naming them
/// are left out (an empty response has no token to score).
fn judged_group(stored: &TrainingGroup) -> Option<JudgedGroup> {
    let prompt = stored.prompt_token_ids.clone().filter(|p| !p.is_empty())?;
    let kept: Vec<_> = stored
        .responses
        .iter()
        .filter(|r| !r.token_ids.is_empty())
        .collect();
    let ids: Vec<Uuid> = kept.iter().map(|r| r.id).collect();
    let comparisons = comparisons(&ids, stored.judgments.iter().map(Judgment::judged));
    Some(JudgedGroup {
        prompt,
        responses: kept
            .iter()
            .map(|r| Candidate {
                tokens: r.token_ids.clone(),
                adapter_version: r.adapter_version,
            })
            .collect(),
        comparisons,
    })
}

/// One best-versus-worst pair per stored group that has one, and what happened to the rest.
///
/// # Errors
/// `Error::NoData` (naming the [`DataReport`]) when no group gives a pair; `Error::Shape` for a
/// token id outside a vocabulary of `vocab_size` (data served by another model).
pub fn pairs_from_store(
    groups: &[TrainingGroup],
    selection: &PairSelection,
    vocab_size: usize,
) -> Result<(Vec<PairExample>, DataReport)> {
    let mut report = DataReport {
        groups: groups.len(),
        ..DataReport::default()
    };
    let mut pairs = Vec::new();
    for stored in groups {
        let Some(group) = judged_group(stored) else {
            report.without_prompt_ids += 1;
            continue;
        };
        check_vocabulary(stored, &group, vocab_size)?;
        match group_pair(&group, selection)? {
            Some(pair) => pairs.push(pair),
            None => report.without_preference += 1,
        }
    }
    report.pairs = pairs.len();
    if pairs.is_empty() {
        return Err(Error::NoData(report.to_string()));
    }
    Ok((pairs, report))
}

/// What the GRPO family found in the stored groups, and (once prepared) what survived the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutData {
    pub groups: usize,
    pub responses: usize,
    /// Responses without a reward (not posted, never judged).
    pub without_reward: usize,
    /// Responses of another adapter version than the one trained (off-policy).
    pub other_version: usize,
    /// Responses without prompt token ids or without tokens.
    pub without_tokens: usize,
    /// Groups sampled greedily (temperature 0: no exploration, no behaviour distribution) or
    /// without a recorded temperature.
    pub greedy: usize,
    /// The behaviour check and advantages ([`crate::prepare_rollouts`]).
    pub prepared: Option<RolloutReport>,
}

impl std::fmt::Display for RolloutData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} groups of {} responses read: {} without a reward, {} of another adapter version, \
             {} without token ids, {} groups sampled greedily",
            self.groups,
            self.responses,
            self.without_reward,
            self.other_version,
            self.without_tokens,
            self.greedy
        )?;
        if let Some(report) = &self.prepared {
            write!(f, "; {report}")?;
        }
        Ok(())
    }
}

/// Rewarded stored groups → GRPO groups: each response with its own prompt ids (a variant's, or the
/// group's), its tokens, its stored behaviour log-probs and its reward, at the group's sampling
/// temperature. `rewards` holds one entry per response of each group.
///
/// # Errors
/// `Error::Shape` for a token id outside the vocabulary (data served by another model) or a reward
/// list that does not fit its group.
pub fn rollouts_from_store(
    groups: &[TrainingGroup],
    rewards: &[Vec<Option<f64>>],
    policy_version: Option<i64>,
    vocab_size: usize,
) -> Result<(Vec<RolloutGroup>, RolloutData)> {
    let mut data = RolloutData {
        groups: groups.len(),
        responses: groups.iter().map(|g| g.responses.len()).sum(),
        ..RolloutData::default()
    };
    let mut out = Vec::new();
    for (stored, rewards) in groups.iter().zip(rewards) {
        if rewards.len() != stored.responses.len() {
            return Err(Error::Shape(format!(
                "{} rewards for the {} responses of group {}",
                rewards.len(),
                stored.responses.len(),
                stored.id
            )));
        }
        let temperature = stored.params["sampling"]["temperature"]
            .as_f64()
            .filter(|t| *t > 0.0);
        let Some(temperature) = temperature else {
            data.greedy += 1;
            continue;
        };
        let mut rollouts = Vec::new();
        for (response, reward) in stored.responses.iter().zip(rewards) {
            let Some(reward) = reward else {
                data.without_reward += 1;
                continue;
            };
            if policy_version.is_some_and(|v| v != response.adapter_version) {
                data.other_version += 1;
                continue;
            }
            let prompt = response
                .prompt_token_ids
                .clone()
                .or_else(|| stored.prompt_token_ids.clone())
                .filter(|p| !p.is_empty());
            let (Some(prompt), false) = (prompt, response.token_ids.is_empty()) else {
                data.without_tokens += 1;
                continue;
            };
            if let Some(&max) = prompt
                .iter()
                .chain(&response.token_ids)
                .max()
                .filter(|&&m| m as usize >= vocab_size)
            {
                return Err(vocabulary_error(stored, max, vocab_size));
            }
            rollouts.push(Rollout {
                sequence: Sequence::new(prompt, response.token_ids.clone())?,
                behaviour: response.logprobs.iter().map(|&l| f64::from(l)).collect(),
                reward: *reward,
            });
        }
        if !rollouts.is_empty() {
            out.push(RolloutGroup {
                rollouts,
                temperature,
            });
        }
    }
    Ok((out, data))
}

fn vocabulary_error(stored: &TrainingGroup, max: u32, vocab_size: usize) -> Error {
    Error::Shape(format!(
        "group {} (model `{}`) holds token id {max}, outside this model's vocabulary of \
         {vocab_size}: it was served by another model",
        stored.id, stored.model
    ))
}

fn check_vocabulary(stored: &TrainingGroup, group: &JudgedGroup, vocab_size: usize) -> Result<()> {
    let tokens = group
        .responses
        .iter()
        .flat_map(|r| &r.tokens)
        .chain(&group.prompt);
    match tokens.max() {
        Some(&max) if max as usize >= vocab_size => Err(vocabulary_error(stored, max, vocab_size)),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Utc;
    use flywheel_store::{JudgmentSource, Outcome, Response};

    use super::*;

    pub(crate) fn response(index: i32, tokens: Vec<u32>, version: i64) -> Response {
        Response {
            id: Uuid::now_v7(),
            group_id: Uuid::nil(),
            index,
            prompt: None,
            text: String::new(),
            token_ids: tokens,
            logprobs: vec![],
            finish_reason: "stop".into(),
            completion_tokens: 0,
            adapter_version: version,
            latency_ms: 0,
            created_at: Utc::now(),
            variant: None,
            prompt_token_ids: None,
        }
    }

    pub(crate) fn judgment(a: &Response, b: &Response, outcome: Outcome) -> Judgment {
        Judgment {
            id: Uuid::now_v7(),
            group_id: Uuid::nil(),
            response_a: a.id,
            response_b: b.id,
            outcome,
            strength: None,
            annotator: "ann".into(),
            source: JudgmentSource::Human,
            rationale: None,
            criteria: None,
            idempotency_key: None,
            created_at: Utc::now(),
        }
    }

    fn stored(prompt: Option<Vec<u32>>, responses: Vec<Response>, winner: usize) -> TrainingGroup {
        let judgments = (0..responses.len())
            .filter(|&i| i != winner)
            .map(|i| judgment(&responses[winner], &responses[i], Outcome::A))
            .collect();
        TrainingGroup {
            id: Uuid::now_v7(),
            kind: flywheel_store::GroupKind::Samples,
            model: "tiny".into(),
            adapter_version: 0,
            prompt_token_ids: prompt,
            params: serde_json::json!({"sampling": {"temperature": 0.7}}),
            responses,
            judgments,
            rewards: Vec::new(),
        }
    }

    #[test]
    fn rewarded_groups_become_rollouts_at_their_temperature_and_leave_out_what_cannot_train() {
        let mut g = stored(
            Some(vec![1, 5]),
            vec![
                response(0, vec![10, 2], 3),
                response(1, vec![11, 2], 3),
                response(2, vec![12, 2], 2),
                response(3, vec![13, 2], 3),
            ],
            0,
        );
        g.responses[1].prompt_token_ids = Some(vec![1, 6, 7]);
        g.responses[0].logprobs = vec![-0.5, -0.25];
        let greedy = TrainingGroup {
            params: serde_json::json!({"sampling": {"temperature": 0.0}}),
            ..g.clone()
        };
        let rewards = vec![vec![Some(1.0), Some(0.0), Some(0.5), None]; 2];

        let (groups, data) = rollouts_from_store(&[g, greedy], &rewards, Some(3), 100).unwrap();

        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].temperature, 0.7);
        let rollouts = &groups[0].rollouts;
        assert_eq!(rollouts.len(), 2);
        assert_eq!(rollouts[0].sequence.prompt, vec![1, 5]);
        assert_eq!(rollouts[0].behaviour, vec![-0.5, -0.25]);
        assert_eq!(
            rollouts[1].sequence.prompt,
            vec![1, 6, 7],
            "a variant's own prompt"
        );
        assert_eq!(
            (data.other_version, data.without_reward, data.greedy),
            (1, 1, 1)
        );
        let short = vec![vec![Some(1.0)]];
        assert!(matches!(
            rollouts_from_store(
                &[stored(Some(vec![1]), vec![response(0, vec![3], 0)], 0)],
                &short,
                None,
                2
            ),
            Err(Error::Shape(_))
        ));
    }

    #[test]
    fn a_stored_group_pairs_its_judged_winner_with_the_loser_on_the_served_prompt_ids() {
        let g = stored(
            Some(vec![1, 5, 6]),
            vec![
                response(0, vec![10, 2], 0),
                response(1, vec![11, 2], 0),
                response(2, vec![12, 2], 0),
            ],
            1,
        );

        let (pairs, report) = pairs_from_store(&[g], &PairSelection::default(), 100).unwrap();

        assert_eq!(report.pairs, 1);
        assert_eq!(pairs[0].chosen.prompt, vec![1, 5, 6]);
        assert_eq!(pairs[0].chosen.response, vec![11, 2]);
        assert!(pairs[0].win_rates.is_some());
    }

    #[test]
    fn groups_without_prompt_ids_are_counted_and_none_usable_is_a_no_data_error() {
        let g = stored(
            None,
            vec![response(0, vec![10], 0), response(1, vec![11], 0)],
            0,
        );

        let result = pairs_from_store(&[g], &PairSelection::default(), 100);

        let Err(Error::NoData(message)) = result else {
            panic!("expected NoData, got {result:?}")
        };
        assert!(message.contains("1 lack prompt token ids"), "{message}");
    }

    #[test]
    fn token_ids_beyond_the_vocabulary_are_a_model_mismatch() {
        let g = stored(
            Some(vec![1, 500]),
            vec![response(0, vec![10], 0), response(1, vec![11], 0)],
            0,
        );

        let result = pairs_from_store(&[g], &PairSelection::default(), 100);

        assert!(matches!(result, Err(Error::Shape(_))), "{result:?}");
    }

    #[test]
    fn empty_responses_and_their_judgments_are_left_out() {
        let g = stored(
            Some(vec![1]),
            vec![
                response(0, vec![], 0),
                response(1, vec![11], 0),
                response(2, vec![12], 0),
            ],
            0,
        );

        let group = judged_group(&g).unwrap();

        assert_eq!(group.responses.len(), 2);
        assert!(group.comparisons.is_empty());
    }
}
