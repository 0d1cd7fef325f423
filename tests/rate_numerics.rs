//! Numerics that never go NaN: f64 accumulation of f32 input, the eigenvalue fallback of a
//! failed Cholesky factor, the statistics' conditioning as documented, retract and sum.

use mcr2::{
    Accumulate, FactorRoute, Labels, Membership, Precision, RateStats, rate_reduction,
    rate_reduction_accumulated,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// n rows of norm `norm` in d dimensions, each a small perturbation of its class's
/// direction (so every class is badly conditioned), labels i mod k.
fn clustered(
    n: usize,
    d: usize,
    k: usize,
    norm: f64,
    spread: f64,
    seed: u64,
) -> (Array2<f64>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let centers = Array2::<f64>::from_shape_simple_fn((k, d), || rng.sample(StandardNormal));
    let labels: Vec<usize> = (0..n).map(|i| i % k).collect();
    let mut z = Array2::<f64>::zeros((n, d));
    for (i, mut row) in z.rows_mut().into_iter().enumerate() {
        for j in 0..d {
            row[j] = centers[(labels[i], j)] + spread * rng.sample::<f64, _>(StandardNormal);
        }
        let s = norm / row.dot(&row).sqrt();
        row.mapv_inplace(|v| v * s);
    }
    (z, labels)
}

/// Features of norm 30, ε = 0.01, every class smaller than d: f32 input accumulated in f64
/// agrees with the f64 evaluation of the same values to 1e-9 (here: exactly), while f32
/// evaluation loses digits (measured and printed).
#[test]
fn f32_input_accumulated_in_f64_keeps_f64_accuracy() {
    let (z, labels) = clustered(60, 32, 4, 30.0, 0.05, 1);
    let z32 = z.mapv(|v| v as f32);
    let exact_input = z32.mapv(f64::from);
    let eps = Precision::from_eps(0.01).unwrap();
    let m64 = Membership::hard(&labels, 4).unwrap();
    let m32 = Membership::<f32>::hard(&labels, 4).unwrap();
    let want = rate_reduction(&exact_input, &m64, eps).unwrap();
    let (got, grad) = rate_reduction_accumulated(&z32, &m32, eps, Accumulate::F64).unwrap();
    let e64 = rel(got.delta_r, want.delta_r)
        .max(rel(got.r, want.r))
        .max(rel(got.rc, want.rc));
    assert!(e64 <= 1e-9, "f64 accumulation: {e64:e}");
    assert_eq!(grad.dim(), (60, 32));
    let (input, _) = rate_reduction_accumulated(&z32, &m32, eps, Accumulate::Input).unwrap();
    let e32 = rel(input.delta_r, want.delta_r)
        .max(rel(input.r, want.r))
        .max(rel(input.rc, want.rc));
    println!(
        "norm 30, ε = 0.01: relative error of R, Rc, ΔR in f32: {e32:.2e}; accumulated in f64: {e64:.2e}"
    );
    assert!(
        e32 > 1e-9,
        "f32 evaluation was expected to lose digits ({e32:e})"
    );
    assert!(e32 < 1e-2);
    assert_eq!(Accumulate::default(), Accumulate::F64);
}

/// A rank-one class of norm 30 at ε = 0.01 in f32: `I + a·G` has eigenvalues 1 and about
/// 1e9, the f32 Cholesky fails, and the report answers a finite value from the eigenvalues
/// with a flag (the plain statistics answer an error, never NaN).
#[test]
fn a_failed_f32_cholesky_falls_back_to_the_eigenvalues() {
    let d = 16;
    let mut rng = StdRng::seed_from_u64(2);
    let u = Array2::<f64>::from_shape_simple_fn((1, d), || rng.sample(StandardNormal));
    let u = &u / u.row(0).dot(&u.row(0)).sqrt() * 30.0;
    let z = Array2::from_shape_fn((8, d), |(i, j)| u[(0, j)] * (1.0 + 1e-3 * i as f64));
    let z32 = z.mapv(|v| v as f32);
    let labels = Labels::new(&[0; 8], 1).unwrap();
    let eps = Precision::from_eps(0.01).unwrap();
    let mut stats = RateStats::<f32>::new(d, 1).unwrap();
    stats.push(&z32, &labels).unwrap();
    let report = stats.report(eps, true).unwrap();
    let fell_back = report.any_fallback();
    assert!(
        fell_back,
        "the f32 Cholesky was expected to fail: {report:?}"
    );
    let value = report.rates.delta_r;
    assert!(value.is_finite() && report.rates.r.is_finite() && report.rates.rc.is_finite());
    let total = report.total;
    assert_eq!(total.route, FactorRoute::Eigen);
    assert!(total.clamped > 0);
    assert!(total.min_eigenvalue.unwrap() < 1.0);
    // the value is that of the f64 statistics to f32 accuracy (the rank-one term dominates)
    let mut s64 = RateStats::<f64>::new(d, 1).unwrap();
    s64.push_f32(&z32, &labels).unwrap();
    let want = s64.report(eps, false).unwrap();
    assert!(!want.any_fallback());
    let e = rel(f64::from(report.rates.r), want.rates.r);
    println!(
        "f32 eigenvalue fallback: R = {} vs f64 {} (rel {e:.1e}), {} eigenvalues clamped, smallest {:.3e}",
        report.rates.r,
        want.rates.r,
        total.clamped,
        total.min_eigenvalue.unwrap()
    );
    assert!(e < 1e-6, "{e:e}");
    // the plain statistics refuse rather than answer garbage
    assert!(stats.coding_rate(eps).is_err());
}

/// The statistics' conditioning: their agreement with the one-shot value (which switches to
/// the singular values of the rows) as the condition number of `I + a·G` grows, in f64,
/// and where the f32 Cholesky starts to fail (the numbers in `RateStats`' docs).
#[test]
fn stats_conditioning_is_as_documented() {
    let (d, n) = (64, 48);
    let (z, _) = clustered(n, d, 1, 30.0, 1e-3, 3);
    let labels = Labels::new(&vec![0; n], 1).unwrap();
    let mut worst_at_1e11: f64 = 0.0;
    let mut f32_fails_from = f64::INFINITY;
    for exp in [4, 6, 7, 8, 9, 10, 11] {
        // κ(I + a·G) ≈ 1 + a·σ_max² with a = d/(nε²) and σ_max² ≈ n·900
        let kappa = 10f64.powi(exp);
        let eps_sq = d as f64 * 900.0 / kappa;
        let eps = Precision::from_eps_sq(eps_sq).unwrap();
        let one_shot = rate_reduction(&z, &Membership::from(labels.clone()), eps).unwrap();
        let mut s = RateStats::<f64>::new(d, 1).unwrap();
        s.push(&z, &labels).unwrap();
        let r = s.report(eps, false).unwrap().rates;
        let e = rel(r.r, one_shot.r);
        let mut s32 = RateStats::<f32>::new(d, 1).unwrap();
        s32.push(&z.mapv(|v| v as f32), &labels).unwrap();
        let f32_failed = s32.report(eps, false).unwrap().any_fallback();
        if f32_failed {
            f32_fails_from = f32_fails_from.min(kappa);
        }
        println!(
            "κ ≈ 1e{exp}: f64 statistics vs one-shot R: rel {e:.1e}; f32 Cholesky {}",
            if f32_failed { "fails" } else { "succeeds" }
        );
        if exp == 11 {
            worst_at_1e11 = e;
        }
    }
    assert!(worst_at_1e11 < 1e-6, "{worst_at_1e11:e}");
    assert!(
        f32_fails_from <= 1e9,
        "f32 Cholesky failed only from κ = {f32_fails_from:e}"
    );
}

/// Retracting a chunk and pushing it back restores the statistics to 1e-12; the sum of
/// shards equals the one-shot value; `+=` of a mismatched shard poisons, never panics.
#[test]
fn retract_push_and_sum() {
    let (z, labels) = clustered(40, 6, 3, 2.0, 0.5, 4);
    let labels = Labels::new(&labels, 3).unwrap();
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let mut s = RateStats::<f64>::new(6, 3).unwrap();
    s.push(&z, &labels).unwrap();
    let before = s.clone();
    let idx: Vec<usize> = (10..20).collect();
    let chunk = z.select(ndarray::Axis(0), &idx);
    let chunk_labels = labels.select(&idx).unwrap();
    s.retract(&chunk, &chunk_labels).unwrap();
    assert_eq!(s.n_samples(), 30);
    s.push(&chunk, &chunk_labels).unwrap();
    for j in 0..3 {
        let (a, b) = (s.gram(j).unwrap(), before.gram(j).unwrap());
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12 * scale));
        assert!(rel(s.class_weights()[j], before.class_weights()[j]) < 1e-12);
    }
    assert!(
        rel(
            s.rate_reduction(eps).unwrap().delta_r,
            before.rate_reduction(eps).unwrap().delta_r
        ) < 1e-12
    );
    // retracting every sample of class 0 empties it exactly: the rates of the rest
    let class0: Vec<usize> = labels.members(0).collect();
    let rest: Vec<usize> = (0..40).filter(|i| labels.to_vec()[*i] != 0).collect();
    let mut emptied = before.clone();
    emptied
        .retract(
            &z.select(ndarray::Axis(0), &class0),
            &labels.select(&class0).unwrap(),
        )
        .unwrap();
    assert_eq!(emptied.class_weights()[0], 0.0);
    assert!(emptied.gram(0).unwrap().iter().all(|&v| v == 0.0));
    let mut fresh = RateStats::<f64>::new(6, 3).unwrap();
    fresh
        .push(
            &z.select(ndarray::Axis(0), &rest),
            &labels.select(&rest).unwrap(),
        )
        .unwrap();
    let (a, b) = (
        emptied.rate_reduction(eps).unwrap(),
        fresh.rate_reduction(eps).unwrap(),
    );
    assert!(rel(a.delta_r, b.delta_r) < 1e-12 && a.class_terms[0] == 0.0);
    // more than held
    let mut small = RateStats::<f64>::new(6, 3).unwrap();
    assert!(small.retract(&chunk, &chunk_labels).is_err());

    // Sum over four shards = one shot
    let shards: Vec<RateStats<f64>> = (0..4)
        .map(|p| {
            let idx: Vec<usize> = (p * 10..p * 10 + 10).collect();
            let mut st = RateStats::new(6, 3).unwrap();
            st.push(
                &z.select(ndarray::Axis(0), &idx),
                &labels.select(&idx).unwrap(),
            )
            .unwrap();
            st
        })
        .collect();
    let total: RateStats<f64> = shards.iter().sum::<mcr2::Result<_>>().unwrap();
    let one = rate_reduction(&z, &Membership::from(labels.clone()), eps).unwrap();
    assert!(rel(total.rate_reduction(eps).unwrap().delta_r, one.delta_r) < 1e-12);
    let owned: mcr2::Result<RateStats<f64>> = shards.clone().into_iter().sum();
    assert_eq!(owned.unwrap(), total);
    let none: mcr2::Result<RateStats<f64>> = Vec::<RateStats<f64>>::new().into_iter().sum();
    assert!(none.is_err());

    // += of a matching shard adds; of a mismatched one marks the statistics
    let mut acc = shards[0].clone();
    acc += &shards[1];
    let mut two = shards[0].clone();
    two.merge(&shards[1]).unwrap();
    assert_eq!(acc, two);
    acc += &RateStats::new(5, 3).unwrap();
    assert!(acc.rate_reduction(eps).is_err());
    let mut other = shards[2].clone();
    assert!(other.merge(&acc).is_err());
}
