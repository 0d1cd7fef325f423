//! Backward passes against PyTorch autograd (the CRATE block vectors: `grad.x` and
//! `grad.param.*` for the loss `Σ out ⊙ cotangent`), f64, relative 1e-10.

mod common;

use common::{Tensors, manifest};
use mcr2::crate_layer::{CrateBlock, CrateBlockConfig};
use mcr2::ndarray::{ArrayD, Ix2, Ix3};
use mcr2::nn::{Checkpoint, Layer, Trainable};

/// `max |a − b| / max |b|`.
fn relative(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn block_gradients_match_autograd() {
    let m = manifest();
    for c in m["crate_block"].as_array().unwrap() {
        let file = c["file"].as_str().unwrap();
        let bytes = std::fs::read(common::data_dir().join(file)).unwrap();
        let config = CrateBlockConfig::new(
            c["dim"].as_u64().unwrap() as usize,
            c["heads"].as_u64().unwrap() as usize,
            c["dim_head"].as_u64().unwrap() as usize,
        );
        let t = Tensors::open(file);
        let x = t.f64("x").into_dimensionality::<Ix3>().unwrap();
        let (b, n, d) = x.dim();
        let rows = x.to_shape((b * n, d)).unwrap().to_owned();
        let block = CrateBlock::<f64>::from_safetensors(&bytes, &config, "param.").unwrap();
        let (out, cache) = block.forward_train(rows.view(), n).unwrap();
        // the training forward gives the inference forward's output
        let plain = block.forward_batch(&x).unwrap();
        let e = relative(
            &out.into_shape_with_order((b, n, d)).unwrap().into_dyn(),
            &plain.into_dyn(),
        );
        assert!(e < 1e-13, "{file}: training forward differs by {e:e}");

        let dy = t
            .f64("cotangent")
            .into_shape_with_order((b * n, d))
            .unwrap();
        let dy = dy.into_dimensionality::<Ix2>().unwrap();
        let mut grads = common::zero_gradients(&block);
        let dx = block.backward(&cache, dy.view(), &mut grads).unwrap();
        let e = relative(
            &dx.into_shape_with_order((b, n, d)).unwrap().into_dyn(),
            &t.f64("grad.x"),
        );
        println!("{file}: grad.x {e:e}");
        assert!(e < 1e-10, "{file}: grad.x {e:e}");
        for ((name, _), g) in block.parameters().iter().zip(&grads) {
            let e = relative(g, &t.f64(&format!("grad.param.{name}")));
            println!("{file}: grad.param.{name} {e:e}");
            assert!(e < 1e-10, "{file}: grad.param.{name} {e:e}");
        }
    }
}

#[path = "backward/finite_differences.rs"]
mod finite_differences;

#[path = "backward/crate_alpha.rs"]
mod crate_alpha;

#[path = "backward/crate_mae.rs"]
mod crate_mae;
