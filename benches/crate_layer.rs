//! CRATE block forward, and forward+backward, at the sizes of the PyTorch baseline: CRATE-T (dim 384, 6 heads × 64)
//! and CRATE-S (dim 576, 12 heads × 48), 197 tokens, batch 1 and 32, f32 and f64; and the
//! whole CRATE-T classifier on 8 images of 224 × 224; and the rate of the block's own matrix
//! product (tokens × dim by dim × dim, the backend faer on the rayon pool), the hardware's
//! ceiling for the block (`benches/compare_torch.py --what roofline`); and a ToST block of
//! CRATE-T's sizes, forward+backward at batch 32, and the causal TSSA of the same width on 32
//! sequences of 256 tokens (`tost_block_*`, no PyTorch counterpart).
//!
//! `cargo bench --features parallel --bench crate_layer` (2 threads on a 2-core machine; set
//! `RAYON_NUM_THREADS` to choose).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mcr2::Float;
use mcr2::crate_layer::{CrateBlock, CrateBlockConfig, CrateClassifier, CrateConfig};
use mcr2::nn::Trainable;
use mcr2::tost::{CausalTssa, CausalTssaConfig, ToStBlock, ToStBlockConfig};
use ndarray::{Array2, Array3, Array4, ArrayD, ArrayView2};
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
                |bench| bench.iter(|| black_box(train_pass(&block, tokens, 197, &ones))),
            );
        }
    }
    group.finish();
}

/// The training forward and the backward of a layer on `tokens` (sequences of `n`), from an
/// upstream gradient `ones`, into fresh gradient buffers.
fn train_pass<T: Float, L: Trainable<T>>(
    layer: &L,
    tokens: ArrayView2<'_, T>,
    n: usize,
    ones: &Array2<T>,
) -> (Array2<T>, Vec<ArrayD<T>>) {
    let (_, cache) = layer.forward_train(black_box(tokens), n).unwrap();
    let mut grads: Vec<_> = layer
        .gradient_buffers()
        .into_iter()
        .map(|(_, g)| g)
        .collect();
    let dx = layer.backward(&cache, ones.view(), &mut grads).unwrap();
    (dx, grads)
}

/// A ToST block of CRATE-T's sizes (dim 384, 6 heads, MLP 1536), batch 32 of 197 tokens, and
/// a causal TSSA of the same width, 32 sequences of 256 tokens: forward+backward
/// (x, params), as the CRATE blocks above.
fn bench_tost<T: Float>(c: &mut Criterion, dtype: &str) {
    let mut group = c.benchmark_group(format!("tost_block_{dtype}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let mut rng = StdRng::seed_from_u64(2);
    let block = ToStBlock::<T>::new(&ToStBlockConfig::new(384, 6), &mut rng).unwrap();
    let tokens = Array2::<T>::from_shape_simple_fn((32 * 197, 384), || {
        T::from_f64(rng.sample(StandardNormal))
    });
    let ones = Array2::<T>::ones(tokens.dim());
    let id = "ToST dim=384 h=6 mlp=1536 N=197 B=32";
    group.bench_function(
        BenchmarkId::new("forward+backward (x, params)", id),
        |bench| bench.iter(|| black_box(train_pass(&block, tokens.view(), 197, &ones))),
    );
    // the language model's causal attention alone, 32 sequences of 256 tokens
    let config = CausalTssaConfig {
        dim: 384,
        heads: 6,
        block_size: 256,
    };
    let causal = CausalTssa::<T>::new(&config, &mut rng).unwrap();
    let tokens = Array2::<T>::from_shape_simple_fn((32 * 256, 384), || {
        T::from_f64(rng.sample(StandardNormal))
    });
    let ones = Array2::<T>::ones(tokens.dim());
    let id = "causal TSSA dim=384 h=6 N=256 B=32";
    group.bench_function(
        BenchmarkId::new("forward+backward (x, params)", id),
        |bench| bench.iter(|| black_box(train_pass(&causal, tokens.view(), 256, &ones))),
    );
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

/// The block's projection product, B·197 tokens × dim by dim × dim, as the blocks run it:
/// `C = X·Wᵀ` with tokens as rows (row-major, as ndarray stores them), which is
/// `Cᵀ = W·Xᵀ` in faer's column-major terms; faer on the rayon pool when it has more than
/// one thread, as the crate's products above a few hundred thousand multiply-adds.
fn bench_gemm<T: faer::traits::RealField + Copy>(c: &mut Criterion, dtype: &str, of: fn(f64) -> T) {
    let mut group = c.benchmark_group(format!("crate_gemm_{dtype}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let par = product_threads();
    let mut rng = StdRng::seed_from_u64(4);
    for dim in [384usize, 576] {
        for b in [1usize, 32] {
            let m = b * 197;
            let mut sample = || of(rng.sample(StandardNormal));
            // column j of the column-major Xᵀ is token j's row of X
            let xt = faer::Mat::<T>::from_fn(dim, m, |_, _| sample());
            let w = faer::Mat::<T>::from_fn(dim, dim, |_, _| sample());
            let mut out_t = faer::Mat::<T>::zeros(dim, m);
            let id = format!("{m}x{dim} @ {dim}x{dim}");
            group.bench_function(BenchmarkId::new("matmul", &id), |bench| {
                bench.iter(|| {
                    faer::linalg::matmul::matmul(
                        out_t.as_mut(),
                        faer::Accum::Replace,
                        w.as_ref(),
                        xt.as_ref(),
                        of(1.0),
                        par,
                    );
                    black_box(out_t[(0, 0)])
                })
            });
        }
    }
    group.finish();
}

/// faer on the rayon pool when the `parallel` feature is on and the pool has more than one
/// thread; otherwise on the calling thread.
fn product_threads() -> faer::Par {
    #[cfg(feature = "parallel")]
    if rayon::current_num_threads() > 1 {
        return faer::Par::rayon(0);
    }
    faer::Par::Seq
}

fn benches(c: &mut Criterion) {
    bench_gemm(c, "f32", |v| v as f32);
    bench_gemm(c, "f64", |v| v);
    bench_dtype::<f32>(c, "f32");
    bench_dtype::<f64>(c, "f64");
    bench_model::<f32>(c, "f32");
    bench_model::<f64>(c, "f64");
    bench_tost::<f32>(c, "f32");
    bench_tost::<f64>(c, "f64");
}

criterion_group!(crate_layer, benches);
criterion_main!(crate_layer);
