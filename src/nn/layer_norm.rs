//! Layer normalization over the feature axis of each token.

use ndarray::{
    Array1, Array2, ArrayD, ArrayRef2, ArrayView2, ArrayViewD, ArrayViewMutD, Axis, Zip, s,
};

use super::{
    Checkpoint, Layer, ScopedWriter, TensorReader, Trainable, check_gradients, check_upstream,
    grad_vector, update_array,
};

use crate::workspace::Scratch;
use crate::{Error, Float, Result};

/// Sizes and ε of a [`LayerNorm`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerNormConfig {
    /// Feature dimension.
    pub dim: usize,
    /// ε added to the variance (default [`LayerNormConfig::DEFAULT_EPS`]).
    pub eps: f64,
}

impl LayerNormConfig {
    /// The default ε of PyTorch's `nn.LayerNorm` and of the CRATE and ToST reference code.
    pub const DEFAULT_EPS: f64 = 1e-5;

    /// Dimension `dim` with the default ε.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            eps: Self::DEFAULT_EPS,
        }
    }

    /// The same ε with dimension `dim`.
    pub fn with_dim(mut self, dim: usize) -> Self {
        self.dim = dim;
        self
    }

    /// The same with ε = `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Errors on a zero dimension or an ε that is not finite and > 0.
    pub fn check(&self) -> Result<()> {
        crate::validate::at_least_one("layer norm dim", self.dim)?;
        crate::validate::elements(&[self.dim, 2])?;
        crate::validate::positive("layer norm eps", self.eps)
    }
}

/// `LN(x) = (x − mean(x)) / √(var(x) + ε) ⊙ weight + bias`, over the last axis of each row,
/// with the biased variance (as PyTorch's `nn.LayerNorm`). Reference names: `weight`, `bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm<T: Float> {
    pub(crate) weight: Array1<T>,
    pub(crate) bias: Array1<T>,
    pub(crate) eps: f64,
}

impl<T: Float> LayerNorm<T> {
    /// PyTorch's initialization: weight 1 and bias 0 (no randomness). Errors on an invalid
    /// configuration.
    pub fn new(config: &LayerNormConfig) -> Result<Self> {
        config.check()?;
        Ok(Self {
            weight: Array1::ones(config.dim),
            bias: Array1::zeros(config.dim),
            eps: config.eps,
        })
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

    /// This layer's dimension and ε.
    pub fn config(&self) -> LayerNormConfig {
        LayerNormConfig {
            dim: self.dim(),
            eps: self.eps,
        }
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// Normalizes every row (token) of `x` (n × dim).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        let y = self.apply(x.view());
        crate::validate::finite_output("LayerNorm output", &y)?;
        Ok(y)
    }

    /// The affine weight.
    pub fn weight(&self) -> &Array1<T> {
        &self.weight
    }

    /// The affine bias.
    pub fn bias(&self) -> &Array1<T> {
        &self.bias
    }

    /// Normalizes every row of `x` (m × dim); `x` is assumed checked by the caller.
    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut out = Array2::zeros(x.raw_dim());
        self.apply_into(x, &mut out);
        out
    }

    /// Normalizes every row of a standard-layout `a` in place.
    pub(crate) fn apply_in_place(&self, a: &mut Array2<T>) {
        crate::rows::for_rows(a.view_mut(), |_, mut block| {
            self.normalize_block(block.as_slice_mut().expect("standard layout"))
        });
    }

    /// Writes the normalized rows of `x` into `out` (same shape, standard layout): the copy
    /// and the normalization in one pass over each block of rows.
    pub(crate) fn apply_into(&self, x: ArrayView2<T>, out: &mut Array2<T>) {
        crate::rows::zip_rows(out.view_mut(), x, |mut block, xs| {
            block.assign(&xs);
            self.normalize_block(block.as_slice_mut().expect("standard layout"))
        });
    }

    /// Normalizes the rows of a contiguous block of whole rows.
    fn normalize_block(&self, flat: &mut [T]) {
        let rows = NormRows {
            flat,
            weight: self.weight.as_slice().expect("contiguous weight"),
            bias: self.bias.as_slice().expect("contiguous bias"),
            eps: T::from_f64(self.eps),
            dim: self.weight.len(),
        };
        // compiled for the widest vector instructions the processor has (the portable
        // build assumes SSE2 only); the arithmetic, and so every bit of the result, is the
        // same on every path
        pulp::Arch::new().dispatch(rows);
    }
}

/// The rows of a standard-layout matrix to normalize in place.
struct NormRows<'a, T> {
    flat: &'a mut [T],
    weight: &'a [T],
    bias: &'a [T],
    eps: T,
    dim: usize,
}

impl<T: Float> pulp::WithSimd for NormRows<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        normalize_rows(self.flat, self.weight, self.bias, self.eps, self.dim)
    }
}

/// `(x − mean)/√(var + eps)·w + b` on every row of `flat` (rows of `dim`).
#[inline(always)]
fn normalize_rows<T: Float>(flat: &mut [T], w: &[T], b: &[T], eps: T, dim: usize) {
    let d = T::from_usize(dim);
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

impl<T: Float> Layer<T> for LayerNorm<T> {
    fn dim(&self) -> usize {
        self.weight.len()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        LayerNorm::forward(self, x)
    }

    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        vec![
            ("weight".to_string(), self.weight.view().into_dyn()),
            ("bias".to_string(), self.bias.view().into_dyn()),
        ]
    }
}

impl<T: Float> Checkpoint<T> for LayerNorm<T> {
    type Config = LayerNormConfig;

    fn load(reader: &TensorReader<'_>, config: &LayerNormConfig) -> Result<Self> {
        config.check()?;
        Self::from_parts(
            reader.vector("weight", config.dim)?,
            reader.vector("bias", config.dim)?,
            config.eps,
        )
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        super::save_parameters(self, writer)
    }
}

/// What [`LayerNorm`]'s backward needs: the normalized rows `x̂ = (x − μ)/σ` (m × dim) and
/// `1/σ` per row (m), σ = √(var + eps): m·(dim + 1) values.
#[derive(Debug, Clone)]
pub struct LayerNormCache<T: Float> {
    xhat: Scratch<T>,
    inv_std: Array1<T>,
}

impl<T: Float> Trainable<T> for LayerNorm<T> {
    type Cache = LayerNormCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, _n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        let d = T::from_usize(self.dim());
        let eps = T::from_f64(self.eps);
        // x̂ is written whole below
        let mut xhat = crate::workspace::take::<T>(x.nrows(), x.ncols());
        let mut inv_std = Array2::<T>::zeros((x.nrows(), 1));
        // written whole below
        let mut y = crate::workspace::for_overwrite::<T>(x.nrows(), x.ncols());
        crate::rows::for_row_pairs(xhat.view_mut(), inv_std.view_mut(), |r0, mut xh, mut s| {
            let rows = r0..r0 + xh.nrows();
            xh.assign(&x.slice(s![rows, ..]));
            for (mut row, s) in xh.rows_mut().into_iter().zip(s.iter_mut()) {
                let mean = row.sum() / d;
                row.mapv_inplace(|v| v - mean);
                let var = row.iter().map(|&v| v * v).sum::<T>() / d;
                *s = T::one() / (var + eps).sqrt();
                let inv = *s;
                row.mapv_inplace(|v| v * inv);
            }
        });
        crate::rows::zip_rows(y.view_mut(), xhat.view(), |mut y, xh| {
            for (mut row, xr) in y.rows_mut().into_iter().zip(xh.rows()) {
                Zip::from(&mut row)
                    .and(&xr)
                    .and(&self.weight)
                    .and(&self.bias)
                    .for_each(|v, &x, &w, &b| *v = x * w + b);
            }
        });
        let inv_std = inv_std
            .into_shape_with_order(x.nrows())
            .expect("one column");
        crate::validate::finite_output("LayerNorm output", &y)?;
        Ok((y, LayerNormCache { xhat, inv_std }))
    }

    /// `∂γ += Σ_i dy_i ⊙ x̂_i`, `∂β += Σ_i dy_i`; with `g = dy ⊙ γ`,
    /// `∂x_i = (g_i − mean(g_i) − x̂_i · mean(g_i ⊙ x̂_i)) / σ_i`.
    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        check_gradients(&self.parameters(), grads)?;
        check_upstream(&dy, cache.xhat.dim())?;
        let d = T::from_usize(self.dim());
        let (gw, gb) = grads.split_at_mut(1);
        let mut gw = grad_vector(&mut gw[0]);
        let mut gb = grad_vector(&mut gb[0]);
        // [Σ_i dy_i ⊙ x̂_i, Σ_i dy_i] in fixed blocks of rows (see `sum_over_row_blocks`)
        let dim = self.dim();
        let sums = crate::rows::sum_over_row_blocks(dy.nrows(), 2 * dim, |rows, mut acc| {
            let (mut sw, mut sb) = acc.view_mut().split_at(ndarray::Axis(0), dim);
            for (dyr, xr) in dy
                .slice(s![rows.clone(), ..])
                .rows()
                .into_iter()
                .zip(cache.xhat.slice(s![rows, ..]).rows())
            {
                Zip::from(&mut sw)
                    .and(&dyr)
                    .and(&xr)
                    .for_each(|g, &a, &b| *g += a * b);
                sb += &dyr;
            }
        });
        gw += &sums.slice(s![..dim]);
        gb += &sums.slice(s![dim..]);
        // written whole below
        let mut dx = crate::workspace::for_overwrite::<T>(dy.nrows(), dy.ncols());
        crate::rows::for_rows(dx.view_mut(), |r0, mut dx| {
            let rows = r0..r0 + dx.nrows();
            for (((dyr, xr), &inv), mut dxr) in dy
                .slice(s![rows.clone(), ..])
                .rows()
                .into_iter()
                .zip(cache.xhat.slice(s![rows.clone(), ..]).rows())
                .zip(cache.inv_std.slice(s![rows]))
                .zip(dx.rows_mut())
            {
                Zip::from(&mut dxr)
                    .and(&dyr)
                    .and(&self.weight)
                    .for_each(|o, &a, &w| *o = a * w);
                let mean_g = dxr.sum() / d;
                let gx = match (dxr.as_slice(), xr.as_slice()) {
                    (Some(g), Some(x)) => crate::kernels::dot8(g, x),
                    _ => dxr.dot(&xr),
                };
                let mean_gx = gx / d;
                Zip::from(&mut dxr)
                    .and(&xr)
                    .for_each(|o, &x| *o = (*o - mean_g - x * mean_gx) * inv);
            }
        });
        Ok(dx)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        update_array(update, "weight", &mut self.weight)?;
        update_array(update, "bias", &mut self.bias)
    }
}
