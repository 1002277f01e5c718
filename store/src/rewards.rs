//! Rewards: store a batch all-or-nothing and idempotently, read them back, list them newest first.
//!
//! As for judgments, one statement per reward does the whole happy path: it takes the group from
//! the response row (inserting nothing when there is no such response), inserts, and skips a key
//! already taken (`ON CONFLICT (idempotency_key) DO NOTHING`). Only when it inserts nothing does
//! the store look further, to tell a replay from a conflicting key from an unknown response.

use chrono::Utc;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::timestamp::Timestamp;
use crate::{
    Error, NewReward, Result, Reward, RewardFilter, RewardSource, Store, MAX_LIST_LIMIT,
    MAX_REWARD_BATCH,
};

/// The columns of a [`RewardRow`], unqualified.
macro_rules! reward_columns {
    () => {
        "id, group_id, response_id, value, source, annotator, rationale, details, \
         idempotency_key, request_hash, created_at"
    };
}

/// Inserts one reward, its group taken from its response; nothing when the response does not exist
/// or the key is taken. The `WHERE` also keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
const INSERT_REWARD: &str = concat!(
    "INSERT INTO rewards (",
    reward_columns!(),
    ") SELECT $1, r.group_id, r.id, $3, $4, $5, $6, $7, $8, $9, $10 FROM responses r \
     WHERE r.id = $2 ON CONFLICT (idempotency_key) DO NOTHING RETURNING ",
    reward_columns!()
);

pub(crate) const SELECT_REWARD: &str = concat!("SELECT ", reward_columns!(), " FROM rewards");

/// Inserts `$item` on connection `$conn`; evaluates to `Result<(Reward, bool)>`. A macro, not a
/// function, so that one text serves both backends' connection types (as `with_pool!` does).
macro_rules! insert_reward {
    ($conn:expr, $item:expr, $now:expr, $index:expr, $len:expr) => {{
        let item: &NewReward = $item;
        let hash = item.request_hash();
        let key = item.idempotency_key.as_ref().map(|k| k.as_str());
        let inserted: Option<RewardRow> = sqlx::query_as(INSERT_REWARD)
            .bind(Uuid::now_v7())
            .bind(item.response_id)
            .bind(item.value)
            .bind(item.source)
            .bind(&item.annotator)
            .bind(&item.rationale)
            .bind(item.details.as_ref().map(Json))
            .bind(key)
            .bind(&hash)
            .bind($now)
            .fetch_optional(&mut *$conn)
            .await?;
        match inserted {
            Some(row) => Ok((Reward::from(row), true)),
            None => {
                let stored: Option<RewardRow> = match key {
                    Some(key) => {
                        sqlx::query_as(&format!("{SELECT_REWARD} WHERE idempotency_key = $1"))
                            .bind(key)
                            .fetch_optional(&mut *$conn)
                            .await?
                    }
                    None => None,
                };
                match stored {
                    Some(row) => replay(row, &hash, $index, $len),
                    None => {
                        let response: Option<i32> =
                            sqlx::query_scalar("SELECT 1 FROM responses WHERE id = $1")
                                .bind(item.response_id)
                                .fetch_optional(&mut *$conn)
                                .await?;
                        Err(not_stored(item, response.is_some(), $index, $len))
                    }
                }
            }
        }
    }};
}

impl Store {
    /// Stores a batch of rewards in one transaction: all of them, or none.
    ///
    /// Each reward takes its `group_id` from its response. Each result says whether the reward was
    /// created (`true`) or is the one already stored under the same idempotency key with the same
    /// body (`false`, a replay). Two items of one batch with one key are treated the same way. A
    /// 1-item batch runs without an explicit transaction: its insert is one statement.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a reward can never be stored: an empty or too large batch (over
    /// [`MAX_REWARD_BATCH`]), a value that is not finite or beyond
    /// [`MAX_REWARD_MAGNITUDE`](crate::MAX_REWARD_MAGNITUDE), an empty annotator, a NUL in a text
    /// field, a response that does not exist. The message starts with the field in backticks
    /// (`` `response_id` ``) and, in a batch of more than one, ends with the item's position.
    /// [`Error::Conflict`] when a key is already stored with a different body.
    pub async fn insert_rewards(&self, items: &[NewReward]) -> Result<Vec<(Reward, bool)>> {
        if items.is_empty() || items.len() > MAX_REWARD_BATCH {
            return Err(Error::Invalid(format!(
                "a batch must hold at least 1 and at most {MAX_REWARD_BATCH} rewards. Given: {}",
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
                stored.push(insert_reward!(&mut *conn, item, now, 0, 1)?);
            } else {
                let mut tx = pool.begin_with(begin).await?;
                for (i, item) in items.iter().enumerate() {
                    stored.push(insert_reward!(&mut *tx, item, now, i, items.len())?);
                }
                tx.commit().await?;
            }
        });
        Ok(stored)
    }

    /// The reward `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("reward")` if there is no such reward.
    pub async fn get_reward(&self, id: Uuid) -> Result<Reward> {
        let sql = format!("{SELECT_REWARD} WHERE id = $1");
        let row: Option<RewardRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        Ok(row.ok_or(Error::NotFound("reward"))?.into())
    }

    /// Every reward of the responses of group `group_id`, oldest first (empty if the group has none
    /// or does not exist).
    pub async fn rewards_for_group(&self, group_id: Uuid) -> Result<Vec<Reward>> {
        let sql = format!("{SELECT_REWARD} WHERE group_id = $1 ORDER BY id");
        let rows: Vec<RewardRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(group_id).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Reward::from).collect())
    }

    /// One page of rewards, newest first (by id, which is creation order).
    ///
    /// For the next page, pass the last id of this one as `before`.
    pub async fn list_rewards(&self, f: &RewardFilter) -> Result<Vec<Reward>> {
        let sql = list_sql(f);
        let rows: Vec<RewardRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(f.group_id)
                .bind(f.response_id)
                .bind(f.source)
                .bind(f.before)
                .bind(i64::from(f.limit.clamp(1, MAX_LIST_LIMIT)))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(Reward::from).collect())
    }
}

/// The stored reward for a key, if the new request has the same body; a conflict otherwise.
fn replay(row: RewardRow, hash: &str, index: usize, len: usize) -> Result<(Reward, bool)> {
    if row.request_hash == hash {
        return Ok((row.into(), false));
    }
    Err(Error::Conflict(format!(
        "idempotency key {:?} is already used by reward {} with a different body{}",
        row.idempotency_key.as_deref().unwrap_or_default(),
        row.id,
        position(index, len)
    )))
}

/// Why the insert of `item` stored nothing, given whether its response exists.
fn not_stored(item: &NewReward, response_exists: bool, index: usize, len: usize) -> Error {
    if !response_exists {
        let detail = format!("names response {}, which does not exist", item.response_id);
        return item_error(index, len, "response_id", &detail);
    }
    // Reachable only if a concurrent writer changed the rows between the two statements.
    Error::Conflict(format!(
        "the reward was not stored because of a concurrent change; retry{}",
        position(index, len)
    ))
}

/// [`Error::Invalid`] for `field` of item `index`: the field first, the position last.
fn item_error(index: usize, len: usize, field: &str, detail: &str) -> Error {
    Error::Invalid(format!("`{field}` {detail}{}", position(index, len)))
}

fn position(index: usize, len: usize) -> String {
    if len > 1 {
        format!(" (reward {} of {len} in the batch)", index + 1)
    } else {
        String::new()
    }
}

/// The list query with a condition for each filter that is set. Every parameter keeps its number
/// whether or not its condition is present, so the bind list in `list_rewards` never changes.
fn list_sql(f: &RewardFilter) -> String {
    let conditions = [
        (f.group_id.is_some(), "group_id = $1"),
        (f.response_id.is_some(), "response_id = $2"),
        (f.source.is_some(), "source = $3"),
        (f.before.is_some(), "id < $4"),
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
    format!("{SELECT_REWARD}{filter} ORDER BY id DESC LIMIT $5")
}

/// A `rewards` row as both backends return it.
#[derive(FromRow)]
pub(crate) struct RewardRow {
    id: Uuid,
    group_id: Uuid,
    response_id: Uuid,
    value: f64,
    source: RewardSource,
    annotator: String,
    rationale: Option<String>,
    details: Option<Json<Value>>,
    idempotency_key: Option<String>,
    request_hash: String,
    created_at: Timestamp,
}

impl From<RewardRow> for Reward {
    fn from(row: RewardRow) -> Self {
        Reward {
            id: row.id,
            group_id: row.group_id,
            response_id: row.response_id,
            value: row.value,
            source: row.source,
            annotator: row.annotator,
            rationale: row.rationale,
            details: row.details.map(|d| d.0),
            idempotency_key: row.idempotency_key,
            created_at: row.created_at.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reward_list_query_without_filters_has_no_where_clause() {
        let sql = list_sql(&RewardFilter::default());
        assert!(
            sql.ends_with("FROM rewards ORDER BY id DESC LIMIT $5"),
            "{sql}"
        );
    }

    #[test]
    fn a_reward_list_query_keeps_each_parameter_number_whatever_filters_are_set() {
        let f = RewardFilter {
            response_id: Some(Uuid::now_v7()),
            before: Some(Uuid::now_v7()),
            ..RewardFilter::default()
        };
        let sql = list_sql(&f);
        assert!(sql.contains("WHERE response_id = $2 AND id < $4"), "{sql}");
    }

    #[test]
    fn errors_in_a_batch_name_the_field_first_and_the_position_last() {
        let Error::Invalid(message) = item_error(1, 3, "value", "must be finite") else {
            unreachable!()
        };
        assert_eq!(
            message,
            "`value` must be finite (reward 2 of 3 in the batch)"
        );
    }
}
