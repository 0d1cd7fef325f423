//! Time per forward of TSSA (linear in the number of tokens) and MSSA (quadratic) at the same
//! width (dim 384, 6 heads × 64, f32, one sequence) for N = 64 … 16384 tokens: the medians,
//! the log-log slope of each curve over N = 1024 … 16384, the crossover, and an SVG plot.
//!
//! `cargo bench --features parallel --bench tost_scaling` (2 threads: `RAYON_NUM_THREADS=2`;
//! `-- --plots DIR` for the plot's directory, default `target/plots`;
//! `-- --memory N` runs only TSSA at N tokens, for measuring its peak memory with
//! `/usr/bin/time -v`).

use std::time::Instant;

use mcr2::crate_layer::{Mssa, MssaConfig};
use mcr2::tost::{Tssa, TssaConfig};
use ndarray::Array2;
use plotters::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

const DIM: usize = 384;
const HEADS: usize = 6;

fn arg(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Median of repeated runs, at least 3 and until about 1.5 s (at most 25).
fn median_ms(mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed().as_secs_f64() < 1.5 && times.len() < 25) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Least-squares slope of log t against log N.
fn slope(points: &[(f64, f64)]) -> f64 {
    let xs: Vec<f64> = points.iter().map(|p| p.0.ln()).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.1.ln()).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    cov / var
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(0);
    let tssa = Tssa::<f32>::new(
        &TssaConfig {
            dim: DIM,
            heads: HEADS,
            qkv_bias: true,
        },
        &mut rng,
    )?;
    let mssa = Mssa::<f32>::new(
        &MssaConfig {
            dim: DIM,
            heads: HEADS,
            dim_head: DIM / HEADS,
        },
        &mut rng,
    )?;
    let tokens = |n: usize, rng: &mut StdRng| {
        Array2::<f32>::from_shape_simple_fn((n, DIM), || rng.sample::<f32, _>(StandardNormal))
    };
    if let Some(n) = arg("--memory") {
        let n: usize = n.parse()?;
        let x = tokens(n, &mut rng);
        let y = tssa.forward(&x)?;
        println!("TSSA at N = {n}: output {}×{}", y.nrows(), y.ncols());
        return Ok(());
    }
    println!(
        "dim {DIM}, {HEADS} heads × {}, f32, one sequence; median ms per forward",
        DIM / HEADS
    );
    println!("| N | TSSA ms | MSSA ms | MSSA / TSSA |");
    println!("|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    let mut n = 64;
    while n <= 16384 {
        let x = tokens(n, &mut rng);
        let t = median_ms(|| {
            std::hint::black_box(tssa.forward(&x).unwrap());
        });
        let m = median_ms(|| {
            std::hint::black_box(mssa.forward(&x).unwrap());
        });
        println!("| {n} | {t:.3} | {m:.3} | {:.1}× |", m / t);
        rows.push((n as f64, t, m));
        n *= 2;
    }
    let big: Vec<_> = rows.iter().filter(|r| r.0 >= 1024.0).collect();
    let st = slope(&big.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
    let sm = slope(&big.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>());
    println!("log-log slope over N = 1024 … 16384: TSSA {st:.3}, MSSA {sm:.3}");
    // crossover: the first N from which TSSA is faster, interpolated on the log scale
    let cross = rows.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        let (ra, rb) = ((a.2 / a.1).ln(), (b.2 / b.1).ln());
        (ra < 0.0 && rb >= 0.0)
            .then(|| (a.0.ln() + (b.0.ln() - a.0.ln()) * (-ra) / (rb - ra)).exp())
    });
    match (cross, rows.first()) {
        (Some(c), _) => println!("crossover: TSSA is faster from about N = {c:.0}"),
        (None, Some(r)) if r.1 < r.2 => {
            println!("crossover: TSSA is already faster at N = {}", r.0)
        }
        _ => println!("crossover: none in the measured range"),
    }
    if let Some(r) = rows.iter().find(|r| r.0 == 4096.0) {
        println!("at N = 4096: TSSA {:.1}× faster than MSSA", r.2 / r.1);
    }

    let dir = std::path::PathBuf::from(arg("--plots").unwrap_or_else(|| "target/plots".into()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tost_scaling.svg");
    let root = SVGBackend::new(&path, (720, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = rows.iter().fold((f64::INFINITY, 0.0f64), |(l, h), r| {
        (l.min(r.1).min(r.2), h.max(r.1).max(r.2))
    });
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "time per forward against tokens (dim 384, 6 heads)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (48.0f64..20000.0).log_scale(),
            (lo * 0.7..hi * 1.4).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("tokens N")
        .y_desc("ms")
        .draw()?;
    for (name, idx, color) in [
        (format!("TSSA (slope {st:.2})"), 1, BLUE),
        (format!("MSSA (slope {sm:.2})"), 2, RED),
    ] {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.0, if idx == 1 { r.1 } else { r.2 }))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    println!("plot: {}", path.display());
    Ok(())
}
