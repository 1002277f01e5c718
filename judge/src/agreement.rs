//! Inter-annotator agreement over items judged by several annotators: agreement with the majority
//! of the others, and Cohen's kappa for each pair of annotators. An item is whatever the caller
//! keys verdicts by (the server: a pair of responses in canonical order).
//!
//! Kappa treats the four outcomes (`a`, `b`, `tie`, `both_bad`) as categories:
//! κ = (p_o − p_e) / (1 − p_e), p_o the observed agreement, p_e = Σ_c p₁(c)·p₂(c) the agreement
//! expected by chance from each annotator's own outcome rates (Cohen 1960).

use std::collections::BTreeMap;

use crate::Outcome;

/// One annotator's verdict on one item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict<'a, K> {
    /// What was judged; verdicts with equal items are compared with each other.
    pub item: K,
    pub annotator: &'a str,
    /// In the item's own order, the same for every annotator.
    pub outcome: Outcome,
}

/// How one annotator's verdicts compare with the majority of the others on shared pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MajorityAgreement {
    /// Pairs this annotator judged that someone else judged too.
    pub shared_items: usize,
    /// Of those, the ones where the others had a strict plurality verdict.
    pub counted: usize,
    /// Of the counted, the ones where this annotator gave that verdict.
    pub agreed: usize,
}

impl MajorityAgreement {
    /// `agreed / counted`, `None` when nothing could be counted.
    pub fn rate(&self) -> Option<f64> {
        (self.counted > 0).then(|| self.agreed as f64 / self.counted as f64)
    }
}

/// Two annotators on the pairs they both judged.
#[derive(Debug, Clone, PartialEq)]
pub struct PairAgreement {
    pub first: String,
    pub second: String,
    pub shared_items: usize,
    /// The share of shared pairs with the same verdict.
    pub observed: f64,
    /// Cohen's kappa; `None` when chance agreement is 1 (both always gave one same verdict).
    pub kappa: Option<f64>,
}

/// Agreement of everyone who shares pairs with someone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    pub majority: BTreeMap<String, MajorityAgreement>,
    /// Each pair of annotators (`first < second`) with at least `min_shared` shared pairs.
    pub pairs: Vec<PairAgreement>,
}

/// Computes [`Agreement`] from the verdicts on shared items. An annotator who gave several verdicts
/// on one item counts with the last.
pub fn agreement<'a, K: Ord>(
    verdicts: impl IntoIterator<Item = Verdict<'a, K>>,
    min_shared: usize,
) -> Agreement {
    let mut items: BTreeMap<K, BTreeMap<&str, Outcome>> = BTreeMap::new();
    for v in verdicts {
        items
            .entry(v.item)
            .or_default()
            .insert(v.annotator, v.outcome);
    }
    let mut result = Agreement::default();
    let mut together: BTreeMap<(&str, &str), Vec<(Outcome, Outcome)>> = BTreeMap::new();
    for verdicts in items.values().filter(|v| v.len() >= 2) {
        for (&annotator, &outcome) in verdicts {
            let others: Vec<Outcome> = verdicts
                .iter()
                .filter(|(other, _)| **other != annotator)
                .map(|(_, o)| *o)
                .collect();
            let entry = result.majority.entry(annotator.to_string()).or_default();
            entry.shared_items += 1;
            if let Some(majority) = plurality(&others) {
                entry.counted += 1;
                entry.agreed += usize::from(majority == outcome);
            }
            for (&other, &other_outcome) in verdicts.iter().filter(|(o, _)| **o > annotator) {
                together
                    .entry((annotator, other))
                    .or_default()
                    .push((outcome, other_outcome));
            }
        }
    }
    for ((first, second), verdicts) in together {
        if verdicts.len() < min_shared {
            continue;
        }
        let same = verdicts.iter().filter(|(a, b)| a == b).count();
        result.pairs.push(PairAgreement {
            first: first.to_string(),
            second: second.to_string(),
            shared_items: verdicts.len(),
            observed: same as f64 / verdicts.len() as f64,
            kappa: cohen_kappa(&verdicts),
        });
    }
    result
}

/// The verdict given strictly more often than any other, if there is one.
pub fn plurality(outcomes: &[Outcome]) -> Option<Outcome> {
    let mut counts: Vec<(Outcome, usize)> = Vec::new();
    for &o in outcomes {
        match counts.iter_mut().find(|(c, _)| *c == o) {
            Some((_, n)) => *n += 1,
            None => counts.push((o, 1)),
        }
    }
    counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    match counts.as_slice() {
        [] => None,
        [(only, _)] => Some(*only),
        [(top, n), (_, m), ..] => (n > m).then_some(*top),
    }
}

/// Cohen's kappa of two raters' verdicts on the same items; `None` for no items, or when chance
/// agreement is 1 and kappa is undefined.
pub fn cohen_kappa(verdicts: &[(Outcome, Outcome)]) -> Option<f64> {
    const CATEGORIES: [Outcome; 4] = [Outcome::A, Outcome::B, Outcome::Tie, Outcome::BothBad];
    let n = verdicts.len() as f64;
    if verdicts.is_empty() {
        return None;
    }
    let observed = verdicts.iter().filter(|(a, b)| a == b).count() as f64 / n;
    let share = |pick: fn(&(Outcome, Outcome)) -> Outcome, c: Outcome| {
        verdicts.iter().filter(|v| pick(v) == c).count() as f64 / n
    };
    let chance: f64 = CATEGORIES
        .iter()
        .map(|&c| share(|v| v.0, c) * share(|v| v.1, c))
        .sum();
    (chance < 1.0).then(|| (observed - chance) / (1.0 - chance))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{BothBad, Tie, A, B};

    fn repeat(pair: (Outcome, Outcome), n: usize) -> Vec<(Outcome, Outcome)> {
        vec![pair; n]
    }

    /// Wikipedia's worked example (Cohen's kappa, "Simple example"): 50 items, yes/yes 20,
    /// yes/no 5, no/yes 10, no/no 15: p_o = 0.7, p_e = 0.5, κ = 0.4.
    #[test]
    fn kappa_matches_the_textbook_example() {
        let verdicts = [
            repeat((A, A), 20),
            repeat((A, B), 5),
            repeat((B, A), 10),
            repeat((B, B), 15),
        ]
        .concat();

        let kappa = cohen_kappa(&verdicts).unwrap();

        assert!((kappa - 0.4).abs() < 1e-12, "{kappa}");
    }

    #[test]
    fn kappa_is_one_for_perfect_agreement_and_undefined_without_variation() {
        let perfect = [repeat((A, A), 3), repeat((Tie, Tie), 2)].concat();
        assert_eq!(cohen_kappa(&perfect), Some(1.0));
        assert_eq!(cohen_kappa(&repeat((BothBad, BothBad), 4)), None);
        assert_eq!(cohen_kappa(&[]), None);
    }

    #[test]
    fn kappa_is_negative_when_raters_disagree_systematically() {
        let opposite = [repeat((A, B), 5), repeat((B, A), 5)].concat();
        assert_eq!(cohen_kappa(&opposite), Some(-1.0));
    }

    #[test]
    fn a_plurality_needs_a_strict_maximum() {
        assert_eq!(plurality(&[A, A, B]), Some(A));
        assert_eq!(plurality(&[Tie]), Some(Tie));
        assert_eq!(plurality(&[A, B]), None);
        assert_eq!(plurality(&[]), None);
    }

    fn verdict(pair: u128, annotator: &str, outcome: Outcome) -> Verdict<'_, u128> {
        Verdict {
            item: pair,
            annotator,
            outcome,
        }
    }

    #[test]
    fn each_annotator_is_compared_with_the_majority_of_the_others() {
        // Pair 1: x, y, z say a, a, b. Pair 2: x says tie, y says a.
        let shared = [
            verdict(1, "x", A),
            verdict(1, "y", A),
            verdict(1, "z", B),
            verdict(2, "x", Tie),
            verdict(2, "y", A),
        ];

        let result = agreement(shared, 1);

        // x on pair 1: others {a, b} have no majority; on pair 2: other says a, x said tie.
        assert_eq!(
            result.majority["x"],
            MajorityAgreement {
                shared_items: 2,
                counted: 1,
                agreed: 0
            }
        );
        // z on pair 1: others {a, a} → a; z said b.
        assert_eq!(result.majority["z"].rate(), Some(0.0));
        assert_eq!(result.majority["y"].shared_items, 2);
        let xy = result
            .pairs
            .iter()
            .find(|p| p.first == "x" && p.second == "y")
            .unwrap();
        assert_eq!(xy.shared_items, 2);
        assert_eq!(xy.observed, 0.5);
    }

    #[test]
    fn pairs_of_annotators_with_too_few_shared_items_are_left_out() {
        let shared = [verdict(1, "x", A), verdict(1, "y", A)];
        assert!(agreement(shared, 2).pairs.is_empty());
        assert_eq!(agreement(shared, 1).pairs.len(), 1);
    }
}
