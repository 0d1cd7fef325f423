//! CRATE-α: the white-box transformer that scales (Yang, Li, Pai, Zhou, Ma, Yu, Xie,
//! *Scaling White-Box Transformers for Vision*, NeurIPS 2024, arXiv 2405.20299; code
//! UCSC-VLAA/CRATE-alpha).
//!
//! Against CRATE ([`crate::crate_layer`]), each layer's sparse coding step becomes
//! overcomplete dictionary learning ([`Odl`]: two ISTA steps from zero on a d × 4d
//! dictionary D, decoded by a second dictionary D₁) with a residual, the attention loses its
//! biases and the LayerNorms use ε = 1e-6 ([`CrateAlphaBlock`]); the classifier
//! ([`CrateAlphaClassifier`]) embeds patches with a convolution and reads the class token.
//! Every part has its backward pass ([`Trainable`](crate::nn::Trainable)) and trains with the
//! crate's optimizers.
//!
//! ```
//! use mcr2::crate_alpha::{CrateAlphaClassifier, CrateAlphaConfig};
//! use mcr2::ndarray::Array4;
//! use mcr2::rand::{SeedableRng, rngs::StdRng};
//! // the published configurations and their parameter counts
//! assert_eq!(CrateAlphaConfig::named("B/16")?.parameter_count(), 72_328_936);
//! // a small model: 16² images of 4² patches, width 16, 2 layers of 2 heads
//! let config = CrateAlphaConfig::new(16, 4, 10, 16, 2, 2, 8);
//! let model = CrateAlphaClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(0))?;
//! let images = Array4::from_shape_fn((2, 3, 16, 16), |(b, c, h, w)| ((b + c + h * w) % 5) as f64);
//! let (logits, cache) = model.forward_train(&images)?;
//! let grads = model.backward(&cache, Some(logits.view()), None)?;
//! assert_eq!(grads.len(), model.parameters().len());
//! # Ok::<(), mcr2::Error>(())
//! ```

mod block;
mod classifier;
mod classifier_train;
mod odl;

pub use block::{CrateAlphaBlock, CrateAlphaBlockCache, CrateAlphaBlockConfig};
pub use classifier::{CRATE_ALPHA_VARIANTS, CrateAlphaClassifier, CrateAlphaConfig};
pub use classifier_train::CrateAlphaClassifierCache;
pub use odl::{Odl, OdlCache, OdlConfig};
