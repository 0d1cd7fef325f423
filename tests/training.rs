//! The whole CRATE classifier trained against PyTorch (the training vectors): the gradient of
//! every parameter for a cross-entropy and an MCR² loss (f64, relative 1e-10), and the
//! parameters after two AdamW steps (1e-12).

mod common;

use common::{Tensors, data_dir};
use mcr2::Labels;
use mcr2::Precision;
use mcr2::crate_layer::{CrateClassifier, CrateConfig};
use mcr2::ndarray::{Array2, ArrayD, Ix4};
use mcr2::nn::Checkpoint;
use mcr2::train::{AdamW, AdamWConfig, cross_entropy, mcr2_loss};
use serde_json::Value;

/// `max |a − b| / max |b|` (absolute where b is all zeros).
fn relative(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    if scale == 0.0 { diff } else { diff / scale }
}

struct Case {
    name: String,
    meta: Value,
    t: Tensors,
    model: CrateClassifier<f64>,
    images: ndarray::Array4<f64>,
    labels: Labels,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(data_dir().join("train_manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let u = |k: &str| c[k].as_u64().unwrap() as usize;
            let config = CrateConfig::new(
                u("image_size"),
                u("patch_size"),
                u("num_classes"),
                u("dim"),
                u("depth"),
                u("heads"),
                u("dim_head"),
            );
            let file = c["file"].as_str().unwrap();
            let bytes = std::fs::read(data_dir().join(file)).unwrap();
            let model =
                CrateClassifier::<f64>::from_safetensors(&bytes, &config, "param.").unwrap();
            let t = Tensors::open(file);
            let images = t.f64("img").into_dimensionality::<Ix4>().unwrap();
            let ids: Vec<usize> = t.i64("labels").iter().map(|&v| v as usize).collect();
            let labels = Labels::new(&ids, u("num_classes")).unwrap();
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                meta: c.clone(),
                t,
                model,
                images,
                labels,
            }
        })
        .collect()
}

#[test]
fn cross_entropy_gradients_match_autograd() {
    for c in cases() {
        let (logits, cache) = c.model.forward_train(&c.images).unwrap();
        let e = relative(&logits.clone().into_dyn(), &c.t.f64("logits"));
        assert!(e < 1e-10, "{}: logits {e:e}", c.name);
        let plain = c.model.forward(&c.images).unwrap().into_dyn();
        assert!(
            relative(&logits.clone().into_dyn(), &plain) < 1e-13,
            "{}: forwards differ",
            c.name
        );
        let ce = cross_entropy(&logits, &c.labels, 0.0).unwrap();
        let want = c.meta["ce"].as_f64().unwrap();
        assert!(
            (ce.loss - want).abs() <= 1e-12 * want,
            "{}: ce {} vs {want}",
            c.name,
            ce.loss
        );
        let smoothed = cross_entropy(&logits, &c.labels, 0.1).unwrap().loss;
        let want = c.meta["ce_label_smoothing_0.1"].as_f64().unwrap();
        assert!(
            (smoothed - want).abs() <= 1e-12 * want,
            "{}: smoothed ce",
            c.name
        );

        let grads = c
            .model
            .backward(&cache, Some(ce.grad.view()), None)
            .unwrap();
        let mut worst = 0.0f64;
        for ((name, _), g) in c.model.parameters().iter().zip(&grads) {
            let e = relative(g, &c.t.f64(&format!("grad_ce.{name}")));
            assert!(e < 1e-10, "{}: grad_ce.{name} {e:e}", c.name);
            worst = worst.max(e);
        }
        println!(
            "{}: {} gradients of the cross-entropy, worst relative error {worst:e}",
            c.name,
            grads.len()
        );
    }
}

#[test]
fn mcr2_gradients_match_autograd() {
    for c in cases() {
        let (_, cache) = c.model.forward_train(&c.images).unwrap();
        let eps = Precision::from_eps_sq(c.meta["mcr2_eps_sq"].as_f64().unwrap()).unwrap();
        let loss = mcr2_loss(&cache.class_tokens(), &c.labels, eps).unwrap();
        let want = c.meta["neg_delta_r"].as_f64().unwrap();
        assert!(
            (loss.loss - want).abs() <= 1e-12 * want.abs(),
            "{}: −ΔR {} vs {want}",
            c.name,
            loss.loss
        );
        // the loss sees the class tokens only
        let n = cache.tokens_per_image();
        let mut d_features = Array2::<f64>::zeros(cache.features().dim());
        for (i, row) in loss.grad.rows().into_iter().enumerate() {
            d_features.row_mut(i * n).assign(&row);
        }
        let grads = c
            .model
            .backward(&cache, None, Some(d_features.view()))
            .unwrap();
        let mut worst = 0.0f64;
        for ((name, _), g) in c.model.parameters().iter().zip(&grads) {
            let e = relative(g, &c.t.f64(&format!("grad_mcr2.{name}")));
            assert!(e < 1e-10, "{}: grad_mcr2.{name} {e:e}", c.name);
            worst = worst.max(e);
        }
        println!(
            "{}: {} gradients of the MCR² loss, worst relative error {worst:e}",
            c.name,
            grads.len()
        );
    }
}

#[test]
fn two_adamw_steps_match_pytorch() {
    for mut c in cases() {
        let a = &c.meta["adamw"];
        let config = AdamWConfig {
            lr: a["lr"].as_f64().unwrap(),
            beta1: a["betas"][0].as_f64().unwrap(),
            beta2: a["betas"][1].as_f64().unwrap(),
            eps: a["eps"].as_f64().unwrap(),
            weight_decay: a["weight_decay"].as_f64().unwrap(),
        };
        let mut opt = AdamW::new(&c.model.parameters(), config).unwrap();
        let mut losses = Vec::new();
        for _ in 0..2 {
            let (logits, cache) = c.model.forward_train(&c.images).unwrap();
            let ce = cross_entropy(&logits, &c.labels, 0.0).unwrap();
            losses.push(ce.loss);
            let grads = c
                .model
                .backward(&cache, Some(ce.grad.view()), None)
                .unwrap();
            opt.step(&mut c.model, &grads).unwrap();
        }
        for (got, want) in losses
            .iter()
            .zip(c.meta["ce_before_each_adamw_step"].as_array().unwrap())
        {
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-12 * want,
                "{}: loss {got} vs {want}",
                c.name
            );
        }
        let mut worst = 0.0f64;
        for (name, p) in c.model.parameters() {
            let e = relative(&p.to_owned(), &c.t.f64(&format!("after_adamw2.{name}")));
            assert!(e < 1e-12, "{}: after_adamw2.{name} {e:e}", c.name);
            worst = worst.max(e);
        }
        println!(
            "{}: parameters after two AdamW steps, worst relative error {worst:e}",
            c.name
        );
    }
}

mod run {
    use mcr2::Labels;
    use mcr2::crate_layer::{CrateClassifier, CrateConfig};
    use mcr2::ndarray::Array4;
    use mcr2::rand::{Rng, SeedableRng, rngs::StdRng};
    use mcr2::train::{
        AdamW, AdamWConfig, Objective, TrainConfig, TrainEvent, TrainProgress, WarmupCosine,
        load_checkpoint, save_checkpoint, train_classifier,
    };
    use std::ops::ControlFlow;

    fn setup() -> (CrateClassifier<f64>, Array4<f64>, Labels, TrainConfig) {
        let config = CrateConfig::new(8, 4, 3, 8, 2, 2, 4);
        let mut rng = StdRng::seed_from_u64(5);
        let model = CrateClassifier::new(&config, &mut rng).unwrap();
        let ids: Vec<usize> = (0..20).map(|i| i % 3).collect();
        let images = Array4::from_shape_fn((20, 3, 8, 8), |(b, c, y, x)| {
            ids[b] as f64 * ((y + c) as f64 / 8.0) - (x as f64) / 16.0 + 0.1 * rng.random::<f64>()
        });
        let labels = Labels::new(&ids, 3).unwrap();
        let train = TrainConfig {
            epochs: 4,
            batch_size: 6,
            seed: 11,
            schedule: WarmupCosine {
                lr: 5e-3,
                min_lr: 1e-4,
                warmup_steps: 2,
                total_steps: 16,
            },
            clip_norm: Some(1.0),
            objective: Objective::CrossEntropy {
                label_smoothing: 0.1,
            },
        };
        (model, images, labels, train)
    }

    #[test]
    fn resuming_from_a_checkpoint_continues_bit_for_bit() {
        let (model, images, labels, config) = setup();
        let params = || AdamWConfig::new(1e-3);
        let mut straight = model.clone();
        let mut opt = AdamW::new(&straight.parameters(), params())
            .unwrap()
            .with_reference_grouping();
        let mut losses = Vec::new();
        let done = train_classifier(
            &mut straight,
            &mut opt,
            &images,
            &labels,
            &config,
            TrainProgress::default(),
            |_| Ok(None),
            |e: &TrainEvent| {
                if let TrainEvent::Epoch { loss, .. } = e {
                    losses.push(*loss);
                }
            },
        )
        .unwrap();
        assert_eq!(done, TrainProgress { epoch: 4, step: 16 });
        assert!(losses[3] < losses[0], "{losses:?}");

        // two epochs, a checkpoint, two more from the checkpoint
        let mut half = model.clone();
        let mut opt = AdamW::new(&half.parameters(), params())
            .unwrap()
            .with_reference_grouping();
        let two = TrainConfig {
            epochs: 2,
            ..config
        };
        let at = train_classifier(
            &mut half,
            &mut opt,
            &images,
            &labels,
            &two,
            TrainProgress::default(),
            |_| Ok(None),
            |_: &TrainEvent| (),
        )
        .unwrap();
        let bytes = save_checkpoint(&half, &opt, at).unwrap();
        let (mut resumed, mut opt, at) = load_checkpoint::<f64>(&bytes).unwrap();
        assert_eq!(at, TrainProgress { epoch: 2, step: 8 });
        assert_eq!(
            opt.decayed(),
            AdamW::new(&model.parameters(), params())
                .unwrap()
                .with_reference_grouping()
                .decayed()
        );
        train_classifier(
            &mut resumed,
            &mut opt,
            &images,
            &labels,
            &config,
            at,
            |_| Ok(None),
            |_: &TrainEvent| (),
        )
        .unwrap();
        assert_eq!(resumed, straight);
    }

    #[test]
    fn observers_stop_and_bad_steps_name_the_step() {
        let (mut model, images, labels, config) = setup();
        let mut opt = AdamW::new(&model.parameters(), AdamWConfig::new(1e-3)).unwrap();
        let at = train_classifier(
            &mut model,
            &mut opt,
            &images,
            &labels,
            &config,
            TrainProgress::default(),
            |_| Ok(None),
            |e: &TrainEvent| match e {
                TrainEvent::Step { step: 2, .. } => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            },
        )
        .unwrap();
        assert_eq!(at, TrainProgress { epoch: 0, step: 3 });

        // a learning rate that blows the weights up: the error names the step
        let mut bad = config;
        bad.schedule.lr = 1e200;
        bad.schedule.min_lr = 1e200;
        bad.clip_norm = None;
        let mut opt = AdamW::new(&model.parameters(), AdamWConfig::new(1e-3)).unwrap();
        let err = train_classifier(
            &mut model,
            &mut opt,
            &images,
            &labels,
            &bad,
            TrainProgress::default(),
            |_| Ok(None),
            |_: &TrainEvent| (),
        )
        .unwrap_err();
        assert!(err.to_string().contains("training step"), "{err}");
    }
}

/// SGD against the closed form of PyTorch's update on one weight with a constant gradient.
#[test]
fn sgd_steps_match_the_closed_form() {
    use mcr2::nn::{Layer, Linear};
    use mcr2::train::{Sgd, SgdConfig};
    let run = |nesterov: bool, weight_decay: f64| {
        let mut layer = Linear::from_parts(mcr2::ndarray::array![[1.0f64]], None).unwrap();
        let config = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov,
            weight_decay,
        };
        let mut opt = Sgd::new(&layer.parameters(), config).unwrap();
        let g = vec![ArrayD::from_elem(mcr2::ndarray::IxDyn(&[1, 1]), 2.0)];
        opt.step(&mut layer, &g).unwrap();
        opt.step(&mut layer, &g).unwrap();
        layer.weight()[(0, 0)]
    };
    // plain momentum: b = 2, p = 0.8; b = 0.9·2 + 2 = 3.8, p = 0.8 − 0.38
    assert!((run(false, 0.0) - 0.42).abs() < 1e-15);
    // Nesterov: g = 2 + 0.9·2, p = 1 − 0.38; b = 3.8, g = 2 + 0.9·3.8, p = 0.62 − 0.542
    assert!((run(true, 0.0) - 0.078).abs() < 1e-15);
    // weight decay 0.1: g₁ = 2.1, p = 0.79; g₂ = 2.079, b = 0.9·2.1 + 2.079, p = 0.79 − 0.1·b
    assert!((run(false, 0.1) - (0.79 - 0.1 * (0.9 * 2.1 + 2.079))).abs() < 1e-15);
}

#[test]
fn reference_grouping_exempts_biases_norms_and_embeddings() {
    let c = &cases()[0];
    let opt = AdamW::new(&c.model.parameters(), AdamWConfig::new(1e-3))
        .unwrap()
        .with_reference_grouping();
    for ((name, p), &decayed) in c.model.parameters().iter().zip(opt.decayed()) {
        let exempt = p.ndim() == 1 || name == "cls_token" || name == "pos_embedding";
        assert_eq!(decayed, !exempt, "{name}");
    }
    // decayed: the four linear maps of the embedding and head, qkv, to_out and ISTA per layer
    let depth = c.meta["depth"].as_u64().unwrap() as usize;
    assert_eq!(opt.decayed().iter().filter(|&&d| d).count(), 2 + 3 * depth);
}

/// The training API refuses bad input with errors, never a panic.
#[test]
fn training_inputs_are_checked() {
    use mcr2::ndarray::{Array1, IxDyn, array};
    use mcr2::nn::{Layer, Linear, Trainable};
    use mcr2::train::{WarmupCosine, clip_grad_norm, load_checkpoint};
    let labels = Labels::new(&[0, 1], 2).unwrap();
    // logits of the wrong shape, non-finite logits, bad smoothing
    assert!(cross_entropy(&array![[0.0, 1.0, 2.0]], &labels, 0.0).is_err());
    assert!(cross_entropy(&array![[0.0, f64::NAN], [1.0, 0.0]], &labels, 0.0).is_err());
    assert!(cross_entropy(&array![[0.0, 1.0], [1.0, 0.0]], &labels, 1.0).is_err());
    // features: non-finite, mismatched labels
    assert!(
        mcr2_loss(
            &array![[f64::INFINITY, 0.0], [1.0, 0.0]],
            &labels,
            Precision::from_eps_sq(0.5).unwrap()
        )
        .is_err()
    );
    assert!(
        mcr2_loss(
            &array![[1.0, 0.0]],
            &labels,
            Precision::from_eps_sq(0.5).unwrap()
        )
        .is_err()
    );
    // a zero feature row is kept at zero, as F.normalize does
    let out = mcr2_loss(
        &array![[0.0f64, 0.0], [1.0, 0.0]],
        &labels,
        Precision::from_eps_sq(0.5).unwrap(),
    )
    .unwrap();
    assert!(out.loss.is_finite() && out.grad.iter().all(|v| v.is_finite()));
    // backward with the wrong buffers or upstream shape
    let layer = Linear::from_parts(array![[1.0f64, 2.0]], Some(Array1::zeros(1))).unwrap();
    let (y, cache) = layer.forward_train(array![[1.0, 1.0]].view(), 1).unwrap();
    let mut one = vec![ArrayD::zeros(IxDyn(&[1, 2]))];
    assert!(layer.backward(&cache, y.view(), &mut one).is_err());
    let mut grads = common::zero_gradients(&layer);
    assert!(
        layer
            .backward(&cache, array![[1.0, 2.0]].view(), &mut grads)
            .is_err()
    );
    // optimizer hyper-parameters and gradients
    let bad = AdamWConfig {
        beta1: 1.0,
        ..AdamWConfig::new(1e-3)
    };
    assert!(AdamW::<f64>::new(&layer.parameters(), bad).is_err());
    assert!(AdamW::<f64>::new(&layer.parameters(), AdamWConfig::new(-1.0)).is_err());
    let mut opt = AdamW::new(&layer.parameters(), AdamWConfig::new(1e-3)).unwrap();
    let mut l2 = layer.clone();
    let nan = vec![
        ArrayD::from_elem(IxDyn(&[1, 2]), f64::NAN),
        ArrayD::zeros(IxDyn(&[1])),
    ];
    let err = opt.step(&mut l2, &nan).unwrap_err();
    assert!(
        err.to_string().contains("weight") && err.to_string().contains("step 1"),
        "{err}"
    );
    assert_eq!(l2, layer, "a refused step changes nothing");
    assert!(opt.step(&mut l2, &nan[..1]).is_err());
    // schedule, clipping
    let s = WarmupCosine {
        lr: 1e-3,
        min_lr: 1e-2,
        warmup_steps: 1,
        total_steps: 10,
    };
    assert!(s.check().is_err());
    let mut g = vec![ArrayD::from_elem(IxDyn(&[2]), f64::INFINITY)];
    assert!(clip_grad_norm(&mut g, 1.0).is_err());
    assert!(clip_grad_norm(&mut g, 0.0).is_err());
    // a cache from an encoder of another depth
    {
        use mcr2::crate_layer::{CrateBlockConfig, CrateEncoder, CrateEncoderConfig};
        use mcr2::rand::{SeedableRng, rngs::StdRng};
        let block = CrateBlockConfig::new(4, 2, 2);
        let mut rng = StdRng::seed_from_u64(0);
        let deep =
            CrateEncoder::<f64>::new(&CrateEncoderConfig { depth: 2, block }, &mut rng).unwrap();
        let shallow =
            CrateEncoder::<f64>::new(&CrateEncoderConfig { depth: 1, block }, &mut rng).unwrap();
        let x = mcr2::ndarray::Array2::from_elem((3, 4), 0.5)
            + mcr2::ndarray::array![[0.1, 0.2, 0.3, 0.4]];
        let (y, cache) = deep.forward_train(x.view(), 3).unwrap();
        let mut g = common::zero_gradients(&shallow);
        assert!(shallow.backward(&cache, y.view(), &mut g).is_err());
    }
    // a checkpoint that is not one
    assert!(load_checkpoint::<f64>(b"not a checkpoint").is_err());
    let c = &cases()[0];
    assert!(load_checkpoint::<f64>(&c.model.to_checkpoint().unwrap()).is_err());
}
