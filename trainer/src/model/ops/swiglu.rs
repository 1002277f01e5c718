//! SwiGLU's gate: `silu(gate) · up`, elementwise.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous, cpu_slice, elements, storage, Real};

/// Elements per rayon task.
const CHUNK: usize = 4096;

pub(crate) struct SwiGlu;

/// `σ(a)` for a chunk of `a`, through the vectorised `exp`.
fn sigmoids<T: Real>(a: &[T]) -> Vec<T> {
    let mut e: Vec<T> = a.iter().map(|&x| -x).collect();
    T::exp_shifted(&mut e, T::zero());
    e.iter_mut().for_each(|e| *e = (T::one() + *e).recip());
    e
}

fn forward<T: Real>(gate: &[T], up: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); gate.len()];
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(y, (a, b))| {
            for (((y, &a), &b), s) in y.iter_mut().zip(a).zip(b).zip(sigmoids(a)) {
                *y = a * s * b;
            }
        });
    out
}

/// `d gate = g·up·σ(a)·(1 + a·(1 − σ(a)))`, `d up = g·silu(a)`.
fn backward<T: Real>(gate: &[T], up: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
    let (mut da, mut db) = (vec![T::zero(); gate.len()], vec![T::zero(); gate.len()]);
    da.par_chunks_mut(CHUNK)
        .zip(db.par_chunks_mut(CHUNK))
        .zip(
            gate.par_chunks(CHUNK)
                .zip(up.par_chunks(CHUNK))
                .zip(g.par_chunks(CHUNK)),
        )
        .for_each(|((da, db), ((a, b), g))| {
            for (i, s) in sigmoids(a).into_iter().enumerate() {
                da[i] = g[i] * b[i] * s * (T::one() + a[i] * (T::one() - s));
                db[i] = g[i] * a[i] * s;
            }
        });
    (da, db)
}

fn run_backward<T: Real>(
    gate: &Tensor,
    up: &Tensor,
    g: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let args = contiguous([gate, up, g])?;
    let locked = args.each_ref().map(|t| t.storage_and_layout());
    let [a, b, g] = [0, 1, 2].map(|i| elements::<T>(&locked[i]));
    let (da, db) = backward(a?, b?, g?);
    let (shape, device) = (args[0].shape(), args[0].device());
    Ok((
        Tensor::from_vec(da, shape, device)?,
        Tensor::from_vec(db, shape, device)?,
    ))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu: gate {:?} vs up {:?}", l1.shape(), l2.shape());
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                storage(forward::<f32>(cpu_slice(s1, l1)?, cpu_slice(s2, l2)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                storage(forward::<f64>(cpu_slice(s1, l1)?, cpu_slice(s2, l2)?))
            }
            _ => candle_core::bail!("swiglu: gate and up must both be f32 or both f64"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (da, db) = match gate.dtype() {
            DType::F32 => run_backward::<f32>(gate, up, g)?,
            DType::F64 => run_backward::<f64>(gate, up, g)?,
            other => candle_core::bail!("swiglu: unsupported dtype {other:?}"),
        };
        Ok((Some(da), Some(db)))
    }
}
