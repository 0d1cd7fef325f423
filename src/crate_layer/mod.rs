//! CRATE white-box transformer layers: attention as a gradient step on compression
//! ([`Mssa`]), then a sparsification step ([`Ista`]).
//!
//! Yu, Buchanan, Pai, Chu, Wu, Tong, Haeffele, Ma, *White-Box Transformers via Sparse Rate
//! Reduction*, NeurIPS 2023, arXiv 2306.01129. Tokens are rows: a sequence is n × dim, a batch
//! b × n × dim (the reference layout; the papers' Z ∈ R^{d×N} is a sequence transposed).
//!
//! Two ways to build a layer:
//!
//! * **The reference parameterisation** ([`CrateBlock::new`] with seeded initialization,
//!   [`CrateBlock::load`](crate::nn::Checkpoint::load) with the reference state_dict names): learned, untied
//!   output projection, attention scale dim_head^{-½}, LayerNorm before both steps, and
//!   `z⁺ = ISTA(LN₂(z + MSSA(LN₁(z))))` exactly as the reference code runs it.
//! * **White box** ([`Mssa::from_subspaces`], [`Ista::from_parts`],
//!   [`CrateBlock::white_box`]): the compression step of the paper from orthonormal subspace
//!   bases, a first-order gradient step on `Rc(Z | U)` ([`subspace_coding_rate_with_grad`]).
//!
//! [`CrateEncoder::forward_with_diagnostics`] reports per layer the compression and sparsity
//! curves the CRATE authors plot.
//!
//! ```
//! use mcr2::crate_layer::{CrateBlock, CrateBlockConfig, CrateClassifier, CrateConfig};
//! use mcr2::ndarray::{Array3, Array4};
//! use mcr2::rand::{SeedableRng, rngs::StdRng};
//! let mut rng = StdRng::seed_from_u64(0);
//! // one block on 16-dimensional tokens: 2 heads of dimension 8
//! let block = CrateBlock::<f32>::new(&CrateBlockConfig::new(16, 2, 8), &mut rng)?;
//! let tokens = Array3::<f32>::from_elem((2, 5, 16), 0.1); // batch × tokens × dim
//! assert_eq!(block.forward_batch(&tokens)?.dim(), (2, 5, 16));
//! // a whole classifier: 32 × 32 RGB images, patches of 8, 10 classes, dim 16, depth 2,
//! // 2 heads of 8
//! let config = CrateConfig::new(32, 8, 10, 16, 2, 2, 8);
//! let model = CrateClassifier::<f32>::new(&config, &mut rng)?;
//! let logits = model.forward(&Array4::<f32>::zeros((1, 3, 32, 32)))?;
//! assert_eq!(logits.dim(), (1, 10));
//! # Ok::<(), mcr2::Error>(())
//! ```

mod block;
mod checkpoint;
mod classifier;
mod classifier_train;
mod encoder;
mod heads;
mod ista;
mod mssa;
mod mssa_train;

pub use block::{BlockTrace, CrateBlock, CrateBlockCache, CrateBlockConfig};
pub(crate) use block::{check_projection, check_tokens};
pub use classifier::{CrateClassifier, CrateConfig, Inspection, LayerInspection, Pooling};
pub use classifier_train::CrateClassifierCache;
pub use encoder::{CrateEncoder, CrateEncoderConfig, LayerDiagnostics};
pub use ista::{Ista, IstaCache, IstaConfig};
pub use mssa::{Mssa, MssaConfig};
pub use mssa_train::MssaCache;

use ndarray::{Array2, ArrayRef2};

use crate::{Error, Float, Precision, Result};

/// The compression term of sparse rate reduction and its gradient:
///
/// `Rc(Z | U) = ½ Σ_k logdet(I + p/(nε²) (U_kᵀZ)ᵀ(U_kᵀZ))` — the coding rate of the tokens
/// projected on each subspace — with `z` n × dim (tokens as rows) and each basis dim × p.
pub fn subspace_coding_rate_with_grad<T: Float>(
    z: &ArrayRef2<T>,
    bases: &[Array2<T>],
    eps: Precision,
) -> Result<(T, Array2<T>)> {
    crate::validate::matrix("Z", z)?;
    if bases.is_empty() {
        return Err(Error::InvalidParameter {
            name: "bases",
            value: "[]".into(),
            reason: "at least one basis is required",
        });
    }
    let mut total = T::zero();
    let mut grad = Array2::<T>::zeros(z.dim());
    for u in bases {
        if u.nrows() != z.ncols() {
            return Err(Error::ShapeMismatch {
                what: "subspace basis",
                expected: format!("{} rows", z.ncols()),
                got: format!("{} rows", u.nrows()),
            });
        }
        crate::validate::matrix("subspace basis", u)?;
        let mut w = Array2::<T>::zeros((z.nrows(), u.ncols()));
        crate::linalg::gemm(T::one(), z.view(), u.view(), false, w.view_mut(), true);
        let (r, gw) = crate::coding_rate_with_grad(&w, eps)?;
        total += r;
        crate::linalg::gemm(T::one(), gw.view(), u.t(), true, grad.view_mut(), true);
    }
    Ok((total, grad))
}
