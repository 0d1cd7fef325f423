//! Fit a mixture of subspaces with MCR²: learn a linear feature map that maximizes the rate
//! reduction, and see the class subspaces separate.
//!
//! `cargo run --release --example subspaces` (`--quick` for a short fit, `--plots DIR` for
//! SVG plots, default `target/plots`)
//!
//! Data: 4 random 3-dimensional subspaces of R^32, noise 0.1, 100 training and 50 test samples
//! per class on the unit sphere. The map W (32 × 12; 12 = Σ p_k is the dimension in which
//! the MCR² optimum puts the classes on orthogonal subspaces) is learned by gradient ascent
//! on ΔR(normalize(X W)), ε² = 1. Printed: ΔR of the features at the random initial map and
//! after the fit, the smallest principal angle between every pair of class subspaces, and the
//! test accuracy of the nearest-subspace classifier on the raw samples and on the learned
//! features.

mod common;

use mcr2::data::SubspaceMixtureConfig;
use mcr2::data::mixture_of_subspaces;
use mcr2::fit::{FitConfig, LinearMap};
use mcr2::metrics::class_singular_values;
use mcr2::metrics::class_subspace_angles;
use mcr2::subspace::{NearestSubspace, SubspaceConfig};
use mcr2::{Membership, Precision, rate_reduction};
use ndarray::Array2;
use rand::{SeedableRng, rngs::StdRng};

fn print_angles(name: &str, a: &Array2<f64>) {
    println!("{name}");
    for row in a.rows() {
        println!(
            "   {}",
            row.iter()
                .map(|v| format!("{v:6.1}°"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

const ABOUT: &str = "Fit a mixture of subspaces with MCR²: learn a linear feature map that maximizes the rate reduction, and see the class subspaces separate.";

const FLAGS: &[(&str, &str)] = &[(
    "--plots DIR",
    "directory for the SVG plots (default target/plots)",
)];

fn main() {
    common::main("subspaces", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let quick = common::quick();
    let (k, p, rank) = (4usize, 3usize, 3usize);
    let mut rng = StdRng::seed_from_u64(0);
    let train =
        mixture_of_subspaces::<f64, _>(&SubspaceMixtureConfig::new(32, k, p, 100, 0.1), &mut rng)?;
    // test samples: fresh draws from the same subspaces
    let test = train.draw(&SubspaceMixtureConfig::new(32, k, p, 50, 0.1), &mut rng)?;
    let test = (test.samples, test.labels);
    let eps = Precision::from_eps_sq(1.0)?;
    let membership = Membership::from(train.labels.clone());

    let raw = NearestSubspace::fit(&train.samples, &train.labels, &SubspaceConfig::new(rank))?;
    let raw_acc = raw.accuracy(&test.0, &test.1)?;

    let mut config = FitConfig::new(eps);
    config.step = 1.0;
    config.max_iterations = if quick { 300 } else { 3000 };
    let bar = common::progress_bar(config.max_iterations)?;
    let (map, report) =
        LinearMap::fit(&train.samples, &membership, k * p, &config, &mut rng, |p| {
            common::show_progress(&bar, p)
        })?;
    bar.finish_and_clear();

    let z = map.transform(&train.samples)?;
    let after = rate_reduction(&z, &membership, eps)?;
    let learned = NearestSubspace::fit(&z, &train.labels, &SubspaceConfig::new(rank))?;
    let learned_acc = learned.accuracy(&map.transform(&test.0)?, &test.1)?;

    println!("{k} subspaces of dimension {p} in R^32, noise 0.1, 100 training samples per class");
    println!(
        "fit: {} iterations{}",
        report.iterations,
        if report.converged() {
            " (converged)"
        } else {
            ""
        }
    );
    // ΔR of the features normalize(X W) at the random initial W and after the fit (both in
    // R^12, so comparable; ΔR grows with the dimension, so the raw samples' is not)
    let before = report.history.first().ok_or("the fit ran no iteration")?;
    println!(
        "ΔR   {:.4} → {:.4}   (R {:.4} → {:.4}, Rc {:.4} → {:.4})",
        before.delta_r, after.delta_r, before.r, after.r, before.rc, after.rc
    );
    print_angles(
        "smallest principal angle between class subspaces (rank 3), raw samples:",
        &class_subspace_angles(&train.samples, &train.labels, rank)?,
    );
    print_angles(
        "… learned features:",
        &class_subspace_angles(&z, &train.labels, rank)?,
    );
    println!(
        "nearest-subspace test accuracy: raw {:.1}%, learned features {:.1}%",
        100.0 * raw_acc,
        100.0 * learned_acc
    );

    let dir = common::plots_dir()?;
    let delta_r_plot =
        common::plot_delta_r(&dir, "subspaces_delta_r.svg", "ΔR during the fit", &report)?;
    // each class's share of energy σ_i² / Σ σ² in its first k·p directions, averaged over the
    // classes: the same scale and length before (R^32) and after (R^12)
    let mut series = Vec::new();
    for (name, data) in [
        ("raw samples (R^32)", &train.samples),
        ("learned features (R^12)", &z),
    ] {
        let per_class = class_singular_values(data, &train.labels)?;
        let mut share = vec![0.0; k * p];
        for s in &per_class {
            let total: f64 = s.iter().map(|v| v * v).sum();
            for (i, v) in s.iter().take(k * p).enumerate() {
                share[i] += v * v / total / per_class.len() as f64;
            }
        }
        println!(
            "energy in the first {p} directions of each class, {name}: {:.1}%",
            100.0 * share.iter().take(p).sum::<f64>()
        );
        series.push((name.to_string(), share));
    }
    common::line_chart(
        &dir.join("subspaces_singular_values.svg"),
        "share of each class's energy per singular direction (mean over classes)",
        "index of the singular value",
        "σ_i² / Σ σ²",
        &series,
    )?;
    println!(
        "plots: {} and {}",
        delta_r_plot.display(),
        dir.join("subspaces_singular_values.svg").display()
    );
    Ok(())
}
