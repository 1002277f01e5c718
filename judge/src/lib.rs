//! Flywheel's judge: pure statistics over pairwise judgments, shared by the server (preferences,
//! exports, annotator agreement, the arena) and the trainer (pairs to learn from). No I/O, no
//! tensors, no HTTP, no SQL: callers hand in plain values and get numbers back.
//!
//! # Layout
//! - `comparison`: [`Outcome`], [`Comparison`] (a judgment by response index, with its P(a≻b)),
//!   [`comparisons`], the one conversion from judgments by id ([`Judged`]) to comparisons, and the
//!   win matrix every estimator starts from ([`win_matrix`]).
//! - `win_rates`: the counting estimator with the self-tie ([`counting_win_rates`]), the choice
//!   between it and Bradley–Terry ([`estimate_win_rates`]), and the pair to learn from
//!   ([`best_and_worst`]), as `research/algorithms.md` §7 defines them.
//! - `bradley_terry`: Bradley–Terry by MM iterations, MLE or Gamma-prior MAP ([`bradley_terry`]).
//! - `bootstrap`: percentile intervals over resampled comparisons, deterministic given a seed
//!   ([`bradley_terry_intervals`], [`bootstrap`]): what the arena's promotion rule reads.
//! - `arena`: adapter versions ranked by Bradley–Terry over their duels with bootstrap intervals
//!   ([`leaderboard`]), and a candidate's [`head_to_head`] with the incumbent.
//! - `gate`: the promotion rule over a head-to-head, `Promote`/`Retire`/`Continue` with the
//!   evidence and the clause that fired ([`gate`], [`decide`], [`GateConfig`]).
//! - `agreement`: inter-annotator agreement, with the majority and Cohen's kappa ([`agreement`]).
//! - `error`: [`Error`], the enum every fallible function here returns.

mod agreement;
mod arena;
mod bootstrap;
mod bradley_terry;
mod comparison;
mod error;
mod gate;
mod win_rates;

pub use agreement::{
    agreement, cohen_kappa, plurality, Agreement, MajorityAgreement, PairAgreement, Verdict,
};
pub use arena::{head_to_head, leaderboard, HeadToHead, Standing, Tally};
pub use bootstrap::{bootstrap, bradley_terry_intervals, Bootstrap, BtIntervals, Interval};
pub use bradley_terry::{bradley_terry, BradleyTerry, BtPrior};
pub use comparison::{comparisons, win_matrix, Comparison, Judged, Outcome};
pub use error::{Error, Result};
pub use gate::{decide, gate, Action, Decision, GateConfig, Rule};
pub use win_rates::{best_and_worst, counting_win_rates, estimate_win_rates, Estimator};
