//! What every layer of one forward pass shares: the packed sequences' extents, RoPE angles, and the
//! choice between the fused CPU ops and the primitive ones.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::config::Config;
use super::ops::{Heads, RopeTable};
use crate::{Error, Result};

/// Per-batch constants shared by every layer: where each packed sequence lies, its RoPE angles, and
/// which kernels run.
pub(crate) struct Frame {
    /// `(first row, length)` of each sequence in the packed batch.
    pub(super) segments: Arc<[(usize, usize)]>,
    pub(super) rope: Arc<RopeTable>,
    pub(super) heads: Heads,
    pub(super) kernels: Kernels,
}

/// The fused ops of `model::ops` (CPU, f32/f64), or the primitive ops, which need per-sequence tables.
pub(super) enum Kernels {
    Fused,
    Primitive(Vec<SequenceTables>),
}

/// RoPE tables [t, head_dim] and the causal mask [t, t] of one sequence, for the primitive ops.
pub(super) struct SequenceTables {
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    pub(super) mask: Tensor,
}

impl Frame {
    pub(super) fn new(
        cfg: &Config,
        lengths: &[usize],
        fused: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut segments = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for &len in lengths {
            if len == 0 {
                return Err(Error::Shape("empty token sequence".into()));
            }
            segments.push((start, len));
            start += len;
        }
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let kernels = if fused {
            Kernels::Fused
        } else {
            let tables = lengths
                .iter()
                .map(|&len| SequenceTables::new(cfg, len, dtype, device))
                .collect::<Result<_>>()?;
            Kernels::Primitive(tables)
        };
        Ok(Self {
            segments: segments.into(),
            rope: Arc::new(RopeTable::new(cfg.head_dim(), cfg.rope_theta, longest)),
            heads: Heads {
                heads: cfg.num_attention_heads,
                kv_heads: cfg.kv_heads(),
                head_dim: cfg.head_dim(),
                window: cfg.window(),
            },
            kernels,
        })
    }

    pub(crate) fn fused(&self) -> bool {
        matches!(self.kernels, Kernels::Fused)
    }
}

impl SequenceTables {
    fn new(cfg: &Config, len: usize, dtype: DType, device: &Device) -> Result<Self> {
        let dim = cfg.head_dim();
        let inv_freq: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / dim as f64))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, dim / 2), device)?;
        let pos = Tensor::arange(0u32, len as u32, device)?
            .to_dtype(DType::F64)?
            .reshape((len, 1))?;
        let freqs = pos.broadcast_mul(&inv_freq)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], 1)?;
        // A large finite value rather than -inf keeps `0 · inf` NaNs out of the backward pass.
        let window = cfg.window().unwrap_or(usize::MAX);
        let mask: Vec<f64> = (0..len * len)
            .map(|k| {
                let (i, j) = (k / len, k % len);
                if j > i || i - j >= window {
                    -1e9
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            mask: Tensor::from_vec(mask, (len, len), device)?.to_dtype(dtype)?,
        })
    }
}
