//! RMSNorm with a frozen weight: `y = x / √(mean(x²) + ε) · w` over the last dimension.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous, cpu_slice, elements, storage, Real};

/// Rows per rayon task: a row is a few hundred elements, too little work to split alone.
const ROWS_PER_TASK: usize = 16;

/// The op; backward gives the input's gradient only (the weight is frozen).
pub(crate) struct RmsNormOp {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNormOp {
    fn forward<T: Real>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let h = w.len();
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(h)
            .zip(x.par_chunks(h))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(y, x)| {
                let r = self.inv_rms(x);
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                    *y = x * r * w;
                }
            });
        out
    }

    /// `dx_i = r·w_i·g_i − x_i · r³ · Σ_j x_j·w_j·g_j / h`, with `r = 1/√(mean(x²) + ε)`.
    fn backward<T: Real>(&self, x: &[T], w: &[T], g: &[T]) -> Vec<T> {
        let h = w.len();
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(h)
            .zip(x.par_chunks(h).zip(g.par_chunks(h)))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(dx, (x, g))| {
                let r = self.inv_rms(x);
                let dot = x
                    .iter()
                    .zip(w)
                    .zip(g)
                    .fold(T::zero(), |acc, ((&x, &w), &g)| acc + x * w * g);
                let c = dot * r * r * r / T::from_f64(h as f64);
                for (((dx, &x), &w), &g) in dx.iter_mut().zip(x).zip(w).zip(g) {
                    *dx = r * w * g - x * c;
                }
            });
        out
    }

    fn inv_rms<T: Real>(&self, x: &[T]) -> T {
        let squares = x.iter().fold(T::zero(), |acc, &v| acc + v * v);
        (squares / T::from_f64(x.len() as f64) + T::from_f64(self.eps))
            .sqrt()
            .recip()
    }

    fn run<T: Real>(&self, x: &[T]) -> candle_core::Result<Vec<T>> {
        let w = contiguous([&self.weight])?;
        let locked = w[0].storage_and_layout();
        Ok(self.forward(x, elements(&locked)?))
    }

    fn run_backward<T: Real>(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let args = contiguous([x, g, &self.weight])?;
        let locked = args.each_ref().map(|t| t.storage_and_layout());
        let [x, g, w] = [0, 1, 2].map(|i| elements::<T>(&locked[i]));
        let dx = self.backward(x?, w?, g?);
        Tensor::from_vec(dx, args[0].shape(), args[0].device())
    }
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if l.dims().last() != Some(&self.weight.elem_count()) || s.dtype() != self.weight.dtype() {
            candle_core::bail!(
                "rms-norm: input {:?} vs weight {:?}",
                l.shape(),
                self.weight.shape()
            );
        }
        let out = match s {
            CpuStorage::F32(_) => storage(self.run::<f32>(cpu_slice(s, l)?)?),
            CpuStorage::F64(_) => storage(self.run::<f64>(cpu_slice(s, l)?)?),
            _ => candle_core::bail!("rms-norm: unsupported dtype {:?}", s.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(match x.dtype() {
            DType::F32 => self.run_backward::<f32>(x, g)?,
            DType::F64 => self.run_backward::<f64>(x, g)?,
            other => candle_core::bail!("rms-norm: unsupported dtype {other:?}"),
        }))
    }
}
