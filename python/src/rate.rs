//! The coding rates, the rate reduction and the reference loss, with their gradients.

use mcr2::{Float, Membership, Precision};
use numpy::{Element, IntoPyArray};
use pyo3::prelude::*;

use crate::convert::{OrPy, array2, membership, precision};
use crate::each;

/// `R`, `Rc`, `ΔR = R − Rc` and the per-class terms of `Rc` (they sum to `rc`).
#[pyclass(module = "mcr2", frozen, get_all)]
#[derive(Clone)]
pub struct RateReduction {
    /// `R(Z) = ½ logdet(I + d/(nε²) ZᵀZ)`, the expansion term.
    pub r: f64,
    /// `Rc(Z | Π) = Σ_j tr(Π_j)/(2n) logdet(I + d/(tr(Π_j)ε²) ZᵀΠ_jZ)`, the compression term.
    pub rc: f64,
    /// `ΔR = R − Rc`.
    pub delta_r: f64,
    /// The class terms of `Rc` (0 for an empty class).
    pub class_terms: Vec<f64>,
}

#[pymethods]
impl RateReduction {
    fn __repr__(&self) -> String {
        format!(
            "RateReduction(r={}, rc={}, delta_r={}, class_terms={:?})",
            self.r, self.rc, self.delta_r, self.class_terms
        )
    }
}

impl<T: Float> From<mcr2::RateReduction<T>> for RateReduction {
    fn from(v: mcr2::RateReduction<T>) -> Self {
        Self {
            r: v.r.as_f64(),
            rc: v.rc.as_f64(),
            delta_r: v.delta_r.as_f64(),
            class_terms: v.class_terms.iter().map(|t| t.as_f64()).collect(),
        }
    }
}

/// `(value, gradient)` as a Python tuple.
pub fn pair<'py, A, T: Element>(
    py: Python<'py>,
    value: A,
    grad: mcr2::ndarray::Array2<T>,
) -> PyResult<Bound<'py, PyAny>>
where
    A: IntoPyObject<'py>,
{
    Ok((value, grad.into_pyarray(py)).into_pyobject(py)?.into_any())
}

/// The membership arguments of the class functions.
struct Classes<'a, 'py> {
    labels: Option<&'a Bound<'py, PyAny>>,
    n_classes: Option<usize>,
    membership: Option<&'a Bound<'py, PyAny>>,
}

impl Classes<'_, '_> {
    fn get<T: Float + Element>(&self) -> PyResult<Membership<T>> {
        membership(self.labels, self.n_classes, self.membership)
    }
}

/// R(Z) = ½ logdet(I + d/(nε²) ZᵀZ) of Z (n × d, rows are samples).
///
/// Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²; the MCR² reference code's `eps` is
/// ε²).
///
/// Rows of `z` are samples.
#[pyfunction]
#[pyo3(signature = (z, *, eps = None, eps_sq = None))]
pub fn coding_rate(
    py: Python<'_>,
    z: &Bound<'_, PyAny>,
    eps: Option<f64>,
    eps_sq: Option<f64>,
) -> PyResult<f64> {
    let p = precision(eps, eps_sq)?;
    each!(array2(z, "Z")?, a => {
        let v = a.as_array();
        py.detach(|| mcr2::coding_rate(&v, p)).py().map(|r| r.as_f64())
    })
}

/// (R(Z), ∂R/∂Z) with ∂R/∂Z = a Z (I + a ZᵀZ)⁻¹, a = d/(nε²).
///
/// Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²; the MCR² reference code's `eps` is
/// ε²).
///
/// Rows of `z` are samples.
#[pyfunction]
#[pyo3(signature = (z, *, eps = None, eps_sq = None))]
pub fn coding_rate_with_grad<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    eps: Option<f64>,
    eps_sq: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let p = precision(eps, eps_sq)?;
    each!(array2(z, "Z")?, a => {
        let v = a.as_array();
        let (r, g) = py.detach(|| mcr2::coding_rate_with_grad(&v, p)).py()?;
        pair(py, r.as_f64(), g)
    })
}

/// Rc(Z | Π) = Σ_j tr(Π_j)/(2n) logdet(I + d/(tr(Π_j)ε²) ZᵀΠ_jZ).
///
/// Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²; the MCR² reference code's `eps` is
/// ε²).
///
/// Classes: hard `labels` (integers in 0..n_classes) with `n_classes=`, or a soft
/// `membership=` (n × k, rows sum to 1, the dtype of `z`). Rows of `z` are samples.
#[pyfunction]
#[pyo3(signature = (z, labels = None, *, n_classes = None, membership = None, eps = None, eps_sq = None))]
pub fn class_coding_rate(
    py: Python<'_>,
    z: &Bound<'_, PyAny>,
    labels: Option<&Bound<'_, PyAny>>,
    n_classes: Option<usize>,
    membership: Option<&Bound<'_, PyAny>>,
    eps: Option<f64>,
    eps_sq: Option<f64>,
) -> PyResult<f64> {
    let p = precision(eps, eps_sq)?;
    let c = Classes {
        labels,
        n_classes,
        membership,
    };
    each!(array2(z, "Z")?, a => {
        let m = c.get()?;
        let v = a.as_array();
        py.detach(|| mcr2::class_coding_rate(&v, &m, p)).py().map(|r| r.as_f64())
    })
}

/// (Rc, ∂Rc/∂Z).
///
/// Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²; the MCR² reference code's `eps` is
/// ε²).
///
/// Classes: hard `labels` (integers in 0..n_classes) with `n_classes=`, or a soft
/// `membership=` (n × k, rows sum to 1, the dtype of `z`). Rows of `z` are samples.
#[pyfunction]
#[pyo3(signature = (z, labels = None, *, n_classes = None, membership = None, eps = None, eps_sq = None))]
pub fn class_coding_rate_with_grad<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    labels: Option<&Bound<'py, PyAny>>,
    n_classes: Option<usize>,
    membership: Option<&Bound<'py, PyAny>>,
    eps: Option<f64>,
    eps_sq: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let p = precision(eps, eps_sq)?;
    let c = Classes {
        labels,
        n_classes,
        membership,
    };
    each!(array2(z, "Z")?, a => {
        let m = c.get()?;
        let v = a.as_array();
        let (r, g) = py.detach(|| mcr2::class_coding_rate_with_grad(&v, &m, p)).py()?;
        pair(py, r.as_f64(), g)
    })
}

/// ∂Rc/∂Π (n × k) of a soft or hard membership.
///
/// Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²; the MCR² reference code's `eps` is
/// ε²).
///
/// Classes: hard `labels` (integers in 0..n_classes) with `n_classes=`, or a soft
/// `membership=` (n × k, rows sum to 1, the dtype of `z`). Rows of `z` are samples.
#[pyfunction]
#[pyo3(signature = (z, labels = None, *, n_classes = None, membership = None, eps = None, eps_sq = None))]
pub fn class_coding_rate_grad_membership<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    labels: Option<&Bound<'py, PyAny>>,
    n_classes: Option<usize>,
    membership: Option<&Bound<'py, PyAny>>,
    eps: Option<f64>,
    eps_sq: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let p = precision(eps, eps_sq)?;
    let c = Classes {
        labels,
        n_classes,
        membership,
    };
    each!(array2(z, "Z")?, a => {
        let m = c.get()?;
        let v = a.as_array();
        let g = py.detach(|| mcr2::class_coding_rate_grad_membership(&v, &m, p)).py()?;
        Ok(g.into_pyarray(py).into_any())
    })
}

/// ΔR(Z, Π) = R(Z) − Rc(Z | Π), with R, Rc and the class terms.
///
/// Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²; the MCR² reference code's `eps` is
/// ε²).
///
/// Classes: hard `labels` (integers in 0..n_classes) with `n_classes=`, or a soft
/// `membership=` (n × k, rows sum to 1, the dtype of `z`). Rows of `z` are samples.
#[pyfunction]
#[pyo3(signature = (z, labels = None, *, n_classes = None, membership = None, eps = None, eps_sq = None))]
pub fn rate_reduction(
    py: Python<'_>,
    z: &Bound<'_, PyAny>,
    labels: Option<&Bound<'_, PyAny>>,
    n_classes: Option<usize>,
    membership: Option<&Bound<'_, PyAny>>,
    eps: Option<f64>,
    eps_sq: Option<f64>,
) -> PyResult<RateReduction> {
    let p = precision(eps, eps_sq)?;
    let c = Classes {
        labels,
        n_classes,
        membership,
    };
    each!(array2(z, "Z")?, a => {
        let m = c.get()?;
        let v = a.as_array();
        py.detach(|| mcr2::rate_reduction(&v, &m, p)).py().map(RateReduction::from)
    })
}

/// (RateReduction, ∂ΔR/∂Z).
///
/// Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²; the MCR² reference code's `eps` is
/// ε²).
///
/// Classes: hard `labels` (integers in 0..n_classes) with `n_classes=`, or a soft
/// `membership=` (n × k, rows sum to 1, the dtype of `z`). Rows of `z` are samples.
#[pyfunction]
#[pyo3(signature = (z, labels = None, *, n_classes = None, membership = None, eps = None, eps_sq = None))]
pub fn rate_reduction_with_grad<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    labels: Option<&Bound<'py, PyAny>>,
    n_classes: Option<usize>,
    membership: Option<&Bound<'py, PyAny>>,
    eps: Option<f64>,
    eps_sq: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let p = precision(eps, eps_sq)?;
    let c = Classes {
        labels,
        n_classes,
        membership,
    };
    each!(array2(z, "Z")?, a => {
        let m = c.get()?;
        let v = a.as_array();
        let (rr, g) = py.detach(|| mcr2::rate_reduction_with_grad(&v, &m, p)).py()?;
        pair(py, RateReduction::from(rr), g)
    })
}

/// The MCR² reference code's loss `−γ₂ R_emp + Rc` with `R_emp = ½ logdet(I + γ₁ d/(nε²)
/// ZᵀZ)`.
#[pyclass(module = "mcr2", frozen)]
pub struct ReferenceLoss {
    inner: mcr2::ReferenceLoss,
    eps_sq: f64,
    gam1: f64,
    gam2: f64,
}

/// The terms of a [`ReferenceLoss`].
#[pyclass(module = "mcr2", frozen, get_all)]
#[derive(Clone)]
pub struct ReferenceLossValue {
    /// `−γ₂ R_emp + Rc`.
    pub loss: f64,
    /// `R_emp`.
    pub r_emp: f64,
    /// `Rc`.
    pub rc: f64,
}

#[pymethods]
impl ReferenceLossValue {
    fn __repr__(&self) -> String {
        format!(
            "ReferenceLossValue(loss={}, r_emp={}, rc={})",
            self.loss, self.r_emp, self.rc
        )
    }
}

impl<T: Float> From<mcr2::ReferenceLossValue<T>> for ReferenceLossValue {
    fn from(v: mcr2::ReferenceLossValue<T>) -> Self {
        Self {
            loss: v.loss.as_f64(),
            r_emp: v.r_emp.as_f64(),
            rc: v.rc.as_f64(),
        }
    }
}

#[pymethods]
impl ReferenceLoss {
    /// Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²; the reference code's `eps` is
    /// ε²). γ₁ > 0 and γ₂ ≥ 0 (reference defaults 1); `trace_offset=1e-8` adds the 1e-8 the
    /// reference code adds to tr(Π_j).
    #[new]
    #[pyo3(signature = (*, eps = None, eps_sq = None, gam1 = 1.0, gam2 = 1.0, trace_offset = 0.0))]
    fn new(
        eps: Option<f64>,
        eps_sq: Option<f64>,
        gam1: f64,
        gam2: f64,
        trace_offset: f64,
    ) -> PyResult<Self> {
        let p: Precision = precision(eps, eps_sq)?;
        let inner = mcr2::ReferenceLoss::new(p, gam1, gam2)
            .and_then(|l| l.with_trace_offset(trace_offset))
            .py()?;
        Ok(Self {
            inner,
            eps_sq: p.eps_sq(),
            gam1,
            gam2,
        })
    }

    /// The loss and its terms.
    #[pyo3(signature = (z, labels = None, *, n_classes = None, membership = None))]
    fn evaluate(
        &self,
        py: Python<'_>,
        z: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        n_classes: Option<usize>,
        membership: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ReferenceLossValue> {
        let c = Classes {
            labels,
            n_classes,
            membership,
        };
        each!(array2(z, "Z")?, a => {
            let m = c.get()?;
            let v = a.as_array();
            py.detach(|| self.inner.evaluate(&v, &m)).py().map(ReferenceLossValue::from)
        })
    }

    /// (ReferenceLossValue, ∂loss/∂Z).
    #[pyo3(signature = (z, labels = None, *, n_classes = None, membership = None))]
    fn evaluate_with_grad<'py>(
        &self,
        py: Python<'py>,
        z: &Bound<'py, PyAny>,
        labels: Option<&Bound<'py, PyAny>>,
        n_classes: Option<usize>,
        membership: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = Classes {
            labels,
            n_classes,
            membership,
        };
        each!(array2(z, "Z")?, a => {
            let m = c.get()?;
            let v = a.as_array();
            let (value, g) = py.detach(|| self.inner.evaluate_with_grad(&v, &m)).py()?;
            pair(py, ReferenceLossValue::from(value), g)
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "ReferenceLoss(eps_sq={}, gam1={}, gam2={})",
            self.eps_sq, self.gam1, self.gam2
        )
    }
}
