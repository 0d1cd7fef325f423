//! The whole CRATE classifier: the reference vector, published parameter counts, checkpoints
//! (save → load, bf16/f16, malformed files, a property-based fuzz of the loader), inference API.

mod common;

use mcr2::metrics::top_k;
use mcr2::nn::Checkpoint;
use std::collections::HashMap;

use common::Tensors;
use mcr2::Error;
use mcr2::crate_layer::{CrateClassifier, CrateConfig, Pooling};
use ndarray::{Array2, Array4, ArrayD, Ix4};
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use safetensors::{Dtype, tensor::TensorView};

const VECTOR: &str = "crate_model_img16_p4_d16_L2_h2.safetensors";

/// The vector's configuration (manifest: image 16, patch 4, 5 classes, dim 16, depth 2,
/// 2 heads of 8, class-token pooling).
fn vector_config() -> CrateConfig {
    CrateConfig::new(16, 4, 5, 16, 2, 2, 8)
}

type TensorMap = HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn tensors(bytes: &[u8]) -> TensorMap {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn write(map: &TensorMap) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = map
        .iter()
        .map(|(k, (dt, sh, data))| (k.clone(), TensorView::new(*dt, sh.clone(), data).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// The vector's parameters as a reference checkpoint: the `param.` prefix stripped, the
/// inputs and outputs dropped.
fn vector_checkpoint() -> Vec<u8> {
    let bytes = std::fs::read(common::data_dir().join(VECTOR)).unwrap();
    let map: TensorMap = tensors(&bytes)
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("param.").map(|s| (s.to_string(), v)))
        .collect();
    write(&map)
}

fn max_abs(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn model_matches_reference_vector() {
    let t = Tensors::open(VECTOR);
    let img = t.f64("img").into_dimensionality::<Ix4>().unwrap();
    let want = t.f64("logits");
    let ckpt = vector_checkpoint();
    let config = vector_config();

    let model = CrateClassifier::<f64>::from_safetensors(&ckpt, &config, "").unwrap();
    let logits = model.forward(&img).unwrap();
    let e64 = max_abs(&logits.clone().into_dyn(), &want);
    assert!(e64 < 1e-10, "f64 logits: {e64:e}");
    // the encoder's output tokens, through the inspection API
    let inspection = model.inspect(&img).unwrap();
    assert_eq!(inspection.logits, logits);
    assert_eq!(inspection.layers.len(), 2);
    let feats = inspection.layers.last().unwrap().tokens.clone().into_dyn();
    let ef = max_abs(&feats, &t.f64("features"));
    assert!(ef < 1e-10, "f64 features: {ef:e}");

    let model32 = CrateClassifier::<f32>::from_safetensors(&ckpt, &config, "").unwrap();
    let logits32 = model32.forward(&img.mapv(|v| v as f32)).unwrap();
    let e32 = max_abs(&logits32.mapv(f64::from).into_dyn(), &want);
    assert!(e32 < 1e-4, "f32 logits: {e32:e}");
    println!(
        "whole-model vector: logits within {e64:.1e} (f64), {e32:.1e} (f32); features {ef:.1e}"
    );
}

#[test]
fn parameter_counts_equal_the_published_ones() {
    for (config, published) in [
        (CrateConfig::tiny(), 6_090_856),
        (CrateConfig::small(), 13_116_328),
        (CrateConfig::base(), 22_796_008),
        (CrateConfig::large(), 77_641_192),
    ] {
        assert_eq!(config.parameter_count(), published);
    }
    // the formula counts what a checkpoint holds, here with and without output projections
    for config in [vector_config(), CrateConfig::new(8, 4, 3, 6, 2, 1, 6)] {
        let model = CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(1)).unwrap();
        let stored: usize = tensors(&model.to_safetensors("").unwrap())
            .values()
            .map(|(_, shape, _)| shape.iter().product::<usize>())
            .sum();
        assert_eq!(stored, config.parameter_count());
        assert_eq!(model.parameter_count(), config.parameter_count());
    }
}

fn images(b: usize, h: usize, w: usize) -> Array4<f64> {
    Array4::from_shape_fn((b, 3, h, w), |(i, c, y, x)| {
        ((i * 13 + c * 7 + y * 5 + x * 3) % 23) as f64 / 23.0 - 0.5
    })
}

#[test]
fn save_load_is_bit_identical() {
    let config = vector_config();
    let model = CrateClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(3)).unwrap();
    let back =
        CrateClassifier::<f64>::from_safetensors(&model.to_safetensors("").unwrap(), &config, "")
            .unwrap();
    assert_eq!(back, model);
    let x = images(3, 16, 16);
    assert_eq!(back.forward(&x).unwrap(), model.forward(&x).unwrap());
    let m32 = CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(3)).unwrap();
    let back32 =
        CrateClassifier::<f32>::from_safetensors(&m32.to_safetensors("").unwrap(), &config, "")
            .unwrap();
    assert_eq!(back32, m32);
}

/// bf16 and f16 checkpoints load with exact conversion: the same model as from f32 tensors
/// holding the same (rounded) values.
#[test]
fn half_precision_checkpoints_load() {
    let config = vector_config();
    let model = CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(4)).unwrap();
    let map = tensors(&model.to_safetensors("").unwrap());
    for half in [Dtype::BF16, Dtype::F16] {
        let mut narrow = TensorMap::new();
        let mut widened = TensorMap::new();
        for (k, (dt, shape, data)) in &map {
            assert_eq!(*dt, Dtype::F32);
            let vals: Vec<f32> = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let (bits, back): (Vec<u16>, Vec<f32>) = vals
                .iter()
                .map(|&v| match half {
                    // truncation to the upper half is a valid bf16 value
                    Dtype::BF16 => {
                        let b = (v.to_bits() >> 16) as u16;
                        (b, f32::from_bits(u32::from(b) << 16))
                    }
                    _ => to_f16(v),
                })
                .unzip();
            narrow.insert(
                k.clone(),
                (
                    half,
                    shape.clone(),
                    bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
                ),
            );
            widened.insert(
                k.clone(),
                (
                    Dtype::F32,
                    shape.clone(),
                    back.iter().flat_map(|b| b.to_le_bytes()).collect(),
                ),
            );
        }
        let a = CrateClassifier::<f32>::from_safetensors(&write(&narrow), &config, "").unwrap();
        let b = CrateClassifier::<f32>::from_safetensors(&write(&widened), &config, "").unwrap();
        assert_eq!(a, b, "{half:?}");
    }
}

/// f32 → nearest f16 for values in the normal range (the test's weights are |v| ≤ ~4), with
/// the value it represents.
fn to_f16(v: f32) -> (u16, f32) {
    if v == 0.0 {
        return (0, 0.0);
    }
    let sign = if v < 0.0 { 0x8000u16 } else { 0 };
    let a = v.abs();
    let e = a.log2().floor() as i32;
    assert!((-14..=15).contains(&e), "{v} outside the normal f16 range");
    let mut m = ((a / 2f32.powi(e) - 1.0) * 1024.0).round() as u32;
    let mut e = e;
    if m == 1024 {
        m = 0;
        e += 1;
    }
    let bits = sign | (((e + 15) as u16) << 10) | m as u16;
    let value = (1.0 + m as f32 / 1024.0) * 2f32.powi(e);
    (bits, if sign != 0 { -value } else { value })
}

#[test]
fn malformed_checkpoints_are_named_errors() {
    let config = vector_config();
    let good = vector_checkpoint();
    let load = |b: &[u8]| CrateClassifier::<f64>::from_safetensors(b, &config, "");
    assert!(load(&good).is_ok());
    let named = |r: Result<CrateClassifier<f64>, Error>, want: &str| match r {
        Err(Error::InvalidWeights { name, .. }) => assert_eq!(name, want),
        other => panic!("expected an error naming {want}, got {other:?}"),
    };
    // missing tensor
    let mut m = tensors(&good);
    m.remove("transformer.layers.1.1.fn.weight");
    named(load(&write(&m)), "transformer.layers.1.1.fn.weight");
    // extra tensor
    let mut m = tensors(&good);
    m.insert(
        "transformer.layers.2.1.fn.weight".into(),
        m["transformer.layers.1.1.fn.weight"].clone(),
    );
    named(load(&write(&m)), "transformer.layers.2.1.fn.weight");
    // wrong shape
    let mut m = tensors(&good);
    let e = m.get_mut("pos_embedding").unwrap();
    e.1 = vec![1, 16, 17];
    named(load(&write(&m)), "pos_embedding");
    // wrong dtype
    let mut m = tensors(&good);
    let e = m.get_mut("mlp_head.1.bias").unwrap();
    e.0 = Dtype::I64;
    named(load(&write(&m)), "mlp_head.1.bias");
    // non-finite value
    let mut m = tensors(&good);
    let e = m.get_mut("cls_token").unwrap();
    e.2[..8].copy_from_slice(&f64::NAN.to_le_bytes());
    named(load(&write(&m)), "cls_token");
    // truncated file, garbage
    assert!(matches!(
        load(&good[..good.len() - 9]),
        Err(Error::MalformedFile(_))
    ));
    assert!(matches!(load(&good[..5]), Err(Error::MalformedFile(_))));
    assert!(matches!(load(b"{}"), Err(Error::MalformedFile(_))));
    // a checkpoint of another configuration
    let other = CrateConfig::new(16, 4, 5, 16, 3, 2, 8);
    assert!(matches!(
        CrateClassifier::<f64>::from_safetensors(&good, &other, ""),
        Err(Error::InvalidWeights { .. })
    ));
}

#[test]
fn bad_images_and_configs_are_errors() {
    let config = vector_config();
    let model = CrateClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(5)).unwrap();
    // not a multiple of the patch, too large, wrong channels, empty, non-finite
    assert!(matches!(
        model.forward(&images(1, 15, 16)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        model.forward(&images(1, 20, 16)),
        Err(Error::ShapeMismatch { .. })
    ));
    let gray = Array4::<f64>::zeros((1, 1, 16, 16));
    assert!(matches!(
        model.forward(&gray),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        model.forward(&images(0, 16, 16)),
        Err(Error::Empty { .. })
    ));
    let mut nan = images(2, 16, 16);
    nan[(1, 2, 3, 4)] = f64::NAN;
    assert!(matches!(model.forward(&nan), Err(Error::NonFinite { .. })));
    // smaller images whose sides are multiples of the patch run, as in the reference
    assert_eq!(model.forward(&images(2, 8, 12)).unwrap().dim(), (2, 5));
    // configurations
    for bad in [
        CrateConfig::new(16, 0, 5, 16, 2, 2, 8),
        CrateConfig::new(18, 4, 5, 16, 2, 2, 8),
        CrateConfig::new(16, 4, 0, 16, 2, 2, 8),
        CrateConfig::new(16, 4, 5, 16, 0, 2, 8),
    ] {
        assert!(CrateClassifier::<f64>::new(&bad, &mut StdRng::seed_from_u64(0)).is_err());
    }
    let logits = Array2::from_shape_vec((1, 3), vec![0.5, f64::NAN, 1.0]).unwrap();
    assert!(top_k(&logits, 1).is_err());
    assert!(top_k(&Array2::<f64>::zeros((1, 3)), 4).is_err());
    assert!(top_k(&Array2::<f64>::zeros((1, 3)), 0).is_err());
}

#[test]
fn inference_api() {
    let mut config = vector_config();
    let x = images(3, 16, 16);
    let model = CrateClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(6)).unwrap();
    let logits = model.forward(&x).unwrap();
    // top-k: sorted, and the first is the arg-max
    let top = model.top_k(&x, 3).unwrap();
    assert_eq!(top.len(), 3);
    for (row, t) in logits.rows().into_iter().zip(&top) {
        assert!(t.windows(2).all(|w| w[0].1 >= w[1].1));
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(t[0].1, max);
        assert_eq!(row[t[0].0], max);
    }
    // inspection: attention rows are distributions over the 17 tokens; diagnostics in range
    let ins = model.inspect(&x).unwrap();
    assert_eq!(ins.logits, logits);
    assert_eq!(ins.embedded.dim(), (3, 17, 16));
    for layer in &ins.layers {
        assert_eq!(layer.attention.dim(), (3, 2, 17, 17));
        for row in layer.attention.lanes(ndarray::Axis(3)) {
            assert!((row.sum() - 1.0).abs() < 1e-12);
            assert!(row.iter().all(|&v| v >= 0.0));
        }
        assert!(
            layer.tokens.iter().all(|&v| v >= 0.0),
            "ISTA output is non-negative"
        );
        assert!((0.0..=1.0).contains(&layer.diagnostics.sparsity));
        assert!(layer.diagnostics.compression > 0.0);
    }
    // mean pooling is a different head input
    config.pooling = Pooling::Mean;
    let mean = CrateClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(6)).unwrap();
    let lm = mean.forward(&x).unwrap();
    assert_eq!(lm.dim(), logits.dim());
    assert_ne!(lm, logits);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the checkpoint loader.
    #[test]
    fn checkpoint_loader_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = CrateClassifier::<f32>::from_safetensors(&bytes, &vector_config(), "");
    }

    /// Corrupting a valid checkpoint anywhere (header or data) and truncating it gives an
    /// error or a model that runs, never a panic.
    #[test]
    fn checkpoint_loader_survives_corrupted_files(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut bytes = vector_checkpoint();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let keep = bytes.len() - cut.index(bytes.len() / 8 + 1);
        for b in [&bytes[..], &bytes[..keep]] {
            if let Ok(model) = CrateClassifier::<f64>::from_safetensors(b, &vector_config(), "") {
                let _ = model.forward(&images(1, 16, 16));
            }
        }
    }
}
