//! Reproducers of the reliability audit: each one now an error or a correct value.

use mcr2::crate_layer::{CrateBlock, CrateBlockConfig, CrateClassifier, CrateConfig, Ista};
use mcr2::{Error, Membership, RateStats};
use ndarray::{Array2, Array3, Array4};
use rand::{SeedableRng, rngs::StdRng};

/// The ISTA step no longer maps NaN to 0: a classifier whose intermediates overflow reports
/// `NonFinite` instead of finite logits that are the same for every image.
#[test]
fn overflowing_images_are_an_error_not_identical_logits() {
    let config = CrateConfig::new(16, 4, 5, 16, 2, 2, 8);
    let model = CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(0)).unwrap();
    let mut images = Array4::<f32>::from_elem((2, 3, 16, 16), 3e38);
    images[(1, 0, 0, 0)] = -3e38;
    match model.forward(&images) {
        Err(Error::NonFinite { .. }) => {}
        other => panic!("expected NonFinite, got {other:?}"),
    }
    // ordinary images still give finite logits
    let ok = Array4::<f32>::from_shape_fn((2, 3, 16, 16), |(b, c, h, w)| {
        ((b + c * 3 + h * 5 + w * 7) % 11) as f32 / 11.0
    });
    assert!(model.forward(&ok).unwrap().iter().all(|v| v.is_finite()));
}

/// A dictionary whose ISTA matrix overflows is refused; tokens that overflow inside a block
/// give an error or finite values, never NaN or zeros in disguise.
#[test]
fn ista_and_blocks_stay_finite_or_fail() {
    let huge = Array2::<f64>::eye(3) * 1e200;
    assert!(matches!(
        Ista::<f64>::from_parts(huge, 0.1, 0.1),
        Err(Error::InvalidParameter { .. })
    ));
    let block = CrateBlock::<f64>::new(
        &CrateBlockConfig::new(3, 1, 3),
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap();
    let x = Array3::<f64>::from_shape_fn(
        (1, 4, 3),
        |(_, i, j)| {
            if (i + j) % 2 == 0 { 1e300 } else { -1e300 }
        },
    );
    match block.forward_batch(&x) {
        Ok(y) => assert!(y.iter().all(|v| v.is_finite())),
        Err(e) => assert!(matches!(e, Error::NonFinite { .. }), "{e}"),
    }
}

#[test]
fn huge_class_counts_are_errors_not_panics() {
    assert!(Membership::<f64>::hard(&[0, 1], usize::MAX).is_err());
    assert!(Membership::<f64>::hard(&[0, 1], 1 << 60).is_err());
    assert!(matches!(
        RateStats::<f64>::new(1 << 32, 1),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        RateStats::<f64>::new(100_000, 1),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        RateStats::<f32>::new(2, 1 << 60),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn huge_layer_sizes_are_errors_not_aborts() {
    let mut rng = StdRng::seed_from_u64(2);
    assert!(CrateBlock::<f32>::new(&CrateBlockConfig::new(8, 1 << 62, 4), &mut rng).is_err());
    assert!(CrateBlock::<f32>::new(&CrateBlockConfig::new(1 << 20, 1, 1 << 20), &mut rng).is_err());
    let deep = mcr2::crate_layer::CrateEncoderConfig {
        depth: 1_000_000_000,
        block: CrateBlockConfig::new(8, 2, 4),
    };
    assert!(deep.check().is_err());
}

/// The matching behind `segmentation_error` scales with the smaller side: 20,000 singleton
/// groups against 10 classes take little time; 20,000 groups on both sides are refused at
/// once instead of running for hours.
#[test]
fn segmentation_error_scales_or_refuses() {
    use mcr2::Labels;
    use mcr2::metrics::segmentation_error;
    let m = 20_000;
    let singletons = Labels::from_ids(&(0..m).collect::<Vec<_>>()).unwrap();
    let truth = Labels::new(&(0..m).map(|i| i % 10).collect::<Vec<_>>(), 10).unwrap();
    let start = std::time::Instant::now();
    // each class matches one singleton: 10 of 20,000 samples are right
    let err = segmentation_error(&singletons, &truth).unwrap();
    assert!((err - (1.0 - 10.0 / m as f64)).abs() < 1e-12);
    let start2 = std::time::Instant::now();
    assert!(matches!(
        segmentation_error(&singletons, &singletons),
        Err(Error::TooLarge { .. })
    ));
    println!(
        "20,000 × 10 matching: {:?}; 20,000 × 20,000 refused in {:?}",
        start2 - start,
        start2.elapsed()
    );
}

#[test]
fn parameters_that_would_overflow_are_refused() {
    use mcr2::{Precision, ReferenceLoss};
    let eps = Precision::from_eps_sq(0.5).unwrap();
    assert!(ReferenceLoss::new(eps, 1.0, 1e308).is_err());
    assert!(ReferenceLoss::new(eps, 1e308, 1.0).is_err());
    assert!(Ista::<f64>::from_parts(Array2::eye(3), 1e308, 0.1).is_err());
    assert_eq!(mcr2::nn::gelu(f64::NEG_INFINITY), 0.0);
    assert_eq!(mcr2::nn::gelu(f64::INFINITY), f64::INFINITY);
}

/// Deserialization goes through the checked constructors.
#[cfg(feature = "serde")]
#[test]
fn deserialization_is_checked() {
    use mcr2::{Labels, Precision, ReferenceLoss};
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let json = serde_json::to_string(&ReferenceLoss::new(eps, 1.0, 1.0).unwrap()).unwrap();
    for (from, to) in [
        ("\"gam1\":1.0", "\"gam1\":-1.0"),
        ("\"gam2\":1.0", "\"gam2\":-1.0"),
        ("\"trace_offset\":0.0", "\"trace_offset\":-1.0"),
    ] {
        let bad = json.replacen(from, to, 1);
        assert_ne!(bad, json);
        assert!(
            serde_json::from_str::<ReferenceLoss>(&bad).is_err(),
            "{bad}"
        );
    }
    let labels = Labels::new(&[0, 2, 1], 3).unwrap();
    let json = serde_json::to_string(&labels).unwrap();
    assert_eq!(serde_json::from_str::<Labels>(&json).unwrap(), labels);
    assert!(serde_json::from_str::<Labels>("{\"labels\":[0,5],\"n_classes\":3}").is_err());
}

/// Identical rows of norm s (all in direction v): `R = ½ ln(1 + d s²/ε²)` and
/// `∂R/∂Z = a s 1 vᵀ/(1 + a n s²)`, `a = d/(nε²)`. Within 1e-6 relative for s up to 10¹² (f64)
/// and 10⁶ (f32) — in fact to any s where `d s²/ε²` stays below the documented scale bound —
/// and a specific `Error::Scale` beyond it, never a wrong value.
#[test]
fn identical_rows_of_large_norm_match_the_closed_form() {
    use mcr2::{Labels, Membership};
    use mcr2::{
        Precision, class_coding_rate_with_grad, coding_rate, coding_rate_with_grad, rate_reduction,
    };
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let directions: [&[f64]; 3] = [
        &[1.0, -2.0, 0.0, 2.0, -1.0, 1.0, -2.0, 0.0],
        &[1.0; 8],
        &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ];
    for dir in directions {
        let d = dir.len();
        let norm = dir.iter().map(|x| x * x).sum::<f64>().sqrt();
        let v: Vec<f64> = dir.iter().map(|x| x / norm).collect();
        for &n in &[16usize, 4] {
            let a = d as f64 / (n as f64 * 0.5);
            for exp in [-3i32, 0, 2, 4, 6, 8, 10, 12] {
                let s = 10f64.powi(exp);
                let exact = 0.5 * (d as f64 * s * s / 0.5).ln_1p();
                let z = Array2::from_shape_fn((n, d), |(_, j)| v[j] * s);
                let (r, g) = coding_rate_with_grad(&z, eps).unwrap();
                assert!(
                    (r - exact).abs() <= 1e-6 * exact,
                    "f64 n={n} s={s}: {r} vs {exact}"
                );
                // the gradient's condition number is about u·d s²/ε² (a perturbation of Z by
                // u·s in a direction where (I + aG)⁻¹ = 1 moves it by a·u·s, against its size
                // 1/(n s)): compare it to 1e-6 where that is below 1e-6
                let gscale = a * s / (1.0 + a * n as f64 * s * s);
                let conditioned = f64::EPSILON * d as f64 * s * s / 0.5 <= 1e-6;
                for ((_, j), &gij) in g.indexed_iter().filter(|_| conditioned) {
                    let want = gscale * v[j];
                    assert!(
                        (gij - want).abs() <= 1e-6 * gscale,
                        "grad n={n} s={s}: {gij} vs {want}"
                    );
                }
                // two classes of identical rows, hard or split evenly (soft): Rc is the same
                // closed form per class, and ∂Rc/∂Z = κ s/(1 + d s²/ε²) 1 vᵀ, κ = d/(nε²)
                let labels = Labels::new(&(0..n).map(|i| i % 2).collect::<Vec<_>>(), 2).unwrap();
                let soft = Membership::soft(Array2::from_elem((n, 2), 0.5)).unwrap();
                for m in [Membership::from(labels), soft] {
                    let rr = rate_reduction(&z, &m, eps).unwrap();
                    let half = 0.5 * (d as f64 * s * s / 0.5).ln_1p() * 0.5;
                    assert!((rr.rc - 2.0 * half).abs() <= 1e-6 * rr.rc, "Rc s={s}");
                    let (_, g) = class_coding_rate_with_grad(&z, &m, eps).unwrap();
                    let gc = a * s / (1.0 + d as f64 * s * s / 0.5);
                    for ((_, j), &gij) in g.indexed_iter().filter(|_| conditioned) {
                        assert!((gij - gc * v[j]).abs() <= 1e-6 * gc, "∂Rc n={n} s={s}");
                    }
                }
                if exp <= 6 {
                    let r32 = coding_rate(&z.mapv(|x| x as f32), eps).unwrap() as f64;
                    assert!(
                        (r32 - exact).abs() <= 1e-6 * exact,
                        "f32 n={n} s={s}: {r32}"
                    );
                }
            }
        }
    }
    // beyond the bound: a specific error, not a value
    let z = Array2::<f64>::from_elem((16, 8), 1e16);
    assert!(matches!(coding_rate(&z, eps), Err(Error::Scale { .. })));
    let z = Array2::<f64>::from_elem((16, 8), 1e200);
    assert!(matches!(coding_rate(&z, eps), Err(Error::Scale { .. })));
}

/// Finding 2: sizes whose arithmetic wrapped are refused.
#[test]
fn wrapping_sizes_are_refused() {
    use mcr2::data::{SubspaceMixtureConfig, gaussian_toy, mixture_of_subspaces};
    let mut rng = StdRng::seed_from_u64(4);
    let mix = SubspaceMixtureConfig {
        samples: vec![usize::MAX, 2],
        ..SubspaceMixtureConfig::new(4, 2, 1, 1, 0.0)
    };
    assert!(matches!(
        mixture_of_subspaces::<f64, _>(&mix, &mut rng),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        gaussian_toy(&Array2::<f64>::eye(2), 1 << 62, 0.1, &mut rng),
        Err(Error::TooLarge { .. })
    ));
    // image 2³² with patch 1 gave (2³²)² = 0 patches; patch 2³² gave patch_dim 0
    for (image, patch) in [(1usize << 32, 1usize), (1 << 32, 1 << 32)] {
        let config = CrateConfig::new(image, patch, 5, 16, 2, 2, 8);
        assert!(config.check().is_err());
        assert!(CrateClassifier::<f32>::new(&config, &mut rng).is_err());
    }
    let redunet = mcr2::redunet::ReduNetConfig {
        layers: usize::MAX,
        ..Default::default()
    };
    let x = Array2::<f64>::from_shape_fn((4, 2), |(i, j)| (i + 2 * j) as f64 + 1.0);
    let labels = mcr2::Labels::new(&[0, 1, 0, 1], 2).unwrap();
    // usize::MAX layers: refused, or built lazily and stopped by the observer
    let stop = |_: &mcr2::redunet::LayerProgress| std::ops::ControlFlow::Break(());
    match mcr2::redunet::ReduNet::fit(&x, &labels, &redunet, stop) {
        Ok((net, _, _)) => assert!(net.layers().len() <= 1),
        Err(e) => assert!(matches!(
            e,
            Error::TooLarge { .. } | Error::InvalidParameter { .. }
        )),
    }
}

/// Finding 4: allocations beyond the budget are errors before they happen.
#[test]
fn allocations_beyond_the_budget_are_refused() {
    use mcr2::tost::{ToStBlock, ToStBlockConfig};
    let mut rng = StdRng::seed_from_u64(5);
    // ALC at m = 50,000 (a 20 GB pair table) and m = 20,000: refused at once
    for m in [20_000usize, 50_000] {
        let x = Array2::<f64>::from_shape_fn((m, 2), |(i, j)| ((i * 7 + j) % 13) as f64);
        let start = std::time::Instant::now();
        let coder = mcr2::coding::Coder::new(mcr2::Precision::from_eps_sq(0.1).unwrap());
        let r = mcr2::coding::alc(&x, &coder, |_: &mcr2::coding::AlcProgress| ());
        assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
        assert!(start.elapsed().as_secs_f64() < 1.0);
    }
    let mut tost = ToStBlockConfig::new(8, 2);
    tost.mlp_ratio = 1_000_000_000;
    assert!(ToStBlock::<f32>::new(&tost, &mut rng).is_err());
    // a 10⁶-pixel image with patch 1 has 10¹² position-embedding entries
    let config = CrateConfig::new(1_000_000, 1, 5, 16, 2, 2, 8);
    assert!(matches!(config.check(), Err(Error::TooLarge { .. })));
    // LinearMap with out_dim 10⁹
    let x = Array2::<f64>::from_shape_fn((4, 3), |(i, j)| (i + j) as f64 + 1.0);
    let m = Membership::from(mcr2::Labels::new(&[0, 1, 0, 1], 2).unwrap());
    let fit = mcr2::fit::FitConfig::new(mcr2::Precision::from_eps_sq(0.5).unwrap());
    let r = mcr2::fit::LinearMap::fit(
        &x,
        &m,
        1_000_000_000,
        &fit,
        &mut rng,
        |_: &mcr2::fit::Progress| (),
    );
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{:?}", r.err());
    // inspection keeps depth × batch × heads × tokens² attention entries: 65,537 tokens
    // would need 2 × 4.3·10⁹ per layer
    let big = CrateConfig::new(1024, 4, 5, 16, 2, 2, 2);
    let model = CrateClassifier::<f32>::new(&big, &mut rng).unwrap();
    let image = Array4::<f32>::from_elem((1, 3, 1024, 1024), 0.5);
    assert!(matches!(model.inspect(&image), Err(Error::TooLarge { .. })));
    // inference on a wide attention over narrow tokens: 1024 tokens of width 2 projected on
    // 4096 heads of 1024 would be 2³² values (16 GiB in f32), refused before allocating
    let wide =
        CrateBlock::<f32>::new(&CrateBlockConfig::new(2, 1 << 12, 1 << 10), &mut rng).unwrap();
    let tokens = Array3::<f32>::from_elem((1, 1024, 2), 0.5);
    let start = std::time::Instant::now();
    assert!(matches!(
        wide.forward_batch(&tokens),
        Err(Error::TooLarge { .. })
    ));
    let one = tokens.index_axis(ndarray::Axis(0), 0).to_owned();
    assert!(matches!(wide.forward(&one), Err(Error::TooLarge { .. })));
    assert!(matches!(
        wide.forward_trace(&tokens),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        wide.mssa().forward(&one),
        Err(Error::TooLarge { .. })
    ));
    assert!(start.elapsed().as_secs_f64() < 1.0);
    // a checkpoint of depth 10⁹ is refused before any tensor name is built
    let small = CrateConfig::new(16, 4, 5, 16, 1_000_000_000, 2, 8);
    let start = std::time::Instant::now();
    use mcr2::nn::Checkpoint;
    assert!(CrateClassifier::<f32>::from_safetensors(&[0u8; 16], &small, "").is_err());
    assert!(start.elapsed().as_secs_f64() < 1.0);
    // the training forward of an attention 2²⁰ heads wide on 2²⁰ one-token sequences would
    // project them into 2⁴⁰ values
    use mcr2::crate_layer::Mssa;
    use mcr2::nn::Trainable;
    let wide = 1usize << 20;
    let mssa = Mssa::<f32>::from_parts(
        Array2::zeros((wide, 1)),
        wide,
        Some((Array2::zeros((1, wide)), ndarray::Array1::zeros(1))),
    )
    .unwrap();
    let tokens = Array2::<f32>::zeros((wide, 1));
    let r = mssa.forward_train(tokens.view(), 1);
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{:?}", r.err());
}

/// Finding 8: errors name the real cause.
#[test]
fn errors_name_the_real_cause() {
    use mcr2::{Labels, Precision, coding_rate};
    // rows whose squared norm overflows are projected, not called zero vectors
    let x = Array2::<f64>::from_shape_fn(
        (4, 2),
        |(i, j)| if (i + j) % 2 == 0 { 1e200 } else { -3e199 },
    );
    let labels = Labels::new(&[0, 1, 0, 1], 2).unwrap();
    let config = mcr2::redunet::ReduNetConfig {
        layers: 1,
        ..Default::default()
    };
    if let Err(e) =
        mcr2::redunet::ReduNet::fit(&x, &labels, &config, |_: &mcr2::redunet::LayerProgress| ())
    {
        assert!(!e.to_string().contains("zero vector"), "{e}");
    }
    // ε² below f32's range: the scale, not "not positive definite"
    let z = Array2::<f32>::from_shape_fn((6, 3), |(i, j)| ((i * 3 + j) % 5) as f32 - 2.0);
    let r = coding_rate(&z, Precision::from_eps_sq(1e-300).unwrap());
    match r {
        Ok(v) => assert!(v.is_finite()),
        Err(e) => assert!(matches!(e, Error::Scale { .. }), "{e}"),
    }
    // merging statistics whose sample count overflows
    let mut a = RateStats::<f64>::new(2, 1).unwrap();
    a.push(&ndarray::array![[1.0, 0.0]], &Labels::new(&[0], 1).unwrap())
        .unwrap();
    // the count doubles with each merge: it overflows within 64 of them, and says so
    let mut overflowed = false;
    for _ in 0..70 {
        let copy = a.clone();
        if let Err(e) = a.merge(&copy) {
            assert!(matches!(e, Error::TooLarge { .. }), "{e}");
            assert!(e.to_string().contains("overflows"), "{e}");
            overflowed = true;
            break;
        }
    }
    assert!(overflowed);
}
