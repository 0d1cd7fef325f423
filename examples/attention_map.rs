//! One attention head of a CRATE model over the image patches, written as an SVG picture:
//! the input image next to the class token's attention over its patches (the maps the CRATE
//! authors show, where trained heads segment objects).
//!
//! `cargo run --release --example attention_map` (`--layer L`, `--head H`, `--index I` to
//! pick the layer, head and digit image; `--plots DIR`, default `target/plots`)
//!
//! The model is small (32 × 32 images, patches of 4, dim 64, 4 layers, 4 heads) with the
//! seeded reference initialization, not trained: the map shows the mechanics (which patches
//! the class token attends to, rows summing to 1), not learned segmentation. The image is one
//! of the built-in 8 × 8 handwritten digits, enlarged to 32 × 32 and repeated on 3 channels.

mod common;

use mcr2::crate_layer::{CrateClassifier, CrateConfig};
use ndarray::{Array2, Array4};
use plotters::prelude::*;
use rand::{SeedableRng, rngs::StdRng};

const ABOUT: &str = "One attention head of a CRATE model over the image patches, written as an SVG picture: the input image next to the class token's attention over its patches (the maps the CRATE authors show, where trained heads segment objects). The model here is seeded, not trained: its map shows the mechanism, not a learned segmentation.";

const FLAGS: &[(&str, &str)] = &[
    (
        "--layer L",
        "layer whose attention is drawn, 1..=4 (default 4)",
    ),
    ("--head H", "head, 0..4 (default 0)"),
    ("--index I", "which digit image (default 0)"),
    (
        "--plots DIR",
        "directory for the SVG plots (default target/plots)",
    ),
];

fn main() {
    common::main("attention_map", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |flag: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(match common::arg_value(flag) {
            Some(v) => v.parse()?,
            None => default,
        })
    };
    let config = CrateConfig::new(32, 4, 10, 64, 4, 4, 16);
    let (layer, head, index) = (arg("--layer", 4)?, arg("--head", 0)?, arg("--index", 0)?);
    if layer == 0 || layer > config.encoder.depth || head >= config.encoder.block.heads {
        return Err(format!(
            "--layer must be 1..={} and --head 0..{}",
            config.encoder.depth, config.encoder.block.heads
        )
        .into());
    }
    let digits = mcr2::data::digits()?;
    let (pixels, labels) = (digits.pixels, digits.labels);
    if index >= labels.n_samples() {
        return Err(format!("--index must be below {}", labels.n_samples()).into());
    }
    // 8 × 8 digit (values 0..16) → 32 × 32, each pixel a 4 × 4 block, 3 channels
    let image = Array4::<f64>::from_shape_fn((1, 3, 32, 32), |(_, _, y, x)| {
        pixels[(index, (y / 4) * 8 + x / 4)] / 16.0
    });
    let model = CrateClassifier::<f64>::new(&config, &mut StdRng::seed_from_u64(0))?;
    let inspection = model.inspect(&image)?;
    let att = &inspection.layers[layer - 1].attention;
    // the class token's attention over the 8 × 8 patches (token 0 is the class token)
    let grid = 32 / 4;
    let map = Array2::from_shape_fn((grid, grid), |(r, c)| att[(0, head, 0, 1 + r * grid + c)]);
    let total: f64 = map.sum() + att[(0, head, 0, 0)];
    println!(
        "digit {} (image {index}), layer {layer}, head {head}: attention of the class token over \
         its 64 patches (plus {:.3} on itself; row sum {total:.6})",
        labels.to_vec()[index],
        att[(0, head, 0, 0)]
    );
    for row in map.rows() {
        println!(
            "  {}",
            row.iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    let path = common::plots_dir()?.join("attention_map.svg");
    let root = SVGBackend::new(&path, (680, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(340);
    heatmap(
        &left,
        &format!("digit {} (32 × 32)", labels.to_vec()[index]),
        &Array2::from_shape_fn((32, 32), |(y, x)| image[(0, 0, y, x)]),
    )?;
    heatmap(
        &right,
        &format!("layer {layer}, head {head}: class token → patches"),
        &map,
    )?;
    root.present()?;
    println!("plot: {}", path.display());
    Ok(())
}

/// Draws a matrix as grey squares (darker = larger), row 0 at the top.
fn heatmap(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    m: &Array2<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (rows, cols) = m.dim();
    let (lo, hi) = m
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = (hi - lo).max(1e-12);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .build_cartesian_2d(0..cols, 0..rows)?;
    chart.draw_series(
        (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| {
                let level = (255.0 * (1.0 - (m[(r, c)] - lo) / span)) as u8;
                Rectangle::new(
                    [(c, rows - 1 - r), (c + 1, rows - r)],
                    RGBColor(level, level, level).filled(),
                )
            }),
    )?;
    Ok(())
}
