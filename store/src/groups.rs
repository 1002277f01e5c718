//! Groups and their responses: insert a group whole, read it back, list groups newest first.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::timestamp::Timestamp;
use crate::types::{Endpoint, GroupKind};
use crate::{
    Error, Group, GroupFilter, GroupWithResponses, NewGroup, NewResponse, Response, Result, Store,
    MAX_LIST_LIMIT,
};

pub(crate) const INSERT_GROUP: &str =
    "INSERT INTO groups (id, kind, endpoint, model, adapter_version, prompt, \
     params, seed, user_id, prompt_tokens, completion_tokens, latency_ms, created_at, \
     prompt_token_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

pub(crate) const INSERT_RESPONSE: &str =
    "INSERT INTO responses (id, group_id, idx, prompt, text, token_ids, \
     logprobs, finish_reason, completion_tokens, adapter_version, latency_ms, created_at, \
     variant, prompt_token_ids) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// The columns of a [`GroupRow`], of `groups g`.
macro_rules! group_columns {
    () => {
        "g.id, g.kind, g.endpoint, g.model, g.adapter_version, g.prompt, g.params, g.seed, \
         g.user_id, g.prompt_tokens, g.completion_tokens, g.latency_ms, g.created_at, \
         (SELECT COUNT(*) FROM responses r WHERE r.group_id = g.id) AS response_count"
    };
}
pub(crate) use group_columns;

/// The columns of a [`GroupRow`]; callers append `WHERE`/`ORDER BY`.
const SELECT_GROUP: &str = concat!("SELECT ", group_columns!(), " FROM groups g");

/// The columns of a [`ResponseRow`]; callers append `WHERE`/`ORDER BY`.
pub(crate) const SELECT_RESPONSE: &str =
    "SELECT id, group_id, idx, prompt, text, token_ids, logprobs, \
     finish_reason, completion_tokens, adapter_version, latency_ms, created_at, variant, \
     prompt_token_ids FROM responses";

/// Inserts group `$g` and its responses on connection `$conn` (inside the caller's transaction);
/// evaluates to `()` or returns the error. A macro, not a function, so one text serves both
/// backends' connection types (as `with_pool!` does).
macro_rules! insert_group_rows {
    ($conn:expr, $g:expr) => {{
        let g: &NewGroup = $g;
        let completion_tokens: i64 = g.responses.iter().map(|r| r.completion_tokens).sum();
        let created_at = Timestamp(g.created_at);
        sqlx::query($crate::groups::INSERT_GROUP)
            .bind(g.id)
            .bind(g.kind)
            .bind(g.endpoint)
            .bind(&g.model)
            .bind(g.adapter_version)
            .bind(Json(&g.prompt))
            .bind(Json(&g.params))
            .bind(g.seed)
            .bind(&g.user)
            .bind(g.prompt_tokens)
            .bind(completion_tokens)
            .bind(g.latency_ms)
            .bind(created_at)
            .bind(g.prompt_token_ids.as_ref().map(Json))
            .execute(&mut *$conn)
            .await
            .map_err(|e| {
                $crate::error::conflict_on_unique(e, || format!("group {} already exists", g.id))
            })?;
        for r in &g.responses {
            sqlx::query($crate::groups::INSERT_RESPONSE)
                .bind(r.id)
                .bind(g.id)
                .bind(r.index)
                .bind(r.prompt.as_ref().map(Json))
                .bind(&r.text)
                .bind(Json(&r.token_ids))
                .bind(Json(&r.logprobs))
                .bind(&r.finish_reason)
                .bind(r.completion_tokens)
                .bind(r.adapter_version.unwrap_or(g.adapter_version))
                .bind(r.latency_ms)
                .bind(created_at)
                .bind(r.variant)
                .bind(r.prompt_token_ids.as_ref().map(Json))
                .execute(&mut *$conn)
                .await
                .map_err(|e| {
                    $crate::error::conflict_on_unique(e, || $crate::groups::response_conflict(g, r))
                })?;
        }
    }};
}
pub(crate) use insert_group_rows;

impl Store {
    /// Stores a group and all its responses in one transaction: either all are stored or none.
    ///
    /// The group's `completion_tokens` is the sum of its responses'; each response takes the group's
    /// creation time, and its adapter version unless it names its own.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the group id, a response id, or a choice index within the group is
    /// already taken; [`Error::Invalid`] if a log-prob is not finite (JSON cannot hold it).
    pub async fn insert_group(&self, g: &NewGroup) -> Result<()> {
        check_group(g)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_group_rows!(&mut *tx, g);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The group `id` with its responses in choice-index order.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("group")` if there is no such group.
    pub async fn get_group(&self, id: Uuid) -> Result<GroupWithResponses> {
        let group_sql = format!("{SELECT_GROUP} WHERE g.id = $1");
        let responses_sql = format!("{SELECT_RESPONSE} WHERE group_id = $1 ORDER BY idx");
        let (group, responses) = with_pool!(self, pool => {
            let group: Option<GroupRow> =
                sqlx::query_as(&group_sql).bind(id).fetch_optional(pool).await?;
            let responses: Vec<ResponseRow> =
                sqlx::query_as(&responses_sql).bind(id).fetch_all(pool).await?;
            (group, responses)
        });
        Ok(GroupWithResponses {
            group: group.ok_or(Error::NotFound("group"))?.into(),
            responses: responses.into_iter().map(Response::from).collect(),
        })
    }

    /// The response `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("response")` if there is no such response.
    pub async fn get_response(&self, id: Uuid) -> Result<Response> {
        let sql = format!("{SELECT_RESPONSE} WHERE id = $1");
        let row: Option<ResponseRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        Ok(row.ok_or(Error::NotFound("response"))?.into())
    }

    /// The prompt token ids group `id` was served with (`None` for a group recorded without them).
    ///
    /// # Errors
    /// [`Error::NotFound`]`("group")` if there is no such group.
    pub async fn group_prompt_token_ids(&self, id: Uuid) -> Result<Option<Vec<u32>>> {
        let sql = "SELECT prompt_token_ids FROM groups WHERE id = $1";
        let row: Option<(Option<Json<Vec<u32>>>,)> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(id).fetch_optional(pool).await?
        });
        let (ids,) = row.ok_or(Error::NotFound("group"))?;
        Ok(ids.map(|ids| ids.0))
    }

    /// One page of groups, newest first (by id, which is creation order for UUID v7 ids).
    ///
    /// For the next page, pass the last id of this one as `before`.
    pub async fn list_groups(&self, f: &GroupFilter) -> Result<Vec<Group>> {
        let sql = list_sql(f);
        let rows: Vec<GroupRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(f.adapter_version)
                .bind(f.since.map(Timestamp))
                .bind(f.until.map(Timestamp))
                .bind(f.before)
                .bind(i64::from(f.limit.clamp(1, MAX_LIST_LIMIT)))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(Group::from).collect())
    }
}

/// The list query with a condition for each filter that is set. Every parameter keeps its number
/// whether or not its condition is present, so the bind list in `list_groups` never changes.
fn list_sql(f: &GroupFilter) -> String {
    let conditions = [
        (f.adapter_version.is_some(), "g.adapter_version = $1"),
        (f.since.is_some(), "g.created_at >= $2"),
        (f.until.is_some(), "g.created_at < $3"),
        (f.before.is_some(), "g.id < $4"),
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
    format!("{SELECT_GROUP}{filter} ORDER BY g.id DESC LIMIT $5")
}

/// What every stored group must satisfy beyond the schema: finite log-probs and no NUL in text.
pub(crate) fn check_group(g: &NewGroup) -> Result<()> {
    check_logprobs(g)?;
    check_text(g)
}

pub(crate) fn check_logprobs(g: &NewGroup) -> Result<()> {
    for r in &g.responses {
        if let Some(bad) = r.logprobs.iter().find(|p| !p.is_finite()) {
            return Err(Error::Invalid(format!(
                "response {} (index {}) has a non-finite log-prob ({bad}); log-probs must be finite",
                r.id, r.index
            )));
        }
    }
    Ok(())
}

/// Refuses a NUL anywhere in the group's text, which Postgres cannot store (see [`crate::text`]).
pub(crate) fn check_text(g: &NewGroup) -> Result<()> {
    let nul_in = |field: &str| crate::text::check(field, "\0");
    if crate::text::first_nul(&g.prompt).is_some() {
        return nul_in("prompt");
    }
    if crate::text::first_nul(&g.params).is_some() {
        return nul_in("params");
    }
    if let Some(user) = &g.user {
        crate::text::check("user", user)?;
    }
    for r in &g.responses {
        crate::text::check("text", &r.text)?;
        if r.prompt.as_ref().and_then(crate::text::first_nul).is_some() {
            return nul_in("prompt");
        }
    }
    Ok(())
}

pub(crate) fn response_conflict(g: &NewGroup, r: &NewResponse) -> String {
    format!(
        "response {} (index {}) of group {}: its id or its index within the group is already taken",
        r.id, r.index, g.id
    )
}

/// A `groups` row as both backends return it.
#[derive(FromRow)]
pub(crate) struct GroupRow {
    id: Uuid,
    kind: GroupKind,
    endpoint: Endpoint,
    model: String,
    adapter_version: i64,
    prompt: Json<Value>,
    params: Json<Value>,
    seed: Option<i64>,
    user_id: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
    latency_ms: i64,
    created_at: Timestamp,
    response_count: i64,
}

impl From<GroupRow> for Group {
    fn from(row: GroupRow) -> Self {
        Group {
            id: row.id,
            kind: row.kind,
            endpoint: row.endpoint,
            model: row.model,
            adapter_version: row.adapter_version,
            prompt: row.prompt.0,
            params: row.params.0,
            seed: row.seed,
            user: row.user_id,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            latency_ms: row.latency_ms,
            created_at: DateTime::<Utc>::from(row.created_at),
            response_count: row.response_count,
        }
    }
}

/// A `responses` row as both backends return it.
#[derive(FromRow)]
pub(crate) struct ResponseRow {
    id: Uuid,
    group_id: Uuid,
    idx: i32,
    prompt: Option<Json<Value>>,
    text: String,
    token_ids: Json<Vec<u32>>,
    logprobs: Json<Vec<f32>>,
    finish_reason: String,
    completion_tokens: i64,
    adapter_version: i64,
    latency_ms: i64,
    created_at: Timestamp,
    variant: Option<i32>,
    prompt_token_ids: Option<Json<Vec<u32>>>,
}

impl From<ResponseRow> for Response {
    fn from(row: ResponseRow) -> Self {
        Response {
            id: row.id,
            group_id: row.group_id,
            index: row.idx,
            prompt: row.prompt.map(|p| p.0),
            text: row.text,
            token_ids: row.token_ids.0,
            logprobs: row.logprobs.0,
            finish_reason: row.finish_reason,
            completion_tokens: row.completion_tokens,
            adapter_version: row.adapter_version,
            latency_ms: row.latency_ms,
            created_at: row.created_at.into(),
            variant: row.variant,
            prompt_token_ids: row.prompt_token_ids.map(|ids| ids.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_query_without_filters_has_no_where_clause() {
        let sql = list_sql(&GroupFilter::default());
        assert!(
            sql.ends_with("FROM groups g ORDER BY g.id DESC LIMIT $5"),
            "{sql}"
        );
    }

    #[test]
    fn a_list_query_keeps_each_parameter_number_whatever_filters_are_set() {
        let f = GroupFilter {
            until: Some(Utc::now()),
            before: Some(Uuid::now_v7()),
            ..GroupFilter::default()
        };
        let sql = list_sql(&f);
        assert!(
            sql.contains("WHERE g.created_at < $3 AND g.id < $4"),
            "{sql}"
        );
    }
}
