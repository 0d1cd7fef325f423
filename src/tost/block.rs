//! ToST blocks and the encoder.

use ndarray::{Array1, Array2, Array3, ArrayRef2, ArrayRef3, ArrayView2, ArrayViewD};
use rand::Rng;

use super::per_sequence;
use super::tssa::{Tssa, TssaConfig};
use crate::nn::{
    Checkpoint, Layer, LayerNorm, LayerNormConfig, Mlp, MlpConfig, ScopedWriter, TensorReader,
    check_batch, prefixed,
};
use crate::{Error, Float, Result};

/// Sizes and constants of a ToST block.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ToStBlockConfig {
    /// Token dimension.
    pub dim: usize,
    /// Heads (must divide dim).
    pub heads: usize,
    /// MLP hidden size as a multiple of dim (default [`ToStBlockConfig::DEFAULT_MLP_RATIO`]).
    pub mlp_ratio: usize,
    /// Initial LayerScale γ (reference 1.0 for depth 12, 1e-5 for depth 24).
    pub layer_scale: f64,
    /// LayerNorm ε (default [`ToStBlockConfig::DEFAULT_LN_EPS`]).
    pub ln_eps: f64,
    /// Whether the TSSA projection has a bias (reference models: yes).
    pub qkv_bias: bool,
}

impl ToStBlockConfig {
    /// The reference MLP ratio.
    pub const DEFAULT_MLP_RATIO: usize = 4;
    /// The reference LayerScale for depth 12.
    pub const DEFAULT_LAYER_SCALE: f64 = 1.0;
    /// The reference LayerNorm ε.
    pub const DEFAULT_LN_EPS: f64 = 1e-6;
    /// Largest accepted |LayerScale γ|.
    pub const MAX_LAYER_SCALE: f64 = 1e6;

    /// A block of the given sizes with the reference constants.
    pub fn new(dim: usize, heads: usize) -> Self {
        Self {
            dim,
            heads,
            mlp_ratio: Self::DEFAULT_MLP_RATIO,
            layer_scale: Self::DEFAULT_LAYER_SCALE,
            ln_eps: Self::DEFAULT_LN_EPS,
            qkv_bias: true,
        }
    }

    /// The attention's sizes.
    pub fn tssa(&self) -> TssaConfig {
        TssaConfig {
            dim: self.dim,
            heads: self.heads,
            qkv_bias: self.qkv_bias,
        }
    }

    /// The MLP's sizes (errors when dim · mlp_ratio overflows).
    pub fn mlp(&self) -> Result<MlpConfig> {
        let hidden = self
            .dim
            .checked_mul(self.mlp_ratio)
            .ok_or(Error::TooLarge {
                what: "MLP hidden layer",
                bytes: None,
                budget: crate::memory_budget(),
            })?;
        Ok(MlpConfig {
            dim: self.dim,
            hidden,
        })
    }

    /// The LayerNorms' size and ε.
    pub fn layer_norm(&self) -> LayerNormConfig {
        LayerNormConfig::new(self.dim).with_eps(self.ln_eps)
    }

    /// Errors unless the sizes and constants are valid.
    pub fn check(&self) -> Result<()> {
        self.tssa().check()?;
        crate::validate::at_least_one("mlp_ratio", self.mlp_ratio)?;
        self.mlp()?.check()?;
        if !(self.layer_scale.is_finite() && self.layer_scale.abs() <= Self::MAX_LAYER_SCALE) {
            return Err(Error::InvalidParameter {
                name: "layer_scale",
                value: self.layer_scale.to_string(),
                reason: "must be finite and at most 1e6 in magnitude",
            });
        }
        self.layer_norm().check()
    }
}

/// A ToST block: `x + γ₁ ⊙ TSSA(LN₁(x))`, then `x + γ₂ ⊙ MLP(LN₂(x))` with a GELU MLP
/// (`fc1`, GELU, `fc2`). Weight names (under a prefix): `norm1.*`, `attn.*` (as [`Tssa`]),
/// `gamma1`, `norm2.*`, `mlp.fc1.*`, `mlp.fc2.*`, `gamma2`.
///
/// ```
/// use mcr2::ndarray::Array3;
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// use mcr2::tost::{ToStBlock, ToStBlockConfig};
/// let block = ToStBlock::<f32>::new(&ToStBlockConfig::new(16, 4), &mut StdRng::seed_from_u64(0))?;
/// let x = Array3::<f32>::from_elem((2, 50, 16), 0.25); // batch × tokens × dim
/// assert_eq!(block.forward_batch(&x)?.dim(), (2, 50, 16));
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ToStBlock<T: Float> {
    pub(crate) norm1: LayerNorm<T>,
    pub(crate) attn: Tssa<T>,
    pub(crate) gamma1: Array1<T>,
    pub(crate) norm2: LayerNorm<T>,
    pub(crate) mlp: Mlp<T>,
    pub(crate) gamma2: Array1<T>,
}

impl<T: Float> ToStBlock<T> {
    /// The reference initialization: Linear weights N(0, 0.02²) and biases 0, LayerNorms 1
    /// and 0, temperatures 1, LayerScale γ = `layer_scale`.
    pub fn new<R: Rng + ?Sized>(config: &ToStBlockConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let g = Array1::from_elem(config.dim, T::from_f64(config.layer_scale));
        Ok(Self {
            norm1: LayerNorm::new(&config.layer_norm())?,
            attn: Tssa::new(&config.tssa(), rng)?,
            gamma1: g.clone(),
            norm2: LayerNorm::new(&config.layer_norm())?,
            mlp: Mlp::new(&config.mlp()?, rng)?,
            gamma2: g,
        })
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.attn.dim()
    }

    /// The attention.
    pub fn attention(&self) -> &Tssa<T> {
        &self.attn
    }

    /// The MLP.
    pub fn mlp(&self) -> &Mlp<T> {
        &self.mlp
    }

    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let h = self.norm1.apply(x);
        let a = self.attn.apply(h.view());
        let mut y = x.to_owned();
        add_scaled_rows(&mut y, &a, &self.gamma1);
        let h2 = self.norm2.apply(y.view());
        let m = self.mlp.apply(h2.view());
        add_scaled_rows(&mut y, &m, &self.gamma2);
        y
    }

    /// One sequence (n × dim).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::rows::on_pool_rows(x.nrows(), x.ncols(), || {
            crate::validate::matrix_with_cols("tokens", x, self.dim())?;
            let y = self.apply(x.view());
            crate::validate::finite_output("ToST block output", &y)?;
            Ok(y)
        })
    }

    /// A batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check_batch(x, self.dim())?;
        let y = per_sequence(x, |s| self.apply(s));
        crate::validate::finite_output("ToST block output", &y)?;
        Ok(y)
    }
}

/// `y_i ← y_i + γ ⊙ a_i` for every row i (LayerScale).
/// On the pool when large.
pub(crate) fn add_scaled_rows<T: Float>(y: &mut Array2<T>, a: &Array2<T>, gamma: &Array1<T>) {
    crate::rows::zip_rows(y.view_mut(), a.view(), |mut yb, ab| {
        for (mut yr, ar) in yb.rows_mut().into_iter().zip(ab.rows()) {
            ndarray::Zip::from(&mut yr)
                .and(&ar)
                .and(gamma)
                .for_each(|y, &a, &g| *y += g * a);
        }
    })
}

impl<T: Float> Layer<T> for ToStBlock<T> {
    fn dim(&self) -> usize {
        self.attn.dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        ToStBlock::forward(self, x)
    }

    fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        ToStBlock::forward_batch(self, x)
    }

    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let mut p: Vec<_> = prefixed("norm1.", self.norm1.parameters()).collect();
        p.extend(prefixed("attn.", self.attn.parameters()));
        p.push(("gamma1".into(), self.gamma1.view().into_dyn()));
        p.extend(prefixed("norm2.", self.norm2.parameters()));
        p.extend(prefixed("mlp.", self.mlp.parameters()));
        p.push(("gamma2".into(), self.gamma2.view().into_dyn()));
        p
    }
}

impl<T: Float> Checkpoint<T> for ToStBlock<T> {
    type Config = ToStBlockConfig;

    fn load(reader: &TensorReader<'_>, config: &ToStBlockConfig) -> Result<Self> {
        config.check()?;
        let d = config.dim;
        let gamma = |name: &str| -> Result<Array1<T>> {
            let g: Array1<T> = reader.vector(name, d)?;
            crate::validate::at_most(
                "LayerScale γ",
                g.iter().fold(0.0, |m, v| v.abs().as_f64().max(m)),
                ToStBlockConfig::MAX_LAYER_SCALE,
            )?;
            Ok(g)
        };
        Ok(Self {
            norm1: LayerNorm::load(&reader.scoped("norm1."), &config.layer_norm())?,
            attn: Tssa::load(&reader.scoped("attn."), &config.tssa())?,
            gamma1: gamma("gamma1")?,
            norm2: LayerNorm::load(&reader.scoped("norm2."), &config.layer_norm())?,
            mlp: Mlp::load(&reader.scoped("mlp."), &config.mlp()?)?,
            gamma2: gamma("gamma2")?,
        })
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        self.norm1.save(&mut writer.scoped("norm1."))?;
        self.attn.save(&mut writer.scoped("attn."))?;
        writer.put_shaped("gamma1", &[self.dim()], self.gamma1.iter().copied());
        self.norm2.save(&mut writer.scoped("norm2."))?;
        self.mlp.save(&mut writer.scoped("mlp."))?;
        writer.put_shaped("gamma2", &[self.dim()], self.gamma2.iter().copied());
        Ok(())
    }
}

/// Depth and block sizes of a [`ToStEncoder`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ToStEncoderConfig {
    /// Number of blocks.
    pub depth: usize,
    /// The blocks' configuration.
    pub block: ToStBlockConfig,
}

impl ToStEncoderConfig {
    /// Largest accepted depth.
    pub const MAX_DEPTH: usize = crate::validate::MAX_DEPTH;

    /// Errors unless 1 ≤ depth ≤ [`ToStEncoderConfig::MAX_DEPTH`] and the block is valid.
    pub fn check(&self) -> Result<()> {
        crate::validate::depth(self.depth)?;
        self.block.check()
    }
}

/// A stack of [`ToStBlock`]s (weights `{l}.…` under a prefix, e.g. `blocks.` in the
/// reference).
#[derive(Debug, Clone, PartialEq)]
pub struct ToStEncoder<T: Float> {
    blocks: Vec<ToStBlock<T>>,
}

impl<T: Float> ToStEncoder<T> {
    /// `depth` blocks with the reference initialization.
    pub fn new<R: Rng + ?Sized>(config: &ToStEncoderConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let blocks = (0..config.depth)
            .map(|_| ToStBlock::new(&config.block, rng))
            .collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    /// The blocks.
    pub fn blocks(&self) -> &[ToStBlock<T>] {
        &self.blocks
    }

    /// Runs every block on a batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check_batch(x, self.blocks[0].dim())?;
        let y = per_sequence(x, |s| {
            let mut z = self.blocks[0].apply(s);
            for b in &self.blocks[1..] {
                z = b.apply(z.view());
            }
            z
        });
        crate::validate::finite_output("ToST encoder output", &y)?;
        Ok(y)
    }
}

impl<T: Float> Layer<T> for ToStEncoder<T> {
    fn dim(&self) -> usize {
        self.blocks[0].dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        let y = self.forward_batch(&x.view().insert_axis(ndarray::Axis(0)))?;
        Ok(y.index_axis_move(ndarray::Axis(0), 0))
    }

    fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        ToStEncoder::forward_batch(self, x)
    }

    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(|(l, b)| prefixed(&format!("{l}."), b.parameters()))
            .collect()
    }
}

impl<T: Float> Checkpoint<T> for ToStEncoder<T> {
    type Config = ToStEncoderConfig;

    /// Reads `depth` blocks named `{l}.…`.
    fn load(reader: &TensorReader<'_>, config: &ToStEncoderConfig) -> Result<Self> {
        config.check()?;
        let blocks = (0..config.depth)
            .map(|l| ToStBlock::load(&reader.scoped(&format!("{l}.")), &config.block))
            .collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        for (l, b) in self.blocks.iter().enumerate() {
            b.save(&mut writer.scoped(&format!("{l}.")))?;
        }
        Ok(())
    }
}
