//! The shared layer vocabulary: [`Linear`], [`LayerNorm`], GELU, the [`Layer`] trait that
//! every token layer implements, and weight files by reference name ([`TensorReader`],
//! [`TensorWriter`], the [`Checkpoint`] trait).
//!
//! Conventions of every layer in this crate:
//!
//! * an `XConfig` (public fields, `Default` where the reference has one, serde with the
//!   `serde` feature) and `X::new(&config, &mut rng)` for the reference initialization;
//! * `X::from_parts(..)` for given tensors, checked once;
//! * `X::load(&reader, &config)` and `x.save(&mut writer)` under the reference `state_dict`
//!   names (safetensors is the one weight format), with `from_safetensors` / `to_safetensors`
//!   for whole files;
//! * `forward` on one sequence (tokens as rows) and `forward_batch` on b × n × dim, and the
//!   parameters listed by reference name with a matching gradient buffer, so that a
//!   backward pass can sit beside each forward.
//!
//! ```
//! use mcr2::nn::{Checkpoint, Layer, LayerNorm, LayerNormConfig};
//! use ndarray::array;
//! let ln = LayerNorm::<f64>::new(&LayerNormConfig::new(3))?;
//! let y = ln.forward(&array![[1.0, 2.0, 3.0]])?;
//! assert!((y.sum()).abs() < 1e-12);
//! let names: Vec<String> = ln.parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["weight", "bias"]);
//! let bytes = ln.to_safetensors("norm.")?;
//! let back = LayerNorm::<f64>::from_safetensors(&bytes, &LayerNormConfig::new(3), "norm.")?;
//! assert_eq!(back, ln);
//! # Ok::<(), mcr2::Error>(())
//! ```

mod init;
mod io;
mod layer_norm;
mod linear;
mod mlp;
mod patches;
mod train;

use ndarray::{Array3, ArrayD, ArrayRef2, ArrayRef3, ArrayViewD, Axis, CowArray, Ix2};

pub use crate::kernels::gelu;
pub(crate) use init::{normal, xavier_uniform};
pub use io::{ScopedWriter, TensorReader, TensorWriter};
pub use layer_norm::{LayerNorm, LayerNormCache, LayerNormConfig};
pub use linear::{Linear, LinearCache, LinearConfig};
pub use mlp::{Mlp, MlpCache, MlpConfig};
pub(crate) use patches::{
    PatchOrder, class_tokens, conv_backward, conv_parameters, conv_update, image_patches,
    update_embedding, with_class_token, with_class_token_backward,
};
pub use train::Trainable;
pub(crate) use train::{
    check_gradient_shapes, check_gradients, check_sequences, check_upstream, column_sums,
    grad_matrix, grad_vector, scoped, stack_backward, stack_forward_train, update_array,
};

use crate::{Float, Result};

/// A layer on token sequences: a function of (parameters, input) with tokens as rows.
pub trait Layer<T: Float> {
    /// Width of the tokens it takes.
    fn dim(&self) -> usize;

    /// The output for one sequence `x` (n × dim).
    fn forward(&self, x: &ArrayRef2<T>) -> Result<ndarray::Array2<T>>;

    /// The output for a batch `x` (b × n × dim), one sequence after another. Layers override
    /// it where a batch can be computed faster as a whole.
    fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check_batch(x, self.dim())?;
        let mut out: Option<Array3<T>> = None;
        for (s, xs) in x.outer_iter().enumerate() {
            let y = self.forward(&xs)?;
            let o =
                out.get_or_insert_with(|| Array3::zeros((x.len_of(Axis(0)), y.nrows(), y.ncols())));
            o.index_axis_mut(Axis(0), s).assign(&y);
        }
        Ok(out.expect("a checked batch is not empty"))
    }

    /// The parameters by their reference names (relative to the layer), in a fixed order.
    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)>;

    /// Number of scalar parameters.
    fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|(_, p)| p.len()).sum()
    }

    /// Zero buffers matching [`Layer::parameters`] one to one (names and shapes), to hold
    /// gradients.
    fn gradient_buffers(&self) -> Vec<(String, ArrayD<T>)> {
        zero_buffers(self.parameters())
    }
}

/// Zero buffers with the names and shapes of `parameters`, their zeros *written*.
///
/// A backward adds into its gradient buffers, so it reads each entry before writing it. A
/// zeroed allocation (`ArrayD::zeros`, `calloc`) of fresh pages maps every page to the
/// kernel's shared zero page on that first read and copies it on the write that follows;
/// with the pool's threads running on other cores, each such copy also flushes their TLBs
/// by interrupt. On a 2-core Intel Xeon (2 threads) the CRATE-T f32 block's
/// forward+backward at batch 1, into fresh buffers each pass, took 8.2–9.5 ms that way and
/// 6.1–6.7 ms with the zeros written first (throwaway program, the two builds in turn, four
/// runs, medians of 200 passes; BENCHMARKS.md, "Gradient buffers with written zeros";
/// whether the pages are fresh depends on the allocator's history).
pub(crate) fn zero_buffers<T: Float>(
    parameters: Vec<(String, ArrayViewD<'_, T>)>,
) -> Vec<(String, ArrayD<T>)> {
    parameters
        .into_iter()
        .map(|(name, p)| {
            let mut zeros = Vec::with_capacity(p.len());
            zeros.resize(p.len(), T::zero());
            let buffer = ArrayD::from_shape_vec(p.raw_dim(), zeros).expect("len = shape size");
            (name, buffer)
        })
        .collect()
}

/// Weights read and written under the reference `state_dict` names.
pub trait Checkpoint<T: Float>: Sized {
    /// What the weights alone do not tell (sizes that are not in the tensors' shapes,
    /// constants).
    type Config;

    /// Reads the layer's tensors through `reader` (names relative to its prefix).
    fn load(reader: &TensorReader<'_>, config: &Self::Config) -> Result<Self>;

    /// Writes the layer's tensors through `writer` (names relative to its prefix).
    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()>;

    /// Reads the layer from safetensors bytes, names starting with `prefix` (`""` for a file
    /// holding one layer).
    fn from_safetensors(bytes: &[u8], config: &Self::Config, prefix: &str) -> Result<Self> {
        Self::load(&TensorReader::new(bytes)?.scoped(prefix), config)
    }

    /// Writes the layer's tensors (in its float type) as safetensors bytes, names starting
    /// with `prefix`.
    fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let mut w = TensorWriter::new();
        self.save(&mut w.scoped(prefix))?;
        w.to_bytes()
    }
}

/// Parameters of a part of a layer, renamed `{prefix}{name}`.
pub(crate) fn prefixed<'a, T>(
    prefix: &str,
    list: Vec<(String, ArrayViewD<'a, T>)>,
) -> impl Iterator<Item = (String, ArrayViewD<'a, T>)> + use<'a, T> {
    let prefix = prefix.to_string();
    list.into_iter()
        .map(move |(n, v)| (format!("{prefix}{n}"), v))
}

/// Writes every parameter of `layer` under its name.
pub(crate) fn save_parameters<T: Float, L: Layer<T> + ?Sized>(
    layer: &L,
    writer: &mut ScopedWriter<'_>,
) -> Result<()> {
    for (name, p) in layer.parameters() {
        writer.put_shaped(&name, p.shape(), p.iter().copied());
    }
    Ok(())
}

/// Flattens b × n × d to (b·n) × d (copying only when not in standard layout).
pub(crate) fn flat<T: Float>(x: &ArrayRef3<T>) -> CowArray<'_, T, Ix2> {
    let (b, n, d) = x.dim();
    match x.view().into_shape_with_order((b * n, d)) {
        Ok(v) => CowArray::from(v),
        Err(_) => CowArray::from(
            x.as_standard_layout()
                .into_owned()
                .into_shape_with_order((b * n, d))
                .expect("standard layout"),
        ),
    }
}

/// A non-empty, finite b × n × d batch as its (b·n) × d rows.
pub(crate) fn batch_rows<T: Float>(x: &ArrayRef3<T>) -> Result<CowArray<'_, T, Ix2>> {
    let (b, n, d) = x.dim();
    if b == 0 || n == 0 || d == 0 {
        return Err(crate::Error::Empty {
            what: "token batch",
            rows: b * n,
            cols: d,
        });
    }
    let rows = flat(x);
    crate::validate::finite("token batch", &rows)?;
    Ok(rows)
}

/// Errors unless `x` is a non-empty, finite b × n × `dim` batch.
pub(crate) fn check_batch<T: Float>(x: &ArrayRef3<T>, dim: usize) -> Result<()> {
    batch_rows(x)?;
    if x.dim().2 != dim {
        return Err(crate::Error::ShapeMismatch {
            what: "token batch",
            expected: format!("token dimension {dim}"),
            got: format!("{}", x.dim().2),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gradient buffers are zeros of the parameters' names and shapes, in their order.
    #[test]
    fn gradient_buffers_are_zeros_shaped_like_the_parameters() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let block = crate::crate_layer::CrateBlock::<f32>::new(
            &crate::crate_layer::CrateBlockConfig {
                dim: 8,
                heads: 2,
                dim_head: 4,
                ..crate::crate_layer::CrateBlockConfig::tiny()
            },
            &mut rng,
        )
        .unwrap();
        let params = block.parameters();
        let grads = block.gradient_buffers();
        assert_eq!(params.len(), grads.len());
        for ((name, p), (gname, g)) in params.iter().zip(&grads) {
            assert_eq!(name, gname);
            assert_eq!(p.shape(), g.shape(), "{name}");
            assert!(g.iter().all(|&v| v == 0.0), "{name}");
        }
    }
}
