//! The factorization behind every log-det `logdet(I + a·Gram)` of the crate: `A = I + a·XᵀX`
//! (the feature side, d × d) or `A = I + a·X Xᵀ` (the sample side, m × m), where X holds the
//! (weighted) rows of a class or of all samples. The rates and their gradients, the
//! membership gradient, ReduNet's operators `c(I + c ZᵀZ)⁻¹` and the coding lengths of
//! `coding` (L(W), ALC, MICL) all factor here.
//!
//! Two routes, one answer:
//!
//! * **Cholesky of the Gram matrix** (the fast route): `A = L Lᵀ`, `logdet A = 2 Σ ln L_ii`.
//!   Forming `XᵀX` squares the data's dynamic range, so its rounding errors are about
//!   `u·λ_max(A)` in every eigenvalue: where `A` is badly conditioned (identical or nearly
//!   collinear rows of large norm) the eigenvalues near 1 are swamped and the log-det drifts
//!   (1.8 % at norm 10³ in f32, +30 % at 10⁹ in f64, measured).
//! * **Singular values of X** (the accurate route, in f64): `logdet A = Σ_i ln(1 + a σ_i²)`
//!   with `X = U diag(σ) Vᵀ`; the eigenvectors of `A` are V (feature side) or U (sample
//!   side). The SVD's errors are about `u·σ_max` in each σ_i, so `a σ_i²` is off by about
//!   `u²·a σ_max²`: accurate far beyond the Gram route.
//!
//! [`identity_plus`] takes the Cholesky route, estimates its error from the spread of the
//! pivots (`ρ = max L_ii² / min L_ii²` is a lower bound of the condition number of A; the
//! log-det's absolute error is about `u·ρ·√dim`), and switches to the SVD when that estimate
//! exceeds [`Float::LOGDET_TOLERANCE`] relative to the log-det (or when Cholesky fails). The SVD route in
//! turn refuses, with [`Error::Scale`], a scale whose estimated relative error exceeds 10⁻⁷.
//! Where only the Gram matrix is kept ([`RateStats`](crate::RateStats)),
//! [`identity_plus_gram`] allows 100 × [`Float::LOGDET_TOLERANCE`] and answers [`Error::Scale`] beyond
//! (also used where the inverse is wanted: ReduNet, `∂Rc/∂Π`). The coding lengths, which
//! never fail, use [`logdet_identity_plus_clamped`].

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::linalg::{Cholesky, shifted_identity};
use crate::{Error, Float, Result};

/// The SVD route's largest estimated relative error, `dim·u²·a σ_max² / logdet`, before it
/// answers [`Error::Scale`] instead.
const SPECTRAL_TOLERANCE: f64 = 1e-7;

/// A factored `A = I + a·(XᵀX or X Xᵀ)`: its log-det, and what the gradient needs.
#[derive(Debug, Clone)]
pub(crate) enum Factor<T> {
    Cholesky(Cholesky<T>),
    Spectral(Spectral),
}

impl<T: Float> Factor<T> {
    /// `ln det A`.
    pub(crate) fn logdet(&self) -> T {
        match self {
            Factor::Cholesky(f) => f.logdet(),
            Factor::Spectral(f) => T::from_f64(f.logdet),
        }
    }

    /// The Cholesky factor, when that route was taken.
    pub(crate) fn cholesky(&self) -> Option<&Cholesky<T>> {
        match self {
            Factor::Cholesky(f) => Some(f),
            Factor::Spectral(_) => None,
        }
    }

    /// The singular values of X, when that route was taken.
    pub(crate) fn spectral(&self) -> Option<&Spectral> {
        match self {
            Factor::Cholesky(_) => None,
            Factor::Spectral(f) => Some(f),
        }
    }
}

/// `X = U diag(σ) Vᵀ` in f64, with `logdet(I + a XᵀX) = Σ ln(1 + a σ_i²)`.
#[derive(Debug, Clone)]
pub(crate) struct Spectral {
    u: Array2<f64>,
    sigma: Array1<f64>,
    v: Array2<f64>,
    a: f64,
    logdet: f64,
}

impl Spectral {
    /// The thin SVD of X (in f64) and the log-det `Σ ln(1 + a σ_i²)`, which is that of
    /// `I + a·XᵀX` and of `I + a·X Xᵀ` alike.
    pub(crate) fn new<T: Float>(x: ArrayView2<T>, a: f64, what: &'static str) -> Result<Self> {
        crate::validate::elements_of::<f64>(what, &[x.nrows(), x.ncols()])?;
        let (m, n) = x.dim();
        let unit = (f64::EPSILON / 2.0).powi(2) * m.min(n) as f64;
        if !a.is_finite() {
            let limit = SPECTRAL_TOLERANCE / unit;
            return Err(Error::Scale {
                what,
                scale: f64::INFINITY,
                limit,
            });
        }
        // scaled by a power of two (exact) so that the SVD never overflows inside
        let largest = x.iter().fold(0.0f64, |m, v| m.max(v.as_f64().abs()));
        if largest == 0.0 {
            // X = 0: A = I, no decomposition needed
            let r = m.min(n);
            return Ok(Self {
                u: Array2::zeros((m, r)),
                sigma: Array1::zeros(r),
                v: Array2::zeros((n, r)),
                a,
                logdet: 0.0,
            });
        }
        let exponent = if largest > 0.0 {
            (largest.log2().floor() as i32).clamp(-1000, 1000)
        } else {
            0
        };
        let x64 = x.mapv(|v| v.as_f64() * 2f64.powi(-exponent));
        let (u, sigma, v) =
            crate::linalg::thin_svd(x64.view()).ok_or(Error::NoConvergence("SVD"))?;
        let sigma = sigma.mapv(|s| s * 2f64.powi(exponent));
        let dim = sigma.len();
        let sigma_max = sigma.iter().fold(0.0f64, |m, &x| m.max(x));
        let scale = a * sigma_max * sigma_max;
        let logdet: f64 = sigma.iter().map(|&s| (a * s * s).ln_1p()).sum();
        // the SVD's errors are about u·σ_max in each σ_i: a σ_i² is off by about u²·a σ_max²
        debug_assert_eq!(dim, m.min(n));
        let limit = SPECTRAL_TOLERANCE * logdet.abs().clamp(1.0, 1e3) / unit;
        if !scale.is_finite() || !logdet.is_finite() || scale > limit {
            return Err(Error::Scale { what, scale, limit });
        }
        Ok(Self {
            u,
            sigma,
            v,
            a,
            logdet,
        })
    }

    /// `c·X (I + a XᵀX)⁻¹ = c·U diag(σ_i/(1 + a σ_i²)) Vᵀ`, one row per row of X: the
    /// gradient rows of a log-det term without forming the inverse, whose products with X
    /// would cancel where `a σ²` is large.
    pub(crate) fn solution<T: Float>(&self, c: f64) -> Array2<T> {
        let mut us = self.u.clone();
        for (mut col, &s) in us.axis_iter_mut(Axis(1)).zip(&self.sigma) {
            let w = c * s / (1.0 + self.a * s * s);
            col.mapv_inplace(|x| x * w);
        }
        us.dot(&self.v.t()).mapv(T::from_f64)
    }
}

/// The estimated absolute error of a Cholesky log-det, `u·ρ·√dim` with `ρ = max L_ii² /
/// min L_ii²` (a lower bound of the condition number of A).
fn cholesky_error<T: Float>(f: &Cholesky<T>) -> f64 {
    let l = f.diagonal();
    let (lo, hi) = l.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
        let x = x.as_f64() * x.as_f64();
        (lo.min(x), hi.max(x))
    });
    let u = T::epsilon().as_f64() / 2.0;
    u * (hi / lo) * (l.len() as f64).sqrt()
}

/// Factors `A = I + a·gram` where `gram` is `XᵀX` or `X Xᵀ` (lower triangle read) and
/// `rows()` gives X: by Cholesky when its
/// estimated error is within [`Float::LOGDET_TOLERANCE`], otherwise (or should Cholesky fail) from the
/// singular values of X.
pub(crate) fn identity_plus<T: Float>(
    gram: &Array2<T>,
    a: T,
    rows: impl FnOnce() -> Array2<T>,
    what: &'static str,
    parallel: bool,
) -> Result<Factor<T>> {
    if let Ok(f) = Cholesky::new(shifted_identity(gram, a), what, parallel) {
        let logdet = f.logdet().as_f64();
        // relative to the log-det itself: near 0 the pivots' ln(1 + tiny) loses digits too
        if cholesky_error(&f) <= T::LOGDET_TOLERANCE * logdet.abs() {
            return Ok(Factor::Cholesky(f));
        }
    }
    Ok(Factor::Spectral(Spectral::new(
        rows().view(),
        a.as_f64(),
        what,
    )?))
}

/// Factors `A = I + a·gram` when only the Gram matrix is known (no rows to take singular
/// values of): by Cholesky, or [`Error::Scale`] when Cholesky fails at a large scale or the
/// estimated relative error of the log-det exceeds 100 × [`Float::LOGDET_TOLERANCE`].
pub(crate) fn identity_plus_gram<T: Float>(
    gram: &Array2<T>,
    a: T,
    what: &'static str,
    parallel: bool,
) -> Result<Cholesky<T>> {
    let allowed = 100.0 * T::LOGDET_TOLERANCE;
    let u = T::epsilon().as_f64() / 2.0;
    // the scale a·tr(G) and the largest one the Gram route can resolve to `allowed`
    let scale = a.as_f64() * gram.diag().iter().map(|x| x.as_f64()).sum::<f64>();
    let limit = allowed / u;
    let f = Cholesky::new(shifted_identity(gram, a), what, parallel).map_err(|e| {
        if !scale.is_finite() || scale > limit {
            Error::Scale { what, scale, limit }
        } else {
            e
        }
    })?;
    if cholesky_error(&f) > allowed * f.logdet().as_f64().abs().max(1.0) {
        return Err(Error::Scale { what, scale, limit });
    }
    Ok(f)
}

/// `ln det(I + c·S)` for a symmetric positive semi-definite S (f64), for the coding lengths
/// (`coding`: L(W), ALC, MICL), which never fail: by Cholesky, where I + cS is
/// positive definite, so rounding can only shrink a pivot that is ≥ 1 in exact arithmetic to
/// just below it, and the loop clamps it. Small matrices use the loop; larger ones the
/// backend's factorization, falling back to the loop should rounding fail it.
pub(crate) fn logdet_identity_plus_clamped(s: &Array2<f64>, c: f64) -> f64 {
    let k = s.nrows();
    let mut a = s * c;
    for i in 0..k {
        a[(i, i)] += 1.0;
    }
    if k > 64 {
        // positive definite in exact arithmetic; should rounding say otherwise, the loop
        // below (which clamps its pivots) decides
        if let Ok(chol) = crate::linalg::Cholesky::new(a.clone(), "I + cS", false) {
            return chol.logdet();
        }
    }
    let mut logdet = 0.0;
    for j in 0..k {
        let mut d = a[(j, j)];
        for p in 0..j {
            d -= a[(j, p)] * a[(j, p)];
        }
        // rounding can only shrink a pivot that is ≥ 1 in exact arithmetic to just below it
        let d = d.max(f64::MIN_POSITIVE).sqrt();
        a[(j, j)] = d;
        logdet += 2.0 * d.ln();
        for i in (j + 1)..k {
            let mut v = a[(i, j)];
            for p in 0..j {
                v -= a[(i, p)] * a[(j, p)];
            }
            a[(i, j)] = v / d;
        }
    }
    logdet
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Identical rows of norm s: `logdet(I + a XᵀX) = ln(1 + a m s²)` (one nonzero singular
    /// value √m·s); both sides, both routes agree with the closed form.
    #[test]
    fn identical_rows_match_the_closed_form() {
        for &(m, d) in &[(6usize, 3usize), (3, 6)] {
            for &s in &[1e-3, 1.0, 1e4, 1e8, 1e11] {
                let x = Array2::<f64>::from_shape_fn((m, d), |(_, j)| s * (j as f64 + 1.0));
                let norm2 = s * s * (1..=d).map(|j| (j * j) as f64).sum::<f64>();
                let a = 0.7;
                let exact = (a * m as f64 * norm2).ln_1p();
                let gram = if m >= d { x.t().dot(&x) } else { x.dot(&x.t()) };
                let f = identity_plus(&gram, a, || x.clone(), "test", false).unwrap();
                let got = f.logdet();
                assert!(
                    (got - exact).abs() <= 1e-9 * exact,
                    "m={m} s={s}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn spectral_solution_agrees_with_cholesky() {
        let x = Array2::<f64>::from_shape_fn((7, 4), |(i, j)| ((i * 3 + j * 5) % 7) as f64 - 3.0);
        let gram = x.t().dot(&x);
        let chol = Cholesky::new(shifted_identity(&gram, 0.3), "t", false).unwrap();
        let spec = Spectral::new(x.view(), 0.3, "t").unwrap();
        assert!((chol.logdet() - spec.logdet).abs() < 1e-12);
        let want = x.dot(&chol.inverse(false)) * 2.0;
        let got: Array2<f64> = spec.solution(2.0);
        assert!((&want - &got).iter().all(|e| e.abs() < 1e-12));
        // the sample side has the same log-det
        let xt = x.t().to_owned();
        let spec_t = Spectral::new(xt.view(), 0.3, "t").unwrap();
        assert!((spec_t.logdet - spec.logdet).abs() < 1e-12);
    }

    #[test]
    fn an_unreachable_scale_is_an_error() {
        let x = Array2::<f64>::from_elem((4, 2), 1e150);
        assert!(matches!(
            Spectral::new(x.view(), 1.0, "t"),
            Err(Error::Scale { .. })
        ));
    }
}
