//! Coding rate, class-conditional coding rate and rate reduction (MCR²), with gradients.
//!
//! Notation (Yu et al., arXiv 2006.08558, Eq. 2–8; here `z` is n × d, rows are samples, so the
//! papers' Z ∈ R^{d×n} is our `zᵀ`):
//!
//! * `R(Z) = ½ logdet(I + d/(nε²) ZᵀZ)`
//! * `Rc(Z | Π) = Σ_j tr(Π_j)/(2n) · logdet(I + d/(tr(Π_j) ε²) Zᵀ Π_j Z)`
//! * `ΔR(Z | Π) = R(Z) − Rc(Z | Π)`
//!
//! Each log-det is computed on the smaller side (d × d or n_j × n_j, by Sylvester's identity
//! `det(I + A B) = det(I + B A)`), by Cholesky or, where that would lose accuracy (badly
//! conditioned data of large norm), from the singular values of the rows (see the crate's
//! reliability contract); with hard labels the per-class Gram matrices are formed once and
//! their sum is the total Gram matrix.
//!
//! The rate-reduction loss family, each with its gradient:
//!
//! | item | formula | reference |
//! |---|---|---|
//! | [`TotalCodingRate`] | `(1/V) Σ_v R(Z_v) + λ (1/(V n)) Σ_{v,i} cos(z_{v,i}, z̄_i)` | EMP-SSL, arXiv 2304.03977 |
//! | [`multi_view_rate_reduction`], [`ReferenceLoss::evaluate_views`] | ΔR of the stacked views, the views of sample i forming class i | Yu et al. 2020 (self-supervised), `train_selfsup.py` |
//! | [`SimDinoLoss`], [`ViewCovariances`] | `−coeff·C − γ (1/V) Σ_v ½ logdet(I + p/(mNε²) Σ_v)` | SimDINO, arXiv 2502.10385 |
//! | [`closed_loop_rate_with_grad`], [`closed_loop_class_rates_with_grad`] | `R(Z ∪ Ẑ) − ½(R(Z) + R(Ẑ))`, total and per class | CTRL, arXiv 2111.06636 |
//! | [`head_coding_rate`] | `½ Σ_k logdet(I + p/(Nε²) Ŵ_k Ŵ_kᵀ)` on unit tokens, mean and std | CRATE `vis_utils` |
//! | [`Convention`] | each reference's `eps`, γ₁, trace offset and scaling | |
//! | [`Accumulate`], [`RateStats::report`] | f64 accumulation of f32 input; the eigenvalue fallback | |

mod closed_loop;
mod convention;
pub(crate) mod engine;
pub(crate) mod factor;
mod gradient;
pub(crate) mod gram;
mod measure;
mod membership_grad;
mod numerics;
mod reference;
mod simdino;
mod stats;
mod views;

pub use closed_loop::{
    ClosedLoopClassRates, ClosedLoopRate, closed_loop_class_rates_with_grad,
    closed_loop_rate_with_grad,
};
pub use convention::Convention;
pub use measure::{HEAD_CODING_RATE_EPS_SQ, HeadCodingRate, head_coding_rate};
pub use membership_grad::class_coding_rate_grad_membership;
pub use numerics::{Accumulate, FactorReport, FactorRoute, RateReport, rate_reduction_accumulated};
pub use reference::{ReferenceLoss, ReferenceLossValue};
pub use simdino::{
    Expansion, ExpansionOf, SimDinoGrads, SimDinoLoss, SimDinoValue, ViewCovariances,
};
pub use stats::RateStats;
pub use views::{TotalCodingRate, TotalCodingRateValue, multi_view_rate_reduction, view_groups};

use ndarray::{Array2, ArrayRef2};

use crate::{Float, Membership, Precision, Result, validate};
use engine::{Evaluation, Params};

/// The terms of the rate reduction `ΔR = R − Rc`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RateReduction<T> {
    /// `R(Z)`: the coding rate of all samples (expansion term).
    pub r: T,
    /// `Rc(Z | Π)`: the class-conditional rate (compression term).
    pub rc: T,
    /// `ΔR = R − Rc`.
    pub delta_r: T,
    /// `tr(Π_j)/(2n) · logdet(I + d/(tr(Π_j) ε²) Zᵀ Π_j Z)` for each class j (0 for an empty
    /// class); they sum to `rc`.
    pub class_terms: Vec<T>,
}

fn paper(eps: Precision) -> Params {
    Params {
        eps_sq: eps.eps_sq(),
        gam1: 1.0,
        trace_offset: 0.0,
    }
}

fn check<T: Float>(z: &ArrayRef2<T>, membership: Option<&Membership<T>>) -> Result<()> {
    validate::matrix("Z", z)?;
    if let Some(m) = membership {
        m.check_samples(z.nrows())?;
    }
    Ok(())
}

/// Coding rate `R(Z) = ½ logdet(I + d/(nε²) ZᵀZ)` of `z` (n × d, rows are samples).
///
/// The log-det is taken on the smaller of the d × d and n × n sides.
///
/// ```
/// use mcr2::{coding_rate, Precision};
/// use ndarray::array;
/// // rows e1, e1, e2, e3 and ε² = 0.5 give R = ln 5
/// let z = array![[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
/// let r = coding_rate(&z, Precision::from_eps_sq(0.5)?)?;
/// assert!((r - 5f64.ln()).abs() < 1e-14);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn coding_rate<T: Float>(z: &ArrayRef2<T>, eps: Precision) -> Result<T> {
    on_pool(z, || {
        check(z, None)?;
        Ok(Evaluation::new(z.view(), None, paper(eps), true)?.r)
    })
}

/// `R(Z)` and its gradient `∂R/∂Z = a Z (I + a ZᵀZ)⁻¹`, `a = d/(nε²)` (n × d), from one
/// factorization.
pub fn coding_rate_with_grad<T: Float>(z: &ArrayRef2<T>, eps: Precision) -> Result<(T, Array2<T>)> {
    on_pool(z, || {
        check(z, None)?;
        let ev = Evaluation::new(z.view(), None, paper(eps), true)?;
        let mut g = Array2::zeros(z.dim());
        ev.gradient_into(1.0, 0.0, g.view_mut());
        Ok((ev.r, g))
    })
}

/// Class-conditional coding rate
/// `Rc(Z | Π) = Σ_j tr(Π_j)/(2n) · logdet(I + d/(tr(Π_j) ε²) Zᵀ Π_j Z)`.
pub fn class_coding_rate<T: Float>(
    z: &ArrayRef2<T>,
    membership: &Membership<T>,
    eps: Precision,
) -> Result<T> {
    on_pool(z, || {
        check(z, Some(membership))?;
        Ok(Evaluation::new(z.view(), Some(membership), paper(eps), false)?.rc())
    })
}

/// `Rc(Z | Π)` and its gradient `∂Rc/∂Z = d/(nε²) Σ_j Π_j Z (I + a_j Zᵀ Π_j Z)⁻¹` (n × d).
pub fn class_coding_rate_with_grad<T: Float>(
    z: &ArrayRef2<T>,
    membership: &Membership<T>,
    eps: Precision,
) -> Result<(T, Array2<T>)> {
    on_pool(z, || {
        check(z, Some(membership))?;
        let ev = Evaluation::new(z.view(), Some(membership), paper(eps), false)?;
        let mut g = Array2::zeros(z.dim());
        ev.gradient_into(0.0, 1.0, g.view_mut());
        Ok((ev.rc(), g))
    })
}

/// Rate reduction `ΔR = R − Rc` with its terms.
///
/// ```
/// use mcr2::{rate_reduction, Membership, Precision};
/// use ndarray::array;
/// let z = array![[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
/// let m = Membership::hard(&[0, 0, 1, 1], 2)?;
/// let rr = rate_reduction(&z, &m, Precision::from_eps_sq(0.5)?)?;
/// assert!((rr.r - 5f64.ln()).abs() < 1e-14);
/// assert!((rr.rc - 112f64.ln() / 4.0).abs() < 1e-14);
/// assert!((rr.delta_r - (rr.r - rr.rc)).abs() < 1e-15);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn rate_reduction<T: Float>(
    z: &ArrayRef2<T>,
    membership: &Membership<T>,
    eps: Precision,
) -> Result<RateReduction<T>> {
    on_pool(z, || {
        check(z, Some(membership))?;
        let ev = Evaluation::new(z.view(), Some(membership), paper(eps), true)?;
        Ok(report(&ev))
    })
}

fn report<T: Float>(ev: &Evaluation<'_, '_, T>) -> RateReduction<T> {
    let rc = ev.rc();
    RateReduction {
        r: ev.r,
        rc,
        delta_r: ev.r - rc,
        class_terms: ev.class_terms(),
    }
}

/// `ΔR` with its gradient `∂ΔR/∂Z = ∂R/∂Z − ∂Rc/∂Z` (n × d); value and gradient share one
/// factorization per class.
pub fn rate_reduction_with_grad<T: Float>(
    z: &ArrayRef2<T>,
    membership: &Membership<T>,
    eps: Precision,
) -> Result<(RateReduction<T>, Array2<T>)> {
    let mut g = Array2::zeros(z.dim());
    let rr = rate_reduction_with_grad_into(z, membership, eps, &mut g)?;
    Ok((rr, g))
}

/// As [`rate_reduction_with_grad`], writing the gradient into a caller-owned n × d buffer
/// (no allocation proportional to n besides the buffer itself: for large n the peak memory is
/// Z, the buffer, a fixed 2²⁰-element scratch and O(k d²)).
pub fn rate_reduction_with_grad_into<T: Float>(
    z: &ArrayRef2<T>,
    membership: &Membership<T>,
    eps: Precision,
    grad: &mut ArrayRef2<T>,
) -> Result<RateReduction<T>> {
    on_pool(z, || {
        check(z, Some(membership))?;
        engine::check_out(grad, z.nrows(), z.ncols())?;
        let ev = Evaluation::new(z.view(), Some(membership), paper(eps), true)?;
        ev.gradient_into(1.0, -1.0, grad.view_mut());
        Ok(report(&ev))
    })
}

/// Runs one evaluation on `z` (n × d) through [`crate::rows::on_pool`], sized by its Gram
/// products ([`gram::gram_work`]).
fn on_pool<T: Float, R: Send>(z: &ArrayRef2<T>, f: impl FnOnce() -> R + Send) -> R {
    let (n, d) = z.dim();
    crate::rows::on_pool(gram::gram_work(n, d), f)
}
