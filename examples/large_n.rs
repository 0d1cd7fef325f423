//! ΔR value and gradient for a million samples (d = 64, k = 10, f32) with bounded memory.
//!
//! `cargo run --release --example large_n` (`--quick`: 10⁵ samples)
//!
//! Measure the peak memory with `/usr/bin/time -v target/release/examples/large_n`: it stays
//! below twice the bytes of Z (Z itself and the gradient buffer) plus the 8 bytes per sample
//! of the membership and a fixed scratch.

mod common;

use mcr2::{Membership, Precision, rate_reduction_with_grad_into};
use ndarray::Array2;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

const ABOUT: &str =
    "ΔR value and gradient for a million samples (d = 64, k = 10, f32) with bounded memory.";

const FLAGS: &[(&str, &str)] = &[];

fn main() {
    common::main("large_n", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = if common::quick() { 100_000 } else { 1_000_000 };
    let (d, k) = (64usize, 10usize);
    let mut rng = StdRng::seed_from_u64(1);
    // samples near k random 8-dimensional subspaces, scaled to unit norm
    let bases: Vec<Array2<f32>> = (0..k)
        .map(|_| Array2::from_shape_simple_fn((8, d), || rng.sample::<f32, _>(StandardNormal)))
        .collect();
    let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..k)).collect();
    let mut z = Array2::<f32>::zeros((n, d));
    for (mut row, &l) in z.rows_mut().into_iter().zip(&labels) {
        let coef: Vec<f32> = (0..8).map(|_| rng.sample(StandardNormal)).collect();
        for (c, b) in coef.iter().zip(bases[l].rows()) {
            row.scaled_add(*c, &b);
        }
        row.mapv_inplace(|v| v + 0.05 * rng.sample::<f32, _>(StandardNormal));
        let norm = row.dot(&row).sqrt();
        row.mapv_inplace(|v| v / norm);
    }
    let membership = Membership::hard(&labels, k)?;
    drop(labels);
    let eps = Precision::from_eps_sq(0.5)?;

    let mut grad = Array2::<f32>::zeros((n, d));
    let start = std::time::Instant::now();
    let rr = rate_reduction_with_grad_into(&z, &membership, eps, &mut grad)?;
    let secs = start.elapsed().as_secs_f64();
    let z_mb = (n * d * 4) as f64 / 1e6;
    let gnorm = grad.iter().map(|g| (*g as f64).powi(2)).sum::<f64>().sqrt();
    println!("n = {n}, d = {d}, k = {k}, f32: Z is {z_mb:.0} MB; the gradient buffer as much");
    println!(
        "R = {:.5}  Rc = {:.5}  ΔR = {:.5}  ‖∂ΔR/∂Z‖ = {gnorm:.5}  ({secs:.2} s)",
        rr.r, rr.rc, rr.delta_r
    );
    Ok(())
}
