//! # mcr2: coding rate and maximal coding rate reduction
//!
//! The compression view of representation learning (Yi Ma and colleagues): the lossy
//! **coding rate** of a feature matrix, the **rate reduction** ΔR that MCR² maximizes, and
//! their gradients, exact and fast, for `f32` and `f64`, on [`ndarray`].
//!
//! ## Layout convention
//!
//! **Rows are samples.** A feature matrix `z` is n × d: n samples of dimension d. The papers
//! write Z ∈ R^{d×n} with samples as columns; their Z is our `zᵀ`, so their `Z Zᵀ` (d × d) is
//! our `zᵀ z`. Every formula in these docs is written in the papers' notation where it helps to
//! check the code against them, with the mapping stated.
//!
//! ## The math
//!
//! With precision ε (see [`Precision`]: the reference code's `eps` argument is ε²) and a
//! membership Π = {Π_j} of the n samples in k classes ([`Membership`]):
//!
//! * coding rate: `R(Z) = ½ logdet(I + d/(nε²) Z Zᵀ)` — [`coding_rate`]
//! * class-conditional rate:
//!   `Rc(Z | Π) = Σ_j tr(Π_j)/(2n) · logdet(I + d/(tr(Π_j) ε²) Z Π_j Zᵀ)` — [`class_coding_rate`]
//! * rate reduction: `ΔR(Z | Π) = R(Z) − Rc(Z | Π)` — [`rate_reduction`]
//! * gradients: `∂R/∂Z = a (I + a Z Zᵀ)⁻¹ Z`, `a = d/(nε²)`, and alike per class —
//!   [`coding_rate_with_grad`], [`class_coding_rate_with_grad`], [`rate_reduction_with_grad`]
//!
//! (Yu, Chan, You, Song, Ma, *Learning diverse and discriminative representations via the
//! principle of maximal coding rate reduction*, NeurIPS 2020, arXiv 2006.08558, Eq. 2–8.)
//!
//! Every log-det is computed on the smaller side (d × d or n_j × n_j, by Sylvester's identity)
//! by a Cholesky factorization that also serves the gradient (or, where Cholesky would lose
//! accuracy, from the singular values of the rows: see the reliability contract). With hard labels the per-class
//! Gram matrices are formed once and summed into the total one. The papers' dense diagonal
//! n × n matrices Π_j are never built.
//!
//! ```
//! use mcr2::{rate_reduction, Membership, Precision};
//! use ndarray::array;
//! let z = array![[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
//! let labels = Membership::hard(&[0, 0, 1, 1], 2)?;
//! let rr = rate_reduction(&z, &labels, Precision::from_eps_sq(0.5)?)?;
//! // published closed form: R = ln 5, Rc = ¼ ln 112
//! assert!((rr.r - 5f64.ln()).abs() < 1e-12 && (rr.rc - 112f64.ln() / 4.0).abs() < 1e-12);
//! # Ok::<(), mcr2::Error>(())
//! ```
//!
//! ## Modules
//!
//! ```text
//! rate/         the rates (mod), engine (R and each class term factored: a, a_j, t_j/(2n)),
//!               factor (every logdet(I + a·Gram): Cholesky or SVD), gradient (∂R/∂Z,
//!               ∂Rc/∂Z), membership_grad (∂Rc/∂Π), gram, stats (streaming), reference (loss),
//!               views (EMP-SSL, multi-view MCR²), simdino, closed_loop (CTRL), convention
//!               (presets), numerics (f64 accumulation, eigenvalue fallback), measure (CRATE's
//!               per-head coding rate)
//! nn/           Linear, LayerNorm, Mlp, GELU, the Layer and Checkpoint traits, tensor files,
//!               patches (images to patch rows, class token and position embedding)
//! crate_layer/  mssa, ista, block, encoder, classifier (the whole CRATE model)
//! crate_alpha/  odl (overcomplete ISTA), block, classifier (CRATE-α)
//! crate_mae/    masking (patchify, masks, sine-cosine table), decoder, model (CRATE-MAE)
//! tost/         tssa, causal, variational (the book form), block (block and encoder)
//! redunet       ReduNet, layers in closed form
//! coding/       coding lengths (mod), alc, micl
//! subspace      subspace fits, principal angles, the nearest-subspace classifier
//! fit           MCR² representation learning by gradient ascent
//! train/        losses (cross-entropy, MCR²), optimizers (AdamW, SGD), schedule and
//!               clipping, the training loop and its checkpoints
//! metrics       accuracy, segmentation error, top-k, per-class singular values/angles/means
//! data          mixtures of subspaces, the ReduNet toys, the built-in digits
//! (private)     float (sealed Float), kernels (exp, softmax, GELU), linalg (faer or LAPACK),
//!               workspace (scratch buffers), validate (input checks, memory budget)
//! ```
//!
//! * [`rate`]: the rates, their gradients, streaming statistics ([`RateStats`]), the
//!   reference training loss ([`ReferenceLoss`]) and the self-supervised rate losses
//!   ([`rate::TotalCodingRate`], [`rate::multi_view_rate_reduction`], [`rate::SimDinoLoss`],
//!   [`rate::closed_loop_rate_with_grad`]), each reference's conventions
//!   ([`rate::Convention`]) and f64 accumulation ([`Accumulate`]).
//! * [`nn`]: the layer vocabulary every network shares: a config, `new(&config, &mut rng)`,
//!   `from_parts`, `load` / `save` under the reference `state_dict` names
//!   ([`nn::Checkpoint`]), and [`nn::Layer`] with `forward`, `forward_batch` and the
//!   parameters listed by name.
//! * [`crate_layer`]: CRATE layers — multi-head subspace self-attention as a gradient step on
//!   compression, then an ISTA sparsification step — built from reference weights or, white
//!   box, from subspace bases and a dictionary; and the whole CRATE image classifier
//!   ([`crate_layer::CrateClassifier`]) with reference checkpoints.
//! * [`crate_alpha`]: CRATE-α — the overcomplete dictionary step ([`crate_alpha::Odl`]), its
//!   layer and classifier with the reference checkpoints, trainable.
//! * [`crate_mae`]: CRATE-MAE — the white-box masked autoencoder: masking, the CRATE encoder
//!   and decoder layers, the reconstruction loss, trainable.
//! * [`tost`]: token-statistics self-attention (ToST), linear in the number of tokens; its
//!   causal variant, its variational book form, and ToST blocks.
//! * [`redunet`]: ReduNet, layers computed in closed form from the training data.
//! * [`coding`]: lossy coding lengths, segmentation by agglomerative lossy compression (ALC)
//!   and classification by minimum incremental coding length (MICL).
//! * [`subspace`]: per-class subspace fits, principal angles, the nearest-subspace
//!   classifier.
//! * [`fit`]: MCR² representation learning by gradient ascent (features on the sphere, the
//!   regularized problem with closed-form optima, a learned linear map), with observers.
//! * [`train`]: training the networks: every layer's backward beside its forward
//!   ([`nn::Trainable`]), the cross-entropy and MCR² losses, AdamW and SGD with PyTorch's
//!   semantics, a warm-up + cosine schedule, gradient clipping, and a training loop with
//!   checkpoints that resume bit for bit.
//! * [`metrics`] and [`data`]: measures of predictions and representations; synthetic data
//!   and the built-in digits.
//!
//! ## Reliability contract
//!
//! Every public function validates its input and returns an [`Error`] for wrong shapes,
//! non-finite values ([`Error::NonFinite`]), invalid parameters (each bound is documented on
//! its configuration, e.g. [`crate_layer::IstaConfig::MAX_STEP`]) and malformed weight files.
//! Arrays whose size overflows or exceeds the memory budget ([`set_memory_budget`], default
//! [`DEFAULT_MEMORY_BUDGET`]) are refused with [`Error::TooLarge`] before allocating where the
//! size is known from the arguments. Forward passes of the networks return finite outputs or
//! [`Error::NonFinite`]. Scratch buffers, and the buffers of training caches once a step
//! drops them, are kept per thread for the next pass (at most 1 GiB per thread and float
//! type) and can be released with [`release_workspace`].
//!
//! Quadratic or worse work is bounded: ALC refuses more than
//! [`coding::ALC_MAX_SAMPLES`] samples, and the matching of
//! [`metrics::segmentation_error`] more than [`metrics::MAX_MATCHING_WORK`] steps.
//!
//! Log-determinants `logdet(I + a·G)` (every rate) are accurate to about 10⁻¹² relative in
//! f64 and 10⁻⁶ in f32 wherever they are returned: Cholesky of the Gram matrix where its
//! estimated error allows, otherwise the singular values of the rows themselves (in f64),
//! which stay accurate up to a scale `a·σ_max²` of about `10⁻⁷ ln(det)/(dim·u²)` (≈ 10²⁶ for
//! a log-det near 30); beyond it the answer is [`Error::Scale`], never a drifting value.
//! Identical rows of norm s, for example, match `½ ln(1 + d s²/ε²)` to 10⁻⁶ for s up to
//! 10¹² in f64 and 10⁶ in f32 (test `identical_rows_of_large_norm_match_the_closed_form`).
//! Gradients are backward stable (exact for data within rounding of the input); their
//! relative accuracy is about `u·a·σ_max²`, so at extreme scales they are as ill-conditioned
//! as the problem. [`RateStats`] keeps only Gram matrices and answers [`Error::Scale`] where
//! their log-det could be off by more than 100 times that tolerance.

//! ## Features
//!
//! * `parallel`: multi-threaded kernels on the current rayon pool (off by default; choose the
//!   thread count with `rayon::ThreadPoolBuilder`). A large forward pass of a network or a
//!   rate evaluation called from outside the pool runs as a whole on one of its threads,
//!   whose steps the other threads share; its results are the same bits on any thread count.
//! * `serde`: (de)serialization of [`Precision`], [`RateReduction`], [`RateStats`], [`ReferenceLoss`].
//! * `lapack`: LAPACK through `ndarray-linalg` instead of the default pure-Rust faer backend;
//!   pick the library in the final binary with `openblas-system` or `netlib-static`.

// One measured exception, `linalg::clear_upper_simd_state` (a `vzeroupper`), is allowed
// locally; everything else is safe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod coding;
pub mod crate_alpha;
pub mod crate_layer;
pub mod crate_mae;
pub mod data;
mod error;
pub mod fit;
mod float;
mod kernels;
mod labels;
pub(crate) mod linalg;
pub mod metrics;
pub mod nn;
pub mod observe;
mod precision;
pub mod rate;
pub mod redunet;
mod rows;
pub mod subspace;
pub mod tost;
pub mod train;
mod validate;
mod workspace;

/// The ndarray (0.17) this crate's API takes and returns: `mcr2::ndarray::Array2`, with no
/// version of your own to keep in step.
pub use ndarray;
/// The rand (0.9) whose generators the constructors take: `mcr2::rand::rngs::StdRng`.
pub use rand;

pub use error::{Error, Result};
pub use float::Float;
pub use labels::{Labels, Membership};
pub use precision::Precision;
pub use rate::{
    Accumulate, FactorReport, FactorRoute, RateReduction, RateReport, RateStats, ReferenceLoss,
    ReferenceLossValue, class_coding_rate, class_coding_rate_grad_membership,
    class_coding_rate_with_grad, coding_rate, coding_rate_with_grad, rate_reduction,
    rate_reduction_accumulated, rate_reduction_with_grad, rate_reduction_with_grad_into,
};
pub use validate::{DEFAULT_MEMORY_BUDGET, memory_budget, set_memory_budget};
pub use workspace::release_workspace;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
