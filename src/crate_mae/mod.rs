//! CRATE-MAE: the white-box masked autoencoder (Pai, Buchanan, Wu, Yu, Ma, *Masked Completion
//! via Structured Diffusion with White-Box Transformers*, ICLR 2024, arXiv 2404.02446; code
//! `model/crate_ae/` of Ma-Lab-Berkeley/CRATE).
//!
//! The encoder is a stack of CRATE layers ([`CrateBlock`](crate::crate_layer::CrateBlock),
//! ISTA λ = 0.5) on the visible patches; each decoder layer ([`CrateDecoderBlock`]) inverts a
//! layer's compression: a linear map, then the attention subtracted. [`CrateMae`] masks the
//! patches at random ([`Masking`]), encodes, fills the removed patches with the mask token,
//! decodes with fixed sine-cosine position embeddings ([`sincos_position_embedding`]) and
//! scores the prediction of the removed patches; its backward trains every part.
//!
//! ```
//! use mcr2::crate_mae::{CrateMae, CrateMaeConfig, Masking};
//! use mcr2::ndarray::Array4;
//! use mcr2::rand::{SeedableRng, rngs::StdRng};
//! let mut rng = StdRng::seed_from_u64(0);
//! // 8 × 8 images of 2 × 2 patches, one channel, widths 16, one layer each side
//! let mut config = CrateMaeConfig::new(8, 2, 16, 1, 2, 16, 1, 2);
//! config.channels = 1;
//! let model = CrateMae::<f64>::new(&config, &mut rng)?;
//! let images = Array4::from_shape_fn((2, 1, 8, 8), |(b, _, y, x)| ((b + y * x) % 5) as f64);
//! let masking = Masking::random(2, config.num_patches(), 0.5, &mut rng)?;
//! let (out, cache) = model.forward_train(&images, &masking)?;
//! let grads = model.backward(&cache)?;
//! assert_eq!(out.pred.dim(), (2, 16, 4));
//! assert_eq!(grads.len(), model.parameters().len());
//! # Ok::<(), mcr2::Error>(())
//! ```

mod decoder;
mod masking;
mod model;
mod model_train;

pub use decoder::{CrateDecoderBlock, CrateDecoderBlockCache};
pub use masking::{Masking, patchify, sincos_position_embedding, unpatchify};
pub use model::{CrateMae, CrateMaeConfig, MAE_ENCODER_LAMBDA};
pub use model_train::{CrateMaeCache, MaeOutput};
