//! ReduNet: a network whose every layer is computed in closed form from the training data
//! (a projected gradient step on ΔR), on the reference toys, a mixture of subspaces and the
//! handwritten digits.
//!
//! `cargo run --release --example redunet` (`--quick`: fewer layers; `--plots DIR`, default
//! `target/plots`)
//!
//! Printed per data set: ΔR of the training features before and after, the mean cosine
//! between class means, and held-out accuracy (π̂ of the last layer), for the digits next to
//! the nearest-subspace classifier on raw pixels with the same split. Plots: the 2D and 3D toy
//! features before and after, and ΔR per layer for every data set.

mod common;

use mcr2::Labels;
use mcr2::data::SubspaceMixtureConfig;
use mcr2::data::gaussian_toy;
use mcr2::data::mixture_of_subspaces;
use mcr2::metrics::class_means;
use mcr2::redunet::{ReduNet, ReduNetConfig};
use mcr2::subspace::{NearestSubspace, SubspaceConfig};
use ndarray::{Array2, Axis, array};
use plotters::prelude::*;
use rand::{SeedableRng, rngs::StdRng};

fn mean_cosine(z: &Array2<f64>, labels: &Labels) -> Result<f64, mcr2::Error> {
    let means = class_means(z, labels)?;
    let k = labels.n_classes();
    let mut cos = Vec::new();
    for a in 0..k {
        for b in (a + 1)..k {
            let (u, v) = (means.row(a), means.row(b));
            cos.push(u.dot(&v) / (u.dot(&u) * v.dot(&v)).sqrt());
        }
    }
    Ok(cos.iter().sum::<f64>() / cos.len() as f64)
}

struct Run {
    name: &'static str,
    net: ReduNet<f64>,
    z: Array2<f64>,
}

fn fit(
    name: &'static str,
    x: &Array2<f64>,
    labels: &Labels,
    config: &ReduNetConfig,
) -> Result<Run, Box<dyn std::error::Error>> {
    let bar = common::progress_bar(config.layers)?;
    let (net, z, _) = ReduNet::fit(x, labels, config, |p| {
        bar.set_position(p.layer as u64);
        bar.set_message(format!("ΔR {:.4}", p.delta_r));
    })?;
    bar.finish_and_clear();
    let h = net.history();
    println!(
        "{name}: {} layers, ΔR {:.4} → {:.4}, mean cosine between class means {:.4}",
        config.layers,
        h[0].delta_r,
        h[h.len() - 1].delta_r,
        mean_cosine(&z, labels)?
    );
    Ok(Run { name, net, z })
}

const ABOUT: &str = "ReduNet: a network whose every layer is computed in closed form from the training data (a projected gradient step on ΔR), on the reference toys, a mixture of subspaces and the handwritten digits.";

const FLAGS: &[(&str, &str)] = &[(
    "--plots DIR",
    "directory for the SVG plots (default target/plots)",
)];

fn main() {
    common::main("redunet", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let quick = common::quick();
    let layers = if quick { 30 } else { 200 };
    let dir = common::plots_dir()?;
    let toy_config = ReduNetConfig {
        layers,
        ..ReduNetConfig::default()
    };
    let mut runs = Vec::new();

    // the reference toys: classes at (1, 0), (0, 1) and at e1, e2, e3, noise 0.1
    for (name, centers) in [
        ("2D toy", array![[1.0, 0.0], [0.0, 1.0]]),
        (
            "3D toy",
            array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        ),
    ] {
        let (x, labels) = gaussian_toy(&centers, 100, 0.1, &mut StdRng::seed_from_u64(1))?;
        let (xt, lt) = gaussian_toy(&centers, 100, 0.1, &mut StdRng::seed_from_u64(2))?;
        let run = fit(name, &x, &labels, &toy_config)?;
        println!(
            "  held-out accuracy {:.1}%",
            100.0 * run.net.accuracy(&xt, &lt)?
        );
        let file = dir.join(format!("redunet_{}d_features.svg", centers.ncols()));
        scatter(&file, name, &x, &run.z, &labels)?;
        println!("  plot: {}", file.display());
        runs.push(run);
    }

    // a mixture of 3 subspaces of dimension 2 in R^8
    let mut rng = StdRng::seed_from_u64(4);
    let mut c = SubspaceMixtureConfig::new(8, 3, 2, 150, 0.05);
    c.samples = vec![150; 3];
    let data = mixture_of_subspaces::<f64, _>(&c, &mut rng)?;
    let (train, test): (Vec<usize>, Vec<usize>) =
        (0..data.labels.n_samples()).partition(|i| i % 3 != 2);
    let pick = |idx: &[usize]| -> Result<_, mcr2::Error> {
        Ok((data.samples.select(Axis(0), idx), data.labels.select(idx)?))
    };
    let ((xs, ls), (xst, lst)) = (pick(&train)?, pick(&test)?);
    let run = fit("subspaces", &xs, &ls, &toy_config)?;
    println!(
        "  held-out accuracy {:.1}%",
        100.0 * run.net.accuracy(&xst, &lst)?
    );
    runs.push(run);

    // digits: unit-norm pixels, every fourth image held out, λ = 500 (the reference MNIST
    // setting)
    let (train, test) = mcr2::data::digits()?.normalized().split()?;
    let (xtr, ytr) = (train.pixels, train.labels);
    let (xte, yte) = (test.pixels, test.labels);
    let digits_config = ReduNetConfig {
        layers: if quick { 10 } else { 50 },
        lambda: 500.0,
        ..ReduNetConfig::default()
    };
    let run = fit("digits", &xtr, &ytr, &digits_config)?;
    let ns = NearestSubspace::fit(&xtr, &ytr, &SubspaceConfig::new(12))?;
    println!(
        "  test accuracy: ReduNet (π̂ of the last layer) {:.1}%, nearest subspace on raw pixels (rank 12) {:.1}%",
        100.0 * run.net.accuracy(&xte, &yte)?,
        100.0 * ns.accuracy(&xte, &yte)?
    );
    runs.push(run);

    let series: Vec<(String, Vec<f64>)> = runs
        .iter()
        .map(|r| {
            (
                r.name.to_string(),
                r.net.history().iter().map(|h| h.delta_r).collect(),
            )
        })
        .collect();
    let file = dir.join("redunet_delta_r.svg");
    common::line_chart(
        &file,
        "ReduNet: ΔR of the training features per layer",
        "layer",
        "ΔR",
        &series,
    )?;
    println!("plot: {}", file.display());
    Ok(())
}

/// Features before and after, coloured by class: the first two coordinates for the 2D toy, a
/// 3D view for the 3D toy.
fn scatter(
    path: &std::path::Path,
    title: &str,
    before: &Array2<f64>,
    after: &Array2<f64>,
    labels: &Labels,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(450);
    for (area, z, when) in [(left, before, "before"), (right, after, "after")] {
        let caption = format!("{title}: {when}");
        let color = |l: usize| Palette99::pick(l).to_rgba();
        if z.ncols() == 2 {
            let mut chart = ChartBuilder::on(&area)
                .caption(caption, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(40)
                .build_cartesian_2d(-1.1f64..1.1, -1.1f64..1.1)?;
            chart.configure_mesh().draw()?;
            chart.draw_series(
                z.rows()
                    .into_iter()
                    .zip(labels.iter())
                    .map(|(r, l)| Circle::new((r[0], r[1]), 2, color(l).filled())),
            )?;
        } else {
            let mut chart = ChartBuilder::on(&area)
                .caption(caption, ("sans-serif", 18))
                .margin(10)
                .build_cartesian_3d(-1.1f64..1.1, -1.1f64..1.1, -1.1f64..1.1)?;
            chart.with_projection(|mut p| {
                p.yaw = 0.6;
                p.pitch = 0.4;
                p.scale = 0.8;
                p.into_matrix()
            });
            chart.configure_axes().draw()?;
            chart.draw_series(
                z.rows()
                    .into_iter()
                    .zip(labels.iter())
                    .map(|(r, l)| Circle::new((r[0], r[1], r[2]), 2, color(l).filled())),
            )?;
        }
    }
    root.present()?;
    Ok(())
}
