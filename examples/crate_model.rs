//! The whole CRATE image classifier: parameter counts of the reference configurations, a
//! seeded CRATE-T run on a batch of images, the top-5 classes, and the per-layer measures.
//!
//! `cargo run --release --example crate_model` (`--quick`: a batch of 1;
//! `--checkpoint FILE --config tiny|small|base|large`: load converted reference weights
//! instead of the seeded initialization — see the README for the conversion)
//!
//! The images are synthetic (smooth colour gradients with a bright square): with untrained
//! weights the classes mean nothing; the point is the pipeline, its shapes and its speed.

mod common;

use mcr2::crate_layer::{CrateClassifier, CrateConfig};
use mcr2::nn::Checkpoint;
use rand::{SeedableRng, rngs::StdRng};

fn config_named(name: &str) -> Result<CrateConfig, String> {
    Ok(match name {
        "tiny" => CrateConfig::tiny(),
        "small" => CrateConfig::small(),
        "base" => CrateConfig::base(),
        "large" => CrateConfig::large(),
        other => {
            return Err(format!(
                "unknown configuration {other} (tiny|small|base|large)"
            ));
        }
    })
}

const ABOUT: &str = "The whole CRATE image classifier: parameter counts of the reference configurations, a seeded CRATE-T run on a batch of images, the top-5 classes, and the per-layer measures.";

const FLAGS: &[(&str, &str)] = &[
    ("--config NAME", "tiny, small, base or large (default tiny)"),
    (
        "--checkpoint FILE",
        "reference weights in safetensors (default: seeded initialization)",
    ),
];

fn main() {
    common::main("crate_model", ABOUT, FLAGS, run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("parameters of the reference configurations:");
    for name in ["tiny", "small", "base", "large"] {
        let c = config_named(name)?;
        let b = &c.encoder.block;
        println!(
            "  CRATE-{:<6} dim {:>4}, depth {:>2}, {:>2} heads × {:>2}: {:>11} parameters",
            name,
            b.dim,
            c.encoder.depth,
            b.heads,
            b.dim_head,
            group(c.parameter_count())
        );
    }

    let name = common::arg_value("--config").unwrap_or_else(|| "tiny".into());
    let config = config_named(&name)?;
    let model = match common::arg_value("--checkpoint") {
        Some(path) => {
            let bytes = std::fs::read(&path)?;
            println!("loading {path} as CRATE-{name}");
            CrateClassifier::<f32>::from_safetensors(&bytes, &config, "")?
        }
        None => CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(0))?,
    };

    let batch = if common::quick() { 1 } else { 4 };
    let side = config.image_size;
    let images = common::synthetic_images(batch, side);

    let start = std::time::Instant::now();
    let top = model.top_k(&images, 5)?;
    let elapsed = start.elapsed();
    println!(
        "\nCRATE-{name}, {batch} image(s) of {side} × {side}: forward in {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    common::print_top_k(&top);

    let inspection = model.inspect(&images)?;
    println!(
        "\nper layer: compression of the input (½ Σ_heads logdet, ε² = 0.01), zeros in the output"
    );
    for (l, layer) in inspection.layers.iter().enumerate() {
        println!(
            "  layer {:>2}: compression {:>8.2}   sparsity {:>5.1}%",
            l + 1,
            layer.diagnostics.compression,
            100.0 * layer.diagnostics.sparsity
        );
    }
    Ok(())
}

/// 6090856 → "6,090,856".
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
