//! Judgments: store a batch all-or-nothing and idempotently, read them back, list them newest first.
//!
//! One statement per judgment does the whole happy path: it checks that both responses belong to
//! the group, inserts, and skips a key already taken (`ON CONFLICT (idempotency_key) DO NOTHING`).
//! Only when it inserts nothing does the store look further, to tell a replay from a conflicting
//! key from an invalid reference. Under concurrency the unique key decides: Postgres makes the
//! second insert of a key wait for the first transaction and then skip; SQLite runs one writer at
//! a time.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::timestamp::Timestamp;
use crate::{
    Error, Judgment, JudgmentFilter, JudgmentSource, NewJudgment, Outcome, Result, Store,
    MAX_JUDGMENT_BATCH, MAX_LIST_LIMIT,
};

/// The columns of a [`JudgmentRow`], unqualified.
macro_rules! judgment_columns {
    () => {
        "id, group_id, response_a, response_b, outcome, strength, annotator, source, rationale, \
         criteria, idempotency_key, request_hash, created_at"
    };
}

pub(crate) const INSERT_JUDGMENT: &str = concat!(
    "INSERT INTO judgments (",
    judgment_columns!(),
    ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
     WHERE (SELECT COUNT(*) FROM responses WHERE group_id = $2 AND id IN ($3, $4)) = 2 \
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING ",
    judgment_columns!()
);

pub(crate) const SELECT_JUDGMENT: &str = concat!("SELECT ", judgment_columns!(), " FROM judgments");

/// Inserts `$item` on connection `$conn`; evaluates to `Result<(Judgment, bool)>`. A macro, not a
/// function, so that one text serves both backends' connection types (as `with_pool!` does).
macro_rules! insert_one {
    ($conn:expr, $item:expr, $now:expr, $index:expr, $len:expr) => {{
        let item: &NewJudgment = $item;
        let hash = item.request_hash();
        let key = item.idempotency_key.as_ref().map(|k| k.as_str());
        let inserted: Option<JudgmentRow> = sqlx::query_as(INSERT_JUDGMENT)
            .bind(Uuid::now_v7())
            .bind(item.group_id)
            .bind(item.response_a)
            .bind(item.response_b)
            .bind(item.outcome)
            .bind(item.strength)
            .bind(&item.annotator)
            .bind(item.source)
            .bind(&item.rationale)
            .bind(item.criteria.as_ref().map(Json))
            .bind(key)
            .bind(&hash)
            .bind($now)
            .fetch_optional(&mut *$conn)
            .await?;
        match inserted {
            Some(row) => Ok((Judgment::from(row), true)),
            None => {
                let stored: Option<JudgmentRow> = match key {
                    Some(key) => {
                        sqlx::query_as(&format!("{SELECT_JUDGMENT} WHERE idempotency_key = $1"))
                            .bind(key)
                            .fetch_optional(&mut *$conn)
                            .await?
                    }
                    None => None,
                };
                match stored {
                    Some(row) => replay(row, &hash, $index, $len),
                    None => {
                        let group: Option<i32> =
                            sqlx::query_scalar("SELECT 1 FROM groups WHERE id = $1")
                                .bind(item.group_id)
                                .fetch_optional(&mut *$conn)
                                .await?;
                        let owners: Vec<(Uuid, Uuid)> = sqlx::query_as(
                            "SELECT id, group_id FROM responses WHERE id IN ($1, $2)",
                        )
                        .bind(item.response_a)
                        .bind(item.response_b)
                        .fetch_all(&mut *$conn)
                        .await?;
                        Err(not_stored(item, group.is_some(), &owners, $index, $len))
                    }
                }
            }
        }
    }};
}
pub(crate) use insert_one;

impl Store {
    /// Stores a batch of judgments in one transaction: all of them, or none.
    ///
    /// Each result says whether the judgment was created (`true`) or is the one already stored
    /// under the same idempotency key with the same body (`false`, a replay). Two items of one
    /// batch with one key are treated the same way. A 1-item batch runs without an explicit
    /// transaction: its insert is one statement, which is all a new judgment costs.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a judgment can never be stored: an empty or too large batch, a
    /// response compared with itself, a strength outside `[0, 1]`, an empty annotator, a group that
    /// does not exist, a response that does not exist or belongs to another group. The message
    /// starts with the field in backticks (`` `response_b` ``) and, in a batch of more than one,
    /// ends with the item's position. [`Error::Conflict`] when a key is already stored with a
    /// different body.
    pub async fn insert_judgments(&self, items: &[NewJudgment]) -> Result<Vec<(Judgment, bool)>> {
        if items.is_empty() || items.len() > MAX_JUDGMENT_BATCH {
            return Err(Error::Invalid(format!(
                "a batch must hold at least 1 and at most {MAX_JUDGMENT_BATCH} judgments. \
                 Given: {}",
                items.len()
            )));
        }
        for (i, item) in items.iter().enumerate() {
            item.check()
                .map_err(|(field, detail)| item_error(i, items.len(), field, &detail))?;
        }
        let now = Timestamp(Utc::now());
        let begin = self.begin_write_sql();
        let mut stored = Vec::with_capacity(items.len());
        with_pool!(self, pool => {
            if let [item] = items {
                let mut conn = pool.acquire().await?;
                stored.push(insert_one!(&mut *conn, item, now, 0, 1)?);
            } else {
                let mut tx = pool.begin_with(begin).await?;
                for (i, item) in items.iter().enumerate() {
                    stored.push(insert_one!(&mut *tx, item, now, i, items.len())?);
                }
                tx.commit().await?;
            }
        });
        Ok(stored)
    }

    /// The judgment `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("judgment")` if there is no such judgment.
    pub async fn get_judgment(&self, id: Uuid) -> Result<Judgment> {
        let sql = format!("{SELECT_JUDGMENT} WHERE id = $1");
        let row: Option<JudgmentRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        Ok(row.ok_or(Error::NotFound("judgment"))?.into())
    }

    /// Every judgment of group `group_id`, oldest first (empty if the group has none or does not
    /// exist).
    pub async fn judgments_for_group(&self, group_id: Uuid) -> Result<Vec<Judgment>> {
        let sql = format!("{SELECT_JUDGMENT} WHERE group_id = $1 ORDER BY id");
        let rows: Vec<JudgmentRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(group_id).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Judgment::from).collect())
    }

    /// How many judgments were created at or after `since` (all of them for `None`) on groups of
    /// `adapter_version` (any version for `None`), duels left out: what the worker weighs before
    /// training.
    pub async fn count_judgments(
        &self,
        adapter_version: Option<i64>,
        since: Option<DateTime<Utc>>,
    ) -> Result<i64> {
        let sql = "SELECT COUNT(*) FROM judgments j JOIN groups g ON g.id = j.group_id \
                   WHERE g.kind <> 'duel' AND ($1 IS NULL OR g.adapter_version = $1) \
                   AND ($2 IS NULL OR j.created_at >= $2)";
        let count: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(sql)
                .bind(adapter_version)
                .bind(since.map(Timestamp))
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }

    /// One page of judgments, newest first (by id, which is creation order).
    ///
    /// For the next page, pass the last id of this one as `before`.
    pub async fn list_judgments(&self, f: &JudgmentFilter) -> Result<Vec<Judgment>> {
        let sql = list_sql(f);
        let rows: Vec<JudgmentRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(f.group_id)
                .bind(&f.annotator)
                .bind(f.source)
                .bind(f.adapter_version)
                .bind(f.since.map(Timestamp))
                .bind(f.until.map(Timestamp))
                .bind(f.before)
                .bind(i64::from(f.limit.clamp(1, MAX_LIST_LIMIT)))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(Judgment::from).collect())
    }
}

/// The stored judgment for a key, if the new request has the same body; a conflict otherwise.
pub(crate) fn replay(
    row: JudgmentRow,
    hash: &str,
    index: usize,
    len: usize,
) -> Result<(Judgment, bool)> {
    if row.request_hash == hash {
        return Ok((row.into(), false));
    }
    Err(Error::Conflict(format!(
        "idempotency key {:?} is already used by judgment {} with a different body{}",
        row.idempotency_key.as_deref().unwrap_or_default(),
        row.id,
        position(index, len)
    )))
}

/// Why the insert of `item` stored nothing, given whether its group exists and the `(id, group)`
/// of those of its responses that exist.
pub(crate) fn not_stored(
    item: &NewJudgment,
    group_exists: bool,
    owners: &[(Uuid, Uuid)],
    index: usize,
    len: usize,
) -> Error {
    if !group_exists {
        let detail = format!("names group {}, which does not exist", item.group_id);
        return item_error(index, len, "group_id", &detail);
    }
    for (field, id) in [
        ("response_a", item.response_a),
        ("response_b", item.response_b),
    ] {
        let detail = match owners.iter().find(|(response, _)| *response == id) {
            None => format!("names response {id}, which does not exist"),
            Some((_, group)) if *group != item.group_id => format!(
                "names response {id}, which does not belong to group {} (it belongs to group \
                 {group})",
                item.group_id
            ),
            Some(_) => continue,
        };
        return item_error(index, len, field, &detail);
    }
    // Reachable only if a concurrent writer changed the rows between the two statements.
    Error::Conflict(format!(
        "the judgment was not stored because of a concurrent change; retry{}",
        position(index, len)
    ))
}

/// [`Error::Invalid`] for `field` of item `index`: the field first, the position last.
pub(crate) fn item_error(index: usize, len: usize, field: &str, detail: &str) -> Error {
    Error::Invalid(format!("`{field}` {detail}{}", position(index, len)))
}

fn position(index: usize, len: usize) -> String {
    if len > 1 {
        format!(" (judgment {} of {len} in the batch)", index + 1)
    } else {
        String::new()
    }
}

/// The list query with a condition for each filter that is set. Every parameter keeps its number
/// whether or not its condition is present, so the bind list in `list_judgments` never changes.
fn list_sql(f: &JudgmentFilter) -> String {
    let conditions = [
        (f.group_id.is_some(), "group_id = $1"),
        (f.annotator.is_some(), "annotator = $2"),
        (f.source.is_some(), "source = $3"),
        (
            f.adapter_version.is_some(),
            "group_id IN (SELECT id FROM groups WHERE adapter_version = $4)",
        ),
        (f.since.is_some(), "created_at >= $5"),
        (f.until.is_some(), "created_at < $6"),
        (f.before.is_some(), "id < $7"),
    ];
    let wanted: Vec<&str> = conditions
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, condition)| *condition)
        .collect();
    let filter = if wanted.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", wanted.join(" AND "))
    };
    format!("{SELECT_JUDGMENT}{filter} ORDER BY id DESC LIMIT $8")
}

/// A `judgments` row as both backends return it.
#[derive(FromRow)]
pub(crate) struct JudgmentRow {
    id: Uuid,
    group_id: Uuid,
    response_a: Uuid,
    response_b: Uuid,
    outcome: Outcome,
    strength: Option<f64>,
    annotator: String,
    source: JudgmentSource,
    rationale: Option<String>,
    criteria: Option<Json<Value>>,
    idempotency_key: Option<String>,
    request_hash: String,
    created_at: Timestamp,
}

impl From<JudgmentRow> for Judgment {
    fn from(row: JudgmentRow) -> Self {
        Judgment {
            id: row.id,
            group_id: row.group_id,
            response_a: row.response_a,
            response_b: row.response_b,
            outcome: row.outcome,
            strength: row.strength,
            annotator: row.annotator,
            source: row.source,
            rationale: row.rationale,
            criteria: row.criteria.map(|c| c.0),
            idempotency_key: row.idempotency_key,
            created_at: row.created_at.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_judgment_list_query_without_filters_has_no_where_clause() {
        let sql = list_sql(&JudgmentFilter::default());
        assert!(
            sql.ends_with("FROM judgments ORDER BY id DESC LIMIT $8"),
            "{sql}"
        );
    }

    #[test]
    fn a_judgment_list_query_keeps_each_parameter_number_whatever_filters_are_set() {
        let f = JudgmentFilter {
            source: Some(JudgmentSource::Rule),
            before: Some(Uuid::now_v7()),
            ..JudgmentFilter::default()
        };
        let sql = list_sql(&f);
        assert!(sql.contains("WHERE source = $3 AND id < $7"), "{sql}");
    }

    #[test]
    fn errors_in_a_batch_name_the_field_first_and_the_position_last() {
        let Error::Invalid(message) = item_error(2, 5, "strength", "must be >= 0") else {
            unreachable!()
        };
        assert_eq!(
            message,
            "`strength` must be >= 0 (judgment 3 of 5 in the batch)"
        );
        let Error::Invalid(single) = item_error(0, 1, "strength", "must be >= 0") else {
            unreachable!()
        };
        assert_eq!(single, "`strength` must be >= 0");
    }
}
