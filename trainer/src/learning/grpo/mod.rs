//! GRPO and its DAPO / Dr. GRPO / RLOO variants, exactly as `research/algorithms.md` §4 has them:
//! groups of G responses to one prompt with scalar rewards → per-response advantages → a clipped,
//! token-level policy-gradient loss against the behaviour policy, with an optional k3 KL to π_ref.
//!
//! Unlike the pairwise [`Objective`](super::Objective)s, which see one summed log-prob per response,
//! GRPO is per token, so it is its own type ([`Grpo`]) over a flat `[tokens]` tensor of log π_θ, laid
//! out sequence after sequence as the trainer's packs lay out response tokens ([`TokenBatch`]).
//!
//! - `advantages`: rewards → `Â_i` ([`group_advantages`]; `scale_rewards` group / batch / none, the
//!   mean or leave-one-out baseline, zero-variance groups kept at 0 or dropped).
//! - `surrogate`: the per-token ratio to the behaviour log-probs, the clipped surrogate with
//!   clip-higher (ε_low, ε_high), and the k3 KL.
//! - `aggregation`: per-token losses → the scalar ([`Aggregation`]: `grpo`, `bnpo`, `dapo`,
//!   `dr_grpo`).
//!
//! The per-token loss is `ℓ_{i,t} = −min(ρ·Â_i, clip(ρ, 1−ε_low, 1+ε_high)·Â_i) + β·KL_{i,t}`, with
//! `ρ = π_θ/π_behaviour` of the token from the behaviour policy's stored log-probs (π_old: the adapter
//! version that sampled the response) and `KL = exp(x) − x − 1`, `x = log π_ref − log π_θ`.

mod advantages;
mod aggregation;
mod surrogate;

use candle_core::{DType, Tensor};

pub use advantages::{
    group_advantages, is_zero_variance, AdvantageConfig, Baseline, RewardStd, ScaleRewards,
};
pub use aggregation::Aggregation;
use surrogate::{clipped_surrogate, k3_kl, ratio};

use crate::{Error, Result};

/// The fixed inputs of a GRPO batch: `n` sequences whose response tokens lie end to end, as in the
/// policy's `[tokens]` log-prob tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Response tokens per sequence, each ≥ 1.
    pub lengths: Vec<usize>,
    /// `Â_i` per sequence ([`group_advantages`] of its group, or any other advantage).
    pub advantages: Vec<f64>,
    /// `log π_behaviour` per token: the stored log-probs of the policy version that sampled the
    /// response.
    pub behaviour: Vec<f64>,
    /// `log π_ref` per token; needed only when β > 0 ([`Grpo::needs_reference`]).
    pub reference: Option<Vec<f64>>,
    /// `dapo`'s normaliser: the active tokens of the whole optimiser step, all accumulated
    /// micro-batches together; `None` means this batch's own count. Ignored by the other
    /// aggregations.
    pub step_tokens: Option<usize>,
}

impl TokenBatch {
    /// Σ lengths.
    pub fn tokens(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Each token's sequence advantage.
    fn token_advantages(&self) -> Vec<f64> {
        self.lengths
            .iter()
            .zip(&self.advantages)
            .flat_map(|(&n, &a)| std::iter::repeat_n(a, n))
            .collect()
    }

    fn check(&self, policy: &Tensor, needs_reference: bool) -> Result<()> {
        let n = self.lengths.len();
        let tokens = self.tokens();
        if self.advantages.len() != n {
            return Err(Error::Shape(format!(
                "{} advantages for {n} sequences",
                self.advantages.len()
            )));
        }
        if policy.dims() != [tokens] {
            return Err(Error::Shape(format!(
                "policy log-probs are {:?}, expected [{tokens}]",
                policy.dims()
            )));
        }
        let per_token = |values: &[f64], what: &str| -> Result<()> {
            if values.len() != tokens {
                return Err(Error::Shape(format!(
                    "{} {what} log-probs for {tokens} tokens",
                    values.len()
                )));
            }
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::Shape(format!("a non-finite {what} log-prob {v}")));
            }
            Ok(())
        };
        per_token(&self.behaviour, "behaviour")?;
        match &self.reference {
            Some(reference) => per_token(reference, "reference")?,
            None if needs_reference => {
                return Err(Error::Shape(
                    "reference log-probs missing from the batch (β > 0)".into(),
                ))
            }
            None => {}
        }
        if let Some(a) = self.advantages.iter().find(|a| !a.is_finite()) {
            return Err(Error::Shape(format!("a non-finite advantage {a}")));
        }
        Ok(())
    }
}

/// Diagnostics of a batch at the current policy, from values only (no graph).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoStats {
    pub tokens: usize,
    /// Fraction of tokens whose term is clipped at 1 − ε_low (Â < 0, ρ < 1 − ε_low).
    pub clipped_low: f64,
    /// Fraction of tokens whose term is clipped at 1 + ε_high (Â > 0, ρ > 1 + ε_high).
    pub clipped_high: f64,
    /// Token mean of the k3 KL to π_ref, when the batch has reference log-probs.
    pub mean_kl: Option<f64>,
    /// max |log π_θ − log π_behaviour|: at the first update of freshly sampled data (μ = 1) it should
    /// be ~0, and a large value means the stored log-probs do not come from this policy (§0.2).
    pub max_abs_log_ratio: f64,
    /// Token mean of `ρ − 1 − log ρ`, ρ = π_θ / π_behaviour: the k3 estimate of KL(π_behaviour ‖ π_θ)
    /// on the behaviour policy's own samples (PPO implementations' `approx_kl`); 0 at μ = 1.
    pub behaviour_kl: f64,
}

/// The GRPO family, with `Default` = TRL's `GRPOConfig` (§4.2): β = 0, ε_low = ε_high = 0.2,
/// `loss_type = dapo`, `scale_rewards = group` with sample std + 1e-4, zero-variance groups kept.
/// [`Grpo::deepseek_math`], [`Grpo::dapo`] and [`Grpo::dr_grpo`] are the papers' settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grpo {
    /// Rewards → advantages, applied by [`Grpo::advantages`] before the loss.
    pub advantages: AdvantageConfig,
    /// Lower clip, `ρ ≥ 1 − ε_low`; in [0, 1].
    pub epsilon_low: f64,
    /// Upper clip, `ρ ≤ 1 + ε_high`; ≥ 0 (ε_high > ε_low is DAPO's clip-higher).
    pub epsilon_high: f64,
    /// k3 KL coefficient, ≥ 0; 0 drops the term and the need for reference log-probs.
    pub beta: f64,
    /// Above this `x = log π_ref − log π_θ` the k3 term goes on as its tangent, bounding one token's
    /// pull at `e^x − 1` (> 0; `f64::INFINITY`, the papers' and TRL's setting, is the exact k3).
    pub kl_linear_above: f64,
    pub aggregation: Aggregation,
}

impl Default for Grpo {
    fn default() -> Self {
        Self {
            advantages: AdvantageConfig::default(),
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.0,
            kl_linear_above: f64::INFINITY,
            aggregation: Aggregation::Dapo,
        }
    }
}

impl Grpo {
    /// DeepSeekMath §4.2: β = 0.04, ε = 0.2 (conventional; the paper states none), the `grpo`
    /// aggregation (eq. 3), group-normalised advantages. (Its G = 64 and lr 1e-6 are sampling and
    /// optimiser settings, not the loss's.)
    pub fn deepseek_math() -> Self {
        Self {
            beta: 0.04,
            aggregation: Aggregation::Grpo,
            ..Self::default()
        }
    }

    /// DAPO §4.2: clip-higher (0.2, 0.28), zero-variance groups dropped, token-level `dapo`
    /// aggregation, no KL. (Overlong reward shaping belongs to the reward, not here.)
    pub fn dapo() -> Self {
        Self {
            advantages: AdvantageConfig::dapo(),
            epsilon_high: 0.28,
            ..Self::default()
        }
    }

    /// Dr. GRPO §4.1–4.2: no std scaling (`Â = r − mean`) and the `dr_grpo` aggregation over the
    /// generation cap `max_completion_length`; β and ε as TRL's defaults (0, 0.2).
    pub fn dr_grpo(max_completion_length: usize) -> Self {
        Self {
            advantages: AdvantageConfig::dr_grpo(),
            aggregation: Aggregation::DrGrpo {
                max_completion_length,
            },
            ..Self::default()
        }
    }

    /// Short name, as stored with a train run.
    pub fn name(&self) -> &'static str {
        "grpo"
    }

    /// Whether [`TokenBatch::reference`] must be filled (β > 0).
    pub fn needs_reference(&self) -> bool {
        self.beta > 0.0
    }

    /// # Errors
    /// `Error::Setting` for ε_low outside [0, 1], a negative ε_high or β, a KL cap that is not
    /// above 0, or a bad advantage setting.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |what: &str, v: f64| Err(Error::Setting(format!("GRPO {what} = {v} is out of range")));
        if !(self.epsilon_low.is_finite() && (0.0..=1.0).contains(&self.epsilon_low)) {
            return bad("ε_low", self.epsilon_low);
        }
        if !(self.epsilon_high.is_finite() && self.epsilon_high >= 0.0) {
            return bad("ε_high", self.epsilon_high);
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return bad("β", self.beta);
        }
        if self.kl_linear_above.is_nan() || self.kl_linear_above <= 0.0 {
            return bad("KL linear-above cap", self.kl_linear_above);
        }
        self.advantages.validate()
    }

    /// [`group_advantages`] with this configuration.
    ///
    /// # Errors
    /// As [`group_advantages`].
    pub fn advantages(&self, groups: &[Vec<f64>]) -> Result<Vec<Option<Vec<f64>>>> {
        group_advantages(groups, &self.advantages)
    }

    /// The per-token losses `ℓ_{i,t}` `[tokens]`, in the dtype and on the device of `policy`.
    ///
    /// # Errors
    /// `Error::Setting` for out-of-range hyperparameters; `Error::Shape` for inputs that do not fit
    /// together or a missing reference with β > 0.
    pub fn token_losses(&self, policy: &Tensor, batch: &TokenBatch) -> Result<Tensor> {
        self.validate()?;
        batch.check(policy, self.needs_reference())?;
        let fixed = |values: &[f64]| -> Result<Tensor> {
            Ok(Tensor::new(values, policy.device())?.to_dtype(policy.dtype())?)
        };
        let rho = ratio(policy, &fixed(&batch.behaviour)?)?;
        let advantages = fixed(&batch.token_advantages())?;
        let pg = clipped_surrogate(&rho, &advantages, self.epsilon_low, self.epsilon_high)?;
        match (&batch.reference, self.needs_reference()) {
            (Some(reference), true) => {
                let kl = k3_kl(policy, &fixed(reference)?, self.kl_linear_above)?;
                Ok((pg + (kl * self.beta)?)?)
            }
            _ => Ok(pg),
        }
    }

    /// The loss, a scalar: [`Grpo::token_losses`] aggregated by [`Grpo::aggregation`];
    /// differentiable in `policy`, log π_θ per token, `[tokens]` (any float dtype, any device).
    ///
    /// # Errors
    /// As [`Grpo::token_losses`], and the aggregation's (`dr_grpo` sequence over its cap, `dapo` step
    /// count below the batch's).
    pub fn loss(&self, policy: &Tensor, batch: &TokenBatch) -> Result<Tensor> {
        let per_token = self.token_losses(policy, batch)?;
        self.aggregation
            .aggregate(&per_token, &batch.lengths, batch.step_tokens)
    }

    /// Clip fractions, KL and ratio spread of the batch at `policy`'s values.
    ///
    /// # Errors
    /// As [`Grpo::token_losses`].
    pub fn stats(&self, policy: &Tensor, batch: &TokenBatch) -> Result<GrpoStats> {
        self.validate()?;
        batch.check(policy, self.needs_reference())?;
        let theta: Vec<f64> = policy.detach().to_dtype(DType::F64)?.to_vec1()?;
        let advantages = batch.token_advantages();
        let tokens = theta.len();
        let (mut low, mut high, mut max_abs, mut drift) = (0usize, 0usize, 0.0f64, 0.0f64);
        for ((t, b), a) in theta.iter().zip(&batch.behaviour).zip(&advantages) {
            let log_ratio = t - b;
            max_abs = max_abs.max(log_ratio.abs());
            let rho = log_ratio.exp();
            drift += k3(log_ratio);
            low += usize::from(*a < 0.0 && rho < 1.0 - self.epsilon_low);
            high += usize::from(*a > 0.0 && rho > 1.0 + self.epsilon_high);
        }
        let mean_kl = batch.reference.as_ref().map(|reference| {
            let total: f64 = theta.iter().zip(reference).map(|(t, r)| k3(r - t)).sum();
            total / tokens as f64
        });
        Ok(GrpoStats {
            tokens,
            clipped_low: low as f64 / tokens as f64,
            clipped_high: high as f64 / tokens as f64,
            mean_kl,
            max_abs_log_ratio: max_abs,
            behaviour_kl: drift / tokens as f64,
        })
    }
}

/// `e^x − x − 1`, Schulman's k3 estimate of a KL from the log-ratio x of one sampled token.
fn k3(x: f64) -> f64 {
    x.exp() - x - 1.0
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::testing::{assert_gradient_matches_finite_differences, loss_value, policy_tensor};
    use super::*;

    /// §4.3, end-to-end token example: A = 0.8658754298, β = 0.04, ε = 0.2;
    /// log π_θ = [−1.0, −2.0], log π_old = [−1.1, −2.0], log π_ref = [−1.5, −1.8].
    fn section_4_3_batch() -> TokenBatch {
        TokenBatch {
            lengths: vec![2],
            advantages: vec![0.8658754298],
            behaviour: vec![-1.1, -2.0],
            reference: Some(vec![-1.5, -1.8]),
            step_tokens: None,
        }
    }
    const SECTION_4_3_POLICY: [f64; 2] = [-1.0, -2.0];

    /// §4.3, end-to-end: token 1 ρ = 1.1051709181, pg = −0.9569403436, KL = 0.1065306597, loss
    /// −0.9526791173; token 2 ρ = 1.0, pg = −0.8658754298, KL = 0.0214027582, loss −0.8650193194;
    /// sequence mean = −0.9088492183.
    #[test]
    fn the_section_4_3_token_example_gives_minus_0_9526791173_and_minus_0_8650193194_mean_minus_0_9088492183(
    ) {
        let grpo = Grpo::deepseek_math();
        for (dtype, tolerance) in [(DType::F64, 1e-9), (DType::F32, 1e-6)] {
            let policy = policy_tensor(&SECTION_4_3_POLICY, dtype);
            let tokens: Vec<f64> = grpo
                .token_losses(&policy, &section_4_3_batch())
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap();
            for (got, expected) in tokens.iter().zip([-0.9526791173, -0.8650193194]) {
                assert!((got - expected).abs() < tolerance, "{dtype:?}: {tokens:?}");
            }
            // One sequence: every aggregation but dr_grpo is its token mean.
            for aggregation in [Aggregation::Grpo, Aggregation::Bnpo, Aggregation::Dapo] {
                let grpo = Grpo {
                    aggregation,
                    ..grpo
                };
                let loss = loss_value(&grpo, &SECTION_4_3_POLICY, &section_4_3_batch(), dtype);
                assert!(
                    (loss + 0.9088492183).abs() < tolerance,
                    "{aggregation:?} {dtype:?}: {loss}"
                );
            }
        }
    }

    /// Three sequences of 2, 3 and 1 tokens with advantages of both signs; every log-ratio sits at
    /// least 0.05 from the clip boundary that matters for its sign of Â (ln 0.8 for Â < 0, ln 1.2
    /// and ln 1.28 for Â > 0), so the finite differences do not cross one. Tokens 2 (Â > 0,
    /// ρ = e^0.35) and 3–4 (Â < 0, ρ = e^−0.4) are clipped.
    fn guard_batch() -> (Vec<f64>, TokenBatch) {
        let behaviour = vec![-1.2, -0.7, -2.0, -0.3, -1.5, -0.9];
        let log_ratio = [0.1, 0.35, -0.4, -0.4, 0.3, -0.05];
        let policy = behaviour
            .iter()
            .zip(log_ratio)
            .map(|(b, d)| b + d)
            .collect();
        let batch = TokenBatch {
            lengths: vec![2, 3, 1],
            advantages: vec![0.8, -1.2, 0.5],
            behaviour,
            reference: Some(vec![-1.5, -0.4, -1.0, -0.5, -1.2, -2.5]),
            step_tokens: None,
        };
        (policy, batch)
    }

    #[test]
    fn grpo_gradients_match_finite_differences_for_every_aggregation_clip_and_beta() {
        let (policy, batch) = guard_batch();
        let aggregations = [
            Aggregation::Grpo,
            Aggregation::Bnpo,
            Aggregation::Dapo,
            Aggregation::DrGrpo {
                max_completion_length: 8,
            },
        ];
        for aggregation in aggregations {
            // A KL cap of 1 puts token 3 (x = 1.4) on the tangent; the others stay below it.
            for (epsilon_high, beta, kl_linear_above) in [
                (0.2, 0.04, f64::INFINITY),
                (0.28, 0.0, f64::INFINITY),
                (0.28, 0.5, f64::INFINITY),
                (0.28, 0.5, 1.0),
            ] {
                let grpo = Grpo {
                    epsilon_high,
                    beta,
                    kl_linear_above,
                    aggregation,
                    ..Grpo::default()
                };
                assert_gradient_matches_finite_differences(&grpo, &policy, &batch);
            }
        }
        let with_step = TokenBatch {
            step_tokens: Some(20),
            ..batch
        };
        assert_gradient_matches_finite_differences(&Grpo::dapo(), &policy, &with_step);
    }

    /// Ours: on `guard_batch`, DAPO's clip (0.2, 0.28) clips token 2 high (ρ = e^0.35 = 1.419 > 1.28,
    /// Â > 0) and tokens 3–4 low (ρ = e^−0.4 = 0.670 < 0.8, Â < 0); token 5 (Â < 0, ρ = e^0.3) is
    /// not clipped, as ρ above the range only clips positive advantages.
    #[test]
    fn stats_count_clipped_tokens_and_report_kl_and_the_largest_log_ratio() {
        let (policy, batch) = guard_batch();
        let stats = Grpo::dapo()
            .stats(&policy_tensor(&policy, DType::F64), &batch)
            .unwrap();
        assert_eq!(stats.tokens, 6);
        assert!((stats.clipped_high - 1.0 / 6.0).abs() < 1e-12, "{stats:?}");
        assert!((stats.clipped_low - 2.0 / 6.0).abs() < 1e-12, "{stats:?}");
        assert!((stats.max_abs_log_ratio - 0.4).abs() < 1e-12, "{stats:?}");
        let kl: f64 = policy
            .iter()
            .zip(batch.reference.as_ref().unwrap())
            .map(|(t, r)| (r - t).exp() - (r - t) - 1.0)
            .sum::<f64>()
            / 6.0;
        assert!((stats.mean_kl.unwrap() - kl).abs() < 1e-12);
        let drift: f64 = policy
            .iter()
            .zip(&batch.behaviour)
            .map(|(t, b)| (t - b).exp() - 1.0 - (t - b))
            .sum::<f64>()
            / 6.0;
        assert!((stats.behaviour_kl - drift).abs() < 1e-12, "{stats:?}");

        // §4.3's tokens: log-ratios to the behaviour policy 0.1 and 0, so (e^0.1 − 1.1 + 0) / 2.
        let stats = Grpo::deepseek_math()
            .stats(
                &policy_tensor(&SECTION_4_3_POLICY, DType::F64),
                &section_4_3_batch(),
            )
            .unwrap();
        assert!(
            (stats.behaviour_kl - 0.0025854590).abs() < 1e-10,
            "{stats:?}"
        );
    }

    #[test]
    fn the_presets_are_section_4_2s_settings() {
        let trl = Grpo::default();
        assert_eq!(
            (trl.beta, trl.epsilon_low, trl.epsilon_high),
            (0.0, 0.2, 0.2)
        );
        assert_eq!(trl.aggregation.name(), "dapo");
        assert_eq!(trl.advantages.scale_rewards.name(), "group");
        assert_eq!(
            (trl.advantages.std, trl.advantages.epsilon),
            (RewardStd::Sample, 1e-4)
        );
        assert!(!trl.advantages.drop_zero_variance);

        let deepseek = Grpo::deepseek_math();
        assert_eq!(
            (deepseek.beta, deepseek.epsilon_low, deepseek.epsilon_high),
            (0.04, 0.2, 0.2)
        );
        assert_eq!(deepseek.aggregation.name(), "grpo");

        let dapo = Grpo::dapo();
        assert_eq!(
            (dapo.beta, dapo.epsilon_low, dapo.epsilon_high),
            (0.0, 0.2, 0.28)
        );
        assert_eq!(dapo.aggregation.name(), "dapo");
        assert!(dapo.advantages.drop_zero_variance);

        let dr = Grpo::dr_grpo(512);
        assert_eq!(
            dr.aggregation,
            Aggregation::DrGrpo {
                max_completion_length: 512
            }
        );
        assert_eq!(dr.aggregation.name(), "dr_grpo");
        assert_eq!(dr.advantages.scale_rewards, ScaleRewards::None);
    }

    #[test]
    fn missing_or_misshapen_inputs_and_bad_settings_are_refused() {
        let policy = policy_tensor(&SECTION_4_3_POLICY, DType::F64);
        let without_reference = TokenBatch {
            reference: None,
            ..section_4_3_batch()
        };
        let needs = Grpo::deepseek_math();
        assert!(matches!(
            needs.loss(&policy, &without_reference),
            Err(Error::Shape(_))
        ));
        // β = 0 needs no reference.
        assert!(Grpo::default().loss(&policy, &without_reference).is_ok());
        let cases = [
            TokenBatch {
                lengths: vec![3],
                ..section_4_3_batch()
            },
            TokenBatch {
                advantages: vec![1.0, 2.0],
                ..section_4_3_batch()
            },
            TokenBatch {
                behaviour: vec![-1.0],
                ..section_4_3_batch()
            },
            TokenBatch {
                reference: Some(vec![-1.0, f64::NAN]),
                ..section_4_3_batch()
            },
        ];
        for batch in cases {
            assert!(
                matches!(needs.loss(&policy, &batch), Err(Error::Shape(_))),
                "{batch:?}"
            );
        }
        let matrix = Tensor::zeros((1, 2), DType::F64, &Device::Cpu).unwrap();
        assert!(matches!(
            needs.loss(&matrix, &section_4_3_batch()),
            Err(Error::Shape(_))
        ));
        for bad in [
            Grpo {
                epsilon_low: 1.5,
                ..needs
            },
            Grpo {
                epsilon_high: -0.1,
                ..needs
            },
            Grpo {
                beta: f64::NAN,
                ..needs
            },
            Grpo {
                kl_linear_above: 0.0,
                ..needs
            },
            Grpo {
                kl_linear_above: f64::NAN,
                ..needs
            },
        ] {
            assert!(matches!(
                bad.loss(&policy, &section_4_3_batch()),
                Err(Error::Setting(_))
            ));
        }
    }
}
