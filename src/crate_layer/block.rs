//! One CRATE layer and the encoder, a stack of layers.

use ndarray::{
    Array2, Array3, ArrayD, ArrayRef2, ArrayRef3, ArrayView2, ArrayViewD, ArrayViewMutD,
};
use rand::Rng;

use super::{Ista, IstaCache, IstaConfig, Mssa, MssaCache, MssaConfig};
use crate::nn::{
    Checkpoint, Layer, LayerNorm, LayerNormCache, LayerNormConfig, ScopedWriter, TensorReader,
    Trainable, batch_rows, prefixed, scoped,
};
use crate::{Error, Float, Result};

/// Sizes and constants of a CRATE block, with the reference defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrateBlockConfig {
    /// Token (feature) dimension.
    pub dim: usize,
    /// Number of heads (subspaces).
    pub heads: usize,
    /// Dimension of each head.
    pub dim_head: usize,
    /// ISTA step η (reference 0.1).
    pub ista_step: f64,
    /// ISTA sparsity weight λ (reference 0.1, hard-coded there).
    pub ista_lambda: f64,
    /// LayerNorm ε (reference 1e-5).
    pub ln_eps: f64,
}

impl CrateBlockConfig {
    /// A block of the given sizes with the reference constants.
    pub fn new(dim: usize, heads: usize, dim_head: usize) -> Self {
        Self {
            dim,
            heads,
            dim_head,
            ista_step: IstaConfig::DEFAULT_STEP,
            ista_lambda: IstaConfig::DEFAULT_LAMBDA,
            ln_eps: LayerNormConfig::DEFAULT_EPS,
        }
    }

    /// The attention step's sizes.
    pub fn mssa(&self) -> MssaConfig {
        MssaConfig {
            dim: self.dim,
            heads: self.heads,
            dim_head: self.dim_head,
        }
    }

    /// The ISTA step's size and constants.
    pub fn ista(&self) -> IstaConfig {
        IstaConfig {
            dim: self.dim,
            step: self.ista_step,
            lambda: self.ista_lambda,
        }
    }

    /// The LayerNorms' size and ε.
    pub fn layer_norm(&self) -> LayerNormConfig {
        LayerNormConfig {
            dim: self.dim,
            eps: self.ln_eps,
        }
    }

    /// CRATE-T: dim 384, 6 heads of 64.
    pub fn tiny() -> Self {
        Self::new(384, 6, 64)
    }

    /// CRATE-S: dim 576, 12 heads of 48.
    pub fn small() -> Self {
        Self::new(576, 12, 48)
    }

    /// CRATE-B: dim 768, 12 heads of 64.
    pub fn base() -> Self {
        Self::new(768, 12, 64)
    }

    /// CRATE-L: dim 1024, 16 heads of 64.
    pub fn large() -> Self {
        Self::new(1024, 16, 64)
    }

    /// Whether the reference has an output projection (all but heads = 1, dim_head = dim).
    pub fn project_out(&self) -> bool {
        self.mssa().project_out()
    }

    /// Errors unless every size is ≥ 1 and the constants are valid.
    pub fn check(&self) -> Result<()> {
        self.mssa().check()?;
        self.ista().check()?;
        self.layer_norm().check()
    }

    /// The tensor names of one block relative to its prefix, in the order
    /// [`Layer::parameters`] lists them.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut names = vec!["0.norm.weight", "0.norm.bias", "0.fn.qkv.weight"];
        if self.project_out() {
            names.extend(["0.fn.to_out.0.weight", "0.fn.to_out.0.bias"]);
        }
        names.extend(["1.norm.weight", "1.norm.bias", "1.fn.weight"]);
        names.into_iter().map(String::from).collect()
    }
}

/// One CRATE layer exactly as the reference runs it (tokens are rows):
///
/// `z½ = z + MSSA(LN₁(z))`, then `z⁺ = ISTA(LN₂(z½))` — no residual around ISTA, so the output
/// is non-negative. A white-box block ([`CrateBlock::white_box`]) has no LayerNorms:
/// `z½ = z + MSSA(z)` with the paper's compression step, `z⁺ = ISTA(z½)`.
#[derive(Debug, Clone, PartialEq)]
pub struct CrateBlock<T: Float> {
    pub(crate) ln1: Option<LayerNorm<T>>,
    pub(crate) mssa: Mssa<T>,
    pub(crate) ln2: Option<LayerNorm<T>>,
    pub(crate) ista: Ista<T>,
}

/// Every intermediate of a block's forward pass (each b × n × dim).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTrace<T> {
    /// `LN₁(z)` (equal to z in a white-box block).
    pub ln1: Array3<T>,
    /// `MSSA(LN₁(z))`.
    pub mssa: Array3<T>,
    /// `z½ = z + MSSA(LN₁(z))`.
    pub y: Array3<T>,
    /// `LN₂(z½)`.
    pub ln2: Array3<T>,
    /// `ISTA(LN₂(z½))`.
    pub out: Array3<T>,
}

/// Errors unless tokens of `dim` features fit a layer of `expected` features and there is
/// at least one token per sequence (`n`).
pub(crate) fn check_tokens(expected: usize, dim: usize, n: usize) -> Result<()> {
    if dim != expected {
        return Err(Error::ShapeMismatch {
            what: "tokens",
            expected: format!("{expected} features"),
            got: format!("{dim} features"),
        });
    }
    if n == 0 {
        return Err(Error::Empty {
            what: "tokens",
            rows: 0,
            cols: dim,
        });
    }
    Ok(())
}

/// Errors with [`Error::TooLarge`] unless the attention's projected tokens for `rows`
/// tokens (rows × heads·dim_head) fit the memory budget: checked before any forward allocates
/// them (a wide attention on narrow tokens can ask for far more than its input).
pub(crate) fn check_projection<T: Float>(mssa: &Mssa<T>, rows: usize) -> Result<()> {
    crate::validate::elements_of::<T>("projected tokens", &[rows, mssa.qkv.nrows()]).map(|_| ())
}

fn unflat<T: Float>(x: Array2<T>, b: usize, n: usize) -> Array3<T> {
    let d = x.ncols();
    x.into_shape_with_order((b, n, d)).expect("rows are b·n")
}

impl<T: Float> CrateBlock<T> {
    /// A block with the reference initialization: LayerNorm weight 1 and bias 0, `qkv` and
    /// `to_out` as PyTorch `Linear` (U(±1/√fan_in)), the ISTA dictionary Kaiming-uniform
    /// (U(±√(6/dim))).
    pub fn new<R: Rng + ?Sized>(config: &CrateBlockConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let mssa = Mssa::new(&config.mssa(), rng)?;
        let ista = Ista::new(&config.ista(), rng)?;
        Self::from_parts(
            LayerNorm::new(&config.layer_norm())?,
            mssa,
            LayerNorm::new(&config.layer_norm())?,
            ista,
        )
    }

    /// A reference block from its parts (dimensions must agree).
    pub fn from_parts(
        ln1: LayerNorm<T>,
        mssa: Mssa<T>,
        ln2: LayerNorm<T>,
        ista: Ista<T>,
    ) -> Result<Self> {
        let dim = mssa.dim();
        for (what, d) in [("LN₁", ln1.dim()), ("LN₂", ln2.dim()), ("ISTA", ista.dim())] {
            if d != dim {
                return Err(Error::ShapeMismatch {
                    what,
                    expected: format!("dim {dim}"),
                    got: format!("dim {d}"),
                });
            }
        }
        Ok(Self {
            ln1: Some(ln1),
            mssa,
            ln2: Some(ln2),
            ista,
        })
    }

    /// The white-box layer of the paper: the compression step of
    /// [`Mssa::from_subspaces`] followed by ISTA with a given dictionary, no LayerNorms.
    pub fn white_box(mssa: Mssa<T>, ista: Ista<T>) -> Result<Self> {
        if ista.dim() != mssa.dim() {
            return Err(Error::ShapeMismatch {
                what: "ISTA",
                expected: format!("dim {}", mssa.dim()),
                got: format!("dim {}", ista.dim()),
            });
        }
        Ok(Self {
            ln1: None,
            mssa,
            ln2: None,
            ista,
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

    /// The ISTA step.
    pub fn ista(&self) -> &Ista<T> {
        &self.ista
    }

    /// The two LayerNorms (`None` for a white-box block).
    pub fn layer_norms(&self) -> (Option<&LayerNorm<T>>, Option<&LayerNorm<T>>) {
        (self.ln1.as_ref(), self.ln2.as_ref())
    }

    /// Errors unless `rows` tokens of width `dim` in sequences of `n` fit this block.
    pub(crate) fn check_input(&self, dim: usize, n: usize, rows: usize) -> Result<()> {
        check_tokens(self.dim(), dim, n)?;
        check_projection(&self.mssa, rows)
    }

    fn norm(ln: &Option<LayerNorm<T>>, x: ArrayView2<T>) -> Array2<T> {
        match ln {
            Some(ln) => ln.apply(x),
            None => x.as_standard_layout().into_owned(),
        }
    }

    /// Forward on checked rows (b·n × dim, sequences of n tokens), keeping the intermediates.
    pub(crate) fn apply_trace(&self, x: ArrayView2<T>, n: usize) -> [Array2<T>; 5] {
        let h = Self::norm(&self.ln1, x);
        let (_, o) = self.mssa.attend(h.view(), n);
        let mut att = h.clone();
        self.mssa.finish(o.view(), n, None, &mut att);
        // z½ exactly as `apply` forms it (x + bias + O·Wᵀ in that order), so that the traced
        // output is bit-identical to the plain forward pass
        let mut y = h.clone();
        self.mssa.finish(o.view(), n, Some(x), &mut y);
        let h2 = Self::norm(&self.ln2, y.view());
        let out = self.ista.apply(h2.view());
        [h, att, y, h2, out]
    }

    /// Forward on checked rows, returning only the output.
    ///
    /// The temporaries (`LN₁(x)`, overwritten by `z½` and then normalized in place; the
    /// projected tokens; the head outputs; the attention scores) and the output's buffer come
    /// from the thread's scratch cache (see `crate::workspace`), so no memory is zeroed; the
    /// output leaves as a plain array (a stack of blocks gives each layer's input back with
    /// `workspace::recycle` once the next layer has run).
    pub(crate) fn apply(&self, x: ArrayView2<T>, n: usize) -> Array2<T> {
        let mut y = crate::workspace::take::<T>(x.nrows(), x.ncols());
        match &self.ln1 {
            Some(ln) => ln.apply_into(x, &mut y),
            None => crate::rows::zip_rows(y.view_mut(), x, |mut y, x| y.assign(&x)),
        }
        let (w, o) = self.mssa.attend(y.view(), n);
        drop(w);
        self.mssa.finish(o.view(), n, Some(x), &mut y);
        drop(o);
        if let Some(ln) = &self.ln2 {
            ln.apply_in_place(&mut y);
        }
        let mut out = crate::workspace::for_overwrite(y.nrows(), y.ncols());
        self.ista.apply_into(y.view(), out.view_mut());
        out
    }

    /// One sequence: `x` is n × dim (tokens are rows).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::rows::on_pool_rows(x.nrows(), x.ncols(), || {
            crate::validate::matrix("tokens", x)?;
            self.check_input(x.ncols(), x.nrows(), x.nrows())?;
            let y = self.apply(x.view(), x.nrows());
            crate::validate::finite_output("CRATE block output", &y)?;
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
            crate::validate::finite_output("CRATE block output", &y)?;
            Ok(unflat(y, b, n))
        })
    }

    /// A batch with every intermediate.
    pub fn forward_trace(&self, x: &ArrayRef3<T>) -> Result<BlockTrace<T>> {
        let (b, n, d) = x.dim();
        crate::rows::on_pool_rows(b.saturating_mul(n), d, || {
            let rows = batch_rows(x)?;
            self.check_input(d, n, b * n)?;
            let [ln1, mssa, y, ln2, out] = self.apply_trace(rows.view(), n);
            Ok(BlockTrace {
                ln1: unflat(ln1, b, n),
                mssa: unflat(mssa, b, n),
                y: unflat(y, b, n),
                ln2: unflat(ln2, b, n),
                out: unflat(out, b, n),
            })
        })
    }
}

impl<T: Float> CrateBlock<T> {
    /// This block's configuration.
    pub fn config(&self) -> CrateBlockConfig {
        CrateBlockConfig {
            dim: self.dim(),
            heads: self.mssa.heads,
            dim_head: self.mssa.dim_head,
            ista_step: self.ista.step_size(),
            ista_lambda: self.ista.lambda(),
            ln_eps: self
                .ln1
                .as_ref()
                .map_or(LayerNormConfig::DEFAULT_EPS, |l| l.eps),
        }
    }
}

impl<T: Float> Layer<T> for CrateBlock<T> {
    fn dim(&self) -> usize {
        self.mssa.dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        CrateBlock::forward(self, x)
    }

    fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        CrateBlock::forward_batch(self, x)
    }

    /// `0.norm.*`, `0.fn.*` (the attention), `1.norm.*`, `1.fn.weight` (the dictionary);
    /// a white-box block lists its subspace bases and dictionary only.
    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let mut p = Vec::new();
        if let Some(ln) = &self.ln1 {
            p.extend(prefixed("0.norm.", ln.parameters()));
        }
        p.extend(prefixed("0.fn.", self.mssa.parameters()));
        if let Some(ln) = &self.ln2 {
            p.extend(prefixed("1.norm.", ln.parameters()));
        }
        p.extend(prefixed("1.fn.", self.ista.parameters()));
        p
    }
}

impl<T: Float> Checkpoint<T> for CrateBlock<T> {
    type Config = CrateBlockConfig;

    /// Reads `0.norm.weight`, `0.norm.bias` (dim), `0.fn.qkv.weight` (heads·dim_head × dim),
    /// `0.fn.to_out.0.weight` (dim × heads·dim_head) and `0.fn.to_out.0.bias` (dim) unless
    /// heads = 1 and dim_head = dim, `1.norm.weight`, `1.norm.bias` (dim) and `1.fn.weight`
    /// (dim × dim, the ISTA dictionary D): the reference `Transformer.layers[l]` names.
    fn load(reader: &TensorReader<'_>, c: &CrateBlockConfig) -> Result<Self> {
        c.check()?;
        Self::from_parts(
            LayerNorm::load(&reader.scoped("0.norm."), &c.layer_norm())?,
            Mssa::load(&reader.scoped("0.fn."), &c.mssa())?,
            LayerNorm::load(&reader.scoped("1.norm."), &c.layer_norm())?,
            Ista::load(&reader.scoped("1.fn."), &c.ista())?,
        )
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        let (Some(ln1), Some(ln2)) = (&self.ln1, &self.ln2) else {
            return Err(Error::InvalidParameter {
                name: "block",
                value: "white-box".into(),
                reason: "a white-box block has no reference state_dict",
            });
        };
        ln1.save(&mut writer.scoped("0.norm."))?;
        self.mssa.save(&mut writer.scoped("0.fn."))?;
        ln2.save(&mut writer.scoped("1.norm."))?;
        self.ista.save(&mut writer.scoped("1.fn."))
    }
}

/// What [`CrateBlock`]'s backward needs: the caches of its four layers (LayerNorm, MSSA,
/// LayerNorm, ISTA; see each for its size).
#[derive(Debug, Clone)]
pub struct CrateBlockCache<T: Float> {
    ln1: Option<LayerNormCache<T>>,
    mssa: MssaCache<T>,
    ln2: Option<LayerNormCache<T>>,
    ista: IstaCache<T>,
}

/// `LN(x)` with its cache, or `x` itself where there is no LayerNorm (white box). `x` has the
/// block's width; it is finite or, for LN₂, the sum of two finite matrices (an overflow there
/// shows in LN₂'s output, which is checked).
fn norm_train<T: Float>(
    ln: &Option<LayerNorm<T>>,
    x: ArrayView2<T>,
) -> Result<(Array2<T>, Option<LayerNormCache<T>>)> {
    match ln {
        Some(ln) => ln.forward_train_checked(x).map(|(y, c)| (y, Some(c))),
        None => Ok((crate::workspace::copied(x), None)),
    }
}

/// The LayerNorm's backward, or `dy` itself where there is none.
fn norm_backward<T: Float>(
    ln: &Option<LayerNorm<T>>,
    cache: &Option<LayerNormCache<T>>,
    dy: Array2<T>,
    grads: &mut [ArrayD<T>],
) -> Result<Array2<T>> {
    match (ln, cache) {
        (Some(ln), Some(c)) => {
            let dx = ln.backward(c, dy.view(), grads);
            crate::workspace::recycle(dy);
            dx
        }
        _ => Ok(dy),
    }
}

impl<T: Float> Trainable<T> for CrateBlock<T> {
    type Cache = CrateBlockCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        crate::nn::check_sequences(x.nrows(), n)?;
        // the normalized tokens go into the MSSA and ISTA caches as they are
        let (h, ln1) = norm_train(&self.ln1, x)?;
        let (y, mssa) = self
            .mssa
            .forward_train_owned(crate::workspace::adopt(h), n, Some(x))?;
        let (h2, ln2) = norm_train(&self.ln2, y.view())?;
        crate::workspace::recycle(y);
        let (out, ista) = self.ista.forward_train_owned(crate::workspace::adopt(h2))?;
        Ok((
            out,
            CrateBlockCache {
                ln1,
                mssa,
                ln2,
                ista,
            },
        ))
    }

    /// Through ISTA and LN₂ to `dz½`, then `dz = dz½ + LN₁ᵀ(MSSAᵀ(dz½))` (the residual).
    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        crate::nn::check_gradients(&self.parameters(), grads)?;
        let count = |ln: &Option<LayerNorm<T>>| ln.as_ref().map_or(0, |l| l.parameters().len());
        let (g_ln1, rest) = grads.split_at_mut(count(&self.ln1));
        let (g_mssa, rest) = rest.split_at_mut(self.mssa.parameters().len());
        let (g_ln2, g_ista) = rest.split_at_mut(count(&self.ln2));
        let dh2 = self.ista.backward(&cache.ista, dy, g_ista)?;
        let dmid = norm_backward(&self.ln2, &cache.ln2, dh2, g_ln2)?;
        let dh = self.mssa.backward(&cache.mssa, dmid.view(), g_mssa)?;
        let mut dx = norm_backward(&self.ln1, &cache.ln1, dh, g_ln1)?;
        crate::rows::zip_rows(dx.view_mut(), dmid.view(), |mut dx, d| dx += &d);
        crate::workspace::recycle(dmid);
        Ok(dx)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        if let Some(ln) = &mut self.ln1 {
            ln.update_parameters(&mut scoped("0.norm.", update))?;
        }
        self.mssa.update_parameters(&mut scoped("0.fn.", update))?;
        if let Some(ln) = &mut self.ln2 {
            ln.update_parameters(&mut scoped("1.norm.", update))?;
        }
        self.ista.update_parameters(&mut scoped("1.fn.", update))
    }
}
