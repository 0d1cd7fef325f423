//! The loss exactly as the reference MCR² training code computes it.

use ndarray::{Array2, ArrayRef2};

use super::engine::{Evaluation, Params};
use crate::{Float, Membership, Precision, Result};

/// The MCR² training loss of the reference implementation (ryanchankh/mcr2, `loss.py`),
/// to be **minimized**:
///
/// `loss = −γ₂ · R_emp + Rc`, with `R_emp = ½ logdet(I + γ₁ d/(nε²) ZᵀZ)`
///
/// (γ₁ scales the covariance inside R's log-det; γ₂ weights R, not Rc). With γ₁ = γ₂ = 1 the
/// loss is −ΔR. The reference code also adds 1e-8 to every tr(Π_j); that offset is off by
/// default (the papers' definition) and switched on with
/// [`with_trace_offset`](Self::with_trace_offset)`(`[`REFERENCE_TRACE_OFFSET`](Self::REFERENCE_TRACE_OFFSET)`)`.
///
/// ```
/// use mcr2::{Membership, Precision, ReferenceLoss};
/// use ndarray::array;
/// let z: ndarray::Array2<f64> = array![[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
/// let m = Membership::hard(&[0, 0, 1, 1], 2)?;
/// let loss = ReferenceLoss::new(Precision::from_eps_sq(0.5)?, 20.0, 0.05)?;
/// let v = loss.evaluate(&z, &m)?;
/// assert!((v.loss - 0.905153513).abs() < 1e-6);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "LossRepr", into = "LossRepr"))]
pub struct ReferenceLoss {
    eps: Precision,
    gam1: f64,
    gam2: f64,
    trace_offset: f64,
}

/// Value of a [`ReferenceLoss`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReferenceLossValue<T> {
    /// `−γ₂ R_emp + Rc`.
    pub loss: T,
    /// `R_emp = ½ logdet(I + γ₁ d/(nε²) ZᵀZ)`.
    pub r_emp: T,
    /// `Rc` (with the trace offset, if set).
    pub rc: T,
}

impl ReferenceLoss {
    /// The offset the reference code adds to tr(Π_j).
    pub const REFERENCE_TRACE_OFFSET: f64 = 1e-8;

    /// Largest accepted γ₁ and γ₂: beyond it the loss of finite features may overflow.
    pub const MAX_GAMMA: f64 = 1e12;

    /// Loss with precision ε, `gam1` (0 < γ₁ ≤ [`MAX_GAMMA`](Self::MAX_GAMMA)) and `gam2`
    /// (0 ≤ γ₂ ≤ `MAX_GAMMA`). The reference defaults are γ₁ = γ₂ = 1.
    pub fn new(eps: Precision, gam1: f64, gam2: f64) -> Result<Self> {
        crate::validate::positive("gam1", gam1)?;
        crate::validate::finite_non_negative("gam2", gam2)?;
        crate::validate::at_most("gam1", gam1, Self::MAX_GAMMA)?;
        crate::validate::at_most("gam2", gam2, Self::MAX_GAMMA)?;
        Ok(Self {
            eps,
            gam1,
            gam2,
            trace_offset: 0.0,
        })
    }

    /// Adds `offset` (finite, ≥ 0) to every tr(Π_j), in both the weight and the scale of
    /// the class term, as the reference code does with 1e-8.
    pub fn with_trace_offset(mut self, offset: f64) -> Result<Self> {
        crate::validate::finite_non_negative("trace_offset", offset)?;
        self.trace_offset = offset;
        Ok(self)
    }

    fn params(&self) -> Params {
        Params {
            eps_sq: self.eps.eps_sq(),
            gam1: self.gam1,
            trace_offset: self.trace_offset,
        }
    }

    fn eval<'z, 'm, T: Float>(
        &self,
        z: &'z ArrayRef2<T>,
        membership: &'m Membership<T>,
    ) -> Result<(Evaluation<'z, 'm, T>, ReferenceLossValue<T>)> {
        crate::validate::matrix("Z", z)?;
        membership.check_samples(z.nrows())?;
        let ev = Evaluation::new(z.view(), Some(membership), self.params(), true)?;
        let rc = ev.rc();
        let value = ReferenceLossValue {
            loss: rc - T::from_f64(self.gam2) * ev.r,
            r_emp: ev.r,
            rc,
        };
        Ok((ev, value))
    }

    /// The loss and its terms.
    pub fn evaluate<T: Float>(
        &self,
        z: &ArrayRef2<T>,
        membership: &Membership<T>,
    ) -> Result<ReferenceLossValue<T>> {
        Ok(self.eval(z, membership)?.1)
    }

    /// The loss and its gradient with respect to `z` (n × d).
    pub fn evaluate_with_grad<T: Float>(
        &self,
        z: &ArrayRef2<T>,
        membership: &Membership<T>,
    ) -> Result<(ReferenceLossValue<T>, Array2<T>)> {
        let (ev, value) = self.eval(z, membership)?;
        let mut g = Array2::zeros(z.dim());
        ev.gradient_into(-self.gam2, 1.0, g.view_mut());
        Ok((value, g))
    }
}

/// The serialized form, read back through the checked constructors.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct LossRepr {
    eps: Precision,
    gam1: f64,
    gam2: f64,
    trace_offset: f64,
}

#[cfg(feature = "serde")]
impl TryFrom<LossRepr> for ReferenceLoss {
    type Error = crate::Error;
    fn try_from(r: LossRepr) -> Result<Self> {
        ReferenceLoss::new(r.eps, r.gam1, r.gam2)?.with_trace_offset(r.trace_offset)
    }
}

#[cfg(feature = "serde")]
impl From<ReferenceLoss> for LossRepr {
    fn from(l: ReferenceLoss) -> Self {
        LossRepr {
            eps: l.eps,
            gam1: l.gam1,
            gam2: l.gam2,
            trace_offset: l.trace_offset,
        }
    }
}
