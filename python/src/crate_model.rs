//! The CRATE classifier and block: load (reference safetensors names), forward, top-k,
//! inspect.

use mcr2::Float;
use mcr2::crate_layer::{self as cl, CrateBlockConfig, Pooling};
use mcr2::ndarray::{Array2, ArrayView4};
use mcr2::nn::Checkpoint;
use mcr2::rand::SeedableRng;
use mcr2::rand::rngs::StdRng;
use numpy::{Element, IntoPyArray};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::convert::{OrPy, Typed, dtype_name, is_f32, typed2, typed3, typed4};
use crate::each;

/// Sizes of a CRATE classifier (images of `channels × image_size × image_size`).
#[pyclass(module = "mcr2", frozen)]
#[derive(Clone)]
pub struct CrateConfig {
    pub inner: cl::CrateConfig,
}

#[pymethods]
impl CrateConfig {
    /// A custom configuration with the reference constants (ISTA η = λ = 0.1, LayerNorm
    /// ε = 1e-5); `pooling` is `"cls"` (the reference) or `"mean"`.
    #[new]
    #[pyo3(signature = (image_size, patch_size, num_classes, dim, depth, heads, dim_head, *, channels = 3, pooling = "cls"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        image_size: usize,
        patch_size: usize,
        num_classes: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        dim_head: usize,
        channels: usize,
        pooling: &str,
    ) -> PyResult<Self> {
        let mut inner = cl::CrateConfig::new(
            image_size,
            patch_size,
            num_classes,
            dim,
            depth,
            heads,
            dim_head,
        );
        inner.channels = channels;
        inner.pooling = match pooling {
            "cls" => Pooling::Cls,
            "mean" => Pooling::Mean,
            other => {
                return Err(PyValueError::new_err(format!(
                    "pooling: expected \"cls\" or \"mean\", got {other:?}"
                )));
            }
        };
        inner.check().py()?;
        Ok(Self { inner })
    }

    /// CRATE-T (dim 384, depth 12, 6 heads of 64; 224² images, patch 16, 1000 classes).
    #[staticmethod]
    fn tiny() -> Self {
        Self {
            inner: cl::CrateConfig::tiny(),
        }
    }

    /// CRATE-S (dim 576, depth 12, 12 heads of 48).
    #[staticmethod]
    fn small() -> Self {
        Self {
            inner: cl::CrateConfig::small(),
        }
    }

    /// CRATE-B (dim 768, depth 12, 12 heads of 64).
    #[staticmethod]
    fn base() -> Self {
        Self {
            inner: cl::CrateConfig::base(),
        }
    }

    /// CRATE-L (dim 1024, depth 24, 16 heads of 64).
    #[staticmethod]
    fn large() -> Self {
        Self {
            inner: cl::CrateConfig::large(),
        }
    }

    #[getter]
    fn image_size(&self) -> usize {
        self.inner.image_size
    }
    #[getter]
    fn patch_size(&self) -> usize {
        self.inner.patch_size
    }
    #[getter]
    fn channels(&self) -> usize {
        self.inner.channels
    }
    #[getter]
    fn num_classes(&self) -> usize {
        self.inner.num_classes
    }
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    #[getter]
    fn depth(&self) -> usize {
        self.inner.encoder.depth
    }
    #[getter]
    fn heads(&self) -> usize {
        self.inner.encoder.block.heads
    }
    #[getter]
    fn dim_head(&self) -> usize {
        self.inner.encoder.block.dim_head
    }

    /// Number of parameters (the reference model's state_dict total).
    fn parameter_count(&self) -> usize {
        self.inner.parameter_count()
    }

    /// The reference state_dict names a checkpoint of this configuration holds.
    fn tensor_names(&self) -> Vec<String> {
        cl::CrateClassifier::<f32>::tensor_names(&self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "CrateConfig(image_size={}, patch_size={}, num_classes={}, dim={}, depth={}, heads={}, dim_head={}, channels={})",
            self.inner.image_size,
            self.inner.patch_size,
            self.inner.num_classes,
            self.dim(),
            self.depth(),
            self.heads(),
            self.dim_head(),
            self.inner.channels
        )
    }
}

pub(crate) type Classifier = Typed<cl::CrateClassifier<f32>, cl::CrateClassifier<f64>>;

/// A CRATE image classifier: patch embedding, class token and position embedding, the CRATE
/// layers (MSSA then ISTA), class-token pooling and a linear head. Images are
/// `batch × channels × height × width`.
#[pyclass(module = "mcr2", frozen)]
pub struct CrateClassifier {
    pub(crate) inner: Classifier,
}

fn read_file(path: &str) -> PyResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| PyOSError::new_err(format!("{path}: {e}")))
}

fn dtype_is_f32(dtype: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    dtype.map_or(Ok(true), is_f32)
}

/// The inspection of a forward pass as a dict of arrays.
fn inspection<'py, T: Float + Element>(
    py: Python<'py>,
    ins: cl::Inspection<T>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("embedded", ins.embedded.into_pyarray(py))?;
    out.set_item("logits", ins.logits.into_pyarray(py))?;
    let layers = PyList::empty(py);
    for layer in ins.layers {
        let l = PyDict::new(py);
        l.set_item("tokens", layer.tokens.into_pyarray(py))?;
        l.set_item("attention", layer.attention.into_pyarray(py))?;
        l.set_item("compression", layer.diagnostics.compression.as_f64())?;
        l.set_item(
            "compression_std",
            layer.diagnostics.compression_std.as_f64(),
        )?;
        l.set_item("sparsity", layer.diagnostics.sparsity.as_f64())?;
        layers.append(l)?;
    }
    out.set_item("layers", layers)?;
    Ok(out)
}

/// `f(model, images)` on images read as the model's float type, with the GIL released; the
/// result as a NumPy array.
fn on_images<'py, T: Float + Element>(
    py: Python<'py>,
    model: &cl::CrateClassifier<T>,
    images: &Bound<'py, PyAny>,
    f: impl Fn(&cl::CrateClassifier<T>, ArrayView4<'_, T>) -> mcr2::Result<Array2<T>> + Send + Sync,
) -> PyResult<Bound<'py, PyAny>> {
    let a = typed4::<T>(images, "images")?;
    let v = a.as_array();
    let out = py.detach(|| f(model, v)).py()?;
    Ok(out.into_pyarray(py).into_any())
}

#[pymethods]
impl CrateClassifier {
    /// A model of `config` with the reference initialization, seeded.
    #[new]
    #[pyo3(signature = (config, *, seed = 0, dtype = None))]
    fn new(config: &CrateConfig, seed: u64, dtype: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let inner = if dtype_is_f32(dtype)? {
            Typed::F32(cl::CrateClassifier::new(&config.inner, &mut rng).py()?)
        } else {
            Typed::F64(cl::CrateClassifier::new(&config.inner, &mut rng).py()?)
        };
        Ok(Self { inner })
    }

    /// Reads a safetensors file. Without `config`, a checkpoint written by `save` (its
    /// configuration is in the metadata); with `config`, a state_dict under the reference
    /// names (below `prefix`), F32, F64, BF16 or F16, every name checked.
    #[staticmethod]
    #[pyo3(signature = (path, config = None, *, prefix = "", dtype = None))]
    fn load(
        py: Python<'_>,
        path: &str,
        config: Option<&CrateConfig>,
        prefix: &str,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let bytes = read_file(path)?;
        Self::from_bytes(py, &bytes, config, prefix, dtype)
    }

    /// `load` from bytes in memory.
    #[staticmethod]
    #[pyo3(signature = (data, config = None, *, prefix = "", dtype = None))]
    fn from_bytes(
        py: Python<'_>,
        data: &[u8],
        config: Option<&CrateConfig>,
        prefix: &str,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        fn read<T: Float>(
            data: &[u8],
            config: Option<&cl::CrateConfig>,
            prefix: &str,
        ) -> mcr2::Result<cl::CrateClassifier<T>> {
            match config {
                None => cl::CrateClassifier::from_checkpoint(data),
                Some(c) => cl::CrateClassifier::from_safetensors(data, c, prefix),
            }
        }
        let config = config.map(|c| c.inner);
        let f32 = dtype_is_f32(dtype)?;
        let inner = py.detach(|| -> mcr2::Result<Classifier> {
            Ok(if f32 {
                Typed::F32(read(data, config.as_ref(), prefix)?)
            } else {
                Typed::F64(read(data, config.as_ref(), prefix)?)
            })
        });
        Ok(Self { inner: inner.py()? })
    }

    /// The model as checkpoint bytes (reference names, configuration in the metadata).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = each!(&self.inner, m => m.to_checkpoint().py()?);
        Ok(PyBytes::new(py, &bytes))
    }

    /// Writes the checkpoint to `path`.
    fn save(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        let bytes = self.to_bytes(py)?;
        std::fs::write(path, bytes.as_bytes())
            .map_err(|e| PyOSError::new_err(format!("{path}: {e}")))
    }

    /// Class logits (batch × classes) of images (batch × channels × height × width).
    fn forward<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        each!(&self.inner, m => on_images(py, m, images, |m, v| m.forward(&v)))
    }

    /// The class tokens after the encoder (batch × dim), each scaled to unit norm: the
    /// features the MCR² objective of `train_classifier` trains.
    fn features<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        each!(&self.inner, m => on_images(py, m, images, crate::train::unit_class_tokens))
    }

    /// The `k` most likely classes of each image as `(class, logit)` pairs, best first.
    fn top_k(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        k: usize,
    ) -> PyResult<Vec<Vec<(usize, f64)>>> {
        each!(&self.inner, m => {
            let a = typed4(images, "images")?;
            let v = a.as_array();
            let top = py.detach(|| m.top_k(&v, k)).py()?;
            Ok(top
                .into_iter()
                .map(|row| row.into_iter().map(|(c, l)| (c, l.as_f64())).collect())
                .collect())
        })
    }

    /// A forward pass keeping every layer: a dict with `embedded`, `logits` and `layers`, a
    /// list of dicts with `tokens` (batch × tokens × dim), `attention` (batch × heads ×
    /// tokens × tokens), `compression`, `compression_std` (the CRATE authors' per-head
    /// coding rate of the layer's input) and `sparsity` (fraction of zeros of its output).
    fn inspect<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        each!(&self.inner, m => {
            let a = typed4(images, "images")?;
            let v = a.as_array();
            let ins = py.detach(|| m.inspect(&v)).py()?;
            inspection(py, ins)
        })
    }

    /// The configuration.
    #[getter]
    fn config(&self) -> CrateConfig {
        CrateConfig {
            inner: each!(&self.inner, m => *m.config()),
        }
    }

    /// Number of parameters.
    fn parameter_count(&self) -> usize {
        each!(&self.inner, m => m.parameter_count())
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match &self.inner {
            Typed::F32(_) => dtype_name::<f32>(),
            Typed::F64(_) => dtype_name::<f64>(),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "CrateClassifier({}, dtype={})",
            self.config().__repr__(),
            self.dtype()
        )
    }
}

type Block = Typed<cl::CrateBlock<f32>, cl::CrateBlock<f64>>;

/// One CRATE layer: `Z + MSSA(LN(Z))`, then `ISTA(LN(·))` (tokens are rows).
#[pyclass(module = "mcr2", frozen)]
pub struct CrateBlock {
    inner: Block,
}

#[pymethods]
impl CrateBlock {
    /// A block of `heads` heads of `dim_head` on tokens of `dim`, reference initialization,
    /// seeded.
    #[new]
    #[pyo3(signature = (dim, heads, dim_head, *, seed = 0, dtype = None))]
    fn new(
        dim: usize,
        heads: usize,
        dim_head: usize,
        seed: u64,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let config = CrateBlockConfig::new(dim, heads, dim_head);
        let mut rng = StdRng::seed_from_u64(seed);
        let inner = if dtype_is_f32(dtype)? {
            Typed::F32(cl::CrateBlock::new(&config, &mut rng).py()?)
        } else {
            Typed::F64(cl::CrateBlock::new(&config, &mut rng).py()?)
        };
        Ok(Self { inner })
    }

    /// A block from safetensors bytes under the reference names of one layer
    /// (`0.fn.*`, `1.fn.*` below `prefix`, e.g. `"transformer.layers.0."`).
    #[staticmethod]
    #[pyo3(signature = (data, dim, heads, dim_head, *, prefix = "", dtype = None))]
    fn from_bytes(
        data: &[u8],
        dim: usize,
        heads: usize,
        dim_head: usize,
        prefix: &str,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let config = CrateBlockConfig::new(dim, heads, dim_head);
        let inner = if dtype_is_f32(dtype)? {
            Typed::F32(cl::CrateBlock::from_safetensors(data, &config, prefix).py()?)
        } else {
            Typed::F64(cl::CrateBlock::from_safetensors(data, &config, prefix).py()?)
        };
        Ok(Self { inner })
    }

    /// The block as safetensors bytes under the reference names (below `prefix`).
    #[pyo3(signature = (prefix = ""))]
    fn to_bytes<'py>(&self, py: Python<'py>, prefix: &str) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = each!(&self.inner, b => b.to_safetensors(prefix).py()?);
        Ok(PyBytes::new(py, &bytes))
    }

    /// The block's output for one sequence (tokens × dim) or a batch (batch × tokens × dim).
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let ndim: usize = x.getattr("ndim").and_then(|n| n.extract()).unwrap_or(0);
        each!(&self.inner, b => {
            if ndim == 3 {
                let a = typed3(x, "x")?;
                let v = a.as_array();
                Ok(py.detach(|| b.forward_batch(&v)).py()?.into_pyarray(py).into_any())
            } else {
                let a = typed2(x, "x")?;
                let v = a.as_array();
                Ok(py.detach(|| b.forward(&v)).py()?.into_pyarray(py).into_any())
            }
        })
    }

    /// Token dimension.
    #[getter]
    fn dim(&self) -> usize {
        each!(&self.inner, b => b.dim())
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match &self.inner {
            Typed::F32(_) => dtype_name::<f32>(),
            Typed::F64(_) => dtype_name::<f64>(),
        }
    }
}
