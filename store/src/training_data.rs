//! What a train run reads: the groups of a data window that its selection picks (judged, rewarded,
//! or variant groups), each with its exact prompt token ids, its responses, its judgments and its
//! rewards.
//!
//! Four queries share one group condition (the same `$N` numbering whatever filters are set), so
//! a window costs four round trips however many groups it holds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::groups::{ResponseRow, SELECT_RESPONSE};
use crate::judgments::{JudgmentRow, SELECT_JUDGMENT};
use crate::rewards::{RewardRow, SELECT_REWARD};
use crate::timestamp::Timestamp;
use crate::{GroupKind, Judgment, Response, Result, Reward, Store};

/// Which groups of a window a run trains on.
///
/// Every selection leaves out duels (they answer held-out evaluation prompts: judged for the
/// arena, never trained on) and held-out variant groups (kept to measure consistency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrainingSelect {
    /// Groups with at least one judgment: what preference training (DPO and kin) learns from.
    #[default]
    Judged,
    /// Groups with at least one reward: what reward-weighted training learns from.
    Rewarded,
    /// Every `variants` group, rewarded or not: what consistency training learns from.
    Variants,
    /// `variants` groups every response of which has a verdict its quality gate can be read from:
    /// what a gated consistency run waits for before it counts a group as new.
    GatedVariants(QualityGate),
}

/// Where the quality gate on a consistency reward comes from: a verdict in [0, 1] on the same
/// response, so that answers that agree on the wrong thing earn nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityGate {
    /// The mean of the rewards posted for the response (sources `human`, `model`, `rule`); a mean
    /// outside [0, 1] is no gate.
    Posted,
    /// The response's mean score over the pairwise judgments that name it: its P(win) in each
    /// (1 a win, 0 a loss, ½ a tie, or the judgment's strength), and 0 in a `both_bad` one.
    Judgments,
}

impl QualityGate {
    pub fn name(self) -> &'static str {
        match self {
            Self::Posted => "posted",
            Self::Judgments => "judgments",
        }
    }
}

impl std::str::FromStr for QualityGate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "posted" => Ok(Self::Posted),
            "judgments" => Ok(Self::Judgments),
            _ => Err(format!("must be one of posted, judgments. Given: {s}")),
        }
    }
}

/// Which groups a run trains on: those its `select` picks, created in `[since, until)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingDataFilter {
    /// Only groups served by this adapter version (π_t's own samples); `None`: every version.
    pub adapter_version: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub select: TrainingSelect,
}

/// One selected group as the trainer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingGroup {
    pub id: Uuid,
    /// `samples` or `variants`: duels are never read for training.
    pub kind: GroupKind,
    /// The served model name.
    pub model: String,
    pub adapter_version: i64,
    /// The token ids the model was fed; `None` for groups recorded before they were kept.
    pub prompt_token_ids: Option<Vec<u32>>,
    /// The request's sampling parameters as the server resolved them (`sampling.temperature`
    /// is the distribution the behaviour log-probs are of).
    pub params: serde_json::Value,
    /// In choice-index order.
    pub responses: Vec<Response>,
    /// Oldest first.
    pub judgments: Vec<Judgment>,
    /// Oldest first, whatever the selection.
    pub rewards: Vec<Reward>,
}

impl Store {
    /// The groups of a data window that `f` selects, oldest first.
    pub async fn training_groups(&self, f: &TrainingDataFilter) -> Result<Vec<TrainingGroup>> {
        let groups_in = selected_groups_sql(f);
        let groups_sql = format!(
            "SELECT g.id, g.kind, g.model, g.adapter_version, g.prompt_token_ids, g.params \
             FROM groups g \
             WHERE g.id IN ({groups_in}) ORDER BY g.id"
        );
        let responses_sql =
            format!("{SELECT_RESPONSE} WHERE group_id IN ({groups_in}) ORDER BY group_id, idx");
        let judgments_sql =
            format!("{SELECT_JUDGMENT} WHERE group_id IN ({groups_in}) ORDER BY id");
        let rewards_sql = format!("{SELECT_REWARD} WHERE group_id IN ({groups_in}) ORDER BY id");
        let since = f.since.map(Timestamp);
        let until = f.until.map(Timestamp);
        let (groups, responses, judgments, rewards) = with_pool!(self, pool => {
            let groups: Vec<TrainingGroupRow> = sqlx::query_as(&groups_sql)
                .bind(f.adapter_version)
                .bind(since)
                .bind(until)
                .fetch_all(pool)
                .await?;
            let responses: Vec<ResponseRow> = sqlx::query_as(&responses_sql)
                .bind(f.adapter_version)
                .bind(since)
                .bind(until)
                .fetch_all(pool)
                .await?;
            let judgments: Vec<JudgmentRow> = sqlx::query_as(&judgments_sql)
                .bind(f.adapter_version)
                .bind(since)
                .bind(until)
                .fetch_all(pool)
                .await?;
            let rewards: Vec<RewardRow> = sqlx::query_as(&rewards_sql)
                .bind(f.adapter_version)
                .bind(since)
                .bind(until)
                .fetch_all(pool)
                .await?;
            (groups, responses, judgments, rewards)
        });
        let mut out: Vec<TrainingGroup> = groups.into_iter().map(TrainingGroup::from).collect();
        let index: HashMap<Uuid, usize> = out.iter().enumerate().map(|(i, g)| (g.id, i)).collect();
        for r in responses.into_iter().map(Response::from) {
            if let Some(&i) = index.get(&r.group_id) {
                out[i].responses.push(r);
            }
        }
        for j in judgments.into_iter().map(Judgment::from) {
            if let Some(&i) = index.get(&j.group_id) {
                out[i].judgments.push(j);
            }
        }
        for r in rewards.into_iter().map(Reward::from) {
            if let Some(&i) = index.get(&r.group_id) {
                out[i].rewards.push(r);
            }
        }
        Ok(out)
    }

    /// How many groups [`Store::training_groups`] would return for `f`, without reading them.
    pub async fn count_training_groups(&self, f: &TrainingDataFilter) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM ({}) ids", selected_groups_sql(f));
        let count: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(&sql)
                .bind(f.adapter_version)
                .bind(f.since.map(Timestamp))
                .bind(f.until.map(Timestamp))
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }
}

/// The ids of the groups `f` selects. Every parameter keeps its number whether or not its
/// condition is present, so the bind lists never change.
fn selected_groups_sql(f: &TrainingDataFilter) -> String {
    let conditions = [
        (f.adapter_version.is_some(), "w.adapter_version = $1"),
        (f.since.is_some(), "w.created_at >= $2"),
        (f.until.is_some(), "w.created_at < $3"),
    ];
    // Duels answer held-out evaluation prompts, and held-out variant groups measure consistency:
    // neither is ever trained on.
    let trainable = "w.kind <> 'duel' AND NOT EXISTS (SELECT 1 FROM variant_groups h \
                     WHERE h.group_id = w.id AND h.held_out)";
    let selected = match f.select {
        TrainingSelect::Judged => "EXISTS (SELECT 1 FROM judgments j WHERE j.group_id = w.id)",
        TrainingSelect::Rewarded => "EXISTS (SELECT 1 FROM rewards r WHERE r.group_id = w.id)",
        TrainingSelect::Variants => "w.kind = 'variants'",
        TrainingSelect::GatedVariants(QualityGate::Posted) => {
            "w.kind = 'variants' AND NOT EXISTS (SELECT 1 FROM responses x WHERE x.group_id = w.id \
             AND NOT EXISTS (SELECT 1 FROM rewards r WHERE r.response_id = x.id \
             AND r.source IN ('human', 'model', 'rule')))"
        }
        TrainingSelect::GatedVariants(QualityGate::Judgments) => {
            "w.kind = 'variants' AND NOT EXISTS (SELECT 1 FROM responses x WHERE x.group_id = w.id \
             AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.response_a = x.id \
             OR j.response_b = x.id))"
        }
    };
    let wanted: Vec<&str> = [trainable, selected]
        .into_iter()
        .chain(
            conditions
                .iter()
                .filter(|(set, _)| *set)
                .map(|(_, condition)| *condition),
        )
        .collect();
    format!("SELECT w.id FROM groups w WHERE {}", wanted.join(" AND "))
}

/// The group columns of a [`TrainingGroup`].
#[derive(FromRow)]
struct TrainingGroupRow {
    id: Uuid,
    kind: GroupKind,
    model: String,
    adapter_version: i64,
    prompt_token_ids: Option<Json<Vec<u32>>>,
    params: Json<serde_json::Value>,
}

impl From<TrainingGroupRow> for TrainingGroup {
    fn from(row: TrainingGroupRow) -> Self {
        TrainingGroup {
            id: row.id,
            kind: row.kind,
            model: row.model,
            adapter_version: row.adapter_version,
            prompt_token_ids: row.prompt_token_ids.map(|ids| ids.0),
            params: row.params.0,
            responses: Vec::new(),
            judgments: Vec::new(),
            rewards: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAINABLE: &str = "FROM groups w WHERE w.kind <> 'duel' AND NOT EXISTS (SELECT 1 FROM \
                             variant_groups h WHERE h.group_id = w.id AND h.held_out)";

    #[test]
    fn a_training_query_without_filters_selects_only_judged_groups_that_are_not_held_out() {
        let sql = selected_groups_sql(&TrainingDataFilter::default());
        assert!(
            sql.ends_with(&format!(
                "{TRAINABLE} AND EXISTS (SELECT 1 FROM judgments j WHERE j.group_id = w.id)"
            )),
            "{sql}"
        );
    }

    #[test]
    fn gate_sources_round_trip_by_name_and_unknown_ones_are_refused() {
        for gate in [QualityGate::Posted, QualityGate::Judgments] {
            assert_eq!(gate.name().parse::<QualityGate>(), Ok(gate));
        }
        let refused = "win-rate".parse::<QualityGate>().unwrap_err();
        assert_eq!(refused, "must be one of posted, judgments. Given: win-rate");
    }

    #[test]
    fn every_selection_leaves_out_duels_and_held_out_variant_groups() {
        for select in [
            TrainingSelect::Judged,
            TrainingSelect::Rewarded,
            TrainingSelect::Variants,
            TrainingSelect::GatedVariants(QualityGate::Posted),
            TrainingSelect::GatedVariants(QualityGate::Judgments),
        ] {
            let f = TrainingDataFilter {
                until: Some(Utc::now()),
                select,
                ..TrainingDataFilter::default()
            };

            let sql = selected_groups_sql(&f);

            assert!(sql.contains(TRAINABLE), "{sql}");
            assert!(sql.ends_with(" AND w.created_at < $3"), "{sql}");
        }
    }
}
