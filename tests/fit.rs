//! MCR² fitting: the closed-form optima of the regularized problem, and learning a linear map
//! on a mixture of subspaces.

use mcr2::data::SubspaceMixtureConfig;
use mcr2::data::mixture_of_subspaces;
use mcr2::fit::{FitConfig, LinearMap, ascend_regularized};
use mcr2::metrics::class_singular_values;
use mcr2::metrics::class_subspace_angles;
use mcr2::subspace::{NearestSubspace, SubspaceConfig};
use mcr2::{Labels, Membership, Precision, rate_reduction};
use ndarray::Array2;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// σ_k² = (η_k + √(η_k² − 4λ² N/N_k)) / (2λα_k), η_k = (α_k − α) − λ(N/N_k + 1).
fn sigma_sq(d: usize, n: usize, nk: usize, eps_sq: f64, lambda: f64) -> f64 {
    let (df, nf, nkf) = (d as f64, n as f64, nk as f64);
    let alpha = df / (nf * eps_sq);
    let alpha_k = df / (nkf * eps_sq);
    let eta = (alpha_k - alpha) - lambda * (nf / nkf + 1.0);
    (eta + (eta * eta - 4.0 * lambda * lambda * nf / nkf).sqrt()) / (2.0 * lambda * alpha_k)
}

fn run_regularized(
    d: usize,
    counts: &[usize],
    eps_sq: f64,
    lambda: f64,
    seed: u64,
) -> (Array2<f64>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = counts.iter().sum();
    let z0 = Array2::from_shape_simple_fn((n, d), || 0.5 * rng.sample::<f64, _>(StandardNormal));
    let labels: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(k, &c)| std::iter::repeat_n(k, c))
        .collect();
    let m = Membership::hard(&labels, counts.len()).unwrap();
    let mut config = FitConfig::new(Precision::from_eps_sq(eps_sq).unwrap());
    config.step = 0.5;
    config.max_iterations = 200_000;
    config.tolerance = 1e-11;
    let (z, report) = ascend_regularized(&z0, &m, lambda, &config, |_| {}).unwrap();
    assert!(
        report.converged(),
        "not converged after {} iterations",
        report.iterations
    );
    // the objective never decreases
    for w in report.history.windows(2) {
        assert!(
            w[1].objective >= w[0].objective - 1e-12,
            "objective decreased at {}",
            w[1].iteration
        );
    }
    (z, labels)
}

#[test]
fn regularized_optimum_matches_closed_form_equal_classes() {
    let (d, counts, eps_sq, lambda) = (8, [20usize, 20], 0.5, 0.05);
    let want = sigma_sq(d, 40, 20, eps_sq, lambda);
    assert!((want - 5.701941016011037).abs() < 1e-12);
    let (z, labels) = run_regularized(d, &counts, eps_sq, lambda, 1);
    let sv = class_singular_values(&z, &Labels::new(&labels, 2).unwrap()).unwrap();
    let mut rank = 0;
    for s in &sv {
        for &v in s.iter().filter(|v| **v > 1e-4) {
            let e = ((v * v) - want).abs() / want;
            assert!(e < 1e-5, "σ² = {} vs {want} (rel {e:e})", v * v);
            rank += 1;
        }
    }
    assert_eq!(
        rank, 8,
        "Σ ranks = {rank}, expected min(N, d) = 8; singular values {sv:?}"
    );
    let z1 = z.slice(ndarray::s![..20, ..]).to_owned();
    let z2 = z.slice(ndarray::s![20.., ..]).to_owned();
    let cross = z1.dot(&z2.t()).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(cross < 1e-8, "‖Z1ᵀZ2‖ = {cross:e}");
    println!(
        "equal classes: σ² = {want:.6}, ranks {:?}, cross-class Gram {cross:.1e}",
        sv.iter()
            .map(|s| s.iter().filter(|v| **v > 1e-4).count())
            .collect::<Vec<_>>()
    );
}

#[test]
fn regularized_optimum_matches_closed_form_unequal_classes() {
    // λ ≤ λ_max = d(√(N/N_max) − 1)/(N(√(N/N_max) + 1)ε²) = 0.0287 here
    let (d, counts, eps_sq, lambda) = (8, [12usize, 28], 0.5, 0.02);
    let (z, labels) = run_regularized(d, &counts, eps_sq, lambda, 2);
    let sv = class_singular_values(&z, &Labels::new(&labels, 2).unwrap()).unwrap();
    let mut ranks = Vec::new();
    for (k, s) in sv.iter().enumerate() {
        let want = sigma_sq(d, 40, counts[k], eps_sq, lambda);
        let nonzero: Vec<f64> = s.iter().copied().filter(|v| *v > 1e-4).collect();
        for v in &nonzero {
            let e = ((v * v) - want).abs() / want;
            assert!(e < 1e-5, "class {k}: σ² = {} vs {want} (rel {e:e})", v * v);
        }
        ranks.push(nonzero.len());
    }
    let z1 = z.slice(ndarray::s![..12, ..]).to_owned();
    let z2 = z.slice(ndarray::s![12.., ..]).to_owned();
    let cross = z1.dot(&z2.t()).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(cross < 1e-8, "‖Z1ᵀZ2‖ = {cross:e}");
    assert_eq!(ranks.iter().sum::<usize>(), 8, "Σ ranks = min(N, d)");
    println!(
        "unequal classes: ranks {ranks:?}, σ² = {:.6} / {:.6}, cross {cross:.1e}",
        sigma_sq(d, 40, 12, eps_sq, lambda),
        sigma_sq(d, 40, 28, eps_sq, lambda)
    );
}

/// The smallest off-diagonal entry of a k × k angle matrix.
fn min_angle(a: &Array2<f64>) -> f64 {
    let mut m = 90.0f64;
    for i in 0..a.nrows() {
        for j in (i + 1)..a.ncols() {
            m = m.min(a[(i, j)]);
        }
    }
    m
}

/// `M⁻¹` of a small symmetric positive definite matrix by Gauss–Jordan elimination.
fn inverse(m: &Array2<f64>) -> Array2<f64> {
    let k = m.nrows();
    let mut a = ndarray::concatenate![ndarray::Axis(1), m.view(), Array2::<f64>::eye(k).view()];
    for c in 0..k {
        let piv = a[(c, c)];
        a.row_mut(c).mapv_inplace(|v| v / piv);
        let pivot_row = a.row(c).to_owned();
        for r in (0..k).filter(|&r| r != c) {
            let f = a[(r, c)];
            a.row_mut(r).scaled_add(-f, &pivot_row);
        }
    }
    a.slice(ndarray::s![.., k..]).to_owned()
}

struct MapFit {
    /// smallest pairwise angle between the rank-3 class subspaces of the learned features
    angle: f64,
    /// ΔR of the learned features and of the map that makes the true subspaces exactly
    /// orthogonal (W* = B (BᵀB)⁻¹, B = [U_1 … U_4])
    delta_r: f64,
    delta_r_orthogonal: f64,
    report: mcr2::fit::FitReport,
    map: LinearMap<f64>,
    data: mcr2::data::SubspaceMixture<f64>,
}

/// 4 subspaces of dimension 3 in R^32, noise 0.1, 100 per class; W is 32 × 12 (12 = Σ p_k,
/// the dimension in which the MCR² optimum places the classes on orthogonal subspaces),
/// ε² = 1, step 1.
fn fit_map(seed: u64) -> MapFit {
    let mut rng = StdRng::seed_from_u64(seed);
    let data =
        mixture_of_subspaces::<f64, _>(&SubspaceMixtureConfig::new(32, 4, 3, 100, 0.1), &mut rng)
            .unwrap();
    let m = Membership::from(data.labels.clone());
    let eps = Precision::from_eps_sq(1.0).unwrap();
    let mut config = FitConfig::new(eps);
    config.step = 1.0;
    config.max_iterations = 3000;
    let (map, report) = LinearMap::fit(&data.samples, &m, 12, &config, &mut rng, |_| {}).unwrap();
    let z = map.transform(&data.samples).unwrap();
    let angle = min_angle(&class_subspace_angles(&z, &data.labels, 3).unwrap());
    let b = ndarray::concatenate(
        ndarray::Axis(1),
        &data.bases.iter().map(|u| u.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let orth = LinearMap::from_weights(b.dot(&inverse(&b.t().dot(&b)))).unwrap();
    let z_orth = orth.transform(&data.samples).unwrap();
    MapFit {
        angle,
        delta_r: rate_reduction(&z, &m, eps).unwrap().delta_r,
        delta_r_orthogonal: rate_reduction(&z_orth, &m, eps).unwrap().delta_r,
        report,
        map,
        data,
    }
}

/// A linear map learned on 4 subspaces of dimension 3 in R^32 (noise 0.1, 100 per class):
/// ΔR increases monotonically and the learned class subspaces end more than 80° apart.
/// Measured (seed 0, converged after 724 iterations): the smallest pairwise principal angle
/// between the rank-3 class subspaces goes from 58.8° to 82.7°.
#[test]
fn linear_map_separates_a_mixture_of_subspaces() {
    let fit = fit_map(0);
    let before = min_angle(&class_subspace_angles(&fit.data.samples, &fit.data.labels, 3).unwrap());
    let dr0 = fit.report.history.first().unwrap().delta_r;
    let worst_drop = fit
        .report
        .history
        .windows(2)
        .map(|w| w[0].delta_r - w[1].delta_r)
        .fold(0.0f64, f64::max);
    println!(
        "linear map: min pairwise angle {before:.1}° → {:.1}°, ΔR {dr0:.4} → {:.4} in {} iterations, largest decrease between iterations {worst_drop:.2e}",
        fit.angle, fit.delta_r, fit.report.iterations
    );
    assert!(fit.report.converged());
    assert!(fit.angle > 80.0, "smallest angle {}", fit.angle);
    assert!(worst_drop <= 1e-9, "ΔR decreased by {worst_drop:e}");
    assert!(fit.delta_r > dr0);
    // nearest subspace on the learned features classifies held-out samples (same seed: the
    // same bases, which are drawn first; then fresh samples)
    let test = mixture_of_subspaces::<f64, _>(
        &SubspaceMixtureConfig::new(32, 4, 3, 50, 0.1),
        &mut StdRng::seed_from_u64(0),
    )
    .unwrap();
    let z = fit.map.transform(&fit.data.samples).unwrap();
    let ns = NearestSubspace::fit(&z, &fit.data.labels, &SubspaceConfig::new(3)).unwrap();
    let acc = ns
        .accuracy(&fit.map.transform(&test.samples).unwrap(), &test.labels)
        .unwrap();
    assert!(acc > 0.9, "accuracy {acc}");
}

/// The same fit on ten draws. Measured: 7 of 10 end above 80°, the smallest at 77.3°. Where
/// the angle stays below 80°, that is ΔR's own preference, not the optimizer's: on every draw
/// the learned map has a larger ΔR than the map that makes the true subspaces exactly
/// orthogonal (undoing their overlap amplifies the noise, which the compression term charges).
#[test]
fn linear_map_over_ten_draws() {
    let fits: Vec<MapFit> = (0..10).map(fit_map).collect();
    let angles: Vec<f64> = fits.iter().map(|f| f.angle).collect();
    println!("smallest pairwise angles: {angles:.1?}");
    for f in &fits {
        println!(
            "ΔR learned {:.4}, orthogonalizing map {:.4}",
            f.delta_r, f.delta_r_orthogonal
        );
        assert!(f.report.converged());
        assert!(f.delta_r > f.delta_r_orthogonal);
    }
    assert!(angles.iter().all(|&a| a > 75.0));
    assert!(angles.iter().filter(|&&a| a > 80.0).count() >= 6);
}

/// Features ascended on the sphere: rows stay unit norm and ΔR increases monotonically.
#[test]
fn ascent_on_the_sphere() {
    use mcr2::fit::ascend_on_sphere;
    let mut rng = StdRng::seed_from_u64(9);
    let data =
        mixture_of_subspaces::<f64, _>(&SubspaceMixtureConfig::new(16, 3, 2, 30, 0.2), &mut rng)
            .unwrap();
    let m = Membership::from(data.labels.clone());
    let mut config = FitConfig::new(Precision::from_eps_sq(0.5).unwrap());
    config.step = 0.05;
    config.max_iterations = 300;
    let mut seen = 0;
    let (z, report) = ascend_on_sphere(&data.samples, &m, &config, |_| seen += 1).unwrap();
    assert_eq!(seen, report.iterations);
    assert!(
        z.rows()
            .into_iter()
            .all(|r| (r.dot(&r) - 1.0).abs() < 1e-12)
    );
    for w in report.history.windows(2) {
        assert!(
            w[1].delta_r >= w[0].delta_r - 1e-10,
            "ΔR decreased at {}",
            w[1].iteration
        );
    }
    let first = report.history.first().unwrap().delta_r;
    let last = rate_reduction(&z, &m, config.eps).unwrap().delta_r;
    assert!(last > first + 0.5, "{first} → {last}");
}

#[test]
fn fit_parameters_are_checked() {
    let z = Array2::<f64>::eye(4);
    let m = Membership::hard(&[0, 0, 1, 1], 2).unwrap();
    let mut config = FitConfig::new(Precision::from_eps_sq(0.5).unwrap());
    config.step = 0.0;
    assert!(ascend_regularized(&z, &m, 0.1, &config, |_| {}).is_err());
    let config = FitConfig::new(Precision::from_eps_sq(0.5).unwrap());
    assert!(ascend_regularized(&z, &m, -0.1, &config, |_| {}).is_err());
    assert!(LinearMap::fit(&z, &m, 0, &config, &mut StdRng::seed_from_u64(0), |_| {}).is_err());
    let bad = Membership::hard(&[0, 1, 1], 2).unwrap();
    assert!(ascend_regularized(&z, &bad, 0.1, &config, |_| {}).is_err());
    let map = LinearMap::from_weights(Array2::<f64>::eye(4)).unwrap();
    assert!(map.transform(&Array2::<f64>::eye(3)).is_err());
    let mut config = FitConfig::new(Precision::from_eps_sq(0.5).unwrap());
    for f in [-0.1, 1.5, f64::NAN] {
        config.schedule = mcr2::fit::StepSchedule::Cosine { final_fraction: f };
        assert!(matches!(
            ascend_regularized(&z, &m, 0.1, &config, |_| {}),
            Err(mcr2::Error::InvalidParameter {
                name: "final_fraction",
                ..
            })
        ));
    }
}

/// On the digits a fixed step of 0.5 oscillates around the maximum; the cosine decay
/// settles higher.
#[test]
fn cosine_schedule_settles_where_a_fixed_step_oscillates() {
    let (train, _) = mcr2::data::digits().unwrap().normalized().split().unwrap();
    let m = Membership::from(train.labels.clone());
    let tail_range = |schedule| {
        let mut config = FitConfig::new(Precision::from_eps_sq(0.5).unwrap());
        config.max_iterations = 400;
        config.schedule = schedule;
        let mut rng = StdRng::seed_from_u64(0);
        let (_, report) = LinearMap::fit(&train.pixels, &m, 64, &config, &mut rng, |_| {}).unwrap();
        let tail: Vec<f64> = report.history[350..].iter().map(|p| p.delta_r).collect();
        let lo = tail.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = tail.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (hi - lo, *tail.last().unwrap())
    };
    let (fixed_range, fixed_last) = tail_range(mcr2::fit::StepSchedule::Constant);
    let (cosine_range, cosine_last) = tail_range(mcr2::fit::StepSchedule::Cosine {
        final_fraction: 0.02,
    });
    assert!(
        cosine_range < 0.1 * fixed_range,
        "ranges {cosine_range} vs {fixed_range}"
    );
    assert!(cosine_last > fixed_last, "{cosine_last} vs {fixed_last}");
}

/// An observer can stop every iterative fit; the report says so.
#[test]
fn observers_stop_runs() {
    use mcr2::coding::{Coder, alc};
    use mcr2::data::gaussian_toy;
    use mcr2::observe::Stop;
    use mcr2::redunet::{ReduNet, ReduNetConfig};
    use std::ops::ControlFlow;
    let stop_at = |n: usize| {
        move |i: usize| {
            if i + 1 >= n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    };
    let z = Array2::from_shape_fn((12, 4), |(i, j)| ((i * 5 + j * 3) % 7) as f64 + 0.3);
    let m = Membership::hard(&(0..12).map(|i| i % 3).collect::<Vec<_>>(), 3).unwrap();
    let config = FitConfig::new(Precision::from_eps_sq(0.5).unwrap());
    let (_, report) =
        ascend_regularized(&z, &m, 0.05, &config, |p| stop_at(4)(p.iteration)).unwrap();
    assert_eq!((report.iterations, report.stop), (4, Stop::Observer));
    assert_eq!(report.history.len(), 4);

    let centers = ndarray::array![[1.0, 0.0], [0.0, 1.0]];
    let (x, labels) = gaussian_toy(&centers, 20, 0.1, &mut StdRng::seed_from_u64(3)).unwrap();
    let (net, _, report) = ReduNet::fit(&x, &labels, &ReduNetConfig::default(), |p| {
        stop_at(3)(p.layer - 1)
    })
    .unwrap();
    assert_eq!(
        (report.iterations, report.stop, net.layers().len()),
        (3, Stop::Observer, 3)
    );
    let (_, _, full) = ReduNet::fit(
        &x,
        &labels,
        &ReduNetConfig {
            layers: 5,
            ..ReduNetConfig::default()
        },
        |_| {},
    )
    .unwrap();
    assert_eq!((full.iterations, full.stop), (5, Stop::MaxIterations));

    let coder = Coder::new(Precision::from_eps(0.1).unwrap());
    let seg = alc(&x, &coder, |p| stop_at(6)(p.merges)).unwrap();
    assert_eq!(
        (seg.stop, seg.trace.len(), seg.groups),
        (Stop::Observer, 6, 40 - 5)
    );
    let seg = alc(&x, &coder, |_| {}).unwrap();
    assert_eq!(seg.stop, Stop::Converged);
}

/// The default tolerance is stated for f64 and scaled for f32, so that an f32 fit reports
/// convergence where the f64 one does (with 1e-8 in both, rounding kept f32 from ever
/// getting there).
#[test]
fn f32_fits_report_convergence_too() {
    use mcr2::fit::{Progress, ascend_on_sphere};
    let cfg = SubspaceMixtureConfig::new(8, 2, 1, 20, 0.1);
    let mix = mixture_of_subspaces::<f64, _>(&cfg, &mut StdRng::seed_from_u64(0)).unwrap();
    let mut config = FitConfig::new(Precision::from_eps_sq(0.5).unwrap());
    config.max_iterations = 5000;
    let m64 = Membership::<f64>::from(mix.labels.clone());
    let (_, r64) = ascend_on_sphere(&mix.samples, &m64, &config, |_: &Progress| ()).unwrap();
    let x32 = mix.samples.mapv(|v| v as f32);
    let m32 = Membership::<f32>::from(mix.labels.clone());
    let (_, r32) = ascend_on_sphere(&x32, &m32, &config, |_: &Progress| ()).unwrap();
    println!(
        "f64: {} iterations, f32: {} iterations",
        r64.iterations, r32.iterations
    );
    assert!(r64.converged() && r32.converged());
    assert!(r32.iterations <= r64.iterations);
}
