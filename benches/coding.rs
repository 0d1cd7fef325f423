//! Lossy coding: ALC on 2000 samples (three subspaces of dimensions 1, 2, 3 in R^5, noise
//! 0.01, ε = 0.03) and MICL on the same data.
//!
//! `cargo bench --bench coding` (single-threaded) or `cargo bench --features parallel --bench
//! coding` (the pair evaluations on the rayon pool).

use criterion::{Criterion, criterion_group, criterion_main};
use mcr2::Precision;
use mcr2::coding::{Coder, Micl, alc};
use mcr2::data::SubspaceMixtureConfig;
use mcr2::data::mixture_of_subspaces;
use rand::{SeedableRng, rngs::StdRng};
use std::hint::black_box;
use std::time::Duration;

fn benches(c: &mut Criterion) {
    let mut config = SubspaceMixtureConfig::new(5, 3, 1, 100, 0.01);
    config.subspace_dims = vec![1, 2, 3];
    config.samples = vec![667, 667, 666];
    config.unit_sphere = false;
    let data = mixture_of_subspaces::<f64, _>(&config, &mut StdRng::seed_from_u64(0)).unwrap();
    let coder = Coder::new(Precision::from_eps(0.03).unwrap());

    let mut group = c.benchmark_group("coding");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(20));
    group.bench_function("alc n=2000 d=5", |b| {
        b.iter(|| black_box(alc(black_box(&data.samples), &coder, |_| {}).unwrap()))
    });
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("micl fit+predict n=2000 d=5", |b| {
        b.iter(|| {
            let m = Micl::fit(&data.samples, &data.labels, coder).unwrap();
            black_box(m.predict(&data.samples).unwrap())
        })
    });
    group.finish();
}

criterion_group!(coding, benches);
criterion_main!(coding);
