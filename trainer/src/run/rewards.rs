//! Rewards for the GRPO family, from what the store holds: rewards posted from outside
//! (`POST /v1/rewards`: verifiers, reward models, people), win-rates from pairwise judgments (SPO,
//! `research/algorithms.md` §6), or consistency rewards of variant groups (§5.2, ours).
//!
//! Each function returns one `Option<f64>` per stored response of the group, in order: `None` for a
//! response without a reward (it is left out of its group).
//!
//! Consistency rewards may be multiplied by a quality gate in [0, 1] ([`QualityGate`]), from the
//! posted rewards or the judgments of the same responses, so that an answer that is consistent but
//! wrong earns nothing (§5.2).

use std::str::FromStr;

use flywheel_judge::{comparisons, estimate_win_rates, Outcome};
use flywheel_store::{
    IdempotencyKey, Judgment, NewReward, QualityGate, RewardSource, TrainingGroup, VariantGroup,
};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::learning::{
    consistency_rewards, top_unit_share, ConsistencyConfig, UnitExtractor, UnitSet,
};
use crate::Result;

/// Where plain `grpo` takes its rewards from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrpoRewards {
    /// The mean of the rewards posted for each response (sources `human`, `model`, `rule`).
    #[default]
    Posted,
    /// Each response's estimated win-rate against its group from pairwise judgments (SPO, §6):
    /// ordinary judged sample groups become GRPO groups.
    WinRate,
}

impl GrpoRewards {
    pub fn name(self) -> &'static str {
        match self {
            Self::Posted => "posted",
            Self::WinRate => "win-rate",
        }
    }
}

impl FromStr for GrpoRewards {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "posted" => Ok(Self::Posted),
            "win-rate" => Ok(Self::WinRate),
            _ => Err(format!("must be one of posted, win-rate. Given: {s}")),
        }
    }
}

/// Each response's quality gate from `source`; `None` where it has none.
pub(crate) fn quality_gates(group: &TrainingGroup, source: QualityGate) -> Vec<Option<f64>> {
    match source {
        QualityGate::Posted => posted(group)
            .into_iter()
            .zip(&group.responses)
            .map(|(gate, r)| match gate {
                Some(value) if !(0.0..=1.0).contains(&value) => {
                    tracing::warn!(response = %r.id, value, "a posted reward outside [0, 1] cannot gate a consistency reward; the response is left out");
                    None
                }
                gate => gate,
            })
            .collect(),
        QualityGate::Judgments => group
            .responses
            .iter()
            .map(|r| {
                let scores: Vec<f64> = group
                    .judgments
                    .iter()
                    .filter_map(|j| judged_score(j, r.id))
                    .collect();
                (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
            })
            .collect(),
    }
}

/// What judgment `j` says of response `id`: its probability of being the better one, or 0 when
/// the judge found both unacceptable; `None` when `j` does not name it.
fn judged_score(j: &Judgment, id: Uuid) -> Option<f64> {
    let judged = j.judged();
    let p = if judged.a == id {
        judged.probability()
    } else if judged.b == id {
        1.0 - judged.probability()
    } else {
        return None;
    };
    Some(if judged.outcome == Outcome::BothBad {
        0.0
    } else {
        p
    })
}

/// The mean posted reward of each response; rewards the trainer derived itself (`consistency`,
/// `win_rate`) are records, not inputs, and are ignored.
pub(crate) fn posted(group: &TrainingGroup) -> Vec<Option<f64>> {
    group
        .responses
        .iter()
        .map(|r| {
            let values: Vec<f64> = group
                .rewards
                .iter()
                .filter(|w| w.response_id == r.id)
                .filter(|w| {
                    matches!(
                        w.source,
                        RewardSource::Human | RewardSource::Model | RewardSource::Rule
                    )
                })
                .map(|w| w.value)
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        })
        .collect()
}

/// P̂(y_i ≻ group) of each judged response (§6: with std-scaled advantages every affine form of
/// the SPO reward gives the same advantages); responses no judgment names get `None`.
///
/// # Errors
/// A judgment with a strength outside [0, 1].
pub(crate) fn win_rates(group: &TrainingGroup) -> Result<Vec<Option<f64>>> {
    let judged: Vec<Uuid> = group
        .responses
        .iter()
        .map(|r| r.id)
        .filter(|id| {
            group
                .judgments
                .iter()
                .any(|j| j.response_a == *id || j.response_b == *id)
        })
        .collect();
    let mut out = vec![None; group.responses.len()];
    if judged.len() < 2 {
        return Ok(out);
    }
    let compared = comparisons(&judged, group.judgments.iter().map(Judgment::judged));
    let (rates, _) = estimate_win_rates(judged.len(), &compared)?;
    for (id, rate) in judged.iter().zip(rates) {
        if let Some(i) = group.responses.iter().position(|r| r.id == *id) {
            out[i] = Some(rate);
        }
    }
    Ok(out)
}

/// One variant group's consistency rewards, and the records to store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scored {
    pub rewards: Vec<Option<f64>>,
    pub records: Vec<NewReward>,
}

/// §5.2's rewards over every response of a variant group (all variants share one baseline), with
/// the extractor's version, each response's units and its quality gate recorded beside the value.
/// With a `gate`, a response without one gets no reward and no record.
///
/// # Errors
/// Fewer than two responses, or a bad configuration.
pub(crate) fn consistency(
    group: &TrainingGroup,
    extractor: &UnitExtractor,
    config: &ConsistencyConfig,
    gate: Option<QualityGate>,
    run_id: Uuid,
) -> Result<Scored> {
    let sets: Vec<UnitSet> = group
        .responses
        .iter()
        .map(|r| extractor.extract(&r.text))
        .collect();
    let gates = gate.map(|source| quality_gates(group, source));
    // A response without a gate is scored as ungated and then left out, so that it still counts
    // towards the others' stability.
    let factors: Option<Vec<f64>> = gates
        .as_ref()
        .map(|g| g.iter().map(|g| g.unwrap_or(1.0)).collect());
    let scored = consistency_rewards(&sets, config, factors.as_deref())?;
    let gated = |m: usize| gates.as_ref().map(|g| g[m]);
    let kept = |m: usize| gated(m).is_none_or(|g| g.is_some());
    let records = group
        .responses
        .iter()
        .enumerate()
        .filter(|&(m, _)| kept(m))
        .map(|(m, r)| NewReward {
            response_id: r.id,
            value: scored.rewards[m],
            source: RewardSource::Consistency,
            annotator: "flywheel-trainer".into(),
            rationale: None,
            details: Some(json!({
                "extractor": extractor.version(),
                "units": sets[m],
                "helpfulness": scored.helpfulness[m],
                "stability": scored.stability[m],
                "group_entropy": scored.entropy,
                "w_help": config.w_help,
                "w_stab": config.w_stab,
                "n_max": config.n_max,
                "empty_agreement": config.empty_agreement,
                "quality_gate": gate.map(QualityGate::name),
                "gate": gated(m).flatten(),
                "train_run": run_id,
            })),
            idempotency_key: IdempotencyKey::parse(format!("consistency:{run_id}:{}", r.id)).ok(),
        })
        .collect();
    Ok(Scored {
        rewards: (0..sets.len())
            .map(|m| kept(m).then_some(scored.rewards[m]))
            .collect(),
        records,
    })
}

/// The consistency of one adapter version's answers over variant groups: what
/// `GET /v1/consistency` reports and the benchmark compares across versions.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConsistencyReport {
    pub adapter_version: i64,
    /// The extractor's version hash; reports are comparable only under one extractor.
    pub extractor: String,
    /// Variant groups measured (groups with at least two responses).
    pub groups: usize,
    pub responses: usize,
    /// Mean over groups of the group consistency entropy H_stab (0: every answer of a group carries
    /// the same units); `null` without groups.
    pub mean_entropy: Option<f64>,
    /// Mean helpfulness `min(1, log2(1+|U|)/log2(1+N_max))` over responses.
    pub mean_helpfulness: Option<f64>,
    /// Mean stability (pairwise Jaccard with the group's other answers) over responses.
    pub mean_stability: Option<f64>,
    /// Mean over groups of the share of answers naming the group's most often named unit: how
    /// far answers agree on one item, which the entropy shows only past f = 1/2.
    pub mean_top_unit_share: Option<f64>,
    /// Share of responses that name at least one unit.
    pub answers_with_units: Option<f64>,
    /// Mean number of distinct units per response.
    pub mean_units: Option<f64>,
    /// Mean completion tokens per response.
    pub mean_answer_tokens: Option<f64>,
}

/// The report over `groups` (each a variant group with its responses) of `version`.
///
/// # Errors
/// A bad configuration.
pub fn consistency_report(
    version: i64,
    groups: &[(VariantGroup, flywheel_store::GroupWithResponses)],
    extractor: &UnitExtractor,
    config: &ConsistencyConfig,
) -> Result<ConsistencyReport> {
    let (mut entropy, mut top, mut help, mut stab, mut units, mut tokens) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (_, group) in groups {
        let responses: Vec<_> = group
            .responses
            .iter()
            .filter(|r| r.adapter_version == version)
            .collect();
        if responses.len() < 2 {
            continue;
        }
        let sets: Vec<UnitSet> = responses
            .iter()
            .map(|r| extractor.extract(&r.text))
            .collect();
        let scored = consistency_rewards(&sets, config, None)?;
        entropy.push(scored.entropy);
        top.push(top_unit_share(&sets)?);
        help.extend(scored.helpfulness);
        stab.extend(scored.stability);
        units.extend(scored.unit_counts.iter().map(|&n| n as f64));
        tokens.extend(responses.iter().map(|r| r.completion_tokens as f64));
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Ok(ConsistencyReport {
        adapter_version: version,
        extractor: extractor.version().to_string(),
        groups: entropy.len(),
        responses: units.len(),
        mean_entropy: mean(&entropy),
        mean_helpfulness: mean(&help),
        mean_stability: mean(&stab),
        mean_top_unit_share: mean(&top),
        answers_with_units: mean(
            &units
                .iter()
                .map(|&n| f64::from(n > 0.0))
                .collect::<Vec<_>>(),
        ),
        mean_units: mean(&units),
        mean_answer_tokens: mean(&tokens),
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use flywheel_store::{GroupKind, Outcome as Verdict, Response, Reward};

    use super::*;
    use crate::run::stored::tests::{judgment, response};

    fn group(texts: &[&str]) -> TrainingGroup {
        let responses = texts
            .iter()
            .enumerate()
            .map(|(i, text)| Response {
                text: (*text).into(),
                ..response(i as i32, vec![1], 0)
            })
            .collect();
        TrainingGroup {
            id: Uuid::now_v7(),
            kind: GroupKind::Variants,
            model: "tiny".into(),
            adapter_version: 0,
            prompt_token_ids: Some(vec![1]),
            params: json!({}),
            responses,
            judgments: Vec::new(),
            rewards: Vec::new(),
        }
    }

    fn reward(r: &Response, value: f64, source: RewardSource) -> Reward {
        Reward {
            id: Uuid::now_v7(),
            group_id: r.group_id,
            response_id: r.id,
            value,
            source,
            annotator: "verifier".into(),
            rationale: None,
            details: None,
            idempotency_key: None,
            created_at: Utc::now(),
        }
    }

    /// A win scores 1, a loss 0, a tie ½, a strength its P(win), and `both_bad` 0 for both; a
    /// response no judgment names has no gate.
    #[test]
    fn gates_from_judgments_are_mean_scores_with_both_bad_as_zero() {
        let mut g = group(&["a", "b", "c", "d"]);
        let r = g.responses.clone();
        let mut strong_b = judgment(&r[1], &r[0], Verdict::B);
        strong_b.strength = Some(0.25);
        g.judgments = vec![
            judgment(&r[0], &r[1], Verdict::A),
            judgment(&r[0], &r[2], Verdict::Tie),
            judgment(&r[2], &r[1], Verdict::BothBad),
            strong_b,
        ];

        let gates = quality_gates(&g, QualityGate::Judgments);

        let expected = [Some(0.75), Some(0.25 / 3.0), Some(0.25), None];
        for (got, want) in gates.iter().zip(expected) {
            match (got, want) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-12, "{gates:?}"),
                (x, y) => assert_eq!(*x, y, "{gates:?}"),
            }
        }
    }

    /// The mean of the posted rewards gates; rewards the trainer wrote itself do not, and a mean
    /// outside [0, 1] is no gate.
    #[test]
    fn gates_from_posted_rewards_leave_out_what_is_not_a_verdict_in_the_unit_interval() {
        let mut g = group(&["a", "b", "c", "d"]);
        let r = g.responses.clone();
        g.rewards = vec![
            reward(&r[0], 0.5, RewardSource::Rule),
            reward(&r[0], 1.0, RewardSource::Model),
            reward(&r[1], 2.0, RewardSource::Rule),
            reward(&r[2], 0.9, RewardSource::Consistency),
            reward(&r[3], 0.0, RewardSource::Human),
        ];

        let gates = quality_gates(&g, QualityGate::Posted);

        assert_eq!(gates, vec![Some(0.75), None, None, Some(0.0)]);
    }

    /// Gated rewards are the ungated ones times the gate; an ungated response gets no reward and
    /// no record, but still counts towards the others' stability.
    #[test]
    fn a_quality_gate_scales_consistency_rewards_and_is_recorded_with_them() {
        let extractor = UnitExtractor::from_json(
            r#"{"patterns": [{"name": "letter", "regex": "\\b[a-z]\\b"}]}"#,
        )
        .unwrap();
        let config = ConsistencyConfig::default();
        let mut g = group(&["x y", "x", "x z", "y"]);
        let r = g.responses.clone();
        g.rewards = vec![
            reward(&r[0], 1.0, RewardSource::Rule),
            reward(&r[1], 0.5, RewardSource::Rule),
            reward(&r[2], 0.0, RewardSource::Rule),
        ];
        let run = Uuid::now_v7();

        let plain = consistency(&g, &extractor, &config, None, run).unwrap();
        let gated = consistency(&g, &extractor, &config, Some(QualityGate::Posted), run).unwrap();

        let plain: Vec<f64> = plain.rewards.iter().map(|r| r.unwrap()).collect();
        assert!(plain.iter().all(|&r| r > 0.0), "{plain:?}");
        assert_eq!(
            gated.rewards,
            vec![Some(plain[0]), Some(0.5 * plain[1]), Some(0.0), None]
        );
        assert_eq!(gated.records.len(), 3);
        let details = gated.records[1].details.as_ref().unwrap();
        assert_eq!(details["quality_gate"], "posted");
        assert_eq!(details["gate"], 0.5);
        assert_eq!(gated.records[1].value, 0.5 * plain[1]);
        assert!(gated.records.iter().all(|w| w.response_id != r[3].id));
    }
}
