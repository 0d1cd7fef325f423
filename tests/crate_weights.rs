//! Weight files: save → load is bit-identical; malformed files and bad inputs are errors,
//! never panics (with a property-based fuzz of the loader).

mod common;

use common::rewrite;
use mcr2::nn::Checkpoint;

use mcr2::Error;
use mcr2::crate_layer::{CrateBlock, CrateBlockConfig, CrateEncoder, CrateEncoderConfig};
use ndarray::{Array2, Array3};
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use safetensors::Dtype;

fn config() -> CrateBlockConfig {
    CrateBlockConfig::new(12, 3, 4)
}

fn input(b: usize, n: usize, d: usize) -> Array3<f64> {
    Array3::from_shape_fn((b, n, d), |(i, j, k)| {
        ((i * 31 + j * 7 + k * 3) % 17) as f64 / 17.0 - 0.4
    })
}

#[test]
fn save_load_is_bit_identical() {
    let mut rng = StdRng::seed_from_u64(0);
    let block = CrateBlock::<f64>::new(&config(), &mut rng).unwrap();
    let bytes = block.to_safetensors("").unwrap();
    let back = CrateBlock::<f64>::from_safetensors(&bytes, &config(), "").unwrap();
    assert_eq!(back, block);
    let x = input(2, 5, 12);
    assert_eq!(
        back.forward_batch(&x).unwrap(),
        block.forward_batch(&x).unwrap()
    );

    let block32 = CrateBlock::<f32>::new(&config(), &mut rng).unwrap();
    let back32 = CrateBlock::<f32>::from_safetensors(
        &block32.to_safetensors("m.").unwrap(),
        &config(),
        "m.",
    )
    .unwrap();
    let x32 = x.mapv(|v| v as f32);
    assert_eq!(
        back32.forward_batch(&x32).unwrap(),
        block32.forward_batch(&x32).unwrap()
    );

    let ec = CrateEncoderConfig {
        depth: 3,
        block: config(),
    };
    let enc = CrateEncoder::<f64>::new(&ec, &mut rng).unwrap();
    let bytes = enc.to_safetensors("transformer.layers.").unwrap();
    let back = CrateEncoder::<f64>::from_safetensors(&bytes, &ec, "transformer.layers.").unwrap();
    assert_eq!(
        back.forward_batch(&x).unwrap(),
        enc.forward_batch(&x).unwrap()
    );
}

#[test]
fn no_projection_when_one_full_head() {
    let c = CrateBlockConfig::new(8, 1, 8);
    assert!(!c.project_out());
    let block = CrateBlock::<f64>::new(&c, &mut StdRng::seed_from_u64(1)).unwrap();
    assert!(block.mssa().to_out().is_none());
    let bytes = block.to_safetensors("").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensor("0.fn.to_out.0.weight").is_err());
    assert_eq!(
        CrateBlock::<f64>::from_safetensors(&bytes, &c, "").unwrap(),
        block
    );
}

#[test]
fn malformed_weight_files_are_errors() {
    let block = CrateBlock::<f64>::new(&config(), &mut StdRng::seed_from_u64(2)).unwrap();
    let good = block.to_safetensors("").unwrap();
    let load = |b: &[u8]| CrateBlock::<f64>::from_safetensors(b, &config(), "");

    assert!(matches!(
        load(b"not a safetensors file"),
        Err(Error::MalformedFile(_))
    ));
    assert!(matches!(
        load(&good[..good.len() / 2]),
        Err(Error::MalformedFile(_))
    ));
    assert!(matches!(load(&[]), Err(Error::MalformedFile(_))));

    let missing = rewrite(&good, |m| {
        m.remove("1.fn.weight");
    });
    assert!(
        matches!(load(&missing), Err(Error::InvalidWeights { ref name, .. }) if name == "1.fn.weight")
    );

    let wrong_shape = rewrite(&good, |m| {
        m.insert("0.norm.bias".into(), (Dtype::F64, vec![11], vec![0u8; 88]));
    });
    assert!(
        matches!(load(&wrong_shape), Err(Error::InvalidWeights { ref name, .. }) if name == "0.norm.bias")
    );

    let wrong_dtype = rewrite(&good, |m| {
        m.insert("0.norm.bias".into(), (Dtype::I64, vec![12], vec![0u8; 96]));
    });
    assert!(
        matches!(load(&wrong_dtype), Err(Error::InvalidWeights { ref reason, .. }) if reason.contains("I64"))
    );

    let non_finite = rewrite(&good, |m| {
        let mut data = vec![0u8; 96];
        data[..8].copy_from_slice(&f64::NAN.to_le_bytes());
        m.insert("1.norm.weight".into(), (Dtype::F64, vec![12], data));
    });
    assert!(matches!(
        load(&non_finite),
        Err(Error::InvalidWeights { .. })
    ));

    // a prefix that names nothing
    assert!(matches!(
        CrateBlock::<f64>::from_safetensors(&good, &config(), "x."),
        Err(Error::InvalidWeights { .. })
    ));
    // a config that disagrees with the file
    assert!(
        CrateBlock::<f64>::from_safetensors(&good, &CrateBlockConfig::new(12, 2, 4), "").is_err()
    );
    // f32 files load into f64 models and back
    let block32 = CrateBlock::<f32>::new(&config(), &mut StdRng::seed_from_u64(3)).unwrap();
    assert!(
        CrateBlock::<f64>::from_safetensors(&block32.to_safetensors("").unwrap(), &config(), "")
            .is_ok()
    );
}

#[test]
fn bad_inputs_are_errors() {
    let block = CrateBlock::<f64>::new(&config(), &mut StdRng::seed_from_u64(4)).unwrap();
    assert!(matches!(
        block.forward(&Array2::zeros((5, 11))),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        block.forward(&Array2::zeros((0, 12))),
        Err(Error::Empty { .. })
    ));
    let mut x = Array2::zeros((3, 12));
    x[(1, 2)] = f64::NAN;
    assert!(matches!(block.forward(&x), Err(Error::NonFinite { .. })));
    assert!(matches!(
        block.forward_batch(&Array3::zeros((0, 3, 12))),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        block.forward_batch(&Array3::zeros((2, 3, 13))),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut bad = config();
    bad.heads = 0;
    assert!(CrateBlock::<f64>::new(&bad, &mut StdRng::seed_from_u64(0)).is_err());
    let mut bad = config();
    bad.ista_step = -1.0;
    assert!(CrateBlock::<f64>::new(&bad, &mut StdRng::seed_from_u64(0)).is_err());
    assert!(
        CrateEncoder::<f64>::new(
            &CrateEncoderConfig {
                depth: 0,
                block: config()
            },
            &mut StdRng::seed_from_u64(0)
        )
        .is_err()
    );
}

#[test]
fn config_serializes_and_parameters_round_trip_through_safetensors() {
    let c = config();
    #[cfg(feature = "serde")]
    {
        let back: CrateBlockConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
    let block = CrateBlock::<f64>::new(&c, &mut StdRng::seed_from_u64(5)).unwrap();
    let back =
        CrateBlock::<f64>::from_safetensors(&block.to_safetensors("").unwrap(), &c, "").unwrap();
    assert_eq!(back, block);
    let x = input(1, 4, 12);
    assert_eq!(
        back.forward_batch(&x).unwrap(),
        block.forward_batch(&x).unwrap()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the loader.
    #[test]
    fn loader_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = CrateBlock::<f32>::from_safetensors(&bytes, &config(), "");
    }

    /// Corrupting a valid file anywhere (header or data) gives an error or a valid block,
    /// never a panic; a block that loads runs.
    #[test]
    fn loader_survives_corrupted_files(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let block = CrateBlock::<f64>::new(&config(), &mut StdRng::seed_from_u64(6)).unwrap();
        let mut bytes = block.to_safetensors("").unwrap();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let keep = bytes.len() - cut.index(bytes.len() / 8 + 1);
        for b in [&bytes[..], &bytes[..keep]] {
            if let Ok(loaded) = CrateBlock::<f64>::from_safetensors(b, &config(), "") {
                let _ = loaded.forward_batch(&input(1, 3, 12));
            }
        }
    }
}

#[test]
fn weights_under_a_wrong_configuration_are_errors() {
    use mcr2::Precision;
    use mcr2::crate_layer::{Ista, Mssa};
    let block = CrateBlock::<f64>::new(&config(), &mut StdRng::seed_from_u64(7)).unwrap();
    let bytes = block.to_safetensors("").unwrap();
    // heads that do not match the projection's rows
    let bad = CrateBlockConfig {
        heads: 5,
        ..config()
    };
    assert!(CrateBlock::<f64>::from_safetensors(&bytes, &bad, "").is_err());
    // a non-positive LayerNorm ε
    let bad = CrateBlockConfig {
        ln_eps: -1.0,
        ..config()
    };
    assert!(CrateBlock::<f64>::from_safetensors(&bytes, &bad, "").is_err());
    // a white-box block has no reference state_dict: saving it is an error
    let u: Vec<Array2<f64>> = (0..3)
        .map(|k| {
            let mut b = Array2::zeros((12, 4));
            for c in 0..4 {
                b[(k * 4 + c, c)] = 1.0;
            }
            b
        })
        .collect();
    let wb = CrateBlock::white_box(
        Mssa::from_subspaces(&u, Precision::from_eps_sq(0.5).unwrap(), 0.5).unwrap(),
        Ista::from_parts(Array2::eye(12), 0.1, 0.1).unwrap(),
    )
    .unwrap();
    assert!(wb.to_safetensors("").is_err());
    // its parameters are listed all the same: the bases and the dictionary
    let names: Vec<String> = mcr2::nn::Layer::parameters(&wb)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["0.fn.qkv.weight", "1.fn.weight"]);
}

/// A checkpoint read under the wrong prefix says where its tensors are and how many.
#[test]
fn a_wrong_prefix_names_the_right_one() {
    use mcr2::crate_layer::{CrateClassifier, CrateConfig};
    let config = CrateConfig::new(16, 4, 5, 16, 2, 2, 8);
    let model = CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(0)).unwrap();
    let bytes = model.to_safetensors("model.").unwrap();
    let expected = CrateClassifier::<f32>::tensor_names(&config).len();
    match CrateClassifier::<f32>::from_safetensors(&bytes, &config, "") {
        Err(Error::InvalidWeights { reason, .. }) => {
            assert!(reason.contains("\"model.\""), "{reason}");
            assert!(
                reason.contains(&format!("{expected} of the {expected}")),
                "{reason}"
            );
        }
        other => panic!("expected InvalidWeights, got {other:?}"),
    }
    assert!(CrateClassifier::<f32>::from_safetensors(&bytes, &config, "model.").is_ok());
}

/// `to_checkpoint` stores the configuration with the weights; `from_checkpoint` needs
/// nothing else, and refuses files without it (or with an invalid one).
#[test]
fn checkpoints_carry_their_configuration() {
    use mcr2::crate_layer::{CrateClassifier, CrateConfig, Pooling};
    let mut config = CrateConfig::new(16, 4, 5, 16, 2, 2, 8);
    config.pooling = Pooling::Mean;
    config.encoder.block.ista_lambda = 0.25;
    let model = CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(1)).unwrap();
    let bytes = model.to_checkpoint().unwrap();
    let back = CrateClassifier::<f32>::from_checkpoint(&bytes).unwrap();
    assert_eq!(back, model);
    assert_eq!(back.config(), &config);
    // read in f64: the same configuration, weights widened exactly
    let wide = CrateClassifier::<f64>::from_checkpoint(&bytes).unwrap();
    assert_eq!(wide.config(), &config);
    // plain safetensors (no configuration) are refused with a pointer to from_safetensors
    let plain = model.to_safetensors("").unwrap();
    match CrateClassifier::<f32>::from_checkpoint(&plain) {
        Err(Error::InvalidWeights { reason, .. }) => assert!(reason.contains("from_safetensors")),
        other => panic!("expected InvalidWeights, got {other:?}"),
    }
    assert!(CrateClassifier::<f32>::from_checkpoint(&bytes[..bytes.len() / 2]).is_err());
}
