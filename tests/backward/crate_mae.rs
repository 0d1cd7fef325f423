//! CRATE-MAE's backward passes against central finite differences (f64, relative 1e-6):
//! the decoder layer and the whole masked autoencoder; and one AdamW step of a tiny CRATE-MAE
//! against the same step taken with finite-difference gradients.

use super::finite_differences::{
    layer_norm, model_differences, or_analytic, random, relative_to_differences, worst_error,
};
use mcr2::crate_layer::Mssa;
use mcr2::crate_mae::{CrateDecoderBlock, CrateMae, CrateMaeConfig, Masking};
use mcr2::ndarray::{Array4, ArrayD};
use mcr2::nn::{Checkpoint, Linear};
use mcr2::rand::{Rng, SeedableRng, rngs::StdRng};
use mcr2::train::{AdamW, AdamWConfig};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn decoder_layer(seed in 0u64..1000, b in 1usize..3, n in 1usize..4, heads in 1usize..3, p in 1usize..3) {
        let mut rng = StdRng::seed_from_u64(seed);
        let dim = (heads * p).max(3) + 1;
        let qkv = random(&mut rng, heads * p, dim, 0.6);
        let out = (random(&mut rng, dim, heads * p, 0.5), random(&mut rng, 1, dim, 0.3).row(0).to_owned());
        let layer = CrateDecoderBlock::from_parts(
            layer_norm(&mut rng, dim),
            Linear::from_parts(random(&mut rng, dim, dim, 0.6), None).unwrap(),
            layer_norm(&mut rng, dim),
            Mssa::from_parts(qkv, heads, Some(out)).unwrap(),
        )
        .unwrap();
        let x = random(&mut rng, b * n, dim, 1.0);
        prop_assert!(worst_error(&layer, &x, n, seed) < 1e-6);
    }
}

fn tiny() -> (CrateMae<f64>, Array4<f64>, Masking) {
    let mut config = CrateMaeConfig::new(4, 2, 4, 1, 2, 4, 1, 2);
    config.channels = 1;
    let mut rng = StdRng::seed_from_u64(21);
    let mut model = CrateMae::<f64>::new(&config, &mut rng).unwrap();
    model
        .update_parameters(&mut |_, mut p| {
            p.mapv_inplace(|v| 0.7 * v + 0.1 * (rng.random::<f64>() - 0.5))
        })
        .unwrap();
    let images = Array4::from_shape_simple_fn((2, 1, 4, 4), || rng.random::<f64>());
    let masking = Masking::random(2, 4, 0.5, &mut rng).unwrap();
    (model, images, masking)
}

#[test]
fn mae_gradients_and_one_adamw_step_match_finite_differences() {
    let (model, images, masking) = tiny();
    let (_, cache) = model.forward_train(&images, &masking).unwrap();
    let grads = model.backward(&cache).unwrap();
    let buffers = model
        .gradient_buffers()
        .into_iter()
        .map(|(_, g)| g)
        .collect();
    let fd = model_differences(&model, buffers, |m| {
        m.forward(&images, &masking).unwrap().loss
    });
    let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    for ((name, g), f) in names.iter().zip(&grads).zip(&fd) {
        let err = relative_to_differences(g, f);
        assert!(err < 1e-6, "{name}: {err:e}");
    }
    let step = |grads: &[ArrayD<f64>]| {
        let mut m = model.clone();
        let mut opt = AdamW::new(&m.parameters(), AdamWConfig::new(1e-3)).unwrap();
        opt.step(&mut m, grads).unwrap();
        m
    };
    // at a kink the step uses the analytic value on both sides
    let fd: Vec<ArrayD<f64>> = fd
        .iter()
        .zip(&grads)
        .map(|(f, g)| or_analytic(f, g))
        .collect();
    let (a, b) = (step(&grads), step(&fd));
    for ((name, pa), (_, pb)) in a.parameters().into_iter().zip(b.parameters()) {
        let err = pa
            .iter()
            .zip(pb.iter())
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(err < 1e-6, "{name}: {err:e}");
    }
    assert!(a != model, "the step moved the parameters");
    // the fixed position embeddings are not trained
    let (pa, pm) = (
        a.to_safetensors("").unwrap(),
        model.to_safetensors("").unwrap(),
    );
    let (sa, sm) = (
        safetensors::SafeTensors::deserialize(&pa).unwrap(),
        safetensors::SafeTensors::deserialize(&pm).unwrap(),
    );
    assert_eq!(
        sa.tensor("pos_embed").unwrap().data(),
        sm.tensor("pos_embed").unwrap().data()
    );
}
