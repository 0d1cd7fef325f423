//! Optimizers with PyTorch's semantics.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Zip};

use crate::crate_alpha::{CrateAlphaBlock, CrateAlphaClassifier, Odl};
use crate::crate_layer::{CrateBlock, CrateClassifier, CrateEncoder, Ista, Mssa};
use crate::crate_mae::{CrateDecoderBlock, CrateMae};
use crate::nn::{LayerNorm, Linear, Mlp, ScopedWriter, TensorReader, Trainable};
use crate::tost::{CausalTssa, ToStBlock, Tssa};
use crate::{Error, Float, Result};

/// What an optimizer can step: a model whose parameters it can visit by name, in a fixed
/// order, and which recomputes what it derives from them afterwards.
pub trait Learnable<T: Float> {
    /// Calls `update(name, parameter)` for every parameter in order (see
    /// [`Trainable::update_parameters`]).
    fn visit_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()>;
}

macro_rules! learnable {
    ($($ty:ident),*) => {$(
        impl<T: Float> Learnable<T> for $ty<T> {
            fn visit_parameters(
                &mut self,
                update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
            ) -> Result<()> {
                self.update_parameters(update)
            }
        }
    )*};
}

learnable!(
    Linear,
    LayerNorm,
    Ista,
    Tssa,
    CausalTssa,
    ToStBlock,
    Mlp,
    Mssa,
    CrateBlock,
    CrateEncoder,
    CrateClassifier,
    Odl,
    CrateAlphaBlock,
    CrateAlphaClassifier,
    CrateDecoderBlock,
    CrateMae
);

/// AdamW's hyper-parameters (PyTorch's `torch.optim.AdamW`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AdamWConfig {
    /// Learning rate (> 0).
    pub lr: f64,
    /// β₁ ∈ [0, 1).
    pub beta1: f64,
    /// β₂ ∈ [0, 1).
    pub beta2: f64,
    /// ε added to the denominator (> 0).
    pub eps: f64,
    /// Decoupled weight decay (≥ 0).
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// PyTorch's default β₁.
    pub const DEFAULT_BETA1: f64 = 0.9;
    /// PyTorch's default β₂.
    pub const DEFAULT_BETA2: f64 = 0.999;
    /// PyTorch's default ε.
    pub const DEFAULT_EPS: f64 = 1e-8;
    /// PyTorch's default weight decay for AdamW.
    pub const DEFAULT_WEIGHT_DECAY: f64 = 0.01;

    /// PyTorch's defaults with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            beta1: Self::DEFAULT_BETA1,
            beta2: Self::DEFAULT_BETA2,
            eps: Self::DEFAULT_EPS,
            weight_decay: Self::DEFAULT_WEIGHT_DECAY,
        }
    }

    /// Errors unless every hyper-parameter is in its range.
    pub fn check(&self) -> Result<()> {
        crate::validate::positive("lr", self.lr)?;
        crate::validate::positive("eps", self.eps)?;
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::InvalidParameter {
                    name,
                    value: v.to_string(),
                    reason: "must be in [0, 1)",
                });
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "weight_decay",
                value: self.weight_decay.to_string(),
                reason: "must be finite and ≥ 0",
            });
        }
        Ok(())
    }
}

/// AdamW (Loshchilov & Hutter, decoupled weight decay) exactly as PyTorch steps it: for each
/// parameter p with gradient g, at step t,
///
/// `p ← p·(1 − lr·λ)`, `m ← m + (1 − β₁)(g − m)`, `v ← β₂ v + (1 − β₂) g²`,
/// `p ← p − (lr/(1 − β₁ᵗ)) · m / (√v/√(1 − β₂ᵗ) + ε)`.
///
/// The state (m, v, t) is kept per parameter in the model's parameter order.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW<T> {
    config: AdamWConfig,
    t: u64,
    names: Vec<String>,
    decay: Vec<bool>,
    m: Vec<ArrayD<T>>,
    v: Vec<ArrayD<T>>,
}

impl<T: Float> AdamW<T> {
    /// Zero state for the model's `parameters` (names and shapes), weight decay on all.
    pub fn new(parameters: &[(String, ArrayViewD<'_, T>)], config: AdamWConfig) -> Result<Self> {
        config.check()?;
        Ok(Self {
            config,
            t: 0,
            names: parameters.iter().map(|(n, _)| n.clone()).collect(),
            decay: vec![true; parameters.len()],
            m: parameters
                .iter()
                .map(|(_, p)| ArrayD::zeros(p.raw_dim()))
                .collect(),
            v: parameters
                .iter()
                .map(|(_, p)| ArrayD::zeros(p.raw_dim()))
                .collect(),
        })
    }

    /// The reference grouping (timm's `param_groups_weight_decay`, which the CRATE training
    /// scripts use): no weight decay on one-dimensional parameters (biases and the
    /// LayerNorms' weights), on names ending in `bias`, nor on `cls_token` and
    /// `pos_embedding`.
    pub fn with_reference_grouping(mut self) -> Self {
        for ((d, name), m) in self.decay.iter_mut().zip(&self.names).zip(&self.m) {
            *d = !(m.ndim() <= 1
                || name.ends_with("bias")
                || name == "cls_token"
                || name == "pos_embedding");
        }
        self
    }

    /// Whether each parameter (in order) is decayed.
    pub fn decayed(&self) -> &[bool] {
        &self.decay
    }

    /// The steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Sets the learning rate (for a schedule).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        crate::validate::positive("lr", lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// One step with `grads` (one per parameter, in order). A non-finite gradient is an
    /// error naming the parameter, before anything changes.
    pub fn step(&mut self, model: &mut impl Learnable<T>, grads: &[ArrayD<T>]) -> Result<()> {
        check_step_gradients(&self.names, &self.m, grads, self.t + 1)?;
        self.t += 1;
        let c = self.config;
        let t = self.t as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = T::from_f64(c.lr / bias1);
        let (w1, b2, w2) = (
            T::from_f64(1.0 - c.beta1),
            T::from_f64(c.beta2),
            T::from_f64(1.0 - c.beta2),
        );
        let (b2s, eps) = (T::from_f64(bias2_sqrt), T::from_f64(c.eps));
        let shrink = T::from_f64(1.0 - c.lr * c.weight_decay);
        let mut i = 0;
        let (ms, vs, decay) = (&mut self.m, &mut self.v, &self.decay);
        model.visit_parameters(&mut |_, mut p| {
            let (m, v, g) = (&mut ms[i], &mut vs[i], &grads[i]);
            if decay[i] {
                p.mapv_inplace(|x| x * shrink);
            }
            Zip::from(&mut p)
                .and(m)
                .and(v)
                .and(g)
                .for_each(|p, m, v, &g| {
                    *m += w1 * (g - *m);
                    *v = *v * b2 + w2 * g * g;
                    *p -= step_size * (*m / (v.sqrt() / b2s + eps));
                });
            i += 1;
        })
    }
}

impl<T: Float> AdamW<T> {
    /// Writes the state: `m.{name}`, `v.{name}` (the moments, in `T`), `hyper` (lr, β₁, β₂,
    /// ε, weight decay) and `state` (the step count and, per parameter, 1 where it is
    /// decayed), both in f64 so that a resumed run continues bit for bit.
    pub fn save(&self, writer: &mut ScopedWriter<'_>) {
        let c = self.config;
        let hyper = [c.lr, c.beta1, c.beta2, c.eps, c.weight_decay];
        writer.put_shaped("hyper", &[5], hyper.into_iter());
        let state = std::iter::once(self.t as f64)
            .chain(self.decay.iter().map(|&d| if d { 1.0 } else { 0.0 }));
        writer.put_shaped("state", &[1 + self.decay.len()], state);
        for ((name, m), v) in self.names.iter().zip(&self.m).zip(&self.v) {
            writer.put(&format!("m.{name}"), m);
            writer.put(&format!("v.{name}"), v);
        }
    }

    /// Reads a state written by [`save`](Self::save) for a model with these `parameters`
    /// (names and shapes must match).
    pub fn load(
        reader: &TensorReader<'_>,
        parameters: &[(String, ArrayViewD<'_, T>)],
    ) -> Result<Self> {
        let hyper = reader.vector::<f64>("hyper", 5)?;
        let config = AdamWConfig {
            lr: hyper[0],
            beta1: hyper[1],
            beta2: hyper[2],
            eps: hyper[3],
            weight_decay: hyper[4],
        };
        let mut out = Self::new(parameters, config)?;
        let state = reader.vector::<f64>("state", 1 + parameters.len())?;
        if state[0] < 0.0 || state[0].fract() != 0.0 || state[0] > 2f64.powi(53) {
            return Err(Error::InvalidWeights {
                name: "state".into(),
                reason: format!("step count {}", state[0]),
            });
        }
        out.t = state[0] as u64;
        for (d, &s) in out.decay.iter_mut().zip(state.iter().skip(1)) {
            *d = s != 0.0;
        }
        for (i, (name, p)) in parameters.iter().enumerate() {
            out.m[i] = reader.tensor(&format!("m.{name}"), p.shape())?;
            out.v[i] = reader.tensor(&format!("v.{name}"), p.shape())?;
        }
        Ok(out)
    }
}

/// Errors unless `grads` match the optimizer's state (one array per parameter, same shapes)
/// and are finite; a non-finite gradient names the parameter and the step.
pub(crate) fn check_step_gradients<T: Float>(
    names: &[String],
    state: &[ArrayD<T>],
    grads: &[ArrayD<T>],
    step: u64,
) -> Result<()> {
    // the shapes are checked without copying names or views: this runs at every step
    crate::nn::check_gradient_shapes(
        names
            .iter()
            .zip(state)
            .map(|(n, s)| (n.as_str(), s.shape())),
        grads,
    )?;
    for (g, name) in grads.iter().zip(names) {
        if g.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidWeights {
                name: name.clone(),
                reason: format!("non-finite gradient at step {step}"),
            });
        }
    }
    Ok(())
}
