//! The precision ε of lossy coding, given unambiguously as ε or as ε².

use crate::{Error, Result};

/// The precision ε of the coding rate `R_ε(Z) = ½ logdet(I + d/(nε²) ZᵀZ)`.
///
/// The papers write ε; the reference implementations take **ε²** in an argument they call
/// `eps`. Build a `Precision` with [`Precision::eps`] (the papers' ε) or
/// [`Precision::eps_sq`] (the reference code's `eps`), never from a bare float:
///
/// ```
/// use mcr2::Precision;
/// let a = Precision::from_eps(0.5)?;      // ε = 0.5
/// let b = Precision::from_eps_sq(0.25)?;  // ε² = 0.25: the same precision
/// assert_eq!(a, b);
/// assert!(Precision::from_eps(-1.0).is_err());
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "PrecisionRepr", into = "PrecisionRepr")
)]
pub struct Precision {
    eps_sq: f64,
}

impl Precision {
    /// Precision from ε (the papers' notation). Errors unless ε is finite and > 0.
    pub fn from_eps(eps: f64) -> Result<Self> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::InvalidPrecision {
                name: "eps",
                value: eps,
            });
        }
        let eps_sq = eps * eps;
        if !(eps_sq.is_finite() && eps_sq > 0.0) {
            return Err(Error::InvalidPrecision {
                name: "eps",
                value: eps,
            });
        }
        Ok(Self { eps_sq })
    }

    /// Precision from ε² (what the reference code calls `eps`). Errors unless ε² is finite
    /// and > 0.
    pub fn from_eps_sq(eps_sq: f64) -> Result<Self> {
        if !(eps_sq.is_finite() && eps_sq > 0.0) {
            return Err(Error::InvalidPrecision {
                name: "eps_sq",
                value: eps_sq,
            });
        }
        Ok(Self { eps_sq })
    }

    /// ε.
    pub fn eps(self) -> f64 {
        self.eps_sq.sqrt()
    }

    /// ε².
    pub fn eps_sq(self) -> f64 {
        self.eps_sq
    }
}

/// Serialized form: `{"eps_sq": …}`, validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct PrecisionRepr {
    eps_sq: f64,
}

#[cfg(feature = "serde")]
impl TryFrom<PrecisionRepr> for Precision {
    type Error = Error;
    fn try_from(r: PrecisionRepr) -> Result<Self> {
        Precision::from_eps_sq(r.eps_sq)
    }
}

#[cfg(feature = "serde")]
impl From<Precision> for PrecisionRepr {
    fn from(p: Precision) -> Self {
        PrecisionRepr { eps_sq: p.eps_sq }
    }
}
