//! Helpfulness, stability and the group consistency entropy of `research/algorithms.md` §5.2, on
//! unit sets (pure numbers; no tensors).
//!
//! **§5.2 is our precise proposal, not the paper's formulas**: Prabhune et al. (arXiv 2512.12858)
//! describe "entropy-based helpfulness and stability rewards" over groups of prompt variants, but
//! their exact formulas, weights and hyperparameters could not be retrieved (§5.1). What follows
//! implements §5.2 to the letter.
//!
//! For a group of G responses (all M variants × n samples of one canonical intent) with unit sets
//! U_1..U_G:
//! - `Help(y) = min(1, log2(1 + |U(y)|) / log2(1 + N_max))`;
//! - `Stab(y_m) = (1/(G−1)) Σ_{k≠m} Jaccard(U_m, U_k)`, with Jaccard(∅, ∅) = 1; or the alternative
//!   leave-one-out agreement `1 − (1/|∪U|) Σ_{u∈∪U} |1[u∈U_m] − f_{−m}(u)|`, with f_{−m} the
//!   fraction of the *other* responses carrying u (1 when ∪U = ∅);
//! - ours beyond §5.2, the entropy share `Stab(y_m) = H_stab(G ∖ m) − H_stab(G)` in [−1, 1]: how
//!   much the group's consistency entropy would rise without y_m: each answer's own effect on the
//!   metric, where Jaccard gives partial credit for items half the group shares, which H_stab
//!   charges most for (h2(1/2) = 1);
//! - ours beyond §5.2: `empty_agreement` replaces the 1 that two empty unit sets (or an all-empty
//!   group) score as agreeing. §5.2's 1 rewards agreeing on *nothing* as much as agreeing on the same
//!   items, which on a model that names few items pushes towards naming none (bench/RESULTS.md,
//!   issue 12); 0 counts only shared items as agreement. For the entropy share it scales the
//!   *positive* share of an answer that names nothing (such an answer lowers the entropy only by
//!   siding with a silent majority); its negative share, the cost of omitting what the others name,
//!   stays whole;
//! - `R(y_m) = gate_m · (w_h·Help(y_m) + w_s·Stab(y_m))`, the gate in [0, 1] optional (1 without);
//! - the group consistency entropy (a diagnostic and eval metric, not a reward):
//!   `H_stab = (1/|∪U|) Σ_{u∈∪U} h2(f(u))`, `f(u) = (1/G) Σ_m 1[u ∈ U_m]`,
//!   `h2(p) = −p log2 p − (1−p) log2(1−p)`, h2(0) = h2(1) = 0; H_stab = 0 when ∪U = ∅ (every response
//!   carries the same, empty, unit set).
//!
//! The rewards then go through GRPO exactly as §4 ([`crate::Grpo`]): one group per canonical intent.

use std::collections::BTreeMap;

use super::units::UnitSet;
use crate::{Error, Result};

/// Which per-response stability of §5.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StabilityMeasure {
    /// Mean pairwise Jaccard with the group's other responses (§5.2's main form).
    #[default]
    Jaccard,
    /// §5.2's "entropy-consistent leave-one-out agreement" alternative.
    LeaveOneOutAgreement,
    /// Ours: `H_stab(G ∖ m) − H_stab(G)`, the response's leave-one-out share of the entropy.
    EntropyShare,
}

impl StabilityMeasure {
    /// The name a run's configuration records (and `--stability` takes).
    pub fn name(self) -> &'static str {
        match self {
            Self::Jaccard => "jaccard",
            Self::LeaveOneOutAgreement => "loo",
            Self::EntropyShare => "entropy",
        }
    }
}

/// Weights and settings of the reward; `Default` is §5.2's proposal: w_h = 0.3, w_s = 0.7,
/// N_max = 7, Jaccard stability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsistencyConfig {
    /// w_h, the helpfulness weight; finite, ≥ 0.
    pub w_help: f64,
    /// w_s, the stability weight; finite, ≥ 0.
    pub w_stab: f64,
    /// N_max, the expected maximum number of units per response; ≥ 1.
    pub n_max: usize,
    pub stability: StabilityMeasure,
    /// What two empty unit sets score as agreement (Jaccard(∅, ∅), and the leave-one-out agreement
    /// of an all-empty group): 1 in §5.2, 0 to reward only shared items; in [0, 1].
    pub empty_agreement: f64,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        Self {
            w_help: 0.3,
            w_stab: 0.7,
            n_max: 7,
            stability: StabilityMeasure::Jaccard,
            empty_agreement: 1.0,
        }
    }
}

impl ConsistencyConfig {
    /// # Errors
    /// `Error::Setting` for a negative or non-finite weight or N_max = 0.
    pub fn validate(&self) -> Result<()> {
        for (what, w) in [("w_h", self.w_help), ("w_s", self.w_stab)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Setting(format!(
                    "consistency weight {what} = {w} is out of range"
                )));
            }
        }
        if self.n_max == 0 {
            return Err(Error::Setting(
                "consistency N_max must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.empty_agreement) {
            return Err(Error::Setting(format!(
                "the agreement of two empty unit sets must lie in [0, 1], not {}",
                self.empty_agreement
            )));
        }
        Ok(())
    }
}

/// A group's rewards and their parts, in the order of its responses.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsistencyRewards {
    /// |U(y_m)|.
    pub unit_counts: Vec<usize>,
    pub helpfulness: Vec<f64>,
    pub stability: Vec<f64>,
    /// R(y_m), gate included.
    pub rewards: Vec<f64>,
    /// H_stab of the whole group.
    pub entropy: f64,
}

/// `Help = min(1, log2(1 + units) / log2(1 + n_max))`.
///
/// # Errors
/// `Error::Setting` for `n_max` = 0.
pub fn helpfulness(units: usize, n_max: usize) -> Result<f64> {
    if n_max == 0 {
        return Err(Error::Setting(
            "consistency N_max must be at least 1".into(),
        ));
    }
    Ok(((1.0 + units as f64).log2() / (1.0 + n_max as f64).log2()).min(1.0))
}

/// `|a ∩ b| / |a ∪ b|`, and `empty` for two empty sets (1 in §5.2).
pub fn jaccard(a: &UnitSet, b: &UnitSet, empty: f64) -> f64 {
    let common = a.intersection(b).count();
    let union = a.len() + b.len() - common;
    if union == 0 {
        empty
    } else {
        common as f64 / union as f64
    }
}

fn at_least_two(sets: &[UnitSet]) -> Result<f64> {
    if sets.len() < 2 {
        return Err(Error::NoData(format!(
            "stability compares a response with the rest of its group: {} response(s)",
            sets.len()
        )));
    }
    Ok((sets.len() - 1) as f64)
}

/// `Stab(y_m)`: the mean Jaccard of U_m with every other set of the group, two empty sets scoring
/// `empty` (1 in §5.2).
///
/// # Errors
/// `Error::NoData` for fewer than two responses.
pub fn stability(sets: &[UnitSet], empty: f64) -> Result<Vec<f64>> {
    let others = at_least_two(sets)?;
    Ok((0..sets.len())
        .map(|m| {
            (0..sets.len())
                .filter(|&k| k != m)
                .map(|k| jaccard(&sets[m], &sets[k], empty))
                .sum::<f64>()
                / others
        })
        .collect())
}

/// How many sets of the group carry each unit of ∪U.
fn unit_counts(sets: &[UnitSet]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for unit in sets.iter().flatten() {
        *counts.entry(unit.as_str()).or_insert(0) += 1;
    }
    counts
}

/// §5.2's alternative stability, `1 − (1/|∪U|) Σ_u |1[u∈U_m] − f_{−m}(u)|` (`empty`, 1 in §5.2,
/// when ∪U = ∅).
///
/// # Errors
/// `Error::NoData` for fewer than two responses.
pub fn loo_agreement(sets: &[UnitSet], empty: f64) -> Result<Vec<f64>> {
    let others = at_least_two(sets)?;
    let counts = unit_counts(sets);
    if counts.is_empty() {
        return Ok(vec![empty; sets.len()]);
    }
    Ok(sets
        .iter()
        .map(|set| {
            let distance: f64 = counts
                .iter()
                .map(|(&unit, &count)| {
                    let here = f64::from(u8::from(set.contains(unit)));
                    let f_others = (count as f64 - here) / others;
                    (here - f_others).abs()
                })
                .sum();
            1.0 - distance / counts.len() as f64
        })
        .collect())
}

/// Ours: `H_stab(G ∖ m) − H_stab(G)` per response, in [−1, 1]; 0 for all when every response
/// carries the same unit set. A response without units has a positive share multiplied by `empty`
/// (1: the share as is; 0: naming nothing never earns stability).
///
/// # Errors
/// `Error::NoData` for fewer than two responses.
pub fn entropy_share(sets: &[UnitSet], empty: f64) -> Result<Vec<f64>> {
    let others = at_least_two(sets)?;
    let counts = unit_counts(sets);
    let whole = entropy_of_counts(counts.values().copied(), sets.len() as f64);
    Ok(sets
        .iter()
        .map(|set| {
            let without = counts
                .iter()
                .map(|(&unit, &count)| count - usize::from(set.contains(unit)));
            let share = entropy_of_counts(without, others) - whole;
            if set.is_empty() && share > 0.0 {
                share * empty
            } else {
                share
            }
        })
        .collect())
}

/// `h2(p) = −p log2 p − (1−p) log2(1−p)`, 0 at p ∈ {0, 1}.
fn binary_entropy(p: f64) -> f64 {
    if p <= 0.0 || p >= 1.0 {
        return 0.0;
    }
    -p * p.log2() - (1.0 - p) * (1.0 - p).log2()
}

/// H_stab, the group consistency entropy: 0 when every response carries the same unit set, up to 1.
///
/// # Errors
/// `Error::NoData` for an empty group.
pub fn consistency_entropy(sets: &[UnitSet]) -> Result<f64> {
    if sets.is_empty() {
        return Err(Error::NoData(
            "the consistency entropy of an empty group".into(),
        ));
    }
    Ok(entropy_of_counts(
        unit_counts(sets).into_values(),
        sets.len() as f64,
    ))
}

/// H_stab from each unit's response count among `g` responses; units counted 0 times are not in
/// the union. 0 for an empty union.
fn entropy_of_counts(counts: impl Iterator<Item = usize>, g: f64) -> f64 {
    let (total, units) = counts
        .filter(|&count| count > 0)
        .fold((0.0, 0usize), |(total, units), count| {
            (total + binary_entropy(count as f64 / g), units + 1)
        });
    if units == 0 {
        0.0
    } else {
        total / units as f64
    }
}

/// The share of a group's answers that name its most often named unit (0 when none names any).
///
/// A diagnostic beside [`consistency_entropy`]: h2 peaks at f = 1/2, so the entropy *rises* while
/// a common unit climbs from a minority of answers to a majority; this share shows that progress.
///
/// # Errors
/// `Error::NoData` for an empty group.
pub fn top_unit_share(sets: &[UnitSet]) -> Result<f64> {
    if sets.is_empty() {
        return Err(Error::NoData("the top unit share of an empty group".into()));
    }
    let top = unit_counts(sets).into_values().max().unwrap_or(0);
    Ok(top as f64 / sets.len() as f64)
}

/// Every response's §5.2 reward, with its parts and the group's entropy; `gates`, when given, holds
/// one quality gate in [0, 1] per response (a judge's or reward model's verdict), multiplying its
/// reward so that consistent-but-wrong answers earn nothing.
///
/// # Errors
/// `Error::Setting` for a bad configuration or a gate outside [0, 1]; `Error::Shape` for a gate count
/// that is not the response count; `Error::NoData` for fewer than two responses.
pub fn consistency_rewards(
    sets: &[UnitSet],
    config: &ConsistencyConfig,
    gates: Option<&[f64]>,
) -> Result<ConsistencyRewards> {
    config.validate()?;
    if let Some(gates) = gates {
        if gates.len() != sets.len() {
            return Err(Error::Shape(format!(
                "{} quality gates for {} responses",
                gates.len(),
                sets.len()
            )));
        }
        if let Some(g) = gates.iter().find(|g| !(0.0..=1.0).contains(*g)) {
            return Err(Error::Setting(format!("a quality gate {g} outside [0, 1]")));
        }
    }
    let stability = match config.stability {
        StabilityMeasure::Jaccard => stability(sets, config.empty_agreement)?,
        StabilityMeasure::LeaveOneOutAgreement => loo_agreement(sets, config.empty_agreement)?,
        StabilityMeasure::EntropyShare => entropy_share(sets, config.empty_agreement)?,
    };
    let unit_counts: Vec<usize> = sets.iter().map(UnitSet::len).collect();
    let helpfulness = unit_counts
        .iter()
        .map(|&n| helpfulness(n, config.n_max))
        .collect::<Result<Vec<f64>>>()?;
    let rewards = helpfulness
        .iter()
        .zip(&stability)
        .enumerate()
        .map(|(m, (h, s))| {
            let gate = gates.map_or(1.0, |g| g[m]);
            gate * (config.w_help * h + config.w_stab * s)
        })
        .collect();
    Ok(ConsistencyRewards {
        entropy: consistency_entropy(sets)?,
        unit_counts,
        helpfulness,
        stability,
        rewards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::consistency::UnitExtractor;
    use crate::learning::grpo::{group_advantages, AdvantageConfig};

    fn set(units: &[&str]) -> UnitSet {
        units.iter().map(|u| u.to_string()).collect()
    }

    /// §5.2 test vector: G = M = 3, n = 1, N_max = 7; U1 = {A,B,C}, U2 = {A,B}, U3 = {A,B,D}.
    fn section_5_2_sets() -> Vec<UnitSet> {
        vec![
            set(&["A", "B", "C"]),
            set(&["A", "B"]),
            set(&["A", "B", "D"]),
        ]
    }

    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-9, "{actual:?} vs {expected:?}");
        }
    }

    /// §5.2 test vector: f = (A 1, B 1, C 1/3, D 1/3) → H_stab = 0.4591479170 (consistency
    /// 1 − H = 0.5408520830); Jaccard J12 = 2/3, J13 = 1/2, J23 = 2/3 → Stab =
    /// [0.5833333333, 0.6666666667, 0.5833333333]; LOO agreement [0.625, 0.75, 0.625];
    /// Help = [0.6666666667, 0.5283208336, 0.6666666667]; R (0.3/0.7) =
    /// [0.6083333333, 0.6251629167, 0.6083333333]; TRL-style advantages of R =
    /// [−0.5714688810, 1.1429377619, −0.5714688810].
    #[test]
    fn the_section_5_2_vector_is_reproduced_exactly() {
        let sets = section_5_2_sets();
        let entropy = consistency_entropy(&sets).unwrap();
        assert!((entropy - 0.4591479170).abs() < 1e-9, "{entropy}");
        assert!((1.0 - entropy - 0.5408520830).abs() < 1e-9);
        assert!((jaccard(&sets[0], &sets[1], 1.0) - 2.0 / 3.0).abs() < 1e-15);
        assert!((jaccard(&sets[0], &sets[2], 1.0) - 0.5).abs() < 1e-15);
        assert!((jaccard(&sets[1], &sets[2], 1.0) - 2.0 / 3.0).abs() < 1e-15);
        assert_close(
            &stability(&sets, 1.0).unwrap(),
            &[0.5833333333, 0.6666666667, 0.5833333333],
        );
        assert_close(&loo_agreement(&sets, 1.0).unwrap(), &[0.625, 0.75, 0.625]);

        let r = consistency_rewards(&sets, &ConsistencyConfig::default(), None).unwrap();
        assert_eq!(r.unit_counts, vec![3, 2, 3]);
        assert_close(&r.helpfulness, &[0.6666666667, 0.5283208336, 0.6666666667]);
        assert_close(&r.stability, &[0.5833333333, 0.6666666667, 0.5833333333]);
        assert_close(&r.rewards, &[0.6083333333, 0.6251629167, 0.6083333333]);
        assert!((r.entropy - 0.4591479170).abs() < 1e-9);

        let advantages = group_advantages(&[r.rewards], &AdvantageConfig::default()).unwrap();
        let advantages = advantages[0].as_ref().unwrap();
        assert_close(advantages, &[-0.5714688810, 1.1429377619, -0.5714688810]);
    }

    /// The §5.2 vector again, from text through a unit table (A–D are four funds: alpha … delta).
    #[test]
    fn the_section_5_2_vector_from_responses_through_the_extractor() {
        let extractor = UnitExtractor::from_json(
            r#"{"items": [
                {"unit": "ALPHA", "aliases": ["Alpha Index Fund"]},
                {"unit": "BETA", "aliases": ["Beta Bond Fund"]},
                {"unit": "GAMMA", "aliases": ["Gamma Growth"]},
                {"unit": "DELTA", "aliases": ["Delta Dividend"]}]}"#,
        )
        .unwrap();
        let responses = [
            "I'd pick the alpha index fund, the Beta Bond Fund and Gamma-Growth.",
            "Go with ALPHA INDEX FUND plus the beta bond fund.",
            "Alpha Index Fund; Beta Bond Fund; and Delta Dividend!",
        ];
        let sets: Vec<UnitSet> = responses.iter().map(|y| extractor.extract(y)).collect();
        let expected = [
            set(&["alpha", "beta", "gamma"]),
            set(&["alpha", "beta"]),
            set(&["alpha", "beta", "delta"]),
        ];
        assert_eq!(sets, expected);
        let r = consistency_rewards(&sets, &ConsistencyConfig::default(), None).unwrap();
        assert_close(&r.rewards, &[0.6083333333, 0.6251629167, 0.6083333333]);
        assert!((r.entropy - 0.4591479170).abs() < 1e-9);
    }

    /// Ours: on §5.2's sets (H = 0.4591479170), leaving out U1 = {A,B,C} or U3 = {A,B,D} leaves a
    /// lone D or C at f = 1/2 among A, B, D (H = 1/3), and leaving out U2 = {A,B} leaves C and D at
    /// f = 1/2 among four units (H = 1/2): shares [−0.1258145837, 0.0408520830, −0.1258145837], so
    /// the consensus core ranks first. Beside nine answers naming {A}, an answer naming {A, B} (a
    /// stray) or nothing gets a negative share and each of the nine a positive one.
    #[test]
    fn the_entropy_share_prices_strays_and_omissions_as_the_entropy_does() {
        let sets = section_5_2_sets();
        let share = entropy_share(&sets, 1.0).unwrap();
        assert_close(&share, &[-0.1258145837, 0.0408520830, -0.1258145837]);
        let config = ConsistencyConfig {
            stability: StabilityMeasure::EntropyShare,
            ..ConsistencyConfig::default()
        };
        let r = consistency_rewards(&sets, &config, None).unwrap();
        assert_eq!(r.stability, share);
        assert_eq!(StabilityMeasure::EntropyShare.name(), "entropy");

        let h2 = |p: f64| -p * p.log2() - (1.0 - p) * (1.0 - p).log2();
        // Nine answers name {A}, the tenth {A, B}: H = h2(0.1)/2. Without the stray, H = 0;
        // without one of the nine, A stays at 9/9 and B is at 1/9: H = h2(1/9)/2.
        let mut stray = vec![set(&["alpha"]); 9];
        stray.push(set(&["alpha", "beta"]));
        let share = entropy_share(&stray, 1.0).unwrap();
        let whole = h2(0.1) / 2.0;
        assert!((share[9] + whole).abs() < 1e-12, "{share:?}");
        for s in &share[..9] {
            assert!(
                (s - (h2(1.0 / 9.0) / 2.0 - whole)).abs() < 1e-12,
                "{share:?}"
            );
            assert!(*s > 0.0);
        }
        // Nine answers name {A}, the tenth nothing: H = h2(0.9). Without the empty answer, H = 0;
        // without one of the nine, A is at 8/9: H = h2(8/9).
        let mut omission = vec![set(&["alpha"]); 9];
        omission.push(UnitSet::default());
        let share = entropy_share(&omission, 1.0).unwrap();
        assert!((share[9] + h2(0.9)).abs() < 1e-12, "{share:?}");
        for s in &share[..9] {
            assert!((s - (h2(8.0 / 9.0) - h2(0.9))).abs() < 1e-12, "{share:?}");
            assert!(*s > 0.0);
        }
        assert_eq!(
            entropy_share(&[set(&["alpha"]), set(&["alpha"])], 1.0).unwrap(),
            vec![0.0, 0.0]
        );
        assert!(matches!(
            entropy_share(&[set(&["alpha"])], 1.0),
            Err(Error::NoData(_))
        ));
    }

    /// Ours: the LOO stability with the default weights gives 0.3·Help + 0.7·[0.625, 0.75, 0.625];
    /// gates [1, 0.5, 0] scale each reward; other weights recombine the same parts.
    #[test]
    fn weights_gates_and_the_alternative_stability_recombine_the_parts() {
        let sets = section_5_2_sets();
        let help = [2.0 / 3.0, 3f64.log2() / 3.0, 2.0 / 3.0];
        let loo = ConsistencyConfig {
            stability: StabilityMeasure::LeaveOneOutAgreement,
            ..ConsistencyConfig::default()
        };
        let r = consistency_rewards(&sets, &loo, None).unwrap();
        let expected: Vec<f64> = help
            .iter()
            .zip([0.625, 0.75, 0.625])
            .map(|(h, s)| 0.3 * h + 0.7 * s)
            .collect();
        assert_close(&r.rewards, &expected);

        let plain = consistency_rewards(&sets, &ConsistencyConfig::default(), None).unwrap();
        let gated =
            consistency_rewards(&sets, &ConsistencyConfig::default(), Some(&[1.0, 0.5, 0.0]))
                .unwrap();
        assert_close(
            &gated.rewards,
            &[plain.rewards[0], 0.5 * plain.rewards[1], 0.0],
        );
        assert_eq!(gated.helpfulness, plain.helpfulness);

        let help_only = ConsistencyConfig {
            w_help: 1.0,
            w_stab: 0.0,
            ..ConsistencyConfig::default()
        };
        assert_close(
            &consistency_rewards(&sets, &help_only, None)
                .unwrap()
                .rewards,
            &help,
        );
    }

    #[test]
    fn identical_or_empty_sets_have_zero_entropy_and_full_stability() {
        let same = vec![set(&["a", "b"]); 4];
        assert_eq!(consistency_entropy(&same).unwrap(), 0.0);
        assert_eq!(stability(&same, 0.0).unwrap(), vec![1.0; 4]);
        assert_eq!(loo_agreement(&same, 0.0).unwrap(), vec![1.0; 4]);
        let empty = vec![UnitSet::new(); 3];
        assert_eq!(consistency_entropy(&empty).unwrap(), 0.0);
        assert_eq!(stability(&empty, 1.0).unwrap(), vec![1.0; 3]);
        assert_eq!(loo_agreement(&empty, 1.0).unwrap(), vec![1.0; 3]);
        // Disjoint singletons: f = 1/2 for both units, h2 = 1, the maximum.
        let disjoint = vec![set(&["a"]), set(&["b"])];
        assert_eq!(consistency_entropy(&disjoint).unwrap(), 1.0);
        assert_eq!(stability(&disjoint, 1.0).unwrap(), vec![0.0, 0.0]);
        assert_eq!(jaccard(&set(&["a"]), &UnitSet::new(), 1.0), 0.0);
    }

    /// The entropy's path is not monotone in agreement: a common unit named by 2 of 4 answers
    /// gives more entropy than by 1 of 4, while the top share says agreement grew.
    #[test]
    fn the_top_unit_share_tracks_agreement_where_the_entropy_peaks() {
        let one = vec![set(&["a"]), UnitSet::new(), UnitSet::new(), UnitSet::new()];
        let two = vec![set(&["a"]), set(&["a"]), UnitSet::new(), UnitSet::new()];
        let all = vec![set(&["a", "b"]), set(&["a"]), set(&["a"]), set(&["a"])];
        assert!(consistency_entropy(&two).unwrap() > consistency_entropy(&one).unwrap());
        assert_eq!(top_unit_share(&one).unwrap(), 0.25);
        assert_eq!(top_unit_share(&two).unwrap(), 0.5);
        assert_eq!(top_unit_share(&all).unwrap(), 1.0);
        assert_eq!(
            top_unit_share(&[UnitSet::new(), UnitSet::new()]).unwrap(),
            0.0
        );
        assert!(top_unit_share(&[]).is_err());
    }

    /// With `empty_agreement` 0, answers that name nothing earn nothing for agreeing with each
    /// other: in {a}, {a}, ∅, ∅ the two that share an item rank first, where §5.2's default ranks
    /// all four equal on stability.
    #[test]
    fn empty_agreement_zero_rewards_only_shared_items() {
        let sets = vec![set(&["a"]), set(&["a"]), UnitSet::new(), UnitSet::new()];
        let default = consistency_rewards(&sets, &ConsistencyConfig::default(), None).unwrap();
        assert_close(&default.stability, &[1.0 / 3.0; 4]);
        let strict = ConsistencyConfig {
            empty_agreement: 0.0,
            ..ConsistencyConfig::default()
        };
        let r = consistency_rewards(&sets, &strict, None).unwrap();
        assert_close(&r.stability, &[1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);
        assert_close(&r.rewards[2..], &[0.0, 0.0]);
        assert!(r.rewards[0] > r.rewards[2]);
        let loo = ConsistencyConfig {
            stability: StabilityMeasure::LeaveOneOutAgreement,
            ..strict
        };
        let all_empty = vec![UnitSet::new(); 3];
        assert_eq!(
            consistency_rewards(&all_empty, &loo, None).unwrap().rewards,
            vec![0.0; 3]
        );
        // The entropy, a diagnostic, does not depend on it.
        assert_eq!(r.entropy, default.entropy);
    }

    /// In a group where two answers name {A} and eight name nothing, each silent answer lowers the
    /// entropy by siding with the majority (share h2(2/9) − h2(1/5) > 0). With `empty_agreement` 0
    /// that share is withheld, while an empty answer beside nine that name {A} keeps its whole
    /// negative share: silence is never paid, and omission is still charged.
    #[test]
    fn empty_agreement_zero_withholds_the_entropy_share_of_silence_only() {
        let h2 = |p: f64| -p * p.log2() - (1.0 - p) * (1.0 - p).log2();
        let mut quiet = vec![set(&["alpha"]); 2];
        quiet.extend(vec![UnitSet::new(); 8]);
        let whole = entropy_share(&quiet, 1.0).unwrap();
        let strict = entropy_share(&quiet, 0.0).unwrap();
        for s in [&whole, &strict] {
            assert!((s[0] - (h2(1.0 / 9.0) - h2(0.2))).abs() < 1e-12, "{s:?}");
            assert_eq!(s[0], s[1]);
        }
        assert!((whole[2] - (h2(2.0 / 9.0) - h2(0.2))).abs() < 1e-12);
        assert!(whole[2] > 0.0);
        assert_eq!(strict[2..], [0.0; 8]);
        let half = entropy_share(&quiet, 0.5).unwrap();
        assert!((half[2] - whole[2] / 2.0).abs() < 1e-15);

        let mut omission = vec![set(&["alpha"]); 9];
        omission.push(UnitSet::new());
        assert_eq!(
            entropy_share(&omission, 0.0).unwrap(),
            entropy_share(&omission, 1.0).unwrap()
        );

        let config = ConsistencyConfig {
            stability: StabilityMeasure::EntropyShare,
            empty_agreement: 0.0,
            n_max: 1,
            ..ConsistencyConfig::default()
        };
        let r = consistency_rewards(&quiet, &config, None).unwrap();
        assert_eq!(r.stability, strict);
        assert_eq!(r.rewards[2..], [0.0; 8]);
        assert!(r.rewards[0] > r.rewards[2], "{:?}", r.rewards);
    }

    #[test]
    fn helpfulness_saturates_at_n_max() {
        assert_eq!(helpfulness(0, 7).unwrap(), 0.0);
        assert_eq!(helpfulness(7, 7).unwrap(), 1.0);
        assert_eq!(helpfulness(20, 7).unwrap(), 1.0);
        assert!(matches!(helpfulness(1, 0), Err(Error::Setting(_))));
    }

    #[test]
    fn bad_groups_gates_and_settings_are_refused() {
        let sets = section_5_2_sets();
        let config = ConsistencyConfig::default();
        assert!(matches!(
            consistency_rewards(&sets[..1], &config, None),
            Err(Error::NoData(_))
        ));
        assert!(matches!(consistency_entropy(&[]), Err(Error::NoData(_))));
        assert!(matches!(
            consistency_rewards(&sets, &config, Some(&[1.0, 1.0])),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            consistency_rewards(&sets, &config, Some(&[1.0, 1.2, 0.0])),
            Err(Error::Setting(_))
        ));
        for bad in [
            ConsistencyConfig {
                w_help: -0.1,
                ..config
            },
            ConsistencyConfig {
                w_stab: f64::INFINITY,
                ..config
            },
            ConsistencyConfig { n_max: 0, ..config },
            ConsistencyConfig {
                empty_agreement: 1.5,
                ..config
            },
        ] {
            assert!(matches!(
                consistency_rewards(&sets, &bad, None),
                Err(Error::Setting(_))
            ));
        }
    }
}
