//! Changing which adapter is active, and deciding a candidate's fate: promotion (it becomes active)
//! or retirement, each recorded with the evidence it rested on.
//!
//! Every change of the active version goes through one transaction here ([`Store::switch_active`]):
//! the old active row is retired, the new one activated, the decision (if any) recorded and, on
//! Postgres, the activation announced to listening replicas on commit. A promotion or retirement
//! names the version it expects to be active; when another change got there first, nothing is
//! written and the caller gets [`Error::Conflict`], so a decision made on stale evidence is made
//! again, never applied over a newer one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::adapters::{adapter_columns, AdapterRow, ACTIVATION_CHANNEL, SELECT_ADAPTER};
use crate::connect::with_pool;
use crate::text_enum::text_enum;
use crate::timestamp::Timestamp;
use crate::{Adapter, AdapterStatus, Backend, Error, Result, Store};

text_enum! {
    /// What was done with a candidate.
    pub enum DecisionAction {
        /// It became the active version.
        Promote => "promote",
        /// It was turned down and will not be served by default.
        Retire => "retire",
    }
}

text_enum! {
    /// Who made a decision.
    pub enum DecidedBy {
        /// The promotion gate, from duel judgments.
        Gate => "gate",
        /// An admin, through the API.
        Admin => "admin",
        /// `--promotion always`: every new adapter is activated as soon as it exists.
        Always => "always",
    }
}

/// The candidate's head-to-head with the incumbent when the decision was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// Judgments of duels between the two.
    pub judgments: i64,
    /// The candidate's wins, ties and `both_bad` counting half.
    pub wins: f64,
    /// Duels judged `both_bad`.
    pub both_bad: i64,
    /// Bradley–Terry's P(candidate ≻ incumbent); `None` when no estimate was made.
    pub probability: Option<f64>,
    /// The bootstrap interval of `probability`.
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// The interval's coverage (0.95 by default).
    pub confidence: Option<f64>,
}

/// A decision to record with the change it makes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    pub action: DecisionAction,
    pub decided_by: DecidedBy,
    /// Which rule fired (the gate's clause, `manual` or `always`).
    pub rule: String,
    pub evidence: Evidence,
    /// Free text: an admin's reason.
    pub reason: Option<String>,
}

impl NewDecision {
    /// `--promotion always`: activated as soon as it exists, on no evidence.
    pub fn always() -> Self {
        NewDecision {
            action: DecisionAction::Promote,
            decided_by: DecidedBy::Always,
            rule: "always".into(),
            evidence: Evidence::default(),
            reason: None,
        }
    }

    /// An admin's act, with the evidence that stood when it was taken.
    pub fn by_hand(action: DecisionAction, evidence: Evidence, reason: Option<String>) -> Self {
        NewDecision {
            action,
            decided_by: DecidedBy::Admin,
            rule: "manual".into(),
            evidence,
            reason,
        }
    }
}

/// A recorded decision about one adapter version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdapterDecision {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub version: i64,
    /// The version that was active when it was decided.
    pub incumbent_version: i64,
    pub action: DecisionAction,
    pub decided_by: DecidedBy,
    /// The rule that fired: the gate's (`lower_bound_above_half`, `upper_bound_below_half`,
    /// `budget_spent`), `manual` for an admin, `always` under `--promotion always`.
    pub rule: String,
    pub evidence: Evidence,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

const INSERT_DECISION: &str = "INSERT INTO adapter_decisions (id, version, incumbent_version, \
     action, decided_by, rule, judgments, wins, both_bad, probability, lower_bound, upper_bound, \
     confidence, reason, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

const SELECT_DECISIONS: &str = "SELECT id, version, incumbent_version, action, decided_by, rule, \
     judgments, wins, both_bad, probability, lower_bound, upper_bound, confidence, reason, \
     created_at FROM adapter_decisions WHERE version = $1 ORDER BY created_at, id";

/// Inserts decision `$d` about `$version` (active version `$incumbent`) on `$conn`.
macro_rules! insert_decision {
    ($conn:expr, $version:expr, $incumbent:expr, $d:expr, $now:expr) => {{
        let d: &NewDecision = $d;
        let e = &d.evidence;
        sqlx::query(INSERT_DECISION)
            .bind(Uuid::now_v7())
            .bind($version)
            .bind($incumbent)
            .bind(d.action)
            .bind(d.decided_by)
            .bind(&d.rule)
            .bind(e.judgments)
            .bind(e.wins)
            .bind(e.both_bad)
            .bind(e.probability)
            .bind(e.lower)
            .bind(e.upper)
            .bind(e.confidence)
            .bind(&d.reason)
            .bind($now)
            .execute(&mut *$conn)
            .await?
    }};
}

/// Why a conditional change did not happen, read inside its transaction.
enum Refusal {
    Unknown,
    Status(AdapterStatus),
    ActiveMoved(i64),
    AlreadyActive,
}

impl Store {
    /// Promotes `version` to active if `expected_active` is still the active version, retiring
    /// that one, and records `decision` (whose action must be `promote`) in the same transaction.
    /// Only a candidate, ready or retired adapter can be promoted.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the active version is no longer `expected_active` or `version` is
    /// active already (nothing written); [`Error::Invalid`] for a status that cannot be promoted;
    /// [`Error::NotFound`]`("adapter")`.
    pub async fn promote_adapter(
        &self,
        version: i64,
        expected_active: i64,
        decision: &NewDecision,
    ) -> Result<Adapter> {
        debug_assert_eq!(decision.action, DecisionAction::Promote);
        self.switch_active_if(version, Some(expected_active), Some(decision))
            .await
    }

    /// Retires candidate `version` if `expected_active` is still the active version, recording
    /// `decision` (whose action must be `retire`) in the same transaction. The active version is
    /// untouched.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the active version is no longer `expected_active` (nothing
    /// written); [`Error::Invalid`] when `version` is not a candidate;
    /// [`Error::NotFound`]`("adapter")`.
    pub async fn retire_candidate(
        &self,
        version: i64,
        expected_active: i64,
        decision: &NewDecision,
    ) -> Result<Adapter> {
        debug_assert_eq!(decision.action, DecisionAction::Retire);
        let now = Timestamp(Utc::now());
        let begin = self.begin_write_sql();
        let refused = with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            let retired = sqlx::query(
                "UPDATE adapters SET status = 'retired' WHERE version = $1 AND status = 'candidate' \
                 AND EXISTS (SELECT 1 FROM adapters a WHERE a.status = 'active' AND a.version = $2)",
            )
            .bind(version)
            .bind(expected_active)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if retired == 1 {
                insert_decision!(&mut *tx, version, expected_active, decision, now);
                tx.commit().await?;
                None
            } else {
                let adapter: Option<AdapterRow> =
                    sqlx::query_as(SELECT_ADAPTER).bind(version).fetch_optional(&mut *tx).await?;
                let active: Option<i64> = sqlx::query_scalar(SELECT_ACTIVE)
                    .fetch_optional(&mut *tx)
                    .await?;
                Some(match adapter.map(Adapter::from) {
                    None => Refusal::Unknown,
                    Some(a) if a.status != AdapterStatus::Candidate => Refusal::Status(a.status),
                    Some(_) => Refusal::ActiveMoved(active.unwrap_or(0)),
                })
            }
        });
        match refused {
            None => self.get_adapter(version).await,
            Some(refusal) => Err(refusal_error(version, expected_active, "retired", refusal)),
        }
    }

    /// The decisions recorded about `version`, oldest first.
    pub async fn adapter_decisions(&self, version: i64) -> Result<Vec<AdapterDecision>> {
        let rows: Vec<DecisionRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_DECISIONS).bind(version).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The adapters with status `candidate`, newest first.
    pub async fn candidates(&self) -> Result<Vec<Adapter>> {
        let sql = concat!(
            "SELECT ",
            adapter_columns!(),
            " FROM adapters WHERE status = 'candidate' ORDER BY version DESC"
        );
        let rows: Vec<AdapterRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Makes `version` active whatever is active now (an admin's act), recording `decision` if
    /// given. [`Store::promote_adapter`] is the conditional form.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a status that cannot be activated; [`Error::NotFound`]`("adapter")`.
    pub async fn switch_active(
        &self,
        version: i64,
        decision: Option<&NewDecision>,
    ) -> Result<Adapter> {
        self.switch_active_if(version, None, decision).await
    }

    /// The one transaction that changes the active version: retire the active row (only if it is
    /// `expected`, when given), activate `version`, record `decision`, announce it.
    pub(crate) async fn switch_active_if(
        &self,
        version: i64,
        expected: Option<i64>,
        decision: Option<&NewDecision>,
    ) -> Result<Adapter> {
        let now = Timestamp(Utc::now());
        let begin = self.begin_write_sql();
        let refused = with_pool!(self, pool => {
            let mut tx = pool.begin_with(begin).await?;
            let adapter: Option<AdapterRow> =
                sqlx::query_as(SELECT_ADAPTER).bind(version).fetch_optional(&mut *tx).await?;
            let active: Option<i64> =
                sqlx::query_scalar(SELECT_ACTIVE).fetch_optional(&mut *tx).await?;
            let active = active.unwrap_or(0);
            let refusal = match adapter.map(Adapter::from) {
                None => Some(Refusal::Unknown),
                Some(a) if !a.is_servable() => Some(Refusal::Status(a.status)),
                Some(_) if expected.is_some() && active == version => Some(Refusal::AlreadyActive),
                Some(_) => None,
            };
            if refusal.is_some() {
                refusal
            } else {
                // Conditional on the expected version still being active: on Postgres a concurrent
                // switch holds the row, and this one re-reads it after that commits.
                let retired = sqlx::query(
                    "UPDATE adapters SET status = 'retired' WHERE status = 'active' \
                     AND version <> $1 AND ($2 IS NULL OR version = $2)",
                )
                .bind(version)
                .bind(expected)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if expected.is_some() && retired != 1 {
                    let moved: Option<i64> =
                        sqlx::query_scalar(SELECT_ACTIVE).fetch_optional(&mut *tx).await?;
                    Some(Refusal::ActiveMoved(moved.unwrap_or(0)))
                } else {
                    let activated = sqlx::query(
                        "UPDATE adapters SET status = 'active', activated_at = $2 WHERE version = $1",
                    )
                    .bind(version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await;
                    match activated {
                        // A retired adapter whose name a live one holds now (adapters_live_name).
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            return Err(Error::Conflict(format!(
                                "`version` {version}'s name is held by another live adapter; \
                                 unload or retire that one first"
                            )));
                        }
                        activated => activated?,
                    };
                    if let Some(d) = decision {
                        // The CAS above proved `expected` was the active row it retired; `active`
                        // was read before that row was locked and may be stale.
                        let incumbent = expected.unwrap_or(active);
                        insert_decision!(&mut *tx, version, incumbent, d, now);
                    }
                    if self.backend() == Backend::Postgres {
                        // Delivered to every listening replica when (and only if) this commits.
                        sqlx::query("SELECT pg_notify($1, $2)")
                            .bind(ACTIVATION_CHANNEL)
                            .bind(version.to_string())
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    None
                }
            }
        });
        match refused {
            None => self.get_adapter(version).await,
            Some(refusal) => Err(refusal_error(
                version,
                expected.unwrap_or(0),
                "activated",
                refusal,
            )),
        }
    }
}

const SELECT_ACTIVE: &str = "SELECT version FROM adapters WHERE status = 'active'";

fn refusal_error(version: i64, expected: i64, act: &str, refusal: Refusal) -> Error {
    match refusal {
        Refusal::Unknown => Error::NotFound("adapter"),
        Refusal::Status(status) => Error::Invalid(format!(
            "`version` {version} is {status}; it cannot be {act} (only a candidate, ready or \
             retired adapter can be promoted, and only a candidate retired)"
        )),
        Refusal::ActiveMoved(active) => Error::Conflict(format!(
            "the active version is {active}, not the expected {expected}; nothing changed \
             (look again and decide on the current state)"
        )),
        Refusal::AlreadyActive => Error::Conflict(format!("`version` {version} is active already")),
    }
}

/// An `adapter_decisions` row as both backends return it.
#[derive(FromRow)]
struct DecisionRow {
    id: Uuid,
    version: i64,
    incumbent_version: i64,
    action: DecisionAction,
    decided_by: DecidedBy,
    rule: String,
    judgments: i64,
    wins: f64,
    both_bad: i64,
    probability: Option<f64>,
    lower_bound: Option<f64>,
    upper_bound: Option<f64>,
    confidence: Option<f64>,
    reason: Option<String>,
    created_at: Timestamp,
}

impl From<DecisionRow> for AdapterDecision {
    fn from(r: DecisionRow) -> Self {
        AdapterDecision {
            id: r.id,
            version: r.version,
            incumbent_version: r.incumbent_version,
            action: r.action,
            decided_by: r.decided_by,
            rule: r.rule,
            evidence: Evidence {
                judgments: r.judgments,
                wins: r.wins,
                both_bad: r.both_bad,
                probability: r.probability,
                lower: r.lower_bound,
                upper: r.upper_bound,
                confidence: r.confidence,
            },
            reason: r.reason,
            created_at: r.created_at.into(),
        }
    }
}
