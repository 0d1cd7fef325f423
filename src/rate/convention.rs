//! Each reference's conventions as a named preset, so that code ported from it gives the
//! same numbers: what its `eps` means, where γ₁ goes, what it adds to tr(Π_j), how it scales
//! the coding rate.

use ndarray::{ArrayRef2, ArrayView2};

use super::{ReferenceLoss, simdino::ViewCovariances};
use crate::{Float, Membership, Precision, Result};

/// A reference's conventions for the coding rate and the MCR² loss.
///
/// | preset | `eps` means | R | loss |
/// |---|---|---|---|
/// | [`Paper`](Self::Paper) | ε | `½ logdet(I + d/(nε²) ZᵀZ)` | `−ΔR` |
/// | [`Mcr2Reference`](Self::Mcr2Reference) | ε² | `½ logdet(I + γ₁ d/(n·eps) ZᵀZ)` | `−γ₂ R + Rc`, tr(Π_j) + 1e-8 |
/// | [`SimDino`](Self::SimDino) | ε² | `γ · ½ logdet(I + p/(m N·eps) ZᵀZ)`, `γ = (p + N m)/(p N m)` | (see [`SimDinoLoss`](super::SimDinoLoss)) |
///
/// ```
/// use mcr2::rate::Convention;
/// use ndarray::array;
/// let z: ndarray::Array2<f64> = array![[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
/// // the mcr2 reference's `eps = 0.5` is ε² = 0.5: R = ln 5 (REFERENCE.md §2.3)
/// let r = Convention::mcr2_reference(0.5).coding_rate(&z)?;
/// assert!((r - 5f64.ln()).abs() < 1e-14);
/// // the papers' ε = 0.5 is ε² = 0.25: a = d/(nε²) = 3, ZᵀZ = diag(2, 1, 1)
/// let r = Convention::Paper { eps: 0.5 }.coding_rate(&z)?;
/// assert!((r - 0.5 * (7f64.ln() + 2.0 * 4f64.ln())).abs() < 1e-14);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Convention {
    /// The papers (Yu et al. 2020, Eq. 2–8): `eps` is ε.
    Paper {
        /// ε.
        eps: f64,
    },
    /// ryanchankh/mcr2 `loss.py`, `MaximalCodingRateReduction(gam1, gam2, eps)`:
    /// `scalar = p / (m * self.eps)`, `logdet(I + gam1 * scalar * W @ W.T) / 2` for R,
    /// `trPi = Pi[j].trace() + 1e-8` for each class, `loss = -gam2 * R + Rc`.
    Mcr2Reference {
        /// The code's `eps`: ε² (constructor default 0.01).
        eps: f64,
        /// γ₁, inside R's log-det (default 1).
        gam1: f64,
        /// γ₂, the weight of R (default 1).
        gam2: f64,
    },
    /// RobinWu218/SimDINO `MCRLoss.calc_expansion`: `scalar = p / (m * N * self.eps)`,
    /// `half_logdet(I + scalar * cov)`, `loss *= (p+N*m)/(p*N*m)`.
    SimDino {
        /// The code's `eps`: ε² (default 0.05).
        eps: f64,
        /// N, the number of processes (the code's world size).
        processes: usize,
    },
}

impl Convention {
    /// The mcr2 reference with `eps` (its ε²) and γ₁ = γ₂ = 1.
    pub fn mcr2_reference(eps: f64) -> Self {
        Convention::Mcr2Reference {
            eps,
            gam1: 1.0,
            gam2: 1.0,
        }
    }

    /// SimDINO on one process with `eps` (its ε²).
    pub fn simdino(eps: f64) -> Self {
        Convention::SimDino { eps, processes: 1 }
    }

    /// The precision ε this preset's `eps` stands for.
    pub fn precision(&self) -> Result<Precision> {
        match *self {
            Convention::Paper { eps } => Precision::from_eps(eps),
            Convention::Mcr2Reference { eps, .. } | Convention::SimDino { eps, .. } => {
                Precision::from_eps_sq(eps)
            }
        }
    }

    /// The coding rate of `z` (n × d, rows are samples) as this preset computes it: R (paper),
    /// `R_emp` with γ₁ (mcr2 reference), or SimDINO's expansion term of one view held by one
    /// of N processes (`z` = its m rows, the covariance not summed: the code's default
    /// `reduce_cov = 0`; with N = 1, all rows).
    pub fn coding_rate<T: Float>(&self, z: &ArrayRef2<T>) -> Result<T> {
        match *self {
            Convention::Paper { .. } => super::coding_rate(z, self.precision()?),
            Convention::Mcr2Reference { .. } => {
                crate::validate::matrix("Z", z)?;
                // R_emp does not depend on the classes: one class holding every sample
                let m = Membership::hard(&vec![0; z.nrows()], 1)?;
                Ok(self.loss()?.evaluate(z, &m)?.r_emp)
            }
            Convention::SimDino { eps, processes } => {
                crate::validate::matrix("Z", z)?;
                crate::validate::at_least_one("processes", processes)?;
                let mut stats = ViewCovariances::new(z.ncols(), 1)?;
                let views: [ArrayView2<T>; 1] = [z.view()];
                stats.push(&views)?;
                Ok(stats.expansion_over(eps, processes)?.value)
            }
        }
    }

    /// The MCR² loss of this preset: `−ΔR` (paper: γ₁ = γ₂ = 1, no trace offset) or the
    /// mcr2 reference's (its γ₁, γ₂ and the 1e-8 trace offset). SimDINO has no class-
    /// conditional rate: an [`Error::InvalidParameter`](crate::Error::InvalidParameter).
    pub fn loss(&self) -> Result<ReferenceLoss> {
        match *self {
            Convention::Paper { .. } => ReferenceLoss::new(self.precision()?, 1.0, 1.0),
            Convention::Mcr2Reference { gam1, gam2, .. } => {
                ReferenceLoss::new(self.precision()?, gam1, gam2)?
                    .with_trace_offset(ReferenceLoss::REFERENCE_TRACE_OFFSET)
            }
            Convention::SimDino { .. } => Err(crate::Error::InvalidParameter {
                name: "convention",
                value: "SimDino".into(),
                reason: "SimDINO's loss has no class-conditional rate; use SimDinoLoss",
            }),
        }
    }
}
