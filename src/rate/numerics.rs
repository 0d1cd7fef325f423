//! Numerics that never go NaN: where the Gram matrix is accumulated and factored
//! ([`Accumulate`]), the symmetric-eigenvalue fallback of a failed Cholesky factor, and the
//! smallest eigenvalue of each factored matrix ([`FactorReport`]).
//!
//! The reference code's users meet NaN log-dets in float32 (ryanchankh/mcr2 #1 and #6,
//! SimDINO #19, #20, #43): `I + a·G` is positive definite in exact arithmetic (its spectrum is
//! ≥ 1 for a positive semi-definite G), but its rounding errors are about `u·λ_max`, so once
//! `a·‖G‖` nears 1/u the computed matrix may have eigenvalues below zero and Cholesky fails.
//! The crate's one-shot rates then take the singular values of the rows (`factor.rs`); where
//! only the Gram matrix is known ([`RateStats`](crate::RateStats), SimDINO's covariances),
//! [`factor_gram`] falls back to the eigenvalues of `I + a·G`: those below the round-off
//! floor `max(1, dim·u·λ_max)` are noise around the exact value 1 (the spectrum is ≥ 1, and
//! exactly 1 in the null space of a rank-deficient G), so they are set to 1 and counted in
//! the report.

use ndarray::{Array1, Array2, ArrayRef2};

use super::RateReduction;
use crate::linalg::{Cholesky, shifted_identity};
use crate::{Error, Float, Membership, Precision, Result};

/// Where an evaluation of the rates accumulates its Gram matrices and factors them.
///
/// Measured (`tests/rate_numerics.rs`, features of norm 30, ε = 0.01, n_j < d): f32 input
/// evaluated in f32 is accurate to f32's own precision only (relative error 3.7e-8 in R,
/// Rc and ΔR, nine digits short of f64); accumulated in f64 it gives the f64 evaluation of
/// the same values exactly. [`Accumulate::F64`] is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Accumulate {
    /// In the precision of the input.
    Input,
    /// In f64 (an f32 input is widened, exactly; the memory of one f64 copy of Z).
    #[default]
    F64,
}

/// The route a factorization of `I + a·G` took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FactorRoute {
    /// Cholesky `L Lᵀ` succeeded: `logdet = 2 Σ ln L_ii`.
    Cholesky,
    /// Cholesky failed; from the eigenvalues of `I + a·G`, those below the round-off floor
    /// `max(1, dim·u·λ_max)` set to 1.
    Eigen,
}

/// How one `logdet(I + a·G)` was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FactorReport {
    /// The route taken.
    pub route: FactorRoute,
    /// Eigenvalues below the round-off floor `max(1, dim·u·λ_max)` (noise around the exact
    /// value 1 of the null space of G) set to 1; always 0 on the Cholesky route.
    pub clamped: usize,
    /// The smallest eigenvalue of the computed `I + a·G` (before any clamping), when asked
    /// for, and always on the eigenvalue route.
    pub min_eigenvalue: Option<f64>,
}

/// Rates from Gram matrices with a report per factored matrix.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RateReport<T> {
    /// R, Rc, ΔR and the class terms.
    pub rates: RateReduction<T>,
    /// The report of R's factorization.
    pub total: FactorReport,
    /// One report per class (`None` for an empty class, which is not factored).
    pub classes: Vec<Option<FactorReport>>,
}

impl<T> RateReport<T> {
    /// Whether any factorization fell back to the eigenvalues.
    pub fn any_fallback(&self) -> bool {
        std::iter::once(&self.total)
            .chain(self.classes.iter().flatten())
            .any(|r| r.route == FactorRoute::Eigen)
    }
}

/// A factored `A = I + a·G` (G symmetric positive semi-definite, lower triangle read).
#[derive(Debug, Clone)]
pub(crate) enum GramFactor<T> {
    Cholesky(Cholesky<T>),
    /// `A ≈ V diag(λ) Vᵀ` with every λ ≥ 1.
    Eigen {
        values: Array1<T>,
        vectors: Array2<T>,
    },
}

impl<T: Float> GramFactor<T> {
    /// `ln det A`.
    pub(crate) fn logdet(&self) -> T {
        match self {
            GramFactor::Cholesky(f) => f.logdet(),
            GramFactor::Eigen { values, .. } => values.iter().map(|&l| l.ln()).sum(),
        }
    }

    /// `A⁻¹` (full, symmetric).
    pub(crate) fn inverse(&self) -> Array2<T> {
        match self {
            GramFactor::Cholesky(f) => f.inverse(true),
            GramFactor::Eigen { values, vectors } => {
                let mut scaled = vectors.clone();
                for (mut col, &l) in scaled.columns_mut().into_iter().zip(values) {
                    col.mapv_inplace(|v| v / l);
                }
                scaled.dot(&vectors.t())
            }
        }
    }
}

/// Factors `A = I + a·gram`: by Cholesky, or should it fail, from the eigenvalues of A with
/// those below the round-off floor set to 1 (never an error for a finite matrix, never NaN). With
/// `min_eigenvalue`, the report carries A's smallest eigenvalue on either route.
pub(crate) fn factor_gram<T: Float>(
    gram: &Array2<T>,
    a: T,
    what: &'static str,
    min_eigenvalue: bool,
) -> Result<(GramFactor<T>, FactorReport)> {
    crate::validate::finite("Gram matrix", gram)?;
    if !a.is_finite() {
        return Err(Error::Scale {
            what,
            scale: f64::INFINITY,
            limit: f64::MAX,
        });
    }
    let m = shifted_identity(gram, a);
    let smallest = |m: &Array2<T>| -> Result<(Array1<T>, Array2<T>)> {
        crate::linalg::eigh(m.view()).ok_or(Error::NoConvergence("symmetric eigenvalues"))
    };
    match Cholesky::new(m.clone(), what, true) {
        Ok(f) => {
            let min = if min_eigenvalue {
                Some(
                    smallest(&m)?
                        .0
                        .iter()
                        .fold(f64::INFINITY, |lo, &v| lo.min(v.as_f64())),
                )
            } else {
                None
            };
            let report = FactorReport {
                route: FactorRoute::Cholesky,
                clamped: 0,
                min_eigenvalue: min,
            };
            Ok((GramFactor::Cholesky(f), report))
        }
        Err(_) => {
            let (mut values, vectors) = smallest(&m)?;
            let min = values
                .iter()
                .fold(f64::INFINITY, |lo, &v| lo.min(v.as_f64()));
            let floor = round_off_floor::<T>(&values);
            let mut clamped = 0;
            for v in values.iter_mut() {
                if v.as_f64() < floor {
                    *v = T::one();
                    clamped += 1;
                }
            }
            let report = FactorReport {
                route: FactorRoute::Eigen,
                clamped,
                min_eigenvalue: Some(min),
            };
            Ok((GramFactor::Eigen { values, vectors }, report))
        }
    }
}

/// `max(1, dim·u·λ_max)`: eigenvalues of the computed `I + a·G` below it are round-off
/// (the errors of forming and decomposing A are about `u·λ_max` in every eigenvalue, and the
/// exact spectrum is ≥ 1); they are taken to be 1, the exact value in the null space of G.
fn round_off_floor<T: Float>(values: &Array1<T>) -> f64 {
    let largest = values.iter().fold(0.0f64, |m, &v| m.max(v.as_f64().abs()));
    let u = T::epsilon().as_f64() / 2.0;
    (values.len() as f64 * u * largest).max(1.0)
}

/// `Z` widened to f64 (exact for f32 and f64 input).
pub(crate) fn widen<T: Float>(z: &ArrayRef2<T>) -> Array2<f64> {
    z.mapv(|v| v.as_f64())
}

/// The membership in f64 (hard labels are shared; soft weights widened exactly).
pub(crate) fn widen_membership<T: Float>(m: &Membership<T>) -> Result<Membership<f64>> {
    match m.labels() {
        Some(labels) => Ok(Membership::from(labels.clone())),
        None => Membership::soft(m.to_matrix().mapv(|v| v.as_f64())),
    }
}

/// `ΔR` with its terms, and its gradient, accumulated and factored as `accumulate` says:
/// with [`Accumulate::F64`] an f32 input gives the f64 evaluation of its (exactly widened)
/// values, then the gradient is rounded to the input's precision; the rates are returned in
/// f64 either way.
///
/// ```
/// use mcr2::{Accumulate, Membership, Precision, rate_reduction_accumulated};
/// use ndarray::array;
/// let z = array![[30.0f32, 0.0, 0.0], [29.9, 0.1, 0.0], [0.0, 30.0, 0.0], [0.0, 0.0, 30.0]];
/// let m = Membership::hard(&[0, 0, 1, 1], 2)?;
/// let eps = Precision::from_eps(0.01)?;
/// let (rr, grad) = rate_reduction_accumulated(&z, &m, eps, Accumulate::F64)?;
/// let exact = mcr2::rate_reduction(&z.mapv(f64::from), &Membership::hard(&[0, 0, 1, 1], 2)?, eps)?;
/// assert_eq!(rr.delta_r, exact.delta_r);
/// assert_eq!(grad.dim(), (4, 3));
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn rate_reduction_accumulated<T: Float>(
    z: &ArrayRef2<T>,
    membership: &Membership<T>,
    eps: Precision,
    accumulate: Accumulate,
) -> Result<(RateReduction<f64>, Array2<T>)> {
    let widen_rates = |r: RateReduction<T>| RateReduction {
        r: r.r.as_f64(),
        rc: r.rc.as_f64(),
        delta_r: r.delta_r.as_f64(),
        class_terms: r.class_terms.iter().map(|v| v.as_f64()).collect(),
    };
    match accumulate {
        Accumulate::Input => {
            let (rr, g) = super::rate_reduction_with_grad(z, membership, eps)?;
            Ok((widen_rates(rr), g))
        }
        Accumulate::F64 => {
            crate::validate::matrix("Z", z)?;
            crate::validate::elements_of::<f64>("Z widened to f64", &[z.nrows(), z.ncols()])?;
            let z64 = widen(z);
            let (rr, g) =
                super::rate_reduction_with_grad(&z64, &widen_membership(membership)?, eps)?;
            Ok((rr, g.mapv(T::from_f64)))
        }
    }
}
