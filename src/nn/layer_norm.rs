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
    for xs in flat.chunks_exact_mut(dim) {
        let (mean, inv) = row_stats(xs, eps);
        for ((v, &wk), &bk) in xs.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * wk + bk;
        }
    }
}

/// The mean of a row and `1/√(var + eps)`, its variance taken about the mean in eight
/// independent lanes (vectorizes without reassociation flags). The inference forward and the
/// training forward both use it, so that their outputs agree bit for bit.
#[inline(always)]
fn row_stats<T: Float>(xs: &[T], eps: T) -> (T, T) {
    let d = T::from_usize(xs.len());
    let mean = crate::kernels::sum8(xs) / d;
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
    let var =
        (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + rest)
            / d;
    (mean, T::one() / (var + eps).sqrt())
}

/// The training forward's rows: input `x` and the outputs `xhat`, `inv_std` and `y` (rows
/// of `weight.len()`; see [`standardize_rows`]).
struct TrainRows<'a, T> {
    x: &'a [T],
    xhat: &'a mut [T],
    inv_std: &'a mut [T],
    y: &'a mut [T],
    weight: &'a [T],
    bias: &'a [T],
    eps: T,
}

/// The training forward: `x̂ = (x − mean)/√(var + eps)` into `xhat`, each row's
/// `1/√(var + eps)` into `inv_std` and `y = x̂·w + b` into `y`, in one pass over `x` after
/// its statistics ([`normalize_rows`]'s arithmetic, so `y` is the inference output); whether
/// every entry of `y` is finite.
#[inline(always)]
fn standardize_rows<T: Float>(rows: TrainRows<'_, T>) -> bool {
    let mut finite = true;
    let dim = rows.weight.len();
    let blocks = rows
        .x
        .chunks_exact(dim)
        .zip(rows.xhat.chunks_exact_mut(dim))
        .zip(rows.y.chunks_exact_mut(dim));
    for (((xs, xh), ys), s) in blocks.zip(rows.inv_std) {
        let (mean, inv) = row_stats(xs, rows.eps);
        *s = inv;
        let entries = xs.iter().zip(xh).zip(ys).zip(rows.weight).zip(rows.bias);
        for ((((&v, h), out), &wk), &bk) in entries {
            let t = (v - mean) * inv;
            *h = t;
            *out = t * wk + bk;
            finite &= out.is_finite();
        }
    }
    finite
}

impl<T: Float> pulp::WithSimd for TrainRows<'_, T> {
    type Output = bool;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> bool {
        standardize_rows(self)
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

impl<T: Float> LayerNorm<T> {
    /// [`Trainable::forward_train`] on tokens the caller has checked (finite, `dim` columns).
    pub(crate) fn forward_train_checked(
        &self,
        x: ArrayView2<T>,
    ) -> Result<(Array2<T>, LayerNormCache<T>)> {
        let eps = T::from_f64(self.eps);
        // x̂ and y are written whole below
        let mut xhat = crate::workspace::take::<T>(x.nrows(), x.ncols());
        let mut inv_std = Array2::<T>::zeros((x.nrows(), 1));
        let mut y = crate::workspace::for_overwrite::<T>(x.nrows(), x.ncols());
        let (weight, bias) = (self.weight.view(), self.bias.view());
        let parts = (xhat.view_mut(), inv_std.view_mut(), y.view_mut());
        let finite =
            crate::rows::all_row_triples(parts.0, parts.1, parts.2, |r0, mut xh, mut s, mut y| {
                let xs = x.slice(s![r0..r0 + xh.nrows(), ..]);
                let xs = xs.as_standard_layout();
                pulp::Arch::new().dispatch(TrainRows {
                    x: xs.as_slice().expect("standard layout"),
                    xhat: xh.as_slice_mut().expect("standard layout"),
                    inv_std: s.as_slice_mut().expect("one column"),
                    y: y.as_slice_mut().expect("standard layout"),
                    weight: weight.as_slice().expect("contiguous weight"),
                    bias: bias.as_slice().expect("contiguous bias"),
                    eps,
                })
            });
        let inv_std = inv_std
            .into_shape_with_order(x.nrows())
            .expect("one column");
        if !finite {
            // names the first non-finite entry
            crate::validate::finite_output("LayerNorm output", &y)?;
        }
        Ok((y, LayerNormCache { xhat, inv_std }))
    }
}

impl<T: Float> Trainable<T> for LayerNorm<T> {
    type Cache = LayerNormCache<T>;

    /// The output is the inference forward's, bit for bit (the same row statistics).
    fn forward_train(&self, x: ArrayView2<T>, _n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        self.forward_train_checked(x)
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
        // dx row by row, and [Σ_i dy_i ⊙ x̂_i, Σ_i dy_i] over the same fixed blocks of rows
        // (see `sum_over_written_row_blocks`) in the same pass
        let dim = self.dim();
        // written whole below
        let mut dx = crate::workspace::for_overwrite::<T>(dy.nrows(), dy.ncols());
        let sums = crate::rows::sum_over_written_row_blocks(
            dx.view_mut(),
            2 * dim,
            |r0, mut dx, mut acc| {
                let rows = r0..r0 + dx.nrows();
                let (mut sw, mut sb) = acc.view_mut().split_at(ndarray::Axis(0), dim);
                for (((dyr, xr), &inv), mut dxr) in dy
                    .slice(s![rows.clone(), ..])
                    .rows()
                    .into_iter()
                    .zip(cache.xhat.slice(s![rows.clone(), ..]).rows())
                    .zip(cache.inv_std.slice(s![rows]))
                    .zip(dx.rows_mut())
                {
                    Zip::from(&mut sw)
                        .and(&dyr)
                        .and(&xr)
                        .for_each(|g, &a, &b| *g += a * b);
                    sb += &dyr;
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
            },
        );
        gw += &sums.slice(s![..dim]);
        gb += &sums.slice(s![dim..]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// The training forward's output is the inference forward's, bit for bit, in both float
    /// types and at widths with and without a remainder after the eight lanes.
    #[test]
    fn training_forward_is_the_inference_forward() {
        fn check<T: Float>(dim: usize, rng: &mut StdRng) {
            let weight =
                Array1::from_shape_simple_fn(dim, || T::from_f64(rng.random_range(0.5..1.5)));
            let bias =
                Array1::from_shape_simple_fn(dim, || T::from_f64(rng.random_range(-1.0..1.0)));
            let ln = LayerNorm::from_parts(weight, bias, 1e-5).unwrap();
            let x = Array2::from_shape_simple_fn((300, dim), || {
                T::from_f64(rng.random_range(-3.0..3.0))
            });
            let (y, cache) = ln.forward_train(x.view(), 1).unwrap();
            assert_eq!(y, ln.forward(&x).unwrap());
            // x̂ has mean 0 and, past one column, unit variance per row (up to eps)
            let row = cache.xhat.row(7);
            let mean = row.sum().as_f64() / dim as f64;
            let var = row.iter().map(|v| v.as_f64() * v.as_f64()).sum::<f64>() / dim as f64;
            assert!(mean.abs() < 1e-5, "{mean}");
            assert!(dim == 1 || (var - 1.0).abs() < 1e-3, "{var}");
        }
        let mut rng = StdRng::seed_from_u64(3);
        for dim in [1, 7, 8, 13, 384] {
            check::<f32>(dim, &mut rng);
            check::<f64>(dim, &mut rng);
        }
    }
}
