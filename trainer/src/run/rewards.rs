//! Rewards for the GRPO family, from what the store holds: rewards posted from outside
//! (`POST /v1/rewards`: verifiers, reward models, people), win-rates from pairwise judgments (SPO,
//! `research/algorithms.md` §6), or consistency rewards of variant groups (§5.2, ours).
//!
//! Each function returns one `Option<f64>` per stored response of the group, in order: `None` for a
//! response without a reward (it is left out of its group).

use std::str::FromStr;

use flywheel_judge::{comparisons, estimate_win_rates};
use flywheel_store::{
    IdempotencyKey, Judgment, NewReward, RewardSource, TrainingGroup, VariantGroup,
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
/// the extractor's version and each response's units recorded beside the value.
///
/// # Errors
/// Fewer than two responses, or a bad configuration.
pub(crate) fn consistency(
    group: &TrainingGroup,
    extractor: &UnitExtractor,
    config: &ConsistencyConfig,
    run_id: Uuid,
) -> Result<Scored> {
    let sets: Vec<UnitSet> = group
        .responses
        .iter()
        .map(|r| extractor.extract(&r.text))
        .collect();
    let scored = consistency_rewards(&sets, config, None)?;
    let records = group
        .responses
        .iter()
        .enumerate()
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
                "train_run": run_id,
            })),
            idempotency_key: IdempotencyKey::parse(format!("consistency:{run_id}:{}", r.id)).ok(),
        })
        .collect();
    Ok(Scored {
        rewards: scored.rewards.into_iter().map(Some).collect(),
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
