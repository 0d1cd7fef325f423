//! A CRATE encoder on tokens drawn from a mixture of low-dimensional subspaces, with the
//! per-layer measurements of the CRATE paper: the compression of each layer's input
//! (½ Σ_heads logdet(I + p/(Nε²) ŴᵀŴ), ε² = 0.01) and the sparsity of its output.
//!
//! `cargo run --release --example crate_encoder` (`--quick`: fewer layers)
//!
//! Two encoders are run on the same tokens:
//! * white box: every layer's attention is the paper's compression step built from the true
//!   subspace bases (κ = 0.5, ε² = 0.5), followed by ISTA with the identity dictionary
//!   (a soft threshold at ηλ = 0.01);
//! * the reference parameterisation with its random initialization (untrained), for contrast.

mod common;

use mcr2::Precision;
use mcr2::crate_layer::{
    CrateBlock, CrateBlockConfig, CrateEncoder, CrateEncoderConfig, Ista, Mssa,
};
use ndarray::{Array1, Array2, Array3};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

const ABOUT: &str = "A CRATE encoder on tokens drawn from a mixture of low-dimensional subspaces, with the per-layer measurements of the CRATE paper: the compression of each layer's input (½ Σ_heads logdet(I + p/(Nε²) ŴᵀŴ), ε² = 0.01) and the sparsity of its output.";

const FLAGS: &[(&str, &str)] = &[];

fn main() {
    common::main("crate_encoder", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let depth = if common::quick() { 3 } else { 8 };
    let (dim, k, p, n, batch) = (64usize, 4usize, 8usize, 96usize, 4usize);
    let mut rng = StdRng::seed_from_u64(3);

    // K mutually orthogonal p-dimensional subspaces of R^dim: coordinate blocks, so that
    // tokens with non-negative coefficients stay non-negative (ISTA's ReLU keeps them)
    let bases: Vec<Array2<f64>> = (0..k)
        .map(|j| {
            let mut u = Array2::zeros((dim, p));
            for c in 0..p {
                u[(j * p + c, c)] = 1.0;
            }
            u
        })
        .collect();

    // tokens: a random subspace each, |Gaussian| coefficients, |noise| of scale 0.05, unit norm
    let mut x = Array3::<f64>::zeros((batch, n, dim));
    for mut seq in x.outer_iter_mut() {
        for mut tok in seq.rows_mut() {
            let j = rng.random_range(0..k);
            let a = Array1::from_shape_simple_fn(p, || rng.sample::<f64, _>(StandardNormal).abs());
            tok.assign(&bases[j].dot(&a));
            tok.mapv_inplace(|v| v + 0.05 * rng.sample::<f64, _>(StandardNormal).abs());
            let nt = tok.dot(&tok).sqrt();
            tok.mapv_inplace(|v| v / nt);
        }
    }
    println!(
        "{batch} sequences of {n} tokens in R^{dim}, from {k} subspaces of dimension {p}; {depth} layers\n"
    );

    let eps = Precision::from_eps_sq(0.5)?;
    let white_box = CrateEncoder::from_blocks(
        (0..depth)
            .map(|_| {
                CrateBlock::white_box(
                    Mssa::from_subspaces(&bases, eps, 0.5)?,
                    Ista::from_parts(Array2::eye(dim), 0.1, 0.1)?,
                )
            })
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    let (_, wb) = white_box.forward_with_diagnostics(&x)?;

    let config = CrateEncoderConfig {
        depth,
        block: CrateBlockConfig::new(dim, k, p),
    };
    let reference = CrateEncoder::<f64>::new(&config, &mut rng)?;
    let (_, rf) = reference.forward_with_diagnostics(&x)?;

    println!("layer | white box: compression  sparsity | reference init: compression  sparsity");
    for (l, (a, b)) in wb.iter().zip(&rf).enumerate() {
        println!(
            "{l:>5} | {:>22.4} {:>9.3} | {:>27.4} {:>9.3}",
            a.compression, a.sparsity, b.compression, b.sparsity
        );
    }
    println!("\n(compression = ½ Σ_heads logdet(I + p/(Nε²) ŴᵀŴ) of the layer input, ε² = 0.01;");
    println!(" sparsity = fraction of exact zeros in the layer output)");
    Ok(())
}
