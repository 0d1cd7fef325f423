//! Coding rates of the built-in handwritten-digits data (1797 images, 64 pixels, 10 classes).
//!
//! `cargo run --release --example rates`
//!
//! Prints R, Rc and ΔR of the pixel vectors (each scaled to unit norm) under the true labels
//! and under shuffled labels, the per-class terms, the same from streamed statistics, and the
//! size of the gradient of ΔR, and the coding rate and loss under each reference's
//! conventions (`rate::Convention`). `--quick` uses the first 500 images.

mod common;

use mcr2::rate::Convention;
use mcr2::{Membership, Precision, RateStats, rate_reduction, rate_reduction_with_grad};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

const ABOUT: &str =
    "Coding rates of the built-in handwritten-digits data (1797 images, 64 pixels, 10 classes).";

const FLAGS: &[(&str, &str)] = &[];

fn main() {
    common::main("rates", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut digits = mcr2::data::digits()?.normalized();
    if common::quick() {
        digits = digits.select(&(0..500).collect::<Vec<_>>())?;
    }
    let (x, labels) = (digits.pixels, digits.labels);
    let (n, d) = x.dim();
    let k = 10;
    let eps = Precision::from_eps_sq(0.5)?; // the supervised setting of the MCR² paper
    println!(
        "digits: n = {n} samples, d = {d} features, k = {k} classes, ε² = {}",
        eps.eps_sq()
    );

    let truth = Membership::from(labels.clone());
    let rr = rate_reduction(&x, &truth, eps)?;
    println!(
        "\ntrue labels:     R = {:.6}  Rc = {:.6}  ΔR = {:.6}",
        rr.r, rr.rc, rr.delta_r
    );
    let counts = truth.class_weights();
    for (j, (term, c)) in rr.class_terms.iter().zip(&counts).enumerate() {
        println!("  class {j}: {c:>4} samples, term {term:.6}");
    }

    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(7));
    let shuffled = labels.select(&order)?;
    let rs = rate_reduction(&x, &Membership::from(shuffled), eps)?;
    println!(
        "shuffled labels: R = {:.6}  Rc = {:.6}  ΔR = {:.6}",
        rs.r, rs.rc, rs.delta_r
    );
    println!("(true classes compress better: Rc is lower and ΔR higher than with shuffled labels)");

    // the same from statistics streamed in chunks of 256 rows
    let mut stats = RateStats::new(d, k)?;
    for (start, chunk) in x.axis_chunks_iter(ndarray::Axis(0), 256).enumerate() {
        let lo = start * 256;
        let rows: Vec<usize> = (lo..lo + chunk.nrows()).collect();
        stats.push(&chunk, &labels.select(&rows)?)?;
    }
    let streamed = stats.rate_reduction(eps)?;
    println!(
        "\nstreamed in chunks of 256: ΔR = {:.6} (one-shot {:.6}, difference {:.1e})",
        streamed.delta_r,
        rr.delta_r,
        (streamed.delta_r - rr.delta_r).abs()
    );

    let (_, grad) = rate_reduction_with_grad(&x, &truth, eps)?;
    let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    println!("‖∂ΔR/∂Z‖_F = {norm:.6}");

    // the same `eps = 0.5` argument under each reference's conventions
    println!(
        "
the argument `eps = 0.5` under each preset (rate::Convention):"
    );
    for (name, preset) in [
        ("papers (ε = 0.5)", Convention::Paper { eps: 0.5 }),
        ("mcr2 reference (eps = ε²)", Convention::mcr2_reference(0.5)),
        ("SimDINO (eps = ε², N = 1)", Convention::simdino(0.5)),
    ] {
        let r = preset.coding_rate(&x)?;
        match preset.loss() {
            Ok(loss) => {
                let v = loss.evaluate(&x, &truth)?;
                println!("  {name:<27} R = {r:.6}  loss = {:.6}", v.loss);
            }
            Err(_) => println!("  {name:<27} R = {r:.6}  (expansion term; no class loss)"),
        }
    }
    Ok(())
}
