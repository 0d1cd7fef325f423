//! The training loop: seeded mini-batches, a schedule, an observer that may stop the run,
//! and checkpoints (model and optimizer state) from which a run resumes bit for bit.

use std::ops::ControlFlow;

use ndarray::{Array2, ArrayRef4, Axis};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{AdamW, WarmupCosine, clip_grad_norm, cross_entropy, mcr2_loss};
use crate::crate_layer::CrateClassifier;
use crate::nn::{Checkpoint, TensorReader, TensorWriter};
use crate::observe::Flow;
use crate::{Error, Float, Labels, Precision, Result};

/// What the classifier is trained to minimize.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Objective {
    /// Cross-entropy on the logits, with label smoothing in [0, 1).
    CrossEntropy {
        /// The smoothing `s` (0: none).
        label_smoothing: f64,
    },
    /// The MCR² loss `−ΔR` on the class tokens after the encoder (rows scaled to unit
    /// norm); the head is not trained.
    Mcr2 {
        /// The precision ε of the rates.
        eps: Precision,
    },
}

/// The loop's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Seed of the shuffling: epoch e's order depends on (seed, e) only.
    pub seed: u64,
    /// The learning rate of every step (its `total_steps` should be epochs × batches).
    pub schedule: WarmupCosine,
    /// Clip the gradients' global norm to this (none when `None`).
    pub clip_norm: Option<f64>,
    /// The loss.
    pub objective: Objective,
}

impl TrainConfig {
    /// Steps per epoch for `samples` training images.
    pub fn steps_per_epoch(&self, samples: usize) -> usize {
        samples.div_ceil(self.batch_size.max(1))
    }

    fn check(&self) -> Result<()> {
        crate::validate::at_least_one("epochs", self.epochs)?;
        crate::validate::at_least_one("batch_size", self.batch_size)?;
        self.schedule.check()?;
        if let Some(c) = self.clip_norm {
            crate::validate::positive("clip_norm", c)?;
        }
        if let Objective::CrossEntropy { label_smoothing } = self.objective
            && !(0.0..1.0).contains(&label_smoothing)
        {
            return Err(Error::InvalidParameter {
                name: "label_smoothing",
                value: label_smoothing.to_string(),
                reason: "must be in [0, 1)",
            });
        }
        Ok(())
    }
}

/// What the observer sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainEvent {
    /// After each optimizer step.
    Step {
        /// Epoch, from 0.
        epoch: usize,
        /// Step over the whole run, from 0.
        step: usize,
        /// The batch's loss before the step.
        loss: f64,
        /// The learning rate of the step.
        lr: f64,
    },
    /// After each epoch.
    Epoch {
        /// Epoch, from 0.
        epoch: usize,
        /// Mean batch loss over the epoch.
        loss: f64,
        /// The caller's evaluation of the model (for instance test accuracy), if any.
        evaluation: Option<f64>,
    },
}

/// Where a run stands: the next epoch to run and the steps taken. Saved with the
/// checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TrainProgress {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
}

/// Trains `model` with `optimizer` on `images` (N × channels × height × width) and `labels`
/// from `progress` (default: the start) to `config.epochs`. Each epoch shuffles the images
/// with a generator seeded by (seed, epoch), takes one step per mini-batch at the
/// schedule's learning rate, then calls `evaluate` and the observer, which may stop the run
/// after any step or epoch. A non-finite loss or gradient stops the run with an error that
/// names the step. Returns where the run stands (save it with [`save_checkpoint`] to resume).
/// A run resumed from an epoch boundary continues bit for bit; one stopped inside an epoch
/// resumes at the start of that epoch's shuffle with the step count (and so the schedule)
/// where it stopped.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier<T: Float, R: Flow>(
    model: &mut CrateClassifier<T>,
    optimizer: &mut AdamW<T>,
    images: &ArrayRef4<T>,
    labels: &Labels,
    config: &TrainConfig,
    progress: TrainProgress,
    mut evaluate: impl FnMut(&CrateClassifier<T>) -> Result<Option<f64>>,
    mut observer: impl FnMut(&TrainEvent) -> R,
) -> Result<TrainProgress> {
    config.check()?;
    let n = images.dim().0;
    if labels.n_samples() != n {
        return Err(Error::ShapeMismatch {
            what: "labels",
            expected: format!("{n} samples (the images)"),
            got: format!("{}", labels.n_samples()),
        });
    }
    let ids = labels.to_vec();
    let mut state = progress;
    while state.epoch < config.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut epoch_rng(config.seed, state.epoch));
        let mut total = 0.0;
        let batches = order.chunks(config.batch_size);
        let count = batches.len();
        for batch in batches {
            let lr = config.schedule.lr_at(state.step);
            optimizer.set_lr(lr)?;
            let x = images.select(Axis(0), batch);
            let y = Labels::new(
                &batch.iter().map(|&i| ids[i]).collect::<Vec<_>>(),
                labels.n_classes(),
            )?;
            let loss =
                train_step(model, optimizer, &x, &y, config).map_err(|e| at_step(e, state.step))?;
            total += loss;
            let event = TrainEvent::Step {
                epoch: state.epoch,
                step: state.step,
                loss,
                lr,
            };
            state.step += 1;
            if observer(&event).flow() == ControlFlow::Break(()) {
                return Ok(state);
            }
        }
        let evaluation = evaluate(model)?;
        let event = TrainEvent::Epoch {
            epoch: state.epoch,
            loss: total / count as f64,
            evaluation,
        };
        state.epoch += 1;
        if observer(&event).flow() == ControlFlow::Break(()) {
            break;
        }
    }
    Ok(state)
}

/// The generator of epoch `epoch`'s shuffle.
fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// An error from training step `step`.
fn at_step(e: Error, step: usize) -> Error {
    Error::TrainingStep {
        step,
        source: Box::new(e),
    }
}

/// One step on one batch: forward, loss, backward, clipping, optimizer. Returns the loss.
fn train_step<T: Float>(
    model: &mut CrateClassifier<T>,
    optimizer: &mut AdamW<T>,
    x: &ArrayRef4<T>,
    y: &Labels,
    config: &TrainConfig,
) -> Result<f64> {
    let (logits, cache) = model.forward_train(x)?;
    let (loss, mut grads) = match config.objective {
        Objective::CrossEntropy { label_smoothing } => {
            let ce = cross_entropy(&logits, y, label_smoothing)?;
            let grads = model.backward(&cache, Some(ce.grad.view()), None)?;
            (ce.loss, grads)
        }
        Objective::Mcr2 { eps } => {
            let out = mcr2_loss(&cache.class_tokens(), y, eps)?;
            let n = cache.tokens_per_image();
            let mut d = Array2::<T>::zeros(cache.features().dim());
            for (i, row) in out.grad.rows().into_iter().enumerate() {
                d.row_mut(i * n).assign(&row);
            }
            (out.loss, model.backward(&cache, None, Some(d.view()))?)
        }
    };
    let loss = loss.as_f64();
    if !loss.is_finite() {
        return Err(Error::InvalidWeights {
            name: "loss".into(),
            reason: format!("not finite ({loss})"),
        });
    }
    if let Some(c) = config.clip_norm {
        clip_grad_norm(&mut grads, c)?;
    }
    optimizer.step(model, &grads)?;
    Ok(loss)
}

/// A checkpoint of a run: the model (its configuration in the metadata, tensors under
/// `model.` by the reference names), the optimizer state (under `optimizer.`) and the
/// progress. [`load_checkpoint`] reads it back.
pub fn save_checkpoint<T: Float>(
    model: &CrateClassifier<T>,
    optimizer: &AdamW<T>,
    progress: TrainProgress,
) -> Result<Vec<u8>> {
    let mut w = TensorWriter::new();
    model.save(&mut w.scoped("model."))?;
    model.config().write_metadata(&mut w);
    optimizer.save(&mut w.scoped("optimizer."));
    w.set_metadata("train.epoch", progress.epoch);
    w.set_metadata("train.step", progress.step);
    w.to_bytes()
}

/// Reads a checkpoint written by [`save_checkpoint`]: the model, the optimizer and the
/// progress, so that [`train_classifier`] continues bit for bit.
pub fn load_checkpoint<T: Float>(
    bytes: &[u8],
) -> Result<(CrateClassifier<T>, AdamW<T>, TrainProgress)> {
    let r = TensorReader::new(bytes)?;
    let config = crate::crate_layer::CrateConfig::from_metadata(&r)?;
    let model = CrateClassifier::load(&r.scoped("model."), &config)?;
    let optimizer = AdamW::load(&r.scoped("optimizer."), &model.parameters())?;
    let progress = TrainProgress {
        epoch: r.metadata_value("train.epoch")?,
        step: r.metadata_value("train.step")?,
    };
    Ok((model, optimizer, progress))
}
