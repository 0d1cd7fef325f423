//! One CRATE layer and the encoder, a stack of layers.

use ndarray::{Array2, Array3, ArrayRef2, ArrayRef3, ArrayView2, CowArray, Ix2};
use rand::Rng;

use super::{Ista, LayerNorm, Mssa};
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
            ista_step: 0.1,
            ista_lambda: 0.1,
            ln_eps: 1e-5,
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
        !(self.heads == 1 && self.dim_head == self.dim)
    }

    /// Errors unless every size is ≥ 1 and the constants are valid.
    pub fn check(&self) -> Result<()> {
        if self.dim == 0 || self.heads == 0 || self.dim_head == 0 {
            return Err(Error::InvalidParameter {
                name: "dim, heads, dim_head",
                value: format!("{}, {}, {}", self.dim, self.heads, self.dim_head),
                reason: "must all be ≥ 1",
            });
        }
        crate::validate::positive("ista_step", self.ista_step)?;
        crate::validate::positive("ln_eps", self.ln_eps)?;
        if !(self.ista_lambda.is_finite() && self.ista_lambda >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "ista_lambda",
                value: self.ista_lambda.to_string(),
                reason: "must be finite and ≥ 0",
            });
        }
        Ok(())
    }
}

/// One CRATE layer exactly as the reference runs it (tokens are rows):
///
/// `z½ = z + MSSA(LN₁(z))`, then `z⁺ = ISTA(LN₂(z½))` — no residual around ISTA, so the output
/// is non-negative. A white-box block ([`CrateBlock::white_box`]) has no LayerNorms:
/// `z½ = z + MSSA(z)` with the paper's compression step, `z⁺ = ISTA(z½)`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "BlockRepr<T>", into = "BlockRepr<T>")
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: Float + serde::Serialize",
        deserialize = "T: Float + serde::Deserialize<'de>"
    ))
)]
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
        let mssa = Mssa::random(config.dim, config.heads, config.dim_head, rng)?;
        let ista = Ista::random(config.dim, config.ista_step, config.ista_lambda, rng)?;
        Self::from_parts(
            LayerNorm::new(config.dim, config.ln_eps)?,
            mssa,
            LayerNorm::new(config.dim, config.ln_eps)?,
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

    pub(crate) fn check_input(&self, dim: usize, n: usize) -> Result<()> {
        if dim != self.dim() {
            return Err(Error::ShapeMismatch {
                what: "tokens",
                expected: format!("{} features", self.dim()),
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
    /// Only the output is a fresh allocation: the temporaries (`LN₁(x)`, overwritten by `z½`
    /// and then normalized in place; the projected tokens; the head outputs; the attention
    /// scores) come from the thread's scratch cache (see `pool`).
    pub(crate) fn apply(&self, x: ArrayView2<T>, n: usize) -> Array2<T> {
        let mut y = crate::workspace::take::<T>(x.nrows(), x.ncols());
        y.assign(&x);
        if let Some(ln) = &self.ln1 {
            ln.apply_in_place(&mut y);
        }
        let (w, o) = self.mssa.attend(y.view(), n);
        drop(w);
        self.mssa.finish(o.view(), n, Some(x), &mut y);
        drop(o);
        if let Some(ln) = &self.ln2 {
            ln.apply_in_place(&mut y);
        }
        let mut out = Array2::zeros(y.dim());
        self.ista.apply_into(y.view(), out.view_mut());
        out
    }

    /// One sequence: `x` is n × dim (tokens are rows).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix("tokens", x)?;
        self.check_input(x.ncols(), x.nrows())?;
        Ok(self.apply(x.view(), x.nrows()))
    }

    /// A batch: `x` is b × n × dim.
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        let (b, n, d) = x.dim();
        let rows = check3(x)?;
        self.check_input(d, n)?;
        Ok(unflat(self.apply(rows.view(), n), b, n))
    }

    /// A batch with every intermediate.
    pub fn forward_trace(&self, x: &ArrayRef3<T>) -> Result<BlockTrace<T>> {
        let (b, n, d) = x.dim();
        let rows = check3(x)?;
        self.check_input(d, n)?;
        let [ln1, mssa, y, ln2, out] = self.apply_trace(rows.view(), n);
        Ok(BlockTrace {
            ln1: unflat(ln1, b, n),
            mssa: unflat(mssa, b, n),
            y: unflat(y, b, n),
            ln2: unflat(ln2, b, n),
            out: unflat(out, b, n),
        })
    }
}

/// Checks a b × n × d batch (non-empty, finite) and returns it flattened to rows.
pub(crate) fn check3<T: Float>(x: &ArrayRef3<T>) -> Result<CowArray<'_, T, Ix2>> {
    let (b, n, d) = x.dim();
    if b == 0 || n == 0 || d == 0 {
        return Err(Error::Empty {
            what: "token batch",
            rows: b * n,
            cols: d,
        });
    }
    let rows = flat(x);
    crate::validate::finite("token batch", &rows)?;
    Ok(rows)
}

#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "T: Float + serde::Serialize",
    deserialize = "T: Float + serde::Deserialize<'de>"
))]
struct BlockRepr<T: Float> {
    ln1: Option<LayerNorm<T>>,
    mssa: Mssa<T>,
    ln2: Option<LayerNorm<T>>,
    ista: Ista<T>,
}

#[cfg(feature = "serde")]
impl<T: Float> TryFrom<BlockRepr<T>> for CrateBlock<T> {
    type Error = Error;
    fn try_from(r: BlockRepr<T>) -> Result<Self> {
        match (r.ln1, r.ln2) {
            (Some(a), Some(b)) => CrateBlock::from_parts(a, r.mssa, b, r.ista),
            (None, None) => CrateBlock::white_box(r.mssa, r.ista),
            _ => Err(Error::InvalidParameter {
                name: "CrateBlock",
                value: "one layer norm".into(),
                reason: "a block has both layer norms or neither",
            }),
        }
    }
}

#[cfg(feature = "serde")]
impl<T: Float> From<CrateBlock<T>> for BlockRepr<T> {
    fn from(b: CrateBlock<T>) -> Self {
        BlockRepr {
            ln1: b.ln1,
            mssa: b.mssa,
            ln2: b.ln2,
            ista: b.ista,
        }
    }
}
