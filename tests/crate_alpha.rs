//! CRATE-α: the ODL step against a case worked by hand, the layer and a 2-layer model against
//! an independent implementation of the reference forward (reference layout: batch × tokens ×
//! dim, the reference's einsums written as loops), parameter counts against the reference
//! constructor's arithmetic, checkpoints, and the loader's errors (with a fuzz).

use std::collections::HashMap;

mod common;

use common::rewrite;

use mcr2::Error;
use mcr2::crate_alpha::{
    CRATE_ALPHA_VARIANTS, CrateAlphaBlock, CrateAlphaBlockConfig, CrateAlphaClassifier,
    CrateAlphaConfig, Odl,
};
use mcr2::ndarray::{Array2, Array3, Array4, ArrayD, array};
use mcr2::nn::{Checkpoint, Layer};
use mcr2::rand::{Rng, SeedableRng, rngs::StdRng};
use proptest::prelude::*;
use safetensors::Dtype;

#[test]
fn odl_by_hand() {
    // d = 2, m = 3, η = 0.5, λ = 0.2 (ηλ = 0.1), one token x = (1, 2)
    let d = array![[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]];
    let d1 = array![[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]];
    let odl = Odl::<f64>::from_parts(d, d1, 0.5, 0.2).unwrap();
    let y = odl.forward(&array![[1.0, 2.0]]).unwrap();
    // Dᵀx = (1, 2, 1.5); A¹ = ReLU(0.5·(1, 2, 1.5) − 0.1) = (0.4, 0.9, 0.65)
    let a1: [f64; 3] = [0.5 * 1.0 - 0.1, 0.5 * 2.0 - 0.1, 0.5 * 1.5 - 0.1];
    // D A¹ − x = (0.4 + 0.325 − 1, 0.9 + 0.325 − 2) = (−0.275, −0.775)
    let r = [a1[0] + 0.5 * a1[2] - 1.0, a1[1] + 0.5 * a1[2] - 2.0];
    // Dᵀ r = (r₁, r₂, 0.5 r₁ + 0.5 r₂) = (−0.275, −0.775, −0.525);
    // A² = ReLU(A¹ − 0.5·Dᵀr − 0.1) = (0.4375, 1.1875, 0.8125)
    let dtr = [r[0], r[1], 0.5 * r[0] + 0.5 * r[1]];
    let a2: Vec<f64> = (0..3)
        .map(|i| (a1[i] - 0.5 * dtr[i] - 0.1).max(0.0))
        .collect();
    // x̂ = D₁ A² = (a₁ + 2a₂, a₂ + a₃) = (2.8125, 2)
    let want = [a2[0] + 2.0 * a2[1], a2[1] + a2[2]];
    assert!((want[0] - 2.8125).abs() < 1e-15 && (want[1] - 2.0).abs() < 1e-15);
    for k in 0..2 {
        assert!(
            (y[[0, k]] - want[k]).abs() <= 1e-14,
            "{k}: {} vs {}",
            y[[0, k]],
            want[k]
        );
    }
    let codes = odl.sparse_codes(&array![[1.0, 2.0]]).unwrap();
    for (i, a) in a2.iter().enumerate() {
        assert!((codes[[0, i]] - a).abs() <= 1e-14);
    }
}

/// The reference forward, written from its equations in its own layout.
mod reference {
    use super::*;
    pub use crate::common::reference::{attention, layer_norm, linear};

    /// `einsum("pd,nlp->nld", D, x)` and the rest of the reference ODL block.
    pub fn odl(x: &Array3<f64>, dd: &ArrayD<f64>, d1: &ArrayD<f64>) -> Array3<f64> {
        let (eta, lambda) = (0.1, 0.1);
        let (bs, n, d) = x.dim();
        let m = dd.shape()[1];
        let mut y = Array3::zeros((bs, n, d));
        for i in 0..bs {
            for t in 0..n {
                let z1: Vec<f64> = (0..m)
                    .map(|a| {
                        let g: f64 = (0..d).map(|p| dd[[p, a]] * x[[i, t, p]]).sum();
                        (eta * g - eta * lambda).max(0.0)
                    })
                    .collect();
                let dz1: Vec<f64> = (0..d)
                    .map(|p| (0..m).map(|a| dd[[p, a]] * z1[a]).sum())
                    .collect();
                let z2: Vec<f64> = (0..m)
                    .map(|a| {
                        let g: f64 = (0..d).map(|p| dd[[p, a]] * (dz1[p] - x[[i, t, p]])).sum();
                        (z1[a] - eta * g - eta * lambda).max(0.0)
                    })
                    .collect();
                for p in 0..d {
                    y[[i, t, p]] = (0..m).map(|a| d1[[p, a]] * z2[a]).sum();
                }
            }
        }
        y
    }

    /// One layer: `x = attn(x) + x; x = ff(x) + x`, parameters by reference name.
    pub fn layer(
        x: &Array3<f64>,
        p: &HashMap<String, ArrayD<f64>>,
        prefix: &str,
        heads: usize,
    ) -> Array3<f64> {
        let g = |n: &str| &p[&format!("{prefix}{n}")];
        let h = layer_norm(x, g("0.norm.weight"), g("0.norm.bias"), 1e-6);
        let y = attention(
            &h,
            g("0.fn.qkv.weight"),
            g("0.fn.to_out.0.weight"),
            None,
            heads,
        ) + x;
        let h2 = layer_norm(&y, g("1.norm.weight"), g("1.norm.bias"), 1e-6);
        odl(&h2, g("1.fn.D"), g("1.fn.D1")) + &y
    }

    /// The whole model: conv, class token, position embedding, layers, class token, head.
    pub fn model(
        img: &Array4<f64>,
        p: &HashMap<String, ArrayD<f64>>,
        c: &CrateAlphaConfig,
    ) -> Array2<f64> {
        let (bs, ch, hh, ww) = img.dim();
        let ps = c.patch_size;
        let (gh, gw) = (hh / ps, ww / ps);
        let d = c.dim();
        let (cw, cb) = (&p["conv1.weight"], &p["conv1.bias"]);
        let mut x = Array3::zeros((bs, gh * gw + 1, d));
        for i in 0..bs {
            for k in 0..d {
                x[[i, 0, k]] = p["cls_token"][[0, 0, k]] + p["pos_embedding"][[0, 0, k]];
            }
            for a in 0..gh {
                for b in 0..gw {
                    for o in 0..d {
                        let mut v = cb[[o]];
                        for cc in 0..ch {
                            for u in 0..ps {
                                for w in 0..ps {
                                    v += cw[[o, cc, u, w]] * img[[i, cc, a * ps + u, b * ps + w]];
                                }
                            }
                        }
                        x[[i, 1 + a * gw + b, o]] = v + p["pos_embedding"][[0, 1 + a * gw + b, o]];
                    }
                }
            }
        }
        for l in 0..c.depth {
            x = layer(&x, p, &format!("transformer.layers.{l}."), c.block.heads);
        }
        let cls = Array3::from_shape_fn((bs, 1, d), |(i, _, k)| x[[i, 0, k]]);
        let h = layer_norm(&cls, &p["mlp_head.0.weight"], &p["mlp_head.0.bias"], 1e-5);
        let logits = linear(&h, &p["mlp_head.1.weight"], None);
        Array2::from_shape_fn((bs, c.num_classes), |(i, k)| {
            logits[[i, 0, k]] + p["mlp_head.1.bias"][[k]]
        })
    }
}

fn named<T: Clone>(
    list: Vec<(String, mcr2::ndarray::ArrayViewD<'_, T>)>,
) -> HashMap<String, ArrayD<T>> {
    list.into_iter().map(|(n, v)| (n, v.to_owned())).collect()
}

fn max_rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Weights moved off the reference initialization (LayerNorms not identity).
fn jittered<T>(
    mut model: T,
    seed: u64,
    visit: impl Fn(&mut T, &mut dyn FnMut(&str, mcr2::ndarray::ArrayViewMutD<'_, f64>)),
) -> T {
    let mut rng = StdRng::seed_from_u64(seed);
    visit(&mut model, &mut |_, mut p| {
        p.mapv_inplace(|v| v + 0.2 * (rng.random::<f64>() - 0.5))
    });
    model
}

#[test]
fn layer_and_model_match_the_reference_forward() {
    let config = CrateAlphaBlockConfig::new(12, 3, 4);
    let block = CrateAlphaBlock::<f64>::new(&config, &mut StdRng::seed_from_u64(1)).unwrap();
    let block = jittered(block, 2, |b, f| {
        use mcr2::nn::Trainable;
        b.update_parameters(f).unwrap()
    });
    let mut rng = StdRng::seed_from_u64(3);
    let x = Array3::from_shape_simple_fn((2, 5, 12), || 2.0 * rng.random::<f64>() - 1.0);
    let ours = block.forward_batch(&x).unwrap();
    let theirs = reference::layer(&x, &named(block.parameters()), "", 3);
    let flat = |a: Array3<f64>| a.into_shape_with_order((10, 12)).unwrap();
    let e = max_rel(&flat(ours), &flat(theirs));
    assert!(e < 1e-12, "layer: {e:e}");

    let config = CrateAlphaConfig::new(8, 4, 5, 12, 2, 3, 4);
    let model = CrateAlphaClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(4)).unwrap();
    let model = jittered(model, 5, |m, f| m.update_parameters(f).unwrap());
    let img = Array4::from_shape_simple_fn((2, 3, 8, 8), || rng.random::<f64>());
    let ours = model.forward(&img).unwrap();
    let theirs = reference::model(&img, &named(model.parameters()), &config);
    let e = max_rel(&ours, &theirs);
    assert!(e < 1e-12, "model: {e:e}");
    // smaller images use the first rows of the position embedding, as the reference slices it
    let small = Array4::from_shape_simple_fn((1, 3, 4, 8), || rng.random::<f64>());
    let e = max_rel(
        &model.forward(&small).unwrap(),
        &reference::model(&small, &named(model.parameters()), &config),
    );
    assert!(e < 1e-12, "smaller image: {e:e}");
    // the training forward gives the inference forward's logits
    let (train, _) = model.forward_train(&img).unwrap();
    assert!(max_rel(&train, &ours) < 1e-14);
}

/// The parameter count of the reference constructor: the shapes its modules create.
fn reference_count(
    image: usize,
    patch: usize,
    classes: usize,
    dim: usize,
    depth: usize,
    heads: usize,
    dim_head: usize,
) -> usize {
    let inner = heads * dim_head;
    let patches = (image / patch) * (image / patch);
    let mut shapes: Vec<Vec<usize>> = vec![
        vec![dim, 3, patch, patch],
        vec![dim],
        vec![1, patches + 1, dim],
        vec![1, 1, dim],
    ];
    for _ in 0..depth {
        shapes.extend([vec![dim], vec![dim], vec![inner, dim]]);
        if !(heads == 1 && dim_head == dim) {
            shapes.push(vec![dim, inner]);
        }
        shapes.extend([vec![dim], vec![dim], vec![dim, 4 * dim], vec![dim, 4 * dim]]);
    }
    shapes.extend([vec![dim], vec![dim], vec![classes, dim], vec![classes]]);
    shapes.iter().map(|s| s.iter().product::<usize>()).sum()
}

#[test]
fn parameter_counts() {
    // CRATE_base and CRATE_large of the reference (72.33M and 253.65M)
    assert_eq!(CrateAlphaConfig::base().parameter_count(), 72_328_936);
    assert_eq!(
        CrateAlphaConfig::base().parameter_count(),
        reference_count(224, 16, 1000, 768, 12, 12, 64)
    );
    assert_eq!(
        CrateAlphaConfig::large().parameter_count(),
        reference_count(224, 14, 1000, 1024, 24, 16, 64)
    );
    assert_eq!(CrateAlphaConfig::large().parameter_count(), 253_650_920);
    for (name, dim, depth, heads) in CRATE_ALPHA_VARIANTS {
        for patch in [8, 14, 16, 32] {
            let c = CrateAlphaConfig::named(&format!("{name}/{patch}")).unwrap();
            assert_eq!(
                c.parameter_count(),
                reference_count(224, patch, 1000, dim, depth, heads, dim / heads)
            );
        }
    }
    assert_eq!(
        CrateAlphaConfig::named("L/14").unwrap(),
        CrateAlphaConfig::large()
    );
    for bad in ["B", "X/16", "B/0", "B/15", "B/x"] {
        assert!(CrateAlphaConfig::named(bad).is_err(), "{bad}");
    }
    // a built model holds exactly that many values
    let config = CrateAlphaConfig::new(8, 4, 5, 12, 2, 3, 4);
    let model = CrateAlphaClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(0)).unwrap();
    let held: usize = model.parameters().iter().map(|(_, p)| p.len()).sum();
    assert_eq!(held, config.parameter_count());
    assert_eq!(held, reference_count(8, 4, 5, 12, 2, 3, 4));
    let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, CrateAlphaClassifier::<f32>::tensor_names(&config));
}

fn small() -> (CrateAlphaConfig, CrateAlphaClassifier<f64>) {
    let config = CrateAlphaConfig::new(8, 4, 5, 12, 2, 3, 4);
    let model = CrateAlphaClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(7)).unwrap();
    (config, model)
}

#[test]
fn checkpoints_round_trip() {
    let (config, model) = small();
    let back =
        CrateAlphaClassifier::<f64>::from_checkpoint(&model.to_checkpoint().unwrap()).unwrap();
    assert_eq!(back, model);
    let bytes = model.to_safetensors("model.").unwrap();
    let again = CrateAlphaClassifier::<f64>::from_safetensors(&bytes, &config, "model.").unwrap();
    assert_eq!(again, model);
    // an f32 file into an f64 model
    let m32 = CrateAlphaClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(8)).unwrap();
    assert!(
        CrateAlphaClassifier::<f64>::from_safetensors(
            &m32.to_safetensors("").unwrap(),
            &config,
            ""
        )
        .is_ok()
    );
    // a CRATE checkpoint is not a CRATE-α one
    assert!(CrateAlphaClassifier::<f64>::from_checkpoint(&bytes).is_err());
    let block = &model.blocks()[0];
    let bytes = block.to_safetensors("").unwrap();
    assert_eq!(
        &CrateAlphaBlock::<f64>::from_safetensors(&bytes, &config.block, "").unwrap(),
        block
    );
}

#[test]
fn malformed_weight_files_are_named_errors() {
    let (config, model) = small();
    let good = model.to_safetensors("").unwrap();
    let load = |b: &[u8]| CrateAlphaClassifier::<f64>::from_safetensors(b, &config, "");
    let named = |r: mcr2::Result<CrateAlphaClassifier<f64>>, want: &str| match r {
        Err(Error::InvalidWeights { name, .. }) => assert_eq!(name, want),
        other => panic!("{want}: {other:?}"),
    };
    assert!(matches!(load(b"not a file"), Err(Error::MalformedFile(_))));
    assert!(matches!(
        load(&good[..good.len() / 2]),
        Err(Error::MalformedFile(_))
    ));
    named(
        load(&rewrite(&good, |m| {
            m.remove("transformer.layers.1.1.fn.D1");
        })),
        "transformer.layers.1.1.fn.D1",
    );
    named(
        load(&rewrite(&good, |m| {
            m.insert(
                "transformer.layers.0.0.fn.to_out.0.bias".into(),
                (Dtype::F64, vec![12], vec![0; 96]),
            );
        })),
        "transformer.layers.0.0.fn.to_out.0.bias",
    );
    named(
        load(&rewrite(&good, |m| {
            m.insert(
                "conv1.weight".into(),
                (Dtype::F64, vec![12, 48], vec![0; 12 * 48 * 8]),
            );
        })),
        "conv1.weight",
    );
    named(
        load(&rewrite(&good, |m| {
            m.insert("1.fn.D".into(), (Dtype::F64, vec![1], vec![0; 8]));
        })),
        "1.fn.D",
    );
    match load(&rewrite(&good, |m| {
        m.insert(
            "mlp_head.0.bias".into(),
            (Dtype::I64, vec![12], vec![0; 96]),
        );
    })) {
        Err(Error::InvalidWeights { name, reason }) => {
            assert!(name == "mlp_head.0.bias" && reason.contains("I64"))
        }
        other => panic!("{other:?}"),
    }
    let nan = rewrite(&good, |m| {
        let mut data = vec![0u8; 12 * 48 * 8];
        data[8..16].copy_from_slice(&f64::NAN.to_le_bytes());
        m.insert(
            "transformer.layers.0.1.fn.D".into(),
            (Dtype::F64, vec![12, 48], data),
        );
    });
    named(load(&nan), "transformer.layers.0.1.fn.D");
    // a prefix that names nothing says where the tensors are
    match CrateAlphaClassifier::<f64>::from_safetensors(
        &model.to_safetensors("m.").unwrap(),
        &config,
        "",
    ) {
        Err(Error::InvalidWeights { reason, .. }) => assert!(reason.contains("\"m.\""), "{reason}"),
        other => panic!("{other:?}"),
    }
    // another configuration
    assert!(
        CrateAlphaClassifier::<f64>::from_safetensors(
            &good,
            &CrateAlphaConfig::new(8, 4, 5, 12, 3, 3, 4),
            ""
        )
        .is_err()
    );
    // bad images
    assert!(model.forward(&Array4::zeros((1, 1, 8, 8))).is_err());
    assert!(model.forward(&Array4::zeros((1, 3, 12, 12))).is_err());
    assert!(
        model
            .forward(&Array4::from_elem((1, 3, 8, 8), f64::NAN))
            .is_err()
    );
    assert!(Odl::<f64>::from_parts(Array2::eye(2), Array2::eye(3), 0.1, 0.1).is_err());
    assert!(Odl::<f64>::from_parts(Array2::eye(2), Array2::eye(2), 0.0, 0.1).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Arbitrary bytes and corrupted files never panic the loader; a model that loads runs.
    #[test]
    fn loader_survives_corruption(bytes in proptest::collection::vec(any::<u8>(), 0..256), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (config, model) = small();
        let _ = CrateAlphaClassifier::<f32>::from_safetensors(&bytes, &config, "");
        let mut good = model.to_safetensors("").unwrap();
        let i = pos.index(good.len());
        good[i] = byte;
        if let Ok(m) = CrateAlphaClassifier::<f64>::from_safetensors(&good, &config, "") {
            let _ = m.forward(&Array4::from_elem((1, 3, 8, 8), 0.5));
        }
        let _ = CrateAlphaClassifier::<f64>::from_checkpoint(&good);
    }
}

#[test]
fn half_precision_checkpoints_load() {
    let (config, _) = small();
    let m32 = CrateAlphaClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(9)).unwrap();
    // every tensor as BF16 (the upper half of each f32), and the class token as F16 with
    // values F16 holds exactly (0.5, −1.25, 2, 0)
    let f16_values: [(u16, f32); 4] =
        [(0x3800, 0.5), (0xBD00, -1.25), (0x4000, 2.0), (0x0000, 0.0)];
    let bytes = rewrite(&m32.to_safetensors("").unwrap(), |m| {
        for (name, (dt, _, data)) in m.iter_mut() {
            if name == "cls_token" {
                *data = (0..12)
                    .flat_map(|i| f16_values[i % 4].0.to_le_bytes())
                    .collect();
                *dt = Dtype::F16;
            } else {
                *data = data.chunks_exact(4).flat_map(|b| [b[2], b[3]]).collect();
                *dt = Dtype::BF16;
            }
        }
    });
    let loaded = CrateAlphaClassifier::<f32>::from_safetensors(&bytes, &config, "").unwrap();
    for ((name, got), (_, want)) in loaded.parameters().into_iter().zip(m32.parameters()) {
        for (k, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            let expected = if name == "cls_token" {
                f16_values[k % 4].1
            } else {
                f32::from_bits(w.to_bits() & 0xFFFF_0000)
            };
            assert_eq!(*g, expected, "{name}[{k}]");
        }
    }
}
