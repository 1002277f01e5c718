//! Outcome advantages from scalar rewards (`research/algorithms.md` §4.1): one value per response,
//! shared by every token of it.
//!
//! `Â_i = (r_i − b_i) / s`, with
//! - the baseline `b_i`: the group mean (GRPO) or the mean of the group's *other* rewards (RLOO);
//! - the scale `s` ([`ScaleRewards`]): the group's std + ε (`group`, TRL's default), the std of every
//!   reward in the batch + ε (`batch`; the centring stays per group), or 1 (`none`, Dr. GRPO);
//! - the std Bessel-corrected (TRL, `nanstd`) or the population std ([`RewardStd`]); DeepSeekMath
//!   does not say which (§9.7).
//!
//! A group whose rewards are all equal carries no signal: its advantages are exactly 0 (not
//! `0 / 0`, and not the rounding noise of `r − mean`, which need not be exactly 0 in floating point).
//! With [`AdvantageConfig::drop_zero_variance`] it is dropped altogether, DAPO's dynamic sampling
//! (§4.2: keep only groups with 0 < #correct < G): its responses then leave the batch, so they add
//! neither tokens to the loss normalisers nor a KL term.

use crate::{Error, Result};

/// What each reward is centred on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Baseline {
    /// The group mean, `mean(r)` (GRPO, §4.1).
    #[default]
    Mean,
    /// The mean of the other G − 1 rewards of the group, `(Σ_{k≠i} r_k) / (G − 1)`: the REINFORCE
    /// leave-one-out baseline (RLOO; Kool et al. 2019, Ahmadian et al. 2024). It equals
    /// `G/(G−1) · (r_i − mean(r))`, so it differs from [`Baseline::Mean`] by a per-group factor only.
    /// RLOO proper uses it with [`ScaleRewards::None`] ([`AdvantageConfig::rloo`]). Not in
    /// `research/algorithms.md`; issue 12 asks for it.
    LeaveOneOut,
}

/// The divisor of the centred rewards (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleRewards {
    /// The group's own std + ε (TRL `"group"`, the default).
    #[default]
    Group,
    /// One std over every reward of the (kept) groups of the batch, + ε (TRL `"batch"`); rewards are
    /// still centred on their own group's baseline.
    Batch,
    /// No scaling, `Â = r − b` (TRL `"none"`, Dr. GRPO).
    None,
}

impl ScaleRewards {
    /// TRL's name: `group`, `batch` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Batch => "batch",
            Self::None => "none",
        }
    }
}

/// Which standard deviation scales the rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RewardStd {
    /// Bessel-corrected, `√(Σ(r − mean)² / (n − 1))` (TRL).
    #[default]
    Sample,
    /// `√(Σ(r − mean)² / n)`.
    Population,
}

/// How rewards become advantages; `Default` is TRL's: group mean, group sample std + 1e-4,
/// zero-variance groups kept (with advantage 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdvantageConfig {
    pub baseline: Baseline,
    pub scale_rewards: ScaleRewards,
    pub std: RewardStd,
    /// Added to the std before dividing (TRL: 1e-4); ≥ 0. Unused with [`ScaleRewards::None`].
    pub epsilon: f64,
    /// Drop groups whose rewards are all equal (DAPO dynamic sampling) instead of keeping them with
    /// advantage 0.
    pub drop_zero_variance: bool,
}

impl Default for AdvantageConfig {
    fn default() -> Self {
        Self {
            baseline: Baseline::Mean,
            scale_rewards: ScaleRewards::Group,
            std: RewardStd::Sample,
            epsilon: 1e-4,
            drop_zero_variance: false,
        }
    }
}

impl AdvantageConfig {
    /// DAPO (§4.2): TRL's group normalisation, zero-variance groups dropped.
    pub fn dapo() -> Self {
        Self {
            drop_zero_variance: true,
            ..Self::default()
        }
    }

    /// Dr. GRPO (§4.1, §4.2): `Â = r − mean(r)`, no std.
    pub fn dr_grpo() -> Self {
        Self {
            scale_rewards: ScaleRewards::None,
            ..Self::default()
        }
    }

    /// RLOO: `Â = r_i − mean of the others`, no std.
    pub fn rloo() -> Self {
        Self {
            baseline: Baseline::LeaveOneOut,
            scale_rewards: ScaleRewards::None,
            ..Self::default()
        }
    }

    /// # Errors
    /// `Error::Setting` for a negative or non-finite ε.
    pub fn validate(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(Error::Setting(format!(
                "the advantage ε must be finite and ≥ 0, got {}",
                self.epsilon
            )));
        }
        Ok(())
    }
}

/// Whether a group's rewards are all equal (also true for one reward or none): such a group has no
/// signal, DAPO drops it.
pub fn is_zero_variance(rewards: &[f64]) -> bool {
    rewards.windows(2).all(|w| w[0] == w[1])
}

/// Advantages of each group's responses, in the groups' order: `Some` with one value per reward, or
/// `None` for a group dropped as zero-variance.
///
/// # Errors
/// `Error::Shape` for an empty group or a non-finite reward; `Error::Setting` for a bad ε.
pub fn group_advantages(
    groups: &[Vec<f64>],
    config: &AdvantageConfig,
) -> Result<Vec<Option<Vec<f64>>>> {
    config.validate()?;
    for (g, rewards) in groups.iter().enumerate() {
        if rewards.is_empty() {
            return Err(Error::Shape(format!("group {g} has no rewards")));
        }
        if let Some(r) = rewards.iter().find(|r| !r.is_finite()) {
            return Err(Error::Shape(format!(
                "group {g} has a non-finite reward {r}"
            )));
        }
    }
    let kept = |rewards: &Vec<f64>| !(config.drop_zero_variance && is_zero_variance(rewards));
    let batch: Vec<f64> = groups
        .iter()
        .filter(|r| kept(r))
        .flatten()
        .copied()
        .collect();
    let batch_scale = std_dev(&batch, config.std) + config.epsilon;
    Ok(groups
        .iter()
        .map(|rewards| {
            if !kept(rewards) {
                return None;
            }
            if is_zero_variance(rewards) {
                return Some(vec![0.0; rewards.len()]);
            }
            let scale = match config.scale_rewards {
                ScaleRewards::Group => std_dev(rewards, config.std) + config.epsilon,
                ScaleRewards::Batch => batch_scale,
                ScaleRewards::None => 1.0,
            };
            // Only an underflowing spread (deviations below ~1e-154) with ε = 0 gets here.
            if scale == 0.0 {
                return Some(vec![0.0; rewards.len()]);
            }
            Some(
                centred(rewards, config.baseline)
                    .into_iter()
                    .map(|c| c / scale)
                    .collect(),
            )
        })
        .collect())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// 0 for fewer than two values or all-equal values.
fn std_dev(values: &[f64], kind: RewardStd) -> f64 {
    if is_zero_variance(values) {
        return 0.0;
    }
    let m = mean(values);
    let squares: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    let n = values.len() as f64;
    match kind {
        RewardStd::Sample => (squares / (n - 1.0)).sqrt(),
        RewardStd::Population => (squares / n).sqrt(),
    }
}

/// `r_i − b_i`; the caller guarantees at least two rewards (a one-reward group is zero-variance).
fn centred(rewards: &[f64], baseline: Baseline) -> Vec<f64> {
    let g = rewards.len() as f64;
    let total: f64 = rewards.iter().sum();
    rewards
        .iter()
        .map(|&r| match baseline {
            Baseline::Mean => r - total / g,
            Baseline::LeaveOneOut => r - (total - r) / (g - 1.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_group(rewards: &[f64], config: &AdvantageConfig) -> Vec<f64> {
        group_advantages(&[rewards.to_vec()], config).unwrap()[0]
            .clone()
            .expect("kept")
    }

    fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < tolerance, "{actual:?} vs {expected:?}");
        }
    }

    fn population_no_eps() -> AdvantageConfig {
        AdvantageConfig {
            std: RewardStd::Population,
            epsilon: 0.0,
            ..AdvantageConfig::default()
        }
    }

    /// §4.3, advantages table, row r = [1,0,0,1]: TRL `group` (sample std + 1e-4)
    /// [0.8658754298, −0.8658754298, −0.8658754298, 0.8658754298]; population std, no ε [1,−1,−1,1];
    /// `none` (Dr. GRPO) [0.5,−0.5,−0.5,0.5].
    #[test]
    fn rewards_1_0_0_1_give_0_8658754298_under_trl_group_1_under_population_and_0_5_unscaled() {
        let r = [1.0, 0.0, 0.0, 1.0];
        let a = 0.8658754298;
        let trl = one_group(&r, &AdvantageConfig::default());
        assert_close(&trl, &[a, -a, -a, a], 1e-9);
        assert_close(
            &one_group(&r, &population_no_eps()),
            &[1.0, -1.0, -1.0, 1.0],
            1e-12,
        );
        let none = one_group(&r, &AdvantageConfig::dr_grpo());
        assert_close(&none, &[0.5, -0.5, -0.5, 0.5], 1e-12);
    }

    /// §4.3, advantages table, row r = [0.2,0.4,0.9,0.5]: TRL `group`
    /// [−1.0187033, −0.3395678, 1.3582711, 0]; population std, no ε
    /// [−1.1766968, −0.3922323, 1.5689291, 0]; `none` [−0.3, −0.1, 0.4, 0] (7 decimals in the table).
    #[test]
    fn rewards_0_2_0_4_0_9_0_5_match_the_three_columns_of_section_4_3() {
        let r = [0.2, 0.4, 0.9, 0.5];
        let trl = one_group(&r, &AdvantageConfig::default());
        assert_close(&trl, &[-1.0187033, -0.3395678, 1.3582711, 0.0], 5e-8);
        let population = one_group(&r, &population_no_eps());
        assert_close(&population, &[-1.1766968, -0.3922323, 1.5689291, 0.0], 5e-8);
        let none = one_group(&r, &AdvantageConfig::dr_grpo());
        assert_close(&none, &[-0.3, -0.1, 0.4, 0.0], 1e-12);
    }

    /// §4.3, advantages table, row r = [1,1,1,1]: [0,0,0,0] in every column ("std = 0, group carries
    /// no signal; DAPO drops it"); dropped under [`AdvantageConfig::dapo`].
    #[test]
    fn an_all_equal_group_has_zero_advantages_in_every_column_and_dapo_drops_it() {
        let r = [1.0, 1.0, 1.0, 1.0];
        for config in [
            AdvantageConfig::default(),
            population_no_eps(),
            AdvantageConfig::dr_grpo(),
            AdvantageConfig::rloo(),
        ] {
            assert_eq!(one_group(&r, &config), vec![0.0; 4], "{config:?}");
        }
        // Exactly 0 even where `r − mean` is not (mean of three 0.1s is 0.10000000000000002).
        assert_eq!(one_group(&[0.1; 3], &population_no_eps()), vec![0.0; 3]);
        let groups = vec![r.to_vec(), vec![1.0, 0.0, 0.0, 1.0]];
        let kept = group_advantages(&groups, &AdvantageConfig::dapo()).unwrap();
        assert_eq!(kept[0], None);
        assert_close(
            kept[1].as_ref().unwrap(),
            &[0.8658754298, -0.8658754298, -0.8658754298, 0.8658754298],
            1e-9,
        );
        // One response alone is a zero-variance group too.
        let single = group_advantages(&[vec![0.7]], &AdvantageConfig::dapo()).unwrap();
        assert_eq!(single, vec![None]);
    }

    /// Ours (no §4.3 vector): RLOO, `r_i − mean of the others` = `G/(G−1)·(r_i − mean)`:
    /// [1,0,0,1] → ±2/3; [0.2,0.4,0.9,0.5] → [−0.4, −0.1333…, 0.5333…, 0].
    #[test]
    fn leave_one_out_baseline_is_g_over_g_minus_1_times_the_mean_centred_reward() {
        let third = 1.0 / 3.0;
        let a = one_group(&[1.0, 0.0, 0.0, 1.0], &AdvantageConfig::rloo());
        assert_close(
            &a,
            &[2.0 * third, -2.0 * third, -2.0 * third, 2.0 * third],
            1e-12,
        );
        let a = one_group(&[0.2, 0.4, 0.9, 0.5], &AdvantageConfig::rloo());
        assert_close(&a, &[-0.4, -0.4 * third, 1.6 * third, 0.0], 1e-12);
    }

    /// Ours (no §4.3 vector): `batch` centres on each group's mean and divides by the sample std of all
    /// eight rewards (0.4242640687, from `[1,0,0,1] ∪ [0.2,0.4,0.9,0.5]`, mean 0.5) + 1e-4.
    #[test]
    fn batch_scaling_centres_per_group_and_divides_by_the_std_of_the_whole_batch() {
        let groups = vec![vec![1.0, 0.0, 0.0, 1.0], vec![0.2, 0.4, 0.9, 0.5]];
        let config = AdvantageConfig {
            scale_rewards: ScaleRewards::Batch,
            ..AdvantageConfig::default()
        };
        let std = (1.26f64 / 7.0).sqrt();
        assert!((std - 0.4242640687).abs() < 1e-9);
        let s = std + 1e-4;
        let a = group_advantages(&groups, &config).unwrap();
        assert_close(
            a[0].as_ref().unwrap(),
            &[0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s],
            1e-12,
        );
        assert_close(
            a[1].as_ref().unwrap(),
            &[-0.3 / s, -0.1 / s, 0.4 / s, 0.0],
            1e-12,
        );
    }

    #[test]
    fn empty_groups_non_finite_rewards_and_negative_epsilon_are_refused() {
        let config = AdvantageConfig::default();
        assert!(matches!(
            group_advantages(&[vec![]], &config),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            group_advantages(&[vec![1.0, f64::NAN]], &config),
            Err(Error::Shape(_))
        ));
        let bad = AdvantageConfig {
            epsilon: -1.0,
            ..config
        };
        assert!(matches!(
            group_advantages(&[vec![1.0, 0.0]], &bad),
            Err(Error::Setting(_))
        ));
    }
}
