//! The rate-reduction loss family: each objective's value against an independent
//! computation of its formula (written here, with a hand-rolled log-det), its gradients
//! against central finite differences, f32 against f64; SimDINO against the reference
//! code's own numbers; the numerics (f64 accumulation, the eigenvalue fallback) and the
//! statistics (retract, sum).

use mcr2::rate::{
    ExpansionOf, SimDinoLoss, TotalCodingRate, ViewCovariances, closed_loop_class_rates_with_grad,
    closed_loop_rate_with_grad, head_coding_rate, multi_view_rate_reduction,
};
use mcr2::{FactorRoute, Labels, Precision, ReferenceLoss};
use ndarray::{Array2, ArrayView2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// `ln det(I + a·XᵀX)` by a plain Cholesky loop on the d × d side.
fn logdet_identity_plus(x: &Array2<f64>, a: f64) -> f64 {
    let d = x.ncols();
    let mut m = x.t().dot(x) * a;
    for i in 0..d {
        m[(i, i)] += 1.0;
    }
    let mut logdet = 0.0;
    for j in 0..d {
        let mut s = m[(j, j)];
        for k in 0..j {
            s -= m[(j, k)] * m[(j, k)];
        }
        let l = s.sqrt();
        m[(j, j)] = l;
        logdet += 2.0 * l.ln();
        for i in j + 1..d {
            let mut v = m[(i, j)];
            for k in 0..j {
                v -= m[(i, k)] * m[(j, k)];
            }
            m[(i, j)] = v / l;
        }
    }
    logdet
}

/// `R(Z) = ½ logdet(I + d/(nε²) ZᵀZ)` from the formula.
fn rate(z: &Array2<f64>, eps_sq: f64) -> f64 {
    0.5 * logdet_identity_plus(z, z.ncols() as f64 / (z.nrows() as f64 * eps_sq))
}

fn random(rng: &mut StdRng, n: usize, d: usize) -> Array2<f64> {
    Array2::from_shape_simple_fn((n, d), || rng.sample(StandardNormal))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// Five-point central differences of `f` at every entry of every view, against `grads`: the
/// worst relative error (over the gradient's largest entry).
///
/// The losses normalize rows or take cosines of them, whose derivatives grow like
/// `1/‖r‖^k` near a zero row, so the step follows the smallest norm of row `i` over the views
/// and their mean: `h = 10⁻⁴·min(1, ‖r‖)`. (A fixed step of 10⁻⁵ was off by 7·10⁻⁶ of the
/// largest entry on a row of norm 1.6·10⁻³.)
fn check_fd(
    views: &[Array2<f64>],
    grads: &[Array2<f64>],
    f: &dyn Fn(&[Array2<f64>]) -> f64,
) -> f64 {
    let scale = grads
        .iter()
        .flat_map(|g| g.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-12);
    let mean = views
        .iter()
        .fold(Array2::zeros(views[0].dim()), |m, v| m + v)
        / views.len() as f64;
    let norm = |a: &Array2<f64>, i: usize| a.row(i).dot(&a.row(i)).sqrt();
    let mut worst: f64 = 0.0;
    for v in 0..views.len() {
        for idx in ndarray::indices(views[v].dim()) {
            let i = idx.0;
            let smallest = views.iter().fold(norm(&mean, i), |m, w| m.min(norm(w, i)));
            let h = 1e-4 * smallest.min(1.0);
            let at = |step: f64| {
                let mut moved = views.to_vec();
                moved[v][idx] += step;
                f(&moved)
            };
            let fd = (8.0 * (at(h) - at(-h)) - (at(2.0 * h) - at(-2.0 * h))) / (12.0 * h);
            worst = worst.max((fd - grads[v][idx]).abs() / scale);
        }
    }
    worst
}

fn views_of(v: &[Array2<f64>]) -> Vec<ArrayView2<'_, f64>> {
    v.iter().map(|a| a.view()).collect()
}

fn cosine(a: ndarray::ArrayView1<f64>, b: ndarray::ArrayView1<f64>) -> f64 {
    a.dot(&b) / (a.dot(&a).sqrt() * b.dot(&b).sqrt())
}

#[test]
fn total_coding_rate_matches_its_formula() {
    let mut rng = StdRng::seed_from_u64(1);
    let views: Vec<Array2<f64>> = (0..3).map(|_| random(&mut rng, 6, 4)).collect();
    let objective = TotalCodingRate::new(Precision::from_eps_sq(0.2).unwrap(), 200.0).unwrap();
    let value = objective.evaluate(&views_of(&views)).unwrap();
    let mean = (&views[0] + &views[1] + &views[2]) / 3.0;
    let want_rate = views.iter().map(|z| rate(z, 0.2)).sum::<f64>() / 3.0;
    let want_inv = views
        .iter()
        .map(|z| (0..6).map(|i| cosine(z.row(i), mean.row(i))).sum::<f64>())
        .sum::<f64>()
        / 18.0;
    assert!(
        rel(value.rate, want_rate) < 1e-12,
        "{} {want_rate}",
        value.rate
    );
    assert!(rel(value.invariance, want_inv) < 1e-12);
    assert!(rel(value.objective, want_rate + 200.0 * want_inv) < 1e-12);
    assert_eq!(TotalCodingRate::emp_ssl(), objective);
}

#[test]
fn multi_view_rate_reduction_matches_its_formula() {
    let mut rng = StdRng::seed_from_u64(2);
    let views: Vec<Array2<f64>> = (0..4).map(|_| random(&mut rng, 3, 5)).collect();
    let (rr, _) =
        multi_view_rate_reduction(&views_of(&views), Precision::from_eps_sq(0.5).unwrap()).unwrap();
    let all = ndarray::concatenate(ndarray::Axis(0), &views_of(&views)).unwrap();
    let want_r = rate(&all, 0.5);
    // class i: row i of the 4 views; Rc = Σ_i (4/(2·12)) logdet(I + d/(4ε²) Z_iᵀZ_i)
    let want_rc: f64 = (0..3)
        .map(|i| {
            let zi = ndarray::stack(
                ndarray::Axis(0),
                &views.iter().map(|v| v.row(i)).collect::<Vec<_>>(),
            )
            .unwrap();
            4.0 / 24.0 * logdet_identity_plus(&zi, 5.0 / (4.0 * 0.5))
        })
        .sum();
    assert!(rel(rr.r, want_r) < 1e-12);
    assert!(rel(rr.rc, want_rc) < 1e-12);
    // the reference form with γ₁ = γ₂ = 1 is −ΔR
    let loss = ReferenceLoss::new(Precision::from_eps_sq(0.5).unwrap(), 1.0, 1.0).unwrap();
    let (v, _) = loss.evaluate_views(&views_of(&views)).unwrap();
    assert!(rel(-v.loss, want_r - want_rc) < 1e-12);
}

#[test]
fn closed_loop_rates_match_their_formula() {
    let mut rng = StdRng::seed_from_u64(3);
    let z = random(&mut rng, 8, 3);
    let zh = random(&mut rng, 8, 3);
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let (v, _, _) = closed_loop_rate_with_grad(&z, &zh, eps).unwrap();
    let union = ndarray::concatenate(ndarray::Axis(0), &[z.view(), zh.view()]).unwrap();
    let want = rate(&union, 0.5) - 0.5 * (rate(&z, 0.5) + rate(&zh, 0.5));
    assert!(rel(v.delta_r, want) < 1e-12);
    let labels = Labels::new(&[0, 1, 0, 1, 2, 2, 0, 1], 4).unwrap(); // class 3 empty
    let (c, _, _) = closed_loop_class_rates_with_grad(&z, &zh, &labels, eps).unwrap();
    let mut want_total = 0.0;
    for j in 0..3 {
        let rows: Vec<usize> = labels.members(j).collect();
        let (zj, zhj) = (
            z.select(ndarray::Axis(0), &rows),
            zh.select(ndarray::Axis(0), &rows),
        );
        let u = ndarray::concatenate(ndarray::Axis(0), &[zj.view(), zhj.view()]).unwrap();
        let t = rate(&u, 0.5) - 0.5 * (rate(&zj, 0.5) + rate(&zhj, 0.5));
        assert!(rel(c.class_terms[j], t) < 1e-12);
        want_total += t;
    }
    assert_eq!(c.class_terms[3], 0.0);
    assert!(rel(c.total, want_total) < 1e-12);
}

/// The SimDINO reference code (`MCRLoss(out_dim=3, expa_type, eps=0.05, coeff=1)`, float64,
/// `normalized=True`) run on these hand-set views gave (loss, comp, global_comp, expa) and
/// autograd gradients; quoted here.
#[test]
fn simdino_reproduces_the_reference_arithmetic() {
    let view = |seed: usize| {
        Array2::from_shape_fn((4, 3), |(i, j)| {
            ((3 * i + 5 * j + seed) % 7) as f64 / 4.0 - 0.75
        })
    };
    let student: Vec<Array2<f64>> = (0..3).map(view).collect();
    let teacher: Vec<Array2<f64>> = (3..5).map(view).collect();
    #[allow(clippy::type_complexity)]
    let cases: [(ExpansionOf, bool, [f64; 4], [f64; 3], [f64; 3]); 4] = [
        (
            ExpansionOf::Student,
            true,
            [-2.09029443332746, -0.0546875, -0.2265625, 2.14498193332746],
            [
                -0.049084154909554756,
                -0.17145151969306827,
                -0.38511607503701295,
            ],
            [-0.015625, -0.0625, 0.0],
        ),
        (
            ExpansionOf::Student,
            false,
            [
                -1.9145131833274598,
                -0.23046875,
                -0.578125,
                2.14498193332746,
            ],
            [
                -0.09595915490955476,
                -0.18707651969306827,
                -0.36949107503701295,
            ],
            [0.03125, -0.09375, 0.0],
        ),
        (
            ExpansionOf::StudentTeacherMean,
            true,
            [
                -1.2079336241245182,
                -0.0546875,
                -0.2265625,
                1.2626211241245182,
            ],
            [
                -0.10601829294225446,
                -0.08338663752273053,
                -0.14752407899816664,
            ],
            [
                0.13245071669534425,
                -0.0920602177685341,
                -0.1488905465878919,
            ],
        ),
        (
            ExpansionOf::StudentTeacherMean,
            false,
            [
                -1.0321523741245182,
                -0.23046875,
                -0.578125,
                1.2626211241245182,
            ],
            [
                -0.15289329294225446,
                -0.09901163752273053,
                -0.13189907899816664,
            ],
            [
                0.17932571669534425,
                -0.1233102177685341,
                -0.1488905465878919,
            ],
        ),
    ];
    for (expansion, no_diag, want, want_ds, want_dt) in cases {
        let loss = SimDinoLoss {
            expansion,
            no_diag,
            ..SimDinoLoss::default()
        };
        let (v, ds, dt) = loss
            .evaluate_with_grad(&views_of(&student), &views_of(&teacher))
            .unwrap();
        let got = [v.loss, v.compression, v.global_compression, v.expansion];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-13 * w.abs().max(1.0),
                "{expansion:?} {no_diag}: {got:?} vs {want:?}"
            );
        }
        for k in 0..3 {
            assert!(
                (ds[0][(1, k)] - want_ds[k]).abs() < 1e-13,
                "{:?}",
                ds[0].row(1)
            );
            assert!(
                (dt[1][(2, k)] - want_dt[k]).abs() < 1e-13,
                "{:?}",
                dt[1].row(2)
            );
        }
    }
}

#[test]
fn simdino_statistics_merge_to_the_one_shot_expansion() {
    let mut rng = StdRng::seed_from_u64(5);
    let views: Vec<Array2<f64>> = (0..2).map(|_| random(&mut rng, 12, 4)).collect();
    let mut one = ViewCovariances::new(4, 2).unwrap();
    one.push(&views_of(&views)).unwrap();
    // three processes of 4 rows each, covariances summed (reduce_cov = 1)
    let mut merged = ViewCovariances::new(4, 2).unwrap();
    for p in 0..3 {
        let part: Vec<ArrayView2<f64>> = views
            .iter()
            .map(|v| v.slice(ndarray::s![4 * p..4 * p + 4, ..]))
            .collect();
        let mut local = ViewCovariances::new(4, 2).unwrap();
        local.push(&part).unwrap();
        merged.merge(&local).unwrap();
    }
    let (a, b) = (
        one.expansion(0.05).unwrap(),
        merged.expansion(0.05).unwrap(),
    );
    assert!(rel(a.value, b.value) < 1e-13);
    // the formula: γ (1/V) Σ_v ½ logdet(I + p/(M ε²) Σ_v), γ = (p + M)/(p M)
    let (p, m) = (4.0, 12.0);
    let want = (p + m) / (p * m)
        * views
            .iter()
            .map(|z| 0.5 * logdet_identity_plus(z, p / (m * 0.05)))
            .sum::<f64>()
        / 2.0;
    assert!(rel(a.value, want) < 1e-12);
    assert!(a.factors.iter().all(|f| f.route == FactorRoute::Cholesky));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Every loss's gradient against central differences (f64, 1e-6 of the largest entry).
    #[test]
    fn gradients_match_finite_differences(seed in 0u64..1000, n in 3usize..6, d in 2usize..5, v in 2usize..4) {
        let mut rng = StdRng::seed_from_u64(seed);
        let views: Vec<Array2<f64>> = (0..v).map(|_| random(&mut rng, n, d)).collect();
        let eps = Precision::from_eps_sq(0.5).unwrap();

        let tcr = TotalCodingRate::new(eps, 3.0).unwrap();
        let (_, g) = tcr.evaluate_with_grad(&views_of(&views)).unwrap();
        let e = check_fd(&views, &g, &|vs| tcr.evaluate(&views_of(vs)).unwrap().objective);
        prop_assert!(e < 1e-6, "TCR {e:e}");

        let (_, g) = multi_view_rate_reduction(&views_of(&views), eps).unwrap();
        let e = check_fd(&views, &g, &|vs| multi_view_rate_reduction(&views_of(vs), eps).unwrap().0.delta_r);
        prop_assert!(e < 1e-6, "multi-view {e:e}");

        let loss = ReferenceLoss::new(eps, 2.0, 0.5).unwrap();
        let (_, g) = loss.evaluate_views(&views_of(&views)).unwrap();
        let e = check_fd(&views, &g, &|vs| loss.evaluate_views(&views_of(vs)).unwrap().0.loss);
        prop_assert!(e < 1e-6, "multi-view reference {e:e}");

        let (_, gz, gzh) = closed_loop_rate_with_grad(&views[0], &views[1], eps).unwrap();
        let e = check_fd(&views[..2], &[gz, gzh], &|vs| closed_loop_rate_with_grad(&vs[0], &vs[1], eps).unwrap().0.delta_r);
        prop_assert!(e < 1e-6, "closed loop {e:e}");

        let labels = Labels::new(&(0..n).map(|i| i % 2).collect::<Vec<_>>(), 2).unwrap();
        let (_, gz, gzh) = closed_loop_class_rates_with_grad(&views[0], &views[1], &labels, eps).unwrap();
        let e = check_fd(&views[..2], &[gz, gzh], &|vs| closed_loop_class_rates_with_grad(&vs[0], &vs[1], &labels, eps).unwrap().0.total);
        prop_assert!(e < 1e-6, "closed loop per class {e:e}");

        // the student views, then one teacher view of the same shape
        let teacher = random(&mut rng, n, d);
        let all: Vec<Array2<f64>> = views.iter().cloned().chain([teacher]).collect();
        for expansion in [ExpansionOf::Student, ExpansionOf::StudentTeacherMean] {
            let loss = SimDinoLoss { expansion, ..SimDinoLoss::default() };
            let eval = |a: &[Array2<f64>]| loss.evaluate_with_grad(&views_of(&a[..v]), &views_of(&a[v..])).unwrap();
            let (_, ds, dt) = eval(&all);
            let grads: Vec<Array2<f64>> = ds.into_iter().chain(dt).collect();
            let e = check_fd(&all, &grads, &|a| eval(a).0.loss);
            prop_assert!(e < 1e-6, "SimDINO {expansion:?} {e:e}");
        }
    }
}

/// f32 against f64: each loss in f32 agrees with f64 to f32 accuracy.
#[test]
fn f32_agrees_with_f64() {
    let mut rng = StdRng::seed_from_u64(7);
    let views: Vec<Array2<f64>> = (0..3).map(|_| random(&mut rng, 8, 4)).collect();
    let v32: Vec<Array2<f32>> = views.iter().map(|v| v.mapv(|x| x as f32)).collect();
    let w32: Vec<ArrayView2<f32>> = v32.iter().map(|v| v.view()).collect();
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let tcr = TotalCodingRate::new(eps, 2.0).unwrap();
    let a = tcr.evaluate(&views_of(&views)).unwrap().objective;
    let b = tcr.evaluate(&w32).unwrap().objective;
    assert!(rel(b as f64, a) < 1e-5);
    let a = multi_view_rate_reduction(&views_of(&views), eps)
        .unwrap()
        .0
        .delta_r;
    let b = multi_view_rate_reduction(&w32, eps).unwrap().0.delta_r;
    assert!(rel(b as f64, a) < 1e-5);
    let a = closed_loop_rate_with_grad(&views[0], &views[1], eps)
        .unwrap()
        .0
        .delta_r;
    let b = closed_loop_rate_with_grad(&v32[0], &v32[1], eps)
        .unwrap()
        .0
        .delta_r;
    assert!((b as f64 - a).abs() < 1e-5 * a.abs().max(1.0));
    let loss = SimDinoLoss::default();
    let a = loss
        .evaluate_with_grad(&views_of(&views), &views_of(&views[..2]))
        .unwrap()
        .0
        .loss;
    let b = loss.evaluate_with_grad(&w32, &w32[..2]).unwrap().0.loss;
    assert!(rel(b as f64, a) < 1e-5);
}

/// The CRATE authors' measurement from its formula: per sequence `½ Σ_k logdet(I_N + p/(N ε²)
/// Ŵ_k Ŵ_kᵀ)` on the N × N side, then the mean and the Bessel-corrected deviation.
#[test]
fn head_coding_rate_matches_the_authors_formula() {
    let mut rng = StdRng::seed_from_u64(8);
    let (b, n, heads, p) = (3, 7, 2, 4);
    let w = ndarray::Array3::<f64>::from_shape_simple_fn((b, n, heads * p), || {
        rng.sample(StandardNormal)
    });
    let eps = Precision::from_eps_sq(0.01).unwrap();
    let m = head_coding_rate(&w, heads, eps).unwrap();
    let mut want = Vec::new();
    for s in 0..b {
        let mut total = 0.0;
        for k in 0..heads {
            let mut wk = w.slice(ndarray::s![s, .., k * p..(k + 1) * p]).to_owned();
            for mut row in wk.rows_mut() {
                let norm = row.dot(&row).sqrt();
                row.mapv_inplace(|v| v / norm);
            }
            // logdet(I_N + c Ŵ Ŵᵀ) is logdet(I + c XᵀX) with X = Ŵᵀ
            total += 0.5 * logdet_identity_plus(&wk.t().to_owned(), p as f64 / (n as f64 * 0.01));
        }
        want.push(total);
    }
    let mean = want.iter().sum::<f64>() / b as f64;
    let std = (want.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (b - 1) as f64).sqrt();
    for (g, w) in m.per_sequence.iter().zip(&want) {
        assert!(rel(*g, *w) < 1e-12);
    }
    assert!(rel(m.mean, mean) < 1e-12 && rel(m.std, std) < 1e-10);
    assert!(head_coding_rate(&w, 3, eps).is_err()); // 8 columns do not split into 3 heads
}

/// Bad input is an error, never a panic or NaN.
#[test]
fn bad_inputs_are_errors() {
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let a = Array2::<f64>::from_shape_fn((4, 3), |(i, j)| (i + j) as f64 + 1.0);
    let b = Array2::<f64>::from_shape_fn((4, 2), |(i, j)| (i * j) as f64 + 1.0);
    let mut nan = a.clone();
    nan[(1, 1)] = f64::NAN;
    let zero = Array2::<f64>::zeros((4, 3));
    let tcr = TotalCodingRate::new(eps, 1.0).unwrap();
    assert!(TotalCodingRate::new(eps, -1.0).is_err());
    assert!(TotalCodingRate::new(eps, f64::NAN).is_err());
    assert!(tcr.evaluate::<f64>(&[]).is_err());
    assert!(tcr.evaluate(&[a.view(), b.view()]).is_err());
    assert!(tcr.evaluate(&[a.view(), nan.view()]).is_err());
    assert!(tcr.evaluate(&[zero.view(), zero.view()]).is_err());
    assert!(multi_view_rate_reduction(&[a.view(), b.view()], eps).is_err());
    assert!(closed_loop_rate_with_grad(&a, &b, eps).is_err());
    assert!(closed_loop_rate_with_grad(&a, &nan, eps).is_err());
    let labels = Labels::new(&[0, 1, 0], 2).unwrap();
    assert!(closed_loop_class_rates_with_grad(&a, &a, &labels, eps).is_err());
    let loss = SimDinoLoss::default();
    // more teacher than student views; a single pair of the same view; bad eps
    assert!(
        loss.evaluate_with_grad(&[a.view()], &[a.view(), a.view()])
            .is_err()
    );
    assert!(loss.evaluate_with_grad(&[a.view()], &[a.view()]).is_err());
    let bad = SimDinoLoss {
        eps: 0.0,
        ..SimDinoLoss::default()
    };
    assert!(
        bad.evaluate_with_grad(&[a.view(), a.view()], &[a.view()])
            .is_err()
    );
    let mut stats = ViewCovariances::<f64>::new(3, 2).unwrap();
    assert!(stats.expansion(0.05).is_err()); // empty
    assert!(stats.push(&[a.view()]).is_err()); // one view of two
    assert!(stats.push(&[a.view(), nan.view()]).is_err());
    assert!(ViewCovariances::<f64>::new(0, 2).is_err());
    assert!(
        mcr2::rate::Convention::Paper { eps: -1.0 }
            .coding_rate(&a)
            .is_err()
    );
    assert!(mcr2::rate::Convention::simdino(0.05).loss().is_err());
    assert!(mcr2::rate::view_groups(0, 3).is_err());
}
