//! `gradient_seed`: a scalar whose backward hands a given gradient to a tensor.
//!
//! Per-layer recomputation starts each layer's backward from `g_out`, the gradient the layer above
//! passed down. Writing that as `Σ out·g_out` costs candle a product, a sum, a broadcast of the
//! root's ones and a second product in its backward, all over [rows, hidden]; the seed op skips
//! them and returns `g_out` as it is.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape, Storage, Tensor};

/// A scalar zero whose gradient with respect to `x` is `grad` (same shape as `x`), provided the
/// scalar's own gradient is one: it must be the root of `backward`, or summed into it.
pub(crate) fn gradient_seed(x: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
    if x.shape() != grad.shape() || x.dtype() != grad.dtype() {
        candle_core::bail!(
            "gradient seed: a {:?} {:?} gradient for a {:?} {:?} tensor",
            grad.dtype(),
            grad.shape(),
            x.dtype(),
            x.shape()
        );
    }
    let zero = Tensor::zeros((), x.dtype(), x.device())?;
    x.apply_op1(Seed {
        zero: Mutex::new(Some(zero)),
        grad: grad.detach(),
    })
}

struct Seed {
    /// The forward's value, made beforehand on the right device and taken by the one forward call.
    zero: Mutex<Option<Tensor>>,
    grad: Tensor,
}

impl Seed {
    fn take_zero(&self) -> candle_core::Result<Tensor> {
        self.zero
            .lock()
            .map_err(|_| candle_core::Error::Msg("gradient-seed lock poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("gradient-seed forward ran twice".into()))
    }
}

impl CustomOp1 for Seed {
    fn name(&self) -> &'static str {
        "gradient-seed"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let zero = self.take_zero()?;
        let (storage, layout) = zero.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, Shape::from(()))),
            _ => candle_core::bail!("gradient seed: tensor is not on the CPU"),
        }
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let zero = self.take_zero()?;
        let (storage, layout) = zero.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, Shape::from(()))),
            _ => candle_core::bail!("gradient seed: tensor is not on the CUDA device"),
        }
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.grad.clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn the_seed_is_zero_and_hands_back_its_gradient() {
        let x = Var::new(&[[1.0f64, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let g = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.25]], &Device::Cpu).unwrap();
        // Through a product, as a layer would: d/dx Σ (3x)·g = 3g.
        let y = (x.as_tensor() * 3.0).unwrap();

        let seed = gradient_seed(&y, &g).unwrap();
        let grads = seed.backward().unwrap();

        assert_eq!(seed.to_scalar::<f64>().unwrap(), 0.0);
        let dx: Vec<Vec<f64>> = grads.get(x.as_tensor()).unwrap().to_vec2().unwrap();
        assert_eq!(dx, [[1.5, -3.0], [6.0, 0.75]]);
    }

    #[test]
    fn a_gradient_of_another_shape_or_dtype_is_refused() {
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        for g in [
            Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
            Tensor::zeros((2, 3), candle_core::DType::F64, &Device::Cpu).unwrap(),
        ] {
            let err = gradient_seed(&x, &g).unwrap_err().to_string();
            assert!(err.contains("gradient seed"), "{err}");
        }
    }
}
