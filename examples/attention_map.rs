//! One attention head of a trained CRATE model over the image patches, written as an SVG
//! picture: the input image next to the class token's attention over its patches (the maps
//! the CRATE authors show, where trained heads segment objects), each with a colour bar.
//!
//! `cargo run --release --example attention_map` (`--layer L`, `--head H`, `--index I` to
//! pick the layer, head and test image; `--epochs N`; `--plots DIR`, default `target/plots`)
//!
//! The model is trained first, with cross-entropy on the built-in 8 × 8 digits (every fourth
//! image held out; the drawn image is a test image): patches of 2 × 2 so that the map has
//! 4 × 4 cells, width 64, 3 layers, 4 heads of 16.

mod common;

use mcr2::crate_layer::{CrateClassifier, CrateConfig};
use mcr2::train::{AdamW, AdamWConfig, TrainEvent, TrainProgress, train_classifier};
use ndarray::Array2;
use plotters::prelude::*;
use rand::{SeedableRng, rngs::StdRng};

const ABOUT: &str = "One attention head of a trained CRATE model over the image patches, written as an SVG picture with colour bars: a test digit next to the class token's attention over its 4 × 4 patches (the maps the CRATE authors show, where trained heads segment objects). The model (patches of 2 × 2, width 64, 3 layers, 4 heads) is first trained with cross-entropy on the training digits.";

const FLAGS: &[(&str, &str)] = &[
    (
        "--layer L",
        "layer whose attention is drawn, 1..=3 (default 3)",
    ),
    ("--head H", "head, 0..4 (default 0)"),
    ("--index I", "which test image (default 0)"),
    ("--epochs N", "training epochs (default 15)"),
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
    let mut config = CrateConfig::new(8, 2, 10, 64, 3, 4, 16);
    config.channels = 1;
    let (layer, head, index) = (arg("--layer", 3)?, arg("--head", 0)?, arg("--index", 0)?);
    let epochs = arg("--epochs", if common::quick() { 1 } else { 15 })?;
    if layer == 0 || layer > config.encoder.depth || head >= config.encoder.block.heads {
        return Err(format!(
            "--layer must be 1..={} and --head 0..{}",
            config.encoder.depth, config.encoder.block.heads
        )
        .into());
    }
    let (train, test) = mcr2::data::digits()?.split()?;
    if index >= test.labels.n_samples() {
        return Err(format!("--index must be below {}", test.labels.n_samples()).into());
    }
    let (xtr, xte) = (
        common::digit_images(&train.pixels),
        common::digit_images(&test.pixels),
    );
    let mut model = CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(0))?;
    let train_config = common::crate_digits_recipe(epochs.max(1), 0, train.labels.n_samples());
    let mut optimizer =
        AdamW::new(&model.parameters(), AdamWConfig::new(2e-3))?.with_reference_grouping();
    train_classifier(
        &mut model,
        &mut optimizer,
        &xtr,
        &train.labels,
        &train_config,
        TrainProgress::default(),
        |_| Ok(None),
        |_: &TrainEvent| (),
    )?;
    println!(
        "trained {epochs} epochs: test accuracy {:.1}%",
        100.0 * common::test_accuracy(&model, &xte, &test.labels)?
    );
    let image = xte
        .slice(ndarray::s![index..index + 1, .., .., ..])
        .to_owned();
    let inspection = model.inspect(&image)?;
    let att = &inspection.layers[layer - 1].attention;
    // the class token's attention over the 4 × 4 patches (token 0 is the class token)
    let grid = 4;
    let map = Array2::from_shape_fn((grid, grid), |(r, c)| {
        f64::from(att[(0, head, 0, 1 + r * grid + c)])
    });
    let own = f64::from(att[(0, head, 0, 0)]);
    let total: f64 = map.sum() + own;
    let digit = test.labels.to_vec()[index];
    println!(
        "digit {digit} (test image {index}), layer {layer}, head {head}: attention of the class \
         token over its 16 patches (plus {own:.3} on itself; row sum {total:.6})"
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
    let root = SVGBackend::new(&path, (760, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(380);
    heatmap(
        &left,
        &format!("digit {digit} (8 × 8)"),
        &Array2::from_shape_fn((8, 8), |(y, x)| f64::from(image[(0, 0, y, x)])),
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
    let (area, bar) = area.split_horizontally(300);
    colour_bar(&bar, lo, hi)?;
    let mut chart = ChartBuilder::on(&area)
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

/// A vertical grey scale from `lo` (white, bottom) to `hi` (black, top), labelled.
fn colour_bar(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    lo: f64,
    hi: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let steps = 32;
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(20)
        .y_label_area_size(44)
        .build_cartesian_2d(0..1, lo..hi.max(lo + 1e-12))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    let span = (hi - lo).max(1e-12);
    chart.draw_series((0..steps).map(|i| {
        let (a, b) = (
            lo + span * i as f64 / steps as f64,
            lo + span * (i + 1) as f64 / steps as f64,
        );
        let level = (255.0 * (1.0 - (i as f64 + 0.5) / steps as f64)) as u8;
        Rectangle::new([(0, a), (1, b)], RGBColor(level, level, level).filled())
    }))?;
    Ok(())
}
