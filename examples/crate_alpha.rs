//! CRATE-α, the white-box transformer that scales: parameter counts of the published
//! configurations, a seeded model's forward on a batch of images with its top-5 classes,
//! the sparsity of each layer's codes, and one training step.
//!
//! `cargo run --release --example crate_alpha` (`--quick`: a small model;
//! `--checkpoint FILE --config NAME [--prefix P]`: run converted reference weights, e.g.
//! `--config B/16`; the README shows the conversion)
//!
//! The images are synthetic (smooth colour gradients with a bright square): with untrained
//! weights the classes mean nothing; the point is the pipeline, its shapes and its speed.

mod common;

use mcr2::Labels;
use mcr2::crate_alpha::{CRATE_ALPHA_VARIANTS, CrateAlphaClassifier, CrateAlphaConfig};
use mcr2::nn::Checkpoint;
use mcr2::train::{AdamW, AdamWConfig, cross_entropy};
use rand::{SeedableRng, rngs::StdRng};

const ABOUT: &str = "CRATE-α: parameter counts of the published configurations, a forward on a batch of images with the top-5 classes and each layer's code sparsity, and one training step.";

const FLAGS: &[(&str, &str)] = &[
    (
        "--config NAME",
        "Ti, S, B, L or H / patch, e.g. B/16 or L/14 (default B/16; --quick: a small model)",
    ),
    (
        "--checkpoint FILE",
        "reference weights in safetensors (default: seeded initialization)",
    ),
    (
        "--prefix P",
        "the prefix of the tensor names in FILE (default none)",
    ),
];

/// The published models (README of UCSC-VLAA/CRATE-alpha and the CLIPA experiments).
const PUBLISHED: [&str; 7] = ["B/32", "B/16", "B/8", "L/32", "L/14", "L/8", "H/14"];

fn main() {
    common::main("crate_alpha", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("parameters of the published CRATE-α configurations (224² images, 1000 classes):");
    for name in PUBLISHED {
        let c = CrateAlphaConfig::named(name)?;
        let b = &c.block;
        println!(
            "  CRATE-α-{name:<5} dim {:>4}, depth {:>2}, {:>2} heads × {:>2}, {:>3} patches: {:>11} parameters",
            b.dim,
            c.depth,
            b.heads,
            b.dim_head,
            c.num_patches(),
            group(c.parameter_count())
        );
    }
    let widths: Vec<String> = CRATE_ALPHA_VARIANTS
        .iter()
        .map(|(n, d, l, h)| format!("{n} {d}/{l}/{h}"))
        .collect();
    println!("  (variants: width/depth/heads {})", widths.join(", "));

    let checkpoint = common::arg_value("--checkpoint");
    let (name, config) = match common::arg_value("--config") {
        Some(name) => {
            let c = CrateAlphaConfig::named(&name)?;
            (name, c)
        }
        None if common::quick() && checkpoint.is_none() => (
            "small test model".into(),
            CrateAlphaConfig::new(32, 8, 10, 64, 2, 4, 16),
        ),
        None => ("B/16".into(), CrateAlphaConfig::base()),
    };
    let model = match &checkpoint {
        Some(path) => {
            let bytes = std::fs::read(path)?;
            let prefix = common::arg_value("--prefix").unwrap_or_default();
            println!("\nloading {path} as CRATE-α-{name}");
            CrateAlphaClassifier::<f32>::from_safetensors(&bytes, &config, &prefix)?
        }
        None => CrateAlphaClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(0))?,
    };

    let batch = if common::quick() { 2 } else { 4 };
    let side = config.image_size;
    let images = common::synthetic_images(batch, side);

    let start = std::time::Instant::now();
    let top = model.top_k(&images, 5)?;
    let elapsed = start.elapsed();
    println!(
        "\nCRATE-α-{name}, {batch} image(s) of {side} × {side}: forward in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    common::print_top_k(&top);

    // the sparse codes A² of each layer's ODL step
    println!("\nzeros in the sparse codes A² of each layer's ODL step (whole batch):");
    for (l, zeros) in model.code_sparsity(&images)?.iter().enumerate() {
        println!("  layer {:>2}: {:>5.1}%", l + 1, 100.0 * zeros);
    }

    // one training step: cross-entropy on made-up labels, backward, AdamW
    let labels = Labels::new(
        &(0..batch)
            .map(|i| i % config.num_classes)
            .collect::<Vec<_>>(),
        config.num_classes,
    )?;
    let mut model = model;
    let mut optimizer = AdamW::new(&model.parameters(), AdamWConfig::new(1e-4))?;
    let start = std::time::Instant::now();
    let (logits, cache) = model.forward_train(&images)?;
    let loss = cross_entropy(&logits, &labels, 0.0)?;
    let grads = model.backward(&cache, Some(loss.grad.view()), None)?;
    optimizer.step(&mut model, &grads)?;
    let after = cross_entropy(&model.forward(&images)?, &labels, 0.0)?.loss;
    println!(
        "\none AdamW step (lr 1e-4) in {:.1} ms: cross-entropy {:.4} → {:.4}",
        start.elapsed().as_secs_f64() * 1e3,
        loss.loss,
        after
    );
    Ok(())
}

/// 72328936 → "72,328,936".
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
