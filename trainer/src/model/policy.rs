//! The trainable policy: a frozen llama-family base plus one trainable LoRA adapter.
//!
//! A forward pass chooses its adapter with [`Adapter`]: `Off` is the reference policy π_ref,
//! `Trainable` is π_θ, `Fixed` a frozen snapshot such as the previous iterate π_t. Loading a model
//! from its files (`Model::load`) is the files layer's (`files::base`).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use super::config::Config;
use super::frame::Frame;
use super::llama::Llama;
use super::lora::{LoraConfig, LoraModule, LoraPass, LoraSource, LoraVars, LoraWeights};
use crate::{Error, Result};

/// Which LoRA weights a forward pass adds to the frozen base.
#[derive(Debug, Clone, Copy)]
pub enum Adapter<'a> {
    /// The base model alone: the reference policy π_ref.
    Off,
    /// The trainable adapter π_θ (no graph is recorded unless a training step asks for one).
    Trainable,
    /// Fixed weights, e.g. the previous iterate π_t.
    Fixed(&'a LoraWeights),
}

/// The LoRA dtype over a base of `base` dtype (see [`Model::lora_dtype`]).
pub(crate) fn adapter_dtype(base: DType) -> DType {
    match base {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// A frozen base model and its trainable LoRA adapter.
#[derive(Debug)]
pub struct Model {
    pub(crate) llama: Llama,
    lora: LoraConfig,
    pub(crate) vars: LoraVars,
}

impl Model {
    /// Builds the model from any `VarBuilder` (tests use in-memory tensors).
    pub fn new(config: Config, lora: LoraConfig, vb: VarBuilder) -> Result<Self> {
        if lora.rank == 0 {
            return Err(Error::Setting("LoRA rank must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&lora.dropout) {
            return Err(Error::Setting(format!(
                "LoRA dropout must be in [0, 1), got {}",
                lora.dropout
            )));
        }
        let llama = Llama::new(config, &lora, vb)?;
        let vars = LoraVars::init(
            &llama.modules,
            lora.rank,
            lora.seed,
            adapter_dtype(llama.dtype()),
            llama.device(),
        )?;
        Ok(Self { llama, lora, vars })
    }

    pub fn config(&self) -> &Config {
        &self.llama.config
    }

    pub fn lora_config(&self) -> &LoraConfig {
        &self.lora
    }

    /// The adapted projections in the order of [`LoraWeights`] pairs.
    pub fn lora_modules(&self) -> &[LoraModule] {
        &self.llama.modules
    }

    pub fn dtype(&self) -> DType {
        self.llama.dtype()
    }

    pub fn device(&self) -> &Device {
        self.llama.device()
    }

    /// The dtype of the LoRA weights and their optimiser state: f32 over a bf16/f16 base, since
    /// AdamW's updates (~lr·1) vanish in bf16's 8-bit mantissa; the base's own dtype otherwise.
    pub fn lora_dtype(&self) -> DType {
        adapter_dtype(self.dtype())
    }

    /// A copy of the trainable adapter's current values (e.g. π_t before an iteration).
    ///
    /// # Errors
    /// Candle errors (allocation).
    pub fn snapshot(&self) -> Result<LoraWeights> {
        Ok(self.vars.snapshot()?)
    }

    /// Overwrites the trainable adapter (e.g. to warm-start from the parent adapter).
    ///
    /// # Errors
    /// `Error::Shape` when `weights` was made for other modules or another rank.
    pub fn set_trainable(&self, weights: &LoraWeights) -> Result<()> {
        if weights.pairs.len() != self.vars.pairs.len() {
            return Err(Error::Shape(format!(
                "adapter has {} modules, model has {}",
                weights.pairs.len(),
                self.vars.pairs.len()
            )));
        }
        for ((a, b), (va, vb)) in weights.pairs.iter().zip(&self.vars.pairs) {
            if a.dims() != va.dims() || b.dims() != vb.dims() {
                return Err(Error::Shape(format!(
                    "LoRA pair {:?}/{:?}, expected {:?}/{:?}",
                    a.dims(),
                    b.dims(),
                    va.dims(),
                    vb.dims()
                )));
            }
            va.set(&a.to_dtype(self.lora_dtype())?.to_device(self.device())?)?;
            vb.set(&b.to_dtype(self.lora_dtype())?.to_device(self.device())?)?;
        }
        Ok(())
    }

    /// The trainable `Var`s, `A` then `B` per module, for the optimiser.
    pub(crate) fn trainable_vars(&self) -> Vec<&Var> {
        self.vars.pairs.iter().flat_map(|(a, b)| [a, b]).collect()
    }

    /// Logits at every position, [t, vocab], with no autograd graph.
    ///
    /// # Errors
    /// `Error::Shape` for an empty sequence.
    pub fn logits(&self, ids: &[u32], adapter: Adapter) -> Result<Tensor> {
        let frame = self.llama.frame(&[ids.len()])?;
        let hidden = self.hidden(ids, &frame, &self.pass(adapter, false, None))?;
        self.llama.head(&hidden)
    }

    /// Final-layer hidden states [rows, hidden] (before the final norm) of the packed `ids` that
    /// `frame` describes.
    pub(crate) fn hidden(&self, ids: &[u32], frame: &Frame, pass: &LoraPass) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::Shape("empty token sequence".into()));
        }
        let mut x = self.llama.embed(ids)?;
        for layer in &self.llama.layers {
            x = layer.forward(&x, frame, pass)?;
        }
        Ok(x)
    }

    /// The LoRA settings of one pass; `dropout_seed` turns dropout on (training passes only).
    pub(crate) fn pass<'a>(
        &'a self,
        adapter: Adapter<'a>,
        grad: bool,
        dropout_seed: Option<u64>,
    ) -> LoraPass<'a> {
        let source = match adapter {
            Adapter::Off => LoraSource::Off,
            Adapter::Trainable => LoraSource::Vars {
                vars: &self.vars,
                grad,
            },
            Adapter::Fixed(w) => LoraSource::Fixed(w),
        };
        LoraPass {
            source,
            scale: self.lora.scale(),
            dropout: dropout_seed
                .filter(|_| self.lora.dropout > 0.0)
                .map(|s| (self.lora.dropout, s)),
        }
    }
}
