//! Tensors by name in safetensors files: one reader and one writer, both with name prefixes.
//!
//! Every layer reads and writes its weights under the names of the reference PyTorch
//! `state_dict`, relative to a prefix (`transformer.layers.3.` for the fourth CRATE layer).
//! Tensors may be stored as F32, F64, BF16 or F16; they are converted exactly to the model's
//! float type (BF16 and F16 widen exactly to f32). Any other dtype, a missing tensor, a wrong
//! shape or a non-finite value is an [`Error::InvalidWeights`] naming the tensor.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ndarray::{Array, Array1, Array2, ArrayD, IntoDimension, IxDyn};
use safetensors::{Dtype, SafeTensors, View};

use crate::{Error, Float, Result};

/// The metadata key naming what a whole-model file holds.
const MODEL_KEY: &str = "mcr2.model";

/// The error for tensor `name`.
pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> Error {
    Error::InvalidWeights {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Reads tensors by name from safetensors bytes, relative to a prefix.
///
/// ```
/// use mcr2::nn::{TensorReader, TensorWriter};
/// use ndarray::array;
/// let mut w = TensorWriter::new();
/// w.scoped("layer.").put("weight", &array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn());
/// let bytes = w.to_bytes()?;
/// let r = TensorReader::new(&bytes)?;
/// let m = r.scoped("layer.").matrix::<f64>("weight", 2, 2)?;
/// assert_eq!(m, array![[1.0, 2.0], [3.0, 4.0]]);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub struct TensorReader<'a> {
    st: std::rc::Rc<SafeTensors<'a>>,
    metadata: std::rc::Rc<std::collections::HashMap<String, String>>,
    prefix: String,
}

impl<'a> TensorReader<'a> {
    /// Parses safetensors bytes (header only; tensors are read on request).
    pub fn new(bytes: &'a [u8]) -> Result<Self> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| Error::MalformedFile(e.to_string()))?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| Error::MalformedFile(e.to_string()))?;
        Ok(Self {
            st: std::rc::Rc::new(st),
            metadata: std::rc::Rc::new(header.metadata().clone().unwrap_or_default()),
            prefix: String::new(),
        })
    }

    /// A reader of the same file whose names start with `self`'s prefix followed by `prefix`.
    pub fn scoped(&self, prefix: &str) -> TensorReader<'a> {
        TensorReader {
            st: self.st.clone(),
            metadata: self.metadata.clone(),
            prefix: format!("{}{prefix}", self.prefix),
        }
    }

    /// The header's metadata entry `key` (the file's, whatever the prefix).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Errors unless the file says (metadata `"mcr2.model"`) that it holds a `model`; `hint`
    /// is added to the message (how else such a file may be read), when not empty.
    pub(crate) fn expect_model(&self, model: &str, hint: &str) -> Result<()> {
        match self.metadata(MODEL_KEY) {
            Some(m) if m == model => Ok(()),
            other => Err(invalid(
                &format!("metadata {MODEL_KEY:?}"),
                format!("{other:?}, expected {model:?}{hint}"),
            )),
        }
    }

    /// The metadata entry `key` parsed as `V`, or [`Error::InvalidWeights`] naming it when
    /// it is absent or does not parse.
    pub fn metadata_value<V: std::str::FromStr>(&self, key: &str) -> Result<V> {
        let text = self
            .metadata(key)
            .ok_or_else(|| invalid(&format!("metadata {key:?}"), "missing"))?;
        text.parse().map_err(|_| {
            invalid(
                &format!("metadata {key:?}"),
                format!("cannot parse {text:?}"),
            )
        })
    }

    /// The full name of `name` under this reader's prefix.
    pub fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether the file holds `name` (under this reader's prefix).
    pub fn contains(&self, name: &str) -> bool {
        self.st.tensor(&self.full_name(name)).is_ok()
    }

    /// Whether the file holds the tensor of full name `name` (prefix included).
    pub(crate) fn contains_full(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// The prefix under which the file holds the most of the `relative` names, with how
    /// many it holds there, when that is not this reader's prefix (for the error that a
    /// wrong prefix causes).
    pub(crate) fn guess_prefix(&self, relative: &[String]) -> Option<(String, usize)> {
        let wanted: std::collections::HashSet<&str> = relative.iter().map(String::as_str).collect();
        let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for full in self.st.names() {
            for rel in &wanted {
                if let Some(prefix) = full.strip_suffix(rel) {
                    *counts.entry(prefix.to_string()).or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .filter(|(p, _)| *p != self.prefix)
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
    }

    /// Errors unless the tensors under this reader's prefix are exactly `relative` (names
    /// relative to the prefix): an unexpected tensor or the first missing one is named
    /// ([`Error::InvalidWeights`]); when none is under the prefix, the error says under which
    /// prefix the file holds them, if it does.
    pub(crate) fn expect_exactly(&self, relative: &[String]) -> Result<()> {
        let expected: std::collections::BTreeSet<String> =
            relative.iter().map(|n| self.full_name(n)).collect();
        let missing = expected.iter().filter(|n| !self.contains_full(n)).count();
        if missing == expected.len() {
            // nothing under this prefix: say where the tensors are, if anywhere
            if let Some((prefix, found)) = self.guess_prefix(relative) {
                return Err(invalid(
                    &format!("(prefix {:?})", self.full_name("")),
                    format!(
                        "no tensor of this configuration under this prefix; {found} of the {} are under the prefix {prefix:?}",
                        expected.len()
                    ),
                ));
            }
        }
        if let Some(extra) = self.names().iter().find(|n| !expected.contains(*n)) {
            return Err(invalid(extra, "unexpected tensor for this configuration"));
        }
        if let Some(first) = expected.iter().find(|n| !self.contains_full(n)) {
            return Err(invalid(
                first,
                format!(
                    "missing ({missing} of the {} expected tensors are missing)",
                    expected.len()
                ),
            ));
        }
        Ok(())
    }

    /// The names in the file that start with this reader's prefix, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .st
            .names()
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .map(String::from)
            .collect();
        names.sort();
        names
    }

    /// Tensor `name` of exactly `shape`, converted to `T`.
    pub fn tensor<T: Float>(&self, name: &str, shape: &[usize]) -> Result<ArrayD<T>> {
        let name = self.full_name(name);
        let t = self
            .st
            .tensor(&name)
            .map_err(|_| invalid(&name, "missing"))?;
        if t.shape() != shape {
            return Err(invalid(
                &name,
                format!("shape {:?}, expected {shape:?}", t.shape()),
            ));
        }
        let data = t.data();
        let values: Vec<T> = match t.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| T::from_f64(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| {
                    T::from_f64(f64::from_le_bytes([
                        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                    ]))
                })
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| T::from_f64(bf16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| T::from_f64(f16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64))
                .collect(),
            other => {
                return Err(invalid(
                    &name,
                    format!("dtype {other:?}, expected F32, F64, BF16 or F16"),
                ));
            }
        };
        let a = ArrayD::from_shape_vec(IxDyn(shape), values)
            .map_err(|e| invalid(&name, e.to_string()))?;
        if let Some(pos) = a.iter().position(|v| !v.is_finite()) {
            return Err(invalid(
                &name,
                format!("non-finite value at flat index {pos}"),
            ));
        }
        Ok(a)
    }

    /// A tensor stored with shape `stored` (e.g. `[1, 1, dim]`) read as an array of shape
    /// `shape` holding the same elements (e.g. `dim`).
    pub fn reshaped<T: Float, Sh: IntoDimension>(
        &self,
        name: &str,
        stored: &[usize],
        shape: Sh,
    ) -> Result<Array<T, Sh::Dim>> {
        self.tensor::<T>(name, stored)?
            .into_shape_with_order(shape.into_dimension())
            .map_err(|e| invalid(&self.full_name(name), e.to_string()))
    }

    /// A vector of length `n`.
    pub fn vector<T: Float>(&self, name: &str, n: usize) -> Result<Array1<T>> {
        self.reshaped(name, &[n], n)
    }

    /// A `rows × cols` matrix.
    pub fn matrix<T: Float>(&self, name: &str, rows: usize, cols: usize) -> Result<Array2<T>> {
        self.reshaped(name, &[rows, cols], (rows, cols))
    }
}

/// bfloat16 → f32: the upper half of an f32 (exact).
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// IEEE 754 binary16 → f32 (exact): sign, 5 exponent bits (bias 15), 10 fraction bits.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        // subnormal: frac · 2^-24
        0 => sign * frac * (2.0f32).powi(-24),
        0x1f if frac == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * (2.0f32).powi(exp - 15),
    }
}

/// A tensor to write, in its own float type.
struct Stored {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Stored {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Collects named tensors (each in its own float type: F32 for `f32`, F64 for `f64`) and
/// writes them as safetensors bytes. See [`TensorReader`] for an example.
#[derive(Default)]
pub struct TensorWriter {
    tensors: BTreeMap<String, Stored>,
    metadata: std::collections::HashMap<String, String>,
}

/// A [`TensorWriter`] seen through a name prefix.
pub struct ScopedWriter<'w> {
    tensors: &'w mut BTreeMap<String, Stored>,
    prefix: String,
}

impl TensorWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The writer seen through `prefix`.
    pub fn scoped(&mut self, prefix: &str) -> ScopedWriter<'_> {
        ScopedWriter {
            tensors: &mut self.tensors,
            prefix: prefix.to_string(),
        }
    }

    /// Stores `value` under `key` in the header's metadata (text, as safetensors has it).
    pub fn set_metadata(&mut self, key: &str, value: impl ToString) {
        self.metadata.insert(key.to_string(), value.to_string());
    }

    /// Marks the file as holding a `model` (metadata `"mcr2.model"`), which
    /// [`TensorReader`]'s loaders check.
    pub(crate) fn set_model(&mut self, model: &str) {
        self.set_metadata(MODEL_KEY, model);
    }

    /// Number of tensors collected.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether no tensor was collected.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The safetensors bytes of every tensor collected.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::serialize(self.tensors.iter(), metadata)
            .map_err(|e| Error::MalformedFile(e.to_string()))
    }
}

impl ScopedWriter<'_> {
    /// The same writer seen through a longer prefix.
    pub fn scoped(&mut self, prefix: &str) -> ScopedWriter<'_> {
        ScopedWriter {
            tensors: self.tensors,
            prefix: format!("{}{prefix}", self.prefix),
        }
    }

    /// Stores `values` as tensor `name` under this prefix.
    pub fn put<T: Float>(&mut self, name: &str, values: &ArrayD<T>) {
        self.put_shaped(name, values.shape(), values.iter().copied());
    }

    /// Stores the elements of `values` (in row-major order) with shape `shape`.
    pub fn put_shaped<T: Float>(
        &mut self,
        name: &str,
        shape: &[usize],
        values: impl Iterator<Item = T>,
    ) {
        let bytes: Vec<u8> = if size_of::<T>() == 4 {
            values
                .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
                .collect()
        } else {
            values.flat_map(|v| v.as_f64().to_le_bytes()).collect()
        };
        let dtype = if size_of::<T>() == 4 {
            Dtype::F32
        } else {
            Dtype::F64
        };
        self.tensors.insert(
            format!("{}{name}", self.prefix),
            Stored {
                dtype,
                shape: shape.to_vec(),
                bytes,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{bf16_to_f32, f16_to_f32};

    #[test]
    fn half_precision_conversions() {
        for (bits, want) in [
            (0x0000u16, 0.0f32),
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7bff, 65504.0),
            (0x0400, 6.103_515_6e-5),
            (0x0001, 5.960_464_5e-8),
            (0x03ff, 6.097_555e-5),
            (0x7c00, f32::INFINITY),
            (0xfc00, f32::NEG_INFINITY),
        ] {
            assert_eq!(f16_to_f32(bits), want, "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        for (bits, want) in [(0x3f80u16, 1.0f32), (0xc040, -3.0), (0x0000, 0.0)] {
            assert_eq!(bf16_to_f32(bits), want);
        }
        assert!(bf16_to_f32(0x7fc0).is_nan());
    }
}
