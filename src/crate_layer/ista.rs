//! The sparsification step: one ISTA step on a non-negative LASSO.

use ndarray::{Array2, ArrayRef2, ArrayView2, ArrayViewMut2};
use rand::Rng;

use crate::{Error, Float, Result};

/// One ISTA step on `min_{z ≥ 0} λ‖z‖₁ + ½‖x − D z‖²` (square dictionary D, d × d):
///
/// `z⁺ = ReLU(z₀ − η Dᵀ(D z₀ − x) − ηλ)`, and as CRATE runs it, from `z₀ = x`:
/// `ISTA(z) = ReLU(z + η Dᵀ(z − D z) − ηλ)` (REFERENCE: Yu et al., arXiv 2306.01129, Eq. 12–13;
/// the reference code's `FeedForward`, step η = 0.1 and λ = 0.1).
///
/// Rows are tokens, so in this crate's layout the CRATE step is
/// `ReLU(x·(I + η(D − DᵀD)) − ηλ)`; the d × d matrix `I + η(D − DᵀD)` is formed once when the
/// step is built, so one forward is one matrix product.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "IstaRepr<T>", into = "IstaRepr<T>")
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: Float + serde::Serialize",
        deserialize = "T: Float + serde::Deserialize<'de>"
    ))
)]
pub struct Ista<T: Float> {
    d: Array2<T>,
    step: f64,
    lambda: f64,
    /// `I + η(D − DᵀD)`, so that `ISTA(x) = ReLU(x·m − ηλ)` in rows.
    m: Array2<T>,
}

impl<T: Float> Ista<T> {
    /// Reference step size η.
    pub const DEFAULT_STEP: f64 = 0.1;
    /// Reference sparsity weight λ.
    pub const DEFAULT_LAMBDA: f64 = 0.1;

    /// From a given square dictionary D (d × d, the reference `weight`), step η > 0 and λ ≥ 0.
    pub fn from_dictionary(d: Array2<T>, step: f64, lambda: f64) -> Result<Self> {
        crate::validate::positive("ista step", step)?;
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "ista lambda",
                value: lambda.to_string(),
                reason: "must be finite and ≥ 0",
            });
        }
        if d.nrows() != d.ncols() {
            return Err(Error::ShapeMismatch {
                what: "ISTA dictionary",
                expected: "a square matrix".into(),
                got: format!("{}×{}", d.nrows(), d.ncols()),
            });
        }
        crate::validate::matrix("ISTA dictionary", &d)?;
        let n = d.nrows();
        let mut m = Array2::<T>::eye(n);
        let eta = T::from_f64(step);
        m.scaled_add(eta, &d);
        // m −= η DᵀD
        crate::linalg::gemm(-eta, d.t(), d.view(), true, m.view_mut(), true);
        Ok(Self { d, step, lambda, m })
    }

    /// Random dictionary with the reference initialization (Kaiming uniform,
    /// U(±√(6/dim))), step 0.1, λ = 0.1.
    pub fn random<R: Rng + ?Sized>(
        dim: usize,
        step: f64,
        lambda: f64,
        rng: &mut R,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(Error::InvalidParameter {
                name: "dim",
                value: "0".into(),
                reason: "must be ≥ 1",
            });
        }
        let bound = (6.0 / dim as f64).sqrt();
        let d = Array2::from_shape_simple_fn((dim, dim), || {
            T::from_f64(rng.random_range(-bound..bound))
        });
        Self::from_dictionary(d, step, lambda)
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
    pub(crate) fn apply_into(&self, x: ArrayView2<T>, mut out: ArrayViewMut2<T>) {
        crate::linalg::gemm(T::one(), x, self.m.view(), false, out.view_mut(), true);
        let shift = T::from_f64(self.step * self.lambda);
        out.mapv_inplace(|v| (v - shift).max(T::zero()));
    }

    /// CRATE's ISTA step `ReLU(x + η Dᵀ(x − D x) − ηλ)` on every row (token) of `x` (n × d).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        self.check(x, "x")?;
        Ok(self.apply(x.view()))
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
        let shift = T::from_f64(self.step * self.lambda);
        out.mapv_inplace(|v| (v - shift).max(T::zero()));
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
        Ok(T::from_f64(self.lambda) * l1 + T::from_f64(0.5) * sq)
    }

    fn check(&self, x: &ArrayRef2<T>, what: &'static str) -> Result<()> {
        crate::validate::matrix_with_cols(what, x, self.dim())
    }
}

#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct IstaRepr<T> {
    dictionary: Array2<T>,
    step: f64,
    lambda: f64,
}

#[cfg(feature = "serde")]
impl<T: Float> TryFrom<IstaRepr<T>> for Ista<T> {
    type Error = Error;
    fn try_from(r: IstaRepr<T>) -> Result<Self> {
        Ista::from_dictionary(r.dictionary, r.step, r.lambda)
    }
}

#[cfg(feature = "serde")]
impl<T: Float> From<Ista<T>> for IstaRepr<T> {
    fn from(i: Ista<T>) -> Self {
        IstaRepr {
            dictionary: i.d,
            step: i.step,
            lambda: i.lambda,
        }
    }
}
