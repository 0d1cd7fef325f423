//! Self-supervised MCR² on the built-in digits: no labels during training, the augmentations
//! of each image form its class (the mcr2 reference's self-supervised objective,
//! `rate::view_groups`), a linear map is learned by gradient ascent on ΔR; the true labels
//! are used only to evaluate the learned features by the nearest subspace.
mod common;

use mcr2::fit::{FitConfig, LinearMap, StepSchedule};
use mcr2::ndarray::{Array2, Axis, concatenate};
use mcr2::rand::{SeedableRng, rngs::StdRng};
use mcr2::subspace::{NearestSubspace, SubspaceConfig};
use mcr2::{Labels, Membership, Precision};

const ABOUT: &str = "Self-supervised MCR² on the built-in digits (every fourth image held out): each training image is augmented into 9 views (itself and its 8 shifts by one pixel), the views of one image form one class and no digit label is used; a linear map 64 → 64 is learned by gradient ascent on ΔR(normalize(X W)) (ε² = 0.5), then the nearest class subspace (rank 12, fitted with the true labels) classifies the test images; printed next to the nearest subspace and the 5-nearest-neighbour classifier on the raw pixels.";

const FLAGS: &[(&str, &str)] = &[
    ("--iterations N", "gradient-ascent iterations (default 100)"),
    ("--eps-sq E", "ε² of the coding rates (default 0.5)"),
    (
        "--rank R",
        "rank of the class subspaces of the classifier (default 12)",
    ),
    (
        "--plots DIR",
        "directory for the SVG plots (default target/plots)",
    ),
];

fn main() {
    common::main("self_supervised_digits", ABOUT, FLAGS, run)
}

/// The 8 × 8 images (rows of 64 pixels) shifted by (dy, dx), zeros shifted in.
fn shifted(x: &Array2<f64>, dy: i32, dx: i32) -> Array2<f64> {
    Array2::from_shape_fn(x.dim(), |(i, p)| {
        let (r, c) = ((p / 8) as i32 - dy, (p % 8) as i32 - dx);
        if (0..8).contains(&r) && (0..8).contains(&c) {
            x[(i, (r * 8 + c) as usize)]
        } else {
            0.0
        }
    })
}

/// Rows scaled to unit norm (a zero row stays zero).
fn unit_rows(mut x: Array2<f64>) -> Array2<f64> {
    for mut row in x.rows_mut() {
        let n = row.dot(&row).sqrt();
        if n > 0.0 {
            row.mapv_inplace(|v| v / n);
        }
    }
    x
}

/// The k-nearest-neighbour accuracy (cosine similarity, majority vote, ties to the nearest).
fn knn_accuracy(
    train: &Array2<f64>,
    ytr: &Labels,
    test: &Array2<f64>,
    yte: &Labels,
    k: usize,
) -> f64 {
    let (train, test) = (unit_rows(train.clone()), unit_rows(test.clone()));
    let sims = test.dot(&train.t());
    let (ytr, yte) = (ytr.to_vec(), yte.to_vec());
    let correct = sims
        .rows()
        .into_iter()
        .zip(&yte)
        .filter(|(row, y)| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let mut votes = vec![0usize; ytr.iter().max().map_or(0, |m| m + 1)];
            for &j in &order[..k] {
                votes[ytr[j]] += 1;
            }
            let best = votes.iter().copied().max().unwrap_or(0);
            // the nearest neighbour among the tied classes
            let vote = order[..k]
                .iter()
                .map(|&j| ytr[j])
                .find(|&c| votes[c] == best);
            vote == Some(**y)
        })
        .count();
    correct as f64 / yte.len() as f64
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = common::arg_value("--iterations")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(if common::quick() { 10 } else { 100 });
    let (train, test) = mcr2::data::digits()?.normalized().split()?;
    let (xtr, ytr) = (train.pixels, train.labels);
    let (xte, yte) = (test.pixels, test.labels);
    let rank: usize = common::arg_value("--rank")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(12);

    // nine views of every training image: itself and its eight shifts by one pixel (with
    // five views, the four axis shifts, 98.0 % at 100 iterations)
    let shifts = [
        (0, 0),
        (1, 0),
        (-1, 0),
        (0, 1),
        (0, -1),
        (1, 1),
        (1, -1),
        (-1, 1),
        (-1, -1),
    ];
    let views: Vec<Array2<f64>> = shifts
        .iter()
        .map(|&(dy, dx)| unit_rows(shifted(&xtr, dy, dx)))
        .collect();
    let stacked = concatenate(Axis(0), &views.iter().map(|v| v.view()).collect::<Vec<_>>())?;
    let groups = mcr2::rate::view_groups(views.len(), xtr.nrows())?;
    let membership = Membership::from(groups);

    let eps_sq: f64 = common::arg_value("--eps-sq")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(0.5);
    let eps = Precision::from_eps_sq(eps_sq)?;
    let mut config = FitConfig::new(eps);
    config.step = 0.5;
    config.schedule = StepSchedule::Cosine {
        final_fraction: 0.02,
    };
    config.max_iterations = iterations;
    println!(
        "digits: {} training images × {} views = {} rows in {} classes (one per image, no digit label), {} test images",
        xtr.nrows(),
        views.len(),
        stacked.nrows(),
        xtr.nrows(),
        xte.nrows()
    );
    // the same map before any step: what the ascent on ΔR changes
    let mut untrained = config;
    untrained.max_iterations = 0;
    let (start, _) = LinearMap::fit(
        &stacked,
        &membership,
        64,
        &untrained,
        &mut StdRng::seed_from_u64(0),
        |_: &mcr2::fit::Progress| (),
    )?;
    let bar = common::progress_bar(iterations)?;
    let started = std::time::Instant::now();
    let (map, report) = LinearMap::fit(
        &stacked,
        &membership,
        64,
        &config,
        &mut StdRng::seed_from_u64(0),
        |p| common::show_progress(&bar, p),
    )?;
    bar.finish_and_clear();
    let first = report.history.first().map_or(f64::NAN, |p| p.delta_r);
    let last = report.history.last().map_or(f64::NAN, |p| p.delta_r);
    println!(
        "multi-view ΔR: {first:.4} → {last:.4} in {} iterations ({:.1} s)",
        report.iterations,
        started.elapsed().as_secs_f64()
    );

    let raw = NearestSubspace::fit(&xtr, &ytr, &SubspaceConfig::new(rank))?.accuracy(&xte, &yte)?;
    let knn = knn_accuracy(&xtr, &ytr, &xte, &yte, 5);
    let (ftr, fte) = (map.transform(&xtr)?, map.transform(&xte)?);
    let learned = NearestSubspace::fit(&ftr, &ytr, &SubspaceConfig::new(rank))?;
    let acc = learned.accuracy(&fte, &yte)?;
    let knn_learned = knn_accuracy(&ftr, &ytr, &fte, &yte, 5);
    let before = NearestSubspace::fit(&start.transform(&xtr)?, &ytr, &SubspaceConfig::new(rank))?
        .accuracy(&start.transform(&xte)?, &yte)?;
    println!(
        "raw pixels: nearest subspace (rank {rank}) {:.1}%, 5-NN {:.1}%; the untrained (random) map: nearest subspace {:.1}%; learned features: 5-NN {:.1}%",
        100.0 * raw,
        100.0 * knn,
        100.0 * before,
        100.0 * knn_learned
    );
    let dir = common::plots_dir()?;
    let plot = common::plot_delta_r(
        &dir,
        "self_supervised_digits_delta_r.svg",
        "multi-view ΔR during the fit (digits, no labels)",
        &report,
    )?;
    println!("plot: {}", plot.display());
    println!("test accuracy: {:.1}%", 100.0 * acc);
    Ok(())
}
