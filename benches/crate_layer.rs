//! CRATE block forward, and forward+backward, at the sizes of the PyTorch baseline: CRATE-T (dim 384, 6 heads × 64)
//! and CRATE-S (dim 576, 12 heads × 48), 197 tokens, batch 1 and 32, f32 and f64; and the
//! whole CRATE-T classifier on 8 images of 224 × 224.
//!
//! `cargo bench --features parallel --bench crate_layer` (2 threads on a 2-core machine; set
//! `RAYON_NUM_THREADS` to choose).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mcr2::Float;
use mcr2::crate_layer::{CrateBlock, CrateBlockConfig, CrateClassifier, CrateConfig};
use mcr2::nn::{Layer, Trainable};
use ndarray::{Array2, Array3, Array4};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use std::hint::black_box;
use std::time::Duration;

fn bench_dtype<T: Float>(c: &mut Criterion, dtype: &str) {
    let mut group = c.benchmark_group(format!("crate_block_{dtype}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, config) in [
        ("CRATE-T", CrateBlockConfig::tiny()),
        ("CRATE-S", CrateBlockConfig::small()),
    ] {
        let mut rng = StdRng::seed_from_u64(2);
        let block = CrateBlock::<T>::new(&config, &mut rng).unwrap();
        for b in [1usize, 32] {
            let x = Array3::<T>::from_shape_simple_fn((b, 197, config.dim), || {
                T::from_f64(rng.sample(StandardNormal))
            });
            let id = format!(
                "{name} dim={} h={}x{} N=197 B={b}",
                config.dim, config.heads, config.dim_head
            );
            group.bench_function(BenchmarkId::new("forward", &id), |bench| {
                bench.iter(|| black_box(block.forward_batch(black_box(&x)).unwrap()))
            });
            // the baseline's `out.sum().backward()`: ∂/∂x and every parameter's gradient
            // into fresh buffers, from an upstream gradient of ones
            let tokens = x
                .view()
                .into_shape_with_order((b * 197, config.dim))
                .unwrap();
            let ones = Array2::<T>::ones(tokens.dim());
            group.bench_function(
                BenchmarkId::new("forward+backward (x, params)", &id),
                |bench| {
                    bench.iter(|| {
                        let (_, cache) = block.forward_train(black_box(tokens), 197).unwrap();
                        let mut grads: Vec<_> = block
                            .gradient_buffers()
                            .into_iter()
                            .map(|(_, g)| g)
                            .collect();
                        let dx = block.backward(&cache, ones.view(), &mut grads).unwrap();
                        black_box((dx, grads))
                    })
                },
            );
        }
    }
    group.finish();
}

/// The whole CRATE-T classifier (seeded reference initialization) on 8 images of 224 × 224.
fn bench_model<T: Float>(c: &mut Criterion, dtype: &str) {
    let mut group = c.benchmark_group(format!("crate_model_{dtype}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let config = CrateConfig::tiny();
    let mut rng = StdRng::seed_from_u64(3);
    let model = CrateClassifier::<T>::new(&config, &mut rng).unwrap();
    let b = 8;
    let images = Array4::<T>::from_shape_simple_fn((b, 3, 224, 224), || {
        T::from_f64(rng.sample(StandardNormal))
    });
    let id = format!("CRATE-T full model 224x224 B={b} (6.09M params)");
    group.bench_function(BenchmarkId::new("forward", &id), |bench| {
        bench.iter(|| black_box(model.forward(black_box(&images)).unwrap()))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_dtype::<f32>(c, "f32");
    bench_dtype::<f64>(c, "f64");
    bench_model::<f32>(c, "f32");
    bench_model::<f64>(c, "f64");
}

criterion_group!(crate_layer, benches);
criterion_main!(crate_layer);
