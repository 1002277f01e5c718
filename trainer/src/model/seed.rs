//! `gradient_seed`: a scalar whose backward hands a given gradient to a tensor.
//!
//! Per-layer recomputation starts each layer's backward from `g_out`, the gradient the layer above
//! passed down. Writing that as `Σ out·g_out` costs candle a product, a sum, a broadcast of the
//! root's ones and a second product in its backward, all over [rows, hidden]; the seed op skips
//! them and returns `g_out` as it is.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape, Tensor};

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
    x.apply_op1(Seed {
        grad: grad.detach(),
    })
}

struct Seed {
    grad: Tensor,
}

impl CustomOp1 for Seed {
    fn name(&self) -> &'static str {
        "gradient-seed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let zero = s.device().zeros_impl(&Shape::from(()), s.dtype())?;
        Ok((zero, Shape::from(())))
    }

    fn cuda_fwd(&self, s: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let zero = s.device().zeros_impl(&Shape::from(()), s.dtype())?;
        Ok((zero, Shape::from(())))
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
