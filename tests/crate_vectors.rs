//! CRATE blocks against the reference vectors: weights loaded by their reference names,
//! forward output and every intermediate.

mod common;

use common::{Tensors, manifest};
use mcr2::crate_layer::{CrateBlock, CrateBlockConfig};
use mcr2::nn::Checkpoint;
use ndarray::{Array3, ArrayD, Ix3};

fn max_abs(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn blocks_match_reference_vectors() {
    let m = manifest();
    let cases = m["crate_block"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let file = c["file"].as_str().unwrap();
        let bytes = std::fs::read(common::data_dir().join(file)).unwrap();
        let config = CrateBlockConfig::new(
            c["dim"].as_u64().unwrap() as usize,
            c["heads"].as_u64().unwrap() as usize,
            c["dim_head"].as_u64().unwrap() as usize,
        );
        assert_eq!(config.project_out(), c["project_out"].as_bool().unwrap());
        let t = Tensors::open(file);
        let x: Array3<f64> = t.f64("x").into_dimensionality::<Ix3>().unwrap();

        // f64: every intermediate within 1e-10
        let block = CrateBlock::<f64>::from_safetensors(&bytes, &config, "param.").unwrap();
        let trace = block.forward_trace(&x).unwrap();
        let mut worst: f64 = 0.0;
        for (name, got) in [
            ("ln1", &trace.ln1),
            ("mssa", &trace.mssa),
            ("y", &trace.y),
            ("ln2", &trace.ln2),
            ("out", &trace.out),
        ] {
            let e = max_abs(&got.clone().into_dyn(), &t.f64(name));
            worst = worst.max(e);
            assert!(e < 1e-10, "{file} {name}: {e:e}");
        }
        let out = block.forward_batch(&x).unwrap();
        assert_eq!(out, trace.out);
        // one sequence at a time gives the same rows
        for b in 0..x.shape()[0] {
            let one = block.forward(&x.index_axis(ndarray::Axis(0), b)).unwrap();
            assert!(
                one.iter()
                    .zip(out.index_axis(ndarray::Axis(0), b))
                    .all(|(a, b)| (a - b).abs() < 1e-14)
            );
        }
        println!("{file}: worst intermediate error (f64) {worst:e}");

        // f32: within 1e-4
        let block32 = CrateBlock::<f32>::from_safetensors(&bytes, &config, "param.").unwrap();
        let trace32 = block32.forward_trace(&x.mapv(|v| v as f32)).unwrap();
        for (name, got) in [
            ("ln1", &trace32.ln1),
            ("mssa", &trace32.mssa),
            ("y", &trace32.y),
            ("ln2", &trace32.ln2),
            ("out", &trace32.out),
        ] {
            let e = max_abs(&got.mapv(f64::from).into_dyn(), &t.f64(name));
            assert!(e < 1e-4, "{file} {name} (f32): {e:e}");
        }
    }
}
