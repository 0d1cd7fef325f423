//! One CRATE-α layer: attention without biases and the overcomplete sparse coding step,
//! each with a residual.

use ndarray::{
    Array2, Array3, ArrayD, ArrayRef2, ArrayRef3, ArrayView2, ArrayViewD, ArrayViewMutD,
};
use rand::Rng;

use super::odl::{Odl, OdlCache, OdlConfig};
use crate::crate_layer::{Mssa, MssaCache, MssaConfig};
use crate::nn::{
    Checkpoint, Layer, LayerNorm, LayerNormCache, LayerNormConfig, ScopedWriter, TensorReader,
    Trainable, batch_rows, prefixed, scoped,
};
use crate::{Error, Float, Result};

/// Sizes and constants of a [`CrateAlphaBlock`], with the reference defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrateAlphaBlockConfig {
    /// Token dimension d.
    pub dim: usize,
    /// Number of heads.
    pub heads: usize,
    /// Dimension of each head.
    pub dim_head: usize,
    /// Overcomplete ratio of the ODL dictionaries (reference 4).
    pub ratio: usize,
    /// ISTA step η (reference 0.1).
    pub step: f64,
    /// Sparsity weight λ (reference 0.1).
    pub lambda: f64,
    /// LayerNorm ε of both PreNorms (reference 1e-6).
    pub ln_eps: f64,
}

impl CrateAlphaBlockConfig {
    /// The reference PreNorm's LayerNorm ε.
    pub const DEFAULT_LN_EPS: f64 = 1e-6;

    /// A layer of the given sizes with the reference constants (ratio 4, η = λ = 0.1,
    /// LayerNorm ε = 1e-6).
    pub fn new(dim: usize, heads: usize, dim_head: usize) -> Self {
        let odl = OdlConfig::new(dim);
        Self {
            dim,
            heads,
            dim_head,
            ratio: odl.ratio,
            step: odl.step,
            lambda: odl.lambda,
            ln_eps: Self::DEFAULT_LN_EPS,
        }
    }

    /// The attention's sizes.
    pub fn mssa(&self) -> MssaConfig {
        MssaConfig {
            dim: self.dim,
            heads: self.heads,
            dim_head: self.dim_head,
        }
    }

    /// The ODL step's sizes and constants.
    pub fn odl(&self) -> OdlConfig {
        OdlConfig {
            dim: self.dim,
            ratio: self.ratio,
            step: self.step,
            lambda: self.lambda,
        }
    }

    /// The PreNorms' configuration.
    pub fn layer_norm(&self) -> LayerNormConfig {
        LayerNormConfig::new(self.dim).with_eps(self.ln_eps)
    }

    /// Errors unless every part's configuration is valid.
    pub fn check(&self) -> Result<()> {
        self.mssa().check()?;
        self.odl().check()?;
        self.layer_norm().check()
    }

    /// Number of parameters: LayerNorms 4d, attention (heads·dim_head)·d plus d·heads·dim_head
    /// for the output projection (none when heads = 1 and dim_head = d), dictionaries 2·d·m.
    /// (Saturates at `usize::MAX` for sizes that cannot exist.)
    pub fn parameter_count(&self) -> usize {
        let (d, inner) = (
            self.dim as u128,
            (self.heads as u128) * (self.dim_head as u128),
        );
        let out = if self.mssa().project_out() {
            d * inner
        } else {
            0
        };
        let count = 4 * d + inner * d + out + 2 * d * (self.ratio as u128) * d;
        usize::try_from(count).unwrap_or(usize::MAX)
    }
}

/// One CRATE-α layer, tokens as rows:
///
/// `z½ = z + MSSA(LN₁(z))` (MSSA as in CRATE, with no bias on `qkv` and `to_out`), then
/// `z⁺ = z½ + ODL(LN₂(z½))` ([`Odl`]: two ISTA steps on an overcomplete dictionary and a
/// decoding; unlike CRATE, a residual).
///
/// Reference: Yang et al., arXiv 2405.20299, Sec. 3; the reference `Transformer` of
/// `torch_inference/model/crate_alpha.py` (UCSC-VLAA/CRATE-alpha), LayerNorm ε = 1e-6.
///
/// ```
/// use mcr2::crate_alpha::{CrateAlphaBlock, CrateAlphaBlockConfig};
/// use mcr2::ndarray::Array2;
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// let config = CrateAlphaBlockConfig::new(16, 2, 8);
/// let block = CrateAlphaBlock::<f64>::new(&config, &mut StdRng::seed_from_u64(0))?;
/// let z = Array2::from_shape_fn((5, 16), |(i, j)| ((i * 3 + j) % 7) as f64 - 3.0);
/// assert_eq!(block.forward(&z)?.dim(), (5, 16));
/// assert_eq!(config.parameter_count(), 4 * 16 + 2 * 16 * 16 + 2 * 16 * 64);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CrateAlphaBlock<T: Float> {
    pub(crate) ln1: LayerNorm<T>,
    pub(crate) mssa: Mssa<T>,
    pub(crate) ln2: LayerNorm<T>,
    pub(crate) odl: Odl<T>,
}

impl<T: Float> CrateAlphaBlock<T> {
    /// A layer with the reference initialization: LayerNorm weight 1 and bias 0, the
    /// attention as PyTorch `Linear` without bias (U(±1/√fan_in)), the dictionaries
    /// Kaiming-uniform (U(±√(6/m))).
    pub fn new<R: Rng + ?Sized>(config: &CrateAlphaBlockConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let mssa = Mssa::new_unbiased(&config.mssa(), rng)?;
        let odl = Odl::new(&config.odl(), rng)?;
        Self::from_parts(
            LayerNorm::new(&config.layer_norm())?,
            mssa,
            LayerNorm::new(&config.layer_norm())?,
            odl,
        )
    }

    /// A layer from its parts (dimensions must agree; the attention must have no biases).
    pub fn from_parts(
        ln1: LayerNorm<T>,
        mssa: Mssa<T>,
        ln2: LayerNorm<T>,
        odl: Odl<T>,
    ) -> Result<Self> {
        let dim = mssa.dim();
        for (what, d) in [("LN₁", ln1.dim()), ("LN₂", ln2.dim()), ("ODL", odl.dim())] {
            if d != dim {
                return Err(Error::ShapeMismatch {
                    what,
                    expected: format!("dim {dim}"),
                    got: format!("dim {d}"),
                });
            }
        }
        if mssa.is_white_box() || mssa.to_out().is_some_and(|(_, b)| b.is_some()) {
            return Err(Error::InvalidParameter {
                name: "attention",
                value: "with an output bias or white-box".into(),
                reason: "CRATE-α's attention is the reference parameterisation without biases",
            });
        }
        Ok(Self {
            ln1,
            mssa,
            ln2,
            odl,
        })
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.mssa.dim()
    }

    /// The attention step.
    pub fn mssa(&self) -> &Mssa<T> {
        &self.mssa
    }

    /// The sparse coding step.
    pub fn odl(&self) -> &Odl<T> {
        &self.odl
    }

    /// The two LayerNorms.
    pub fn layer_norms(&self) -> (&LayerNorm<T>, &LayerNorm<T>) {
        (&self.ln1, &self.ln2)
    }

    /// This layer's configuration.
    pub fn config(&self) -> CrateAlphaBlockConfig {
        let odl = self.odl.config();
        CrateAlphaBlockConfig {
            dim: self.dim(),
            heads: self.mssa.heads(),
            dim_head: self.mssa.dim_head(),
            ratio: odl.ratio,
            step: odl.step,
            lambda: odl.lambda,
            ln_eps: self.ln1.eps,
        }
    }

    /// Forward on checked rows (b·n × dim, sequences of n tokens).
    pub(crate) fn apply(&self, x: ArrayView2<T>, n: usize) -> Array2<T> {
        let h = self.ln1.apply(x);
        let (_, o) = self.mssa.attend(h.view(), n);
        let mut y = h;
        self.mssa.finish(o.view(), n, Some(x), &mut y);
        drop(o);
        let h2 = self.ln2.apply(y.view());
        y += &self.odl.apply(h2.view());
        y
    }

    /// The layer's output on checked rows and the sparse codes `A²` of its ODL step.
    pub(crate) fn half_and_codes(&self, x: ArrayView2<T>, n: usize) -> (Array2<T>, Array2<T>) {
        let h = self.ln1.apply(x);
        let (_, o) = self.mssa.attend(h.view(), n);
        let mut y = h;
        self.mssa.finish(o.view(), n, Some(x), &mut y);
        let h2 = self.ln2.apply(y.view());
        let (codes, update) = self.odl.codes_and_output(h2.view());
        y += &update;
        (y, codes)
    }

    fn check_input(&self, dim: usize, n: usize, rows: usize) -> Result<()> {
        crate::crate_layer::check_tokens(self.dim(), dim, n)?;
        crate::crate_layer::check_projection(&self.mssa, rows)
    }

    /// One sequence: `x` is n × dim (tokens are rows).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::rows::on_pool_rows(x.nrows(), x.ncols(), || {
            crate::validate::matrix("tokens", x)?;
            self.check_input(x.ncols(), x.nrows(), x.nrows())?;
            let y = self.apply(x.view(), x.nrows());
            crate::validate::finite_output("CRATE-α layer output", &y)?;
            Ok(y)
        })
    }

    /// A batch: `x` is b × n × dim.
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        let (b, n, d) = x.dim();
        crate::rows::on_pool_rows(b.saturating_mul(n), d, || {
            let rows = batch_rows(x)?;
            self.check_input(d, n, b * n)?;
            let y = self.apply(rows.view(), n);
            crate::validate::finite_output("CRATE-α layer output", &y)?;
            Ok(y.into_shape_with_order((b, n, d)).expect("rows are b·n"))
        })
    }
}

impl<T: Float> Layer<T> for CrateAlphaBlock<T> {
    fn dim(&self) -> usize {
        self.mssa.dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        CrateAlphaBlock::forward(self, x)
    }

    fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        CrateAlphaBlock::forward_batch(self, x)
    }

    /// `0.norm.*`, `0.fn.qkv.weight`, `0.fn.to_out.0.weight`, `1.norm.*`, `1.fn.D`,
    /// `1.fn.D1`: the reference names.
    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let mut p = Vec::new();
        p.extend(prefixed("0.norm.", self.ln1.parameters()));
        p.extend(prefixed("0.fn.", self.mssa.parameters()));
        p.extend(prefixed("1.norm.", self.ln2.parameters()));
        p.extend(prefixed("1.fn.", self.odl.parameters()));
        p
    }
}

impl<T: Float> Checkpoint<T> for CrateAlphaBlock<T> {
    type Config = CrateAlphaBlockConfig;

    /// Reads `0.norm.weight`, `0.norm.bias` (dim), `0.fn.qkv.weight` (heads·dim_head × dim),
    /// `0.fn.to_out.0.weight` (dim × heads·dim_head, unless heads = 1 and dim_head = dim),
    /// `1.norm.weight`, `1.norm.bias` (dim), `1.fn.D` and `1.fn.D1` (dim × ratio·dim): the
    /// reference `transformer.layers[l]` names.
    fn load(reader: &TensorReader<'_>, c: &CrateAlphaBlockConfig) -> Result<Self> {
        c.check()?;
        let m = c.mssa();
        let inner = m.heads * m.dim_head;
        let qkv = reader.matrix("0.fn.qkv.weight", inner, m.dim)?;
        let to_out = if m.project_out() {
            Some(reader.matrix("0.fn.to_out.0.weight", m.dim, inner)?)
        } else {
            None
        };
        Self::from_parts(
            LayerNorm::load(&reader.scoped("0.norm."), &c.layer_norm())?,
            Mssa::from_parts_unbiased(qkv, m.heads, to_out)?,
            LayerNorm::load(&reader.scoped("1.norm."), &c.layer_norm())?,
            Odl::load(&reader.scoped("1.fn."), &c.odl())?,
        )
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        crate::nn::save_parameters(self, writer)
    }
}

/// What [`CrateAlphaBlock`]'s backward needs: the caches of its four parts (LayerNorm,
/// MSSA, LayerNorm, ODL; see each for its size).
#[derive(Debug, Clone)]
pub struct CrateAlphaBlockCache<T: Float> {
    ln1: LayerNormCache<T>,
    mssa: MssaCache<T>,
    ln2: LayerNormCache<T>,
    odl: OdlCache<T>,
}

impl<T: Float> Trainable<T> for CrateAlphaBlock<T> {
    type Cache = CrateAlphaBlockCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        crate::nn::check_sequences(x.nrows(), n)?;
        let (h, ln1) = self.ln1.forward_train(x, 1)?;
        // the normalized tokens go into the MSSA and ODL caches as they are
        let (mut y, mssa) =
            self.mssa
                .forward_train_owned(crate::workspace::adopt(h), n, Some(x))?;
        let (h2, ln2) = self.ln2.forward_train(y.view(), 1)?;
        let (update, odl) = self.odl.forward_train_owned(h2)?;
        crate::rows::zip_rows(y.view_mut(), update.view(), |mut y, u| y += &u);
        crate::validate::finite_output("CRATE-α layer output", &y)?;
        Ok((
            y,
            CrateAlphaBlockCache {
                ln1,
                mssa,
                ln2,
                odl,
            },
        ))
    }

    /// `dz½ = dz⁺ + LN₂ᵀ(ODLᵀ(dz⁺))`, then `dz = dz½ + LN₁ᵀ(MSSAᵀ(dz½))`.
    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        crate::nn::check_gradients(&self.parameters(), grads)?;
        let (g_ln1, rest) = grads.split_at_mut(2);
        let (g_mssa, rest) = rest.split_at_mut(self.mssa.parameters().len());
        let (g_ln2, g_odl) = rest.split_at_mut(2);
        let dh2 = self.odl.backward(&cache.odl, dy, g_odl)?;
        let mut dmid = self.ln2.backward(&cache.ln2, dh2.view(), g_ln2)?;
        dmid += &dy;
        let dh = self.mssa.backward(&cache.mssa, dmid.view(), g_mssa)?;
        let mut dx = self.ln1.backward(&cache.ln1, dh.view(), g_ln1)?;
        dx += &dmid;
        Ok(dx)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        self.ln1.update_parameters(&mut scoped("0.norm.", update))?;
        self.mssa.update_parameters(&mut scoped("0.fn.", update))?;
        self.ln2.update_parameters(&mut scoped("1.norm.", update))?;
        self.odl.update_parameters(&mut scoped("1.fn.", update))
    }
}
