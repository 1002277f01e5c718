//! AdamW over the LoRA parameters only, with global-norm clipping and a warmup + decay schedule.
//!
//! Written out rather than `candle_nn::AdamW`, which silently skips a var without a gradient
//! (`research/trainer.md` §1) and offers no clipping; the update is PyTorch's `AdamW` (decoupled weight
//! decay, bias-corrected moments) and the schedule Hugging Face's `get_{linear,cosine}_schedule_with_warmup`.
//! Deterministic: no randomness, a fixed summation order.

use candle_core::{Tensor, Var};

use crate::{Error, Result};

/// How the learning rate decays after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    Constant,
    /// Linearly to 0 at `total_steps` (SPPO's and DPO's choice).
    #[default]
    Linear,
    /// Half a cosine to 0 at `total_steps` (INPO's, RLHFlow's).
    Cosine,
}

/// Optimiser settings; `Default`: lr 5e-6, betas (0.9, 0.999), eps 1e-8, no weight decay, clipping
/// at norm 1.0 (the HF Trainer's default), 10% warmup, linear decay over 100 steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_grad_norm: Option<f64>,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub schedule: Schedule,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 5e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            warmup_steps: 10,
            total_steps: 100,
            schedule: Schedule::Linear,
        }
    }
}

impl OptimConfig {
    /// The learning rate of optimiser step `step` (0-based), as the HF schedulers compute it.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Linear => self.lr * (1.0 - progress),
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }

    fn check(&self) -> Result<()> {
        let ok = self.lr >= 0.0
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.weight_decay >= 0.0
            && self.max_grad_norm.is_none_or(|m| m > 0.0);
        if ok {
            Ok(())
        } else {
            Err(Error::Setting(format!(
                "optimiser settings out of range: {self:?}"
            )))
        }
    }
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct UpdateStats {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

/// AdamW state for a fixed list of vars.
#[derive(Debug)]
pub(crate) struct AdamW {
    config: OptimConfig,
    moments: Vec<Option<(Tensor, Tensor)>>,
    step: usize,
}

impl AdamW {
    pub(crate) fn new(config: OptimConfig, n_vars: usize) -> Result<Self> {
        config.check()?;
        Ok(Self {
            config,
            moments: vec![None; n_vars],
            step: 0,
        })
    }

    /// One update of `vars` from `grads` (same order; a missing gradient counts as zero).
    pub(crate) fn step(&mut self, vars: &[&Var], grads: &[Option<Tensor>]) -> Result<UpdateStats> {
        if vars.len() != grads.len() || vars.len() != self.moments.len() {
            return Err(Error::Shape(
                "vars, grads and optimiser state differ in length".into(),
            ));
        }
        let mut squares = 0.0;
        for g in grads.iter().flatten() {
            squares += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        let grad_norm = squares.sqrt();
        let clip = match self.config.max_grad_norm {
            Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
            _ => 1.0,
        };
        let c = self.config;
        let lr = c.lr_at(self.step);
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for ((var, grad), moments) in vars.iter().zip(grads).zip(&mut self.moments) {
            let g = match grad {
                Some(g) => (g * clip)?,
                None => var.zeros_like()?,
            };
            let (m, v) = match moments.take() {
                Some((m, v)) => (m, v),
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * c.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            *moments = Some((m, v));
        }
        Ok(UpdateStats { grad_norm, lr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn linear_warmup_of_2_then_decay_over_10_steps_gives_0_half_1_then_down_to_0() {
        let c = OptimConfig {
            lr: 1.0,
            warmup_steps: 2,
            total_steps: 10,
            ..OptimConfig::default()
        };
        let lrs: Vec<f64> = [0, 1, 2, 6, 10, 12].iter().map(|&s| c.lr_at(s)).collect();
        assert_eq!(lrs, vec![0.0, 0.5, 1.0, 0.5, 0.0, 0.0]);
        let cosine = OptimConfig {
            schedule: Schedule::Cosine,
            ..c
        };
        assert!((cosine.lr_at(6) - 0.5).abs() < 1e-12);
        assert!((cosine.lr_at(4) - 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos())).abs() < 1e-12);
    }

    // PyTorch: torch.optim.AdamW([p], lr=0.1, weight_decay=0.01) with p = [1, -2], g = [0.5, -4],
    // after clip_grad_norm_(max_norm=1.0): first step p = [0.899, -1.898] (each moves by lr·sign(g)
    // after decay p·(1 − lr·wd)), since m̂/√v̂ = ±1 on step one.
    #[test]
    fn the_first_adamw_step_moves_each_weight_by_lr_against_its_gradient_after_decay() {
        let var = Var::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
        let grad = Tensor::new(&[0.5f64, -4.0], &Device::Cpu).unwrap();
        let config = OptimConfig {
            lr: 0.1,
            weight_decay: 0.01,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            ..OptimConfig::default()
        };
        let mut adam = AdamW::new(config, 1).unwrap();
        let stats = adam.step(&[&var], &[Some(grad)]).unwrap();
        assert!((stats.grad_norm - 16.25f64.sqrt()).abs() < 1e-12);
        let p: Vec<f64> = var.as_tensor().to_vec1().unwrap();
        assert!(
            (p[0] - 0.899).abs() < 1e-6 && (p[1] + 1.898).abs() < 1e-6,
            "{p:?}"
        );
    }
}
