//! Measures of predictions and representations: accuracy, segmentation error (with the
//! Hungarian matching), the top-k classes of logits, and per-class singular values, subspace
//! angles and means.
//!
//! ```
//! use mcr2::metrics::{accuracy, segmentation_error};
//! assert_eq!(accuracy(&[0, 1, 1, 2], &[0, 1, 2, 2])?, 0.75);
//! // a relabelled segmentation is still perfect
//! assert_eq!(segmentation_error(&[5, 5, 7, 7], &[0, 0, 1, 1])?, 0.0);
//! # Ok::<(), mcr2::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayRef2, Axis};

use crate::subspace::{NearestSubspace, principal_angles};
use crate::{Error, Float, Membership, Result};

/// The fraction of predictions equal to the true labels (both of the same length ≥ 1).
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> Result<f64> {
    accuracy_of(truth.len(), truth, || Ok(predicted.to_vec()))
}

/// The fraction of `rows` predictions equal to `labels` (which must have `rows` entries).
pub(crate) fn accuracy_of(
    rows: usize,
    labels: &[usize],
    predict: impl FnOnce() -> Result<Vec<usize>>,
) -> Result<f64> {
    if labels.len() != rows {
        return Err(Error::ShapeMismatch {
            what: "labels",
            expected: format!("{rows} labels"),
            got: format!("{}", labels.len()),
        });
    }
    let pred = predict()?;
    if pred.len() != rows || rows == 0 {
        return Err(Error::ShapeMismatch {
            what: "predictions",
            expected: format!("{rows} predictions (at least one)"),
            got: format!("{}", pred.len()),
        });
    }
    Ok(pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / rows.max(1) as f64)
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

/// The fraction of samples misassigned under the best one-to-one matching of predicted
/// groups to true classes (Hungarian algorithm); samples of unmatched groups count as errors.
/// Cost O(g³) time and O(g²) memory for g = the larger of the numbers of groups and classes.
pub fn segmentation_error(predicted: &[usize], truth: &[usize]) -> Result<f64> {
    crate::coding::check_labels(predicted, truth.len())?;
    if truth.is_empty() {
        return Err(Error::Empty {
            what: "labels",
            rows: 0,
            cols: 0,
        });
    }
    let relabel = |l: &[usize]| -> (Vec<usize>, usize) {
        let mut map = std::collections::HashMap::new();
        let v = l
            .iter()
            .map(|x| {
                let next = map.len();
                *map.entry(*x).or_insert(next)
            })
            .collect();
        (v, map.len())
    };
    let (p, np) = relabel(predicted);
    let (t, nt) = relabel(truth);
    let size = np.max(nt);
    // cost = −(samples in common), padded to a square matrix
    let mut cost = vec![vec![0i64; size]; size];
    for (&a, &b) in p.iter().zip(&t) {
        cost[a][b] -= 1;
    }
    let matched: i64 = -hungarian(&cost);
    Ok(1.0 - matched as f64 / truth.len() as f64)
}

/// Minimum-cost perfect matching of a square cost matrix (shortest augmenting paths with
/// potentials); returns the minimum total cost.
fn hungarian(cost: &[Vec<i64>]) -> i64 {
    let n = cost.len();
    const INF: i64 = i64::MAX / 4;
    // 1-based: u, v potentials; p[j] = row matched to column j; way = predecessor column
    let mut u = vec![0i64; n + 1];
    let mut v = vec![0i64; n + 1];
    let mut p = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![INF; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = INF;
            let mut j1 = 0;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
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
            for j in 0..=n {
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
    (1..=n).map(|j| cost[p[j] - 1][j - 1]).sum()
}

/// How orthogonal the class subspaces of a feature matrix are: for every pair of classes the
/// smallest principal angle (degrees) between their rank-`rank` subspaces (uncentered SVD).
/// 90° everywhere means mutually orthogonal class subspaces. Returns a k × k matrix (diagonal 0).
pub fn class_subspace_angles<T: Float>(
    z: &ArrayRef2<T>,
    labels: &[usize],
    classes: usize,
    rank: usize,
) -> Result<Array2<f64>> {
    let ns = NearestSubspace::fit(z, labels, classes, rank, false)?;
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
pub fn class_singular_values<T: Float>(
    z: &ArrayRef2<T>,
    labels: &[usize],
    classes: usize,
) -> Result<Vec<Vec<f64>>> {
    crate::validate::matrix("Z", z)?;
    Membership::<T>::hard(labels, classes)?.check_samples(z.nrows())?;
    (0..classes)
        .map(|j| {
            let rows = crate::membership::rows_of_class(labels, j);
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let block = z.select(Axis(0), &rows);
            let (_, s, _) =
                crate::linalg::thin_svd(block.view()).ok_or(Error::NoConvergence("SVD"))?;
            Ok(s.iter().map(|v| v.as_f64()).collect())
        })
        .collect()
}

/// Mean feature of each class (k × d), for inspecting how the classes separate.
pub fn class_means<T: Float>(
    z: &ArrayRef2<T>,
    labels: &[usize],
    classes: usize,
) -> Result<Array2<T>> {
    crate::validate::matrix("features", z)?;
    let rows = crate::membership::class_members(labels, classes, z.nrows())?;
    let mut out = Array2::<T>::zeros((classes, z.ncols()));
    for (j, members) in rows.iter().enumerate() {
        let mut mean = Array1::<T>::zeros(z.ncols());
        for &i in members {
            mean += &z.row(i);
        }
        mean /= T::from_usize(members.len());
        out.row_mut(j).assign(&mean);
    }
    Ok(out)
}
