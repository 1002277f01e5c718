//! The arena: adapter versions ranked by Bradley–Terry over their duels, and the head-to-head of a
//! candidate with the incumbent that the promotion gate (`gate`) reads.
//!
//! A duel is a [`Judged`] naming the versions on its two sides; ties and `both_bad` count half a win
//! each way, as everywhere in this crate (`comparison`). Strengths are the log-strengths θ of
//! `bradley_terry` fitted over version indices, so P(i≻j) = σ(θ_i − θ_j) and Elo is 400/ln 10 · θ.
//! Intervals are percentile bootstraps over resampled duels (`bootstrap`), so a seed replays them.
//!
//! `both_bad` is shown apart because the strength cannot show it: two versions that are both bad
//! tie, and a version whose duels are mostly both-bad looks as good as its opponents.

use crate::bootstrap::{bootstrap, Bootstrap, Interval};
use crate::bradley_terry::{bradley_terry, BtPrior};
use crate::comparison::{comparisons, Comparison, Judged, Outcome};
use crate::{Error, Result};

/// What a version's duels add up to, before any model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Duels this version took part in.
    pub judgments: usize,
    /// Wins, a tie or `both_bad` counting ½ (or P(this≻other) when the judge gave a strength).
    pub wins: f64,
    /// Duels judged `both_bad`.
    pub both_bad: usize,
}

impl Tally {
    /// `wins / judgments`, `None` without judgments. It depends on whom the version met, so compare
    /// versions by strength, not by this.
    pub fn win_rate(&self) -> Option<f64> {
        (self.judgments > 0).then(|| self.wins / self.judgments as f64)
    }

    /// The share of this version's duels that were judged `both_bad`, `None` without judgments.
    pub fn both_bad_rate(&self) -> Option<f64> {
        (self.judgments > 0).then(|| self.both_bad as f64 / self.judgments as f64)
    }
}

/// One version on the leaderboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing<V> {
    pub version: V,
    /// 1 + the number of versions whose interval lies wholly above this one's (FastChat's rule),
    /// so versions the data cannot separate share a rank.
    pub rank: usize,
    /// θ − θ_anchor: log-odds of beating the anchor (the first version given), which has 0.
    pub strength: f64,
    /// The bootstrap interval of `strength`; the anchor's is [0, 0].
    pub interval: Interval,
    pub tally: Tally,
}

/// The leaderboard of `versions`, strongest first (ties in the order given).
///
/// Strengths are anchored at `versions[0]`: pass the incumbent (or the base, version 0) first and a
/// strength reads as "log-odds of beating it", its interval as whether that is above 0. A mean-0
/// anchor would make every version's interval depend on which others happen to be listed.
/// Duels naming a version not in `versions` are left out. Under [`BtPrior::MaximumLikelihood`] a
/// resample whose "has beaten" graph is not strongly connected fails the whole call; the default
/// Gamma(2, 1) prior never fails; it puts a version without duels at the prior's mode, π = 1.
///
/// # Errors
/// `Error::NoData` for no versions (or no MLE); `Error::Shape` for a duel of a version with
/// itself or a strength outside `[0, 1]`; `Error::Setting` for a bad [`Bootstrap`].
pub fn leaderboard<V: PartialEq + Clone>(
    versions: &[V],
    duels: impl IntoIterator<Item = Judged<V>>,
    prior: BtPrior,
    config: &Bootstrap,
) -> Result<Vec<Standing<V>>> {
    let k = versions.len();
    let duels = comparisons(versions, duels);
    let anchored = |sample: &[Comparison]| {
        let theta = bradley_terry(k, sample, prior)?.theta;
        Ok(theta.iter().map(|t| t - theta[0]).collect::<Vec<f64>>())
    };
    let strengths = anchored(&duels)?;
    let intervals = bootstrap(&duels, config, anchored)?;
    let tallies = tallies(k, &duels);
    let mut standings: Vec<Standing<V>> = (0..k)
        .map(|i| Standing {
            version: versions[i].clone(),
            rank: 1 + intervals
                .iter()
                .filter(|other| other.lower > intervals[i].upper)
                .count(),
            strength: strengths[i],
            interval: intervals[i],
            tally: tallies[i],
        })
        .collect();
    standings.sort_by(|x, y| y.strength.total_cmp(&x.strength));
    Ok(standings)
}

/// A candidate against the incumbent, from their duels with each other only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadToHead {
    /// The candidate's side of their duels.
    pub tally: Tally,
    /// Bradley–Terry's P(candidate ≻ incumbent). With two versions the MLE is the win-rate and the
    /// default Gamma(2, 1) MAP is Laplace's (wins + 1)/(judgments + 2): ½ before any duel.
    pub probability: f64,
    /// Its bootstrap interval.
    pub interval: Interval,
    /// The coverage of `interval` (0.95 by default), kept so a recorded decision says what it used.
    pub confidence: f64,
}

/// The head-to-head of `candidate` and `incumbent` over their duels with each other, in either
/// seat; duels with any other version are left out. Transitive evidence through third versions is
/// deliberately ignored: the gate should rest on the two versions meeting on the same prompts.
///
/// # Errors
/// `Error::Setting` when the candidate is the incumbent, or for a bad [`Bootstrap`];
/// `Error::Shape` for a strength outside `[0, 1]`; `Error::NoData` when the MLE has no solution.
pub fn head_to_head<V: PartialEq>(
    candidate: V,
    incumbent: V,
    duels: impl IntoIterator<Item = Judged<V>>,
    prior: BtPrior,
    config: &Bootstrap,
) -> Result<HeadToHead> {
    if candidate == incumbent {
        return Err(Error::Setting(
            "a candidate cannot duel itself: it is the incumbent".into(),
        ));
    }
    let duels = comparisons(&[candidate, incumbent], duels);
    let probability =
        |sample: &[Comparison]| Ok(vec![bradley_terry(2, sample, prior)?.probability(0, 1)]);
    let estimate = probability(&duels)?[0];
    let interval = bootstrap(&duels, config, probability)?[0];
    Ok(HeadToHead {
        tally: tallies(2, &duels)[0],
        probability: estimate,
        interval,
        confidence: config.confidence,
    })
}

/// One tally per index; `comparisons` are already checked by a fit.
fn tallies(k: usize, comparisons: &[Comparison]) -> Vec<Tally> {
    let mut tallies = vec![Tally::default(); k];
    for c in comparisons {
        let p = c.probability();
        for (side, wins) in [(c.a, p), (c.b, 1.0 - p)] {
            let tally = &mut tallies[side];
            tally.judgments += 1;
            tally.wins += wins;
            tally.both_bad += usize::from(c.outcome == Outcome::BothBad);
        }
    }
    tallies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comparison::tests::assert_close;

    fn duel(a: u32, b: u32, outcome: Outcome) -> Judged<u32> {
        Judged {
            a,
            b,
            outcome,
            strength: None,
        }
    }

    /// `tests/reference/arena_reference.py`'s `DUELS`: versions 0 (base) to 3.
    fn reference_duels() -> Vec<Judged<u32>> {
        use Outcome::{BothBad, Tie, A, B};
        vec![
            duel(1, 0, A),
            duel(0, 1, B),
            duel(1, 0, B),
            duel(2, 1, A),
            duel(1, 2, Tie),
            duel(2, 1, BothBad),
            duel(2, 0, A),
            duel(0, 2, A),
            duel(3, 1, A),
            duel(1, 3, B),
            duel(3, 1, B),
            duel(3, 1, Tie),
            duel(1, 3, BothBad),
            duel(3, 2, A),
            duel(2, 3, A),
            Judged {
                strength: Some(0.25),
                ..duel(2, 3, B)
            },
            duel(3, 0, A),
            duel(0, 3, BothBad),
        ]
    }

    fn assert_interval(actual: Interval, lower: f64, upper: f64) {
        assert_close(&[actual.lower, actual.upper], &[lower, upper], 1e-6);
    }

    /* Equivalent python (tests/reference/arena_reference.py, Newton on the Gamma(2, 1) posterior,
       SplitMix64 resampling from seed 0, 1000 rounds, numpy percentiles):
       Leaderboard, strengths anchored at version 0 (Gamma(2, 1) MAP):
         version 0: theta 0.000000 [0.000000, 0.000000]  judgments 7  wins 2.50  win-rate 0.357143  both-bad 1
         version 1: theta 0.253157 [-0.853959, 1.506964]  judgments 11  wins 5.00  win-rate 0.454545  both-bad 2
         version 2: theta 0.422282 [-0.781219, 1.710810]  judgments 8  wins 4.25  win-rate 0.531250  both-bad 1
         version 3: theta 0.631387 [-0.381753, 1.878534]  judgments 10  wins 6.25  win-rate 0.625000  both-bad 2
    */
    #[test]
    fn the_leaderboard_matches_the_numpy_reference_strengths_intervals_and_tallies() {
        let board = leaderboard(
            &[0, 1, 2, 3],
            reference_duels(),
            BtPrior::default(),
            &Bootstrap::default(),
        )
        .unwrap();

        let versions: Vec<u32> = board.iter().map(|s| s.version).collect();
        assert_eq!(versions, [3, 2, 1, 0]);
        let strengths: Vec<f64> = board.iter().map(|s| s.strength).collect();
        assert_close(&strengths, &[0.631387, 0.422282, 0.253157, 0.0], 1e-6);
        assert_interval(board[0].interval, -0.381753, 1.878534);
        assert_interval(board[1].interval, -0.781219, 1.710810);
        assert_interval(board[2].interval, -0.853959, 1.506964);
        assert_interval(board[3].interval, 0.0, 0.0);
        let tallies: Vec<(usize, f64, usize)> = board
            .iter()
            .map(|s| (s.tally.judgments, s.tally.wins, s.tally.both_bad))
            .collect();
        assert_eq!(
            tallies,
            [(10, 6.25, 2), (8, 4.25, 1), (11, 5.0, 2), (7, 2.5, 1)]
        );
        assert!((board[2].tally.win_rate().unwrap() - 0.454545).abs() < 1e-6);
        assert_eq!(board[0].tally.both_bad_rate(), Some(0.2));
        assert!(
            board.iter().all(|s| s.rank == 1),
            "no interval lies above another"
        );
    }

    /* Equivalent python (same script):
       Candidate 3 vs incumbent 1:
         judgments 5  wins 3.0  win-rate 0.600000  P(candidate > incumbent) 0.571429
         (Laplace (W+1)/(n+2) = 0.571429)  95% [0.357143, 0.785714]
    */
    #[test]
    fn candidate_3_against_incumbent_1_matches_the_numpy_reference() {
        let result = head_to_head(
            3,
            1,
            reference_duels(),
            BtPrior::default(),
            &Bootstrap::default(),
        )
        .unwrap();

        assert_eq!(
            result.tally,
            Tally {
                judgments: 5,
                wins: 3.0,
                both_bad: 1
            }
        );
        assert_eq!(result.tally.win_rate(), Some(0.6));
        assert!((result.probability - 4.0 / 7.0).abs() < 1e-9);
        assert_interval(result.interval, 0.357143, 0.785714);
        assert_eq!(result.confidence, 0.95);
    }

    #[test]
    fn the_same_seed_gives_the_same_leaderboard_and_another_seed_other_intervals() {
        let board = |seed| {
            let config = Bootstrap {
                rounds: 200,
                seed,
                ..Bootstrap::default()
            };
            leaderboard(
                &[0, 1, 2, 3],
                reference_duels(),
                BtPrior::default(),
                &config,
            )
            .unwrap()
        };

        assert_eq!(board(11), board(11));
        assert_ne!(board(11)[0].interval, board(12)[0].interval);
        assert_eq!(board(11)[0].strength, board(12)[0].strength);
    }

    #[test]
    fn a_version_that_clearly_beats_the_anchor_outranks_it() {
        let duels = std::iter::repeat_n(duel(1, 0, Outcome::A), 30)
            .chain(std::iter::repeat_n(duel(0, 1, Outcome::A), 5));

        let board = leaderboard(&[0, 1], duels, BtPrior::default(), &Bootstrap::default()).unwrap();

        assert_eq!((board[0].version, board[0].rank), (1, 1));
        assert!(board[0].interval.lower > 0.0, "{:?}", board[0].interval);
        assert_eq!((board[1].version, board[1].rank), (0, 2));
    }

    #[test]
    fn a_version_without_duels_is_listed_with_no_win_rate() {
        let board = leaderboard(
            &[0, 1, 7],
            [duel(0, 1, Outcome::Tie)],
            BtPrior::default(),
            &Bootstrap::default(),
        )
        .unwrap();

        let unjudged = board.iter().find(|s| s.version == 7).unwrap();
        assert_eq!(unjudged.tally, Tally::default());
        assert_eq!(unjudged.tally.win_rate(), None);
        assert_eq!(unjudged.tally.both_bad_rate(), None);
    }

    #[test]
    fn the_head_to_head_ignores_other_versions_and_either_seat() {
        let duels = [
            duel(2, 5, Outcome::A),
            duel(5, 2, Outcome::B),
            duel(2, 9, Outcome::B),
            duel(9, 5, Outcome::A),
        ];

        let result = head_to_head(2, 5, duels, BtPrior::default(), &Bootstrap::default()).unwrap();

        assert_eq!(result.tally.judgments, 2);
        assert_eq!(result.tally.wins, 2.0);
        assert!(
            (result.probability - 3.0 / 4.0).abs() < 1e-9,
            "Laplace: (2 + 1)/(2 + 2)"
        );
    }

    #[test]
    fn a_candidate_cannot_duel_itself_and_no_versions_is_no_data() {
        let same = head_to_head(4, 4, [], BtPrior::default(), &Bootstrap::default());
        assert!(matches!(same, Err(Error::Setting(_))));
        let empty = leaderboard::<u32>(&[], [], BtPrior::default(), &Bootstrap::default());
        assert!(matches!(empty, Err(Error::NoData(_))));
    }
}
