//! Win-rates of a group's responses from its comparisons (`research/algorithms.md` §7).
//!
//! - [`counting_win_rates`] (§7.1): `P̂_i = (½ + Σ_j w_ij) / (1 + Σ_j n_ij)`; the ½/1 is the
//!   self-comparison P(y_i≻y_i) = ½, as SPPO includes it.
//! - [`estimate_win_rates`] picks counting when every pair was judged, Bradley–Terry MAP
//!   (`bradley_terry`) otherwise.
//! - [`best_and_worst`] picks the pair a preference trainer learns from.

use crate::bradley_terry::{bradley_terry, BtPrior};
use crate::comparison::{win_matrix, Comparison};
use crate::Result;

/// §7.1's counting estimator with the self-tie; one value per response.
///
/// # Errors
/// As [`win_matrix`].
pub fn counting_win_rates(k: usize, comparisons: &[Comparison]) -> Result<Vec<f64>> {
    let w = win_matrix(k, comparisons)?;
    Ok((0..k)
        .map(|i| {
            let wins: f64 = w[i].iter().sum();
            let games: f64 = (0..k).map(|j| w[i][j] + w[j][i]).sum();
            (0.5 + wins) / (1.0 + games)
        })
        .collect())
}

/// Which estimator [`estimate_win_rates`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    Counting,
    BradleyTerry,
}

/// Counting when every pair has at least one judgment (it keeps cycles), Bradley–Terry MAP
/// (Gamma(2, 1)) otherwise (it imputes the missing pairs).
///
/// # Errors
/// As [`win_matrix`].
pub fn estimate_win_rates(k: usize, comparisons: &[Comparison]) -> Result<(Vec<f64>, Estimator)> {
    let w = win_matrix(k, comparisons)?;
    let complete = (0..k).all(|i| (i + 1..k).all(|j| w[i][j] + w[j][i] > 0.0));
    if complete {
        Ok((counting_win_rates(k, comparisons)?, Estimator::Counting))
    } else {
        let fit = bradley_terry(k, comparisons, BtPrior::default())?;
        Ok((fit.win_rates, Estimator::BradleyTerry))
    }
}

/// The best and worst responses by win-rate (first index on ties), or `None` when all are equal: a
/// group with no preference gives no pair (RLHFlow `prepare_data` drops it too).
pub fn best_and_worst(win_rates: &[f64]) -> Option<(usize, usize)> {
    let mut best = 0;
    let mut worst = 0;
    for (i, &p) in win_rates.iter().enumerate() {
        if p > win_rates[best] {
            best = i;
        }
        if p < win_rates[worst] {
            worst = i;
        }
    }
    (win_rates.get(best)? > win_rates.get(worst)?).then_some((best, worst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comparison::tests::{assert_close, judged, section_7_3};
    use crate::{Error, Outcome};

    // | Counting with self-tie | 0.6 | 0.5833333333 | 0.25 |
    #[test]
    fn counting_with_the_self_tie_gives_0_6_0_5833333333_0_25() {
        let p = counting_win_rates(3, &section_7_3()).unwrap();
        assert_close(&p, &[0.6, 0.5833333333, 0.25], 1e-9);
    }

    // §6: G = 3 with y1≻y2, y1≻y3, y2≻y3 → including self r = [0.8333333333, 0.5, 0.1666666667].
    #[test]
    fn a_full_round_robin_y1_over_y2_over_y3_gives_5_6ths_half_and_1_6th() {
        let judgments = [
            judged(0, 1, Outcome::A),
            judged(0, 2, Outcome::A),
            judged(1, 2, Outcome::A),
        ];
        let (p, estimator) = estimate_win_rates(3, &judgments).unwrap();
        assert_eq!(estimator, Estimator::Counting);
        assert_close(&p, &[5.0 / 6.0, 0.5, 1.0 / 6.0], 1e-12);
        assert_eq!(best_and_worst(&p), Some((0, 2)));
    }

    // §6: a rock-paper-scissors cycle gives every P̂ = 0.5, so no pair.
    #[test]
    fn a_rock_paper_scissors_cycle_gives_one_half_each_and_no_pair() {
        let judgments = [
            judged(0, 1, Outcome::A),
            judged(1, 2, Outcome::A),
            judged(2, 0, Outcome::A),
        ];
        let (p, _) = estimate_win_rates(3, &judgments).unwrap();
        assert_close(&p, &[0.5, 0.5, 0.5], 1e-12);
        assert_eq!(best_and_worst(&p), None);
    }

    #[test]
    fn sparse_judgments_use_bradley_terry_and_an_unbeaten_response_has_no_mle() {
        let judgments = [judged(0, 1, Outcome::A), judged(1, 2, Outcome::A)];
        let (p, estimator) = estimate_win_rates(3, &judgments).unwrap();
        assert_eq!(estimator, Estimator::BradleyTerry);
        assert_eq!(best_and_worst(&p), Some((0, 2)));
        let mle = bradley_terry(3, &judgments, BtPrior::MaximumLikelihood);
        assert!(matches!(mle, Err(Error::NoData(_))));
    }
}
