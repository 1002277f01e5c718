//! Percentile bootstrap intervals for anything estimated from comparisons: Bradley–Terry
//! strengths, win-rates, P(i≻j) (the arena's "lower 95% bound of P(candidate ≻ incumbent) > 0.5").
//!
//! Each round draws as many comparisons as there are, with replacement, and re-estimates; an
//! interval is the `(1 − c)/2` and `(1 + c)/2` quantiles of the rounds' values (linear
//! interpolation between order statistics, numpy's default). This is FastChat's recipe for its
//! leaderboard (`fastchat/serve/monitor/elo_analysis.py`, BT with bootstrap CIs).
//!
//! The draws come from SplitMix64 seeded by [`Bootstrap::seed`], so a seed gives the same
//! intervals on every platform and build: a promotion decision can be replayed.

use crate::bradley_terry::{bradley_terry, BtPrior};
use crate::comparison::{win_matrix, Comparison};
use crate::{Error, Result};

/// How many rounds, at what confidence, from which seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    pub rounds: usize,
    /// The interval's coverage, in (0, 1).
    pub confidence: f64,
    pub seed: u64,
}

impl Default for Bootstrap {
    /// 1000 rounds at 95%, FastChat's leaderboard setting, seed 0.
    fn default() -> Self {
        Self {
            rounds: 1000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

/// A two-sided percentile interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }
}

/// Bradley–Terry intervals, one per response (or adapter version).
#[derive(Debug, Clone, PartialEq)]
pub struct BtIntervals {
    /// Of the centred log-strengths θ_i.
    pub theta: Vec<Interval>,
    /// Of `P̂_i = (1/K) Σ_j σ(θ_i − θ_j)`.
    pub win_rates: Vec<Interval>,
    /// Every round's centred θ, for intervals of other functions of θ such as P(i≻j).
    samples: Vec<Vec<f64>>,
    confidence: f64,
}

impl BtIntervals {
    /// The interval of P(i≻j) = σ(θ_i − θ_j).
    ///
    /// # Panics
    /// If `i` or `j` is not below the `k` the intervals were fitted for.
    pub fn probability(&self, i: usize, j: usize) -> Interval {
        let values = self
            .samples
            .iter()
            .map(|theta| 1.0 / (1.0 + (theta[j] - theta[i]).exp()))
            .collect();
        percentile_interval(values, self.confidence)
    }
}

/// Percentile intervals of `statistic`, a fixed-length vector of estimates, over resamples of
/// `comparisons`: one interval per coordinate.
///
/// # Errors
/// `Error::Setting` for no rounds, a confidence outside (0, 1), or a statistic whose length changes
/// between rounds; the first error `statistic` returns.
pub fn bootstrap<F>(
    comparisons: &[Comparison],
    config: &Bootstrap,
    mut statistic: F,
) -> Result<Vec<Interval>>
where
    F: FnMut(&[Comparison]) -> Result<Vec<f64>>,
{
    let rounds = resamples(comparisons, config, &mut statistic)?;
    Ok(intervals(&rounds, config.confidence))
}

/// Bradley–Terry fitted to each resample under `prior`: intervals of θ, of the win-rates, and
/// through [`BtIntervals::probability`] of any P(i≻j).
///
/// # Errors
/// `Error::Setting` as [`bootstrap`]; `Error::Shape` for a bad comparison; `Error::NoData` when a
/// resample has no MLE (under [`BtPrior::MaximumLikelihood`]; the default MAP prior never fails).
pub fn bradley_terry_intervals(
    k: usize,
    comparisons: &[Comparison],
    prior: BtPrior,
    config: &Bootstrap,
) -> Result<BtIntervals> {
    win_matrix(k, comparisons)?;
    let mut win_rates = Vec::with_capacity(config.rounds);
    let samples = resamples(comparisons, config, |sample| {
        let fit = bradley_terry(k, sample, prior)?;
        win_rates.push(fit.win_rates);
        Ok(fit.theta)
    })?;
    Ok(BtIntervals {
        theta: intervals(&samples, config.confidence),
        win_rates: intervals(&win_rates, config.confidence),
        samples,
        confidence: config.confidence,
    })
}

/// `statistic` of each round's resample, in round order.
fn resamples<F>(
    comparisons: &[Comparison],
    config: &Bootstrap,
    mut statistic: F,
) -> Result<Vec<Vec<f64>>>
where
    F: FnMut(&[Comparison]) -> Result<Vec<f64>>,
{
    if config.rounds == 0 {
        return Err(Error::Setting(
            "a bootstrap needs at least one round".into(),
        ));
    }
    if !(config.confidence > 0.0 && config.confidence < 1.0) {
        return Err(Error::Setting(format!(
            "the confidence level must be > 0 and < 1. Given: {}",
            config.confidence
        )));
    }
    let mut rng = SplitMix64(config.seed);
    let n = comparisons.len();
    let mut sample = Vec::with_capacity(n);
    let mut rounds: Vec<Vec<f64>> = Vec::with_capacity(config.rounds);
    for _ in 0..config.rounds {
        sample.clear();
        sample.extend((0..n).map(|_| comparisons[rng.below(n)]));
        let values = statistic(&sample)?;
        if rounds
            .first()
            .is_some_and(|first| first.len() != values.len())
        {
            return Err(Error::Setting(format!(
                "the bootstrap statistic gave {} values, then {}",
                rounds[0].len(),
                values.len()
            )));
        }
        rounds.push(values);
    }
    Ok(rounds)
}

/// One interval per coordinate of the rounds' values.
fn intervals(rounds: &[Vec<f64>], confidence: f64) -> Vec<Interval> {
    let width = rounds.first().map_or(0, Vec::len);
    (0..width)
        .map(|c| percentile_interval(rounds.iter().map(|r| r[c]).collect(), confidence))
        .collect()
}

fn percentile_interval(mut values: Vec<f64>, confidence: f64) -> Interval {
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Interval {
        lower: quantile(&values, tail),
        upper: quantile(&values, 1.0 - tail),
    }
}

/// The `q` quantile of sorted, non-empty `values`, interpolating linearly between order
/// statistics (numpy's `linear` method).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let below = h.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + (h - below as f64) * (sorted[above] - sorted[below])
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and fixed by its seed forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` by multiply-shift (Lemire 2019, without rejection: a bias below n/2⁶⁴).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comparison::tests::{judged, section_7_3};
    use crate::win_rates::counting_win_rates;
    use crate::Outcome;

    /// A candidate (0) against the incumbent (1): `wins`, then `losses`, then `ties`.
    fn duels(wins: usize, losses: usize, ties: usize) -> Vec<Comparison> {
        let outcomes = [
            (wins, Outcome::A),
            (losses, Outcome::B),
            (ties, Outcome::Tie),
        ];
        outcomes
            .into_iter()
            .flat_map(|(n, outcome)| std::iter::repeat_n(judged(0, 1, outcome), n))
            .collect()
    }

    #[test]
    fn splitmix64_from_seed_0_gives_the_reference_sequence() {
        // The first outputs of the reference C implementation (prng.di.unimi.it/splitmix64.c).
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn quantiles_interpolate_linearly_between_order_statistics() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&sorted, 0.0), 1.0);
        assert_eq!(quantile(&sorted, 0.5), 3.0);
        assert_eq!(quantile(&sorted, 0.625), 3.5);
        assert_eq!(quantile(&sorted, 1.0), 5.0);
        assert_eq!(quantile(&[7.0], 0.975), 7.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_intervals_and_another_seed_other_ones() {
        let config = Bootstrap {
            rounds: 200,
            ..Bootstrap::default()
        };
        let fit = |seed| {
            let config = Bootstrap { seed, ..config };
            bradley_terry_intervals(3, &section_7_3(), BtPrior::default(), &config).unwrap()
        };

        assert_eq!(fit(7), fit(7));
        assert_ne!(fit(7).theta, fit(8).theta);
    }

    #[test]
    fn intervals_cover_the_point_estimate_and_narrow_with_more_judgments() {
        let config = Bootstrap::default();
        let width = |games: usize| {
            let comparisons = duels(games / 2, games / 4, games / 4);
            let fit = bradley_terry(2, &comparisons, BtPrior::default()).unwrap();
            let intervals =
                bradley_terry_intervals(2, &comparisons, BtPrior::default(), &config).unwrap();
            let p = intervals.probability(0, 1);
            assert!(p.contains(fit.probability(0, 1)), "{p:?}");
            assert!(intervals.theta[0].contains(fit.theta[0]));
            p.upper - p.lower
        };

        assert!(width(400) < width(40) / 2.0);
    }

    #[test]
    fn a_clearly_better_candidate_has_a_lower_bound_above_one_half_and_an_even_one_does_not() {
        let config = Bootstrap::default();
        let p = |wins, losses, ties| {
            let comparisons = duels(wins, losses, ties);
            bradley_terry_intervals(2, &comparisons, BtPrior::default(), &config)
                .unwrap()
                .probability(0, 1)
        };

        assert!(p(120, 60, 20).lower > 0.5);
        let even = p(90, 90, 20);
        assert!(even.lower < 0.5 && even.upper > 0.5, "{even:?}");
    }

    #[test]
    fn a_custom_statistic_gets_one_interval_per_value() {
        let config = Bootstrap {
            rounds: 100,
            ..Bootstrap::default()
        };
        let intervals = bootstrap(&section_7_3(), &config, |sample| {
            counting_win_rates(3, sample)
        })
        .unwrap();

        assert_eq!(intervals.len(), 3);
        assert!(intervals.iter().all(|i| i.lower <= i.upper));
        assert!(intervals[2].contains(0.25));
    }

    #[test]
    fn no_rounds_or_a_confidence_of_one_is_a_setting_error() {
        let run = |rounds, confidence| {
            let config = Bootstrap {
                rounds,
                confidence,
                seed: 0,
            };
            bootstrap(&section_7_3(), &config, |_| Ok(vec![0.0]))
        };
        assert!(matches!(run(0, 0.95), Err(Error::Setting(_))));
        assert!(matches!(run(10, 1.0), Err(Error::Setting(_))));
        assert!(run(10, 0.9).is_ok());
    }
}
