//! The run layer: training as a job against the store, and the worker that starts jobs. The only
//! part of the crate that talks to the store.
//!
//! - `stored`: the store's judged groups (served prompt ids, responses, judgments) → pairs
//!   ([`pairs_from_store`]).
//! - `rewards`: the GRPO family's rewards: posted, win-rates from judgments (SPO), or consistency
//!   rewards of variant groups, and the per-version [`ConsistencyReport`].
//! - `job`: one training job, from recorded run to a `candidate` adapter ([`run_job`]).
//! - `worker`: trains whenever enough new judgments arrive: the unit of work
//!   ([`try_train_once`]), the sleep policy ([`run_every`]) and the stop ([`WorkerGuard`]).

mod job;
mod rewards;
mod stored;
mod worker;

pub use job::{run_job, Algorithm, GrpoSettings, JobConfig, Progress};
pub use rewards::{consistency_report, ConsistencyReport, GrpoRewards};
pub use stored::{pairs_from_store, rollouts_from_store, DataReport, RolloutData};
pub use worker::{run_every, spawn_worker, try_train_once, Outcome, WorkerConfig, WorkerGuard};
