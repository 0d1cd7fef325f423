//! Training a CRATE classifier from Python: the crate's loop (`mcr2::train`) with seeded
//! mini-batches, AdamW, a linear warm-up then cosine schedule, optional clipping, and the
//! cross-entropy or the MCR² loss.

use std::ops::ControlFlow;

use mcr2::crate_layer::CrateClassifier as Model;
use mcr2::ndarray::{Array2, ArrayView4, s};
use mcr2::subspace::{NearestSubspace, SubspaceConfig};
use mcr2::train::{self, AdamW, AdamWConfig, Objective, TrainConfig, TrainEvent, WarmupCosine};
use mcr2::{Float, Labels};
use numpy::Element;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{OrPy, Typed, labels as to_labels, precision, typed4};
use crate::crate_model::CrateClassifier;

/// Images per forward pass when the test accuracy is measured.
const EVAL_BATCH: usize = 256;

/// One epoch's record: its index, mean batch loss and test accuracy (when test images were
/// given).
struct EpochRecord {
    epoch: usize,
    loss: f64,
    test_accuracy: Option<f64>,
}

/// The loop's settings from the keyword arguments.
struct Settings {
    config: TrainConfig,
    adamw: AdamWConfig,
    reference_grouping: bool,
    /// Rank of the class subspaces of the MCR² objective's test accuracy.
    subspace_rank: usize,
}

/// Trains a copy of `model` on `images` (N × channels × height × width, the model's dtype)
/// and `labels` (N integers in 0..num_classes) and returns `(trained, history)`: the
/// trained copy (`model` itself is unchanged) and one dict per epoch with `epoch`, `loss`
/// (mean batch loss) and `test_accuracy` (on `test_images`/`test_labels`, else `None`).
///
/// AdamW (PyTorch's semantics; `weight_decay` decoupled, none on biases, norms and
/// embeddings when `reference_grouping`), the learning rate rising linearly over
/// `warmup_steps` to `lr`, then a cosine to `min_lr` at the last step; the gradients' global
/// norm clipped to `clip_norm` when given. `objective="cross_entropy"` (with
/// `label_smoothing`) trains the whole model on the logits; `objective="mcr2"` trains the
/// encoder with −ΔR of the class tokens scaled to unit norm (exactly one of `eps`, `eps_sq`);
/// its head is not trained, so its test accuracy is that of the nearest class subspace (rank
/// `subspace_rank`, not centered) fitted each epoch to the training images' features
/// ([`unit_class_tokens`]).
/// Epoch e shuffles with a generator seeded by (`seed`, e): a run is reproducible.
/// `callback(record)` is called after every epoch with its dict; returning `True` stops.
/// The GIL is released while the crate trains.
#[pyfunction]
#[pyo3(signature = (
    model, images, labels, *, epochs, batch_size = 32, lr = 1e-3, min_lr = 0.0,
    warmup_steps = 0, weight_decay = 0.01, clip_norm = None, objective = "cross_entropy",
    label_smoothing = 0.0, eps = None, eps_sq = None, reference_grouping = true, seed = 0,
    test_images = None, test_labels = None, callback = None, subspace_rank = 12
))]
#[allow(clippy::too_many_arguments)]
pub fn train_classifier<'py>(
    py: Python<'py>,
    model: &CrateClassifier,
    images: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    min_lr: f64,
    warmup_steps: usize,
    weight_decay: f64,
    clip_norm: Option<f64>,
    objective: &str,
    label_smoothing: f64,
    eps: Option<f64>,
    eps_sq: Option<f64>,
    reference_grouping: bool,
    seed: u64,
    test_images: Option<&Bound<'py, PyAny>>,
    test_labels: Option<&Bound<'py, PyAny>>,
    callback: Option<Py<PyAny>>,
    subspace_rank: usize,
) -> PyResult<(CrateClassifier, Vec<Bound<'py, PyDict>>)> {
    let objective = match objective {
        "cross_entropy" => {
            if eps.is_some() || eps_sq.is_some() {
                return Err(PyValueError::new_err(
                    "eps= and eps_sq= go with objective=\"mcr2\"",
                ));
            }
            Objective::CrossEntropy { label_smoothing }
        }
        "mcr2" => {
            if label_smoothing != 0.0 {
                return Err(PyValueError::new_err(
                    "label_smoothing= goes with objective=\"cross_entropy\"",
                ));
            }
            Objective::Mcr2 {
                eps: precision(eps, eps_sq)?,
            }
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "objective: expected \"cross_entropy\" or \"mcr2\", got {other:?}"
            )));
        }
    };
    let settings = Settings {
        config: TrainConfig {
            epochs,
            batch_size,
            seed,
            // total_steps is set from the number of images
            schedule: WarmupCosine {
                lr,
                min_lr,
                warmup_steps,
                total_steps: warmup_steps,
            },
            clip_norm,
            objective,
        },
        adamw: AdamWConfig {
            weight_decay,
            ..AdamWConfig::new(lr)
        },
        reference_grouping,
        subspace_rank,
    };
    let test = match (test_images, test_labels) {
        (Some(i), Some(l)) => Some((i, l)),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "give both test_images= and test_labels=, or neither",
            ));
        }
    };
    let (inner, history) = match &model.inner {
        Typed::F32(m) => {
            let (m, h) = run(py, m, images, labels, test, settings, callback)?;
            (Typed::F32(m), h)
        }
        Typed::F64(m) => {
            let (m, h) = run(py, m, images, labels, test, settings, callback)?;
            (Typed::F64(m), h)
        }
    };
    let history = history
        .iter()
        .map(|r| record(py, r))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((CrateClassifier { inner }, history))
}

/// An epoch's record as a dict.
fn record<'py>(py: Python<'py>, r: &EpochRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("epoch", r.epoch)?;
    d.set_item("loss", r.loss)?;
    d.set_item("test_accuracy", r.test_accuracy)?;
    Ok(d)
}

/// The loop on a copy of `model`, the GIL released; the callback takes it back to run.
fn run<T: Float + Element>(
    py: Python<'_>,
    model: &Model<T>,
    images: &Bound<'_, PyAny>,
    labels_arg: &Bound<'_, PyAny>,
    test: Option<(&Bound<'_, PyAny>, &Bound<'_, PyAny>)>,
    mut settings: Settings,
    callback: Option<Py<PyAny>>,
) -> PyResult<(Model<T>, Vec<EpochRecord>)> {
    let k = model.config().num_classes;
    let x = typed4::<T>(images, "images")?;
    let y = to_labels(labels_arg, k)?;
    let test = match test {
        Some((i, l)) => Some((typed4::<T>(i, "test_images")?, to_labels(l, k)?)),
        None => None,
    };
    let x = x.as_array();
    let test = test.as_ref().map(|(i, l)| (i.as_array(), l));
    let config = &mut settings.config;
    config.schedule.total_steps = config
        .epochs
        .saturating_mul(config.steps_per_epoch(x.dim().0));
    if config.schedule.warmup_steps > config.schedule.total_steps {
        return Err(PyValueError::new_err(format!(
            "warmup_steps: {} is more than the run's {} steps (epochs × batches per epoch)",
            config.schedule.warmup_steps, config.schedule.total_steps
        )));
    }
    let mut trained = model.clone();
    let mut optimizer = AdamW::new(&trained.parameters(), settings.adamw).py()?;
    if settings.reference_grouping {
        optimizer = optimizer.with_reference_grouping();
    }
    let mut history = Vec::new();
    let mut failure: Option<PyErr> = None;
    let result = py.detach(|| {
        train::train_classifier(
            &mut trained,
            &mut optimizer,
            &x,
            &y,
            &settings.config,
            train::TrainProgress::default(),
            |m| match (&test, settings.config.objective) {
                (Some((images, labels)), Objective::CrossEntropy { .. }) => {
                    accuracy(m, images.view(), labels).map(Some)
                }
                (Some((images, labels)), Objective::Mcr2 { .. }) => {
                    let subspaces = NearestSubspace::fit(
                        &unit_class_tokens(m, x.view())?,
                        &y,
                        &SubspaceConfig::new(settings.subspace_rank),
                    )?;
                    subspaces
                        .accuracy(&unit_class_tokens(m, images.view())?, labels)
                        .map(Some)
                }
                (None, _) => Ok(None),
            },
            |event: &TrainEvent| {
                let &TrainEvent::Epoch {
                    epoch,
                    loss,
                    evaluation,
                } = event
                else {
                    return ControlFlow::Continue(());
                };
                history.push(EpochRecord {
                    epoch,
                    loss,
                    test_accuracy: evaluation,
                });
                let Some(callback) = &callback else {
                    return ControlFlow::Continue(());
                };
                let last = history.last().expect("just pushed");
                let stop = Python::attach(|py| -> PyResult<bool> {
                    callback
                        .call1(py, (record(py, last)?,))?
                        .bind(py)
                        .is_truthy()
                });
                match stop {
                    Ok(false) => ControlFlow::Continue(()),
                    Ok(true) => ControlFlow::Break(()),
                    Err(e) => {
                        failure = Some(e);
                        ControlFlow::Break(())
                    }
                }
            },
        )
    });
    if let Some(e) = failure {
        return Err(e);
    }
    result.py()?;
    Ok((trained, history))
}

/// The fraction of `images` whose largest logit is at their label (the model's `top_k` with
/// k = 1, 256 images at a time).
fn accuracy<T: Float>(
    model: &Model<T>,
    images: ArrayView4<'_, T>,
    labels: &Labels,
) -> mcr2::Result<f64> {
    let n = images.dim().0;
    let mut predicted = Vec::with_capacity(n);
    for start in (0..n).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(n);
        let top = model.top_k(&images.slice(s![start..end, .., .., ..]), 1)?;
        predicted.extend(top.iter().map(|best| best[0].0));
    }
    mcr2::metrics::accuracy(&predicted, labels)
}

/// The class tokens after the encoder (N × dim), each scaled to unit norm as the MCR² loss
/// sees them, computed 256 images at a time.
pub(crate) fn unit_class_tokens<T: Float>(
    model: &Model<T>,
    images: ArrayView4<'_, T>,
) -> mcr2::Result<Array2<T>> {
    let n = images.dim().0;
    let mut z = Array2::<T>::zeros((n, model.config().dim()));
    for start in (0..n).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(n);
        let (_, cache) = model.forward_train(&images.slice(s![start..end, .., .., ..]))?;
        z.slice_mut(s![start..end, ..])
            .assign(&cache.class_tokens());
    }
    let floor = T::from_f64(train::NORMALIZE_EPS);
    for mut row in z.rows_mut() {
        let norm = row.dot(&row).sqrt().max(floor);
        row.mapv_inplace(|v| v / norm);
    }
    Ok(z)
}
