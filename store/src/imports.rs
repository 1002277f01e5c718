//! Importing judged groups made elsewhere (a preference dataset): each group with its responses
//! and judgments, stored together or not at all, and never twice.
//!
//! A group is known by the idempotency key of its first judgment, which the importer derives from
//! the source record: importing the same file again skips what is already stored.

use chrono::Utc;
use sqlx::types::Json;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::groups::{check_group, insert_group_rows};
use crate::judgments::{
    insert_one, item_error, not_stored, replay, JudgmentRow, INSERT_JUDGMENT, SELECT_JUDGMENT,
};
use crate::timestamp::Timestamp;
use crate::{Error, Judgment, NewGroup, NewJudgment, Result, Store};

/// One group to import with the judgments over its responses. Every judgment carries an
/// idempotency key; the first one identifies the group.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedGroup {
    pub group: NewGroup,
    pub judgments: Vec<NewJudgment>,
}

impl ImportedGroup {
    fn key(&self) -> Option<&str> {
        self.judgments
            .first()?
            .idempotency_key
            .as_ref()
            .map(|k| k.as_str())
    }

    fn check(&self) -> Result<()> {
        if self.key().is_none() || self.judgments.iter().any(|j| j.idempotency_key.is_none()) {
            return Err(Error::Invalid(format!(
                "group {}: an imported group needs at least one judgment, each with an \
                 `idempotency_key`",
                self.group.id
            )));
        }
        check_group(&self.group)?;
        for (i, j) in self.judgments.iter().enumerate() {
            j.check()
                .map_err(|(field, detail)| item_error(i, self.judgments.len(), field, &detail))?;
        }
        Ok(())
    }
}

impl Store {
    /// Stores `items` in one transaction and returns how many were new: a group whose first
    /// judgment's idempotency key is stored already was imported before and is skipped whole.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a group without keyed judgments, a judgment that does not fit its
    /// group, or a non-finite log-prob; [`Error::Conflict`] for a taken group or response id, or a
    /// judgment key stored with another body. Nothing of the batch is stored then.
    pub async fn import_groups(&self, items: &[ImportedGroup]) -> Result<usize> {
        for item in items {
            item.check()?;
        }
        let now = Timestamp(Utc::now());
        let begin = self.begin_write_sql();
        let mut imported = 0;
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            for item in items {
                let seen: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM judgments WHERE idempotency_key = $1")
                        .bind(item.key())
                        .fetch_optional(&mut *tx)
                        .await?;
                if seen.is_some() {
                    continue;
                }
                insert_group_rows!(&mut *tx, &item.group);
                for (i, judgment) in item.judgments.iter().enumerate() {
                    insert_one!(&mut *tx, judgment, now, i, item.judgments.len())?;
                }
                imported += 1;
            }
            tx.commit().await?;
        });
        Ok(imported)
    }
}
