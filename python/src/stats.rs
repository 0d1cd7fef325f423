//! `RateStats`: the rates of a data set from per-class statistics pushed in chunks, merged
//! across processes (picklable).

use mcr2::{Float, Membership};
use numpy::{Element, IntoPyArray};
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::convert::{OrPy, Typed, array2, dtype_name, is_f32, membership, precision, typed2};
use crate::each;
use crate::rate::RateReduction;

type Inner = Typed<mcr2::RateStats<f32>, mcr2::RateStats<f64>>;

/// Statistics `(n, tr(Π_j), G_j = ZᵀΠ_jZ)` from which R, Rc and ΔR follow exactly, whatever
/// the chunking: push chunks, merge statistics of other processes, pickle them.
#[pyclass(module = "mcr2")]
pub struct RateStats {
    inner: Inner,
}

/// The samples and membership of a push or retract, in the statistics' float type.
fn chunk<'py, T: Float + Element>(
    z: &Bound<'py, PyAny>,
    labels: Option<&Bound<'py, PyAny>>,
    n_classes: usize,
    membership_arg: Option<&Bound<'py, PyAny>>,
) -> PyResult<(numpy::PyReadonlyArray2<'py, T>, Membership<T>)> {
    let m = membership::<T>(labels, labels.map(|_| n_classes), membership_arg)?;
    Ok((typed2::<T>(z, "Z")?, m))
}

/// The bytes of a [`RateStats`]: a tag byte (4 or 8, the float width) then the postcard
/// form of the crate's serialized statistics (floats stored exactly).
fn encode<T: Float>(stats: &mcr2::RateStats<T>) -> PyResult<Vec<u8>>
where
    mcr2::RateStats<T>: serde::Serialize,
{
    let mut out = vec![std::mem::size_of::<T>() as u8];
    out.extend(
        postcard::to_allocvec(stats)
            .map_err(|e| PyValueError::new_err(format!("RateStats: cannot encode: {e}")))?,
    );
    Ok(out)
}

/// Statistics from the bytes after the tag; the crate checks every field on the way in.
fn decode<T: Float>(bytes: &[u8]) -> PyResult<mcr2::RateStats<T>>
where
    mcr2::RateStats<T>: serde::de::DeserializeOwned,
{
    postcard::from_bytes(bytes)
        .map_err(|e| PyValueError::new_err(format!("RateStats: malformed bytes: {e}")))
}

#[pymethods]
impl RateStats {
    /// Empty statistics for features of dimension `dim` and `n_classes` classes, accumulated
    /// in `dtype` (float64 by default; float32 chunks are widened exactly).
    #[new]
    #[pyo3(signature = (dim, n_classes, *, dtype = None))]
    fn new(dim: usize, n_classes: usize, dtype: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let f32 = match dtype {
            Some(d) => is_f32(d)?,
            None => false,
        };
        let inner = if f32 {
            Typed::F32(mcr2::RateStats::new(dim, n_classes).py()?)
        } else {
            Typed::F64(mcr2::RateStats::new(dim, n_classes).py()?)
        };
        Ok(Self { inner })
    }

    /// Adds a chunk: samples `z` (rows) with hard `labels` or a soft `membership`.
    #[pyo3(signature = (z, labels = None, *, membership = None))]
    fn push(
        &mut self,
        py: Python<'_>,
        z: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        membership: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let k = self.n_classes();
        // float32 chunks into float64 statistics are widened exactly
        if let (Typed::F64(s), Ok(Typed::F32(a)), Some(l), None) =
            (&mut self.inner, array2(z, "Z"), labels, membership)
        {
            let labels = crate::convert::labels(l, k)?;
            let v = a.as_array();
            return py.detach(|| s.push_f32(&v, &labels)).py();
        }
        each!(&mut self.inner, s => {
            let (a, m) = chunk(z, labels, k, membership)?;
            let v = a.as_array();
            py.detach(|| s.push_membership(&v, &m)).py()
        })
    }

    /// Subtracts a chunk pushed before (same rows, same labels or membership).
    #[pyo3(signature = (z, labels = None, *, membership = None))]
    fn retract(
        &mut self,
        py: Python<'_>,
        z: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        membership: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let k = self.n_classes();
        each!(&mut self.inner, s => {
            let (a, m) = chunk(z, labels, k, membership)?;
            let v = a.as_array();
            py.detach(|| s.retract_membership(&v, &m)).py()
        })
    }

    /// Adds the statistics of `other` (same dim, classes and dtype).
    fn merge(&mut self, other: &Bound<'_, RateStats>) -> PyResult<()> {
        // the only borrow that can fail here is of the statistics being merged into
        let other = other.try_borrow().map_err(|_| {
            PyValueError::new_err(
                "RateStats: cannot merge statistics into themselves (merge a copy: s.merge(s.copy()))",
            )
        })?;
        match (&mut self.inner, &other.inner) {
            (Typed::F32(a), Typed::F32(b)) => a.merge(b).py(),
            (Typed::F64(a), Typed::F64(b)) => a.merge(b).py(),
            _ => Err(PyTypeError::new_err(
                "RateStats: cannot merge float32 and float64 statistics",
            )),
        }
    }

    /// `self + other` as new statistics.
    fn __add__(&self, other: &Bound<'_, RateStats>) -> PyResult<Self> {
        let mut sum = self.copy();
        sum.merge(other)?;
        Ok(sum)
    }

    /// A copy.
    fn copy(&self) -> Self {
        let inner = match &self.inner {
            Typed::F32(s) => Typed::F32(s.clone()),
            Typed::F64(s) => Typed::F64(s.clone()),
        };
        Self { inner }
    }

    /// R of every sample pushed. Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²;
    /// the reference code's `eps` is ε²).
    #[pyo3(signature = (*, eps = None, eps_sq = None))]
    fn coding_rate(&self, py: Python<'_>, eps: Option<f64>, eps_sq: Option<f64>) -> PyResult<f64> {
        let p = precision(eps, eps_sq)?;
        each!(&self.inner, s => py.detach(|| s.coding_rate(p)).py().map(|v| v.as_f64()))
    }

    /// Rc of every sample pushed. Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²;
    /// the reference code's `eps` is ε²).
    #[pyo3(signature = (*, eps = None, eps_sq = None))]
    fn class_coding_rate(
        &self,
        py: Python<'_>,
        eps: Option<f64>,
        eps_sq: Option<f64>,
    ) -> PyResult<f64> {
        let p = precision(eps, eps_sq)?;
        each!(&self.inner, s => py.detach(|| s.class_coding_rate(p)).py().map(|v| v.as_f64()))
    }

    /// R, Rc, ΔR and the class terms of every sample pushed. Precision: exactly one of `eps=` (ε) or `eps_sq=` (ε²;
    /// the reference code's `eps` is ε²).
    #[pyo3(signature = (*, eps = None, eps_sq = None))]
    fn rate_reduction(
        &self,
        py: Python<'_>,
        eps: Option<f64>,
        eps_sq: Option<f64>,
    ) -> PyResult<RateReduction> {
        let p = precision(eps, eps_sq)?;
        each!(&self.inner, s => py.detach(|| s.rate_reduction(p)).py().map(RateReduction::from))
    }

    /// Number of samples pushed.
    #[getter]
    fn n_samples(&self) -> usize {
        each!(&self.inner, s => s.n_samples())
    }

    /// Feature dimension d.
    #[getter]
    fn dim(&self) -> usize {
        each!(&self.inner, s => s.dim())
    }

    /// Number of classes k.
    #[getter]
    fn n_classes(&self) -> usize {
        each!(&self.inner, s => s.n_classes())
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match &self.inner {
            Typed::F32(_) => dtype_name::<f32>(),
            Typed::F64(_) => dtype_name::<f64>(),
        }
    }

    /// tr(Π_j) per class (the class sizes for hard labels).
    #[getter]
    fn class_weights(&self) -> Vec<f64> {
        each!(&self.inner, s => s.class_weights().to_vec())
    }

    /// `G_j = ZᵀΠ_jZ` of class `j` (d × d), a copy.
    fn gram<'py>(&self, py: Python<'py>, j: usize) -> PyResult<Bound<'py, PyAny>> {
        each!(&self.inner, s => match s.gram(j) {
            Some(g) => Ok(g.clone().into_pyarray(py).into_any()),
            None => Err(PyIndexError::new_err(format!(
                "class {j} out of range for {} classes",
                s.n_classes()
            ))),
        })
    }

    /// The statistics as bytes (exact), read back by `RateStats.from_bytes`.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = each!(&self.inner, s => encode(s)?);
        Ok(PyBytes::new(py, &bytes))
    }

    /// Statistics from `to_bytes`; every field is checked (malformed bytes raise).
    #[staticmethod]
    fn from_bytes(bytes: &[u8]) -> PyResult<Self> {
        let inner = match bytes.split_first() {
            Some((4, rest)) => Typed::F32(decode(rest)?),
            Some((8, rest)) => Typed::F64(decode(rest)?),
            _ => {
                return Err(PyValueError::new_err(
                    "RateStats: malformed bytes (not written by RateStats.to_bytes)",
                ));
            }
        };
        Ok(Self { inner })
    }

    /// Pickling: the class and its bytes.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let from_bytes = slf.get_type().getattr("from_bytes")?;
        let bytes = slf.borrow().to_bytes(py)?;
        PyTuple::new(py, [from_bytes, PyTuple::new(py, [bytes])?.into_any()])
    }

    fn __repr__(&self) -> String {
        format!(
            "RateStats(dim={}, n_classes={}, n_samples={}, dtype={})",
            self.dim(),
            self.n_classes(),
            self.n_samples(),
            self.dtype()
        )
    }
}
