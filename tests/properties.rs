//! Invariances, finite-difference gradients and streaming statistics, on random inputs.

use mcr2::{
    Labels, Membership, Precision, RateStats, ReferenceLoss, class_coding_rate,
    class_coding_rate_grad_membership, class_coding_rate_with_grad, coding_rate,
    coding_rate_with_grad, rate_reduction, rate_reduction_with_grad,
};
use ndarray::{Array2, Axis};
use proptest::prelude::*;

/// n × d matrix with entries in [-1, 1], plus labels in 0..k.
fn problem(
    max_n: usize,
    max_d: usize,
    max_k: usize,
) -> impl Strategy<Value = (Array2<f64>, Vec<usize>, usize)> {
    (1..=max_n, 1..=max_d, 1..=max_k).prop_flat_map(|(n, d, k)| {
        (
            proptest::collection::vec(-1.0f64..1.0, n * d),
            proptest::collection::vec(0..k, n),
            Just((n, d, k)),
        )
            .prop_map(|(v, labels, (n, d, k))| {
                (Array2::from_shape_vec((n, d), v).unwrap(), labels, k)
            })
    })
}

fn precision() -> impl Strategy<Value = Precision> {
    (0.05f64..2.0).prop_map(|e| Precision::from_eps(e).unwrap())
}

/// A random orthogonal d × d matrix as a product of Householder reflections.
fn orthogonal(d: usize, seeds: &[f64]) -> Array2<f64> {
    let mut q = Array2::<f64>::eye(d);
    for r in 0..d.min(4) {
        let v: Vec<f64> = (0..d)
            .map(|i| (seeds[(r * d + i) % seeds.len()] + 0.1 * (i as f64 + 1.0)).sin())
            .collect();
        let nv: f64 = v.iter().map(|x| x * x).sum();
        if nv < 1e-12 {
            continue;
        }
        let mut h = Array2::<f64>::eye(d);
        for i in 0..d {
            for j in 0..d {
                h[(i, j)] -= 2.0 * v[i] * v[j] / nv;
            }
        }
        q = q.dot(&h);
    }
    q
}

fn soft_pi(labels: &[usize], k: usize, seeds: &[f64]) -> Array2<f64> {
    let n = labels.len();
    let mut pi = Array2::<f64>::zeros((n, k));
    for i in 0..n {
        for j in 0..k {
            pi[(i, j)] = 0.05
                + (seeds[(i * k + j) % seeds.len()]).abs()
                + if labels[i] == j { 1.0 } else { 0.0 };
        }
        let s = pi.row(i).sum();
        pi.row_mut(i).mapv_inplace(|x| x / s);
    }
    pi
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rate_invariant_under_orthogonal_features((z, labels, k) in problem(30, 12, 4), eps in precision(),
                                                seeds in proptest::collection::vec(-3.0f64..3.0, 16)) {
        let q = orthogonal(z.ncols(), &seeds);
        let zq = z.dot(&q);
        let m = Membership::hard(&labels, k).unwrap();
        let a = rate_reduction(&z, &m, eps).unwrap();
        let b = rate_reduction(&zq, &m, eps).unwrap();
        prop_assert!(close(a.r, b.r, 1e-10), "{} {}", a.r, b.r);
        prop_assert!(close(a.rc, b.rc, 1e-10), "{} {}", a.rc, b.rc);
    }

    #[test]
    fn rate_invariant_under_sample_permutation((z, labels, k) in problem(30, 12, 4), eps in precision(),
                                               shift in 0usize..1000) {
        let n = z.nrows();
        let perm: Vec<usize> = (0..n).map(|i| (i * 7 + shift) % n).collect();
        // (i*7 + s) mod n is a permutation only when gcd(7, n) = 1; fall back to a rotation
        let perm = if n % 7 == 0 { (0..n).map(|i| (i + shift) % n).collect() } else { perm };
        let zp = z.select(Axis(0), &perm);
        let lp: Vec<usize> = perm.iter().map(|&i| labels[i]).collect();
        let a = rate_reduction(&z, &Membership::hard(&labels, k).unwrap(), eps).unwrap();
        let b = rate_reduction(&zp, &Membership::hard(&lp, k).unwrap(), eps).unwrap();
        prop_assert!(close(a.r, b.r, 1e-11));
        prop_assert!(close(a.rc, b.rc, 1e-11));
    }

    /// One-shot rates take each log-det on the smaller side; RateStats always on the d × d
    /// side. Pushing in chunks and merging in any order gives the one-shot values.
    #[test]
    fn sample_side_and_feature_side_agree_and_stats_stream((z, labels, k) in problem(40, 24, 5), eps in precision(),
                                                          cut in 0usize..40, seeds in proptest::collection::vec(-1.0f64..1.0, 8)) {
        let n = z.nrows();
        let cut = cut.min(n);
        let m = Membership::hard(&labels, k).unwrap();
        let one = rate_reduction(&z, &m, eps).unwrap();
        let mut a = RateStats::new(z.ncols(), k).unwrap();
        if cut > 0 {
            a.push(&z.slice(ndarray::s![..cut, ..]), &Labels::new(&labels[..cut], k).unwrap()).unwrap();
        }
        let mut b = RateStats::new(z.ncols(), k).unwrap();
        if cut < n {
            b.push(&z.slice(ndarray::s![cut.., ..]), &Labels::new(&labels[cut..], k).unwrap()).unwrap();
        }
        let mut ab = a.clone();
        ab.merge(&b).unwrap();
        let mut ba = b.clone();
        ba.merge(&a).unwrap();
        for s in [&ab, &ba] {
            let v = s.rate_reduction(eps).unwrap();
            prop_assert!(close(v.r, one.r, 1e-12), "R {} {}", v.r, one.r);
            prop_assert!(close(v.rc, one.rc, 1e-12), "Rc {} {}", v.rc, one.rc);
            prop_assert!(close(v.delta_r, one.delta_r, 1e-12));
        }
        // soft memberships too
        let pi = soft_pi(&labels, k, &seeds);
        let ms = Membership::soft(pi.clone()).unwrap();
        let one = rate_reduction(&z, &ms, eps).unwrap();
        let mut s = RateStats::new(z.ncols(), k).unwrap();
        for (lo, hi) in [(0, cut), (cut, n)] {
            if hi > lo {
                let part = Membership::soft(pi.slice(ndarray::s![lo..hi, ..]).to_owned()).unwrap();
                s.push_membership(&z.slice(ndarray::s![lo..hi, ..]), &part).unwrap();
            }
        }
        let v = s.rate_reduction(eps).unwrap();
        prop_assert!(close(v.rc, one.rc, 1e-12), "soft Rc {} {}", v.rc, one.rc);
        prop_assert!(close(v.r, one.r, 1e-12), "soft R {} {}", v.r, one.r);
    }

    #[test]
    fn delta_r_nonnegative_for_hard_labels((z, labels, k) in problem(40, 16, 5), eps in precision()) {
        let v = rate_reduction(&z, &Membership::hard(&labels, k).unwrap(), eps).unwrap();
        prop_assert!(v.delta_r >= -1e-12 * v.r.max(1.0), "ΔR = {}", v.delta_r);
    }

    #[test]
    fn rate_grows_as_eps_shrinks((z, _l, _k) in problem(30, 12, 1), e in 0.05f64..2.0, f in 0.1f64..0.99) {
        prop_assume!(z.iter().any(|&x| x != 0.0));
        let big = coding_rate(&z, Precision::from_eps(e).unwrap()).unwrap();
        let small = coding_rate(&z, Precision::from_eps(e * f).unwrap()).unwrap();
        prop_assert!(small > big, "{small} ≤ {big}");
    }
}

/// Five-point central finite differences of a scalar function of z (truncation error O(h⁴)).
fn fd(z: &Array2<f64>, f: impl Fn(&Array2<f64>) -> f64) -> Array2<f64> {
    let h = 1e-4;
    let mut g = Array2::zeros(z.dim());
    for idx in 0..z.len() {
        let (i, j) = (idx / z.ncols(), idx % z.ncols());
        let at = |t: f64| {
            let mut zt = z.clone();
            zt[(i, j)] += t;
            f(&zt)
        };
        g[(i, j)] = (-at(2.0 * h) + 8.0 * at(h) - 8.0 * at(-h) + at(-2.0 * h)) / (12.0 * h);
    }
    g
}

fn max_rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn gradients_match_finite_differences((z, labels, k) in problem(14, 10, 3), eps in (0.3f64..2.0).prop_map(|e| Precision::from_eps(e).unwrap()),
                                          seeds in proptest::collection::vec(-1.0f64..1.0, 8)) {
        let hard = Membership::hard(&labels, k).unwrap();
        let soft = Membership::soft(soft_pi(&labels, k, &seeds)).unwrap();
        let tol = 1e-6;
        let (_, g) = coding_rate_with_grad(&z, eps).unwrap();
        let e = max_rel(&g, &fd(&z, |x| coding_rate(x, eps).unwrap()));
        prop_assert!(e < tol, "∂R: {e:e}");
        for m in [&hard, &soft] {
            let (_, g) = class_coding_rate_with_grad(&z, m, eps).unwrap();
            let e = max_rel(&g, &fd(&z, |x| class_coding_rate(x, m, eps).unwrap()));
            prop_assert!(e < tol, "∂Rc: {e:e}");
            let (_, g) = rate_reduction_with_grad(&z, m, eps).unwrap();
            let e = max_rel(&g, &fd(&z, |x| rate_reduction(x, m, eps).unwrap().delta_r));
            prop_assert!(e < tol, "∂ΔR: {e:e}");
        }
        let loss = ReferenceLoss::new(eps, 3.0, 0.5).unwrap().with_trace_offset(1e-3).unwrap();
        let (_, g) = loss.evaluate_with_grad(&z, &hard).unwrap();
        let e = max_rel(&g, &fd(&z, |x| loss.evaluate(x, &hard).unwrap().loss));
        prop_assert!(e < tol, "∂loss: {e:e}");
    }

    #[test]
    fn membership_gradient_matches_finite_differences((z, labels, k) in problem(12, 8, 3), eps in (0.3f64..2.0).prop_map(|e| Precision::from_eps(e).unwrap()),
                                                     seeds in proptest::collection::vec(-1.0f64..1.0, 8)) {
        let pi = soft_pi(&labels, k, &seeds);
        let g = class_coding_rate_grad_membership(&z, &Membership::soft(pi.clone()).unwrap(), eps).unwrap();
        // Rc as a function of unconstrained Π entries (rows need not sum to 1 for this
        // derivative: perturb one entry at a time and evaluate the formula directly)
        let rc = |p: &Array2<f64>| -> f64 {
            let n = z.nrows() as f64;
            let d = z.ncols();
            let mut total = 0.0;
            for j in 0..p.ncols() {
                let t: f64 = p.column(j).sum();
                let mut gj = Array2::<f64>::zeros((d, d));
                for i in 0..z.nrows() {
                    let zi = z.row(i);
                    for a in 0..d { for b in 0..d { gj[(a, b)] += p[(i, j)] * zi[a] * zi[b]; } }
                }
                let s = ndarray::Array2::<f64>::eye(d) + gj * (d as f64 / (t * eps.eps_sq()));
                total += t / (2.0 * n) * logdet(&s);
            }
            total
        };
        let h = 1e-4;
        let mut worst: f64 = 0.0;
        for i in 0..pi.nrows() {
            for j in 0..pi.ncols() {
                let at = |t: f64| {
                    let mut p = pi.clone();
                    p[(i, j)] += t;
                    rc(&p)
                };
                // five-point stencil, truncation error O(h⁴)
                let num = (-at(2.0 * h) + 8.0 * at(h) - 8.0 * at(-h) + at(-2.0 * h)) / (12.0 * h);
                worst = worst.max((num - g[(i, j)]).abs() / num.abs().max(1e-2));
            }
        }
        prop_assert!(worst < 1e-6, "∂Rc/∂Π: {worst:e}");
    }
}

/// log det of an SPD matrix by an unpivoted LU (independent of the crate's Cholesky).
fn logdet(a: &Array2<f64>) -> f64 {
    let mut m = a.clone();
    let n = m.nrows();
    let mut s = 0.0;
    for c in 0..n {
        let p = m[(c, c)];
        s += p.ln();
        for r in (c + 1)..n {
            let f = m[(r, c)] / p;
            for q in c..n {
                m[(r, q)] -= f * m[(c, q)];
            }
        }
    }
    s
}

/// Empty class in the Π-gradient: the one-sided limit log(1 + d‖z_i‖²/ε²)/(2n).
#[test]
fn membership_gradient_empty_class_limit() {
    let z: Array2<f64> = ndarray::array![[1.0, 0.5], [0.0, 1.0], [0.3, -0.2]];
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let m = Membership::hard(&[0, 0, 0], 2).unwrap();
    let g = class_coding_rate_grad_membership(&z, &m, eps).unwrap();
    for i in 0..3 {
        let s: f64 = z.row(i).dot(&z.row(i));
        let want = (1.0 + 2.0 * s / 0.5).ln() / 6.0;
        assert!((g[(i, 1)] - want).abs() < 1e-14);
        // and a small mass moved there changes Rc by that rate
        let h = 1e-7;
        let mut pi = m.to_matrix();
        pi[(i, 0)] -= h;
        pi[(i, 1)] += h;
        let moved = class_coding_rate(&z, &Membership::soft(pi).unwrap(), eps).unwrap();
        let base = class_coding_rate(&z, &m, eps).unwrap();
        let num = (moved - base) / h;
        assert!(
            (num - (g[(i, 1)] - g[(i, 0)])).abs() < 1e-5,
            "{num} vs {}",
            g[(i, 1)] - g[(i, 0)]
        );
    }
}
