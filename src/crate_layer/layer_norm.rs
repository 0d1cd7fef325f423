//! Layer normalization over the feature axis of each token.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::{Error, Float, Result};

/// `LN(x) = (x − mean(x)) / √(var(x) + ε) ⊙ weight + bias`, over the last axis of each row,
/// with the biased variance (as PyTorch's `nn.LayerNorm`). Default ε = 1e-5.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "LayerNormRepr<T>", into = "LayerNormRepr<T>")
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: Float + serde::Serialize",
        deserialize = "T: Float + serde::Deserialize<'de>"
    ))
)]
pub struct LayerNorm<T: Float> {
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
        // contiguous copies, whatever the caller's strides
        let weight = weight.as_standard_layout().into_owned();
        let bias = bias.as_standard_layout().into_owned();
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
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        Ok(self.apply(x.view()))
    }

    /// Normalizes every row of `x` (m × dim); `x` is assumed checked by the caller.
    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut out = x.as_standard_layout().into_owned();
        self.apply_in_place(&mut out);
        out
    }

    /// Normalizes every row of a standard-layout `a` in place.
    pub(crate) fn apply_in_place(&self, a: &mut Array2<T>) {
        let dim = a.ncols();
        let d = T::from_usize(dim);
        let eps = T::from_f64(self.eps);
        let w = self.weight.as_slice().expect("contiguous weight");
        let b = self.bias.as_slice().expect("contiguous bias");
        let flat = a.as_slice_mut().expect("standard layout");
        for xs in flat.chunks_exact_mut(dim) {
            let mean = crate::kernels::sum8(xs) / d;
            // Σ (x − mean)², eight independent lanes
            let mut acc = [T::zero(); 8];
            let chunks = xs.chunks_exact(8);
            let mut rest = T::zero();
            for &v in chunks.remainder() {
                rest += (v - mean) * (v - mean);
            }
            for c in chunks {
                for k in 0..8 {
                    let t = c[k] - mean;
                    acc[k] += t * t;
                }
            }
            let var = (((acc[0] + acc[4]) + (acc[1] + acc[5]))
                + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
                + rest)
                / d;
            let inv = T::one() / (var + eps).sqrt();
            for ((v, &wk), &bk) in xs.iter_mut().zip(w).zip(b) {
                *v = (*v - mean) * inv * wk + bk;
            }
        }
    }
}

#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct LayerNormRepr<T> {
    weight: Array1<T>,
    bias: Array1<T>,
    eps: f64,
}

#[cfg(feature = "serde")]
impl<T: Float> TryFrom<LayerNormRepr<T>> for LayerNorm<T> {
    type Error = Error;
    fn try_from(r: LayerNormRepr<T>) -> Result<Self> {
        LayerNorm::from_parts(r.weight, r.bias, r.eps)
    }
}

#[cfg(feature = "serde")]
impl<T: Float> From<LayerNorm<T>> for LayerNormRepr<T> {
    fn from(l: LayerNorm<T>) -> Self {
        LayerNormRepr {
            weight: l.weight,
            bias: l.bias,
            eps: l.eps,
        }
    }
}
