//! Train runs: one training job from start to end, its per-step metrics, and the adapter version it
//! reserves (`training`) when it starts and makes `candidate` (or `failed`) when it ends.
//!
//! A run and its adapter change state together, in one transaction, so no adapter is ever a `candidate`
//! for a run that failed, and no run `succeeded` without a `candidate` adapter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::adapters::{insert_next_adapter, NewAdapter};
use crate::connect::with_pool;
use crate::text_enum::text_enum;
use crate::timestamp::Timestamp;
use crate::{Adapter, AdapterStatus, Error, Result, Store};

text_enum! {
    /// Where a train run is: `running`, then `succeeded` or `failed`.
    pub enum TrainRunStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

/// A run to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTrainRun {
    /// The objective (`dpo`, `sppo`, …); also the new adapter's algorithm.
    pub algorithm: String,
    /// Every setting of the run, as JSON, so it can be repeated.
    pub config: Value,
    /// The base model the adapter is trained on.
    pub base_model: String,
    /// π_t: the adapter the run starts from and whose samples it learns from (0 = base model).
    pub parent_version: i64,
    /// The data window: groups created in `[data_since, data_until)`.
    pub data_since: Option<DateTime<Utc>>,
    pub data_until: DateTime<Utc>,
}

/// A stored train run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainRun {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub algorithm: String,
    #[schema(value_type = Object)]
    pub config: Value,
    pub base_model: String,
    pub parent_version: i64,
    pub data_since: Option<DateTime<Utc>>,
    pub data_until: DateTime<Utc>,
    pub status: TrainRunStatus,
    /// Why the run failed, for status `failed`.
    pub error: Option<String>,
    /// The adapter version the run produces (reserved when it starts).
    pub adapter_version: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The metrics of one training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainStep {
    pub step: i64,
    pub loss: f64,
    /// Mean chosen-minus-rejected log-ratio against the reference.
    pub reward_margin: f64,
    pub chosen_logratio: f64,
    pub rejected_logratio: f64,
    /// The gradient norm before clipping, on steps that updated the weights.
    pub grad_norm: Option<f64>,
    pub lr: Option<f64>,
    /// Metrics of objectives without chosen and rejected responses: a GRPO step's token count,
    /// mean advantage, clip fractions, mean KL and largest log-ratio (its three pairwise columns
    /// are then 0).
    #[schema(value_type = Option<Object>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

macro_rules! run_columns {
    () => {
        "id, algorithm, config, base_model, parent_version, data_since, data_until, status, error, \
         adapter_version, created_at, finished_at"
    };
}

const INSERT_RUN: &str = "INSERT INTO train_runs (id, algorithm, config, base_model, \
     parent_version, data_since, data_until, status, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8)";

const SET_RUN_ADAPTER: &str = "UPDATE train_runs SET adapter_version = $1 WHERE id = $2";

const SELECT_RUN: &str = concat!("SELECT ", run_columns!(), " FROM train_runs WHERE id = $1");

const INSERT_STEP: &str = "INSERT INTO train_steps (run_id, step, loss, reward_margin, \
     chosen_logratio, rejected_logratio, grad_norm, lr, created_at, details) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const SELECT_STEPS: &str = "SELECT step, loss, reward_margin, chosen_logratio, rejected_logratio, \
     grad_norm, lr, details FROM train_steps WHERE run_id = $1 ORDER BY step";

/// Ends a running run; matches nothing once it has ended.
const END_RUN: &str = "UPDATE train_runs SET status = $1, error = $2, finished_at = $3 \
     WHERE id = $4 AND status = 'running' RETURNING adapter_version";

/// Settles the run's reserved adapter; matches nothing unless it is still `training`.
const END_ADAPTER: &str = "UPDATE adapters SET status = $1, error = $2, path = $3, sha256 = $4 \
     WHERE version = $5 AND status = 'training'";

impl Store {
    /// Starts a run (status `running`) and reserves the next adapter version for it (status
    /// `training`, parent and algorithm set), in one transaction.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("adapter")` for an unknown parent; [`Error::Invalid`] for a parent that
    /// is not usable (`training` or `failed`); [`Error::Conflict`] when a concurrent registration
    /// took the version (retry).
    pub async fn create_train_run(&self, new: &NewTrainRun) -> Result<TrainRun> {
        let parent = self.get_adapter(new.parent_version).await?;
        if matches!(
            parent.status,
            AdapterStatus::Training | AdapterStatus::Failed
        ) {
            return Err(Error::Invalid(format!(
                "adapter {} is {}; only a trained adapter can be a parent",
                parent.version, parent.status
            )));
        }
        let id = Uuid::now_v7();
        let now = Timestamp(Utc::now());
        let adapter = NewAdapter {
            parent_version: new.parent_version,
            algorithm: new.algorithm.clone(),
            train_run_id: Some(id),
            path: None,
            sha256: None,
            status: AdapterStatus::Training,
            note: None,
            name: None,
        };
        let begin = self.begin_write_sql();
        with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            sqlx::query(INSERT_RUN)
                .bind(id)
                .bind(&new.algorithm)
                .bind(Json(&new.config))
                .bind(&new.base_model)
                .bind(new.parent_version)
                .bind(new.data_since.map(Timestamp))
                .bind(Timestamp(new.data_until))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let row = insert_next_adapter!(&mut *tx, &adapter, now).map_err(|e| match e {
                sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(
                    "a concurrent registration took the next adapter version; retry".into(),
                ),
                e => Error::Db(e),
            })?;
            sqlx::query(SET_RUN_ADAPTER)
                .bind(row.version)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.get_train_run(id).await
    }

    /// The most recently started train run, whatever its status; `None` before the first.
    pub async fn latest_train_run(&self) -> Result<Option<TrainRun>> {
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM train_runs ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let row: Option<TrainRunRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).fetch_optional(pool).await?
        });
        Ok(row.map(TrainRun::from))
    }

    /// The train run `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("train run")` if there is no such run.
    pub async fn get_train_run(&self, id: Uuid) -> Result<TrainRun> {
        let row: Option<TrainRunRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_RUN).bind(id).fetch_optional(pool).await?
        });
        Ok(row.ok_or(Error::NotFound("train run"))?.into())
    }

    /// Records the metrics of one step of run `run_id`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a non-finite metric; [`Error::Conflict`] if the step is already
    /// recorded; [`Error::Db`] for an unknown run (foreign key).
    pub async fn insert_train_step(&self, run_id: Uuid, step: &TrainStep) -> Result<()> {
        let values = [
            Some(step.loss),
            Some(step.reward_margin),
            Some(step.chosen_logratio),
            Some(step.rejected_logratio),
            step.grad_norm,
            step.lr,
        ];
        if values.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "step {} has a non-finite metric: {step:?}",
                step.step
            )));
        }
        with_pool!(self, pool => {
            sqlx::query(INSERT_STEP)
                .bind(run_id)
                .bind(step.step)
                .bind(step.loss)
                .bind(step.reward_margin)
                .bind(step.chosen_logratio)
                .bind(step.rejected_logratio)
                .bind(step.grad_norm)
                .bind(step.lr)
                .bind(Timestamp(Utc::now()))
                .bind(step.details.as_ref().map(Json))
                .execute(pool)
                .await
                .map_err(|e| crate::error::conflict_on_unique(e, || {
                    format!("step {} of run {run_id} is already recorded", step.step)
                }))?;
        });
        Ok(())
    }

    /// The recorded steps of run `run_id`, in step order.
    pub async fn train_steps(&self, run_id: Uuid) -> Result<Vec<TrainStep>> {
        let rows: Vec<TrainStepRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_STEPS).bind(run_id).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(TrainStep::from).collect())
    }

    /// Marks run `id` succeeded and its adapter a `candidate` at `path` with `sha256`, together.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the run is not running (it already ended); [`Error::NotFound`] for
    /// an unknown run.
    pub async fn finish_train_run(&self, id: Uuid, path: &str, sha256: &str) -> Result<Adapter> {
        let version = self
            .end_run(id, TrainRunStatus::Succeeded, None, Some((path, sha256)))
            .await?;
        self.get_adapter(version).await
    }

    /// Marks run `id` failed with `error`, and its reserved adapter `failed` with the same error.
    ///
    /// # Errors
    /// As [`Store::finish_train_run`].
    pub async fn fail_train_run(&self, id: Uuid, error: &str) -> Result<()> {
        self.end_run(id, TrainRunStatus::Failed, Some(error), None)
            .await
            .map(drop)
    }

    async fn end_run(
        &self,
        id: Uuid,
        status: TrainRunStatus,
        error: Option<&str>,
        files: Option<(&str, &str)>,
    ) -> Result<i64> {
        let adapter_status = match status {
            TrainRunStatus::Succeeded => AdapterStatus::Candidate,
            _ => AdapterStatus::Failed,
        };
        let (path, sha256) = files.unzip();
        let begin = self.begin_write_sql();
        let ended: Option<Option<i64>> = with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            let ended: Option<(Option<i64>,)> = sqlx::query_as(END_RUN)
                .bind(status)
                .bind(error)
                .bind(Timestamp(Utc::now()))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((Some(version),)) = ended {
                sqlx::query(END_ADAPTER)
                    .bind(adapter_status)
                    .bind(error)
                    .bind(path)
                    .bind(sha256)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            ended.map(|(version,)| version)
        });
        match ended {
            Some(Some(version)) => Ok(version),
            Some(None) => Err(Error::Conflict(format!("train run {id} has no adapter"))),
            None => {
                let run = self.get_train_run(id).await?;
                Err(Error::Conflict(format!(
                    "train run {id} already ended ({})",
                    run.status
                )))
            }
        }
    }
}

/// A `train_runs` row as both backends return it.
#[derive(FromRow)]
struct TrainRunRow {
    id: Uuid,
    algorithm: String,
    config: Json<Value>,
    base_model: String,
    parent_version: i64,
    data_since: Option<Timestamp>,
    data_until: Timestamp,
    status: TrainRunStatus,
    error: Option<String>,
    adapter_version: Option<i64>,
    created_at: Timestamp,
    finished_at: Option<Timestamp>,
}

impl From<TrainRunRow> for TrainRun {
    fn from(row: TrainRunRow) -> Self {
        TrainRun {
            id: row.id,
            algorithm: row.algorithm,
            config: row.config.0,
            base_model: row.base_model,
            parent_version: row.parent_version,
            data_since: row.data_since.map(Into::into),
            data_until: row.data_until.into(),
            status: row.status,
            error: row.error,
            adapter_version: row.adapter_version,
            created_at: row.created_at.into(),
            finished_at: row.finished_at.map(Into::into),
        }
    }
}

/// A `train_steps` row as both backends return it.
#[derive(FromRow)]
struct TrainStepRow {
    step: i64,
    loss: f64,
    reward_margin: f64,
    chosen_logratio: f64,
    rejected_logratio: f64,
    grad_norm: Option<f64>,
    lr: Option<f64>,
    details: Option<Json<serde_json::Value>>,
}

impl From<TrainStepRow> for TrainStep {
    fn from(row: TrainStepRow) -> Self {
        TrainStep {
            step: row.step,
            loss: row.loss,
            reward_margin: row.reward_margin,
            chosen_logratio: row.chosen_logratio,
            rejected_logratio: row.rejected_logratio,
            grad_norm: row.grad_norm,
            lr: row.lr,
            details: row.details.map(|d| d.0),
        }
    }
}
