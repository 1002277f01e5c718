//! How per-token losses ℓ_{i,t} become one scalar: TRL's `loss_type`s, exactly as
//! `research/algorithms.md` §4.1 tabulates them.
//!
//! Every one is a weighted sum `Σ_{i,t} w_{i,t} ℓ_{i,t}` with constant weights, computed here:
//!
//! | `loss_type` | `w_{i,t}` | origin |
//! |---|---|---|
//! | `grpo` | `1 / (G·\|o_i\|)`: the mean over sequences of each sequence's token mean | DeepSeekMath eq. 3 |
//! | `bnpo` | `1 / Σ\|o_i\|` over this batch | – |
//! | `dapo` | `1 / N`, N the active tokens of the whole optimiser step (every accumulated micro-batch) | DAPO |
//! | `dr_grpo` | `1 / (G·L_max)`, L_max the generation cap `max_completion_length` | Dr. GRPO |
//!
//! G is the number of sequences in the batch (all its groups together, as TRL's local batch).
//! Tokens are laid out sequence after sequence, as the trainer's packs lay out response tokens, and
//! every token given is active (the completion mask M ≡ 1: packs hold no padding).
//!
//! `dapo` and `bnpo` coincide on a single micro-batch. With gradient accumulation, `dapo` already
//! divides by the step's token count, so the step's loss is the plain sum of its micro-batch losses
//! (no further 1/accumulation); the others are means per micro-batch, as TRL averages them.

use candle_core::{Tensor, D};

use crate::{Error, Result};

/// TRL's `loss_type`; `Default` is TRL's `dapo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// Sequence mean of token means (DeepSeekMath eq. 3).
    Grpo,
    /// Token mean over this batch.
    Bnpo,
    /// Token sum over the step's active-token count ([`super::TokenBatch::step_tokens`]; this
    /// batch's count when that is `None`).
    #[default]
    Dapo,
    /// Token sum over `G · max_completion_length` (Dr. GRPO); every sequence must fit in it.
    DrGrpo { max_completion_length: usize },
}

impl Aggregation {
    /// TRL's `loss_type` name: `grpo`, `bnpo`, `dapo` or `dr_grpo`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Grpo => "grpo",
            Self::Bnpo => "bnpo",
            Self::Dapo => "dapo",
            Self::DrGrpo { .. } => "dr_grpo",
        }
    }

    /// Each token's weight, for sequences of `lengths` tokens laid end to end.
    ///
    /// # Errors
    /// `Error::Shape` for no sequences or an empty one, a `dr_grpo` sequence longer than L_max, or a
    /// step token count below this batch's; `Error::Setting` for L_max = 0.
    pub(crate) fn token_weights(
        &self,
        lengths: &[usize],
        step_tokens: Option<usize>,
    ) -> Result<Vec<f64>> {
        if lengths.is_empty() {
            return Err(Error::Shape(
                "a GRPO batch needs at least one sequence".into(),
            ));
        }
        if let Some(i) = lengths.iter().position(|&n| n == 0) {
            return Err(Error::Shape(format!("sequence {i} has no response tokens")));
        }
        let g = lengths.len() as f64;
        let tokens: usize = lengths.iter().sum();
        let uniform = |w: f64| -> Vec<f64> { vec![w; tokens] };
        Ok(match *self {
            Self::Grpo => lengths
                .iter()
                .flat_map(|&n| std::iter::repeat_n(1.0 / (g * n as f64), n))
                .collect(),
            Self::Bnpo => uniform(1.0 / tokens as f64),
            Self::Dapo => {
                let step = step_tokens.unwrap_or(tokens);
                if step < tokens {
                    return Err(Error::Shape(format!(
                        "the step's active tokens ({step}) cannot be fewer than this batch's ({tokens})"
                    )));
                }
                uniform(1.0 / step as f64)
            }
            Self::DrGrpo {
                max_completion_length,
            } => {
                if max_completion_length == 0 {
                    return Err(Error::Setting(
                        "dr_grpo needs max_completion_length ≥ 1".into(),
                    ));
                }
                if let Some(&n) = lengths.iter().find(|&&n| n > max_completion_length) {
                    return Err(Error::Shape(format!(
                        "a {n}-token response exceeds dr_grpo's max_completion_length \
                         {max_completion_length} (set it to the generation cap)"
                    )));
                }
                uniform(1.0 / (g * max_completion_length as f64))
            }
        })
    }

    /// `Σ w_{i,t} ℓ_{i,t}` of the per-token losses `per_token` `[tokens]`, a scalar; differentiable.
    ///
    /// # Errors
    /// As [`Aggregation::token_weights`], and `Error::Shape` when `per_token` is not
    /// `[Σ lengths]`.
    pub(crate) fn aggregate(
        &self,
        per_token: &Tensor,
        lengths: &[usize],
        step_tokens: Option<usize>,
    ) -> Result<Tensor> {
        let weights = self.token_weights(lengths, step_tokens)?;
        if per_token.dims() != [weights.len()] {
            return Err(Error::Shape(format!(
                "per-token losses are {:?}, expected [{}]",
                per_token.dims(),
                weights.len()
            )));
        }
        let weights =
            Tensor::new(weights.as_slice(), per_token.device())?.to_dtype(per_token.dtype())?;
        Ok((per_token * weights)?.sum(D::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    /// §4.3, aggregation: per-token losses seq1 = [1, 2], seq2 = [3, 3, 3, 3].
    const LENGTHS: [usize; 2] = [2, 4];
    const LOSSES: [f64; 6] = [1.0, 2.0, 3.0, 3.0, 3.0, 3.0];

    fn aggregate(aggregation: Aggregation, step_tokens: Option<usize>, dtype: DType) -> f64 {
        let losses = Tensor::new(&LOSSES, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let loss = aggregation
            .aggregate(&losses, &LENGTHS, step_tokens)
            .unwrap();
        assert!(loss.dims().is_empty(), "a scalar");
        loss.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
    }

    /// §4.3: `grpo` = 2.25, `dapo`/`bnpo` = 2.5, `dr_grpo` with L_max = 8 = 0.9375.
    #[test]
    fn grpo_is_2_25_dapo_and_bnpo_are_2_5_and_dr_grpo_with_l_max_8_is_0_9375() {
        let dr_grpo = Aggregation::DrGrpo {
            max_completion_length: 8,
        };
        for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F32, 1e-6)] {
            for (aggregation, expected) in [
                (Aggregation::Grpo, 2.25),
                (Aggregation::Bnpo, 2.5),
                (Aggregation::Dapo, 2.5),
                (dr_grpo, 0.9375),
            ] {
                let loss = aggregate(aggregation, None, dtype);
                assert!(
                    (loss - expected).abs() < tolerance,
                    "{aggregation:?} {dtype:?}: {loss}"
                );
            }
        }
    }

    /// Ours: with 12 active tokens in the whole step (this micro-batch holds 6), `dapo` is 15/12 = 1.25
    /// while `bnpo` stays the local mean 2.5.
    #[test]
    fn dapo_divides_by_the_step_token_count_and_bnpo_ignores_it() {
        assert!((aggregate(Aggregation::Dapo, Some(12), DType::F64) - 1.25).abs() < 1e-12);
        assert!((aggregate(Aggregation::Bnpo, Some(12), DType::F64) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn inconsistent_lengths_and_settings_are_refused() {
        let dr = |l| Aggregation::DrGrpo {
            max_completion_length: l,
        };
        assert!(matches!(
            dr(3).token_weights(&LENGTHS, None),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            dr(0).token_weights(&LENGTHS, None),
            Err(Error::Setting(_))
        ));
        assert!(matches!(
            Aggregation::Dapo.token_weights(&LENGTHS, Some(5)),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Aggregation::Grpo.token_weights(&[], None),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Aggregation::Grpo.token_weights(&[2, 0], None),
            Err(Error::Shape(_))
        ));
        let losses = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        assert!(matches!(
            Aggregation::Grpo.aggregate(&losses, &LENGTHS, None),
            Err(Error::Shape(_))
        ));
    }
}
