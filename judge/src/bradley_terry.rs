//! Bradley–Terry strengths from comparisons (`research/algorithms.md` §7.2).
//!
//! `P(i≻j) = π_i/(π_i+π_j) = σ(θ_i − θ_j)`, fitted by MM iterations (Hunter 2004): maximum
//! likelihood, or MAP under a Gamma(a, b) prior on each π_i (Caron & Doucet 2012), which always has
//! a finite solution. Then `P̂_i = (1/K) Σ_j σ(θ_i − θ_j)`, self included. The "responses" may be a
//! group's responses or, in the arena, adapter versions.

use crate::comparison::{win_matrix, Comparison};
use crate::{Error, Result};

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
    use crate::comparison::tests::{assert_close, section_7_3};

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
}
