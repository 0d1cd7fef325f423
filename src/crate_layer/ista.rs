//! The sparsification step: one ISTA step on a non-negative LASSO.

use ndarray::{Array2, ArrayD, ArrayRef2, ArrayView2, ArrayViewD, ArrayViewMut2, ArrayViewMutD};
use rand::Rng;

use crate::nn::{
    Checkpoint, Layer, ScopedWriter, TensorReader, Trainable, check_gradients, check_upstream,
    grad_matrix, update_array,
};
use crate::workspace::Scratch;
use crate::{Error, Float, Result};

/// Size and constants of an [`Ista`] step, with the reference defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IstaConfig {
    /// Token dimension (the dictionary is dim × dim).
    pub dim: usize,
    /// Step size η (default [`IstaConfig::DEFAULT_STEP`]).
    pub step: f64,
    /// Sparsity weight λ (default [`IstaConfig::DEFAULT_LAMBDA`]).
    pub lambda: f64,
}

impl IstaConfig {
    /// Reference step size η.
    pub const DEFAULT_STEP: f64 = 0.1;
    /// Reference sparsity weight λ (hard-coded in the reference code).
    pub const DEFAULT_LAMBDA: f64 = 0.1;
    /// Largest accepted η·(1 + λ): beyond it, one step on finite tokens may overflow.
    pub const MAX_STEP: f64 = 1e6;

    /// Dimension `dim` with the reference constants.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            step: Self::DEFAULT_STEP,
            lambda: Self::DEFAULT_LAMBDA,
        }
    }

    /// Errors unless dim ≥ 1, 0 < η ≤ [`IstaConfig::MAX_STEP`] and 0 ≤ λ ≤ `MAX_STEP`.
    pub fn check(&self) -> Result<()> {
        crate::validate::at_least_one("ista dim", self.dim)?;
        crate::validate::elements(&[self.dim, self.dim])?;
        crate::validate::positive("ista step", self.step)?;
        crate::validate::finite_non_negative("ista lambda", self.lambda)?;
        crate::validate::at_most("ista step", self.step, Self::MAX_STEP)?;
        crate::validate::at_most("ista lambda", self.lambda, Self::MAX_STEP)?;
        Ok(())
    }
}

/// One ISTA step on `min_{z ≥ 0} λ‖z‖₁ + ½‖x − D z‖²` (square dictionary D, d × d):
///
/// `z⁺ = ReLU(z₀ − η Dᵀ(D z₀ − x) − ηλ)`, and as CRATE runs it, from `z₀ = x`:
/// `ISTA(z) = ReLU(z + η Dᵀ(z − D z) − ηλ)` (REFERENCE: Yu et al., arXiv 2306.01129, Eq. 12–13;
/// the reference code's `FeedForward`, step η = 0.1 and λ = 0.1).
///
/// Rows are tokens, so in this crate's layout the CRATE step is
/// `ReLU(x·(I + η(D − DᵀD)) − ηλ)`; the d × d matrix `I + η(D − DᵀD)` is formed once when the
/// step is built, so one forward is one matrix product.
///
/// ```
/// use mcr2::crate_layer::Ista;
/// use mcr2::ndarray::{Array2, array};
/// // dictionary D = I: the step shrinks every entry by ηλ and clips at 0
/// let ista = Ista::<f64>::from_parts(Array2::eye(2), 0.1, 0.1)?;
/// let y = ista.forward(&array![[1.0, -1.0], [0.005, 0.5]])?;
/// assert_eq!(y, array![[0.99, 0.0], [0.0, 0.49]]);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Ista<T: Float> {
    d: Array2<T>,
    step: f64,
    lambda: f64,
    /// `I + η(D − DᵀD)`, so that `ISTA(x) = ReLU(x·m − ηλ)` in rows.
    m: Array2<T>,
}

impl<T: Float> Ista<T> {
    /// From a given square dictionary D (d × d, the reference `weight`), step η > 0 and λ ≥ 0.
    pub fn from_parts(d: Array2<T>, step: f64, lambda: f64) -> Result<Self> {
        IstaConfig {
            dim: d.nrows().max(1),
            step,
            lambda,
        }
        .check()?;
        if d.nrows() != d.ncols() {
            return Err(Error::ShapeMismatch {
                what: "ISTA dictionary",
                expected: "a square matrix".into(),
                got: format!("{}×{}", d.nrows(), d.ncols()),
            });
        }
        crate::validate::matrix("ISTA dictionary", &d)?;
        let m = step_matrix(&d, step)?;
        Ok(Self { d, step, lambda, m })
    }

    /// Random dictionary with the reference initialization (Kaiming uniform,
    /// U(±√(6/dim))).
    pub fn new<R: Rng + ?Sized>(config: &IstaConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let IstaConfig { dim, step, lambda } = *config;
        let bound = (6.0 / dim as f64).sqrt();
        let d = Array2::from_shape_simple_fn((dim, dim), || {
            T::from_f64(rng.random_range(-bound..bound))
        });
        Self::from_parts(d, step, lambda)
    }

    /// The dictionary D.
    pub fn dictionary(&self) -> &Array2<T> {
        &self.d
    }

    /// Step size η.
    pub fn step_size(&self) -> f64 {
        self.step
    }

    /// Sparsity weight λ.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// This step's size and constants.
    pub fn config(&self) -> IstaConfig {
        IstaConfig {
            dim: self.dim(),
            step: self.step,
            lambda: self.lambda,
        }
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.d.nrows()
    }

    /// CRATE's step from `z₀ = x` on every row of `x`.
    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut out = Array2::<T>::zeros(x.dim());
        self.apply_into(x, out.view_mut());
        out
    }

    /// CRATE's step written into `out` (same shape as `x`; its contents are overwritten).
    /// The threshold is applied to each tile of the product as it is formed (see
    /// [`crate::linalg::gemm_then`]).
    pub(crate) fn apply_into(&self, x: ArrayView2<T>, out: ArrayViewMut2<T>) {
        let threshold = |block: ArrayViewMut2<T>| self.threshold_block(block);
        crate::linalg::gemm_then(T::one(), x, self.m.view(), out, true, &threshold);
    }

    /// `v ← ReLU(v − ηλ)` on every entry, a ReLU that keeps NaN (`max` would map it to 0
    /// and hide an overflow upstream); blocks of rows in parallel when large.
    fn threshold(&self, out: ArrayViewMut2<T>) {
        crate::rows::for_rows(out, |_, block| self.threshold_block(block));
    }

    /// [`threshold`](Self::threshold) on one block, on the calling thread.
    fn threshold_block(&self, mut block: ArrayViewMut2<T>) {
        let shift = T::from_f64(self.step * self.lambda);
        block.map_inplace(|v| *v = relu_shift(*v, shift));
    }

    /// CRATE's ISTA step `ReLU(x + η Dᵀ(x − D x) − ηλ)` on every row (token) of `x` (n × d).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        self.check(x, "x")?;
        let y = self.apply(x.view());
        crate::validate::finite_output("ISTA output", &y)?;
        Ok(y)
    }

    /// The general step from `z0`: `ReLU(z₀ − η Dᵀ(D z₀ − x) − ηλ)`, row by row.
    pub fn step(&self, z0: &ArrayRef2<T>, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        self.check(z0, "z0")?;
        self.check(x, "x")?;
        if z0.dim() != x.dim() {
            return Err(Error::ShapeMismatch {
                what: "z0",
                expected: format!("{}×{} (the shape of x)", x.nrows(), x.ncols()),
                got: format!("{}×{}", z0.nrows(), z0.ncols()),
            });
        }
        // residual r = z0 Dᵀ − x (rows of (D z₀ − x)ᵀ), then z0 − η r D − ηλ
        let mut r = x.mapv(|v| -v);
        crate::linalg::gemm(T::one(), z0.view(), self.d.t(), true, r.view_mut(), true);
        let mut out = z0.to_owned();
        crate::linalg::gemm(
            -T::from_f64(self.step),
            r.view(),
            self.d.view(),
            true,
            out.view_mut(),
            true,
        );
        self.threshold(out.view_mut());
        Ok(out)
    }

    /// The non-negative LASSO objective `λ‖z‖₁ + ½‖x − D z‖²` summed over rows.
    pub fn lasso_objective(&self, z: &ArrayRef2<T>, x: &ArrayRef2<T>) -> Result<T> {
        self.check(z, "z")?;
        self.check(x, "x")?;
        let mut r = x.to_owned();
        crate::linalg::gemm(-T::one(), z.view(), self.d.t(), true, r.view_mut(), true);
        let l1: T = z.iter().map(|v| v.abs()).sum();
        let sq: T = r.iter().map(|v| *v * *v).sum();
        crate::validate::finite_value(
            "LASSO objective",
            T::from_f64(self.lambda) * l1 + T::from_f64(0.5) * sq,
        )
    }

    fn check(&self, x: &ArrayRef2<T>, what: &'static str) -> Result<()> {
        crate::validate::matrix_with_cols(what, x, self.dim())
    }
}

impl<T: Float> Layer<T> for Ista<T> {
    fn dim(&self) -> usize {
        self.d.nrows()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        Ista::forward(self, x)
    }

    /// `weight`: the dictionary D.
    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        vec![("weight".to_string(), self.d.view().into_dyn())]
    }
}

impl<T: Float> Checkpoint<T> for Ista<T> {
    type Config = IstaConfig;

    /// Reads `weight` (dim × dim).
    fn load(reader: &TensorReader<'_>, c: &IstaConfig) -> Result<Self> {
        c.check()?;
        Self::from_parts(reader.matrix("weight", c.dim, c.dim)?, c.step, c.lambda)
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        crate::nn::save_parameters(self, writer)
    }
}

impl<T: Float> Ista<T> {
    /// [`Trainable::forward_train`] on an input it may keep as it is (a layer's output that
    /// its caller no longer needs), without copying it into the cache. The caller has
    /// checked it (finite, `dim` columns).
    pub(crate) fn forward_train_owned(&self, x: Scratch<T>) -> Result<(Array2<T>, IstaCache<T>)> {
        debug_assert_eq!(x.ncols(), self.dim());
        // written whole by the product, then thresholded into y and its copy for the cache
        let mut y = crate::workspace::for_overwrite::<T>(x.nrows(), x.ncols());
        crate::linalg::gemm(T::one(), x.view(), self.m.view(), false, y.view_mut(), true);
        let mut kept = crate::workspace::take::<T>(x.nrows(), x.ncols());
        let shift = T::from_f64(self.step * self.lambda);
        let finite = crate::rows::all_row_pairs(y.view_mut(), kept.view_mut(), |_, y, k| {
            let mut finite = true;
            ndarray::Zip::from(y).and(k).for_each(|v, k| {
                *v = relu_shift(*v, shift);
                *k = *v;
                finite &= v.is_finite();
            });
            finite
        });
        if !finite {
            // names the first non-finite entry
            crate::validate::finite_output("ISTA output", &y)?;
        }
        Ok((y, IstaCache { x, y: kept }))
    }
}

/// `ReLU(v − shift)`, keeping NaN (see [`Ista::threshold`]).
#[inline(always)]
fn relu_shift<T: Float>(v: T, shift: T) -> T {
    let t = v - shift;
    if t <= T::zero() { T::zero() } else { t }
}

/// `M = I + η(D − DᵀD)`, so that `ISTA(x) = ReLU(x M − ηλ)` in rows.
fn step_matrix<T: Float>(d: &Array2<T>, step: f64) -> Result<Array2<T>> {
    let mut m = Array2::<T>::eye(d.nrows());
    let eta = T::from_f64(step);
    m.scaled_add(eta, d);
    // m −= η DᵀD
    crate::linalg::gemm(-eta, d.t(), d.view(), true, m.view_mut(), true);
    if m.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidParameter {
            name: "ISTA dictionary",
            value: "entries too large".into(),
            reason: "I + η(D − DᵀD) overflows the float type",
        });
    }
    Ok(m)
}

/// What [`Ista`]'s backward needs: its input x and its output y (m × dim each): 2·m·dim
/// values.
#[derive(Debug, Clone)]
pub struct IstaCache<T: Float> {
    x: Scratch<T>,
    y: Scratch<T>,
}

impl<T: Float> Trainable<T> for Ista<T> {
    type Cache = IstaCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, _n: usize) -> Result<(Array2<T>, Self::Cache)> {
        self.check(&x, "x")?;
        self.forward_train_owned(crate::workspace::copy_of(x))
    }

    /// With `g = dy ⊙ [y > 0]` (the ReLU's derivative, 0 at 0 as in PyTorch) and
    /// `G = xᵀ g = ∂L/∂M`: `∂x = g Mᵀ`, `∂D += η G − η D (G + Gᵀ)` (from
    /// `M = I + η(D − DᵀD)`).
    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        check_gradients(&self.parameters(), grads)?;
        check_upstream(&dy, cache.y.dim())?;
        // written whole below
        let mut g = crate::workspace::take::<T>(dy.nrows(), dy.ncols());
        crate::rows::for_rows(g.view_mut(), |r0, mut g| {
            let rows = r0..r0 + g.nrows();
            ndarray::Zip::from(&mut g)
                .and(dy.slice(ndarray::s![rows.clone(), ..]))
                .and(cache.y.slice(ndarray::s![rows, ..]))
                .for_each(|g, &d, &y| *g = if y <= T::zero() { T::zero() } else { d });
        });
        // written whole by the product
        let mut dx = crate::workspace::for_overwrite::<T>(g.nrows(), g.ncols());
        crate::linalg::gemm(T::one(), g.view(), self.m.t(), false, dx.view_mut(), true);
        let dim = self.dim();
        let mut gm = Array2::<T>::zeros((dim, dim));
        crate::linalg::gemm(T::one(), cache.x.t(), g.view(), false, gm.view_mut(), true);
        let sym = &gm + &gm.t();
        let eta = T::from_f64(self.step);
        let mut gd = grad_matrix(&mut grads[0]);
        gd.scaled_add(eta, &gm);
        crate::linalg::gemm(-eta, self.d.view(), sym.view(), true, gd, true);
        Ok(dx)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        update_array(update, "weight", &mut self.d)?;
        self.m = step_matrix(&self.d, self.step)?;
        Ok(())
    }
}
