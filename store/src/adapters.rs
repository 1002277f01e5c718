//! Adapters: the immutable LoRA versions the server can serve. Version 0 is the base model.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use sqlx::postgres::PgListener;

use crate::connect::{with_pool, Pool};
use crate::text_enum::text_enum;
use crate::timestamp::Timestamp;
use crate::{Backend, Error, Result, Store};

text_enum! {
    /// Where an adapter is in its life: `training → ready → active → retired`, or `failed`.
    pub enum AdapterStatus {
        Training => "training",
        Ready => "ready",
        /// Being served; at most one adapter is active at a time (a unique index holds it).
        Active => "active",
        Retired => "retired",
        Failed => "failed",
    }
}

/// One adapter version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Adapter {
    pub version: i64,
    /// The adapter it was trained from (the previous policy); `None` for the base model.
    pub parent_version: Option<i64>,
    /// The objective that produced it (`base` for version 0).
    pub algorithm: String,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub train_run_id: Option<Uuid>,
    /// The adapter directory (PEFT files); `None` for the base model.
    pub path: Option<String>,
    /// The sha256 of the adapter files (`adapter_config.json`'s bytes, then
    /// `adapter_model.safetensors`'s, as the trainer writes them).
    pub sha256: Option<String>,
    pub status: AdapterStatus,
    /// Why training or loading failed, for status `failed`.
    pub error: Option<String>,
    /// Free text given at registration (where an adapter trained elsewhere came from).
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

/// An adapter to register under the next free version.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAdapter {
    pub parent_version: i64,
    pub algorithm: String,
    pub train_run_id: Option<Uuid>,
    pub path: Option<String>,
    pub sha256: Option<String>,
    /// `training` to reserve a version for a run, `ready` for finished files.
    pub status: AdapterStatus,
    pub note: Option<String>,
}

macro_rules! adapter_columns {
    () => {
        "version, parent_version, algorithm, train_run_id, path, sha256, status, error, note, \
         created_at, activated_at"
    };
}

const SELECT_ADAPTER: &str = concat!(
    "SELECT ",
    adapter_columns!(),
    " FROM adapters WHERE version = $1"
);

/// Takes the version after the highest one. Two concurrent inserts may pick the same number; the
/// loser gets a unique violation and [`Store::insert_adapter`] retries.
pub(crate) const INSERT_NEXT_ADAPTER: &str = concat!(
    "INSERT INTO adapters (version, parent_version, algorithm, train_run_id, path, sha256, status, \
     note, created_at) SELECT COALESCE(MAX(version), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8 FROM \
     adapters RETURNING ",
    adapter_columns!()
);

/// Attempts at [`INSERT_NEXT_ADAPTER`] before a lost race is reported as a conflict.
const INSERT_ATTEMPTS: usize = 5;

/// Inserts `$new` under the next version on connection `$conn`; evaluates to
/// `Result<AdapterRow, sqlx::Error>`. A macro so one text serves both backends' connections.
macro_rules! insert_next_adapter {
    ($conn:expr, $new:expr, $now:expr) => {{
        let new: &$crate::adapters::NewAdapter = $new;
        sqlx::query_as::<_, $crate::adapters::AdapterRow>($crate::adapters::INSERT_NEXT_ADAPTER)
            .bind(new.parent_version)
            .bind(&new.algorithm)
            .bind(new.train_run_id)
            .bind(&new.path)
            .bind(&new.sha256)
            .bind(new.status)
            .bind(&new.note)
            .bind($now)
            .fetch_one(&mut *$conn)
            .await
    }};
}
pub(crate) use insert_next_adapter;

const SELECT_ACTIVE_VERSION: &str = "SELECT version FROM adapters WHERE status = 'active'";

impl Store {
    /// The adapter `version`.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("adapter")` if there is no such version.
    pub async fn get_adapter(&self, version: i64) -> Result<Adapter> {
        let row: Option<AdapterRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_ADAPTER).bind(version).fetch_optional(pool).await?
        });
        Ok(row.ok_or(Error::NotFound("adapter"))?.into())
    }

    /// Registers an adapter under the next free version (one above the highest so far).
    ///
    /// # Errors
    /// [`Error::NotFound`]`("adapter")` if the parent version does not exist;
    /// [`Error::Conflict`] if concurrent registrations keep taking the next version.
    pub async fn insert_adapter(&self, new: &NewAdapter) -> Result<Adapter> {
        self.get_adapter(new.parent_version).await?;
        for _ in 0..INSERT_ATTEMPTS {
            let now = Timestamp(Utc::now());
            let inserted = with_pool!(self, pool => {
                let mut conn = pool.acquire().await?;
                insert_next_adapter!(&mut *conn, new, now)
            });
            match inserted {
                Ok(row) => return Ok(row.into()),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(
            "concurrent registrations kept taking the next adapter version; retry".into(),
        ))
    }

    /// Makes `version` the active adapter and retires the one active before, in one transaction.
    /// Version 0 (the base model) can be activated too, to roll back.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("adapter")` for an unknown version; [`Error::Invalid`] for one that is
    /// still training or failed.
    pub async fn activate_adapter(&self, version: i64) -> Result<Adapter> {
        let adapter = self.get_adapter(version).await?;
        if matches!(
            adapter.status,
            AdapterStatus::Training | AdapterStatus::Failed
        ) {
            return Err(Error::Invalid(format!(
                "`version` {version} is {}; only ready, active or retired adapters can be activated",
                adapter.status.as_str()
            )));
        }
        let now = Timestamp(Utc::now());
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE adapters SET status = 'retired' WHERE status = 'active' AND version <> $1")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE adapters SET status = 'active', activated_at = $2 WHERE version = $1")
                .bind(version)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if self.backend() == Backend::Postgres {
                // Delivered to every listening replica when (and only if) the transaction commits.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(ACTIVATION_CHANNEL)
                    .bind(version.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        self.get_adapter(version).await
    }

    /// Marks `version` failed with `error` (an adapter the engine could not load). The base model
    /// (version 0) is never marked.
    pub async fn fail_adapter(&self, version: i64, error: &str) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE adapters SET status = 'failed', error = $2 WHERE version = $1 AND version <> 0 AND status <> 'active'")
                .bind(version)
                .bind(error)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A listener woken whenever an adapter is activated, by any process on the same database
    /// (Postgres `LISTEN/NOTIFY`); `None` on SQLite, where callers poll.
    ///
    /// # Errors
    /// The listening connection cannot be opened.
    pub async fn activation_listener(&self) -> Result<Option<ActivationListener>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(ACTIVATION_CHANNEL).await?;
        Ok(Some(ActivationListener(listener)))
    }

    /// The version of the active adapter, or 0 (the base model) if none is active.
    pub async fn active_adapter_version(&self) -> Result<i64> {
        let version: Option<i64> = with_pool!(self, pool => {
            sqlx::query_scalar(SELECT_ACTIVE_VERSION).fetch_optional(pool).await?
        });
        Ok(version.unwrap_or(0))
    }
}

/// The Postgres channel an activation is announced on; the payload is the version.
const ACTIVATION_CHANNEL: &str = "flywheel_adapter_activated";

/// Wakes on every adapter activation; see [`Store::activation_listener`].
pub struct ActivationListener(PgListener);

impl ActivationListener {
    /// Waits for the next activation and returns its version.
    ///
    /// # Errors
    /// The connection was lost (the next call reconnects; activations in between are missed, so
    /// callers keep polling as well).
    pub async fn next(&mut self) -> Result<i64> {
        loop {
            let notification = self.0.recv().await?;
            if let Ok(version) = notification.payload().parse() {
                return Ok(version);
            }
        }
    }
}

/// An `adapters` row as both backends return it.
#[derive(FromRow)]
pub(crate) struct AdapterRow {
    pub(crate) version: i64,
    parent_version: Option<i64>,
    algorithm: String,
    train_run_id: Option<Uuid>,
    path: Option<String>,
    sha256: Option<String>,
    status: AdapterStatus,
    error: Option<String>,
    note: Option<String>,
    created_at: Timestamp,
    activated_at: Option<Timestamp>,
}

impl From<AdapterRow> for Adapter {
    fn from(row: AdapterRow) -> Self {
        Adapter {
            version: row.version,
            parent_version: row.parent_version,
            algorithm: row.algorithm,
            train_run_id: row.train_run_id,
            path: row.path,
            sha256: row.sha256,
            status: row.status,
            error: row.error,
            note: row.note,
            created_at: row.created_at.into(),
            activated_at: row.activated_at.map(Into::into),
        }
    }
}
