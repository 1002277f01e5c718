//! Adapters: the immutable LoRA versions the server can serve. Version 0 is the base model.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::text_enum::text_enum;
use crate::timestamp::Timestamp;
use crate::{Error, Result, Store};

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
    /// The sha256 of `adapter_model.safetensors`.
    pub sha256: Option<String>,
    pub status: AdapterStatus,
    /// Why training or loading failed, for status `failed`.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

const SELECT_ADAPTER: &str = "SELECT version, parent_version, algorithm, train_run_id, path, \
     sha256, status, error, created_at, activated_at FROM adapters WHERE version = $1";

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

    /// The version of the active adapter, or 0 (the base model) if none is active.
    pub async fn active_adapter_version(&self) -> Result<i64> {
        let version: Option<i64> = with_pool!(self, pool => {
            sqlx::query_scalar(SELECT_ACTIVE_VERSION).fetch_optional(pool).await?
        });
        Ok(version.unwrap_or(0))
    }
}

/// An `adapters` row as both backends return it.
#[derive(FromRow)]
struct AdapterRow {
    version: i64,
    parent_version: Option<i64>,
    algorithm: String,
    train_run_id: Option<Uuid>,
    path: Option<String>,
    sha256: Option<String>,
    status: AdapterStatus,
    error: Option<String>,
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
            created_at: row.created_at.into(),
            activated_at: row.activated_at.map(Into::into),
        }
    }
}
