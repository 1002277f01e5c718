//! The LM head's log-probability of each target token: `log softmax(x·Wᵀ)[target]`, row by row.
//!
//! Logits are made a block of rows at a time. With `keep`, each block's softmax stays for the
//! backward (the full-graph mode, whose memory grows with the batch anyway). Without it, a block is
//! dropped once each row's log-sum-exp and target logit are read, and the backward makes it again
//! from the kept log-sum-exps: the op then never holds more than one block ([`BLOCK`] elements, or
//! [`MIN_ROWS`] rows), whatever the number of response tokens. One more head matmul per step buys a
//! memory bound that does not grow with the batch (a 152k vocabulary makes each row 600 KiB in f32).

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::{matmul, Mat};
use super::{contiguous, cpu_slice, elements, storage, Real};

/// Logits made at once, in elements (64 MiB in f32): each block of rows re-reads the whole head
/// weight, so blocks are as tall as this allows, within [`MIN_ROWS`, `MAX_ROWS`].
const BLOCK: usize = 1 << 24;
pub(crate) const MIN_ROWS: usize = 64;
const MAX_ROWS: usize = 256;

/// `x` [n, hidden] → [n] log-probs of `targets` under the frozen head `weight` [vocab, hidden].
pub(crate) struct HeadLogprobs {
    weight: Tensor,
    targets: Arc<[u32]>,
    /// Log-sum-exp per row, written by the forward for the backward.
    lse: Mutex<Vec<f64>>,
    /// With `Some`, the forward keeps each block's softmax [rows, vocab] here for the backward.
    kept: Option<Mutex<Vec<CpuStorage>>>,
}

impl HeadLogprobs {
    pub(crate) fn new(weight: Tensor, targets: Arc<[u32]>, keep: bool) -> Self {
        Self {
            weight,
            targets,
            lse: Mutex::new(Vec::new()),
            kept: keep.then(|| Mutex::new(Vec::new())),
        }
    }

    /// `logits` [rows, vocab] of the block of rows starting at row `first`; returns its row count.
    fn logits<T: Real>(&self, x: &[T], w: &[T], first: usize, logits: &mut Vec<T>) -> usize {
        let (h, vocab) = (self.hidden(), w.len() / self.hidden());
        let rows = self.rows_per_block().min(x.len() / h - first);
        logits.resize(rows * vocab, T::zero());
        let block = Mat::new(&x[first * h..(first + rows) * h], rows, h);
        matmul(logits, block, Mat::new(w, vocab, h).t(), false, true);
        rows
    }

    fn rows_per_block(&self) -> usize {
        let vocab = self.weight.dims().first().copied().unwrap_or(1).max(1);
        (BLOCK / vocab).clamp(MIN_ROWS, MAX_ROWS)
    }

    fn hidden(&self) -> usize {
        self.weight.dims().last().copied().unwrap_or(1)
    }

    /// Log-probs, log-sum-exps and, with `keep`, each block's softmax.
    fn forward<T: Real>(
        &self,
        x: &[T],
        w: &[T],
        keep: bool,
    ) -> (Vec<T>, Vec<f64>, Vec<CpuStorage>) {
        let (n, vocab) = (x.len() / self.hidden(), w.len() / self.hidden());
        let (mut logp, mut lse) = (vec![T::zero(); n], vec![0.0; n]);
        let (mut logits, mut kept) = (Vec::new(), Vec::new());
        for first in (0..n).step_by(self.rows_per_block()) {
            let rows = self.logits(x, w, first, &mut logits);
            logp[first..first + rows]
                .par_iter_mut()
                .zip(&mut lse[first..first + rows])
                .zip(logits.par_chunks_mut(vocab))
                .enumerate()
                .for_each(|(i, ((logp, lse), row))| {
                    let max = row
                        .iter()
                        .fold(T::neg_infinity(), |m, &v| num_traits::Float::max(m, v));
                    let target = row[self.targets[first + i] as usize];
                    T::exp_shifted(row, max);
                    let sum = T::sum(row);
                    *lse = max.to_f64() + sum.to_f64().ln();
                    *logp = T::from_f64(target.to_f64() - *lse);
                    if keep {
                        let inv = sum.recip();
                        row.iter_mut().for_each(|p| *p *= inv);
                    }
                });
            if keep {
                kept.push(storage(std::mem::take(&mut logits)));
            }
        }
        (logp, lse, kept)
    }

    /// `dx = G·W` with `G_ij = g_i·(1[j = target_i] − softmax_ij)`, block by block.
    fn backward<T: Real>(
        &self,
        x: &[T],
        w: &[T],
        g: &[T],
        lse: &[f64],
        mut kept: Vec<CpuStorage>,
    ) -> candle_core::Result<Vec<T>> {
        let (h, n, vocab) = (self.hidden(), g.len(), w.len() / self.hidden());
        let mut dx = vec![T::zero(); n * h];
        let mut logits = Vec::new();
        kept.reverse();
        for first in (0..n).step_by(self.rows_per_block()) {
            let softmax = match kept.pop() {
                Some(block) => {
                    logits = T::cpu_storage_data(block)?;
                    true
                }
                None => false,
            };
            let rows = if softmax {
                logits.len() / vocab
            } else {
                self.logits(x, w, first, &mut logits)
            };
            logits
                .par_chunks_mut(vocab)
                .enumerate()
                .for_each(|(i, row)| {
                    let (g, lse) = (g[first + i], T::from_f64(lse[first + i]));
                    if !softmax {
                        T::exp_shifted(row, lse);
                    }
                    row.iter_mut().for_each(|v| *v = -g * *v);
                    let target = self.targets[first + i] as usize;
                    row[target] += g;
                });
            let dst = &mut dx[first * h..(first + rows) * h];
            matmul(
                dst,
                Mat::new(&logits, rows, vocab),
                Mat::new(w, vocab, h),
                false,
                true,
            );
        }
        Ok(dx)
    }

    fn run<T: Real>(&self, x: &[T]) -> candle_core::Result<Vec<T>> {
        let w = contiguous([&self.weight])?;
        let locked = w[0].storage_and_layout();
        let (logp, lse, kept) = self.forward(x, elements(&locked)?, self.kept.is_some());
        *lock(&self.lse)? = lse;
        if let Some(slot) = &self.kept {
            *lock(slot)? = kept;
        }
        Ok(logp)
    }

    fn run_backward<T: Real>(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let lse = lock(&self.lse)?;
        let kept = match &self.kept {
            Some(slot) => std::mem::take(&mut *lock(slot)?),
            None => Vec::new(),
        };
        let args = contiguous([x, g, &self.weight])?;
        let locked = args.each_ref().map(|t| t.storage_and_layout());
        let [x, g, w] = [0, 1, 2].map(|i| elements::<T>(&locked[i]));
        let dx = self.backward(x?, w?, g?, &lse, kept)?;
        Tensor::from_vec(dx, args[0].shape(), args[0].device())
    }
}

fn lock<V>(m: &Mutex<V>) -> candle_core::Result<std::sync::MutexGuard<'_, V>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg("head: lock poisoned".into()))
}

impl CustomOp1 for HeadLogprobs {
    fn name(&self) -> &'static str {
        "head-logprobs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, h) = l.shape().dims2()?;
        let (vocab, wh) = self.weight.dims2()?;
        if h != wh || n != self.targets.len() || s.dtype() != self.weight.dtype() {
            candle_core::bail!(
                "head: input {:?}, weight {:?}, {} targets",
                l.shape(),
                self.weight.shape(),
                self.targets.len()
            );
        }
        if self.targets.iter().any(|&t| t as usize >= vocab) {
            candle_core::bail!("head: a target id is outside the vocabulary of {vocab}");
        }
        let out = match s {
            CpuStorage::F32(_) => storage(self.run::<f32>(cpu_slice(s, l)?)?),
            CpuStorage::F64(_) => storage(self.run::<f64>(cpu_slice(s, l)?)?),
            _ => candle_core::bail!("head: unsupported dtype {:?}", s.dtype()),
        };
        Ok((out, Shape::from(n)))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(match x.dtype() {
            DType::F32 => self.run_backward::<f32>(x, g)?,
            DType::F64 => self.run_backward::<f64>(x, g)?,
            other => candle_core::bail!("head: unsupported dtype {other:?}"),
        }))
    }
}
