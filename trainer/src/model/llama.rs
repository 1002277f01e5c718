//! A llama-family causal LM (Llama/SmolLM2, Mistral, Qwen2) for training, from differentiable ops only.
//!
//! Architecture as in Hugging Face `modeling_llama.py` (rotate-half RoPE, RMSNorm, SwiGLU MLP, GQA);
//! Qwen2 adds q/k/v biases, Mistral an optional sliding window. candle's fused `rms_norm`,
//! `softmax_last_dim` and `rope` drop gradients silently (`research/trainer.md` §1), so norm, softmax
//! and RoPE are written out here from primitives, and projections go through [`FrozenLinear`] so frozen
//! weights hold no gradients. On the CPU the norms, attention, SwiGLU and the head's log-probs run as
//! the fused ops of `model::ops` instead, each with its own backward and checked against these
//! primitives (`guards`). The input is a packed batch [rows, hidden]; the [`Frame`] says where each
//! sequence lies.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use super::compute::matmul;
use super::config::Config;
use super::frame::{Frame, Kernels, SequenceTables};
use super::frozen::FrozenLinear;
use super::lora::{LoraConfig, LoraLinear, LoraModule, LoraPass};
use super::ops::{self, CausalAttention, HeadLogprobs, RmsNormOp, SwiGlu};
use super::seed::gradient_seed;
use crate::Result;

/// `x / sqrt(mean(x²) + eps) · w`, written out so it keeps its backward.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
        if fused {
            return x.contiguous()?.apply_op1(RmsNormOp {
                weight: self.weight.clone(),
                eps: self.eps,
            });
        }
        let normed = in_f32(x, |x| {
            let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
            x.broadcast_div(&rms)
        })?;
        normed.broadcast_mul(&self.weight)
    }
}

/// `f(x)` computed in f32 when `x` is bf16/f16, cast back to `x`'s dtype: reductions (RMSNorm's
/// mean, softmax's sum) lose too much in bf16's 8-bit mantissa, as in Hugging Face's Llama.
fn in_f32(
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => f(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype()),
        _ => f(x),
    }
}

/// Rotate-half RoPE (HF layout): `x·cos + rotate_half(x)·sin`; `x` is [b, heads, t, d].
fn rope(x: &Tensor, tables: &SequenceTables) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&tables.cos)? + rotated.broadcast_mul(&tables.sin)?
}

/// Softmax over the last dimension from primitives (`softmax_last_dim` has no backward).
fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: LoraLinear,
    up_proj: LoraLinear,
    down_proj: LoraLinear,
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: LoraLinear,
    k_proj: LoraLinear,
    v_proj: LoraLinear,
    o_proj: LoraLinear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// One transformer block; public within the crate so training can recompute it layer by layer.
#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

/// Builds `LoraLinear`s named after their checkpoint tensors, registering the adapted ones.
struct Builder<'a> {
    lora: &'a LoraConfig,
    modules: Vec<LoraModule>,
}

impl Builder<'_> {
    fn linear(
        &mut self,
        (in_dim, out_dim): (usize, usize),
        bias: bool,
        vb: &VarBuilder,
        name: &str,
    ) -> candle_core::Result<LoraLinear> {
        let vb = vb.pp(name);
        let base = FrozenLinear::load(in_dim, out_dim, bias, vb.clone())?;
        let path = vb.prefix();
        Ok(LoraLinear::new(
            base,
            path,
            name,
            self.lora,
            &mut self.modules,
        ))
    }
}

impl Mlp {
    fn new(cfg: &Config, b: &mut Builder, vb: &VarBuilder) -> candle_core::Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: b.linear((h, i), false, vb, "gate_proj")?,
            up_proj: b.linear((h, i), false, vb, "up_proj")?,
            down_proj: b.linear((i, h), false, vb, "down_proj")?,
        })
    }

    fn forward(&self, x: &Tensor, pass: &LoraPass, fused: bool) -> candle_core::Result<Tensor> {
        self.down_proj
            .forward(&self.gated(x, pass, fused)?, pass, fused)
    }

    /// `silu(gate(x))·up(x)`, the down projection's input.
    fn gated(&self, x: &Tensor, pass: &LoraPass, fused: bool) -> candle_core::Result<Tensor> {
        let gate = self.gate_proj.forward(x, pass, fused)?;
        let up = self.up_proj.forward(x, pass, fused)?;
        if fused {
            gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
        } else {
            gate.silu()? * up
        }
    }
}

impl Attention {
    fn new(cfg: &Config, b: &mut Builder, vb: &VarBuilder) -> candle_core::Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let (heads, kv_heads) = (cfg.num_attention_heads, cfg.kv_heads());
        let bias = cfg.qkv_bias();
        Ok(Self {
            q_proj: b.linear((h, heads * d), bias, vb, "q_proj")?,
            k_proj: b.linear((h, kv_heads * d), bias, vb, "k_proj")?,
            v_proj: b.linear((h, kv_heads * d), bias, vb, "v_proj")?,
            o_proj: b.linear((heads * d, h), cfg.attention_bias, vb, "o_proj")?,
            heads,
            kv_heads,
            head_dim: d,
        })
    }

    /// `x` [rows, hidden] → [rows, hidden], each packed sequence causal over itself.
    fn forward(&self, x: &Tensor, frame: &Frame, pass: &LoraPass) -> candle_core::Result<Tensor> {
        let fused = frame.fused();
        let q = self.q_proj.forward(x, pass, fused)?.contiguous()?;
        let k = self.k_proj.forward(x, pass, fused)?.contiguous()?;
        let v = self.v_proj.forward(x, pass, fused)?.contiguous()?;
        let y = match &frame.kernels {
            Kernels::Fused => {
                let op =
                    CausalAttention::new(frame.heads, frame.segments.clone(), frame.rope.clone());
                q.apply_op3(&k, &v, op)?
            }
            Kernels::Primitive(tables) => {
                let parts = frame
                    .segments
                    .iter()
                    .zip(tables)
                    .map(|(&(start, len), t)| {
                        let rows = |y: &Tensor| y.narrow(0, start, len);
                        self.attend(&rows(&q)?, &rows(&k)?, &rows(&v)?, t)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)?
            }
        };
        self.o_proj.forward(&y, pass, fused)
    }

    /// One sequence's attention from primitive ops: projections [t, n·d] → [t, heads·d].
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        tables: &SequenceTables,
    ) -> candle_core::Result<Tensor> {
        let t = q.dim(0)?;
        let split = |y: &Tensor, n: usize| -> candle_core::Result<Tensor> {
            y.reshape((1, t, n, self.head_dim))?.transpose(1, 2)
        };
        let q = rope(&split(q, self.heads)?, tables)?;
        let k = rope(&split(k, self.kv_heads)?, tables)?;
        let v = split(v, self.kv_heads)?;
        let (k, v) = (self.repeat_kv(k)?, self.repeat_kv(v)?.contiguous()?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (matmul(&q, &k.t()?)? * scale)?.broadcast_add(&tables.mask)?;
        let y = matmul(&in_f32(&scores, softmax)?, &v)?;
        y.transpose(1, 2)?.reshape((t, self.heads * self.head_dim))
    }

    /// [b, kv_heads, t, d] → [b, heads, t, d], each key/value head shared by `heads / kv_heads`.
    fn repeat_kv(&self, x: Tensor) -> candle_core::Result<Tensor> {
        let n = self.heads / self.kv_heads;
        if n == 1 {
            return Ok(x);
        }
        let (b, kv, t, d) = x.dims4()?;
        Tensor::cat(&vec![&x; n], 2)?.reshape((b, kv * n, t, d))
    }
}

impl DecoderLayer {
    fn new(cfg: &Config, b: &mut Builder, vb: VarBuilder) -> candle_core::Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::load(h, eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(cfg, b, &vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::load(h, eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::new(cfg, b, &vb.pp("mlp"))?,
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        frame: &Frame,
        pass: &LoraPass,
    ) -> candle_core::Result<Tensor> {
        let (h, normed) = self.attention_half(x, frame, pass)?;
        self.mlp.forward(&normed, pass, frame.fused())? + h
    }

    /// `h = x + attention(norm(x))`, the residual stream between the two halves of the block, and
    /// `norm(h)`, the MLP's input.
    fn attention_half(
        &self,
        x: &Tensor,
        frame: &Frame,
        pass: &LoraPass,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let normed = self.input_layernorm.forward(x, frame.fused())?;
        let h = (self.self_attn.forward(&normed, frame, pass)? + x)?;
        let normed = self.post_attention_layernorm.forward(&h, frame.fused())?;
        Ok((h, normed))
    }

    /// A scalar whose backward gives `x` and the adapter the gradients of `Σ forward(x)·g_out`:
    /// how per-layer recomputation carries `g_out` down through this layer.
    ///
    /// The down projection's forward is skipped when it has no adapter in this pass: for a frozen
    /// `y = a·Wᵀ + b`, `Σ y·g = Σ a·(g·W) + const`, and `g·W` is the product its backward makes
    /// anyway. That is a quarter of the layer's matmul work that recomputation no longer repeats.
    pub(crate) fn backward_seed(
        &self,
        x: &Tensor,
        frame: &Frame,
        pass: &LoraPass,
        g_out: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (h, normed) = self.attention_half(x, frame, pass)?;
        let residual = gradient_seed(&h, g_out)?;
        let gated = self.mlp.gated(&normed, pass, frame.fused())?;
        let down = &self.mlp.down_proj;
        let branch = match down.frozen_weight(pass) {
            Some(weight) => gradient_seed(&gated, &matmul(g_out, weight)?)?,
            None => gradient_seed(&down.forward(&gated, pass, frame.fused())?, g_out)?,
        };
        residual + branch
    }
}

/// The frozen base model with its LoRA module list; adapters are supplied per pass.
#[derive(Debug, Clone)]
pub(crate) struct Llama {
    pub(crate) config: Config,
    embed_tokens: Tensor,
    pub(crate) layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: FrozenLinear,
    pub(crate) modules: Vec<LoraModule>,
    dtype: DType,
    device: Device,
}

impl Llama {
    pub(crate) fn new(config: Config, lora: &LoraConfig, vb: VarBuilder) -> Result<Self> {
        let mut builder = Builder {
            lora,
            modules: Vec::new(),
        };
        let (h, v) = (config.hidden_size, config.vocab_size);
        let embed_tokens = vb.pp("model.embed_tokens").get((v, h), "weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&config, &mut builder, vb.pp(format!("model.layers.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = RmsNorm::load(h, config.rms_norm_eps, vb.pp("model.norm"))?;
        let lm_head = if config.tie_word_embeddings {
            FrozenLinear::new(embed_tokens.clone(), None)
        } else {
            FrozenLinear::load(h, v, false, vb.pp("lm_head"))?
        };
        Ok(Self {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            modules: builder.modules,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// The frame of a batch packing sequences of `lengths`, with the fused kernels where they run.
    pub(crate) fn frame(&self, lengths: &[usize]) -> Result<Frame> {
        let fused = self.device.is_cpu() && matches!(self.dtype, DType::F32 | DType::F64);
        Frame::new(&self.config, lengths, fused, self.dtype, &self.device)
    }

    #[cfg(test)]
    /// The same frame with the primitive ops only, to check the fused ones against.
    pub(crate) fn primitive_frame(&self, lengths: &[usize]) -> Result<Frame> {
        Frame::new(&self.config, lengths, false, self.dtype, &self.device)
    }

    /// Token ids [t] → embeddings [t, hidden].
    pub(crate) fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, &self.device)?;
        Ok(self.embed_tokens.index_select(&ids, 0)?)
    }

    /// Final norm then the LM head, on hidden states [n, hidden] → logits [n, vocab].
    pub(crate) fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(&self.norm.forward(hidden, false)?)?)
    }

    /// `log softmax(head(hidden) / temperature)[target]` per row of `hidden` [n, hidden] → [n].
    /// `keep_logits` trades memory for one head matmul fewer in the backward (`ops::head`).
    pub(crate) fn head_logprobs(
        &self,
        hidden: &Tensor,
        targets: &Arc<[u32]>,
        frame: &Frame,
        keep_logits: bool,
        temperature: f64,
    ) -> Result<Tensor> {
        let normed = self.norm.forward(hidden, frame.fused())?;
        // The head has no bias, so dividing its input divides the logits: `logits / T`.
        let normed = if temperature == 1.0 {
            normed
        } else {
            (normed * (1.0 / temperature))?
        };
        if frame.fused() && ops::fusable(&normed) {
            let weight = self.lm_head.weight().clone();
            let op = HeadLogprobs::new(weight, targets.clone(), keep_logits);
            return Ok(normed.contiguous()?.apply_op1(op)?);
        }
        let chunks = (0..targets.len())
            .step_by(HEAD_CHUNK)
            .map(|start| {
                let len = HEAD_CHUNK.min(targets.len() - start);
                // Log-probs are f32 or wider whatever the base's dtype: they feed the losses.
                let logits = self.lm_head.forward(&normed.narrow(0, start, len)?)?;
                let logits = match logits.dtype() {
                    DType::BF16 | DType::F16 => logits.to_dtype(DType::F32)?,
                    _ => logits,
                };
                let ids = Tensor::new(&targets[start..start + len], &self.device)?.unsqueeze(1)?;
                Ok(log_softmax(&logits)?.gather(&ids, 1)?.squeeze(1)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&chunks, 0)?)
    }

    #[cfg(test)]
    /// Every base-model tensor (weights, biases, norms), for checks that training leaves them alone.
    pub(crate) fn base_tensors(&self) -> Vec<Tensor> {
        let mut out = vec![self.embed_tokens.clone(), self.norm.weight.clone()];
        out.extend(self.lm_head.tensors());
        for layer in &self.layers {
            let a = &layer.self_attn;
            let m = &layer.mlp;
            out.push(layer.input_layernorm.weight.clone());
            out.push(layer.post_attention_layernorm.weight.clone());
            for p in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj] {
                out.extend(p.base().tensors());
            }
            for p in [&m.gate_proj, &m.up_proj, &m.down_proj] {
                out.extend(p.base().tensors());
            }
        }
        out
    }
}

/// Rows per head evaluation on the primitive path: `[chunk, vocab]` logits at a time.
const HEAD_CHUNK: usize = 128;

/// `x − max − log Σ exp(x − max)` over the last dimension, from primitives.
fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}
