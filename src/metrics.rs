//! Measures of predictions and representations: accuracy, segmentation error (with the
//! Hungarian matching), the top-k classes of logits, and per-class singular values, subspace
//! angles and means.
//!
//! ```
//! use mcr2::metrics::{accuracy, segmentation_error};
//! use mcr2::Labels;
//! let truth = Labels::new(&[0, 1, 2, 2], 3)?;
//! assert_eq!(accuracy(&[0, 1, 1, 2], &truth)?, 0.75);
//! // a relabelled segmentation is still perfect
//! let segments = Labels::from_ids(&[5, 5, 7, 7])?;
//! assert_eq!(segmentation_error(&segments, &Labels::new(&[0, 0, 1, 1], 2)?)?, 0.0);
//! # Ok::<(), mcr2::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayRef2, Axis};

use crate::subspace::{NearestSubspace, SubspaceConfig, principal_angles};
use crate::{Error, Float, Labels, Result};

/// The fraction of predictions equal to the true labels (one prediction per sample).
pub fn accuracy(predicted: &[usize], truth: &Labels) -> Result<f64> {
    truth.check_samples(predicted.len())?;
    let hits = predicted
        .iter()
        .zip(truth.iter())
        .filter(|(p, t)| **p == *t)
        .count();
    Ok(hits as f64 / truth.n_samples() as f64)
}

/// The `k` largest entries of each row of `logits` (b × classes) as (class, logit), largest
/// first (ties: smaller class index first).
pub fn top_k<T: Float>(logits: &ArrayRef2<T>, k: usize) -> Result<Vec<Vec<(usize, T)>>> {
    crate::validate::matrix("logits", logits)?;
    if k == 0 || k > logits.ncols() {
        return Err(Error::InvalidParameter {
            name: "k",
            value: k.to_string(),
            reason: "must be between 1 and the number of classes",
        });
    }
    Ok(logits
        .rows()
        .into_iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).expect("finite").then(a.cmp(&b)));
            idx.into_iter().take(k).map(|i| (i, row[i])).collect()
        })
        .collect())
}

/// Largest matching accepted by [`segmentation_error`], in units of r²·c for r × c groups
/// (r ≤ c, non-empty ones only): about ten seconds of work.
pub const MAX_MATCHING_WORK: u128 = 20_000_000_000;

/// The fraction of samples misassigned under the best one-to-one matching of predicted
/// groups to true classes (Hungarian algorithm on the rectangular r × c table of shared
/// samples, r ≤ c the numbers of non-empty groups on the two sides); samples of unmatched
/// groups count as errors. Cost O(r²c) time and O(rc) memory: 20,000 singleton groups against
/// 10 classes take milliseconds; a table past [`MAX_MATCHING_WORK`] (for instance 20,000
/// groups on both sides) is refused at once with [`Error::TooLarge`].
pub fn segmentation_error(predicted: &Labels, truth: &Labels) -> Result<f64> {
    truth.check_samples(predicted.n_samples())?;
    // number the non-empty groups of each side 0..
    let compact = |l: &Labels| -> (Vec<usize>, usize) {
        let sizes = l.class_sizes();
        let mut index = vec![usize::MAX; sizes.len()];
        let mut next = 0;
        for (j, &s) in sizes.iter().enumerate() {
            if s > 0 {
                index[j] = next;
                next += 1;
            }
        }
        (l.iter().map(|j| index[j]).collect(), next)
    };
    let (p, np) = compact(predicted);
    let (t, nt) = compact(truth);
    // rows: the smaller side
    let (rows, cols, r, c) = if np <= nt {
        (p, t, np, nt)
    } else {
        (t, p, nt, np)
    };
    if (r as u128) * (r as u128) * (c as u128) > MAX_MATCHING_WORK {
        return Err(Error::TooLarge {
            what: "group matching (r²·c past MAX_MATCHING_WORK)",
            bytes: None,
            budget: crate::memory_budget(),
        });
    }
    let len = crate::validate::elements_of::<i64>("group matching table", &[r, c])?;
    // cost = −(samples in common)
    let mut cost = vec![0i64; len];
    for (&a, &b) in rows.iter().zip(&cols) {
        cost[a * c + b] -= 1;
    }
    let matched: i64 = -hungarian(&cost, r, c);
    Ok(1.0 - matched as f64 / truth.n_samples() as f64)
}

/// Minimum-cost matching of every row of an r × c cost table (r ≤ c, row-major) to distinct
/// columns (shortest augmenting paths with potentials, O(r²c)); returns the minimum total
/// cost.
fn hungarian(cost: &[i64], r: usize, c: usize) -> i64 {
    const INF: i64 = i64::MAX / 4;
    let at = |i: usize, j: usize| cost[(i - 1) * c + (j - 1)];
    // 1-based: u, v potentials; p[j] = row matched to column j; way = predecessor column
    let mut u = vec![0i64; r + 1];
    let mut v = vec![0i64; c + 1];
    let mut p = vec![0usize; c + 1];
    let mut way = vec![0usize; c + 1];
    let mut minv = vec![INF; c + 1];
    let mut used = vec![false; c + 1];
    for i in 1..=r {
        p[0] = i;
        let mut j0 = 0usize;
        minv.fill(INF);
        used.fill(false);
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = INF;
            let mut j1 = 0;
            for j in 1..=c {
                if !used[j] {
                    let cur = at(i0, j) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=c {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=c).filter(|&j| p[j] != 0).map(|j| at(p[j], j)).sum()
}

/// How orthogonal the class subspaces of a feature matrix are: for every pair of classes the
/// smallest principal angle (degrees) between their rank-`rank` subspaces (uncentered SVD).
/// 90° everywhere means mutually orthogonal class subspaces. Returns a k × k matrix (diagonal 0).
pub fn class_subspace_angles<T: Float>(
    z: &ArrayRef2<T>,
    labels: &Labels,
    rank: usize,
) -> Result<Array2<f64>> {
    let ns = NearestSubspace::fit(z, labels, &SubspaceConfig::new(rank))?;
    let classes = labels.n_classes();
    let mut out = Array2::<f64>::zeros((classes, classes));
    for a in 0..classes {
        for b in (a + 1)..classes {
            let angles = principal_angles(&ns.fits()[a].basis, &ns.fits()[b].basis)?;
            let min = angles
                .first()
                .copied()
                .unwrap_or(std::f64::consts::FRAC_PI_2)
                .to_degrees();
            out[(a, b)] = min;
            out[(b, a)] = min;
        }
    }
    Ok(out)
}

/// The singular values of each class block of `z` (rows grouped by `labels`), descending.
pub fn class_singular_values<T: Float>(z: &ArrayRef2<T>, labels: &Labels) -> Result<Vec<Vec<f64>>> {
    crate::validate::matrix("Z", z)?;
    labels.check_samples(z.nrows())?;
    labels
        .groups()
        .into_iter()
        .map(|rows| {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let block = z.select(Axis(0), &rows);
            let (_, s, _) =
                crate::linalg::thin_svd(block.view()).ok_or(Error::NoConvergence("SVD"))?;
            crate::validate::finite_output("class singular values", &s)?;
            Ok(s.iter().map(|v| v.as_f64()).collect())
        })
        .collect()
}

/// Mean feature of each class (k × d), for inspecting how the classes separate.
pub fn class_means<T: Float>(z: &ArrayRef2<T>, labels: &Labels) -> Result<Array2<T>> {
    crate::validate::matrix("features", z)?;
    let rows = labels.nonempty_groups(z.nrows())?;
    let mut out = Array2::<T>::zeros((labels.n_classes(), z.ncols()));
    for (j, members) in rows.iter().enumerate() {
        let mut mean = Array1::<T>::zeros(z.ncols());
        for &i in members {
            mean += &z.row(i);
        }
        mean /= T::from_usize(members.len());
        out.row_mut(j).assign(&mean);
    }
    crate::validate::finite_output("class means", &out)?;
    Ok(out)
}
