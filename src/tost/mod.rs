//! ToST: token-statistics self-attention (TSSA), attention whose cost grows linearly with the
//! number of tokens, derived from a variational form of the compression term of the rate
//! reduction.
//!
//! Wu, Ding, Lu, Pai, Zhang, Wang, Yu, Ma, Haeffele, *Token Statistics Transformer:
//! Linear-Time Attention via Variational Rate Reduction*, 2024 (arXiv 2412.17810); the
//! reference `AttentionTSSA` of `RobinWu218/ToST`.
//!
//! Tokens are rows (a sequence is n × dim). Three forms:
//!
//! * [`Tssa`], the reference parameterisation: `W = X Qᵀ + b` split into heads of p = dim/heads
//!   coordinates; every coordinate column normalized over the tokens; the membership
//!   `Π_ik = softmax_k(temp_k Σ_{c∈k} Ŵ_ic²)` over heads; per head and coordinate the
//!   Π-weighted second moment `m_c = Σ_i Π_ik W_ic² / (Σ_i Π_ik + 1e-8)`; the update
//!   `O_ic = −Π_ik W_ic / (1 + m_c)`; the output projection. No n × n matrix: O(n·dim) beyond
//!   the two projections.
//! * [`CausalTssa`], the language-model variant: the same with running sums over the tokens
//!   seen so far, so that a token's output depends only on it and earlier tokens.
//! * [`VariationalCompression`], the book form from subspace bases: the variational
//!   objective `R^var`, its gradient, the membership and the TSSA step `Z − τ ∇R^var`.

//!
//! Blocks: [`ToStBlock`] (LayerScale, exact-erf GELU MLP) and [`ToStEncoder`].
//!
//! ```
//! use mcr2::tost::{Tssa, TssaConfig};
//! use rand::{SeedableRng, rngs::StdRng};
//! let tssa = Tssa::<f64>::new(&TssaConfig::new(8, 2), &mut StdRng::seed_from_u64(0))?;
//! let x = ndarray::Array2::from_shape_fn((5, 8), |(i, j)| (i + j) as f64 / 10.0);
//! let y = tssa.forward(&x)?;
//! assert_eq!(y.dim(), (5, 8));
//! // membership of each token over the heads: rows sum to 1
//! let pi = tssa.membership(&x)?;
//! assert!(pi.rows().into_iter().all(|r| (r.sum() - 1.0).abs() < 1e-12));
//! # Ok::<(), mcr2::Error>(())
//! ```

mod block;
mod block_train;
mod causal;
mod causal_train;
mod tssa;
mod tssa_train;
mod variational;

use ndarray::{Array2, Array3, ArrayRef3, ArrayView2, Axis};

pub use block::{ToStBlock, ToStBlockConfig, ToStEncoder, ToStEncoderConfig};
pub use block_train::ToStBlockCache;
pub use causal::{CausalTssa, CausalTssaConfig};
pub use causal_train::CausalTssaCache;
pub use tssa::{Tssa, TssaConfig};
pub use tssa_train::TssaCache;
pub use variational::VariationalCompression;

use crate::{Error, Float, Result};

/// Floor of the column norms in TSSA's normalization.
const NORM_FLOOR: f64 = 1e-12;
/// Added to the head masses in TSSA's second moments.
const PI_FLOOR: f64 = 1e-8;

/// Errors unless dim, heads ≥ 1 and heads divides dim; returns the head width.
fn check_heads(dim: usize, heads: usize) -> Result<usize> {
    if dim == 0 || heads == 0 || dim % heads != 0 {
        return Err(Error::InvalidParameter {
            name: "heads",
            value: format!("{heads} heads for dim {dim}"),
            reason: "dim and heads must be ≥ 1 and heads must divide dim",
        });
    }
    crate::validate::elements(&[dim, dim])?;
    Ok(dim / heads)
}

/// Runs `f` on every sequence of a batch (b × n × dim → b × n × dim), in parallel over the
/// sequences with the `parallel` feature.
fn per_sequence<T: Float>(
    x: &ArrayRef3<T>,
    f: impl Fn(ArrayView2<T>) -> Array2<T> + Sync,
) -> Array3<T> {
    let (b, n, _) = x.dim();
    let run = |s: usize| f(x.index_axis(Axis(0), s));
    #[cfg(feature = "parallel")]
    let outs: Vec<Array2<T>> = if b > 1 && crate::rows::threads() > 1 {
        use rayon::prelude::*;
        (0..b).into_par_iter().map(run).collect()
    } else {
        (0..b).map(run).collect()
    };
    #[cfg(not(feature = "parallel"))]
    let outs: Vec<Array2<T>> = (0..b).map(run).collect();
    let d = outs[0].ncols();
    let mut y = Array3::<T>::zeros((b, n, d));
    for (s, o) in outs.into_iter().enumerate() {
        y.index_axis_mut(Axis(0), s).assign(&o);
    }
    y
}

#[cfg(test)]
mod tests {
    use crate::kernels::gelu;

    #[test]
    fn gelu_matches_known_values() {
        // Φ(x) from erf values: erf(1/√2) = 0.682689492137086, erf(√2) = 0.954499736103642
        for (x, want) in [
            (0.0f64, 0.0f64),
            (1.0, 0.5 * (1.0 + 0.682_689_492_137_086)),
            (-1.0, -0.5 * (1.0 - 0.682_689_492_137_086)),
            (2.0, 1.0 + 0.954_499_736_103_642),
        ] {
            assert!((gelu(x) - want).abs() < 1e-14, "{x}");
        }
    }
}
