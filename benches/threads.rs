//! Thread efficiency: the same three computations, to be run once with 1 and once with 2
//! threads (or N), so that the speed-up of the CRATE forward can be set against the
//! hardware's own limit, a large GEMM:
//!
//! * a 2048 × 2048 f32 GEMM (faer, the crate's backend, on the rayon pool);
//! * the whole CRATE-T classifier on 8 images of 224 × 224, f32;
//! * one CRATE-S block on 197 tokens, batch 1, f32.
//!
//! ```sh
//! for t in 1 2; do RAYON_NUM_THREADS=$t cargo bench --features parallel --bench threads -- --noplot; done
//! ```
//!
//! (criterion keeps the previous run as its baseline, so the second run prints the change.)

use criterion::{Criterion, criterion_group, criterion_main};
use faer::{Accum, Mat, Par};
use mcr2::crate_layer::{CrateBlock, CrateBlockConfig, CrateClassifier, CrateConfig};
use ndarray::{Array3, Array4};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use std::hint::black_box;
use std::time::Duration;

fn benches(c: &mut Criterion) {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let mut group = c.benchmark_group("threads");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    println!("RAYON_NUM_THREADS = {threads}");

    let mut rng = StdRng::seed_from_u64(0);
    let n = 2048;
    let a = Mat::<f32>::from_fn(n, n, |_, _| rng.sample(StandardNormal));
    let b = Mat::<f32>::from_fn(n, n, |_, _| rng.sample(StandardNormal));
    let mut out = Mat::<f32>::zeros(n, n);
    let par = if rayon::current_num_threads() > 1 {
        Par::rayon(0)
    } else {
        Par::Seq
    };
    group.bench_function("gemm 2048x2048 f32", |bench| {
        bench.iter(|| {
            faer::linalg::matmul::matmul(
                out.as_mut(),
                Accum::Replace,
                a.as_ref(),
                b.as_ref(),
                1.0,
                par,
            );
            black_box(out[(0, 0)])
        })
    });

    let model = CrateClassifier::<f32>::new(&CrateConfig::tiny(), &mut rng).unwrap();
    let images =
        Array4::<f32>::from_shape_simple_fn((8, 3, 224, 224), || rng.sample(StandardNormal));
    group.bench_function("CRATE-T model B=8 f32", |bench| {
        bench.iter(|| black_box(model.forward(black_box(&images)).unwrap()))
    });

    let config = CrateBlockConfig::small();
    let block = CrateBlock::<f32>::new(&config, &mut rng).unwrap();
    let x =
        Array3::<f32>::from_shape_simple_fn((1, 197, config.dim), || rng.sample(StandardNormal));
    group.bench_function("CRATE-S block B=1 f32", |bench| {
        bench.iter(|| black_box(block.forward_batch(black_box(&x)).unwrap()))
    });
    group.finish();
}

criterion_group!(threads, benches);
criterion_main!(threads);
