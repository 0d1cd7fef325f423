//! Shared helpers for the integration tests: reading the reference vectors.
#![allow(dead_code)]

pub mod reference;

use std::path::PathBuf;

use ndarray::{Array2, ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
}

pub fn manifest() -> Value {
    let text = std::fs::read_to_string(data_dir().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

pub struct Tensors {
    bytes: Vec<u8>,
}

impl Tensors {
    pub fn open(file: &str) -> Self {
        Self {
            bytes: std::fs::read(data_dir().join(file)).expect("tensor file"),
        }
    }

    pub fn f64(&self, name: &str) -> ArrayD<f64> {
        let st = SafeTensors::deserialize(&self.bytes).expect("safetensors");
        let t = st.tensor(name).unwrap_or_else(|_| panic!("tensor {name}"));
        assert_eq!(t.dtype(), Dtype::F64, "{name}");
        let v: Vec<f64> = t
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        ArrayD::from_shape_vec(IxDyn(t.shape()), v).unwrap()
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let st = SafeTensors::deserialize(&self.bytes).expect("safetensors");
        let t = st.tensor(name).unwrap_or_else(|_| panic!("tensor {name}"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// A (d, n) tensor of the vectors, transposed to this crate's n × d layout.
    pub fn samples_as_rows(&self, name: &str) -> Array2<f64> {
        let a = self
            .f64(name)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        a.t().to_owned()
    }
}

/// A layer's zeroed gradient arrays in parameter order: the buffers `Trainable::backward`
/// adds into.
pub fn zero_gradients<L: mcr2::nn::Layer<f64> + ?Sized>(layer: &L) -> Vec<ArrayD<f64>> {
    layer
        .gradient_buffers()
        .into_iter()
        .map(|(_, g)| g)
        .collect()
}

/// max |a − b| / max |b|.
pub fn rel_err(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let scale = b
        .iter()
        .fold(0.0f64, |m, x| m.max(x.abs()))
        .max(f64::MIN_POSITIVE);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

/// The tensors of a safetensors file by name: (dtype, shape, bytes).
pub type TensorMap = std::collections::HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// A safetensors file rewritten by `f` (to remove, replace or corrupt tensors).
pub fn rewrite(bytes: &[u8], f: impl FnOnce(&mut TensorMap)) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut map: TensorMap = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    f(&mut map);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = map
        .iter()
        .map(|(k, (dt, sh, data))| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, sh.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}
