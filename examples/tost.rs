//! ToST's token-statistics attention: the book form compressing tokens drawn from a mixture of
//! subspaces, and the reference TSSA against MSSA as the number of tokens grows.
//!
//! `cargo run --release --example tost` (`--quick`: fewer steps and sizes)
//!
//! 1. Tokens from 4 random 4-dimensional subspaces of R^32 (noise 0.05). With the true bases,
//!    the membership Π_jk = softmax_k(‖U_kᵀ z_j‖²/(2η)) assigns tokens to subspaces, and TSSA
//!    steps Z ← Z − τ ∇R^var lower the variational compression objective.
//! 2. The reference TSSA and CRATE's MSSA (dim 384, 6 heads, f32, one sequence), timed at a few
//!    sequence lengths: TSSA grows linearly, MSSA quadratically (the full sweep is the bench
//!    `tost_scaling`).

mod common;

use mcr2::Precision;
use mcr2::crate_layer::{Mssa, MssaConfig};
use mcr2::data::SubspaceMixtureConfig;
use mcr2::data::mixture_of_subspaces;
use mcr2::tost::{Tssa, TssaConfig, VariationalCompression};
use ndarray::Array2;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

const ABOUT: &str = "ToST's token-statistics attention: the book form compressing tokens drawn from a mixture of subspaces, and the reference TSSA against MSSA as the number of tokens grows.";

const FLAGS: &[(&str, &str)] = &[];

fn main() {
    common::main("tost", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let quick = common::quick();
    let mut rng = StdRng::seed_from_u64(0);
    let mut config = SubspaceMixtureConfig::new(32, 4, 4, 64, 0.05);
    config.unit_sphere = false;
    let data = mixture_of_subspaces::<f64, _>(&config, &mut rng)?;
    let vc = VariationalCompression::new(data.bases.clone(), Precision::from_eps_sq(0.5)?, 0.5)?;
    let mut z = data.samples.clone();
    let pi = vc.membership(&z)?;
    let assigned = pi
        .rows()
        .into_iter()
        .zip(data.labels.iter())
        .filter(|(r, l)| {
            let best =
                r.iter().enumerate().fold(
                    (0, f64::NEG_INFINITY),
                    |b, (k, &v)| if v > b.1 { (k, v) } else { b },
                );
            best.0 == *l
        })
        .count();
    println!(
        "{} tokens from 4 subspaces of dimension 4 in R^32: the membership Π puts {:.1}% in their own subspace",
        z.nrows(),
        100.0 * assigned as f64 / z.nrows() as f64
    );
    let steps = if quick { 5 } else { 20 };
    let tau = 2.0;
    print!("R^var over {steps} TSSA steps (τ = {tau}), every fifth step from step 0:");
    for s in 0..=steps {
        let pi = vc.membership(&z)?;
        if s % 5 == 0 {
            print!(" {:.4}", vc.objective(&z, &pi)?);
        }
        z = vc.step(&z, tau)?;
    }
    println!();

    let (dim, heads) = (384, 6);
    let tssa = Tssa::<f32>::new(
        &TssaConfig {
            dim,
            heads,
            qkv_bias: true,
        },
        &mut rng,
    )?;
    let mssa = Mssa::<f32>::new(
        &MssaConfig {
            dim,
            heads,
            dim_head: dim / heads,
        },
        &mut rng,
    )?;
    let sizes: &[usize] = if quick {
        &[256, 1024]
    } else {
        &[256, 1024, 4096]
    };
    println!("one forward, dim {dim}, {heads} heads, f32 (best of 3):");
    for &n in sizes {
        let x = Array2::<f32>::from_shape_simple_fn((n, dim), || rng.sample(StandardNormal));
        let time = |f: &dyn Fn()| {
            (0..3)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min)
        };
        let t = time(&|| {
            std::hint::black_box(tssa.forward(&x).unwrap());
        });
        let m = time(&|| {
            std::hint::black_box(mssa.forward(&x).unwrap());
        });
        println!(
            "  N = {n:>5}: TSSA {t:>8.2} ms, MSSA {m:>8.2} ms ({:.1}×)",
            m / t
        );
    }
    Ok(())
}
