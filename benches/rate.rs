//! ΔR value and value+gradient at the sizes of the PyTorch baseline
//! (d, n, k) = (128, 1000, 10), (512, 10⁴, 10), (32, 10⁵, 10), (1024, 500, 5);
//! unit-norm samples, ε² = 0.5, random hard labels, f32 and f64.
//!
//! `cargo bench --features parallel --bench rate` (2 threads on a 2-core machine; set
//! `RAYON_NUM_THREADS` to choose).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mcr2::{Float, Membership, Precision, rate_reduction, rate_reduction_with_grad_into};
use ndarray::Array2;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use std::hint::black_box;
use std::time::Duration;

const SIZES: [(usize, usize, usize); 4] = [
    (128, 1000, 10),
    (512, 10_000, 10),
    (32, 100_000, 10),
    (1024, 500, 5),
];

fn problem<T: Float>(d: usize, n: usize, k: usize) -> (Array2<T>, Membership<T>) {
    let mut rng = StdRng::seed_from_u64(0);
    let mut z = Array2::<f64>::from_shape_simple_fn((n, d), || rng.sample(StandardNormal));
    for mut row in z.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row.mapv_inplace(|x| x / norm);
    }
    let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..k)).collect();
    (z.mapv(T::from_f64), Membership::hard(&labels, k).unwrap())
}

fn bench_dtype<T: Float>(c: &mut Criterion, dtype: &str) {
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let mut group = c.benchmark_group(format!("delta_r_{dtype}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (d, n, k) in SIZES {
        let (z, m) = problem::<T>(d, n, k);
        let id = format!("d={d} n={n} k={k}");
        group.bench_function(BenchmarkId::new("value", &id), |b| {
            b.iter(|| black_box(rate_reduction(black_box(&z), &m, eps).unwrap().delta_r))
        });
        let mut grad = Array2::<T>::zeros((n, d));
        group.bench_function(BenchmarkId::new("value+grad", &id), |b| {
            b.iter(|| {
                black_box(
                    rate_reduction_with_grad_into(black_box(&z), &m, eps, &mut grad)
                        .unwrap()
                        .delta_r,
                )
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_dtype::<f32>(c, "f32");
    bench_dtype::<f64>(c, "f64");
}

criterion_group!(rate, benches);
criterion_main!(rate);
