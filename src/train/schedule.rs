//! Learning-rate schedule, gradient clipping and SGD.

use ndarray::{ArrayD, ArrayViewD, Zip};

use super::optim::{Learnable, check_step_gradients};
use crate::{Error, Float, Result};

/// Linear warm-up then cosine decay, the CRATE recipe: for step t (from 0),
/// `lr_t = lr·(t + 1)/W` while `t < W`, then
/// `lr_t = min + (lr − min)·½(1 + cos(π·(t − W)/(T − W)))`, and `min` after `T` steps.
///
/// ```
/// use mcr2::train::WarmupCosine;
/// let s = WarmupCosine { lr: 1e-3, min_lr: 0.0, warmup_steps: 10, total_steps: 110 };
/// assert!((s.lr_at(0) - 1e-4).abs() < 1e-18);
/// assert_eq!(s.lr_at(9), 1e-3);
/// assert!((s.lr_at(60) - 5e-4).abs() < 1e-15);
/// assert_eq!(s.lr_at(500), 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WarmupCosine {
    /// The peak learning rate (> 0).
    pub lr: f64,
    /// The final learning rate (0 ≤ min_lr ≤ lr).
    pub min_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// All steps (≥ warmup_steps).
    pub total_steps: usize,
}

impl WarmupCosine {
    /// Errors unless the rates and step counts are consistent.
    pub fn check(&self) -> Result<()> {
        crate::validate::positive("lr", self.lr)?;
        if !(self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return Err(Error::InvalidParameter {
                name: "min_lr",
                value: self.min_lr.to_string(),
                reason: "must be in [0, lr]",
            });
        }
        if self.total_steps < self.warmup_steps {
            return Err(Error::InvalidParameter {
                name: "total_steps",
                value: self.total_steps.to_string(),
                reason: "must be at least warmup_steps",
            });
        }
        Ok(())
    }

    /// The learning rate of step `t` (from 0).
    pub fn lr_at(&self, t: usize) -> f64 {
        if t < self.warmup_steps {
            return self.lr * (t + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps);
        if span == 0 || t >= self.total_steps {
            return self.min_lr;
        }
        let progress = (t - self.warmup_steps) as f64 / span as f64;
        self.min_lr
            + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Scales `grads` so that their global norm `√(Σ ‖g‖²)` is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: factor `max_norm/(norm + 10⁻⁶)` when below 1) and returns the norm
/// before clipping. A non-finite norm is an error.
///
/// ```
/// use mcr2::train::clip_grad_norm;
/// use mcr2::ndarray::{ArrayD, IxDyn};
/// let mut grads = vec![ArrayD::from_elem(IxDyn(&[4]), 3.0f64)];
/// assert_eq!(clip_grad_norm(&mut grads, 1.0)?, 6.0);
/// assert!((grads[0][[0]] - 0.5 / (1.0 + 1e-6 / 6.0)).abs() < 1e-12);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn clip_grad_norm<T: Float>(grads: &mut [ArrayD<T>], max_norm: f64) -> Result<f64> {
    crate::validate::positive("max_norm", max_norm)?;
    let norm = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|v| v.as_f64() * v.as_f64())
        .sum::<f64>()
        .sqrt();
    if !norm.is_finite() {
        return Err(Error::InvalidParameter {
            name: "gradients",
            value: norm.to_string(),
            reason: "the global gradient norm is not finite",
        });
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = T::from_f64(coef);
        for g in grads.iter_mut() {
            g.mapv_inplace(|v| v * c);
        }
    }
    Ok(norm)
}

/// SGD's hyper-parameters (PyTorch's `torch.optim.SGD`, no dampening).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SgdConfig {
    /// Learning rate (> 0).
    pub lr: f64,
    /// Momentum μ ∈ [0, 1).
    pub momentum: f64,
    /// Nesterov momentum (needs μ > 0).
    pub nesterov: bool,
    /// L2 weight decay λ ≥ 0, added to the gradient.
    pub weight_decay: f64,
}

/// SGD with momentum as PyTorch steps it: `g ← g + λp`; `b ← g` at the first step, then
/// `b ← μb + g`; `g ← g + μb` (Nesterov) or `g ← b`; `p ← p − lr·g`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sgd<T> {
    config: SgdConfig,
    t: u64,
    names: Vec<String>,
    buffers: Vec<ArrayD<T>>,
}

impl<T: Float> Sgd<T> {
    /// Zero state for the model's `parameters`.
    pub fn new(parameters: &[(String, ArrayViewD<'_, T>)], config: SgdConfig) -> Result<Self> {
        crate::validate::positive("lr", config.lr)?;
        let bad = |name, v: f64, reason| {
            Err(Error::InvalidParameter {
                name,
                value: v.to_string(),
                reason,
            })
        };
        if !(0.0..1.0).contains(&config.momentum) {
            return bad("momentum", config.momentum, "must be in [0, 1)");
        }
        if config.nesterov && config.momentum == 0.0 {
            return bad("momentum", 0.0, "Nesterov momentum needs momentum > 0");
        }
        if !(config.weight_decay >= 0.0 && config.weight_decay.is_finite()) {
            return bad(
                "weight_decay",
                config.weight_decay,
                "must be finite and ≥ 0",
            );
        }
        Ok(Self {
            config,
            t: 0,
            names: parameters.iter().map(|(n, _)| n.clone()).collect(),
            buffers: parameters
                .iter()
                .map(|(_, p)| ArrayD::zeros(p.raw_dim()))
                .collect(),
        })
    }

    /// Sets the learning rate (for a schedule).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        crate::validate::positive("lr", lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// One step with `grads` (one per parameter, in order); a non-finite gradient is an
    /// error naming the parameter, before anything changes.
    pub fn step(&mut self, model: &mut impl Learnable<T>, grads: &[ArrayD<T>]) -> Result<()> {
        check_step_gradients(&self.names, &self.buffers, grads, self.t + 1)?;
        self.t += 1;
        let c = self.config;
        let (lr, mu, wd) = (
            T::from_f64(c.lr),
            T::from_f64(c.momentum),
            T::from_f64(c.weight_decay),
        );
        let first = self.t == 1;
        let mut i = 0;
        let buffers = &mut self.buffers;
        model.visit_parameters(&mut |_, mut p| {
            Zip::from(&mut p)
                .and(&mut buffers[i])
                .and(&grads[i])
                .for_each(|p, b, &g| {
                    let mut g = g + wd * *p;
                    if c.momentum != 0.0 {
                        *b = if first { g } else { mu * *b + g };
                        g = if c.nesterov { g + mu * *b } else { *b };
                    }
                    *p -= lr * g;
                });
            i += 1;
        })
    }
}
