//! CRATE-MAE: masking, the sine-cosine table against its closed form, patchify, the forward
//! and loss against an independent computation (the layers written as loops in the
//! reference layout), parameter counts, checkpoints and the loader's errors (with a fuzz).

mod common;

use std::collections::HashMap;

use common::reference::{attention, layer_norm, linear};
use common::rewrite;
use mcr2::Error;
use mcr2::crate_mae::{
    CrateMae, CrateMaeConfig, Masking, patchify, sincos_position_embedding, unpatchify,
};
use mcr2::ndarray::{Array3, Array4, ArrayD};
use mcr2::nn::Checkpoint;
use mcr2::rand::{Rng, SeedableRng, rngs::StdRng};
use proptest::prelude::*;

#[test]
fn masking_keeps_the_floor_and_restores_the_order() {
    let mut rng = StdRng::seed_from_u64(0);
    for (len, ratio) in [
        (16, 0.75),
        (16, 0.5),
        (49, 0.75),
        (10, 0.33),
        (7, 0.0),
        (5, 0.9),
    ] {
        let m = Masking::random(4, len, ratio, &mut rng).unwrap();
        let keep = (len as f64 * (1.0 - ratio)).floor() as usize;
        assert_eq!(m.keep(), keep, "L = {len}, ratio {ratio}");
        let mask = m.mask();
        for i in 0..4 {
            let kept = m.kept(i);
            assert_eq!(kept.len(), keep);
            let mut sorted = kept.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), keep, "distinct");
            // kept and removed patches partition 0..L, and the mask says which is which
            for j in 0..len {
                assert_eq!(m.is_masked(i, j), !kept.contains(&j));
                assert_eq!(mask[[i, j]], if kept.contains(&j) { 0.0 } else { 1.0 });
            }
        }
    }
    // seeded: the same generator state gives the same masks
    let a = Masking::random(3, 16, 0.5, &mut StdRng::seed_from_u64(9)).unwrap();
    let b = Masking::random(3, 16, 0.5, &mut StdRng::seed_from_u64(9)).unwrap();
    assert_eq!(a, b);
    // samples are masked independently
    assert!((0..3).any(|i| a.kept(i) != a.kept(0)));
    for bad in [-0.1, 1.0, f64::NAN] {
        assert!(Masking::random(2, 16, bad, &mut rng).is_err());
    }
    assert!(Masking::from_kept(4, vec![vec![0, 0]]).is_err());
    assert!(Masking::from_kept(4, vec![vec![0, 4]]).is_err());
    assert!(Masking::from_kept(4, vec![vec![0], vec![1, 2]]).is_err());
    assert!(Masking::from_kept(4, vec![]).is_err());
}

#[test]
fn sincos_table_matches_its_closed_form() {
    for (dim, grid) in [(8, 3), (16, 4), (32, 2)] {
        let e = sincos_position_embedding(dim, grid).unwrap();
        assert_eq!(e.dim(), (grid * grid + 1, dim));
        assert!(e.row(0).iter().all(|&v| v == 0.0));
        let q = dim / 4;
        for i in 0..grid {
            for j in 0..grid {
                for k in 0..q {
                    // ω_k = 1/10000^(k/(dim/4)); the column coordinate j comes first
                    let w = (-(k as f64) / q as f64 * 10000f64.ln()).exp();
                    let row = e.row(1 + i * grid + j);
                    let want = [
                        (j as f64 * w).sin(),
                        (j as f64 * w).cos(),
                        (i as f64 * w).sin(),
                        (i as f64 * w).cos(),
                    ];
                    for (block, v) in want.iter().enumerate() {
                        assert!(
                            (row[block * q + k] - v).abs() < 1e-13,
                            "dim {dim} ({i},{j}) k {k}"
                        );
                    }
                }
            }
        }
    }
    assert!(sincos_position_embedding(6, 2).is_err());
    assert!(sincos_position_embedding(0, 2).is_err());
}

#[test]
fn patchify_order_and_round_trip() {
    let images = Array4::from_shape_fn((2, 3, 4, 6), |(b, c, y, x)| {
        (1000 * b + 100 * c + 10 * y + x) as f64
    });
    let p = patchify(&images, 2).unwrap();
    assert_eq!(p.dim(), (2, 6, 12));
    // patch 4 of image 1 is grid row 1, column 1; value (p1, p2, c) sits at (p1·2 + p2)·3 + c
    for (p1, p2, c) in [(0, 0, 0), (1, 0, 2), (1, 1, 1)] {
        assert_eq!(
            p[[1, 4, (p1 * 2 + p2) * 3 + c]],
            images[[1, c, 2 + p1, 2 + p2]]
        );
    }
    assert_eq!(unpatchify(&p, 2, 3, 2).unwrap(), images);
    assert!(patchify(&images, 4).is_err());
    assert!(unpatchify(&p, 2, 2, 2).is_err());
}

fn small() -> CrateMaeConfig {
    let mut c = CrateMaeConfig::new(8, 2, 12, 2, 3, 8, 2, 2);
    c.channels = 2;
    c
}

/// Weights off the initialization (LayerNorms not identity, zero biases moved).
fn model(config: &CrateMaeConfig, seed: u64) -> CrateMae<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = CrateMae::<f64>::new(config, &mut rng).unwrap();
    m.update_parameters(&mut |_, mut p| p.mapv_inplace(|v| v + 0.1 * (rng.random::<f64>() - 0.5)))
        .unwrap();
    m
}

/// The paper's MAE forward from the equations, in the reference layout; returns the
/// predictions (b × L × patch_dim) and the loss.
fn independent(
    images: &Array4<f64>,
    p: &HashMap<String, ArrayD<f64>>,
    c: &CrateMaeConfig,
    m: &Masking,
) -> (Array3<f64>, f64) {
    let (b, ch, _, _) = images.dim();
    let (ps, g, l) = (c.patch_size, c.grid(), c.num_patches());
    let (d, dd, pd) = (c.encoder.dim, c.decoder.dim, c.patch_dim());
    let w = &p["patch_embed.proj.weight"];
    let pos = |name: &str, t: usize, k: usize| p[name][[0, t, k]];
    // conv embedding of every patch, plus pos_embed
    let embed = |i: usize, j: usize, o: usize| {
        let (gy, gx) = (j / g, j % g);
        let mut v = p["patch_embed.proj.bias"][[o]];
        for cc in 0..ch {
            for u in 0..ps {
                for q in 0..ps {
                    v += w[[o, cc, u, q]] * images[[i, cc, gy * ps + u, gx * ps + q]];
                }
            }
        }
        v + pos("pos_embed", 1 + j, o)
    };
    let keep = m.keep();
    let mut x = Array3::from_shape_fn((b, keep + 1, d), |(i, t, o)| {
        if t == 0 {
            p["cls_token"][[0, 0, o]] + pos("pos_embed", 0, o)
        } else {
            embed(i, m.kept(i)[t - 1], o)
        }
    });
    for layer in 0..c.depth {
        let g = |n: &str| &p[&format!("blocks.{layer}.layers.0.{n}")];
        let h = layer_norm(&x, g("0.norm.weight"), g("0.norm.bias"), 1e-5);
        let y = attention(
            &h,
            g("0.fn.qkv.weight"),
            g("0.fn.to_out.0.weight"),
            Some(g("0.fn.to_out.0.bias")),
            c.encoder.heads,
        ) + &x;
        let h2 = layer_norm(&y, g("1.norm.weight"), g("1.norm.bias"), 1e-5);
        // the reference FeedForward: relu(x + η(x W − (x Wᵀ) W) − ηλ)
        let dict = g("1.fn.weight");
        let xw = linear(&h2, &dict.t().to_owned(), None);
        let x1 = linear(&h2, dict, None);
        let x1w = linear(&x1, &dict.t().to_owned(), None);
        let (eta, lambda) = (c.encoder.ista_step, c.encoder.ista_lambda);
        x = Array3::from_shape_fn(h2.dim(), |ix| {
            (h2[ix] + eta * (xw[ix] - x1w[ix]) - eta * lambda).max(0.0)
        });
    }
    let z = layer_norm(&x, &p["norm.weight"], &p["norm.bias"], 1e-6);
    let y = linear(
        &z,
        &p["decoder_embed.weight"],
        Some(&p["decoder_embed.bias"]),
    );
    let mut f = Array3::from_shape_fn((b, l + 1, dd), |(i, t, k)| {
        let v = if t == 0 {
            y[[i, 0, k]]
        } else {
            match m.kept(i).iter().position(|&j| j == t - 1) {
                Some(r) => y[[i, 1 + r, k]],
                None => p["mask_token"][[0, 0, k]],
            }
        };
        v + pos("decoder_pos_embed", t, k)
    });
    for layer in 0..c.decoder_depth {
        let g = |n: &str| &p[&format!("decoder_blocks.{layer}.layers.0.{n}")];
        let h = layer_norm(&f, g("0.norm.weight"), g("0.norm.bias"), 1e-5);
        let gx = linear(&h, g("0.fn.weight"), None);
        let h2 = layer_norm(&gx, g("1.norm.weight"), g("1.norm.bias"), 1e-5);
        f = &gx
            - &attention(
                &h2,
                g("1.fn.qkv.weight"),
                g("1.fn.to_out.0.weight"),
                Some(g("1.fn.to_out.0.bias")),
                c.decoder.heads,
            );
    }
    let fnorm = layer_norm(&f, &p["decoder_norm.weight"], &p["decoder_norm.bias"], 1e-6);
    let out = linear(
        &fnorm,
        &p["decoder_pred.weight"],
        Some(&p["decoder_pred.bias"]),
    );
    let pred = Array3::from_shape_fn((b, l, pd), |(i, j, k)| out[[i, j + 1, k]]);
    // target: patchify (p1 p2 c), loss on the removed patches
    let mut total = 0.0;
    for i in 0..b {
        for j in (0..l).filter(|&j| m.is_masked(i, j)) {
            let (gy, gx) = (j / g, j % g);
            let mut sq = 0.0;
            for u in 0..ps {
                for q in 0..ps {
                    for cc in 0..ch {
                        let t = images[[i, cc, gy * ps + u, gx * ps + q]];
                        sq += (pred[[i, j, (u * ps + q) * ch + cc]] - t).powi(2);
                    }
                }
            }
            total += sq / pd as f64;
        }
    }
    (pred, total / (b * (l - keep)) as f64)
}

fn named(m: &CrateMae<f64>) -> HashMap<String, ArrayD<f64>> {
    let mut map: HashMap<String, ArrayD<f64>> = m
        .parameters()
        .into_iter()
        .map(|(n, v)| (n, v.to_owned()))
        .collect();
    let bytes = m.to_safetensors("").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for name in ["pos_embed", "decoder_pos_embed"] {
        let t = st.tensor(name).unwrap();
        let v: Vec<f64> = t
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        map.insert(name.into(), ArrayD::from_shape_vec(t.shape(), v).unwrap());
    }
    map
}

#[test]
fn forward_and_loss_match_an_independent_computation() {
    let config = small();
    let m = model(&config, 1);
    let mut rng = StdRng::seed_from_u64(2);
    let images = Array4::from_shape_simple_fn((3, 2, 8, 8), || rng.random::<f64>());
    let masking = Masking::random(3, config.num_patches(), 0.75, &mut rng).unwrap();
    let out = m.forward(&images, &masking).unwrap();
    let (pred, loss) = independent(&images, &named(&m), &config, &masking);
    let scale = pred.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let err = out
        .pred
        .iter()
        .zip(&pred)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()))
        / scale;
    assert!(err < 1e-12, "predictions: {err:e}");
    assert!(
        (out.loss - loss).abs() < 1e-12 * loss,
        "loss {} vs {loss}",
        out.loss
    );
    // the fixed embeddings are the sine-cosine tables
    let table = sincos_position_embedding(12, 4).unwrap();
    let stored = &named(&m)["pos_embed"];
    assert!(
        table
            .iter()
            .zip(stored.iter())
            .all(|(a, b)| (a - b).abs() < 1e-15)
    );
    // reconstruct: kept patches are the input's, removed ones the predictions
    let rec = m.reconstruct(&images, &masking).unwrap();
    let patches = patchify(&rec, 2).unwrap();
    let orig = patchify(&images, 2).unwrap();
    for j in 0..16 {
        let want = if masking.is_masked(0, j) {
            out.pred.slice(mcr2::ndarray::s![0, j, ..]).to_owned()
        } else {
            orig.slice(mcr2::ndarray::s![0, j, ..]).to_owned()
        };
        assert_eq!(patches.slice(mcr2::ndarray::s![0, j, ..]), want);
    }
}

#[test]
fn normalized_pixel_loss() {
    let mut config = small();
    config.norm_pix_loss = true;
    let m = model(&config, 3);
    let mut rng = StdRng::seed_from_u64(4);
    let images = Array4::from_shape_simple_fn((2, 2, 8, 8), || rng.random::<f64>());
    let masking = Masking::random(2, 16, 0.5, &mut rng).unwrap();
    let out = m.forward(&images, &masking).unwrap();
    // per patch: (t − mean)/√(var + 1e-6), unbiased variance
    let target = patchify(&images, 2).unwrap();
    let mut total = 0.0;
    for i in 0..2 {
        for j in (0..16).filter(|&j| masking.is_masked(i, j)) {
            let t = target.slice(mcr2::ndarray::s![i, j, ..]);
            let mean = t.sum() / 8.0;
            let var = t.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 7.0;
            let sq: f64 = t
                .iter()
                .zip(out.pred.slice(mcr2::ndarray::s![i, j, ..]))
                .map(|(t, p)| (p - (t - mean) / (var + 1e-6).sqrt()).powi(2))
                .sum();
            total += sq / 8.0;
        }
    }
    assert!((out.loss - total / 16.0).abs() < 1e-12 * out.loss);
}

#[test]
fn parameter_counts() {
    // the book's counts (state_dict totals, fixed embeddings included): S 25.4M, B 44.6M
    let with_fixed = |c: &CrateMaeConfig| {
        c.parameter_count() + (c.num_patches() + 1) * (c.encoder.dim + c.decoder.dim)
    };
    assert_eq!(
        (with_fixed(&CrateMaeConfig::small()) as f64 / 1e5).round(),
        254.0
    );
    assert_eq!(
        (with_fixed(&CrateMaeConfig::base()) as f64 / 1e5).round(),
        446.0
    );
    let config = small();
    let m = model(&config, 0);
    let held: usize = m.parameters().iter().map(|(_, p)| p.len()).sum();
    assert_eq!(held, config.parameter_count());
    let mut names: Vec<String> = m.parameters().into_iter().map(|(n, _)| n).collect();
    names.extend(["pos_embed".into(), "decoder_pos_embed".into()]);
    assert_eq!(names, CrateMae::<f64>::tensor_names(&config));
}

#[test]
fn checkpoints_and_loader_errors() {
    let config = small();
    let m = model(&config, 5);
    assert_eq!(
        CrateMae::<f64>::from_checkpoint(&m.to_checkpoint().unwrap()).unwrap(),
        m
    );
    let good = m.to_safetensors("").unwrap();
    assert_eq!(
        CrateMae::<f64>::from_safetensors(&good, &config, "").unwrap(),
        m
    );
    let load = |b: &[u8]| CrateMae::<f64>::from_safetensors(b, &config, "");
    assert!(matches!(load(b"nope"), Err(Error::MalformedFile(_))));
    let name = "decoder_blocks.1.layers.0.0.fn.weight";
    let named_error = |bytes: Vec<u8>, want: &str| match load(&bytes) {
        Err(Error::InvalidWeights { name, .. }) => assert_eq!(name, want),
        other => panic!("{want}: {other:?}"),
    };
    named_error(
        rewrite(&good, |m| {
            m.remove(name);
        }),
        name,
    );
    named_error(
        rewrite(&good, |m| {
            m.get_mut(name).unwrap().1 = vec![4, 16];
        }),
        name,
    );
    named_error(
        rewrite(&good, |m| {
            m.get_mut(name).unwrap().0 = safetensors::Dtype::I64;
        }),
        name,
    );
    named_error(
        rewrite(&good, |m| {
            m.get_mut(name).unwrap().2[..8].copy_from_slice(&f64::NAN.to_le_bytes());
        }),
        name,
    );
    let extra = "decoder_blocks.1.layers.0.0.fn.bias";
    named_error(
        rewrite(&good, |m| {
            m.insert(
                extra.into(),
                (safetensors::Dtype::F64, vec![8], vec![0; 64]),
            );
        }),
        extra,
    );
    // bad inputs
    let mut rng = StdRng::seed_from_u64(6);
    let images = Array4::from_elem((2, 2, 8, 8), 0.5);
    let masking = Masking::random(2, 16, 0.5, &mut rng).unwrap();
    assert!(
        m.forward(&Array4::from_elem((2, 2, 6, 6), 0.5), &masking)
            .is_err()
    );
    assert!(
        m.forward(&Array4::from_elem((3, 2, 8, 8), 0.5), &masking)
            .is_err()
    );
    assert!(
        m.forward(&images, &Masking::random(2, 16, 0.0, &mut rng).unwrap())
            .is_err()
    );
    assert!(
        m.forward(&Array4::from_elem((2, 2, 8, 8), f64::NAN), &masking)
            .is_err()
    );
    let mut bad = small();
    bad.encoder.dim = 10;
    assert!(CrateMae::<f64>::new(&bad, &mut rng).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Corrupted files never panic the loader; a model that loads runs.
    #[test]
    fn loader_survives_corruption(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let config = small();
        let m = CrateMae::<f64>::new(&config, &mut StdRng::seed_from_u64(7)).unwrap();
        let mut bytes = m.to_checkpoint().unwrap();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let keep = bytes.len() - cut.index(bytes.len() / 8 + 1);
        for b in [&bytes[..], &bytes[..keep]] {
            if let Ok(loaded) = CrateMae::<f64>::from_checkpoint(b) {
                let masking = Masking::from_kept(16, vec![vec![0, 5]]).unwrap();
                let _ = loaded.forward(&Array4::from_elem((1, 2, 8, 8), 0.5), &masking);
            }
        }
    }
}
