//! Segmentation of a mixture of subspaces by agglomerative lossy compression (ALC), and the
//! phase transition of the number of groups as the distortion ε grows.
//!
//! `cargo run --release --example segmentation` (`--quick` for a shorter ε sweep; `--plots DIR`,
//! default `target/plots`)
//!
//! Data: three random subspaces of R^5 of dimensions 1, 2 and 3, 100 samples each
//! (`x = U_k a + 0.01 e`, a and e standard normal), plus 15 outliers drawn uniformly from the
//! cube [−2, 2]^5. ALC at ε = 0.03 should find the three subspaces (the outliers end in small
//! groups of their own); the sweep counts the groups for ε from 10⁻³ to 3 and writes the curve
//! as an SVG plot.

mod common;

use mcr2::Precision;
use mcr2::coding::{Coder, alc};
use mcr2::data::SubspaceMixtureConfig;
use mcr2::data::mixture_of_subspaces;
use mcr2::metrics::segmentation_error;
use ndarray::{Array2, Axis, concatenate};
use plotters::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

const ABOUT: &str = "Segmentation of a mixture of subspaces by agglomerative lossy compression (ALC), and the phase transition of the number of groups as the distortion ε grows.";

const FLAGS: &[(&str, &str)] = &[(
    "--plots DIR",
    "directory for the SVG plots (default target/plots)",
)];

fn main() {
    common::main("segmentation", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut config = SubspaceMixtureConfig::new(5, 3, 1, 100, 0.01);
    config.subspace_dims = vec![1, 2, 3];
    config.unit_sphere = false;
    let data = mixture_of_subspaces::<f64, _>(&config, &mut rng)?;
    let outliers = Array2::from_shape_simple_fn((15, 5), || rng.random_range(-2.0..2.0));
    let x = concatenate(Axis(0), &[data.samples.view(), outliers.view()])?;
    let inliers: Vec<usize> = (0..data.labels.n_samples()).collect();

    let coder = Coder::new(Precision::from_eps(0.03)?);
    let start = std::time::Instant::now();
    let seg = alc(&x, &coder, |_| {})?;
    let elapsed = start.elapsed();
    let mut sizes = seg.labels.class_sizes();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let err = segmentation_error(&seg.labels.select(&inliers)?, &data.labels)?;
    println!(
        "{} samples (3 subspaces of dimensions 1, 2, 3 in R^5, 100 each, noise 0.01, and 15 outliers)",
        x.nrows()
    );
    println!(
        "ALC at ε = 0.03: {} groups in {:.1} ms, {} merges, coding length {:.1} → {:.1} bits",
        seg.groups,
        elapsed.as_secs_f64() * 1e3,
        seg.trace.len() - 1,
        seg.trace[0],
        seg.trace[seg.trace.len() - 1]
    );
    println!("  group sizes: {sizes:?}");
    println!(
        "  segmentation error on the 300 subspace samples: {:.1}%",
        100.0 * err
    );

    // ε sweep: the number of groups falls as ε grows
    let n_eps = if common::quick() { 7 } else { 25 };
    let (lo, hi) = (1e-3f64, 3.0f64);
    let mut curve = Vec::with_capacity(n_eps);
    println!("ε sweep (groups, error on the subspace samples):");
    for i in 0..n_eps {
        let eps = lo * (hi / lo).powf(i as f64 / (n_eps - 1) as f64);
        let s = alc(&x, &Coder::new(Precision::from_eps(eps)?), |_| {})?;
        let e = segmentation_error(&s.labels.select(&inliers)?, &data.labels)?;
        println!(
            "  ε = {eps:<9.4} {:>4} groups  {:>5.1}%",
            s.groups,
            100.0 * e
        );
        curve.push((eps, s.groups as f64));
    }

    let path = common::plots_dir()?.join("segmentation_groups.svg");
    let root = SVGBackend::new(&path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let y_max = curve.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("ALC: number of groups against ε", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), (0.8f64..y_max).log_scale())?;
    chart.configure_mesh().x_desc("ε").y_desc("groups").draw()?;
    chart.draw_series(LineSeries::new(curve.iter().copied(), BLUE.stroke_width(2)))?;
    chart.draw_series(curve.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    root.present()?;
    println!("plot: {}", path.display());
    Ok(())
}
