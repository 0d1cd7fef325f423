//! Layer normalization over the feature axis of each token.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::{Error, Float, Result};

/// `LN(x) = (x − mean(x)) / √(var(x) + ε) ⊙ weight + bias`, over the last axis of each row,
/// with the biased variance (as PyTorch's `nn.LayerNorm`). Default ε = 1e-5.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerNorm<T> {
    pub(crate) weight: Array1<T>,
    pub(crate) bias: Array1<T>,
    pub(crate) eps: f64,
}

impl<T: Float> LayerNorm<T> {
    /// The default ε of the reference code.
    pub const DEFAULT_EPS: f64 = 1e-5;

    /// Weight 1 and bias 0 (PyTorch's initialization).
    pub fn new(dim: usize, eps: f64) -> Result<Self> {
        Self::from_parts(Array1::ones(dim), Array1::zeros(dim), eps)
    }

    /// From a given affine weight and bias (both of length dim).
    pub fn from_parts(weight: Array1<T>, bias: Array1<T>, eps: f64) -> Result<Self> {
        crate::validate::positive("layer norm eps", eps)?;
        if weight.is_empty() || weight.len() != bias.len() {
            return Err(Error::ShapeMismatch {
                what: "layer norm bias",
                expected: format!("{} entries (the weight's)", weight.len()),
                got: format!("{}", bias.len()),
            });
        }
        crate::validate::finite("layer norm weight", &weight.view().insert_axis(Axis(0)))?;
        crate::validate::finite("layer norm bias", &bias.view().insert_axis(Axis(0)))?;
        Ok(Self { weight, bias, eps })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// The affine weight.
    pub fn weight(&self) -> &Array1<T> {
        &self.weight
    }

    /// The affine bias.
    pub fn bias(&self) -> &Array1<T> {
        &self.bias
    }

    /// Normalizes every row (token) of `x` (n × dim).
    pub fn forward(&self, x: &ndarray::ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix("tokens", x)?;
        if x.ncols() != self.dim() {
            return Err(Error::ShapeMismatch {
                what: "tokens",
                expected: format!("{} features", self.dim()),
                got: format!("{} features", x.ncols()),
            });
        }
        Ok(self.apply(x.view()))
    }

    /// Normalizes every row of `x` (m × dim); `x` is assumed checked by the caller.
    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let d = T::from_usize(x.ncols());
        let eps = T::from_f64(self.eps);
        let mut out = x.as_standard_layout().into_owned();
        let (w, b) = (self.weight.as_slice(), self.bias.as_slice());
        for mut row in out.rows_mut() {
            let r = row.as_slice_mut().expect("standard layout");
            let mean = super::mssa::sum8(r) / d;
            for v in r.iter_mut() {
                *v -= mean;
            }
            let mut acc = [T::zero(); 8];
            let chunks = r.chunks_exact(8);
            let rest: T = chunks.remainder().iter().map(|&v| v * v).sum();
            for c in chunks {
                for k in 0..8 {
                    acc[k] += c[k] * c[k];
                }
            }
            let var = (acc.iter().copied().sum::<T>() + rest) / d;
            let inv = T::one() / (var + eps).sqrt();
            match (w, b) {
                (Some(w), Some(b)) => {
                    for ((v, &wk), &bk) in r.iter_mut().zip(w).zip(b) {
                        *v = *v * inv * wk + bk;
                    }
                }
                _ => {
                    for ((v, &wk), &bk) in r.iter_mut().zip(&self.weight).zip(&self.bias) {
                        *v = *v * inv * wk + bk;
                    }
                }
            }
        }
        out
    }
}
