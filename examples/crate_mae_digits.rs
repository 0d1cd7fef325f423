//! Trains a small CRATE-MAE on the built-in digits with half of each image's patches removed,
//! then measures how well it fills them in on the held-out images.
mod common;

use mcr2::crate_mae::{CrateMae, CrateMaeConfig, Masking, patchify};
use mcr2::ndarray::{Array2, Array4, Axis, s};
use mcr2::rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use mcr2::train::{AdamW, AdamWConfig, WarmupCosine, clip_grad_norm};
use plotters::prelude::*;

const ABOUT: &str = "Trains a small CRATE-MAE (8 × 8 digits in patches of 2 × 2, width 32, 2 encoder and 2 decoder layers of 4 heads) on the built-in digits with 50 % of the patches removed (every fourth image held out; AdamW, batches of 64, 200 epochs), prints the training loss per epoch, writes an SVG of test originals, masked inputs and reconstructions, and compares the test error on the removed patches with predicting each by the mean training patch.";

const FLAGS: &[(&str, &str)] = &[
    (
        "--epochs N",
        "passes over the training images (default 200)",
    ),
    (
        "--lr LR",
        "peak learning rate of the warm-up and cosine schedule (default 3e-3)",
    ),
    (
        "--dim D",
        "width of both the encoder and the decoder, 4 heads (default 32)",
    ),
    (
        "--seed S",
        "seed of the initialization, the masks and the shuffling (default 0)",
    ),
    (
        "--plots DIR",
        "directory for the SVG (default target/plots)",
    ),
];

fn main() {
    common::main("crate_mae_digits", ABOUT, FLAGS, run)
}

/// The mean squared error per value on the removed patches.
fn removed_error(pred: &Array2<f64>, target: &Array2<f64>, masking: &Masking) -> f64 {
    let l = masking.len();
    let (mut total, mut count) = (0.0, 0usize);
    for i in 0..masking.batch() {
        for j in (0..l).filter(|&j| masking.is_masked(i, j)) {
            let r = i * l + j;
            total += pred
                .row(r)
                .iter()
                .zip(target.row(r))
                .map(|(p, t)| (p - t).powi(2))
                .sum::<f64>();
            count += pred.ncols();
        }
    }
    total / count as f64
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let quick = common::quick();
    let epochs: usize =
        common::arg_value("--epochs").map_or(Ok(if quick { 2 } else { 200 }), |v| v.parse())?;
    let lr: f64 = common::arg_value("--lr").map_or(Ok(3e-3), |v| v.parse())?;
    let dim: usize = common::arg_value("--dim").map_or(Ok(32), |v| v.parse())?;
    let seed: u64 = common::arg_value("--seed").map_or(Ok(0), |v| v.parse())?;
    let digits = mcr2::data::digits()?;
    // pixels 0..16 → 0..1, one channel
    let images =
        digits
            .pixels
            .mapv(|v| v / 16.0)
            .into_shape_with_order((digits.pixels.nrows(), 1, 8, 8))?;
    let test: Vec<usize> = (0..images.dim().0).filter(|i| i % 4 == 3).collect();
    let train: Vec<usize> = (0..images.dim().0).filter(|i| i % 4 != 3).collect();
    let (train_x, test_x) = (
        images.select(Axis(0), &train),
        images.select(Axis(0), &test),
    );
    println!(
        "digits: {} training and {} test images of 8 × 8, patches of 2 × 2, 50 % removed",
        train.len(),
        test.len()
    );

    let mut config = CrateMaeConfig::new(8, 2, dim, 2, 4, dim, 2, 4);
    config.channels = 1;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = CrateMae::<f64>::new(&config, &mut rng)?;
    let batch = 64;
    let steps = epochs * train.len().div_ceil(batch);
    let schedule = WarmupCosine {
        lr,
        min_lr: 1e-5,
        warmup_steps: steps / 20,
        total_steps: steps,
    };
    schedule.check()?;
    let mut optimizer =
        AdamW::new(&model.parameters(), AdamWConfig::new(schedule.lr))?.with_reference_grouping();
    let bar = common::progress_bar(epochs)?;
    let mut step = 0;
    let start = std::time::Instant::now();
    for epoch in 0..epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let mut total = 0.0;
        let chunks = order.chunks(batch);
        let count = chunks.len();
        for chunk in chunks {
            let x = train_x.select(Axis(0), chunk);
            let masking = Masking::random(chunk.len(), config.num_patches(), 0.5, &mut rng)?;
            let (out, cache) = model.forward_train(&x, &masking)?;
            let mut grads = model.backward(&cache)?;
            clip_grad_norm(&mut grads, 1.0)?;
            optimizer.set_lr(schedule.lr_at(step))?;
            optimizer.step(&mut model, &grads)?;
            total += out.loss;
            step += 1;
        }
        bar.inc(1);
        if epoch % 10 == 9 || epoch + 1 == epochs {
            let loss = total / count as f64;
            bar.suspend(|| {
                println!(
                    "epoch {:>3}: training loss on the removed patches {loss:.4}",
                    epoch + 1
                )
            });
        }
    }
    bar.finish_and_clear();
    println!("trained in {:.1} s", start.elapsed().as_secs_f64());

    // test: a fixed masking of the held-out images
    let mut test_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let masking = Masking::random(test.len(), config.num_patches(), 0.5, &mut test_rng)?;
    let out = model.forward(&test_x, &masking)?;
    let (b, l, k) = out.pred.dim();
    let pred = out.pred.into_shape_with_order((b * l, k))?;
    let target = patchify(&test_x, 2)?.into_shape_with_order((b * l, k))?;
    let error = removed_error(&pred, &target, &masking);
    // baselines: the mean training patch, and the mean training patch at the same position
    let train_patches = patchify(&train_x, 2)?;
    let mean_patch = train_patches
        .mean_axis(Axis(0))
        .expect("images")
        .mean_axis(Axis(0))
        .expect("patches");
    let at_position = train_patches.mean_axis(Axis(0)).expect("images");
    let baseline = Array2::from_shape_fn((b * l, k), |(_, c)| mean_patch[c]);
    let positional = Array2::from_shape_fn((b * l, k), |(r, c)| at_position[(r % l, c)]);
    let base_error = removed_error(&baseline, &target, &masking);
    let pos_error = removed_error(&positional, &target, &masking);
    println!("test error on the removed patches (mean squared, pixels in [0, 1]):");
    println!("  CRATE-MAE                               {error:.5}");
    println!("  the mean training patch                 {base_error:.5}");
    println!("  the mean training patch at its position {pos_error:.5}");

    let shown = 8;
    let rec = model.reconstruct(
        &test_x.slice(s![..shown, .., .., ..]),
        &Masking::from_kept(l, (0..shown).map(|i| masking.kept(i).to_vec()).collect())?,
    )?;
    let path = common::plots_dir()?.join("crate_mae_digits.svg");
    draw(&path, &test_x, &masking, &rec, shown)?;
    println!("plot: {}", path.display());
    println!("reconstruction error ratio: {:.2}", error / base_error);
    Ok(())
}

/// Three rows of digits: the originals, the masked inputs (removed patches grey), and the
/// reconstructions.
fn draw(
    path: &std::path::Path,
    images: &Array4<f64>,
    masking: &Masking,
    rec: &Array4<f64>,
    shown: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let cell = 10;
    let root = SVGBackend::new(
        path,
        (
            (shown * 9 * cell + cell) as u32,
            (3 * 9 * cell + cell) as u32,
        ),
    )
    .into_drawing_area();
    root.fill(&WHITE)?;
    for i in 0..shown {
        for y in 0..8 {
            for x in 0..8 {
                let patch = (y / 2) * 4 + x / 2;
                let rows = [
                    Some(images[(i, 0, y, x)]),
                    (!masking.is_masked(i, patch)).then_some(images[(i, 0, y, x)]),
                    Some(rec[(i, 0, y, x)]),
                ];
                for (row, v) in rows.iter().enumerate() {
                    let colour = match v {
                        Some(v) => {
                            let level = (255.0 * (1.0 - v.clamp(0.0, 1.0))) as u8;
                            RGBColor(level, level, level)
                        }
                        None => RGBColor(255, 200, 120),
                    };
                    let (x0, y0) = (
                        ((i * 9 + x) * cell + cell) as i32,
                        ((row * 9 + y) * cell + cell) as i32,
                    );
                    root.draw(&Rectangle::new(
                        [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                        colour.filled(),
                    ))?;
                }
            }
        }
    }
    root.present()?;
    Ok(())
}
