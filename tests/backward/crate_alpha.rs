//! CRATE-α's backward passes against central finite differences (f64, relative 1e-6): the
//! ODL step, MSSA without biases, the layer, and the whole classifier; and one AdamW step of
//! a tiny CRATE-α against the same step taken with finite-difference gradients.

use super::finite_differences::{
    layer_norm, model_differences, or_analytic, random, relative_to_differences, worst_error,
};
use mcr2::Labels;
use mcr2::crate_alpha::{CrateAlphaBlock, CrateAlphaClassifier, CrateAlphaConfig, Odl};
use mcr2::crate_layer::Mssa;
use mcr2::ndarray::{Array4, ArrayD};
use mcr2::rand::{Rng, SeedableRng, rngs::StdRng};
use mcr2::train::{AdamW, AdamWConfig, cross_entropy};
use proptest::prelude::*;

fn odl(rng: &mut StdRng, dim: usize, m: usize) -> Odl<f64> {
    // small ηλ so that few codes sit at the ReLU's kink
    Odl::from_parts(
        random(rng, dim, m, 0.8),
        random(rng, dim, m, 0.8),
        0.3,
        0.05,
    )
    .unwrap()
}

fn unbiased_mssa(rng: &mut StdRng, dim: usize, heads: usize, p: usize) -> Mssa<f64> {
    let qkv = random(rng, heads * p, dim, 0.6);
    let out = (heads != 1 || p != dim).then(|| random(rng, dim, heads * p, 0.5));
    Mssa::from_parts_unbiased(qkv, heads, out).unwrap()
}

/// [`worst_error`] at `x` and at `x` scaled by 1.001, the smaller: two stacked ReLUs put many
/// kinks in the way, and a kink that falls within the difference step of one input (with
/// one-sided slopes close enough to pass the kink test) spoils that input's differences
/// only, whereas a wrong gradient is wrong at both.
fn error<L: mcr2::nn::Trainable<f64> + Clone>(
    layer: &L,
    x: &mcr2::ndarray::Array2<f64>,
    n: usize,
    seed: u64,
) -> f64 {
    worst_error(layer, x, n, seed).min(worst_error(layer, &x.mapv(|v| 1.001 * v), n, seed))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn odl_backward(seed in 0u64..1000, rows in 1usize..5, dim in 1usize..4, ratio in 1usize..4) {
        let mut rng = StdRng::seed_from_u64(seed);
        let layer = odl(&mut rng, dim, ratio * dim);
        let x = random(&mut rng, rows, dim, 1.5);
        prop_assert!(error(&layer, &x, rows, seed) < 1e-6);
    }

    #[test]
    fn mssa_without_biases(seed in 0u64..1000, b in 1usize..3, n in 1usize..4, heads in 1usize..3, p in 1usize..3) {
        let mut rng = StdRng::seed_from_u64(seed);
        let dim = heads * p + 1;
        let layer = unbiased_mssa(&mut rng, dim, heads, p);
        let x = random(&mut rng, b * n, dim, 1.0);
        prop_assert!(error(&layer, &x, n, seed) < 1e-6);
    }

    #[test]
    fn crate_alpha_layer(seed in 0u64..1000, b in 1usize..3, n in 1usize..4, heads in 1usize..3, p in 1usize..3) {
        let mut rng = StdRng::seed_from_u64(seed);
        let dim = (heads * p).max(3);
        let layer = CrateAlphaBlock::from_parts(
            layer_norm(&mut rng, dim),
            unbiased_mssa(&mut rng, dim, heads, p),
            layer_norm(&mut rng, dim),
            odl(&mut rng, dim, 2 * dim),
        )
        .unwrap();
        let x = random(&mut rng, b * n, dim, 1.0);
        prop_assert!(error(&layer, &x, n, seed) < 1e-6);
    }
}

fn tiny() -> (CrateAlphaClassifier<f64>, Array4<f64>, Labels) {
    let config = CrateAlphaConfig::new(4, 2, 3, 4, 2, 2, 2);
    let mut rng = StdRng::seed_from_u64(11);
    let mut model = CrateAlphaClassifier::<f64>::new(&config, &mut rng).unwrap();
    // off the initialization: LayerNorms not identity, dictionaries small enough that the
    // codes are mostly away from the ReLU's kink
    model
        .update_parameters(&mut |_, mut p| {
            p.mapv_inplace(|v| 0.5 * v + 0.1 * (rng.random::<f64>() - 0.5))
        })
        .unwrap();
    let images = Array4::from_shape_simple_fn((3, 3, 4, 4), || rng.random::<f64>() - 0.5);
    (model, images, Labels::new(&[0, 2, 1], 3).unwrap())
}

fn loss(model: &CrateAlphaClassifier<f64>, images: &Array4<f64>, labels: &Labels) -> f64 {
    cross_entropy(&model.forward(images).unwrap(), labels, 0.0)
        .unwrap()
        .loss
}

#[test]
fn classifier_gradients_and_one_adamw_step_match_finite_differences() {
    let (model, images, labels) = tiny();
    let (logits, cache) = model.forward_train(&images).unwrap();
    let ce = cross_entropy(&logits, &labels, 0.0).unwrap();
    let grads = model.backward(&cache, Some(ce.grad.view()), None).unwrap();
    let buffers = model
        .gradient_buffers()
        .into_iter()
        .map(|(_, g)| g)
        .collect();
    let fd = model_differences(&model, buffers, |m| loss(m, &images, &labels));
    let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    for ((name, g), f) in names.iter().zip(&grads).zip(&fd) {
        let err = relative_to_differences(g, f);
        assert!(err < 1e-6, "{name}: {err:e}");
    }
    // one AdamW step with each set of gradients
    let config = AdamWConfig::new(1e-3);
    let step = |grads: &[ArrayD<f64>]| {
        let mut m = model.clone();
        let mut opt = AdamW::new(&m.parameters(), config).unwrap();
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
        // the update is lr·m̂/(√v̂ + ε): gradients equal to 1e-6 relative move the parameters
        // by the same amount up to a small fraction of the learning rate
        assert!(err < 1e-3 * 1e-3, "{name}: {err:e}");
    }
    assert!(a != model, "the step moved the parameters");
}
