//! Held-out evaluation prompts: chat prompts that duels are drawn from and training never sees.
//!
//! They live in their own table, which no training query reads (`training_data` reads only judged
//! groups), so holding a prompt out takes nothing but storing it here. A prompt is known by the
//! sha256 of its messages: storing the same messages again, under any label, stores nothing new.
//! One statement per prompt does it (`ON CONFLICT (content_hash) DO NOTHING`); under concurrency
//! the unique hash decides, as the idempotency key does for judgments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::hash::{canonical_json, sha256_hex};
use crate::timestamp::Timestamp;
use crate::{Error, Result, Store, StoredMessage, MAX_LIST_LIMIT};

/// The most prompts one [`insert_eval_prompts`](Store::insert_eval_prompts) call stores.
pub const MAX_EVAL_PROMPT_BATCH: usize = 1000;

/// The longest label, in characters.
pub const MAX_EVAL_LABEL_CHARS: usize = 255;

/// An evaluation prompt to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvalPrompt {
    /// At least one message; the last from the `user`.
    pub messages: Vec<StoredMessage>,
    /// A free name for a subset (`math`, `safety`); not part of the prompt's identity.
    pub label: Option<String>,
    /// Where it came from (`api`, a file name).
    pub source: Option<String>,
}

impl NewEvalPrompt {
    /// The sha256 of the messages' canonical JSON: what makes two prompts the same one.
    pub fn content_hash(&self) -> String {
        let messages = serde_json::to_value(&self.messages).expect("messages serialize");
        sha256_hex(canonical_json(&messages).as_bytes())
    }

    /// The field at fault and why, when the prompt can never be stored.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let Some(last) = self.messages.last() else {
            return Err(("messages", "must hold at least one message".into()));
        };
        if last.role != "user" {
            return Err((
                "messages",
                format!(
                    "must end with a message from the `user`. Given: `{}` last",
                    last.role
                ),
            ));
        }
        let nul = "contains a NUL character (\\u0000), which text fields cannot hold";
        if self
            .messages
            .iter()
            .any(|m| m.role.contains('\0') || m.content.contains('\0'))
        {
            return Err(("messages", nul.into()));
        }
        if let Some(label) = &self.label {
            let chars = label.chars().count();
            if label.trim().is_empty() || chars > MAX_EVAL_LABEL_CHARS {
                return Err((
                    "label",
                    format!(
                        "must be 1 to {MAX_EVAL_LABEL_CHARS} characters, not all blank. \
                         Given: {chars} characters"
                    ),
                ));
            }
            if label.contains('\0') {
                return Err(("label", nul.into()));
            }
        }
        if self.source.as_deref().is_some_and(|s| s.contains('\0')) {
            return Err(("source", nul.into()));
        }
        Ok(())
    }
}

/// A stored evaluation prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvalPrompt {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// The chat messages, each with its content flattened to text.
    pub messages: Vec<StoredMessage>,
    pub label: Option<String>,
    /// Where it came from: `api`, or the file `flywheel eval-prompts import` read.
    pub source: Option<String>,
    /// sha256 (hex) of the messages' canonical JSON; unique.
    pub content_hash: String,
    pub created_at: DateTime<Utc>,
}

/// The columns of an [`EvalPromptRow`], unqualified.
macro_rules! eval_prompt_columns {
    () => {
        "id, messages, content_hash, source, label, created_at"
    };
}

const INSERT_EVAL_PROMPT: &str = concat!(
    "INSERT INTO eval_prompts (",
    eval_prompt_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (content_hash) DO NOTHING RETURNING ",
    eval_prompt_columns!()
);

pub(crate) const SELECT_EVAL_PROMPT: &str =
    concat!("SELECT ", eval_prompt_columns!(), " FROM eval_prompts");

impl Store {
    /// Stores a batch of evaluation prompts in one transaction: all of them, or none.
    ///
    /// Each result is the stored prompt and whether it is new (`true`); `false` means the same
    /// messages were stored before (by an earlier call or earlier in this batch), and the result is
    /// that stored prompt, with its own id, label and source.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty or too large batch, a prompt without messages or whose last
    /// message is not the `user`'s, a blank or too long label, or a NUL character. The message
    /// starts with the field in backticks and, in a batch of more than one, ends with the position.
    pub async fn insert_eval_prompts(
        &self,
        items: &[NewEvalPrompt],
    ) -> Result<Vec<(EvalPrompt, bool)>> {
        if items.is_empty() || items.len() > MAX_EVAL_PROMPT_BATCH {
            return Err(Error::Invalid(format!(
                "a batch must hold at least 1 and at most {MAX_EVAL_PROMPT_BATCH} eval prompts. \
                 Given: {}",
                items.len()
            )));
        }
        for (i, item) in items.iter().enumerate() {
            item.check().map_err(|(field, detail)| {
                let position = match items.len() {
                    1 => String::new(),
                    n => format!(" (eval prompt {} of {n} in the batch)", i + 1),
                };
                Error::Invalid(format!("`{field}` {detail}{position}"))
            })?;
        }
        let now = Timestamp(Utc::now());
        let begin = self.begin_write_sql();
        let select_by_hash = format!("{SELECT_EVAL_PROMPT} WHERE content_hash = $1");
        let mut stored = Vec::with_capacity(items.len());
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            for item in items {
                let hash = item.content_hash();
                let inserted: Option<EvalPromptRow> = sqlx::query_as(INSERT_EVAL_PROMPT)
                    .bind(Uuid::now_v7())
                    .bind(Json(&item.messages))
                    .bind(&hash)
                    .bind(&item.source)
                    .bind(&item.label)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let (row, created) = match inserted {
                    Some(row) => (row, true),
                    None => {
                        let row: EvalPromptRow = sqlx::query_as(&select_by_hash)
                            .bind(&hash)
                            .fetch_one(&mut *tx)
                            .await?;
                        (row, false)
                    }
                };
                stored.push((EvalPrompt::from(row), created));
            }
            tx.commit().await?;
        });
        Ok(stored)
    }

    /// The evaluation prompt `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("eval prompt")` if there is no such prompt.
    pub async fn get_eval_prompt(&self, id: Uuid) -> Result<EvalPrompt> {
        let sql = format!("{SELECT_EVAL_PROMPT} WHERE id = $1");
        let row: Option<EvalPromptRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        Ok(row.ok_or(Error::NotFound("eval prompt"))?.into())
    }

    /// One page of evaluation prompts, newest first (by id, which is creation order), at most
    /// `limit` (clamped to `1..=MAX_LIST_LIMIT`).
    ///
    /// For the next page, pass the last id of this one as `before`.
    pub async fn list_eval_prompts(
        &self,
        limit: u32,
        before: Option<Uuid>,
    ) -> Result<Vec<EvalPrompt>> {
        let sql =
            format!("{SELECT_EVAL_PROMPT} WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2");
        let rows: Vec<EvalPromptRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(before)
                .bind(i64::from(limit.clamp(1, MAX_LIST_LIMIT)))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(EvalPrompt::from).collect())
    }

    /// How many evaluation prompts are stored.
    pub async fn count_eval_prompts(&self) -> Result<i64> {
        let count: i64 = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM eval_prompts")
                .fetch_one(pool)
                .await?
        });
        Ok(count)
    }
}

/// An `eval_prompts` row as both backends return it.
#[derive(FromRow)]
pub(crate) struct EvalPromptRow {
    id: Uuid,
    messages: Json<Vec<StoredMessage>>,
    content_hash: String,
    source: Option<String>,
    label: Option<String>,
    created_at: Timestamp,
}

impl From<EvalPromptRow> for EvalPrompt {
    fn from(row: EvalPromptRow) -> Self {
        EvalPrompt {
            id: row.id,
            messages: row.messages.0,
            label: row.label,
            source: row.source,
            content_hash: row.content_hash,
            created_at: row.created_at.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(pairs: &[(&str, &str)]) -> NewEvalPrompt {
        NewEvalPrompt {
            messages: pairs
                .iter()
                .map(|(role, content)| StoredMessage {
                    role: (*role).into(),
                    content: (*content).into(),
                })
                .collect(),
            label: None,
            source: None,
        }
    }

    #[test]
    fn the_content_hash_depends_on_the_messages_only() {
        let mut a = prompt(&[("system", "Be brief."), ("user", "Name a prime.")]);
        let b = prompt(&[("system", "Be brief."), ("user", "Name a prime.")]);
        let other = prompt(&[("user", "Be brief."), ("user", "Name a prime.")]);
        a.label = Some("math".into());
        a.source = Some("api".into());
        assert_eq!(a.content_hash(), b.content_hash());
        assert_ne!(a.content_hash(), other.content_hash());
        assert_eq!(a.content_hash().len(), 64);
    }

    #[test]
    fn a_prompt_must_end_with_the_user_and_name_its_faulty_field() {
        assert_eq!(prompt(&[]).check().unwrap_err().0, "messages");
        let (field, detail) = prompt(&[("user", "hi"), ("assistant", "hello")])
            .check()
            .unwrap_err();
        assert_eq!(field, "messages");
        assert!(detail.contains("`assistant`"), "{detail}");
        let mut blank = prompt(&[("user", "hi")]);
        blank.label = Some(" ".into());
        assert_eq!(blank.check().unwrap_err().0, "label");
        assert!(prompt(&[("system", "s"), ("user", "u")]).check().is_ok());
    }
}
