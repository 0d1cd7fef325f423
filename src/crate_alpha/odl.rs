//! CRATE-α's sparse coding step: two ISTA steps on an overcomplete dictionary, then a
//! decoding by a second dictionary.

use ndarray::{Array2, ArrayD, ArrayRef2, ArrayView2, ArrayViewD, ArrayViewMutD};
use rand::Rng;

use crate::nn::{
    Checkpoint, Layer, ScopedWriter, TensorReader, Trainable, check_gradients, check_upstream,
    grad_matrix, update_array,
};
use crate::{Error, Float, Result};

/// Sizes and constants of an [`Odl`] step, with the reference defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OdlConfig {
    /// Token dimension d.
    pub dim: usize,
    /// Overcomplete ratio: the dictionaries are d × (ratio·d) (reference 4).
    pub ratio: usize,
    /// ISTA step η (reference 0.1).
    pub step: f64,
    /// Sparsity weight λ (reference 0.1).
    pub lambda: f64,
}

impl OdlConfig {
    /// The reference overcomplete ratio.
    pub const DEFAULT_RATIO: usize = 4;

    /// Dimension `dim` with the reference ratio 4, η = 0.1 and λ = 0.1.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ratio: Self::DEFAULT_RATIO,
            step: crate::crate_layer::IstaConfig::DEFAULT_STEP,
            lambda: crate::crate_layer::IstaConfig::DEFAULT_LAMBDA,
        }
    }

    /// Number of atoms m = ratio·d.
    pub fn atoms(&self) -> usize {
        self.ratio.saturating_mul(self.dim)
    }

    /// Errors unless dim, ratio ≥ 1, the dictionaries fit in memory, 0 < η and 0 ≤ λ are
    /// at most [`IstaConfig::MAX_STEP`](crate::crate_layer::IstaConfig::MAX_STEP).
    pub fn check(&self) -> Result<()> {
        let max = crate::crate_layer::IstaConfig::MAX_STEP;
        crate::validate::at_least_one("odl dim", self.dim)?;
        crate::validate::at_least_one("odl ratio", self.ratio)?;
        crate::validate::elements(&[2, self.dim, self.ratio, self.dim])?;
        crate::validate::positive("odl step", self.step)?;
        crate::validate::finite_non_negative("odl lambda", self.lambda)?;
        crate::validate::at_most("odl step", self.step, max)?;
        crate::validate::at_most("odl lambda", self.lambda, max)?;
        Ok(())
    }
}

/// CRATE-α's overcomplete dictionary learning step (ODL) on each token x (column form, as
/// in the paper), with dictionaries D and D₁ of d × m (m = ratio·d):
///
/// * `A¹ = ReLU(η Dᵀx − ηλ)` (one ISTA step from A⁰ = 0),
/// * `A² = ReLU(A¹ − η Dᵀ(D A¹ − x) − ηλ)` (a second step),
/// * `x̂ = D₁ A²`.
///
/// Rows are tokens in this crate, so for X (n × d): `A¹ = ReLU(η X D − ηλ)`,
/// `A² = ReLU(A¹ − η (A¹Dᵀ − X) D − ηλ)`, `X̂ = A² D₁ᵀ`.
///
/// Reference: Yang et al., *Scaling White-Box Transformers for Vision*, arXiv 2405.20299,
/// Sec. 3; the reference `OvercompleteISTABlock` of UCSC-VLAA/CRATE-alpha (parameters `D`
/// and `D1`, η = λ = 0.1, ratio 4).
///
/// ```
/// use mcr2::crate_alpha::Odl;
/// use mcr2::ndarray::array;
/// // d = 1, m = 2: D = [1, 0.5], D₁ = [1, 2], η = 0.5, λ = 0.1, one token x = 1
/// let odl = Odl::<f64>::from_parts(array![[1.0, 0.5]], array![[1.0, 2.0]], 0.5, 0.1)?;
/// // A¹ = ReLU(0.5·[1, 0.5] − 0.05) = [0.45, 0.2], D A¹ − x = −0.45
/// // A² = ReLU([0.45, 0.2] + 0.5·0.45·[1, 0.5] − 0.05) = [0.625, 0.2625]
/// // x̂ = D₁ A² = 0.625 + 2·0.2625 = 1.15
/// let y = odl.forward(&array![[1.0]])?;
/// assert!((y[[0, 0]] - 1.15).abs() < 1e-12);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Odl<T: Float> {
    /// d × m: the coding dictionary.
    d: Array2<T>,
    /// d × m: the decoding dictionary.
    d1: Array2<T>,
    step: f64,
    lambda: f64,
}

/// `ReLU(v − shift)` in place, keeping NaN (so that an overflow upstream is not hidden).
fn shrink<T: Float>(a: &mut Array2<T>, shift: T) {
    a.mapv_inplace(|v| {
        let t = v - shift;
        if t <= T::zero() { T::zero() } else { t }
    });
}

/// Zeroes the entries of `g` where the ReLU's output `a` is not positive (its derivative,
/// 0 at 0 as in PyTorch).
fn relu_mask<T: Float>(g: &mut Array2<T>, a: &Array2<T>) {
    ndarray::Zip::from(g).and(a).for_each(|g, &a| {
        if a <= T::zero() {
            *g = T::zero();
        }
    });
}

impl<T: Float> Odl<T> {
    /// From dictionaries `d` (coding) and `d1` (decoding), both d × m, step η > 0, λ ≥ 0.
    pub fn from_parts(d: Array2<T>, d1: Array2<T>, step: f64, lambda: f64) -> Result<Self> {
        let (dim, m) = d.dim();
        if dim == 0 || m == 0 {
            return Err(Error::Empty {
                what: "ODL dictionary",
                rows: dim,
                cols: m,
            });
        }
        if d1.dim() != (dim, m) {
            return Err(Error::ShapeMismatch {
                what: "ODL decoding dictionary D1",
                expected: format!("{dim}×{m} (the shape of D)"),
                got: format!("{}×{}", d1.nrows(), d1.ncols()),
            });
        }
        OdlConfig {
            dim,
            ratio: 1,
            step,
            lambda,
        }
        .check()?;
        crate::validate::matrix("ODL dictionary D", &d)?;
        crate::validate::matrix("ODL dictionary D1", &d1)?;
        Ok(Self {
            d,
            d1,
            step,
            lambda,
        })
    }

    /// Random dictionaries with the reference initialization (PyTorch's
    /// `kaiming_uniform_` on a d × m tensor: U(±√(6/m))).
    pub fn new<R: Rng + ?Sized>(config: &OdlConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let (dim, m) = (config.dim, config.atoms());
        let bound = (6.0 / m as f64).sqrt();
        let mut draw = || {
            Array2::from_shape_simple_fn((dim, m), || T::from_f64(rng.random_range(-bound..bound)))
        };
        let d = draw();
        let d1 = draw();
        Self::from_parts(d, d1, config.step, config.lambda)
    }

    /// The coding dictionary D (d × m).
    pub fn dictionary(&self) -> &Array2<T> {
        &self.d
    }

    /// The decoding dictionary D₁ (d × m).
    pub fn decoder(&self) -> &Array2<T> {
        &self.d1
    }

    /// Number of atoms m.
    pub fn atoms(&self) -> usize {
        self.d.ncols()
    }

    /// This step's sizes and constants (the ratio is m / d, rounded down).
    pub fn config(&self) -> OdlConfig {
        OdlConfig {
            dim: self.d.nrows(),
            ratio: self.atoms() / self.d.nrows(),
            step: self.step,
            lambda: self.lambda,
        }
    }

    /// The sparse codes `A¹`, the residual `R = A¹Dᵀ − X` and the codes `A²` of the rows of
    /// `x`.
    fn codes(&self, x: ArrayView2<T>) -> (Array2<T>, Array2<T>, Array2<T>) {
        let (rows, m) = (x.nrows(), self.atoms());
        let eta = T::from_f64(self.step);
        let shift = T::from_f64(self.step * self.lambda);
        let mut a1 = Array2::<T>::zeros((rows, m));
        crate::linalg::gemm(eta, x, self.d.view(), false, a1.view_mut(), true);
        shrink(&mut a1, shift);
        let mut r = x.mapv(|v| -v);
        crate::linalg::gemm(T::one(), a1.view(), self.d.t(), true, r.view_mut(), true);
        let mut a2 = a1.clone();
        crate::linalg::gemm(-eta, r.view(), self.d.view(), true, a2.view_mut(), true);
        shrink(&mut a2, shift);
        (a1, r, a2)
    }

    /// `X̂ = A² D₁ᵀ` for the rows of `x`.
    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let (_, _, a2) = self.codes(x);
        self.decode(&a2)
    }

    /// The codes `A²` and the decoded tokens of the rows of `x`.
    pub(crate) fn codes_and_output(&self, x: ArrayView2<T>) -> (Array2<T>, Array2<T>) {
        let (_, _, a2) = self.codes(x);
        let y = self.decode(&a2);
        (a2, y)
    }

    fn decode(&self, a2: &Array2<T>) -> Array2<T> {
        let mut y = Array2::<T>::zeros((a2.nrows(), self.d.nrows()));
        crate::linalg::gemm(T::one(), a2.view(), self.d1.t(), false, y.view_mut(), true);
        y
    }

    /// The decoded tokens `X̂` (n × d) of the tokens `x` (n × d, rows).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        let y = self.apply(x.view());
        crate::validate::finite_output("ODL output", &y)?;
        Ok(y)
    }

    /// The sparse codes `A²` (n × m) of the tokens `x` (n × d), before decoding.
    pub fn sparse_codes(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        let (_, _, a2) = self.codes(x.view());
        crate::validate::finite_output("ODL codes", &a2)?;
        Ok(a2)
    }
}

impl<T: Float> Layer<T> for Odl<T> {
    fn dim(&self) -> usize {
        self.d.nrows()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        Odl::forward(self, x)
    }

    /// `D` and `D1` (d × m each), the reference names.
    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        vec![
            ("D".to_string(), self.d.view().into_dyn()),
            ("D1".to_string(), self.d1.view().into_dyn()),
        ]
    }
}

impl<T: Float> Checkpoint<T> for Odl<T> {
    type Config = OdlConfig;

    /// Reads `D` and `D1` (dim × ratio·dim each).
    fn load(reader: &TensorReader<'_>, c: &OdlConfig) -> Result<Self> {
        c.check()?;
        let m = c.atoms();
        let d = reader.matrix("D", c.dim, m)?;
        let d1 = reader.matrix("D1", c.dim, m)?;
        Self::from_parts(d, d1, c.step, c.lambda)
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        crate::nn::save_parameters(self, writer)
    }
}

/// What [`Odl`]'s backward needs, for n tokens: the input X (n × d), the residual
/// R = A¹Dᵀ − X (n × d) and the codes A¹, A² (n × m each): `2·n·(d + m)` values.
#[derive(Debug, Clone)]
pub struct OdlCache<T> {
    x: Array2<T>,
    a1: Array2<T>,
    r: Array2<T>,
    a2: Array2<T>,
}

impl<T: Float> Odl<T> {
    /// The training forward on tokens the caller hands over (n × dim, checked by the
    /// caller), kept in the cache as they are instead of copied.
    pub(crate) fn forward_train_owned(&self, x: Array2<T>) -> Result<(Array2<T>, OdlCache<T>)> {
        debug_assert_eq!(x.ncols(), self.dim());
        crate::validate::elements_of::<T>("ODL codes", &[2, x.nrows(), self.atoms()])?;
        let (a1, r, a2) = self.codes(x.view());
        let y = self.decode(&a2);
        crate::validate::finite_output("ODL output", &y)?;
        Ok((y, OdlCache { x, a1, r, a2 }))
    }
}

impl<T: Float> Trainable<T> for Odl<T> {
    type Cache = OdlCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, _n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        self.forward_train_owned(x.as_standard_layout().into_owned())
    }

    /// From `dY`: `∂D₁ += dYᵀA²`; `g₂ = dY D₁ ⊙ [A² > 0]`; through
    /// `A² = ReLU(A¹ − η R D − ηλ)`: `dR = −η g₂Dᵀ`, `∂D += −η Rᵀg₂`, `dA¹ = g₂ + dR D`;
    /// through `R = A¹Dᵀ − X`: `∂D += dRᵀA¹`, `dX = −dR`; with `g₁ = dA¹ ⊙ [A¹ > 0]`, through
    /// `A¹ = ReLU(η X D − ηλ)`: `dX += η g₁Dᵀ`, `∂D += η Xᵀg₁`.
    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        check_gradients(&self.parameters(), grads)?;
        check_upstream(&dy, cache.x.dim())?;
        let eta = T::from_f64(self.step);
        let (g_d, g_d1) = grads.split_at_mut(1);
        let mut g_d = grad_matrix(&mut g_d[0]);
        crate::linalg::gemm(
            T::one(),
            dy.t(),
            cache.a2.view(),
            true,
            grad_matrix(&mut g_d1[0]),
            true,
        );
        let mut g2 = Array2::<T>::zeros(cache.a2.dim());
        crate::linalg::gemm(T::one(), dy, self.d1.view(), false, g2.view_mut(), true);
        relu_mask(&mut g2, &cache.a2);
        let mut dr = Array2::<T>::zeros(cache.x.dim());
        crate::linalg::gemm(-eta, g2.view(), self.d.t(), false, dr.view_mut(), true);
        crate::linalg::gemm(-eta, cache.r.t(), g2.view(), true, g_d.view_mut(), true);
        let mut g1 = g2;
        crate::linalg::gemm(
            T::one(),
            dr.view(),
            self.d.view(),
            true,
            g1.view_mut(),
            true,
        );
        crate::linalg::gemm(
            T::one(),
            dr.t(),
            cache.a1.view(),
            true,
            g_d.view_mut(),
            true,
        );
        let mut dx = dr.mapv(|v| -v);
        relu_mask(&mut g1, &cache.a1);
        crate::linalg::gemm(eta, g1.view(), self.d.t(), true, dx.view_mut(), true);
        crate::linalg::gemm(eta, cache.x.t(), g1.view(), true, g_d, true);
        Ok(dx)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        update_array(update, "D", &mut self.d)?;
        update_array(update, "D1", &mut self.d1)?;
        Ok(())
    }
}
