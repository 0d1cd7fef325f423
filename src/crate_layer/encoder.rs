//! A stack of CRATE layers, with the per-layer measurements the CRATE authors plot.

use ndarray::{Array2, Array3, ArrayD, ArrayRef3, ArrayView2, ArrayViewMutD};
use rand::Rng;

use super::block::{CrateBlock, CrateBlockCache, CrateBlockConfig};
use crate::nn::{Checkpoint, Layer, ScopedWriter, TensorReader, Trainable, batch_rows};
use crate::{Error, Float, Precision, Result};

/// An encoder of `depth` identical-shape CRATE blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrateEncoderConfig {
    /// Number of layers.
    pub depth: usize,
    /// The layers' configuration.
    pub block: CrateBlockConfig,
}

impl CrateEncoderConfig {
    /// Largest accepted depth (the reference models have 12 or 24 layers).
    pub const MAX_DEPTH: usize = crate::validate::MAX_DEPTH;

    /// Errors unless 1 ≤ depth ≤ [`CrateEncoderConfig::MAX_DEPTH`] and the block
    /// configuration is valid.
    pub fn check(&self) -> Result<()> {
        crate::validate::depth(self.depth)?;
        self.block.check()
    }
}

/// What a layer did to a batch: the two curves of the CRATE paper (arXiv 2306.01129, Fig. 3–4).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerDiagnostics<T> {
    /// Compression of the layer's input as measured by the CRATE authors: per image,
    /// `½ Σ_heads logdet(I + p/(N ε²) Ŵ_kᵀŴ_k)` with ε² = 0.01, where Ŵ_k holds the head-k
    /// projections of the LayerNormed tokens, each scaled to unit norm; mean over the batch
    /// ([`head_coding_rate`](crate::rate::head_coding_rate)).
    pub compression: T,
    /// The standard deviation of the compression over the batch (Bessel-corrected, as the
    /// authors' `torch.std`; 0 for one image).
    pub compression_std: T,
    /// Fraction of exactly-zero entries of the layer's output (ISTA), mean over the batch.
    pub sparsity: T,
}

/// A stack of [`CrateBlock`]s.
///
/// ```
/// use mcr2::crate_layer::{CrateBlockConfig, CrateEncoder, CrateEncoderConfig};
/// use mcr2::ndarray::Array3;
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// let config = CrateEncoderConfig { depth: 3, block: CrateBlockConfig::new(16, 2, 8) };
/// let encoder = CrateEncoder::<f64>::new(&config, &mut StdRng::seed_from_u64(0))?;
/// let x = Array3::from_shape_fn((1, 10, 16), |(_, i, j)| ((i * 5 + j) % 9) as f64 / 9.0);
/// let (y, layers) = encoder.forward_with_diagnostics(&x)?;
/// assert_eq!((y.dim(), layers.len()), ((1, 10, 16), 3)); // one diagnostic per layer
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CrateEncoder<T: Float> {
    pub(crate) blocks: Vec<CrateBlock<T>>,
}

impl<T: Float> CrateEncoder<T> {
    /// ε² of the authors' compression measurement.
    pub const MEASURE_EPS_SQ: f64 = crate::rate::HEAD_CODING_RATE_EPS_SQ;

    /// `depth` blocks with the reference initialization.
    pub fn new<R: Rng + ?Sized>(config: &CrateEncoderConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let blocks = (0..config.depth)
            .map(|_| CrateBlock::new(&config.block, rng))
            .collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    /// From given blocks (at least one; all of the same dim).
    pub fn from_blocks(blocks: Vec<CrateBlock<T>>) -> Result<Self> {
        let first = blocks.first().ok_or(Error::InvalidParameter {
            name: "blocks",
            value: "[]".into(),
            reason: "at least one block is required",
        })?;
        let dim = first.dim();
        if let Some(b) = blocks.iter().find(|b| b.dim() != dim) {
            return Err(Error::ShapeMismatch {
                what: "block",
                expected: format!("dim {dim}"),
                got: format!("dim {}", b.dim()),
            });
        }
        Ok(Self { blocks })
    }

    /// The layers.
    pub fn blocks(&self) -> &[CrateBlock<T>] {
        &self.blocks
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.blocks[0].dim()
    }

    /// Runs every layer on a batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        let (b, n, d) = x.dim();
        crate::rows::on_pool_rows(b.saturating_mul(n), d, || {
            let rows = batch_rows(x)?;
            self.blocks[0].check_input(d, n, b * n)?;
            let mut z = self.blocks[0].apply(rows.view(), n);
            for block in &self.blocks[1..] {
                let next = block.apply(z.view(), n);
                crate::workspace::recycle(std::mem::replace(&mut z, next));
            }
            crate::validate::finite_output("CRATE encoder output", &z)?;
            Ok(z.into_shape_with_order((b, n, d)).expect("rows are b·n"))
        })
    }

    /// Runs every layer and measures each one ([`LayerDiagnostics`]).
    pub fn forward_with_diagnostics(
        &self,
        x: &ArrayRef3<T>,
    ) -> Result<(Array3<T>, Vec<LayerDiagnostics<T>>)> {
        let (b, n, d) = x.dim();
        crate::rows::on_pool_rows(b.saturating_mul(n), d, || {
            let mut z = batch_rows(x)?.into_owned();
            self.blocks[0].check_input(d, n, b * n)?;
            let mut diags = Vec::with_capacity(self.blocks.len());
            for block in &self.blocks {
                let [h, _, _, _, out] = block.apply_trace(z.view(), n);
                let w = block.mssa.project(h.view());
                diags.push(measure(block, w.view(), out.view(), n)?);
                z = out;
            }
            Ok((
                z.into_shape_with_order((b, n, d)).expect("rows are b·n"),
                diags,
            ))
        })
    }
}

/// The CRATE authors' two measures of one layer on b sequences of `n` tokens: `w` holds the
/// head projections of the layer's LayerNormed input (b·n × heads·dim_head, see
/// `Mssa::project`), `out` is the layer's output.
pub(crate) fn measure<T: Float>(
    block: &CrateBlock<T>,
    w: ArrayView2<T>,
    out: ArrayView2<T>,
    n: usize,
) -> Result<LayerDiagnostics<T>> {
    let b = w.nrows() / n;
    let eps = Precision::from_eps_sq(CrateEncoder::<T>::MEASURE_EPS_SQ)?;
    let projected =
        w.into_shape_with_order((b, n, w.ncols()))
            .map_err(|_| crate::Error::ShapeMismatch {
                what: "projected tokens",
                expected: format!("{b}·{n} rows"),
                got: format!("{} rows", w.nrows()),
            })?;
    let compression = crate::rate::head_coding_rate(&projected, block.mssa.heads, eps)?;
    let zeros = out.iter().filter(|v| **v == T::zero()).count();
    Ok(LayerDiagnostics {
        compression: compression.mean,
        compression_std: compression.std,
        sparsity: T::from_usize(zeros) / T::from_usize(out.len()),
    })
}

impl<T: Float> Layer<T> for CrateEncoder<T> {
    fn dim(&self) -> usize {
        self.blocks[0].dim()
    }

    /// Every layer on one sequence (n × dim).
    fn forward(&self, x: &ndarray::ArrayRef2<T>) -> Result<Array2<T>> {
        let x3 = x.view().insert_axis(ndarray::Axis(0));
        let y = self.forward_batch(&x3)?;
        Ok(y.index_axis_move(ndarray::Axis(0), 0))
    }

    fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        CrateEncoder::forward_batch(self, x)
    }

    /// Layer `l`'s parameters as `{l}.…` (see [`CrateBlock`]).
    fn parameters(&self) -> Vec<(String, ndarray::ArrayViewD<'_, T>)> {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(|(l, b)| crate::nn::prefixed(&format!("{l}."), b.parameters()))
            .collect()
    }
}

impl<T: Float> Trainable<T> for CrateEncoder<T> {
    /// One [`CrateBlockCache`] per layer.
    type Cache = Vec<CrateBlockCache<T>>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::nn::stack_forward_train(&self.blocks, crate::workspace::copied(x), n)
    }

    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        crate::nn::check_gradients(&self.parameters(), grads)?;
        if cache.len() != self.blocks.len() {
            return Err(Error::ShapeMismatch {
                what: "encoder cache",
                expected: format!("{} layers", self.blocks.len()),
                got: format!("{}", cache.len()),
            });
        }
        let mut bounds = Vec::with_capacity(self.blocks.len());
        let mut rest: &mut [ArrayD<T>] = grads;
        for block in &self.blocks {
            let (head, tail) = rest.split_at_mut(block.parameters().len());
            bounds.push(head);
            rest = tail;
        }
        let mut d = crate::workspace::copied(dy);
        for ((block, c), g) in self.blocks.iter().zip(cache).zip(bounds).rev() {
            let dx = block.backward(c, d.view(), g)?;
            crate::workspace::recycle(std::mem::replace(&mut d, dx));
        }
        Ok(d)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        for (l, block) in self.blocks.iter_mut().enumerate() {
            let prefix = format!("{l}.");
            block.update_parameters(&mut crate::nn::scoped(&prefix, update))?;
        }
        Ok(())
    }
}

impl<T: Float> Checkpoint<T> for CrateEncoder<T> {
    type Config = CrateEncoderConfig;

    /// Reads `depth` layers named `{l}.0.norm.weight`, …; with the prefix
    /// `transformer.layers.` this is the encoder of a reference CRATE checkpoint.
    fn load(reader: &TensorReader<'_>, config: &CrateEncoderConfig) -> Result<Self> {
        config.check()?;
        let blocks = (0..config.depth)
            .map(|l| CrateBlock::load(&reader.scoped(&format!("{l}.")), &config.block))
            .collect::<Result<Vec<_>>>()?;
        Self::from_blocks(blocks)
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        for (l, b) in self.blocks.iter().enumerate() {
            b.save(&mut writer.scoped(&format!("{l}.")))?;
        }
        Ok(())
    }
}
