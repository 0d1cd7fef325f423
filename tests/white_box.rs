//! The white-box claims of CRATE, on mixtures of low-dimensional subspaces with known
//! orthonormal bases, over many seeds.

use mcr2::Precision;
use mcr2::crate_layer::{Ista, Mssa, subspace_coding_rate_with_grad};
use ndarray::Array2;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// K orthonormal bases of dimension p in R^d (mutually orthogonal), by Gram–Schmidt.
fn bases(rng: &mut StdRng, d: usize, k: usize, p: usize) -> Vec<Array2<f64>> {
    let mut q: Vec<ndarray::Array1<f64>> = Vec::new();
    while q.len() < k * p {
        let mut v =
            ndarray::Array1::from_shape_simple_fn(d, || rng.sample::<f64, _>(StandardNormal));
        for u in &q {
            let c = v.dot(u);
            v.scaled_add(-c, u);
        }
        let nv = v.dot(&v).sqrt();
        if nv > 1e-8 {
            q.push(v / nv);
        }
    }
    (0..k)
        .map(|j| {
            let mut u = Array2::zeros((d, p));
            for c in 0..p {
                u.column_mut(c).assign(&q[j * p + c]);
            }
            u
        })
        .collect()
}

/// n unit-norm tokens near the subspaces (noise σ).
fn tokens(rng: &mut StdRng, u: &[Array2<f64>], n: usize, sigma: f64) -> Array2<f64> {
    let d = u[0].nrows();
    let mut z = Array2::zeros((n, d));
    for mut row in z.rows_mut() {
        let j = rng.random_range(0..u.len());
        let a = ndarray::Array1::from_shape_simple_fn(u[j].ncols(), || {
            rng.sample::<f64, _>(StandardNormal)
        });
        row.assign(&u[j].dot(&a));
        row.mapv_inplace(|v| v + sigma * rng.sample::<f64, _>(StandardNormal));
        let nr = row.dot(&row).sqrt();
        row.mapv_inplace(|v| v / nr);
    }
    z
}

fn rc(z: &Array2<f64>, u: &[Array2<f64>], eps: Precision) -> f64 {
    subspace_coding_rate_with_grad(z, u, eps).unwrap().0
}

#[test]
fn compression_gradient_matches_finite_differences() {
    let eps = Precision::from_eps_sq(1.0).unwrap();
    for seed in 0..10 {
        let mut rng = StdRng::seed_from_u64(seed);
        let u = bases(&mut rng, 12, 3, 3);
        let z = tokens(&mut rng, &u, 9, 0.1);
        let (_, g) = subspace_coding_rate_with_grad(&z, &u, eps).unwrap();
        let h = 1e-6;
        let mut worst: f64 = 0.0;
        for i in 0..z.nrows() {
            for j in 0..z.ncols() {
                let mut zp = z.clone();
                zp[(i, j)] += h;
                let mut zm = z.clone();
                zm[(i, j)] -= h;
                let num = (rc(&zp, &u, eps) - rc(&zm, &u, eps)) / (2.0 * h);
                worst = worst.max((num - g[(i, j)]).abs());
            }
        }
        let scale = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(worst < 1e-7 * scale.max(1.0), "seed {seed}: {worst:e}");
    }
}

/// Where the first-order approximation holds (‖β (U_kᵀZ)ᵀ(U_kᵀZ)‖ < 1), the white-box MSSA
/// update points along −∇Rc (cosine > 0) and a small step along it decreases Rc.
#[test]
fn mssa_update_descends_on_compression() {
    let (d, k, p, n) = (16, 4, 4, 20);
    let eps = Precision::from_eps_sq(1.0).unwrap();
    let beta = p as f64 / (n as f64 * eps.eps_sq());
    let (mut valid, mut min_cos, mut sum_cos, mut max_change) =
        (0, f64::INFINITY, 0.0, f64::NEG_INFINITY);
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let u = bases(&mut rng, d, k, p);
        let z = tokens(&mut rng, &u, n, 0.1);
        // spectral norm of β WᵀW (p × p) by power iteration
        let holds = u.iter().all(|uk| {
            let w = z.dot(uk);
            let m = w.t().dot(&w) * beta;
            let mut v = ndarray::Array1::from_elem(p, 1.0);
            let mut lam = 0.0;
            for _ in 0..200 {
                let mv = m.dot(&v);
                lam = mv.dot(&mv).sqrt();
                v = mv / lam;
            }
            lam < 1.0
        });
        if !holds {
            continue;
        }
        valid += 1;
        let mssa = Mssa::from_subspaces(&u, eps, 1.0).unwrap();
        let step = mssa.forward(&z).unwrap();
        let (r0, g) = subspace_coding_rate_with_grad(&z, &u, eps).unwrap();
        let cos = -(&g * &step).sum()
            / (g.iter().map(|v| v * v).sum::<f64>().sqrt()
                * step.iter().map(|v| v * v).sum::<f64>().sqrt());
        assert!(cos > 0.0, "seed {seed}: cosine {cos}");
        min_cos = min_cos.min(cos);
        sum_cos += cos;
        let unit = &step / step.iter().map(|v| v * v).sum::<f64>().sqrt();
        let r1 = rc(&(&z + &(&unit * 1e-3)), &u, eps);
        assert!(r1 < r0, "seed {seed}: Rc {r0} → {r1}");
        max_change = max_change.max(r1 - r0);
    }
    assert!(
        valid >= 100,
        "only {valid} seeds satisfied the approximation condition"
    );
    println!(
        "MSSA vs −∇Rc over {valid} seeds: min cosine {min_cos:.4}, mean {:.4}; Rc change for a 1e-3 step ≤ {max_change:.3e}",
        sum_cos / valid as f64
    );
}

/// ISTA never increases λ‖z‖₁ + ½‖x − Dz‖² from a non-negative start when η ≤ 1/‖D‖².
#[test]
fn ista_step_never_increases_lasso() {
    let (d, n) = (12, 7);
    let (mut min_decrease, mut max_change) = (f64::INFINITY, f64::NEG_INFINITY);
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let dict = Array2::from_shape_simple_fn((d, d), || {
            rng.sample::<f64, _>(StandardNormal) / (d as f64).sqrt()
        });
        // ‖D‖² = largest eigenvalue of DᵀD, by power iteration
        let dtd = dict.t().dot(&dict);
        let mut v = ndarray::Array1::from_elem(d, 1.0);
        let mut lam = 0.0;
        for _ in 0..500 {
            let mv = dtd.dot(&v);
            lam = mv.dot(&mv).sqrt();
            v = mv / lam;
        }
        let eta = rng.random_range(0.05..1.0) / lam;
        let lambda = rng.random_range(0.0..0.5);
        let ista = Ista::from_parts(dict, eta, lambda).unwrap();
        let x = Array2::from_shape_simple_fn((n, d), || rng.sample::<f64, _>(StandardNormal));
        let z0 = Array2::from_shape_simple_fn((n, d), || rng.sample::<f64, _>(StandardNormal))
            .mapv(|v: f64| v.max(0.0));
        let before = ista.lasso_objective(&z0, &x).unwrap();
        let z1 = ista.step(&z0, &x).unwrap();
        assert!(z1.iter().all(|v| *v >= 0.0));
        let after = ista.lasso_objective(&z1, &x).unwrap();
        assert!(
            after <= before + 1e-12 * before.abs(),
            "seed {seed}: {before} → {after}"
        );
        min_decrease = min_decrease.min(before - after);
        max_change = max_change.max(after - before);
        // CRATE's step (z₀ = x) is the general step with z₀ = x
        let xp = x.mapv(|v: f64| v.abs());
        let a = ista.forward(&xp).unwrap();
        let b = ista.step(&xp, &xp).unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-12));
    }
    println!(
        "ISTA over 200 seeds: objective change ≤ {max_change:.3e} (smallest decrease {min_decrease:.3e})"
    );
}
