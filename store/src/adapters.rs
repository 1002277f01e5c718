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
use crate::{Error, Result, Store};

text_enum! {
    /// Where an adapter is in its life: `training → candidate → active → retired`, or `failed`;
    /// a candidate the arena turns down goes straight to `retired`.
    pub enum AdapterStatus {
        Training => "training",
        /// Trained before the arena existed (or by hand, outside any lifecycle); can be activated.
        Ready => "ready",
        /// Trained or registered, waiting for the arena (or an admin) to promote or retire it.
        Candidate => "candidate",
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
    /// The LoRA name it was loaded under through vLLM's `POST /v1/load_lora_adapter`; requests
    /// may name it as their `model` while it is loaded. One live adapter holds a name at a time; a
    /// retired or failed one keeps it as history, and the name may be loaded again.
    pub name: Option<String>,
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
    /// `training` to reserve a version for a run, `candidate` for finished files (`ready` outside the arena).
    pub status: AdapterStatus,
    pub note: Option<String>,
    /// A LoRA name (see [`Adapter::name`]).
    pub name: Option<String>,
}

impl Adapter {
    /// Whether it is training, ready, a candidate or active: not retired or failed. A name
    /// belongs to one live adapter at a time.
    pub fn is_live(&self) -> bool {
        !matches!(self.status, AdapterStatus::Retired | AdapterStatus::Failed)
    }
}

macro_rules! adapter_columns {
    () => {
        "version, parent_version, algorithm, train_run_id, path, sha256, status, error, note, \
         name, created_at, activated_at"
    };
}
pub(crate) use adapter_columns;

pub(crate) const SELECT_ADAPTER: &str = concat!(
    "SELECT ",
    adapter_columns!(),
    " FROM adapters WHERE version = $1"
);

/// Takes the version after the highest one. Two concurrent inserts may pick the same number; the
/// loser gets a unique violation and [`Store::insert_adapter`] retries.
pub(crate) const INSERT_NEXT_ADAPTER: &str = concat!(
    "INSERT INTO adapters (version, parent_version, algorithm, train_run_id, path, sha256, status, \
     note, name, created_at) SELECT COALESCE(MAX(version), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, \
     $9 FROM adapters RETURNING ",
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
            .bind(&new.name)
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

    /// The adapter called `name` (see [`Adapter::name`]): the live one (training, ready, candidate
    /// or active), else the newest retired or failed one, if any.
    pub async fn adapter_named(&self, name: &str) -> Result<Option<Adapter>> {
        let sql = concat!(
            "SELECT ",
            adapter_columns!(),
            " FROM adapters WHERE name = $1 ORDER BY CASE WHEN status IN ('retired', 'failed') \
             THEN 1 ELSE 0 END, version DESC LIMIT 1"
        );
        let row: Option<AdapterRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(name).fetch_optional(pool).await?
        });
        Ok(row.map(Into::into))
    }

    /// Registers an adapter under the next free version (one above the highest so far).
    ///
    /// # Errors
    /// [`Error::NotFound`]`("adapter")` if the parent version does not exist;
    /// [`Error::Conflict`] if its name is taken, or concurrent registrations keep taking the next
    /// version.
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
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    if let Some(name) = &new.name {
                        let holder = self.adapter_named(name).await?;
                        if holder.is_some_and(|a| a.is_live()) {
                            return Err(Error::Conflict(format!(
                                "a live adapter named {name:?} exists already"
                            )));
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(
            "concurrent registrations kept taking the next adapter version; retry".into(),
        ))
    }

    /// Makes `version` the active adapter and retires the one active before, in one transaction,
    /// whatever is active now. Version 0 (the base model) can be activated too, to roll back.
    /// [`Store::promote_adapter`] is the same act made conditional and recorded.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("adapter")` for an unknown version; [`Error::Invalid`] for one that is
    /// still training or failed.
    pub async fn activate_adapter(&self, version: i64) -> Result<Adapter> {
        self.switch_active_if(version, None, None).await
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
pub(crate) const ACTIVATION_CHANNEL: &str = "flywheel_adapter_activated";

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
    name: Option<String>,
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
            name: row.name,
            created_at: row.created_at.into(),
            activated_at: row.activated_at.map(Into::into),
        }
    }
}
