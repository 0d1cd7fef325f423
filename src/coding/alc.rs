//! Segmentation by agglomerative lossy compression (ALC).

use ndarray::{Array2, ArrayRef2, Axis};

use super::{Coder, Group};
use crate::observe::{Flow, Stop};
use crate::{Error, Float, Labels, Result};

/// One merge of [`alc`], as the observer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AlcProgress {
    /// Merges done so far.
    pub merges: usize,
    /// Current number of groups.
    pub groups: usize,
    /// Current segmentation coding length (in the coder's unit).
    pub coding_length: f64,
}

/// The result of [`alc`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Segmentation {
    /// Group of each sample, numbered 0.. in order of each group's first sample.
    pub labels: Labels,
    /// Number of groups.
    pub groups: usize,
    /// The segmentation coding length before the first merge and after each merge (in the
    /// coder's unit); it decreases strictly.
    pub trace: Vec<f64>,
    /// [`Stop::Converged`] when no merge lowers the coding length (or one group is left),
    /// [`Stop::Observer`] when the observer stopped the merging.
    pub stop: Stop,
}

/// Largest number of samples [`alc`] accepts: its time grows about as m^2.5 (3,000 samples
/// took 6.8 s on one core of the development machine), so this bound keeps a call under a
/// minute there; its m × m pair table is 288 MB at the bound.
pub const ALC_MAX_SAMPLES: usize = 6_000;

/// Segments the rows of `x` by agglomerative lossy compression: start from one group per
/// sample; repeatedly merge the pair of groups whose union lowers the segmentation coding
/// length `L^s` the most; stop when no merge lowers it. The number of groups is chosen by the
/// data and ε alone.
///
/// Every pair's change in coding length is cached (an m × m table) and only the pairs of the
/// merged group are recomputed after a merge, with the best partner of each group tracked so
/// that finding the next merge is one pass over the groups. Each evaluation codes the union
/// on its smaller side: from the k × k Gram of its centered samples while it has k ≤ n samples,
/// from its merged n × n scatter afterwards. Cost: m(m − 1)/2 evaluations to start, then at
/// most (current number of groups) per merge, so O(m²) evaluations of O(min(k, n)³) each
/// in total, and O(m²) memory (8 bytes per pair: 32 MB at m = 2000). With the `parallel`
/// feature the evaluations run on the rayon pool. More than [`ALC_MAX_SAMPLES`] samples are
/// refused at once with [`Error::TooLarge`]. The observer sees the state before the first
/// merge and after each one, and may stop the merging (see [`crate::observe`]).
pub fn alc<T: Float, R: Flow>(
    x: &ArrayRef2<T>,
    coder: &Coder,
    mut observer: impl FnMut(&AlcProgress) -> R,
) -> Result<Segmentation> {
    crate::validate::matrix("samples", x)?;
    if x.nrows() > ALC_MAX_SAMPLES {
        return Err(Error::TooLarge {
            what: "ALC input (more than ALC_MAX_SAMPLES samples)",
            bytes: None,
            budget: crate::memory_budget(),
        });
    }
    crate::validate::elements_of::<f64>("ALC pair table", &[x.nrows(), x.nrows()])?;
    let x = x.mapv(|v| v.as_f64());
    let m = x.nrows();
    let mf = m as f64;
    // membership bits of a group of k samples (nats)
    let member = |k: usize| -(k as f64) * (k as f64 / mf).ln();
    let mut groups: Vec<Option<Group>> = (0..m).map(|i| Some(coder.group(&x, vec![i]))).collect();
    let mut total: f64 = groups
        .iter()
        .flatten()
        .map(|g| g.length + member(g.members.len()))
        .sum();
    let delta_of = |a: &Group, b: &Group| -> f64 {
        let u = coder.merge(&x, a, b, false);
        (u.length + member(u.members.len()))
            - (a.length + member(a.members.len()))
            - (b.length + member(b.members.len()))
    };
    // the pair table, full (both triangles) so that rows are contiguous
    let mut delta = Array2::<f64>::from_elem((m, m), f64::INFINITY);
    {
        let gs: Vec<&Group> = groups
            .iter()
            .map(|g| g.as_ref().expect("all present"))
            .collect();
        let fill_row = |i: usize, mut row: ndarray::ArrayViewMut1<f64>| {
            for j in (i + 1)..m {
                row[j] = delta_of(gs[i], gs[j]);
            }
        };
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            delta
                .axis_iter_mut(Axis(0))
                .into_par_iter()
                .enumerate()
                .for_each(|(i, row)| fill_row(i, row));
        }
        #[cfg(not(feature = "parallel"))]
        for (i, row) in delta.axis_iter_mut(Axis(0)).enumerate() {
            fill_row(i, row);
        }
        for i in 0..m {
            for j in (i + 1)..m {
                delta[(j, i)] = delta[(i, j)];
            }
        }
    }
    let mut active: Vec<usize> = (0..m).collect();
    let best_in = |delta: &Array2<f64>, active: &[usize], i: usize| -> (f64, usize) {
        let row = delta.row(i);
        active
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| (row[j], j))
            .fold(
                (f64::INFINITY, usize::MAX),
                |b, c| if c.0 < b.0 { c } else { b },
            )
    };
    let mut best: Vec<(f64, usize)> = (0..m).map(|i| best_in(&delta, &active, i)).collect();
    let scale = |v: f64| coder.scale(v);
    let mut trace = Vec::new();
    let mut merges = 0;
    let stop = loop {
        trace.push(scale(total));
        let flow = observer(&AlcProgress {
            merges,
            groups: active.len(),
            coding_length: scale(total),
        })
        .flow();
        if flow.is_break() {
            break Stop::Observer;
        }
        if active.len() <= 1 {
            break Stop::Converged;
        }
        let (gain, a) =
            active
                .iter()
                .map(|&i| (best[i].0, i))
                .fold(
                    (f64::INFINITY, usize::MAX),
                    |b, c| if c.0 < b.0 { c } else { b },
                );
        if gain.is_nan() || gain >= 0.0 {
            break Stop::Converged;
        }
        let b = best[a].1;
        let (a, b) = (a.min(b), a.max(b));
        let ga = groups[a].take().expect("active");
        let gb = groups[b].take().expect("active");
        let merged = coder.merge(&x, &ga, &gb, false);
        total += gain;
        groups[a] = Some(merged);
        active.retain(|&i| i != b);
        delta.row_mut(b).fill(f64::INFINITY);
        delta.column_mut(b).fill(f64::INFINITY);
        // the merged group's row
        let ga = groups[a].as_ref().expect("just merged");
        let others: Vec<usize> = active.iter().copied().filter(|&c| c != a).collect();
        let eval = |&c: &usize| delta_of(ga, groups[c].as_ref().expect("active"));
        #[cfg(feature = "parallel")]
        let row: Vec<f64> = {
            use rayon::prelude::*;
            others.par_iter().map(eval).collect()
        };
        #[cfg(not(feature = "parallel"))]
        let row: Vec<f64> = others.iter().map(eval).collect();
        for (&c, &v) in others.iter().zip(&row) {
            delta[(a, c)] = v;
            delta[(c, a)] = v;
        }
        for &c in &others {
            if best[c].1 == a || best[c].1 == b {
                best[c] = best_in(&delta, &active, c);
            } else if delta[(c, a)] < best[c].0 {
                best[c] = (delta[(c, a)], a);
            }
        }
        best[a] = best_in(&delta, &active, a);
        merges += 1;
    };
    let mut labels = vec![0usize; m];
    let mut order: Vec<&Group> = groups.iter().flatten().collect();
    order.sort_by_key(|g| g.members.iter().min().copied());
    for (l, g) in order.iter().enumerate() {
        for &i in &g.members {
            labels[i] = l;
        }
    }
    Ok(Segmentation {
        labels: Labels::new(&labels, order.len())?,
        groups: order.len(),
        trace,
        stop,
    })
}
