//! Causal self-attention with rotate-half RoPE over packed sequences, as one op with its own backward.
//!
//! Inputs are the projections as they come out of the matmuls, `q` [rows, heads·d] and `k`, `v`
//! [rows, kv_heads·d]; the output is [rows, heads·d], the layout `o_proj` takes. Each packed sequence
//! attends only to itself; query head `h` reads key/value head `h / (heads / kv_heads)` (HF's
//! `repeat_kv`). The forward keeps one log-sum-exp per row and head, and the backward recomputes the
//! probabilities from it (as FlashAttention does), so no [t, t] matrix outlives its task.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::{matmul, Mat};
use super::{contiguous, cpu_slice, elements, storage, Real};

/// RoPE angles by position within a sequence, for the first `head_dim / 2` frequencies (the second
/// half repeats them, as HF's `cat(freqs, freqs)`).
#[derive(Debug)]
pub(crate) struct RopeTable {
    half: usize,
    cos: Vec<f64>,
    sin: Vec<f64>,
}

impl RopeTable {
    pub(crate) fn new(head_dim: usize, theta: f64, len: usize) -> Self {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (
            Vec::with_capacity(len * half),
            Vec::with_capacity(len * half),
        );
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
            .collect();
        for pos in 0..len {
            for &inv in &inv_freq {
                let freq = pos as f64 * inv;
                cos.push(freq.cos());
                sin.push(freq.sin());
            }
        }
        Self { half, cos, sin }
    }

    /// The angles of `pos` as `T`, with `cos` and `sin` multiplied by `scale`.
    fn angles<T: Real>(&self, pos: usize, scale: f64) -> impl Iterator<Item = (T, T)> + '_ {
        let at = pos * self.half;
        let (cos, sin) = (&self.cos[at..at + self.half], &self.sin[at..at + self.half]);
        cos.iter()
            .zip(sin)
            .map(move |(&c, &s)| (cast(c * scale), cast(s * scale)))
    }

    /// `out = scale · (x·cos + rotate_half(x)·sin)` for one head vector at `pos`.
    fn rotate<T: Real>(&self, x: &[T], pos: usize, scale: f64, out: &mut [T]) {
        let (x1, x2) = x.split_at(self.half);
        let (o1, o2) = out.split_at_mut(self.half);
        for (i, (c, s)) in self.angles::<T>(pos, scale).enumerate() {
            o1[i] = x1[i] * c - x2[i] * s;
            o2[i] = x2[i] * c + x1[i] * s;
        }
    }

    /// The transpose of `rotate`: the gradient of `x` given the gradient `g` of the rotated vector.
    fn unrotate<T: Real>(&self, g: &[T], pos: usize, scale: f64, out: &mut [T]) {
        let (g1, g2) = g.split_at(self.half);
        let (o1, o2) = out.split_at_mut(self.half);
        for (i, (c, s)) in self.angles::<T>(pos, scale).enumerate() {
            o1[i] = g1[i] * c + g2[i] * s;
            o2[i] = g2[i] * c - g1[i] * s;
        }
    }
}

fn cast<T: Real>(v: f64) -> T {
    T::from_f64(v)
}

/// One forward or backward work item: a key/value head of one packed sequence.
#[derive(Clone, Copy)]
struct Task {
    start: usize,
    len: usize,
    group: usize,
}

/// `softmax(q·kᵀ/√d + causal mask)·v` per sequence and head, `q` and `k` rotated by RoPE.
pub(crate) struct CausalAttention {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Keys at distance ≥ `window` are masked too (Mistral's sliding window).
    window: usize,
    /// `(first row, length)` of each packed sequence.
    segments: Arc<[(usize, usize)]>,
    rope: Arc<RopeTable>,
    /// Log-sum-exp per (row, head), written by the forward for the backward.
    lse: Mutex<Vec<f64>>,
}

/// The attention geometry shared by every layer of a model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) window: Option<usize>,
}

impl CausalAttention {
    pub(crate) fn new(heads: Heads, segments: Arc<[(usize, usize)]>, rope: Arc<RopeTable>) -> Self {
        Self {
            heads: heads.heads,
            kv_heads: heads.kv_heads,
            head_dim: heads.head_dim,
            window: heads.window.unwrap_or(usize::MAX),
            segments,
            rope,
            lse: Mutex::new(Vec::new()),
        }
    }

    fn tasks(&self) -> Vec<Task> {
        self.segments
            .iter()
            .flat_map(|&(start, len)| {
                (0..self.kv_heads).map(move |group| Task { start, len, group })
            })
            .collect()
    }

    /// Columns `[lo, i]` of row `i` are visible.
    fn visible(&self, i: usize) -> std::ops::RangeInclusive<usize> {
        (i + 1).saturating_sub(self.window)..=i
    }

    /// Head `head` of rows `task.start..+len` from `x` (`width` columns), rotated and scaled when
    /// `rotate` is given: [len, d].
    fn gather<T: Real>(
        &self,
        x: &[T],
        width: usize,
        head: usize,
        task: Task,
        rotate: Option<f64>,
    ) -> Vec<T> {
        let d = self.head_dim;
        let mut out = vec![T::zero(); task.len * d];
        for (i, o) in out.chunks_mut(d).enumerate() {
            let at = (task.start + i) * width + head * d;
            let src = &x[at..at + d];
            match rotate {
                Some(scale) => self.rope.rotate(src, i, scale, o),
                None => o.copy_from_slice(src),
            }
        }
        out
    }

    /// Writes a task's [len, d] block for `head` into `dst` (`width` columns).
    fn scatter<T: Real>(&self, dst: &mut [T], width: usize, head: usize, task: Task, block: &[T]) {
        let d = self.head_dim;
        for (i, b) in block.chunks(d).enumerate() {
            let at = (task.start + i) * width + head * d;
            dst[at..at + d].copy_from_slice(b);
        }
    }

    fn rep(&self) -> usize {
        self.heads / self.kv_heads
    }

    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    fn forward<T: Real>(&self, q: &[T], k: &[T], v: &[T]) -> (Vec<T>, Vec<f64>) {
        let (d, rows) = (self.head_dim, q.len() / (self.heads * self.head_dim));
        let tasks = self.tasks();
        let blocks: Vec<(Vec<T>, Vec<f64>)> = tasks
            .par_iter()
            .map(|&t| self.forward_group(q, k, v, t))
            .collect();
        let (mut out, mut lse) = (vec![T::zero(); q.len()], vec![0.0; rows * self.heads]);
        for (task, (o, l)) in tasks.iter().zip(blocks) {
            for r in 0..self.rep() {
                let head = task.group * self.rep() + r;
                let block = &o[r * task.len * d..(r + 1) * task.len * d];
                self.scatter(&mut out, self.heads * d, head, *task, block);
                for i in 0..task.len {
                    lse[(task.start + i) * self.heads + head] = l[r * task.len + i];
                }
            }
        }
        (out, lse)
    }

    /// Output blocks [rep, len, d] and log-sum-exps [rep, len] of one key/value head.
    fn forward_group<T: Real>(&self, q: &[T], k: &[T], v: &[T], task: Task) -> (Vec<T>, Vec<f64>) {
        let (d, len, rep) = (self.head_dim, task.len, self.rep());
        let kv_width = self.kv_heads * d;
        let keys = self.gather(k, kv_width, task.group, task, Some(1.0));
        let values = self.gather(v, kv_width, task.group, task, None);
        let mut scores = vec![T::zero(); len * len];
        let mut out = vec![T::zero(); rep * len * d];
        let mut lse = vec![0.0; rep * len];
        for r in 0..rep {
            let head = task.group * rep + r;
            let query = self.gather(q, self.heads * d, head, task, Some(self.scale()));
            matmul(
                &mut scores,
                Mat::new(&query, len, d),
                Mat::new(&keys, len, d).t(),
                false,
                false,
            );
            for (i, row) in scores.chunks_mut(len).enumerate() {
                lse[r * len + i] = softmax_in_place(row, self.visible(i));
            }
            let o = &mut out[r * len * d..(r + 1) * len * d];
            matmul(
                o,
                Mat::new(&scores, len, len),
                Mat::new(&values, len, d),
                false,
                false,
            );
        }
        (out, lse)
    }

    /// Gradients of `q`, `k`, `v` given the output `o` and its gradient `g`.
    fn backward<T: Real>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &[T],
        g: &[T],
        lse: &[f64],
    ) -> [Vec<T>; 3] {
        let d = self.head_dim;
        let tasks = self.tasks();
        let blocks: Vec<[Vec<T>; 3]> = tasks
            .par_iter()
            .map(|&t| self.backward_group([q, k, v, o, g], lse, t))
            .collect();
        let (width, kv_width) = (self.heads * d, self.kv_heads * d);
        let (mut dq, mut dk, mut dv) = (
            vec![T::zero(); q.len()],
            vec![T::zero(); k.len()],
            vec![T::zero(); v.len()],
        );
        for (task, [bq, bk, bv]) in tasks.iter().zip(blocks) {
            for r in 0..self.rep() {
                let block = &bq[r * task.len * d..(r + 1) * task.len * d];
                self.scatter(&mut dq, width, task.group * self.rep() + r, *task, block);
            }
            self.scatter(&mut dk, kv_width, task.group, *task, &bk);
            self.scatter(&mut dv, kv_width, task.group, *task, &bv);
        }
        [dq, dk, dv]
    }

    /// `dq` blocks [rep, len, d], `dk` and `dv` [len, d] of one key/value head.
    fn backward_group<T: Real>(
        &self,
        [q, k, v, o, g]: [&[T]; 5],
        lse: &[f64],
        task: Task,
    ) -> [Vec<T>; 3] {
        let (d, len, rep, scale) = (self.head_dim, task.len, self.rep(), self.scale());
        let (width, kv_width) = (self.heads * d, self.kv_heads * d);
        let keys = self.gather(k, kv_width, task.group, task, Some(1.0));
        let values = self.gather(v, kv_width, task.group, task, None);
        let (mut probs, mut dscores) = (vec![T::zero(); len * len], vec![T::zero(); len * len]);
        let (mut dkeys, mut dv) = (vec![T::zero(); len * d], vec![T::zero(); len * d]);
        let mut dq = vec![T::zero(); rep * len * d];
        let mut dquery = vec![T::zero(); len * d];
        for r in 0..rep {
            let head = task.group * rep + r;
            let query = self.gather(q, width, head, task, Some(scale));
            let out = self.gather(o, width, head, task, None);
            let dout = self.gather(g, width, head, task, None);
            matmul(
                &mut probs,
                Mat::new(&query, len, d),
                Mat::new(&keys, len, d).t(),
                false,
                false,
            );
            for (i, row) in probs.chunks_mut(len).enumerate() {
                let lse: T = cast(lse[(task.start + i) * self.heads + head]);
                let visible = self.visible(i);
                let (lo, hi) = (*visible.start(), *visible.end());
                T::exp_shifted(&mut row[lo..=hi], lse);
                row[..lo].fill(T::zero());
                row[hi + 1..].fill(T::zero());
            }
            matmul(
                &mut dv,
                Mat::new(&probs, len, len).t(),
                Mat::new(&dout, len, d),
                true,
                false,
            );
            matmul(
                &mut dscores,
                Mat::new(&dout, len, d),
                Mat::new(&values, len, d).t(),
                false,
                false,
            );
            for i in 0..len {
                let row = i * len..(i + 1) * len;
                let (o_i, g_i) = (&out[i * d..(i + 1) * d], &dout[i * d..(i + 1) * d]);
                let delta = o_i
                    .iter()
                    .zip(g_i)
                    .fold(T::zero(), |acc, (&a, &b)| acc + a * b);
                for (ds, &p) in dscores[row.clone()].iter_mut().zip(&probs[row]) {
                    *ds = p * (*ds - delta);
                }
            }
            matmul(
                &mut dquery,
                Mat::new(&dscores, len, len),
                Mat::new(&keys, len, d),
                false,
                false,
            );
            let block = &mut dq[r * len * d..(r + 1) * len * d];
            for (i, (dst, src)) in block.chunks_mut(d).zip(dquery.chunks(d)).enumerate() {
                self.rope.unrotate(src, i, scale, dst);
            }
            matmul(
                &mut dkeys,
                Mat::new(&dscores, len, len).t(),
                Mat::new(&query, len, d),
                true,
                false,
            );
        }
        let mut dk = vec![T::zero(); len * d];
        for (i, (dst, src)) in dk.chunks_mut(d).zip(dkeys.chunks(d)).enumerate() {
            self.rope.unrotate(src, i, 1.0, dst);
        }
        [dq, dk, dv]
    }

    fn check(&self, q: &Layout, k: &Layout, v: &Layout) -> candle_core::Result<usize> {
        let (rows, width) = q.shape().dims2()?;
        let kv = (rows, self.kv_heads * self.head_dim);
        let end = self.segments.last().map_or(0, |&(s, l)| s + l);
        if width != self.heads * self.head_dim
            || k.shape().dims2()? != kv
            || v.shape().dims2()? != kv
            || end != rows
        {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} do not match {} heads, {} kv heads, {rows} rows",
                q.shape(),
                k.shape(),
                v.shape(),
                self.heads,
                self.kv_heads
            );
        }
        Ok(rows)
    }

    fn run_forward<T: Real>(&self, [q, k, v]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        let (out, lse) = self.forward(q, k, v);
        *self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: lock poisoned".into()))? = lse;
        Ok(storage(out))
    }

    fn run_backward<T: Real>(&self, args: [&Tensor; 5]) -> candle_core::Result<[Tensor; 3]> {
        let lse = self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: lock poisoned".into()))?;
        let args = contiguous(args)?;
        let locked = args.each_ref().map(|t| t.storage_and_layout());
        let [q, k, v, o, g] = [0, 1, 2, 3, 4].map(|i| elements::<T>(&locked[i]));
        let [dq, dk, dv] = self.backward(q?, k?, v?, o?, g?, &lse);
        let [q, k, v, ..] = &args;
        Ok([
            Tensor::from_vec(dq, q.shape(), q.device())?,
            Tensor::from_vec(dk, k.shape(), k.device())?,
            Tensor::from_vec(dv, v.shape(), v.device())?,
        ])
    }
}

/// Softmax over `visible` in place (zero elsewhere); returns the log-sum-exp.
fn softmax_in_place<T: Real>(row: &mut [T], visible: std::ops::RangeInclusive<usize>) -> f64 {
    let (lo, hi) = (*visible.start(), *visible.end());
    let max = row[lo..=hi]
        .iter()
        .fold(T::neg_infinity(), |m, &x| num_traits::Float::max(m, x));
    T::exp_shifted(&mut row[lo..=hi], max);
    let sum = T::sum(&row[lo..=hi]);
    let inv = sum.recip();
    row[lo..=hi].iter_mut().for_each(|x| *x *= inv);
    row[..lo].fill(T::zero());
    row[hi + 1..].fill(T::zero());
    max.to_f64() + sum.to_f64().ln()
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.check(l1, l2, l3)?;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => self
                .run_forward::<f32>([cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?])?,
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => self
                .run_forward::<f64>([cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?])?,
            _ => candle_core::bail!("attention: q, k, v must all be f32 or all f64"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let args = [q, k, v, res, grad];
        let [dq, dk, dv] = match q.dtype() {
            candle_core::DType::F32 => self.run_backward::<f32>(args)?,
            candle_core::DType::F64 => self.run_backward::<f64>(args)?,
            other => candle_core::bail!("attention: unsupported dtype {other:?}"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}
