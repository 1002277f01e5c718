//! `FrozenLinear`: a base-model projection whose weight never receives a gradient.
//!
//! candle's `Op::Matmul` backward always computes and keeps `xᵀ·grad` for the weight operand too, even
//! when the weight is a plain (non-`Var`) tensor: at SmolLM2 scale that is most of the `GradStore`
//! (`research/trainer.md` §1, "Wasted frozen-weight gradients"). [`FrozenMatmul`] is a custom op whose
//! backward returns only `grad·W`, the gradient for the input. On the CPU its forward is the matmul
//! itself; elsewhere it hands back a product computed beforehand.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape, Storage, Tensor};
use candle_nn::VarBuilder;

use super::compute::matmul;
use super::ops;

/// `y = x·Wᵀ (+ b)` with `W` [out, in] and `b` [out] frozen.
#[derive(Debug, Clone)]
pub(crate) struct FrozenLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl FrozenLinear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// Loads `weight` [out, in] (and `bias` [out] when `with_bias`) under `vb`'s prefix.
    pub(crate) fn load(
        in_dim: usize,
        out_dim: usize,
        with_bias: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if with_bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self::new(weight, bias))
    }

    #[cfg(test)]
    /// The weight and, if any, the bias.
    pub(crate) fn tensors(&self) -> Vec<Tensor> {
        std::iter::once(self.weight.clone())
            .chain(self.bias.clone())
            .collect()
    }

    /// The weight [out, in].
    pub(crate) fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias [out], if any.
    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub(crate) fn dims(&self) -> (usize, usize) {
        let (out_dim, in_dim) = self.weight.dims2().expect("linear weights are 2-d");
        (in_dim, out_dim)
    }

    /// `x` is [.., in]; returns [.., out].
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let out = if ops::fusable(x) && x.dtype() == self.weight.dtype() {
            x.contiguous()?.apply_op1(FrozenMatmul {
                out: Mutex::new(None),
                weight: self.weight.clone(),
            })?
        } else if x.track_op() {
            let out = matmul(&x.detach(), &self.weight.t()?)?;
            x.apply_op1(FrozenMatmul {
                out: Mutex::new(Some(out)),
                weight: self.weight.clone(),
            })?
        } else {
            matmul(x, &self.weight.t()?)?
        };
        match &self.bias {
            // The bias is a plain tensor too; its reduced gradient ([out]) is small, so `broadcast_add`
            // is kept rather than another custom op.
            Some(bias) => out.broadcast_add(bias),
            None => Ok(out),
        }
    }
}

/// `x·Wᵀ`; backward gives `grad·W` to the input only.
struct FrozenMatmul {
    /// Off the CPU, or for dtypes the fused CPU matmul lacks: the product computed before the op was applied, taken by the (single) forward
    /// call so the graph does not hold a second copy of it.
    out: Mutex<Option<Tensor>>,
    weight: Tensor,
}

impl FrozenMatmul {
    /// The product computed beforehand, if one was (taken: the forward runs once).
    fn take_out(&self) -> candle_core::Result<Option<Tensor>> {
        Ok(self
            .out
            .lock()
            .map_err(|_| candle_core::Error::Msg("frozen-matmul lock poisoned".into()))?
            .take())
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        // A dtype the fused matmul does not take (bf16) comes with its product computed.
        if let Some(out) = self.take_out()? {
            let (storage, layout) = out.storage_and_layout();
            return match &*storage {
                Storage::Cpu(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
                _ => candle_core::bail!("frozen-matmul: output is not on the CPU"),
            };
        }
        let out = ops::frozen_matmul(s, l, &self.weight)?;
        let mut dims = l.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.weight.dim(0)?;
        }
        Ok((out, Shape::from(dims)))
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = self
            .take_out()?
            .ok_or_else(|| candle_core::Error::Msg("frozen-matmul forward ran twice".into()))?;
        let (storage, layout) = out.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("frozen-matmul: output is not on the CUDA device"),
        }
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(matmul(grad, &self.weight)?))
    }
}
