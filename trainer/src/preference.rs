//! Win-rate estimation from pairwise judgments within a group (`research/algorithms.md` §7).
//!
//! A judgment of responses `a` and `b` adds P(a≻b) to `w[a][b]` and 1 − P(a≻b) to `w[b][a]`: 1 or 0 for
//! a clear outcome, ½ each for `tie` and `both_bad` (the Chatbot Arena convention), or the judgment's
//! `strength` when it gives one (the store defines it as P(a≻b)). From `w`:
//!
//! - [`counting_win_rates`] (§7.1): `P̂_i = (½ + Σ_j w_ij) / (1 + Σ_j n_ij)`; the ½/1 is the
//!   self-comparison P(y_i≻y_i) = ½, as SPPO includes it.
//! - [`bradley_terry`] (§7.2): MM iterations (Hunter 2004), maximum likelihood or MAP under a
//!   Gamma(a, b) prior (Caron & Doucet 2012); `P̂_i = (1/K) Σ_j σ(θ_i − θ_j)`, self included.
//! - [`estimate_win_rates`] picks counting when every pair was judged, Bradley–Terry MAP otherwise.
//!
//! Pure functions over response indices, shared by the trainer's data builders and the server's
//! `/v1/groups/{id}/preferences` route.

use flywheel_store::Outcome;

use crate::{Error, Result};

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
        self.strength.unwrap_or(match self.outcome {
            Outcome::A => 1.0,
            Outcome::B => 0.0,
            Outcome::Tie | Outcome::BothBad => 0.5,
        })
    }
}

/// Accumulated wins: `w[i][j]` is the (fractional) number of times i beat j.
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

/// §7.1's counting estimator with the self-tie; one value per response.
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

/// Bradley–Terry fitting: maximum likelihood, or MAP with a Gamma(shape, rate) prior on each strength.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BtPrior {
    /// Needs a strongly connected "has beaten" graph, else the MLE does not exist.
    MaximumLikelihood,
    /// Always finite; §7.2 suggests shape 2, rate 1.
    Gamma { shape: f64, rate: f64 },
}

impl Default for BtPrior {
    fn default() -> Self {
        Self::Gamma {
            shape: 2.0,
            rate: 1.0,
        }
    }
}

/// A fitted Bradley–Terry model.
#[derive(Debug, Clone, PartialEq)]
pub struct BradleyTerry {
    /// Log-strengths θ_i, centred to mean 0.
    pub theta: Vec<f64>,
    /// `P̂_i = (1/K) Σ_j σ(θ_i − θ_j)`, self included (mean exactly ½).
    pub win_rates: Vec<f64>,
}

impl BradleyTerry {
    /// P(i≻j) = σ(θ_i − θ_j).
    pub fn probability(&self, i: usize, j: usize) -> f64 {
        sigmoid(self.theta[i] - self.theta[j])
    }
}

const MM_MAX_SWEEPS: usize = 100_000;
const MM_TOLERANCE: f64 = 1e-13;

/// Fits Bradley–Terry by MM iterations.
///
/// # Errors
/// `Error::NoData` for an empty group, or when the MLE does not exist (the "has beaten" graph is not
/// strongly connected); `Error::Shape` for a bad index or strength.
pub fn bradley_terry(k: usize, comparisons: &[Comparison], prior: BtPrior) -> Result<BradleyTerry> {
    let w = win_matrix(k, comparisons)?;
    let (shape, rate) = match prior {
        BtPrior::MaximumLikelihood => {
            if !strongly_connected(&w) {
                return Err(Error::NoData(
                    "no Bradley–Terry MLE: some response never beat (or never lost to) the rest"
                        .into(),
                ));
            }
            (1.0, 0.0)
        }
        BtPrior::Gamma { shape, rate } => (shape, rate),
    };
    let mut pi = vec![1.0; k];
    for _ in 0..MM_MAX_SWEEPS {
        let mut change: f64 = 0.0;
        for i in 0..k {
            let wins: f64 = w[i].iter().sum();
            let denom: f64 = (0..k)
                .filter(|&j| j != i)
                .map(|j| (w[i][j] + w[j][i]) / (pi[i] + pi[j]))
                .sum();
            let next = (shape - 1.0 + wins) / (rate + denom);
            change = change.max((next / pi[i] - 1.0).abs());
            pi[i] = next;
        }
        if rate == 0.0 {
            // The likelihood alone fixes only ratios: pin the geometric mean to 1 each sweep.
            let mean = pi.iter().map(|p| p.ln()).sum::<f64>() / k as f64;
            pi.iter_mut().for_each(|p| *p /= mean.exp());
        }
        if change < MM_TOLERANCE {
            break;
        }
    }
    let logs: Vec<f64> = pi.iter().map(|p| p.ln()).collect();
    let mean = logs.iter().sum::<f64>() / k as f64;
    let theta: Vec<f64> = logs.iter().map(|t| t - mean).collect();
    let win_rates = theta
        .iter()
        .map(|ti| theta.iter().map(|tj| sigmoid(ti - tj)).sum::<f64>() / k as f64)
        .collect();
    Ok(BradleyTerry { theta, win_rates })
}

/// Which estimator [`estimate_win_rates`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    Counting,
    BradleyTerry,
}

/// Counting when every pair has at least one judgment (it keeps cycles), Bradley–Terry MAP
/// (Gamma(2, 1)) otherwise (it imputes the missing pairs).
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

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Whether every response reaches every other along "has beaten" edges (`w[i][j] > 0`).
fn strongly_connected(w: &[Vec<f64>]) -> bool {
    let k = w.len();
    let reach = |forward: bool| {
        let mut seen = vec![false; k];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(i) = stack.pop() {
            for j in 0..k {
                let edge = if forward { w[i][j] } else { w[j][i] };
                if edge > 0.0 && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        seen.into_iter().all(|s| s)
    };
    reach(true) && reach(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(a: usize, b: usize, outcome: Outcome) -> Comparison {
        Comparison {
            a,
            b,
            outcome,
            strength: None,
        }
    }

    /// §7.3: A≻B, A≻B, B≻A, B≻C, B≻C, A~C, so w = [[0, 2, 0.5], [1, 0, 2], [0.5, 0, 0]].
    fn section_7_3() -> Vec<Comparison> {
        vec![
            judged(0, 1, Outcome::A),
            judged(0, 1, Outcome::A),
            judged(0, 1, Outcome::B),
            judged(1, 2, Outcome::A),
            judged(2, 1, Outcome::B),
            judged(0, 2, Outcome::Tie),
        ]
    }

    fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64) {
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

    // | Counting with self-tie | 0.6 | 0.5833333333 | 0.25 |
    #[test]
    fn counting_with_the_self_tie_gives_0_6_0_5833333333_0_25() {
        let p = counting_win_rates(3, &section_7_3()).unwrap();
        assert_close(&p, &[0.6, 0.5833333333, 0.25], 1e-9);
    }

    // | BT MLE θ (centred) | 0.647950 | 0.449050 | −1.097000 |
    // | BT MLE P̂ (incl. self) | 0.633626 | 0.591594 | 0.274781 | P(A≻B) = 0.549562 |
    #[test]
    fn bradley_terry_mle_gives_theta_0_647950_0_449050_minus_1_097000() {
        let fit = bradley_terry(3, &section_7_3(), BtPrior::MaximumLikelihood).unwrap();
        assert_close(&fit.theta, &[0.647950, 0.449050, -1.097000], 1e-6);
        assert_close(&fit.win_rates, &[0.633626, 0.591594, 0.274781], 1e-6);
        assert!((fit.probability(0, 1) - 0.549562).abs() < 1e-6);
        assert!((fit.probability(1, 2) - 0.824343).abs() < 1e-6);
        assert!((fit.win_rates.iter().sum::<f64>() - 1.5).abs() < 1e-12);
    }

    // | BT MAP θ, a = 2, b = 1 (centred) | 0.293470 | 0.231907 | −0.525377 |
    // | BT MAP P̂ | 0.569792 | 0.555126 | 0.375082 | P(A≻B) = 0.515386 |
    #[test]
    fn bradley_terry_map_with_gamma_2_1_gives_win_rates_0_569792_0_555126_0_375082() {
        let fit = bradley_terry(3, &section_7_3(), BtPrior::default()).unwrap();
        assert_close(&fit.theta, &[0.293470, 0.231907, -0.525377], 1e-6);
        assert_close(&fit.win_rates, &[0.569792, 0.555126, 0.375082], 1e-6);
        assert!((fit.probability(0, 1) - 0.515386).abs() < 1e-6);
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
}
