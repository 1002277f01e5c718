//! A LoRA projection in one op: `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`, `W` frozen, `A` [r, in] and `B` [out, r]
//! trainable.
//!
//! Through candle's primitives the branch costs an extra [rows, out] tensor for `(x·Aᵀ)·Bᵀ`, one
//! more for the sum, and in the backward a zero-filled gradient buffer plus an add for each of them;
//! here the branch's product accumulates into `y` (gemm's `dst +=`) and the backward writes each
//! gradient once:
//!
//! - `u = s·g·B` [rows, r]
//! - `dx = g·W + u·A`
//! - `dA = uᵀ·x`, `dB = gᵀ·(s·x·Aᵀ)` (the rank-r product recomputed: rows·in·r, small)

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};

use super::matmul::{matmul, Mat};
use super::{contiguous, cpu_slice, elements, storage, Real};

pub(crate) struct LoraMatmul {
    /// The frozen weight [out, in], contiguous, in the input's dtype.
    pub(crate) weight: Tensor,
    /// `α / r`.
    pub(crate) scale: f64,
}

/// `s·x·Aᵀ` [rows, r].
fn down<T: Real>(x: &[T], a: &[T], d: Dims, s: T) -> Vec<T> {
    let mut t = vec![T::zero(); d.rows * d.rank];
    matmul(
        &mut t,
        Mat::new(x, d.rows, d.in_dim),
        Mat::new(a, d.rank, d.in_dim).t(),
        false,
        true,
    );
    t.iter_mut().for_each(|v| *v *= s);
    t
}

fn forward<T: Real>(x: &[T], w: &[T], a: &[T], b: &[T], d: Dims, s: T) -> Vec<T> {
    let mut y = vec![T::zero(); d.rows * d.out_dim];
    let x_mat = Mat::new(x, d.rows, d.in_dim);
    matmul(
        &mut y,
        x_mat,
        Mat::new(w, d.out_dim, d.in_dim).t(),
        false,
        true,
    );
    let t = down(x, a, d, s);
    matmul(
        &mut y,
        Mat::new(&t, d.rows, d.rank),
        Mat::new(b, d.out_dim, d.rank).t(),
        true,
        true,
    );
    y
}

/// `(dx, dA, dB)`, each only when asked for.
#[allow(clippy::too_many_arguments)]
fn backward<T: Real>(
    x: &[T],
    w: &[T],
    a: &[T],
    b: &[T],
    g: &[T],
    d: Dims,
    s: T,
    want: [bool; 3],
) -> [Option<Vec<T>>; 3] {
    let g_mat = Mat::new(g, d.rows, d.out_dim);
    let mut u = vec![T::zero(); d.rows * d.rank];
    matmul(&mut u, g_mat, Mat::new(b, d.out_dim, d.rank), false, true);
    u.iter_mut().for_each(|v| *v *= s);
    let u_mat = Mat::new(&u, d.rows, d.rank);

    let dx = want[0].then(|| {
        let mut dx = vec![T::zero(); d.rows * d.in_dim];
        matmul(
            &mut dx,
            g_mat,
            Mat::new(w, d.out_dim, d.in_dim),
            false,
            true,
        );
        matmul(&mut dx, u_mat, Mat::new(a, d.rank, d.in_dim), true, true);
        dx
    });
    let da = want[1].then(|| {
        let mut da = vec![T::zero(); d.rank * d.in_dim];
        matmul(
            &mut da,
            u_mat.t(),
            Mat::new(x, d.rows, d.in_dim),
            false,
            true,
        );
        da
    });
    let db = want[2].then(|| {
        let t = down(x, a, d, s);
        let mut db = vec![T::zero(); d.out_dim * d.rank];
        matmul(
            &mut db,
            g_mat.t(),
            Mat::new(&t, d.rows, d.rank),
            false,
            true,
        );
        db
    });
    [dx, da, db]
}

#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    rank: usize,
}

impl LoraMatmul {
    fn dims(&self, x: &Layout, a: &Layout, b: &Layout) -> candle_core::Result<Dims> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let rank = a.dims().first().copied().unwrap_or(0);
        if x.dims().last() != Some(&in_dim)
            || a.dims() != [rank, in_dim]
            || b.dims() != [out_dim, rank]
        {
            candle_core::bail!(
                "lora-matmul: x {:?}, A {:?}, B {:?} for a weight {:?}",
                x.shape(),
                a.shape(),
                b.shape(),
                self.weight.shape()
            );
        }
        Ok(Dims {
            rows: x.shape().elem_count() / in_dim.max(1),
            in_dim,
            out_dim,
            rank,
        })
    }
}

impl CustomOp3 for LoraMatmul {
    fn name(&self) -> &'static str {
        "lora-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Real>(
            op: &LoraMatmul,
            (x, a, b): (&[T], &[T], &[T]),
            dims: Dims,
        ) -> candle_core::Result<CpuStorage> {
            let w = contiguous([&op.weight])?;
            let locked = w[0].storage_and_layout();
            let w = elements::<T>(&locked)?;
            let s = T::from(op.scale).expect("a finite scale");
            Ok(storage(forward(x, w, a, b, dims, s)))
        }
        let dims = self.dims(xl, al, bl)?;
        let out = match (xs, as_, bs) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => run::<f32>(
                self,
                (cpu_slice(xs, xl)?, cpu_slice(as_, al)?, cpu_slice(bs, bl)?),
                dims,
            )?,
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => run::<f64>(
                self,
                (cpu_slice(xs, xl)?, cpu_slice(as_, al)?, cpu_slice(bs, bl)?),
                dims,
            )?,
            _ => candle_core::bail!("lora-matmul: x, A and B must all be f32 or all f64"),
        };
        let mut shape = xl.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = dims.out_dim;
        }
        Ok((out, Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real>(
            op: &LoraMatmul,
            [x, a, b]: [&Tensor; 3],
            g: &Tensor,
        ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            let args = contiguous([x, a, b, g, &op.weight])?;
            let locked = args.each_ref().map(|t| t.storage_and_layout());
            let dims = op.dims(locked[0].1, locked[1].1, locked[2].1)?;
            let [x_, a_, b_, g_, w_] = [0, 1, 2, 3, 4].map(|i| elements::<T>(&locked[i]));
            let s = T::from(op.scale).expect("a finite scale");
            let want = [x.track_op(), a.track_op(), b.track_op()];
            let grads = backward(x_?, w_?, a_?, b_?, g_?, dims, s, want);
            let [dx, da, db] = [0, 1, 2].map(|i| {
                let arg = [x, a, b][i];
                grads[i]
                    .clone()
                    .map(|d| Tensor::from_vec(d, arg.shape(), arg.device()))
                    .transpose()
            });
            Ok((dx?, da?, db?))
        }
        match x.dtype() {
            DType::F32 => run::<f32>(self, [x, a, b], g),
            DType::F64 => run::<f64>(self, [x, a, b], g),
            other => candle_core::bail!("lora-matmul: unsupported dtype {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn random(rng: &mut StdRng, shape: (usize, usize)) -> Tensor {
        let v: Vec<f64> = (0..shape.0 * shape.1)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn assert_close(x: &Tensor, y: &Tensor) {
        assert_eq!(x.shape(), y.shape());
        for (x, y) in flat(x).iter().zip(flat(y)) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
    }

    #[test]
    fn the_fused_projection_gives_the_primitive_values_and_gradients() {
        // Arrange: rows 5, in 7, out 3, rank 2; weighted output so every element's gradient counts.
        let mut rng = StdRng::seed_from_u64(1);
        let x = Var::from_tensor(&random(&mut rng, (5, 7))).unwrap();
        let a = Var::from_tensor(&random(&mut rng, (2, 7))).unwrap();
        let b = Var::from_tensor(&random(&mut rng, (3, 2))).unwrap();
        let (w, g) = (random(&mut rng, (3, 7)), random(&mut rng, (5, 3)));
        let scale = 1.5;
        let op = || LoraMatmul {
            weight: w.clone(),
            scale,
        };

        // Act
        let fused = x.apply_op3(&a, &b, op()).unwrap();
        let fused_grads = (&fused * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let branch = ((x.matmul(&a.t().unwrap()).unwrap() * scale).unwrap())
            .matmul(&b.t().unwrap())
            .unwrap();
        let primitive = (x.matmul(&w.t().unwrap()).unwrap() + branch).unwrap();
        let grads = (&primitive * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        // Assert
        assert_close(&fused, &primitive);
        for var in [&x, &a, &b] {
            assert_close(
                fused_grads.get(var.as_tensor()).unwrap(),
                grads.get(var.as_tensor()).unwrap(),
            );
        }
    }

    #[test]
    fn frozen_lora_weights_get_no_gradient() {
        // Arrange: A and B as plain tensors (a fixed adapter), x trainable.
        let mut rng = StdRng::seed_from_u64(2);
        let x = Var::from_tensor(&random(&mut rng, (4, 6))).unwrap();
        let (a, b) = (random(&mut rng, (3, 6)), random(&mut rng, (2, 3)));
        let op = LoraMatmul {
            weight: random(&mut rng, (2, 6)),
            scale: 0.5,
        };

        // Act
        let grads = x
            .apply_op3(&a, &b, op)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        // Assert
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(&a).is_none() && grads.get(&b).is_none());
    }
}
