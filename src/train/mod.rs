//! Training the white-box networks: losses with their gradients ([`cross_entropy`],
//! [`mcr2_loss`]) and optimizers with PyTorch's semantics ([`AdamW`]).
//!
//! Every layer's backward sits beside its forward ([`crate::nn::Trainable`]); the whole
//! CRATE classifier adds [`CrateClassifier::forward_train`](crate::crate_layer::CrateClassifier::forward_train)
//! and [`backward`](crate::crate_layer::CrateClassifier::backward).
//!
//! ```
//! use mcr2::crate_layer::{CrateClassifier, CrateConfig};
//! use mcr2::ndarray::Array4;
//! use mcr2::rand::{SeedableRng, rngs::StdRng};
//! use mcr2::train::{AdamW, AdamWConfig, cross_entropy};
//! use mcr2::Labels;
//! let config = CrateConfig::new(8, 4, 3, 8, 1, 2, 4);
//! let mut model = CrateClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(0))?;
//! let images = Array4::from_shape_fn((4, 3, 8, 8), |(b, c, y, x)| ((b + c + y * x) % 5) as f64 / 5.0);
//! let labels = Labels::new(&[0, 1, 2, 0], 3)?;
//! let mut optimizer = AdamW::new(&model.parameters(), AdamWConfig::new(1e-2))?;
//! let mut losses = Vec::new();
//! for _ in 0..20 {
//!     let (logits, cache) = model.forward_train(&images)?;
//!     let ce = cross_entropy(&logits, &labels, 0.0)?;
//!     losses.push(ce.loss);
//!     let grads = model.backward(&cache, Some(ce.grad.view()), None)?;
//!     optimizer.step(&mut model, &grads)?;
//! }
//! assert!(losses[19] < 0.5 * losses[0]);
//! # Ok::<(), mcr2::Error>(())
//! ```

mod loss;
mod optim;
mod schedule;
mod trainer;

pub use loss::{LossValue, NORMALIZE_EPS, cross_entropy, mcr2_loss};
pub use optim::{AdamW, AdamWConfig, Learnable};
pub use schedule::{Sgd, SgdConfig, WarmupCosine, clip_grad_norm};
pub use trainer::{
    Objective, TrainConfig, TrainEvent, TrainProgress, load_checkpoint, save_checkpoint,
    train_classifier,
};
