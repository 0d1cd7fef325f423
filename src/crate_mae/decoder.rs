//! CRATE-MAE's decoder layer: a linear map, then attention subtracted.

use ndarray::{Array2, ArrayD, ArrayRef2, ArrayView2, ArrayViewD, ArrayViewMutD};
use rand::Rng;

use crate::crate_layer::{Mssa, MssaCache, MssaConfig};
use crate::nn::{
    Checkpoint, Layer, LayerNorm, LayerNormCache, LayerNormConfig, Linear, LinearConfig,
    ScopedWriter, TensorReader, Trainable, prefixed, scoped,
};
use crate::{Error, Float, Result};

/// One CRATE-MAE decoder layer, tokens as rows (the reference `crate_decoder.Block_CRATE`):
///
/// `g = LN₁(z) Dᵀ` (the linear "feed-forward", D: dim × dim, no bias), then
/// `z⁺ = g − MSSA(LN₂(g))` — the attention is subtracted, undoing a compression step.
/// Reference: Pai et al., *Masked Completion via Structured Diffusion with White-Box
/// Transformers*, ICLR 2024, arXiv 2404.02446; LayerNorm ε = 1e-5 (PyTorch's default).
#[derive(Debug, Clone, PartialEq)]
pub struct CrateDecoderBlock<T: Float> {
    pub(crate) ln1: LayerNorm<T>,
    pub(crate) linear: Linear<T>,
    pub(crate) ln2: LayerNorm<T>,
    pub(crate) mssa: Mssa<T>,
}

impl<T: Float> CrateDecoderBlock<T> {
    /// A layer with the reference MAE initialization: LayerNorms 1 and 0, D Kaiming-uniform
    /// (U(±√(6/dim))), `qkv` and `to_out` Xavier-uniform with a zero bias.
    pub fn new<R: Rng + ?Sized>(config: &MssaConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let d = config.dim;
        let bound = (6.0 / d as f64).sqrt();
        let dict =
            Array2::from_shape_simple_fn((d, d), || T::from_f64(rng.random_range(-bound..bound)));
        let ln = || LayerNorm::new(&LayerNormConfig::new(d));
        Self::from_parts(
            ln()?,
            Linear::from_parts(dict, None)?,
            ln()?,
            xavier_mssa(config, rng)?,
        )
    }

    /// A layer from its parts (dimensions must agree; the linear map is dim × dim without
    /// bias).
    pub fn from_parts(
        ln1: LayerNorm<T>,
        linear: Linear<T>,
        ln2: LayerNorm<T>,
        mssa: Mssa<T>,
    ) -> Result<Self> {
        let d = mssa.dim();
        if ln1.dim() != d
            || ln2.dim() != d
            || linear.in_dim() != d
            || linear.out_dim() != d
            || linear.bias().is_some()
        {
            return Err(Error::ShapeMismatch {
                what: "CRATE decoder layer",
                expected: format!("LayerNorms of {d}, a {d} × {d} map without bias"),
                got: format!(
                    "LayerNorms of {} and {}, a {} × {} map{}",
                    ln1.dim(),
                    ln2.dim(),
                    linear.out_dim(),
                    linear.in_dim(),
                    if linear.bias().is_some() {
                        " with bias"
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(Self {
            ln1,
            linear,
            ln2,
            mssa,
        })
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.mssa.dim()
    }

    /// The layer on checked rows (b·n × dim, sequences of n tokens).
    pub(crate) fn apply(&self, x: ArrayView2<T>, n: usize) -> Array2<T> {
        let g = self.linear.apply(self.ln1.apply(x).view());
        let h = self.ln2.apply(g.view());
        let (_, o) = self.mssa.attend(h.view(), n);
        let mut att = h.clone();
        self.mssa.finish(o.view(), n, None, &mut att);
        g - att
    }

    /// One sequence: `x` is n × dim.
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::rows::on_pool_rows(x.nrows(), x.ncols(), || {
            crate::validate::matrix_with_cols("tokens", x, self.dim())?;
            crate::crate_layer::check_projection(&self.mssa, x.nrows())?;
            let y = self.apply(x.view(), x.nrows());
            crate::validate::finite_output("CRATE decoder layer output", &y)?;
            Ok(y)
        })
    }
}

/// MSSA with the reference MAE initialization: Xavier-uniform `qkv` and `to_out`, zero bias.
pub(crate) fn xavier_mssa<T: Float, R: Rng + ?Sized>(
    c: &MssaConfig,
    rng: &mut R,
) -> Result<Mssa<T>> {
    let inner = c.heads * c.dim_head;
    let qkv = crate::nn::xavier_uniform(inner, c.dim, rng);
    let out = c.project_out().then(|| {
        (
            crate::nn::xavier_uniform(c.dim, inner, rng),
            ndarray::Array1::zeros(c.dim),
        )
    });
    Mssa::from_parts(qkv, c.heads, out)
}

impl<T: Float> Layer<T> for CrateDecoderBlock<T> {
    fn dim(&self) -> usize {
        self.mssa.dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        CrateDecoderBlock::forward(self, x)
    }

    /// `0.norm.*`, `0.fn.weight` (D), `1.norm.*`, `1.fn.*` (the attention): the reference
    /// names below `layers.0.`.
    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let mut p = Vec::new();
        p.extend(prefixed("0.norm.", self.ln1.parameters()));
        p.extend(prefixed("0.fn.", self.linear.parameters()));
        p.extend(prefixed("1.norm.", self.ln2.parameters()));
        p.extend(prefixed("1.fn.", self.mssa.parameters()));
        p
    }
}

impl<T: Float> Checkpoint<T> for CrateDecoderBlock<T> {
    type Config = MssaConfig;

    /// Reads `0.norm.*` (dim), `0.fn.weight` (dim × dim), `1.norm.*` and the attention's
    /// `1.fn.qkv.weight`, `1.fn.to_out.0.weight`, `1.fn.to_out.0.bias`.
    fn load(reader: &TensorReader<'_>, c: &MssaConfig) -> Result<Self> {
        c.check()?;
        let ln = LayerNormConfig::new(c.dim);
        Self::from_parts(
            LayerNorm::load(&reader.scoped("0.norm."), &ln)?,
            Linear::load(
                &reader.scoped("0.fn."),
                &LinearConfig::new(c.dim, c.dim).without_bias(),
            )?,
            LayerNorm::load(&reader.scoped("1.norm."), &ln)?,
            Mssa::load(&reader.scoped("1.fn."), c)?,
        )
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        crate::nn::save_parameters(self, writer)
    }
}

/// What [`CrateDecoderBlock`]'s backward needs: the caches of its LayerNorms, linear map and
/// attention (see each for its size).
#[derive(Debug, Clone)]
pub struct CrateDecoderBlockCache<T: Float> {
    ln1: LayerNormCache<T>,
    linear: crate::nn::LinearCache<T>,
    ln2: LayerNormCache<T>,
    mssa: MssaCache<T>,
}

impl<T: Float> Trainable<T> for CrateDecoderBlock<T> {
    type Cache = CrateDecoderBlockCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        crate::nn::check_sequences(x.nrows(), n)?;
        let (h, ln1) = self.ln1.forward_train(x, 1)?;
        let (g, linear) = self.linear.forward_train(h.view(), 1)?;
        let (h2, ln2) = self.ln2.forward_train(g.view(), 1)?;
        let (att, mssa) = self.mssa.forward_train(h2.view(), n)?;
        let y = g - att;
        crate::validate::finite_output("CRATE decoder layer output", &y)?;
        Ok((
            y,
            CrateDecoderBlockCache {
                ln1,
                linear,
                ln2,
                mssa,
            },
        ))
    }

    /// `dg = dz⁺ − LN₂ᵀ(MSSAᵀ(dz⁺))`, then back through D and LN₁.
    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        crate::nn::check_gradients(&self.parameters(), grads)?;
        let (g_ln1, rest) = grads.split_at_mut(2);
        let (g_lin, rest) = rest.split_at_mut(1);
        let (g_ln2, g_mssa) = rest.split_at_mut(2);
        let neg = dy.mapv(|v| -v);
        let dh2 = self.mssa.backward(&cache.mssa, neg.view(), g_mssa)?;
        let mut dg = self.ln2.backward(&cache.ln2, dh2.view(), g_ln2)?;
        dg += &dy;
        let dh = self.linear.backward(&cache.linear, dg.view(), g_lin)?;
        self.ln1.backward(&cache.ln1, dh.view(), g_ln1)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        self.ln1.update_parameters(&mut scoped("0.norm.", update))?;
        self.linear
            .update_parameters(&mut scoped("0.fn.", update))?;
        self.ln2.update_parameters(&mut scoped("1.norm.", update))?;
        self.mssa.update_parameters(&mut scoped("1.fn.", update))
    }
}
