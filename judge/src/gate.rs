//! The promotion gate: whether a candidate adapter replaces the incumbent, is retired, or needs
//! more duels, decided from their head-to-head alone (`arena`), as `DESIGN.md` states it.
//!
//! - **Promote** when there are at least `min_judgments` duels and the lower 95% bound of
//!   P(candidate ≻ incumbent) is above ½.
//! - **Retire** when there are at least `min_judgments` duels and the upper bound is below ½, or
//!   when `max_judgments` duels have not settled it (the budget is spent).
//! - **Continue** otherwise.
//!
//! `min_judgments` guards both verdicts, not only promotion: a percentile bootstrap of a handful of
//! duels is degenerate (three straight losses give the zero-width interval [0.2, 0.2]), and one in
//! eight candidates as good as the incumbent loses its first three duels.
//!
//! The gate looks again after every duel, and repeated looks at a 95% interval promote a candidate
//! that is no better more often than 2.5% of the time; `min_judgments` and `max_judgments` bound
//! the looks. An SPRT (p0 = 0.5, p1 = 0.55, `research/anchors-2026-12.md`) would control that
//! error exactly; this rule is the one the design names, and its decisions carry their evidence so
//! they can be audited.

use std::fmt;

use crate::arena::{head_to_head, HeadToHead};
use crate::bootstrap::Bootstrap;
use crate::bradley_terry::BtPrior;
use crate::comparison::Judged;
use crate::Result;

/// The gate's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateConfig {
    /// No verdict before this many duels.
    pub min_judgments: usize,
    /// The duel budget: a candidate still undecided here is retired.
    pub max_judgments: usize,
    /// The Bradley–Terry fit of the two versions.
    pub prior: BtPrior,
    /// Rounds, confidence and seed of the interval.
    pub bootstrap: Bootstrap,
}

impl Default for GateConfig {
    /// 50 to 400 duels, Gamma(2, 1), 1000 rounds at 95%, seed 0. 400 is Leela Zero's match length
    /// (`research/anchors-2026-12.md`): there a 95% interval of a win-rate near ½ is ±0.049 wide
    /// without ties (1.96 · 0.5/√400), enough to separate a 55% candidate, the SPRT's p1.
    fn default() -> Self {
        Self {
            min_judgments: 50,
            max_judgments: 400,
            prior: BtPrior::default(),
            bootstrap: Bootstrap::default(),
        }
    }
}

/// What to do with the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Promote,
    Retire,
    Continue,
}

/// Which clause of the rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Fewer than `min_judgments` duels: `Continue`.
    TooFewJudgments,
    /// The lower bound of P(candidate ≻ incumbent) is above ½: `Promote`.
    LowerBoundAboveHalf,
    /// The upper bound is below ½: `Retire`.
    UpperBoundBelowHalf,
    /// `max_judgments` duels without either bound clearing ½: `Retire`.
    BudgetSpent,
    /// The interval still contains ½ and there is budget left: `Continue`.
    Undecided,
}

impl Rule {
    /// The action this clause leads to.
    pub fn action(self) -> Action {
        match self {
            Self::LowerBoundAboveHalf => Action::Promote,
            Self::UpperBoundBelowHalf | Self::BudgetSpent => Action::Retire,
            Self::TooFewJudgments | Self::Undecided => Action::Continue,
        }
    }
}

/// The gate's decision with the evidence it rests on, for the adapter's status history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub action: Action,
    pub rule: Rule,
    pub evidence: HeadToHead,
}

impl fmt::Display for Decision {
    /// One line for a log or a status record, e.g. "Promote (LowerBoundAboveHalf): P(candidate ≻
    /// incumbent) = 0.7000, 95% interval [0.6100, 0.7800], 64 judgments, win-rate 0.7000".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.evidence;
        write!(
            f,
            "{:?} ({:?}): P(candidate ≻ incumbent) = {:.4}, {}% interval [{:.4}, {:.4}], {} judgments",
            self.action,
            self.rule,
            e.probability,
            (e.confidence * 1e11).round() / 1e9,
            e.interval.lower,
            e.interval.upper,
            e.tally.judgments,
        )?;
        match e.tally.win_rate() {
            Some(rate) => write!(f, ", win-rate {rate:.4}"),
            None => Ok(()),
        }
    }
}

/// The rule above applied to a head-to-head; pure, so a recorded decision can be replayed.
pub fn decide(evidence: HeadToHead, config: &GateConfig) -> Decision {
    let judgments = evidence.tally.judgments;
    let rule = if judgments < config.min_judgments.min(config.max_judgments) {
        Rule::TooFewJudgments
    } else if evidence.interval.lower > 0.5 {
        Rule::LowerBoundAboveHalf
    } else if evidence.interval.upper < 0.5 {
        Rule::UpperBoundBelowHalf
    } else if judgments >= config.max_judgments {
        Rule::BudgetSpent
    } else {
        Rule::Undecided
    };
    Decision {
        action: rule.action(),
        rule,
        evidence,
    }
}

/// The head-to-head of `candidate` and `incumbent` over `duels` (other versions' duels are left
/// out), then [`decide`].
///
/// # Errors
/// As [`head_to_head`].
pub fn gate<V: PartialEq>(
    candidate: V,
    incumbent: V,
    duels: impl IntoIterator<Item = Judged<V>>,
    config: &GateConfig,
) -> Result<Decision> {
    let evidence = head_to_head(candidate, incumbent, duels, config.prior, &config.bootstrap)?;
    Ok(decide(evidence, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interval, Outcome, Tally};

    const CANDIDATE: u32 = 2;
    const INCUMBENT: u32 = 1;

    /// The `n`th duel of the candidate and the incumbent, seats alternating as the duel runner
    /// randomises them, the judge's verdict given as the winner's version (`None`: a tie).
    fn duel(n: usize, winner: Option<u32>) -> Judged<u32> {
        let (a, b) = if n.is_multiple_of(2) {
            (CANDIDATE, INCUMBENT)
        } else {
            (INCUMBENT, CANDIDATE)
        };
        let outcome = match winner {
            Some(w) if w == a => Outcome::A,
            Some(_) => Outcome::B,
            None => Outcome::Tie,
        };
        Judged {
            a,
            b,
            outcome,
            strength: None,
        }
    }

    /// The decision after each duel `judge` rules on, until the first that is not `Continue`.
    fn run_gate(judge: impl Fn(usize) -> Option<u32>, config: &GateConfig) -> Vec<Decision> {
        let mut duels = Vec::new();
        let mut decisions = Vec::new();
        loop {
            duels.push(duel(duels.len(), judge(duels.len())));
            let decision = gate(CANDIDATE, INCUMBENT, duels.iter().copied(), config).unwrap();
            decisions.push(decision);
            if decision.action != Action::Continue {
                return decisions;
            }
        }
    }

    fn evidence(judgments: usize, lower: f64, upper: f64) -> HeadToHead {
        HeadToHead {
            tally: Tally {
                judgments,
                wins: judgments as f64 / 2.0,
                both_bad: 0,
            },
            probability: (lower + upper) / 2.0,
            interval: Interval { lower, upper },
            confidence: 0.95,
        }
    }

    #[test]
    fn a_judge_that_always_prefers_the_candidate_promotes_it_at_min_judgments() {
        let decisions = run_gate(|_| Some(CANDIDATE), &GateConfig::default());

        assert_eq!(decisions.len(), 50);
        assert!(decisions[..49]
            .iter()
            .all(|d| d.rule == Rule::TooFewJudgments));
        let last = decisions[49];
        assert_eq!(
            (last.action, last.rule),
            (Action::Promote, Rule::LowerBoundAboveHalf)
        );
        assert!(
            (last.evidence.probability - 51.0 / 52.0).abs() < 1e-9,
            "Laplace: 51/52"
        );
    }

    #[test]
    fn a_judge_that_always_prefers_the_incumbent_retires_the_candidate_at_min_judgments() {
        let decisions = run_gate(|_| Some(INCUMBENT), &GateConfig::default());

        let last = decisions.last().unwrap();
        assert_eq!(decisions.len(), 50);
        assert_eq!(
            (last.action, last.rule),
            (Action::Retire, Rule::UpperBoundBelowHalf)
        );
        assert_eq!(last.evidence.tally.win_rate(), Some(0.0));
    }

    #[test]
    fn an_even_split_continues_until_the_budget_is_spent_and_then_retires() {
        // Candidate, incumbent, tie, over and over: a win-rate of exactly ½ every third duel. A
        // budget of 150 and 300 rounds keep the test quick; the default budget is checked after.
        let judge = |n: usize| [Some(CANDIDATE), Some(INCUMBENT), None][n % 3];
        let config = GateConfig {
            max_judgments: 150,
            bootstrap: Bootstrap {
                rounds: 300,
                ..Bootstrap::default()
            },
            ..GateConfig::default()
        };

        let decisions = run_gate(judge, &config);

        assert_eq!(decisions.len(), 150);
        assert!(decisions[49..149].iter().all(|d| d.rule == Rule::Undecided));
        let last = decisions[149];
        assert_eq!(
            (last.action, last.rule),
            (Action::Retire, Rule::BudgetSpent)
        );
        assert!(last.evidence.interval.contains(0.5));
        let at_default = |n: usize| {
            let duels = (0..n).map(|i| duel(i, judge(i)));
            gate(CANDIDATE, INCUMBENT, duels, &GateConfig::default())
                .unwrap()
                .rule
        };
        assert_eq!(at_default(399), Rule::Undecided);
        assert_eq!(at_default(400), Rule::BudgetSpent);
    }

    #[test]
    fn the_same_seed_gives_the_same_decision_and_the_bootstrap_seed_is_honoured() {
        let winner = |n: usize| if n % 3 == 2 { INCUMBENT } else { CANDIDATE };
        let duels: Vec<_> = (0..60).map(|n| duel(n, Some(winner(n)))).collect();
        let decide_with = |seed| {
            let config = GateConfig {
                bootstrap: Bootstrap {
                    seed,
                    ..Bootstrap::default()
                },
                ..GateConfig::default()
            };
            gate(CANDIDATE, INCUMBENT, duels.iter().copied(), &config).unwrap()
        };

        assert_eq!(decide_with(3), decide_with(3));
        assert_ne!(
            decide_with(3).evidence.interval,
            decide_with(4).evidence.interval
        );
    }

    #[test]
    fn the_bounds_are_strict_and_the_lower_bound_wins_at_the_budget() {
        let config = GateConfig::default();
        let rule =
            |judgments, lower, upper| decide(evidence(judgments, lower, upper), &config).rule;

        assert_eq!(rule(49, 0.9, 0.99), Rule::TooFewJudgments);
        assert_eq!(rule(50, 0.5, 0.7), Rule::Undecided);
        assert_eq!(rule(50, 0.3, 0.5), Rule::Undecided);
        assert_eq!(rule(400, 0.51, 0.6), Rule::LowerBoundAboveHalf);
        assert_eq!(rule(400, 0.4, 0.49), Rule::UpperBoundBelowHalf);
        assert_eq!(rule(401, 0.45, 0.55), Rule::BudgetSpent);
    }

    #[test]
    fn a_budget_below_the_minimum_still_ends_the_duels() {
        let config = GateConfig {
            min_judgments: 100,
            max_judgments: 20,
            ..GateConfig::default()
        };

        assert_eq!(
            decide(evidence(20, 0.4, 0.6), &config).rule,
            Rule::BudgetSpent
        );
        assert_eq!(
            decide(evidence(20, 0.6, 0.7), &config).rule,
            Rule::LowerBoundAboveHalf
        );
    }

    #[test]
    fn a_decision_prints_its_evidence_on_one_line() {
        let decision = decide(evidence(64, 0.61, 0.78), &GateConfig::default());

        assert_eq!(
            decision.to_string(),
            "Promote (LowerBoundAboveHalf): P(candidate ≻ incumbent) = 0.6950, 95% interval \
             [0.6100, 0.7800], 64 judgments, win-rate 0.5000"
        );
    }
}
