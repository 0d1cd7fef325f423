//! One training step of the digits CRATE of `train_crate_digits` (8 × 8 images in patches of
//! 4, width 64, depth 3, 4 heads of 16, 10 classes), batch 32: the training forward,
//! cross-entropy with label smoothing 0.1, the backward, clipping to norm 1 and one AdamW
//! step (reference grouping), f32 and f64.
//!
//! `cargo bench --features parallel --bench train_step`; `benches/torch_train_step.py` times
//! the same step in PyTorch and prints both.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mcr2::Float;
use mcr2::Labels;
use mcr2::crate_layer::{CrateClassifier, CrateConfig};
use mcr2::train::{AdamW, AdamWConfig, clip_grad_norm, cross_entropy};
use ndarray::Array4;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use std::hint::black_box;
use std::time::Duration;

fn bench_dtype<T: Float>(c: &mut Criterion, dtype: &str) {
    let mut group = c.benchmark_group(format!("train_step_{dtype}"));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut config = CrateConfig::new(8, 4, 10, 64, 3, 4, 16);
    config.channels = 1;
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = CrateClassifier::<T>::new(&config, &mut rng).unwrap();
    let mut optimizer = AdamW::new(&model.parameters(), AdamWConfig::new(1e-4))
        .unwrap()
        .with_reference_grouping();
    let b = 32;
    let images =
        Array4::<T>::from_shape_simple_fn((b, 1, 8, 8), || T::from_f64(rng.sample(StandardNormal)));
    let labels = Labels::new(&(0..b).map(|i| i % 10).collect::<Vec<_>>(), 10).unwrap();
    let id = format!("digits CRATE 8x8 p4 dim64 L3 h4x16 B={b}");
    group.bench_function(BenchmarkId::new("step", &id), |bench| {
        bench.iter(|| {
            let (logits, cache) = model.forward_train(black_box(&images)).unwrap();
            let ce = cross_entropy(&logits, &labels, 0.1).unwrap();
            let mut grads = model.backward(&cache, Some(ce.grad.view()), None).unwrap();
            clip_grad_norm(&mut grads, 1.0).unwrap();
            optimizer.step(&mut model, &grads).unwrap();
            black_box(ce.loss)
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_dtype::<f32>(c, "f32");
    bench_dtype::<f64>(c, "f64");
}

criterion_group!(train_step, benches);
criterion_main!(train_step);
