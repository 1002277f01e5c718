//! What a train run reads: the judged groups of a data window, each with its exact prompt token
//! ids, its responses and its judgments.
//!
//! Three queries share one group condition (the same `$N` numbering whatever filters are set), so
//! a window costs three round trips however many groups it holds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::groups::{ResponseRow, SELECT_RESPONSE};
use crate::judgments::{JudgmentRow, SELECT_JUDGMENT};
use crate::timestamp::Timestamp;
use crate::{Judgment, Response, Result, Store};

/// Which groups a run trains on: those with at least one judgment, created in `[since, until)`;
/// never duels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingDataFilter {
    /// Only groups served by this adapter version (π_t's own samples); `None`: every version.
    pub adapter_version: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// One judged group as the trainer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingGroup {
    pub id: Uuid,
    /// The served model name.
    pub model: String,
    pub adapter_version: i64,
    /// The token ids the model was fed; `None` for groups recorded before they were kept.
    pub prompt_token_ids: Option<Vec<u32>>,
    /// In choice-index order.
    pub responses: Vec<Response>,
    /// Oldest first.
    pub judgments: Vec<Judgment>,
}

impl Store {
    /// The judged groups of a data window, oldest first.
    pub async fn training_groups(&self, f: &TrainingDataFilter) -> Result<Vec<TrainingGroup>> {
        let groups_in = judged_groups_sql(f);
        let groups_sql = format!(
            "SELECT g.id, g.model, g.adapter_version, g.prompt_token_ids FROM groups g \
             WHERE g.id IN ({groups_in}) ORDER BY g.id"
        );
        let responses_sql =
            format!("{SELECT_RESPONSE} WHERE group_id IN ({groups_in}) ORDER BY group_id, idx");
        let judgments_sql =
            format!("{SELECT_JUDGMENT} WHERE group_id IN ({groups_in}) ORDER BY id");
        let since = f.since.map(Timestamp);
        let until = f.until.map(Timestamp);
        let (groups, responses, judgments) = with_pool!(self, pool => {
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
            (groups, responses, judgments)
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
        Ok(out)
    }
}

/// The ids of the judged groups `f` selects. Every parameter keeps its number whether or not its
/// condition is present, so the bind lists never change.
fn judged_groups_sql(f: &TrainingDataFilter) -> String {
    let conditions = [
        (f.adapter_version.is_some(), "w.adapter_version = $1"),
        (f.since.is_some(), "w.created_at >= $2"),
        (f.until.is_some(), "w.created_at < $3"),
    ];
    // Duels answer held-out evaluation prompts: judged for the arena, never trained on.
    let judged = "w.kind <> 'duel' AND EXISTS (SELECT 1 FROM judgments j WHERE j.group_id = w.id)";
    let wanted: Vec<&str> = std::iter::once(judged)
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
    model: String,
    adapter_version: i64,
    prompt_token_ids: Option<Json<Vec<u32>>>,
}

impl From<TrainingGroupRow> for TrainingGroup {
    fn from(row: TrainingGroupRow) -> Self {
        TrainingGroup {
            id: row.id,
            model: row.model,
            adapter_version: row.adapter_version,
            prompt_token_ids: row.prompt_token_ids.map(|ids| ids.0),
            responses: Vec::new(),
            judgments: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_query_without_filters_selects_only_judged_groups_that_are_not_duels() {
        let sql = judged_groups_sql(&TrainingDataFilter::default());
        assert!(
            sql.ends_with(
                "FROM groups w WHERE w.kind <> 'duel' \
                 AND EXISTS (SELECT 1 FROM judgments j WHERE j.group_id = w.id)"
            ),
            "{sql}"
        );
    }
}
