//! Class membership Π: hard labels or a soft row-stochastic matrix.

use ndarray::{Array2, ArrayRef2};

use crate::{Error, Float, Result};

/// Which samples belong to which class, as the papers' Π = {Π_j}.
///
/// * **Hard**: one label per sample in `0..classes`, with the number of classes given
///   explicitly (it is never inferred from the largest label). Empty classes are allowed and
///   contribute exactly 0 to every class-conditional quantity.
/// * **Soft**: an `n × k` matrix Π with non-negative entries whose rows sum to 1, within
///   `max(1e-6, √ε_mach)` (1e-6 in `f64`, 3.5e-4 in `f32`); `Π[i, j]` is the papers' `(Π_j)_ii`.
///
/// The papers' diagonal `n × n` matrices Π_j are never built.
///
/// ```
/// use mcr2::Membership;
/// let m = Membership::<f64>::hard(&[0, 0, 1, 1], 3)?; // class 2 is empty
/// assert_eq!(m.class_weights(), vec![2.0, 2.0, 0.0]);
/// assert!(Membership::<f64>::hard(&[0, 3], 3).is_err());
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Membership<T> {
    n: usize,
    k: usize,
    repr: Repr<T>,
}

#[derive(Debug, Clone, PartialEq)]
enum Repr<T> {
    /// Sample indices grouped by class (`order[offsets[j]..offsets[j+1]]` are the samples of
    /// class j, ascending), so per-class work never scans all labels.
    Hard {
        labels: Vec<u32>,
        order: Vec<u32>,
        offsets: Vec<usize>,
    },
    Soft {
        pi: Array2<T>,
    },
}

/// One class as the rate computations see it: the samples with nonzero weight and, for soft
/// membership, their weights.
pub(crate) struct ClassRows<'a, T> {
    pub(crate) rows: std::borrow::Cow<'a, [u32]>,
    pub(crate) weights: Option<Vec<T>>,
    /// tr(Π_j): the sum of the weights (the count for hard labels).
    pub(crate) trace: f64,
}

impl<T: Float> Membership<T> {
    /// Hard labels, each in `0..classes`.
    ///
    /// Errors: `classes == 0`, no labels, a label ≥ `classes` ([`Error::LabelOutOfRange`]),
    /// more than 2³² − 1 samples or classes, or per-class offsets past the memory budget
    /// ([`Error::TooLarge`]).
    pub fn hard(labels: &[usize], classes: usize) -> Result<Self> {
        if classes == 0 {
            return Err(Error::InvalidMembership(
                "the number of classes must be at least 1".into(),
            ));
        }
        if labels.is_empty() {
            return Err(Error::InvalidMembership("no labels given".into()));
        }
        if labels.len() > u32::MAX as usize {
            return Err(Error::InvalidMembership(format!(
                "{} samples exceed the supported 2^32 - 1",
                labels.len()
            )));
        }
        if classes > u32::MAX as usize {
            return Err(Error::InvalidMembership(format!(
                "{classes} classes exceed the supported 2^32 - 1"
            )));
        }
        crate::validate::elements_of::<usize>("class offsets", &[classes, 1])?;
        let mut offsets = vec![0usize; classes + 1];
        for (index, &label) in labels.iter().enumerate() {
            if label >= classes {
                return Err(Error::LabelOutOfRange {
                    index,
                    label,
                    classes,
                });
            }
            offsets[label + 1] += 1;
        }
        for j in 0..classes {
            offsets[j + 1] += offsets[j];
        }
        let mut next = offsets[..classes].to_vec();
        let mut order = vec![0u32; labels.len()];
        for (i, &label) in labels.iter().enumerate() {
            order[next[label]] = i as u32;
            next[label] += 1;
        }
        let labels = labels.iter().map(|&l| l as u32).collect();
        Ok(Self {
            n: order.len(),
            k: classes,
            repr: Repr::Hard {
                labels,
                order,
                offsets,
            },
        })
    }

    /// Soft membership from an `n × k` row-stochastic matrix Π (rows are samples).
    ///
    /// Errors: an empty matrix, a non-finite or negative entry, or a row whose sum differs
    /// from 1 by more than `max(1e-6, √ε_mach)`.
    pub fn soft(pi: Array2<T>) -> Result<Self> {
        let (n, k) = pi.dim();
        if n == 0 || k == 0 {
            return Err(Error::Empty {
                what: "membership matrix Π",
                rows: n,
                cols: k,
            });
        }
        crate::validate::finite("membership matrix Π", &pi)?;
        let tol = 1e-6f64.max(T::epsilon().as_f64().sqrt());
        for (i, row) in pi.rows().into_iter().enumerate() {
            if let Some(j) = row.iter().position(|&x| x < T::zero()) {
                return Err(Error::InvalidMembership(format!(
                    "Π[{i}, {j}] = {} is negative",
                    row[j]
                )));
            }
            let s: f64 = row.iter().map(|x| x.as_f64()).sum();
            if (s - 1.0).abs() > tol {
                return Err(Error::InvalidMembership(format!(
                    "row {i} of Π sums to {s}, not 1 (tolerance {tol:e})"
                )));
            }
        }
        Ok(Self {
            n,
            k,
            repr: Repr::Soft { pi },
        })
    }

    /// Number of samples n.
    pub fn n_samples(&self) -> usize {
        self.n
    }

    /// Number of classes k.
    pub fn n_classes(&self) -> usize {
        self.k
    }

    /// Whether this is a hard labelling.
    pub fn is_hard(&self) -> bool {
        matches!(self.repr, Repr::Hard { .. })
    }

    /// tr(Π_j) for every class: the class sizes for hard labels.
    pub fn class_weights(&self) -> Vec<T> {
        match &self.repr {
            Repr::Hard { offsets, .. } => offsets
                .windows(2)
                .map(|w| T::from_usize(w[1] - w[0]))
                .collect(),
            Repr::Soft { pi } => pi.columns().into_iter().map(|c| c.sum()).collect(),
        }
    }

    /// The hard labels, or `None` for a soft membership.
    pub fn labels(&self) -> Option<Vec<usize>> {
        match &self.repr {
            Repr::Hard { labels, .. } => Some(labels.iter().map(|&l| l as usize).collect()),
            Repr::Soft { .. } => None,
        }
    }

    /// Π as a dense `n × k` matrix (one-hot rows for hard labels).
    pub fn to_matrix(&self) -> Array2<T> {
        match &self.repr {
            Repr::Hard { labels, .. } => {
                let mut pi = Array2::zeros((self.n, self.k));
                for (i, &l) in labels.iter().enumerate() {
                    pi[(i, l as usize)] = T::one();
                }
                pi
            }
            Repr::Soft { pi } => pi.clone(),
        }
    }

    /// The label of every sample, for hard memberships.
    pub(crate) fn hard_labels(&self) -> Option<&[u32]> {
        match &self.repr {
            Repr::Hard { labels, .. } => Some(labels),
            Repr::Soft { .. } => None,
        }
    }

    pub(crate) fn soft_matrix(&self) -> Option<&ArrayRef2<T>> {
        match &self.repr {
            Repr::Soft { pi } => Some(pi),
            Repr::Hard { .. } => None,
        }
    }

    /// Samples and weights of class `j`.
    pub(crate) fn class_rows(&self, j: usize) -> ClassRows<'_, T> {
        match &self.repr {
            Repr::Hard { order, offsets, .. } => {
                let rows = &order[offsets[j]..offsets[j + 1]];
                ClassRows {
                    trace: rows.len() as f64,
                    rows: std::borrow::Cow::Borrowed(rows),
                    weights: None,
                }
            }
            Repr::Soft { pi } => {
                let col = pi.column(j);
                let mut rows = Vec::new();
                let mut weights = Vec::new();
                let mut trace = 0.0;
                for (i, &w) in col.iter().enumerate() {
                    if w > T::zero() {
                        rows.push(i as u32);
                        weights.push(w);
                        trace += w.as_f64();
                    }
                }
                ClassRows {
                    rows: std::borrow::Cow::Owned(rows),
                    weights: Some(weights),
                    trace,
                }
            }
        }
    }

    /// Errors unless this membership has `n` samples.
    pub(crate) fn check_samples(&self, n: usize) -> Result<()> {
        if self.n != n {
            return Err(Error::ShapeMismatch {
                what: "membership",
                expected: format!("{n} samples (rows of Z)"),
                got: format!("{} samples", self.n),
            });
        }
        Ok(())
    }
}

/// The rows of each class 0..classes, checking that there is one label per row, every label
/// is in range and every class has at least one row.
pub(crate) fn class_members(
    labels: &[usize],
    classes: usize,
    rows: usize,
) -> Result<Vec<Vec<usize>>> {
    if labels.len() != rows {
        return Err(Error::ShapeMismatch {
            what: "labels",
            expected: format!("{rows} labels (one per sample)"),
            got: format!("{}", labels.len()),
        });
    }
    if classes == 0 {
        return Err(Error::InvalidParameter {
            name: "classes",
            value: "0".into(),
            reason: "must be ≥ 1",
        });
    }
    let mut out = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if l >= classes {
            return Err(Error::LabelOutOfRange {
                index: i,
                label: l,
                classes,
            });
        }
        out[l].push(i);
    }
    if let Some(class) = out.iter().position(Vec::is_empty) {
        return Err(Error::EmptyClass { class });
    }
    Ok(out)
}

/// The indices of the samples labelled `class`.
pub(crate) fn rows_of_class(labels: &[usize], class: usize) -> Vec<usize> {
    labels
        .iter()
        .enumerate()
        .filter(|(_, l)| **l == class)
        .map(|(i, _)| i)
        .collect()
}
