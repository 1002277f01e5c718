//! The annotation queue: hand an annotator one pair of responses to judge, and record the answer.
//!
//! A pair is two responses of one group, kept in canonical order (`response_a < response_b` by
//! id); the page shows them in a random left/right order (`left_is_a`). The queue never hands one
//! annotator the same pair twice (a unique index holds it, expired assignments included), nor a
//! pair they have judged already in either order.
//!
//! Picking is one transaction. On Postgres an advisory transaction lock serializes picks, so two
//! concurrent requests never both see a pair as free; SQLite has one writer at a time anyway.
//! A pick reads every pair of every group and every judgment once: about 40 ms for 3,000 groups of
//! 4 (18,000 pairs, 9,000 judgments) on either backend. Past a few hundred thousand pairs it should
//! be narrowed to recent groups first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::error::conflict_on_unique;
use crate::timestamp::Timestamp;
use crate::{Backend, Error, Result, Store, MAX_KEY_CHARS};

/// The Postgres advisory lock key that serializes queue picks ("flywheel" in ASCII).
const QUEUE_LOCK: i64 = 0x666c_7977_6865_656c;

/// One pair handed to one annotator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    /// The pair in canonical order: `response_a < response_b`.
    #[schema(value_type = String, format = Uuid)]
    pub response_a: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub response_b: Uuid,
    pub annotator: String,
    /// Whether `response_a` is shown on the left (chosen at random when assigned).
    pub left_is_a: bool,
    pub created_at: DateTime<Utc>,
    /// After this the pair is free for others again; the annotator may still answer.
    pub expires_at: DateTime<Utc>,
    /// The judgment that answered it, once [`complete_assignment`](Store::complete_assignment)
    /// has linked one.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub judgment_id: Option<Uuid>,
}

impl Assignment {
    /// The response to show on the left.
    pub fn left(&self) -> Uuid {
        if self.left_is_a {
            self.response_a
        } else {
            self.response_b
        }
    }

    /// The response to show on the right.
    pub fn right(&self) -> Uuid {
        if self.left_is_a {
            self.response_b
        } else {
            self.response_a
        }
    }
}

macro_rules! assignment_columns {
    () => {
        "id, group_id, response_a, response_b, annotator, left_is_a, created_at, expires_at, \
         judgment_id"
    };
}

/// The best pair for annotator `$1`, preferring groups of adapter version `$2`; `$3` is whether
/// this pick wants overlap; `$4` is now. Returns `(group_id, response_a, response_b, mine,
/// pending)`.
///
/// Per pair (canonical order): `judged.n` counts its judgments in either order, `pending` its live
/// unanswered assignments, `mine` this annotator's judgments and assignments. Without overlap,
/// pairs pending with someone are out and the least judged come first; with overlap, pairs
/// covered by exactly one other annotator come first.
///
/// There is deliberately no `WHERE`: a pair that is out sorts last and the caller refuses it. A
/// filter on these counts makes Postgres guess that almost no pairs remain and join the
/// aggregates by nested loop, which took 11 s for 18,000 pairs; as written it hash-joins (20 ms).
const PICK_PAIR: &str = "WITH judged AS ( \
       SELECT CASE WHEN response_a < response_b THEN response_a ELSE response_b END AS lo, \
         CASE WHEN response_a < response_b THEN response_b ELSE response_a END AS hi, \
         COUNT(*) AS n, SUM(CASE WHEN annotator = $1 THEN 1 ELSE 0 END) AS mine \
       FROM judgments GROUP BY lo, hi), \
     assigned AS ( \
       SELECT response_a AS lo, response_b AS hi, \
         SUM(CASE WHEN judgment_id IS NULL AND expires_at > $4 THEN 1 ELSE 0 END) AS pending, \
         SUM(CASE WHEN annotator = $1 THEN 1 ELSE 0 END) AS mine \
       FROM annotation_assignments GROUP BY response_a, response_b) \
     SELECT g.id, r1.id, r2.id, COALESCE(j.mine, 0) + COALESCE(a.mine, 0), \
       COALESCE(a.pending, 0) \
     FROM groups g \
     JOIN responses r1 ON r1.group_id = g.id \
     JOIN responses r2 ON r2.group_id = g.id AND r1.id < r2.id \
     LEFT JOIN judged j ON j.lo = r1.id AND j.hi = r2.id \
     LEFT JOIN assigned a ON a.lo = r1.id AND a.hi = r2.id \
     LEFT JOIN duels d ON d.group_id = g.id \
     LEFT JOIN adapters c ON c.version = d.candidate_version AND c.status = 'candidate' \
     ORDER BY CASE WHEN COALESCE(j.mine, 0) + COALESCE(a.mine, 0) > 0 THEN 1 ELSE 0 END, \
       CASE WHEN NOT $3 AND COALESCE(a.pending, 0) > 0 THEN 1 ELSE 0 END, \
       CASE WHEN c.version IS NULL THEN 1 ELSE 0 END, \
       CASE WHEN g.adapter_version = $2 THEN 0 ELSE 1 END, \
       CASE WHEN $3 AND COALESCE(j.n, 0) + COALESCE(a.pending, 0) = 1 THEN 0 ELSE 1 END, \
       COALESCE(j.n, 0), COALESCE(a.pending, 0), g.id DESC, r1.id, r2.id \
     LIMIT 1";

const INSERT_ASSIGNMENT: &str = concat!(
    "INSERT INTO annotation_assignments (",
    assignment_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) RETURNING ",
    assignment_columns!()
);

const SELECT_ASSIGNMENT: &str = concat!(
    "SELECT ",
    assignment_columns!(),
    " FROM annotation_assignments WHERE id = $1"
);

/// Links judgment `$2` to assignment `$1` if it is unanswered and the judgment is of its pair (in
/// either order) by its annotator.
const COMPLETE_ASSIGNMENT: &str = "UPDATE annotation_assignments SET judgment_id = $2 \
     WHERE id = $1 AND judgment_id IS NULL AND EXISTS (SELECT 1 FROM judgments j \
       WHERE j.id = $2 AND j.annotator = annotation_assignments.annotator \
         AND ((j.response_a = annotation_assignments.response_a \
               AND j.response_b = annotation_assignments.response_b) \
           OR (j.response_a = annotation_assignments.response_b \
               AND j.response_b = annotation_assignments.response_a)))";

/// Ends assignment `$1`'s reservation at `$2` (now) if it is unanswered and still live.
const RELEASE_ASSIGNMENT: &str = "UPDATE annotation_assignments SET expires_at = $2 \
     WHERE id = $1 AND judgment_id IS NULL AND expires_at > $2";

impl Store {
    /// Assigns `annotator` the next pair to judge, or `None` when nothing is left for them.
    ///
    /// Preference, in order: groups of `prefer_adapter_version` (the active policy, so judgments
    /// are on-policy); then, on an overlap pick, pairs already covered by exactly one other
    /// annotator; then the pairs with the fewest judgments; then the newest group. Each call is an
    /// overlap pick with probability `overlap_share` (drawn here, so `0.0` never and `1.0` always
    /// overlaps). A pair with a live unanswered assignment to someone else is skipped unless the
    /// pick is an overlap pick. The assignment expires after `ttl`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty or too long annotator, an `overlap_share` outside `[0, 1]`
    /// or a `ttl` too large to add to a date.
    pub async fn next_pair_for(
        &self,
        annotator: &str,
        prefer_adapter_version: Option<i64>,
        overlap_share: f64,
        ttl: Duration,
    ) -> Result<Option<Assignment>> {
        check_annotator(annotator)?;
        if !(0.0..=1.0).contains(&overlap_share) {
            return Err(Error::Invalid(format!(
                "`overlap_share` must be >= 0 and <= 1. Given: {overlap_share}"
            )));
        }
        let overlap = fastrand::f64() < overlap_share;
        let now = Utc::now();
        let expires_at = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .ok_or_else(|| Error::Invalid(format!("`ttl` is too large. Given: {ttl:?}")))?;
        let serialize = self.backend() == Backend::Postgres;
        let begin = self.begin_write_sql();
        let row: Option<AssignmentRow> = with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            if serialize {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(QUEUE_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let pick: Option<(Uuid, Uuid, Uuid, i64, i64)> = sqlx::query_as(PICK_PAIR)
                .bind(annotator)
                .bind(prefer_adapter_version)
                .bind(overlap)
                .bind(Timestamp(now))
                .fetch_optional(&mut *tx)
                .await?;
            // The best pair is out only when every pair is: see `PICK_PAIR`.
            let allowed = |mine: i64, pending: i64| mine == 0 && (overlap || pending == 0);
            match pick {
                Some((group_id, response_a, response_b, mine, pending))
                    if allowed(mine, pending) =>
                {
                    let row: AssignmentRow = sqlx::query_as(INSERT_ASSIGNMENT)
                        .bind(Uuid::now_v7())
                        .bind(group_id)
                        .bind(response_a)
                        .bind(response_b)
                        .bind(annotator)
                        .bind(fastrand::bool())
                        .bind(Timestamp(now))
                        .bind(Timestamp(expires_at))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| {
                            conflict_on_unique(e, || "the pair was assigned concurrently".into())
                        })?;
                    tx.commit().await?;
                    Some(row)
                }
                _ => None,
            }
        });
        Ok(row.map(Assignment::from))
    }

    /// The assignment `id`, expired or not.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("assignment")` if there is no such assignment.
    pub async fn get_assignment(&self, id: Uuid) -> Result<Assignment> {
        let row: Option<AssignmentRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_ASSIGNMENT).bind(id).fetch_optional(pool).await?
        });
        Ok(row.ok_or(Error::NotFound("assignment"))?.into())
    }

    /// Hands assignment `id` back unanswered: its pair is free for other annotators at once
    /// instead of when it expires. Its annotator is still never given the pair again. Releasing
    /// a released or expired assignment changes nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("assignment")` if there is no such assignment; [`Error::Conflict`] if
    /// a judgment answered it already.
    pub async fn release_assignment(&self, id: Uuid) -> Result<Assignment> {
        with_pool!(self, pool => {
            sqlx::query(RELEASE_ASSIGNMENT)
                .bind(id)
                .bind(Timestamp(Utc::now()))
                .execute(pool)
                .await?;
        });
        let assignment = self.get_assignment(id).await?;
        match assignment.judgment_id {
            Some(answered) => Err(Error::Conflict(format!(
                "assignment {id} was answered by judgment {answered}; there is nothing to release"
            ))),
            None => Ok(assignment),
        }
    }

    /// Records that judgment `judgment_id` answered assignment `id`. An expired assignment may
    /// still be completed (the judgment is stored either way); completing it again with the same
    /// judgment changes nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("assignment")` if there is no such assignment; [`Error::Conflict`] if
    /// another judgment answered it already; [`Error::Invalid`] naming `judgment_id` if that
    /// judgment does not exist or is not of the assignment's pair by its annotator.
    pub async fn complete_assignment(&self, id: Uuid, judgment_id: Uuid) -> Result<Assignment> {
        with_pool!(self, pool => {
            sqlx::query(COMPLETE_ASSIGNMENT)
                .bind(id)
                .bind(judgment_id)
                .execute(pool)
                .await?;
        });
        // Whether the update matched or not, the row now says which judgment answered it.
        let assignment = self.get_assignment(id).await?;
        match assignment.judgment_id {
            Some(linked) if linked == judgment_id => Ok(assignment),
            Some(linked) => Err(Error::Conflict(format!(
                "assignment {id} was already answered by judgment {linked}"
            ))),
            None => Err(Error::Invalid(format!(
                "`judgment_id` {judgment_id} is not a judgment of assignment {id}: it must exist \
                 and compare the assignment's two responses, by its annotator"
            ))),
        }
    }
}

fn check_annotator(annotator: &str) -> Result<()> {
    let chars = annotator.chars().count();
    if annotator.trim().is_empty() || chars > MAX_KEY_CHARS {
        return Err(Error::Invalid(format!(
            "`annotator` must be 1 to {MAX_KEY_CHARS} characters. Given: {chars}"
        )));
    }
    Ok(())
}

/// An `annotation_assignments` row as both backends return it.
#[derive(FromRow)]
struct AssignmentRow {
    id: Uuid,
    group_id: Uuid,
    response_a: Uuid,
    response_b: Uuid,
    annotator: String,
    left_is_a: bool,
    created_at: Timestamp,
    expires_at: Timestamp,
    judgment_id: Option<Uuid>,
}

impl From<AssignmentRow> for Assignment {
    fn from(row: AssignmentRow) -> Self {
        Assignment {
            id: row.id,
            group_id: row.group_id,
            response_a: row.response_a,
            response_b: row.response_b,
            annotator: row.annotator,
            left_is_a: row.left_is_a,
            created_at: row.created_at.into(),
            expires_at: row.expires_at.into(),
            judgment_id: row.judgment_id,
        }
    }
}
