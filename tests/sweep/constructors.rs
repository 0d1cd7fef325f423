//! The sweep's constructors and configurations (see `tests/sweep.rs`).

use super::*;

/// Six samples in two classes.
pub(super) fn labels6() -> Labels {
    Labels::new(&[0, 1, 0, 1, 0, 1], 2).unwrap()
}

/// Constructors and configurations with extreme sizes and parameters.
pub(super) fn constructors(s: &mut Sweep) {
    let mut rng = StdRng::seed_from_u64(3);
    for a in sizes() {
        s.make(
            || format!("Labels::new classes {a}"),
            || Labels::new(&[0, 1], a),
        );
        s.make(
            || format!("Labels::from_ids {a}"),
            || Labels::from_ids(&[a, 0]),
        );
        s.make(|| format!("Labels::select {a}"), || labels6().select(&[a]));
        s.make(
            || format!("Membership::hard {a}"),
            || Membership::<f64>::hard(&[0, 1], a),
        );
        s.make(
            || format!("metrics::accuracy {a}"),
            || metrics::accuracy(&[a, 0], &Labels::new(&[0, 1], 2).unwrap()),
        );
        s.make(
            || format!("gaussian_toy per_class {a}"),
            || gaussian_toy(&Array2::<f32>::eye(2), a, 0.1, &mut rng),
        );
        s.make(
            || format!("LayerNorm dim {a}"),
            || LayerNorm::<f32>::new(&LayerNormConfig::new(a)),
        );
        s.make(
            || format!("Mlp dim {a}"),
            || Mlp::<f32>::new(&MlpConfig { dim: a, hidden: a }, &mut rng),
        );
        s.make(
            || format!("CausalTssa block {a}"),
            || {
                CausalTssa::<f32>::new(
                    &CausalTssaConfig {
                        dim: 4,
                        heads: 2,
                        block_size: a,
                    },
                    &mut rng,
                )
            },
        );
        for b in sizes() {
            s.make(
                || format!("RateStats::new {a} {b}"),
                || RateStats::<f32>::new(a, b),
            );
            s.make(
                || format!("Linear {a}×{b}"),
                || Linear::<f32>::new(&LinearConfig::new(a, b), &mut rng),
            );
            s.make(
                || format!("Tssa {a} heads {b}"),
                || Tssa::<f32>::new(&TssaConfig::new(a, b), &mut rng),
            );
            s.make(
                || format!("CrateBlock {a} heads {b}"),
                || CrateBlock::<f32>::new(&CrateBlockConfig::new(a, b, 2), &mut rng),
            );
            s.make(
                || format!("CrateBlock dim_head {a} heads {b}"),
                || CrateBlock::<f32>::new(&CrateBlockConfig::new(4, b, a), &mut rng),
            );
            let mix = SubspaceMixtureConfig {
                samples: vec![a, b],
                ..SubspaceMixtureConfig::new(4, 2, 1, 1, 0.0)
            };
            s.make(
                || format!("mixture_of_subspaces samples {a} {b}"),
                || mixture_of_subspaces::<f32, _>(&mix, &mut rng),
            );
            let mix = SubspaceMixtureConfig::new(a, 2, b, 2, 0.1);
            s.make(
                || format!("mixture_of_subspaces dim {a} p {b}"),
                || mixture_of_subspaces::<f32, _>(&mix, &mut rng),
            );
            let mut tost = ToStBlockConfig::new(4, 2);
            tost.mlp_ratio = a;
            tost.heads = b;
            s.make(
                || format!("ToStBlock mlp_ratio {a} heads {b}"),
                || ToStBlock::<f32>::new(&tost, &mut rng),
            );
            for &c in &[1usize, 3, 1 << 32] {
                let cfg = CrateConfig::new(a, b, c, 8, 2, 2, 4);
                s.make(
                    || format!("CrateConfig image {a} patch {b} classes {c}"),
                    || CrateClassifier::<f32>::new(&cfg, &mut rng),
                );
            }
        }
        let deep = CrateEncoderConfig {
            depth: a,
            block: CrateBlockConfig::new(4, 2, 2),
        };
        s.make(
            || format!("CrateEncoder depth {a}"),
            || mcr2::crate_layer::CrateEncoder::<f32>::new(&deep, &mut rng),
        );
    }
    for &p in &PARAMS {
        s.make(
            || format!("Precision::from_eps {p:e}"),
            || Precision::from_eps(p),
        );
        s.make(
            || format!("LayerNorm eps {p:e}"),
            || LayerNorm::<f32>::new(&LayerNormConfig::new(4).with_eps(p)),
        );
        s.make(
            || format!("Ista::from_parts step {p:e}"),
            || Ista::<f64>::from_parts(Array2::eye(3), p, 0.1),
        );
        s.make(
            || format!("Ista::from_parts λ {p:e}"),
            || Ista::<f64>::from_parts(Array2::eye(3), 0.1, p),
        );
        s.make(
            || format!("Ista::from_parts dictionary {p:e}"),
            || Ista::<f32>::from_parts(Array2::eye(3) * p as f32, 0.1, 0.1),
        );
        let eps = Precision::from_eps_sq(0.5).unwrap();
        s.make(
            || format!("ReferenceLoss γ₁ {p:e}"),
            || ReferenceLoss::new(eps, p, 1.0),
        );
        s.make(
            || format!("ReferenceLoss γ₂ {p:e}"),
            || ReferenceLoss::new(eps, 1.0, p),
        );
        s.make(
            || format!("ReferenceLoss offset {p:e}"),
            || ReferenceLoss::new(eps, 1.0, 1.0).and_then(|l| l.with_trace_offset(p)),
        );
        s.make(
            || format!("mixture noise {p:e}"),
            || mixture_of_subspaces::<f32, _>(&SubspaceMixtureConfig::new(4, 2, 1, 3, p), &mut rng),
        );
        let mut tost = ToStBlockConfig::new(4, 2);
        tost.layer_scale = p;
        s.make(
            || format!("ToStBlock layer_scale {p:e}"),
            || ToStBlock::<f32>::new(&tost, &mut rng),
        );
        let temp = Array1::<f32>::from_elem(2, p as f32);
        s.make(
            || format!("Tssa temperature {p:e}"),
            || {
                let qkv =
                    Linear::<f32>::new(&LinearConfig::new(4, 4), &mut StdRng::seed_from_u64(0))?;
                let out =
                    Linear::<f32>::new(&LinearConfig::new(4, 4), &mut StdRng::seed_from_u64(1))?;
                Tssa::from_parts(qkv, temp.clone(), out)
            },
        );
        let tssa = Tssa::<f64>::new(&TssaConfig::new(4, 2), &mut rng).unwrap();
        s.make(
            || format!("CausalTssa denom_bias {p:e}"),
            || CausalTssa::from_parts(tssa.clone(), Array2::from_elem((2, 8), p)),
        );
        let bases = vec![Array2::<f64>::eye(4)];
        s.make(
            || format!("VariationalCompression η {p:e}"),
            || mcr2::tost::VariationalCompression::new(bases.clone(), eps, p),
        );
    }
    // weight files: random bytes and truncations of a valid file
    let cfg = CrateConfig::new(8, 4, 3, 8, 1, 2, 4);
    let model = CrateClassifier::<f32>::new(&cfg, &mut rng).unwrap();
    let bytes = model.to_safetensors("").unwrap();
    for cut in [0, 1, 7, 8, 9, 64, bytes.len() / 2, bytes.len() - 1] {
        s.make(
            || format!("CrateClassifier::from_safetensors cut {cut}"),
            || CrateClassifier::<f32>::from_safetensors(&bytes[..cut], &cfg, ""),
        );
    }
    // checkpoints with their configuration, and the saved estimators, truncated
    let ck = model.to_checkpoint().unwrap();
    for cut in [0, 8, 64, ck.len() / 2, ck.len() - 1] {
        s.make(
            || format!("CrateClassifier::from_checkpoint cut {cut}"),
            || CrateClassifier::<f32>::from_checkpoint(&ck[..cut]),
        );
        s.make(
            || format!("ReduNet::from_safetensors cut {cut}"),
            || ReduNet::<f64>::from_safetensors(&ck[..cut]),
        );
        s.make(
            || format!("Micl::from_safetensors cut {cut}"),
            || Micl::from_safetensors(&ck[..cut]),
        );
    }
    let mut header = bytes.clone();
    header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    s.make(
        || "from_safetensors header length u64::MAX".into(),
        || CrateClassifier::<f32>::from_safetensors(&header, &cfg, ""),
    );
    let deep = CrateConfig::new(8, 4, 3, 8, 1, 2, 1_000_000_000);
    s.make(
        || "from_safetensors depth 1e9".into(),
        || CrateClassifier::<f32>::from_safetensors(&bytes, &deep, ""),
    );
    // images of extreme values through the classifier
    for &v in &VALUES {
        let images = Array4::<f32>::from_shape_fn((2, 3, 8, 8), |(b, c, h, w)| {
            if (b + c + h + w) % 3 == 0 {
                v as f32
            } else {
                0.25
            }
        });
        s.call(
            || format!("CrateClassifier::forward {v:e}"),
            || model.forward(&images),
        );
    }
    // segmentation error on many groups is refused or fast
    let many = Labels::from_ids(&(0..3000).collect::<Vec<_>>()).unwrap();
    s.make(
        || "segmentation_error 3000 × 3000".into(),
        || metrics::segmentation_error(&many, &many),
    );
}
