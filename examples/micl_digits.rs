//! Classification by minimum incremental coding length (MICL) on the built-in handwritten
//! digits, next to the nearest-subspace classifier on the same split.
//!
//! `cargo run --release --example micl_digits` (`--quick` for a shorter ε grid)
//!
//! Pixels are scaled to unit norm; every fourth image is held out for testing (the split of
//! the `digits` example). ε is chosen on a validation set carved out of the training images
//! (every fifth of them), then the classifier is refit on all training images and scored once
//! on the test images.

mod common;

use mcr2::Precision;
use mcr2::coding::{Coder, Micl};
use mcr2::subspace::{NearestSubspace, SubspaceConfig};

const ABOUT: &str = "Classification by minimum incremental coding length (MICL) on the built-in handwritten digits, next to the nearest-subspace classifier on the same split.";

const FLAGS: &[(&str, &str)] = &[];

fn main() {
    common::main("micl_digits", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (train, test) = mcr2::data::digits()?.normalized().split()?;
    // validation: every fifth training image
    let (fit_idx, val_idx): (Vec<usize>, Vec<usize>) =
        (0..train.labels.n_samples()).partition(|j| j % 5 != 4);
    let (fit, val) = (train.select(&fit_idx)?, train.select(&val_idx)?);
    let (xtr, ytr) = (train.pixels, train.labels);
    let (xte, yte) = (test.pixels, test.labels);
    let (xfit, yfit) = (fit.pixels, fit.labels);
    let (xval, yval) = (val.pixels, val.labels);

    let grid: &[f64] = if common::quick() {
        &[0.05, 0.1, 0.2]
    } else {
        &[0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8]
    };
    println!(
        "digits: {} training ({} to fit, {} to validate) and {} test images, 64 pixels, 10 classes",
        ytr.n_samples(),
        yfit.n_samples(),
        yval.n_samples(),
        yte.n_samples()
    );
    println!("validation accuracy of MICL by ε:");
    let mut best = (f64::NEG_INFINITY, grid[0]);
    for &eps in grid {
        let micl = Micl::fit(&xfit, &yfit, Coder::new(Precision::from_eps(eps)?))?;
        let acc = micl.accuracy(&xval, &yval)?;
        println!("  ε = {eps:<5} {:.1}%", 100.0 * acc);
        if acc > best.0 {
            best = (acc, eps);
        }
    }
    let eps = best.1;
    let start = std::time::Instant::now();
    let micl = Micl::fit(&xtr, &ytr, Coder::new(Precision::from_eps(eps)?))?;
    let micl_acc = micl.accuracy(&xte, &yte)?;
    let elapsed = start.elapsed();
    let rank = 12;
    let ns = NearestSubspace::fit(&xtr, &ytr, &SubspaceConfig::new(rank))?;
    let ns_acc = ns.accuracy(&xte, &yte)?;
    println!(
        "test accuracy: MICL (ε = {eps}) {:.1}%, nearest subspace (rank {rank}) {:.1}%",
        100.0 * micl_acc,
        100.0 * ns_acc
    );
    println!(
        "MICL fit and {} test predictions in {:.1} ms",
        yte.n_samples(),
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}
