//! LoRA on frozen projections: `y = x·Wᵀ + (α/r)·dropout(x)·Aᵀ·Bᵀ`, as PEFT defines it.
//!
//! `A` [r, in] starts kaiming-uniform (PEFT's `a = √5`, i.e. U(±1/√in)) and `B` [out, r] at zero, so
//! a fresh adapter is the base model exactly. The trainable weights are `Var`s held by the model; the
//! base weights are plain tensors and never become `Var`s.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::frozen::FrozenLinear;
use super::ops::{self, LoraMatmul};

/// The projections LoRA can target, by their Hugging Face module names ([`LoraTargets`] picks them).
const ATTENTION_MODULES: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];
const MLP_MODULES: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];

/// Which projections of each layer a new adapter adapts.
///
/// `AllLinear` (PEFT's `"all-linear"`) adds the MLP: Schulman et al., "LoRA Without Regret"
/// (Thinking Machines, 2025) found attention-only LoRA trailing full fine-tuning even at matched
/// parameter counts, and LoRA on every layer, the MLP above all, closing the gap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoraTargets {
    /// `q_proj`, `k_proj`, `v_proj`, `o_proj`.
    #[default]
    Attention,
    /// The attention projections and `gate_proj`, `up_proj`, `down_proj`.
    AllLinear,
}

impl LoraTargets {
    pub fn modules(self) -> Vec<String> {
        let mlp: &[&str] = match self {
            Self::Attention => &[],
            Self::AllLinear => &MLP_MODULES,
        };
        ATTENTION_MODULES
            .iter()
            .chain(mlp)
            .map(|m| m.to_string())
            .collect()
    }

    /// The targets a PEFT `target_modules` list names, if it is one of ours.
    pub fn of_modules(modules: &[String]) -> Option<Self> {
        [Self::Attention, Self::AllLinear].into_iter().find(|t| {
            let ours = t.modules();
            ours.len() == modules.len() && ours.iter().all(|m| modules.contains(m))
        })
    }
}

impl fmt::Display for LoraTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Attention => "attention",
            Self::AllLinear => "all-linear",
        })
    }
}

impl FromStr for LoraTargets {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "attention" => Ok(Self::Attention),
            "all-linear" => Ok(Self::AllLinear),
            _ => Err(format!(
                "unknown LoRA targets `{s}`: expected attention or all-linear"
            )),
        }
    }
}

/// LoRA hyperparameters; `Default` is r = 16, α = 32, no dropout, attention projections only.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Probability of zeroing an input element of the LoRA branch (training passes only).
    pub dropout: f64,
    /// Module names (`q_proj`, …, `down_proj`) that get an adapter.
    pub target_modules: Vec<String>,
    /// Seeds `A`'s initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: LoraTargets::Attention.modules(),
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// `α / r`, the factor on the LoRA branch.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub(crate) fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|m| m == module)
    }
}

/// One adapted projection's name and sizes; `name` is the PEFT prefix, e.g.
/// `model.layers.0.self_attn.q_proj`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraModule {
    pub name: String,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// Fixed (non-trainable) LoRA weights in module order, e.g. the previous iterate π_t.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// `(A [r, in], B [out, r])` per module, in [`Model::lora_modules`](super::Model::lora_modules) order.
    pub(crate) pairs: Vec<(Tensor, Tensor)>,
}

impl LoraWeights {
    /// `(A [r, in], B [out, r])` per module, in [`Model::lora_modules`](super::Model::lora_modules) order, in the model's
    /// dtype (checked when the weights are used by [`Model::set_trainable`](super::Model::set_trainable)).
    pub fn from_pairs(pairs: Vec<(Tensor, Tensor)>) -> Self {
        Self { pairs }
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `(A, B)` of module `index`.
    pub fn pair(&self, index: usize) -> Option<(&Tensor, &Tensor)> {
        self.pairs.get(index).map(|(a, b)| (a, b))
    }
}

/// The trainable `Var`s, in module order.
#[derive(Debug)]
pub(crate) struct LoraVars {
    pub(crate) pairs: Vec<(Var, Var)>,
}

impl LoraVars {
    /// A kaiming-uniform, B zero, seeded by `seed`.
    pub(crate) fn init(
        modules: &[LoraModule],
        rank: usize,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pairs = Vec::with_capacity(modules.len());
        for m in modules {
            let bound = 1.0 / (m.in_dim as f64).sqrt();
            let a: Vec<f64> = (0..rank * m.in_dim)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let a = Tensor::from_vec(a, (rank, m.in_dim), device)?.to_dtype(dtype)?;
            let b = Tensor::zeros((m.out_dim, rank), dtype, device)?;
            pairs.push((Var::from_tensor(&a)?, Var::from_tensor(&b)?));
        }
        Ok(Self { pairs })
    }

    /// Copies of the current values. Copies, not `detach()`: a detached tensor shares the `Var`'s
    /// storage, and `Var::set` writes in place, so a detached "snapshot" would follow training.
    pub(crate) fn snapshot(&self) -> candle_core::Result<LoraWeights> {
        let pairs = self
            .pairs
            .iter()
            .map(|(a, b)| {
                Ok((
                    a.as_tensor().detach().copy()?,
                    b.as_tensor().detach().copy()?,
                ))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(LoraWeights { pairs })
    }
}

/// Where a forward pass takes its LoRA weights from (resolved per pass).
pub(crate) enum LoraSource<'a> {
    Off,
    /// The trainable `Var`s; `grad: false` uses detached copies so no graph is recorded.
    Vars {
        vars: &'a LoraVars,
        grad: bool,
    },
    Fixed(&'a LoraWeights),
}

/// Per-pass LoRA settings shared by every adapted projection.
pub(crate) struct LoraPass<'a> {
    pub(crate) source: LoraSource<'a>,
    pub(crate) scale: f64,
    /// `(p, seed)` when dropout is on for this pass; each module derives its mask from
    /// `seed` and its index, so a recomputed layer sees the same mask.
    pub(crate) dropout: Option<(f64, u64)>,
}

impl LoraPass<'_> {
    fn pair(&self, index: usize) -> Option<(Tensor, Tensor)> {
        match &self.source {
            LoraSource::Off => None,
            LoraSource::Vars { vars, grad } => vars.pairs.get(index).map(|(a, b)| {
                if *grad {
                    (a.as_tensor().clone(), b.as_tensor().clone())
                } else {
                    (a.as_tensor().detach(), b.as_tensor().detach())
                }
            }),
            LoraSource::Fixed(w) => w.pairs.get(index).cloned(),
        }
    }
}

/// A frozen projection with an optional LoRA branch (`index` into the model's module list).
#[derive(Debug, Clone)]
pub(crate) struct LoraLinear {
    base: FrozenLinear,
    index: Option<usize>,
}

impl LoraLinear {
    /// Wraps `base`; registers it in `modules` under `name` when `config` targets `short_name`.
    pub(crate) fn new(
        base: FrozenLinear,
        name: String,
        short_name: &str,
        config: &LoraConfig,
        modules: &mut Vec<LoraModule>,
    ) -> Self {
        let index = config.targets(short_name).then(|| {
            let (in_dim, out_dim) = base.dims();
            modules.push(LoraModule {
                name,
                in_dim,
                out_dim,
            });
            modules.len() - 1
        });
        Self { base, index }
    }

    #[cfg(test)]
    pub(crate) fn base(&self) -> &FrozenLinear {
        &self.base
    }

    /// The frozen weight [out, in] when this projection has no adapter in `pass` (it is then
    /// `x·Wᵀ + b`, differentiable in `x` only).
    pub(crate) fn frozen_weight(&self, pass: &LoraPass) -> Option<&Tensor> {
        match self.adapter(pass) {
            Some(_) => None,
            None => Some(self.base.weight()),
        }
    }

    /// This projection's module index and `(A, B)` in `pass`, when it has an adapter there.
    fn adapter(&self, pass: &LoraPass) -> Option<(usize, (Tensor, Tensor))> {
        let index = self.index?;
        pass.pair(index).map(|pair| (index, pair))
    }

    /// `x` [.., in] → [.., out]; `fused` takes the CPU's one-op LoRA projection where it applies
    /// (f32/f64 throughout, no dropout), the primitive ops otherwise.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        pass: &LoraPass,
        fused: bool,
    ) -> candle_core::Result<Tensor> {
        let Some((index, (a, b))) = self.adapter(pass) else {
            return self.base.forward(x);
        };
        let no_dropout = pass.dropout.is_none_or(|(p, _)| p <= 0.0);
        let weight = self.base.weight();
        if fused
            && no_dropout
            && ops::fusable(x)
            && a.dtype() == x.dtype()
            && weight.dtype() == x.dtype()
        {
            let y = x.contiguous()?.apply_op3(
                &a,
                &b,
                LoraMatmul {
                    weight: weight.clone(),
                    scale: pass.scale,
                },
            )?;
            return match self.base.bias() {
                Some(bias) => y.broadcast_add(bias),
                None => Ok(y),
            };
        }
        let base = self.base.forward(x)?;
        // Over a half-precision base the branch runs in its weights' f32 (`Model::lora_dtype`).
        let x = x.to_dtype(a.dtype())?;
        let x = match pass.dropout {
            Some((p, seed)) if p > 0.0 => dropout(&x, p, seed ^ ((index as u64 + 1) << 32))?,
            _ => x,
        };
        // The scale goes on the rank-r intermediate, the smallest tensor of the branch.
        let lora = (x.broadcast_matmul(&a.t()?)? * pass.scale)?.broadcast_matmul(&b.t()?)?;
        let dtype = base.dtype();
        base + lora.to_dtype(dtype)?
    }
}

/// Inverted dropout with a mask drawn from `seed` (not candle's unseedable device RNG).
fn dropout(x: &Tensor, p: f64, seed: u64) -> candle_core::Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<f64>() < p {
                0.0
            } else {
                keep as f32
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_targets_parse_name_their_modules_and_are_recognised_in_a_config() {
        for t in [LoraTargets::Attention, LoraTargets::AllLinear] {
            assert_eq!(t.to_string().parse::<LoraTargets>(), Ok(t));
            assert_eq!(LoraTargets::of_modules(&t.modules()), Some(t));
        }
        let mut reordered = LoraTargets::AllLinear.modules();
        reordered.reverse();
        assert_eq!(
            LoraTargets::of_modules(&reordered),
            Some(LoraTargets::AllLinear)
        );
        assert_eq!(
            LoraTargets::of_modules(&["q_proj".to_string(), "v_proj".to_string()]),
            None
        );
        assert!("mlp"
            .parse::<LoraTargets>()
            .unwrap_err()
            .contains("all-linear"));
    }
}
