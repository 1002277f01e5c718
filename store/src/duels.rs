//! Duels and the judgments the arena reads: a duel is a group of kind `duel` holding a candidate's
//! and the incumbent's answers to one held-out evaluation prompt, sampled alike; the arena counts
//! judgments by the adapter versions of the two responses judged.

use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::eval_prompts::{EvalPromptRow, SELECT_EVAL_PROMPT};
use crate::groups::insert_group_rows;
use crate::timestamp::Timestamp;
use crate::{EvalPrompt, GroupKind, NewGroup, Outcome, Result, Store};

/// A duel to store: its group (kind `duel`, the candidate's response first) and what it pits.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDuel {
    pub group: NewGroup,
    pub candidate_version: i64,
    pub incumbent_version: i64,
    pub eval_prompt_id: Uuid,
    /// Which pass over the evaluation prompts it belongs to (each pass has its own seed).
    pub round: i32,
}

/// How far the duels of one candidate against one incumbent have come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DuelProgress {
    pub duels: i64,
    /// Duels without any judgment yet.
    pub unjudged: i64,
    /// The highest round started, `None` before the first duel.
    pub last_round: Option<i32>,
}

/// One judgment of two responses written by different adapter versions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VersionJudgment {
    /// The version that wrote the judgment's response `a`.
    pub a: i64,
    pub b: i64,
    pub outcome: Outcome,
    pub strength: Option<f64>,
}

impl VersionJudgment {
    /// The judgment as the judge crate's statistics take it: a verdict on two versions.
    pub fn judged(&self) -> flywheel_judge::Judged<i64> {
        flywheel_judge::Judged {
            a: self.a,
            b: self.b,
            outcome: self.outcome.into(),
            strength: self.strength,
        }
    }
}

/// Judgments whose two responses come from different versions, with those versions.
const CROSS_VERSION_JUDGMENTS: &str = "SELECT ra.adapter_version AS a, rb.adapter_version AS b, \
     j.outcome, j.strength FROM judgments j \
     JOIN responses ra ON ra.id = j.response_a JOIN responses rb ON rb.id = j.response_b \
     WHERE ra.adapter_version <> rb.adapter_version";

impl Store {
    /// Stores a duel (its group and responses, then the duel row) in one transaction. Returns
    /// `false`, storing nothing, when that duel (same versions, prompt and round) exists already:
    /// another replica sampled it first.
    ///
    /// # Errors
    /// As [`Store::insert_group`].
    pub async fn insert_duel(&self, duel: &NewDuel) -> Result<bool> {
        let g = &duel.group;
        debug_assert_eq!(g.kind, GroupKind::Duel);
        crate::groups::check_group(g)?;
        let begin = self.begin_write_sql();
        let stored = with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            let taken: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM duels WHERE candidate_version = $1 AND incumbent_version = $2 \
                 AND eval_prompt_id = $3 AND round = $4",
            )
            .bind(duel.candidate_version)
            .bind(duel.incumbent_version)
            .bind(duel.eval_prompt_id)
            .bind(duel.round)
            .fetch_optional(&mut *tx)
            .await?;
            if taken.is_some() {
                false
            } else {
                insert_group_rows!(&mut *tx, g);
                let inserted = sqlx::query(
                    "INSERT INTO duels (group_id, candidate_version, incumbent_version, \
                     eval_prompt_id, round) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(g.id)
                .bind(duel.candidate_version)
                .bind(duel.incumbent_version)
                .bind(duel.eval_prompt_id)
                .bind(duel.round)
                .execute(&mut *tx)
                .await;
                match inserted {
                    // A concurrent replica committed the same duel between our look and insert.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => false,
                    Err(e) => return Err(e.into()),
                    Ok(_) => {
                        tx.commit().await?;
                        true
                    }
                }
            }
        });
        Ok(stored)
    }

    /// Up to `limit` evaluation prompts without a duel of `candidate` against `incumbent` in
    /// `round`, oldest first.
    pub async fn eval_prompts_without_duel(
        &self,
        candidate: i64,
        incumbent: i64,
        round: i32,
        limit: u32,
    ) -> Result<Vec<EvalPrompt>> {
        let sql = format!(
            "{SELECT_EVAL_PROMPT} WHERE NOT EXISTS (SELECT 1 FROM duels d \
             WHERE d.eval_prompt_id = eval_prompts.id AND d.candidate_version = $1 \
             AND d.incumbent_version = $2 AND d.round = $3) ORDER BY id LIMIT $4"
        );
        let rows: Vec<EvalPromptRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(candidate)
                .bind(incumbent)
                .bind(round)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(EvalPrompt::from).collect())
    }

    /// How many duels `candidate` and `incumbent` have, how many are unjudged, the last round.
    pub async fn duel_progress(&self, candidate: i64, incumbent: i64) -> Result<DuelProgress> {
        let row: ProgressRow = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*) AS duels, COALESCE(SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM \
                 judgments j WHERE j.group_id = d.group_id) THEN 1 ELSE 0 END), 0) AS unjudged, \
                 MAX(d.round) AS last_round FROM duels d \
                 WHERE d.candidate_version = $1 AND d.incumbent_version = $2",
            )
            .bind(candidate)
            .bind(incumbent)
            .fetch_one(pool)
            .await?
        });
        Ok(DuelProgress {
            duels: row.duels,
            unjudged: row.unjudged,
            last_round: row.last_round,
        })
    }

    /// The judgments of duels between `candidate` and `incumbent`, oldest first: what the gate
    /// reads.
    pub async fn duel_judgments(
        &self,
        candidate: i64,
        incumbent: i64,
    ) -> Result<Vec<VersionJudgment>> {
        let sql = format!(
            "{CROSS_VERSION_JUDGMENTS} AND j.group_id IN (SELECT d.group_id FROM duels d \
             WHERE d.candidate_version = $1 AND d.incumbent_version = $2) ORDER BY j.id"
        );
        let rows: Vec<VersionJudgmentRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(candidate)
                .bind(incumbent)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Every judgment of two responses by different versions (duels, canary traffic, imports),
    /// oldest first: what the leaderboard reads.
    pub async fn cross_version_judgments(&self) -> Result<Vec<VersionJudgment>> {
        let sql = format!("{CROSS_VERSION_JUDGMENTS} ORDER BY j.id");
        let rows: Vec<VersionJudgmentRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

#[derive(FromRow)]
struct ProgressRow {
    duels: i64,
    unjudged: i64,
    last_round: Option<i32>,
}

#[derive(FromRow)]
struct VersionJudgmentRow {
    a: i64,
    b: i64,
    outcome: Outcome,
    strength: Option<f64>,
}

impl From<VersionJudgmentRow> for VersionJudgment {
    fn from(r: VersionJudgmentRow) -> Self {
        VersionJudgment {
            a: r.a,
            b: r.b,
            outcome: r.outcome,
            strength: r.strength,
        }
    }
}
