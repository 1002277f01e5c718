//! The data behind annotator quality: counts and speed per annotator, and the judgments of pairs
//! that two or more annotators judged. The agreement math (kappa, majority) lives with its callers.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::timestamp::Timestamp;
use crate::{JudgmentSource, Outcome, Result, Store};

/// What one annotator has judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnnotatorStats {
    pub annotator: String,
    pub judgments: i64,
    pub ties: i64,
    pub both_bad: i64,
    pub first_judgment_at: DateTime<Utc>,
    pub last_judgment_at: DateTime<Utc>,
    /// The median time from assignment to judgment, over the annotator's completed assignments;
    /// `None` if none was completed.
    pub median_seconds_to_judge: Option<f64>,
}

/// One annotator's verdict on a pair that at least one other annotator judged too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SharedJudgment {
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    /// The pair in canonical order (`response_lo < response_hi` by id): the key to group by.
    #[schema(value_type = String, format = Uuid)]
    pub response_lo: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub response_hi: Uuid,
    pub annotator: String,
    pub source: JudgmentSource,
    /// The verdict with `a` = `response_lo` and `b` = `response_hi`, whatever order the judgment
    /// named them in.
    pub outcome: Outcome,
    #[schema(value_type = String, format = Uuid)]
    pub judgment_id: Uuid,
    pub created_at: DateTime<Utc>,
}

const ANNOTATOR_COUNTS: &str = "SELECT annotator, COUNT(*) AS judgments, \
     SUM(CASE WHEN outcome = 'tie' THEN 1 ELSE 0 END) AS ties, \
     SUM(CASE WHEN outcome = 'both_bad' THEN 1 ELSE 0 END) AS both_bad, \
     MIN(created_at) AS first_at, MAX(created_at) AS last_at \
     FROM judgments GROUP BY annotator ORDER BY annotator";

const ANSWER_TIMES: &str = "SELECT a.annotator, a.created_at AS assigned_at, \
     j.created_at AS judged_at \
     FROM annotation_assignments a JOIN judgments j ON j.id = a.judgment_id";

/// Judgments whose pair (in either order) another annotator judged too.
const SHARED_JUDGMENTS: &str = "SELECT j.id, j.group_id, j.response_a, j.response_b, \
     j.annotator, j.source, j.outcome, j.created_at FROM judgments j \
     WHERE EXISTS (SELECT 1 FROM judgments o WHERE o.annotator <> j.annotator \
       AND ((o.response_a = j.response_a AND o.response_b = j.response_b) \
         OR (o.response_a = j.response_b AND o.response_b = j.response_a))) \
     ORDER BY j.id";

impl Store {
    /// Counts, first and last judgment time, and median answer time for every annotator who has
    /// judged anything, ordered by annotator.
    pub async fn annotator_stats(&self) -> Result<Vec<AnnotatorStats>> {
        let (counts, times) = with_pool!(self, pool => {
            let counts: Vec<CountsRow> = sqlx::query_as(ANNOTATOR_COUNTS).fetch_all(pool).await?;
            let times: Vec<AnswerTimeRow> = sqlx::query_as(ANSWER_TIMES).fetch_all(pool).await?;
            (counts, times)
        });
        let mut seconds: HashMap<String, Vec<f64>> = HashMap::new();
        for t in times {
            let taken = DateTime::<Utc>::from(t.judged_at) - DateTime::<Utc>::from(t.assigned_at);
            let taken = taken.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            seconds.entry(t.annotator).or_default().push(taken);
        }
        Ok(counts
            .into_iter()
            .map(|row| AnnotatorStats {
                median_seconds_to_judge: seconds.get_mut(&row.annotator).and_then(|s| median(s)),
                annotator: row.annotator,
                judgments: row.judgments,
                ties: row.ties,
                both_bad: row.both_bad,
                first_judgment_at: row.first_at.into(),
                last_judgment_at: row.last_at.into(),
            })
            .collect())
    }

    /// The verdicts on every pair judged by two or more annotators, ordered by pair, then
    /// annotator. An annotator who judged a pair more than once counts with their latest judgment.
    pub async fn judgments_on_shared_pairs(&self) -> Result<Vec<SharedJudgment>> {
        let rows: Vec<SharedRow> = with_pool!(self, pool => {
            sqlx::query_as(SHARED_JUDGMENTS).fetch_all(pool).await?
        });
        // Rows come oldest first, so a later judgment replaces an earlier one of the same key.
        let mut latest: BTreeMap<(Uuid, Uuid, String), SharedJudgment> = BTreeMap::new();
        for row in rows {
            let shared = SharedJudgment::from(row);
            let key = (
                shared.response_lo,
                shared.response_hi,
                shared.annotator.clone(),
            );
            latest.insert(key, shared);
        }
        Ok(latest.into_values().collect())
    }
}

/// The median of `values` (sorted in place), `None` if there are none.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[derive(FromRow)]
struct CountsRow {
    annotator: String,
    judgments: i64,
    ties: i64,
    both_bad: i64,
    first_at: Timestamp,
    last_at: Timestamp,
}

#[derive(FromRow)]
struct AnswerTimeRow {
    annotator: String,
    assigned_at: Timestamp,
    judged_at: Timestamp,
}

#[derive(FromRow)]
struct SharedRow {
    id: Uuid,
    group_id: Uuid,
    response_a: Uuid,
    response_b: Uuid,
    annotator: String,
    source: JudgmentSource,
    outcome: Outcome,
    created_at: Timestamp,
}

impl From<SharedRow> for SharedJudgment {
    fn from(row: SharedRow) -> Self {
        // Uuid order is byte order, the order both databases compare ids in.
        let in_order = row.response_a < row.response_b;
        let (lo, hi, outcome) = if in_order {
            (row.response_a, row.response_b, row.outcome)
        } else {
            (row.response_b, row.response_a, row.outcome.swapped())
        };
        SharedJudgment {
            group_id: row.group_id,
            response_lo: lo,
            response_hi: hi,
            annotator: row.annotator,
            source: row.source,
            outcome,
            judgment_id: row.id,
            created_at: row.created_at.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
