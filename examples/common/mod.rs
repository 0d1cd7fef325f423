//! Helpers shared by the examples: usage and error reporting, a `--quick` switch, progress
//! bars and SVG charts.
#![allow(dead_code)]

/// Runs an example: `--help` (or `-h`) prints its usage (`about`, then its own `flags` and
/// the two every example has) and exits; an error is printed by its message (not its debug
/// form) and exits with status 1.
pub fn main(
    name: &str,
    about: &str,
    flags: &[(&str, &str)],
    run: fn() -> Result<(), Box<dyn std::error::Error>>,
) {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{}", usage(name, about, flags));
        return;
    }
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The `--help` text of an example.
pub fn usage(name: &str, about: &str, flags: &[(&str, &str)]) -> String {
    let common = [
        ("--quick", "the short run CI uses (also MCR2_QUICK=1)"),
        ("--help", "this text"),
    ];
    let mut text =
        format!("{name}: {about}\n\nusage: cargo run --release --example {name} -- [flags]\n\n");
    for (flag, what) in flags.iter().chain(common.iter()) {
        text.push_str(&format!("  {flag:<20}{what}\n"));
    }
    text
}

/// `--quick` on the command line (or `MCR2_QUICK=1`): a smaller run, as CI uses.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick") || std::env::var("MCR2_QUICK").is_ok_and(|v| v == "1")
}

/// A progress bar for a fit of `len` iterations, showing ΔR.
pub fn progress_bar(len: usize) -> Result<indicatif::ProgressBar, Box<dyn std::error::Error>> {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} {msg}",
    )?);
    Ok(bar)
}

/// Updates a [`progress_bar`] from a fit's progress.
pub fn show_progress(bar: &indicatif::ProgressBar, p: &mcr2::fit::Progress) {
    bar.set_position(p.iteration as u64 + 1);
    bar.set_message(format!("ΔR = {:.5}", p.delta_r));
}

/// The value following `flag` on the command line, if any (e.g. `--plots DIR`).
pub fn arg_value(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The directory for plots: `--plots DIR`, or `target/plots`; created if missing.
pub fn plots_dir() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let dir =
        std::path::PathBuf::from(arg_value("--plots").unwrap_or_else(|| "target/plots".into()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Plots ΔR over the iterations of a fit as `dir/file`.
pub fn plot_delta_r(
    dir: &std::path::Path,
    file: &str,
    title: &str,
    report: &mcr2::fit::FitReport,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let history: Vec<f64> = report.history.iter().map(|p| p.delta_r).collect();
    let path = dir.join(file);
    line_chart(&path, title, "iteration", "ΔR", &[("ΔR".into(), history)])?;
    Ok(path)
}

/// The two curves of a training run, per epoch, as `{stem}_{metric}.svg` and
/// `{stem}_accuracy.svg` in `dir`: the training metric (`(name, title, values)`) and the test
/// accuracy in percent (`(title, values)`).
pub fn training_curves(
    dir: &std::path::Path,
    stem: &str,
    metric: (&str, &str, Vec<f64>),
    accuracy: (&str, Vec<f64>),
) -> Result<(), Box<dyn std::error::Error>> {
    let (name, title, values) = metric;
    let file = name.replace('Δ', "delta_").to_lowercase();
    line_chart(
        &dir.join(format!("{stem}_{file}.svg")),
        title,
        "epoch",
        name,
        &[(name.into(), values)],
    )?;
    line_chart(
        &dir.join(format!("{stem}_accuracy.svg")),
        accuracy.0,
        "epoch",
        "accuracy (%)",
        &[("test accuracy".into(), accuracy.1)],
    )
}

/// Writes a line chart of one or more series (x = index) as an SVG file.
pub fn line_chart(
    path: &std::path::Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(2) as f64
        - 1.0;
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    // no finite value (an empty series): an empty chart on [0, 1]
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()?;
    for (i, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(x, &y)| (x as f64, y)),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Prints, per layer, the white-box measures of a CRATE model before and after training on
/// `images`: the compression of the layer's input (the CRATE authors' coding rate of the
/// tokens projected on each head's subspace) and the sparsity of its output (fraction of
/// zeros after ISTA).
pub fn white_box_measures(
    initial: &mcr2::crate_layer::CrateClassifier<f32>,
    trained: &mcr2::crate_layer::CrateClassifier<f32>,
    images: &mcr2::ndarray::Array4<f32>,
) -> Result<(), Box<dyn std::error::Error>> {
    let before = initial.inspect(images)?;
    let after = trained.inspect(images)?;
    println!("white-box measures on the test images (initialization → trained):");
    println!("  layer  compression of the input   sparsity of the output");
    for (l, (b, a)) in before.layers.iter().zip(&after.layers).enumerate() {
        println!(
            "  {:5}  {:10.2} → {:8.2}        {:6.1}% → {:5.1}%",
            l + 1,
            b.diagnostics.compression,
            a.diagnostics.compression,
            100.0 * b.diagnostics.sparsity,
            100.0 * a.diagnostics.sparsity
        );
    }
    Ok(())
}

/// `batch` synthetic RGB images of `side` × `side`, normalized like ImageNet inputs: colour
/// gradients with a bright square that moves right from one image to the next.
pub fn synthetic_images(batch: usize, side: usize) -> mcr2::ndarray::Array4<f32> {
    mcr2::ndarray::Array4::from_shape_fn((batch, 3, side, side), |(i, c, y, x)| {
        let (u, v) = (x as f32 / side as f32, y as f32 / side as f32);
        let square = (u - 0.3 - 0.1 * i as f32).abs() < 0.15 && (v - 0.5).abs() < 0.15;
        let base = match c {
            0 => u,
            1 => v,
            _ => 1.0 - u * v,
        };
        (if square { 1.0 } else { base } - 0.45) / 0.25
    })
}

/// Prints each image's top classes as `class (logit)`.
pub fn print_top_k<T: std::fmt::Display>(top: &[Vec<(usize, T)>]) {
    for (i, t) in top.iter().enumerate() {
        let classes: Vec<String> = t.iter().map(|(c, l)| format!("{c} ({l:.3})")).collect();
        let k = t.len();
        println!("  image {i}: top-{k} classes {}", classes.join(", "));
    }
}

/// The cross-entropy recipe of the digits CRATE examples: `epochs` over `n_train` images in
/// batches of 32, learning rate 2·10⁻³ warmed up over the first 5 % of the steps then cosine
/// down to 10⁻⁵, clipping at global norm 1, label smoothing 0.1.
pub fn crate_digits_recipe(epochs: usize, seed: u64, n_train: usize) -> mcr2::train::TrainConfig {
    let batch_size = 32;
    let steps = epochs * n_train.div_ceil(batch_size);
    mcr2::train::TrainConfig {
        epochs,
        batch_size,
        seed,
        schedule: mcr2::train::WarmupCosine {
            lr: 2e-3,
            min_lr: 1e-5,
            warmup_steps: steps / 20,
            total_steps: steps,
        },
        clip_norm: Some(1.0),
        objective: mcr2::train::Objective::CrossEntropy {
            label_smoothing: 0.1,
        },
    }
}

/// The digits as 1-channel 8 × 8 images scaled to [0, 1].
pub fn digit_images(pixels: &mcr2::ndarray::Array2<f64>) -> mcr2::ndarray::Array4<f32> {
    mcr2::ndarray::Array4::from_shape_fn((pixels.nrows(), 1, 8, 8), |(i, _, y, x)| {
        (pixels[(i, y * 8 + x)] / 16.0) as f32
    })
}

/// The images and their copies shifted by one pixel up, down, left and right (zeros
/// shifted in), with the labels repeated: five times the training set.
pub fn with_shifts(
    x: &mcr2::ndarray::Array4<f32>,
    y: &mcr2::Labels,
) -> mcr2::Result<(mcr2::ndarray::Array4<f32>, mcr2::Labels)> {
    let n = x.dim().0;
    let shifts = [(0i32, 0i32), (1, 0), (-1, 0), (0, 1), (0, -1)];
    let out =
        mcr2::ndarray::Array4::from_shape_fn((n * shifts.len(), 1, 8, 8), |(i, c, r, col)| {
            let (dy, dx) = shifts[i / n];
            let (sr, sc) = (r as i32 - dy, col as i32 - dx);
            if (0..8).contains(&sr) && (0..8).contains(&sc) {
                x[(i % n, c, sr as usize, sc as usize)]
            } else {
                0.0
            }
        });
    let ids: Vec<usize> = (0..n * shifts.len()).map(|i| y.to_vec()[i % n]).collect();
    Ok((out, mcr2::Labels::new(&ids, y.n_classes())?))
}

/// The resident memory of this process in MiB (`VmRSS` of `/proc/self/status`; `None` where
/// there is no such file).
pub fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Fraction of `images` whose most likely class (`top_k(.., 1)`) is their label.
pub fn test_accuracy(
    model: &mcr2::crate_layer::CrateClassifier<f32>,
    images: &mcr2::ndarray::Array4<f32>,
    labels: &mcr2::Labels,
) -> mcr2::Result<f64> {
    let predicted: Vec<usize> = model
        .top_k(images, 1)?
        .iter()
        .map(|best| best[0].0)
        .collect();
    mcr2::metrics::accuracy(&predicted, labels)
}
