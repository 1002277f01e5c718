//! Judgments as the estimators see them: comparisons of two responses by index into their group,
//! and the win matrix every estimator starts from (`research/algorithms.md` §7).
//!
//! A judgment of responses `a` and `b` adds P(a≻b) to `w[a][b]` and 1 − P(a≻b) to `w[b][a]`: 1 or 0
//! for a clear outcome, ½ each for `tie` and `both_bad` (the Chatbot Arena convention), or the
//! judgment's `strength` when it gives one (the store defines it as P(a≻b)).
//!
//! [`comparisons`] is the one conversion from judgments naming responses by id to comparisons by
//! index; the server's preferences and exports and the trainer's data all go through it.

use crate::{Error, Result};

/// What the judge preferred, `a` and `b` being the two responses compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    A,
    B,
    /// Equally good.
    Tie,
    /// Neither is acceptable.
    BothBad,
}

/// One judgment between responses `a` and `b` (indices into the group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub a: usize,
    pub b: usize,
    pub outcome: Outcome,
    /// P(a≻b) when the judge gave one; it takes precedence over `outcome`.
    pub strength: Option<f64>,
}

impl Comparison {
    /// P(a≻b) this judgment stands for.
    pub fn probability(&self) -> f64 {
        probability(self.outcome, self.strength)
    }
}

/// P(a≻b) of a verdict: the judge's strength when it gave one, else 1, 0, or ½ for `tie` and
/// `both_bad`.
fn probability(outcome: Outcome, strength: Option<f64>) -> f64 {
    strength.unwrap_or(match outcome {
        Outcome::A => 1.0,
        Outcome::B => 0.0,
        Outcome::Tie | Outcome::BothBad => 0.5,
    })
}

/// One judgment naming its two responses by id (a store's `Judgment`, in plain terms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged<Id> {
    pub a: Id,
    pub b: Id,
    pub outcome: Outcome,
    /// P(a≻b), when the judge gave one.
    pub strength: Option<f64>,
}

impl<Id> Judged<Id> {
    /// P(a≻b) this judgment stands for, as [`Comparison::probability`].
    pub fn probability(&self) -> f64 {
        probability(self.outcome, self.strength)
    }
}

/// The judgments as comparisons by index into `responses` (the group's response ids, in the order
/// the estimates should come back in). A judgment naming a response that is not in `responses` is
/// left out, so a caller that drops responses (empty ones, another policy's) drops their judgments.
pub fn comparisons<Id: PartialEq>(
    responses: &[Id],
    judgments: impl IntoIterator<Item = Judged<Id>>,
) -> Vec<Comparison> {
    let index = |id: &Id| responses.iter().position(|r| r == id);
    judgments
        .into_iter()
        .filter_map(|j| {
            Some(Comparison {
                a: index(&j.a)?,
                b: index(&j.b)?,
                outcome: j.outcome,
                strength: j.strength,
            })
        })
        .collect()
}

/// Accumulated wins: `w[i][j]` is the (fractional) number of times i beat j.
///
/// # Errors
/// `Error::NoData` for `k = 0`; `Error::Shape` for an index out of range, a response compared with
/// itself, or a strength outside `[0, 1]`.
pub fn win_matrix(k: usize, comparisons: &[Comparison]) -> Result<Vec<Vec<f64>>> {
    if k == 0 {
        return Err(Error::NoData("a group with no responses".into()));
    }
    let mut w = vec![vec![0.0; k]; k];
    for c in comparisons {
        if c.a >= k || c.b >= k || c.a == c.b {
            return Err(Error::Shape(format!(
                "judgment of responses {} and {} in a group of {k}",
                c.a, c.b
            )));
        }
        let p = c.probability();
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Shape(format!("strength {p} is not in [0, 1]")));
        }
        w[c.a][c.b] += p;
        w[c.b][c.a] += 1.0 - p;
    }
    Ok(w)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn judged(a: usize, b: usize, outcome: Outcome) -> Comparison {
        Comparison {
            a,
            b,
            outcome,
            strength: None,
        }
    }

    /// §7.3: A≻B, A≻B, B≻A, B≻C, B≻C, A~C, so w = [[0, 2, 0.5], [1, 0, 2], [0.5, 0, 0]].
    pub(crate) fn section_7_3() -> Vec<Comparison> {
        vec![
            judged(0, 1, Outcome::A),
            judged(0, 1, Outcome::A),
            judged(0, 1, Outcome::B),
            judged(1, 2, Outcome::A),
            judged(2, 1, Outcome::B),
            judged(0, 2, Outcome::Tie),
        ]
    }

    pub(crate) fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < tolerance, "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn the_section_7_3_judgments_give_w_0_2_half_1_0_2_half_0_0() {
        let w = win_matrix(3, &section_7_3()).unwrap();
        assert_eq!(
            w,
            vec![
                vec![0.0, 2.0, 0.5],
                vec![1.0, 0.0, 2.0],
                vec![0.5, 0.0, 0.0]
            ]
        );
    }

    #[test]
    fn both_bad_counts_as_a_tie_and_a_strength_is_p_a_beats_b() {
        let both_bad = [judged(0, 1, Outcome::BothBad)];
        assert_eq!(win_matrix(2, &both_bad).unwrap()[0][1], 0.5);
        let strong = [Comparison {
            strength: Some(0.8),
            ..judged(0, 1, Outcome::A)
        }];
        let w = win_matrix(2, &strong).unwrap();
        assert!((w[0][1] - 0.8).abs() < 1e-12 && (w[1][0] - 0.2).abs() < 1e-12);
    }

    #[test]
    fn a_judgment_comparing_a_response_with_itself_is_rejected() {
        let result = win_matrix(2, &[judged(1, 1, Outcome::A)]);
        assert!(matches!(result, Err(Error::Shape(_))));
    }

    #[test]
    fn judgments_by_id_become_comparisons_by_index_and_unknown_ids_are_left_out() {
        let responses = ["x", "y", "z"];
        let judgments = [
            Judged {
                a: "z",
                b: "x",
                outcome: Outcome::B,
                strength: Some(0.25),
            },
            Judged {
                a: "y",
                b: "gone",
                outcome: Outcome::A,
                strength: None,
            },
        ];

        let result = comparisons(&responses, judgments);

        assert_eq!(
            result,
            vec![Comparison {
                a: 2,
                b: 0,
                outcome: Outcome::B,
                strength: Some(0.25)
            }]
        );
    }
}
