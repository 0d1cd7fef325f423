//! ReduNet, the lossy-coding algorithms (ALC, MICL), the nearest-subspace classifier, the
//! mixture-of-subspaces generator and the built-in digits.

use mcr2::coding::{self, Coder, MeanCoding, Unit};
use mcr2::data::{self, SubspaceMixtureConfig};
use mcr2::rand::SeedableRng;
use mcr2::rand::rngs::StdRng;
use mcr2::redunet::{self as rn, ReduNetConfig};
use mcr2::subspace::{self as ss, SubspaceConfig};
use mcr2::{Float, Labels, Precision};
use numpy::{Element, IntoPyArray};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::convert::{OrPy, Typed, array2, dtype_name, is_f32, precision, typed2};
use crate::each;
use crate::rate::RateReduction;

/// Labels as a NumPy int64 array.
fn label_array<'py>(py: Python<'py>, ids: impl IntoIterator<Item = usize>) -> Bound<'py, PyAny> {
    let v: Vec<i64> = ids.into_iter().map(|l| l as i64).collect();
    v.into_pyarray(py).into_any()
}

/// The precision, or `default` when neither `eps=` nor `eps_sq=` is given.
fn precision_or(eps: Option<f64>, eps_sq: Option<f64>, default: Precision) -> PyResult<Precision> {
    if eps.is_none() && eps_sq.is_none() {
        Ok(default)
    } else {
        precision(eps, eps_sq)
    }
}

type Net = Typed<rn::ReduNet<f32>, rn::ReduNet<f64>>;

/// ReduNet: a deep network built layer by layer, without back-propagation, as gradient
/// ascent on ΔR of the training features (projected to the unit sphere).
#[pyclass(module = "mcr2", frozen)]
pub struct ReduNet {
    inner: Net,
}

#[pymethods]
impl ReduNet {
    /// Builds the network from samples `x` (rows) with `labels` in 0..n_classes; returns
    /// `(net, features)`, the training features after the last layer. Defaults are the
    /// reference toy settings: 200 layers, η = 0.5, ε² = 0.1, λ = 200.
    #[staticmethod]
    #[pyo3(signature = (x, labels, n_classes, *, layers = 200, eta = 0.5, eps = None, eps_sq = None, lambda_ = 200.0))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        labels: &Bound<'py, PyAny>,
        n_classes: usize,
        layers: usize,
        eta: f64,
        eps: Option<f64>,
        eps_sq: Option<f64>,
        lambda_: f64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let config = ReduNetConfig {
            layers,
            eta,
            eps: precision_or(eps, eps_sq, ReduNetConfig::default().eps)?,
            lambda: lambda_,
        };
        let l = crate::convert::labels(labels, n_classes)?;
        each!(array2(x, "x")?, a => {
            let v = a.as_array();
            let (net, z, _) = py.detach(|| rn::ReduNet::fit(&v, &l, &config, |_| ())).py()?;
            let features = z.into_pyarray(py).into_any();
            let net = Bound::new(py, ReduNet { inner: wrap(net) })?.into_any();
            PyTuple::new(py, [net, features])
        })
    }

    /// The features of new samples after every layer (rows projected to the sphere first).
    fn transform<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        each!(&self.inner, n => {
            let a = typed2(x, "x")?;
            let v = a.as_array();
            Ok(py.detach(|| n.transform(&v)).py()?.into_pyarray(py).into_any())
        })
    }

    /// The network's soft class estimate (samples × classes) of its last layer.
    fn membership<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        each!(&self.inner, n => {
            let a = typed2(x, "x")?;
            let v = a.as_array();
            Ok(py.detach(|| n.membership(&v)).py()?.into_pyarray(py).into_any())
        })
    }

    /// The predicted class of each sample.
    fn predict<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        each!(&self.inner, n => {
            let a = typed2(x, "x")?;
            let v = a.as_array();
            Ok(label_array(py, py.detach(|| n.predict(&v)).py()?))
        })
    }

    /// Fraction of samples whose predicted class is their label.
    fn accuracy(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
    ) -> PyResult<f64> {
        let l = crate::convert::labels(labels, self.n_classes())?;
        each!(&self.inner, n => {
            let a = typed2(x, "x")?;
            let v = a.as_array();
            py.detach(|| n.accuracy(&v, &l)).py()
        })
    }

    /// ΔR, R and Rc of the training features before the first layer and after each layer.
    #[getter]
    fn history(&self) -> Vec<RateReduction> {
        each!(&self.inner, n => n.history().iter().cloned().map(RateReduction::from).collect())
    }

    /// Number of classes.
    #[getter]
    fn n_classes(&self) -> usize {
        each!(&self.inner, n => n.n_classes())
    }

    /// Number of layers.
    #[getter]
    fn n_layers(&self) -> usize {
        each!(&self.inner, n => n.layers().len())
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match &self.inner {
            Typed::F32(_) => dtype_name::<f32>(),
            Typed::F64(_) => dtype_name::<f64>(),
        }
    }

    /// The network as safetensors bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = each!(&self.inner, n => n.to_safetensors().py()?);
        Ok(PyBytes::new(py, &bytes))
    }

    /// A network from `to_bytes`.
    #[staticmethod]
    #[pyo3(signature = (data, *, dtype = None))]
    fn from_bytes(data: &[u8], dtype: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let f32 = dtype.map_or(Ok(false), is_f32)?;
        let inner = if f32 {
            Typed::F32(rn::ReduNet::from_safetensors(data).py()?)
        } else {
            Typed::F64(rn::ReduNet::from_safetensors(data).py()?)
        };
        Ok(Self { inner })
    }
}

/// A fitted network of either float type.
trait Wrap: Sized {
    fn wrap(self) -> Net;
}
impl Wrap for rn::ReduNet<f32> {
    fn wrap(self) -> Net {
        Typed::F32(self)
    }
}
impl Wrap for rn::ReduNet<f64> {
    fn wrap(self) -> Net {
        Typed::F64(self)
    }
}
fn wrap<N: Wrap>(n: N) -> Net {
    n.wrap()
}

type Subspaces = Typed<ss::NearestSubspace<f32>, ss::NearestSubspace<f64>>;

/// Classification by the nearest of per-class subspaces (rank `rank`, by SVD; centered = PCA).
#[pyclass(module = "mcr2", frozen)]
pub struct NearestSubspace {
    inner: Subspaces,
    n_classes: usize,
}

#[pymethods]
impl NearestSubspace {
    /// Fits one subspace of `rank` per class to the rows of `x`.
    #[staticmethod]
    #[pyo3(signature = (x, labels, n_classes, rank, *, center = false))]
    fn fit(
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        n_classes: usize,
        rank: usize,
        center: bool,
    ) -> PyResult<Self> {
        let l = crate::convert::labels(labels, n_classes)?;
        let config = SubspaceConfig::new(rank).center(center);
        let inner = match array2(x, "x")? {
            Typed::F32(a) => {
                let v = a.as_array();
                Typed::F32(
                    py.detach(|| ss::NearestSubspace::fit(&v, &l, &config))
                        .py()?,
                )
            }
            Typed::F64(a) => {
                let v = a.as_array();
                Typed::F64(
                    py.detach(|| ss::NearestSubspace::fit(&v, &l, &config))
                        .py()?,
                )
            }
        };
        Ok(Self { inner, n_classes })
    }

    /// The class of the nearest subspace for each row of `x`.
    fn predict<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        each!(&self.inner, c => {
            let a = typed2(x, "x")?;
            let v = a.as_array();
            Ok(label_array(py, py.detach(|| c.predict(&v)).py()?))
        })
    }

    /// Fraction of rows classified as their label.
    fn accuracy(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
    ) -> PyResult<f64> {
        let l = crate::convert::labels(labels, self.n_classes)?;
        each!(&self.inner, c => {
            let a = typed2(x, "x")?;
            let v = a.as_array();
            py.detach(|| c.accuracy(&v, &l)).py()
        })
    }
}

/// The coder of ALC and MICL: precision, unit (`"bits"` or `"nats"`) and mean coding.
fn coder(eps: Option<f64>, eps_sq: Option<f64>, unit: &str, zero_mean: bool) -> PyResult<Coder> {
    let unit = match unit {
        "bits" => Unit::Bits,
        "nats" => Unit::Nats,
        other => {
            return Err(PyValueError::new_err(format!(
                "unit: expected \"bits\" or \"nats\", got {other:?}"
            )));
        }
    };
    let mean = if zero_mean {
        MeanCoding::ZeroMean
    } else {
        MeanCoding::Separate
    };
    Ok(Coder::new(precision(eps, eps_sq)?)
        .with_unit(unit)
        .with_mean(mean))
}

/// Classification by minimum incremental coding length (MICL).
#[pyclass(module = "mcr2", frozen)]
pub struct Micl {
    inner: coding::Micl,
}

#[pymethods]
impl Micl {
    /// Fits one code per class from the rows of `x`.
    #[staticmethod]
    #[pyo3(signature = (x, labels, n_classes, *, eps = None, eps_sq = None, unit = "bits", zero_mean = false))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        n_classes: usize,
        eps: Option<f64>,
        eps_sq: Option<f64>,
        unit: &str,
        zero_mean: bool,
    ) -> PyResult<Self> {
        let c = coder(eps, eps_sq, unit, zero_mean)?;
        let l = crate::convert::labels(labels, n_classes)?;
        let inner = each!(array2(x, "x")?, a => {
            let v = a.as_array();
            py.detach(|| coding::Micl::fit(&v, &l, c)).py()?
        });
        Ok(Self { inner })
    }

    /// The increase of each class's coding length (samples × classes) when each row joins it.
    fn length_increase<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        each!(array2(x, "x")?, a => {
            let v = a.as_array();
            Ok(py.detach(|| self.inner.length_increase(&v)).py()?.into_pyarray(py).into_any())
        })
    }

    /// The class of least coding-length increase for each row.
    fn predict<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        each!(array2(x, "x")?, a => {
            let v = a.as_array();
            Ok(label_array(py, py.detach(|| self.inner.predict(&v)).py()?))
        })
    }

    /// Fraction of rows classified as their label.
    fn accuracy(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
    ) -> PyResult<f64> {
        let l = crate::convert::labels(labels, self.inner.n_classes())?;
        each!(array2(x, "x")?, a => {
            let v = a.as_array();
            py.detach(|| self.inner.accuracy(&v, &l)).py()
        })
    }

    /// The fitted codes as safetensors bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.inner.to_safetensors().py()?))
    }

    /// Codes from `to_bytes`.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(Self {
            inner: coding::Micl::from_safetensors(data).py()?,
        })
    }
}

/// Agglomerative lossy compression: segments the rows of `x` into groups by greedily merging
/// the pair that lowers the total coding length most. Returns a dict with `labels`
/// (int64), `groups`, `trace` (the coding length before the first merge and after each)
/// and `converged`.
#[pyfunction]
#[pyo3(signature = (x, *, eps = None, eps_sq = None, unit = "bits", zero_mean = false))]
pub fn alc<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    eps: Option<f64>,
    eps_sq: Option<f64>,
    unit: &str,
    zero_mean: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let c = coder(eps, eps_sq, unit, zero_mean)?;
    let seg = each!(array2(x, "x")?, a => {
        let v = a.as_array();
        py.detach(|| coding::alc(&v, &c, |_| ())).py()?
    });
    let out = PyDict::new(py);
    out.set_item("labels", label_array(py, seg.labels.iter()))?;
    out.set_item("groups", seg.groups)?;
    out.set_item("trace", seg.trace)?;
    out.set_item("converged", seg.stop == mcr2::observe::Stop::Converged)?;
    Ok(out)
}

/// Samples of `n_classes` random subspaces of dimension `p` in R^`dim`, `per_class` each,
/// `x = U_k a + noise·e`; returns `(samples, labels, bases)` (bases: list of dim × p).
#[pyfunction]
#[pyo3(signature = (dim, n_classes, p, per_class, noise, *, orthogonal = false, unit_sphere = true, seed = 0, dtype = None))]
#[allow(clippy::too_many_arguments)]
pub fn mixture_of_subspaces<'py>(
    py: Python<'py>,
    dim: usize,
    n_classes: usize,
    p: usize,
    per_class: usize,
    noise: f64,
    orthogonal: bool,
    unit_sphere: bool,
    seed: u64,
    dtype: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let mut config = SubspaceMixtureConfig::new(dim, n_classes, p, per_class, noise);
    config.orthogonal = orthogonal;
    config.unit_sphere = unit_sphere;
    let mut rng = StdRng::seed_from_u64(seed);
    fn out<'py, T: Float + Element>(
        py: Python<'py>,
        m: data::SubspaceMixture<T>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let bases = PyList::empty(py);
        for b in m.bases {
            bases.append(b.into_pyarray(py))?;
        }
        PyTuple::new(
            py,
            [
                m.samples.into_pyarray(py).into_any(),
                label_array(py, m.labels.iter()),
                bases.into_any(),
            ],
        )
    }
    if dtype.map_or(Ok(false), is_f32)? {
        out(
            py,
            data::mixture_of_subspaces::<f32, _>(&config, &mut rng).py()?,
        )
    } else {
        out(
            py,
            data::mixture_of_subspaces::<f64, _>(&config, &mut rng).py()?,
        )
    }
}

/// The built-in digits: 1797 images of 8 × 8 pixels (values 0..16) in 10 classes, as
/// `(pixels (1797 × 64, float64), labels (int64))`; `normalized=True` scales every image to
/// unit norm. The examples' split: image i is a test image when `i % 4 == 3`.
#[pyfunction]
#[pyo3(signature = (*, normalized = false))]
pub fn digits(py: Python<'_>, normalized: bool) -> PyResult<Bound<'_, PyTuple>> {
    let mut d = data::digits().py()?;
    if normalized {
        d = d.normalized();
    }
    let labels: &Labels = &d.labels;
    let l = label_array(py, labels.iter());
    PyTuple::new(py, [d.pixels.into_pyarray(py).into_any(), l])
}
