//! Fused CPU ops with their own backward, for the training hot paths.
//!
//! candle's autograd allocates a tensor for every elementwise step and a gradient for every operand
//! (constants included), and its CPU elementwise kernels use one thread. Each op here does a whole
//! RMSNorm, SwiGLU, LoRA projection, causal attention or head log-prob in one pass spread over rayon's threads, and
//! gives gradients to its inputs only: the frozen weights it closes over get none, as with
//! `FrozenLinear`. Each has a primitive twin (`model::llama`, `logprobs`) that non-CPU devices use and
//! that the tests check it against, values and gradients.
//!
//! - `attention`: causal self-attention with RoPE over packed sequences ([`CausalAttention`]).
//! - `norm`: RMSNorm with a frozen weight ([`RmsNormOp`]).
//! - `swiglu`: `silu(gate) · up` ([`SwiGlu`]).
//! - `head`: the tied/untied LM head, log-softmax and target gather ([`HeadLogprobs`]).
//! - `lora`: a frozen projection with its LoRA branch ([`LoraMatmul`]).
//! - `matmul`: a bounds-checked wrapper over the `gemm` crate that candle itself calls.
//! - `vector`: `exp` and sums the compiler vectorises for f32.

mod attention;
mod head;
mod lora;
mod matmul;
mod norm;
mod swiglu;
mod vector;

pub(crate) use attention::{CausalAttention, Heads, RopeTable};
pub(crate) use head::HeadLogprobs;
pub(crate) use lora::LoraMatmul;
pub(crate) use norm::RmsNormOp;
pub(crate) use swiglu::SwiGlu;

use matmul::{matmul, Mat};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Storage, Tensor, WithDType};

/// The float types the ops are written for.
pub(crate) trait Real: WithDType + num_traits::Float {
    /// `x ← e^(x − shift)` for each element.
    fn exp_shifted(xs: &mut [Self], shift: Self);
    /// The sum of `xs`, in a fixed order.
    fn sum(xs: &[Self]) -> Self;
}

impl Real for f32 {
    fn exp_shifted(xs: &mut [Self], shift: Self) {
        vector::exp_shifted_f32(xs, shift)
    }

    fn sum(xs: &[Self]) -> Self {
        vector::sum_f32(xs)
    }
}

impl Real for f64 {
    fn exp_shifted(xs: &mut [Self], shift: Self) {
        xs.iter_mut().for_each(|x| *x = (*x - shift).exp());
    }

    fn sum(xs: &[Self]) -> Self {
        xs.iter().sum()
    }
}

/// Whether the fused ops can run on `t`: a CPU tensor of f32 or f64.
pub(crate) fn fusable(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The elements of a contiguous CPU storage view.
fn cpu_slice<'a, T: Real>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused op: non-contiguous input".into()))?;
    Ok(&T::cpu_storage_as_slice(storage)?[start..end])
}

/// A CPU tensor's storage, read-locked, with its layout.
type Locked<'a> = (std::sync::RwLockReadGuard<'a, Storage>, &'a Layout);

/// The elements of a locked contiguous CPU tensor.
fn elements<'a, T: Real>((storage, layout): &'a Locked<'a>) -> candle_core::Result<&'a [T]> {
    match &**storage {
        Storage::Cpu(s) => cpu_slice(s, layout),
        _ => candle_core::bail!("fused op: tensor is not on the CPU"),
    }
}

/// `ts` made contiguous (a no-op for those that are), to be locked for `elements`.
fn contiguous<const N: usize>(ts: [&Tensor; N]) -> candle_core::Result<[Tensor; N]> {
    let mut out = Vec::with_capacity(N);
    for t in ts {
        out.push(t.contiguous()?);
    }
    Ok(out.try_into().expect("N tensors"))
}

/// Wraps a kernel's output as the storage a `cpu_fwd` returns.
fn storage<T: Real>(data: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(data)
}

/// `x·Wᵀ` for a contiguous CPU input `x` [.., in] and a weight [out, in] of the same dtype.
pub(crate) fn frozen_matmul(
    x: &CpuStorage,
    layout: &Layout,
    weight: &Tensor,
) -> candle_core::Result<CpuStorage> {
    fn run<T: Real>(x: &[T], weight: &Tensor) -> candle_core::Result<CpuStorage> {
        let (out_dim, in_dim) = weight.dims2()?;
        let w = contiguous([weight])?;
        let locked = w[0].storage_and_layout();
        let rows = x.len() / in_dim.max(1);
        let mut y = vec![T::zero(); rows * out_dim];
        let w = Mat::new(elements(&locked)?, out_dim, in_dim).t();
        matmul(&mut y, Mat::new(x, rows, in_dim), w, false, true);
        Ok(storage(y))
    }
    if layout.dims().last() != weight.dims().last() || x.dtype() != weight.dtype() {
        candle_core::bail!(
            "frozen-matmul: input {:?} vs weight {:?}",
            layout.shape(),
            weight.shape()
        );
    }
    match x {
        CpuStorage::F32(_) => run::<f32>(cpu_slice(x, layout)?, weight),
        CpuStorage::F64(_) => run::<f64>(cpu_slice(x, layout)?, weight),
        _ => candle_core::bail!("frozen-matmul: unsupported dtype {:?}", x.dtype()),
    }
}
