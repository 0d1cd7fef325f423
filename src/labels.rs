//! Labels and class membership: [`Labels`] (one class per sample, with an explicit number of
//! classes) and [`Membership`] Π (hard labels or a soft row-stochastic matrix). Every
//! function that groups samples by class takes one of the two.

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
    Hard(Labels),
    Soft { pi: Array2<T> },
}

/// Hard labels: one class in `0..n_classes` per sample, the number of classes given
/// explicitly (never inferred from the largest label). Classes may be empty; estimators that
/// need every class refuse an empty one with [`Error::EmptyClass`].
///
/// The samples of each class are grouped once, at construction, so per-class work never
/// scans all labels.
///
/// ```
/// use mcr2::Labels;
/// let y = Labels::new(&[2, 0, 2, 1], 4)?;
/// assert_eq!((y.n_samples(), y.n_classes()), (4, 4));
/// assert_eq!(y.class_sizes(), vec![1, 1, 2, 0]);
/// assert_eq!(y.members(2).collect::<Vec<_>>(), vec![0, 2]);
/// // arbitrary group ids, numbered in order of first appearance
/// assert_eq!(Labels::from_ids(&[7, 7, 3, 9])?.to_vec(), vec![0, 0, 1, 2]);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    labels: Vec<u32>,
    /// `order[offsets[j]..offsets[j+1]]` are the samples of class j, ascending.
    order: Vec<u32>,
    offsets: Vec<usize>,
}

impl Labels {
    /// Labels each in `0..n_classes`.
    ///
    /// Errors: `n_classes == 0`, no labels, a label ≥ `n_classes`
    /// ([`Error::LabelOutOfRange`]), more than 2³² − 1 samples or classes, or per-class
    /// offsets past the memory budget ([`Error::TooLarge`]).
    pub fn new(labels: &[usize], n_classes: usize) -> Result<Self> {
        let classes = n_classes;
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
        Ok(Self {
            labels: labels.iter().map(|&l| l as u32).collect(),
            order,
            offsets,
        })
    }

    /// Labels from arbitrary group ids (for instance a segmentation's): the distinct ids are
    /// numbered 0, 1, … in order of first appearance, and there are as many classes as ids.
    pub fn from_ids(ids: &[usize]) -> Result<Self> {
        let mut index = std::collections::HashMap::new();
        let labels: Vec<usize> = ids
            .iter()
            .map(|&id| {
                let next = index.len();
                *index.entry(id).or_insert(next)
            })
            .collect();
        Self::new(&labels, index.len().max(1))
    }

    /// Number of samples.
    pub fn n_samples(&self) -> usize {
        self.labels.len()
    }

    /// Number of classes (empty ones included).
    pub fn n_classes(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The label of every sample.
    pub fn to_vec(&self) -> Vec<usize> {
        self.iter().collect()
    }

    /// The labels in sample order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.labels.iter().map(|&l| l as usize)
    }

    /// The labels of the samples `indices` (in that order), over the same classes: a train or
    /// test split.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        let picked = indices
            .iter()
            .map(|&i| {
                self.labels
                    .get(i)
                    .map(|&l| l as usize)
                    .ok_or(Error::ShapeMismatch {
                        what: "sample index",
                        expected: format!("below {}", self.n_samples()),
                        got: format!("{i}"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(&picked, self.n_classes())
    }

    /// The number of samples of every class.
    pub fn class_sizes(&self) -> Vec<usize> {
        self.offsets.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// The samples of class `class`, ascending (none for a class out of range).
    pub fn members(&self, class: usize) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.members_u32(class).iter().map(|&i| i as usize)
    }

    /// The samples of class `class` as stored.
    pub(crate) fn members_u32(&self, class: usize) -> &[u32] {
        match (self.offsets.get(class), self.offsets.get(class + 1)) {
            (Some(&a), Some(&b)) => &self.order[a..b],
            _ => &[],
        }
    }

    /// The label of every sample as stored.
    pub(crate) fn as_u32(&self) -> &[u32] {
        &self.labels
    }

    /// Errors unless there is one label per sample of `n`.
    pub(crate) fn check_samples(&self, n: usize) -> Result<()> {
        if self.n_samples() != n {
            return Err(Error::ShapeMismatch {
                what: "labels",
                expected: format!("{n} labels (one per sample)"),
                got: format!("{}", self.n_samples()),
            });
        }
        Ok(())
    }

    /// The samples of every class, each list ascending: the one grouping routine.
    pub(crate) fn groups(&self) -> Vec<Vec<usize>> {
        (0..self.n_classes())
            .map(|j| self.members(j).collect())
            .collect()
    }

    /// [`groups`](Self::groups) of labels that must cover `rows` samples, every class
    /// non-empty.
    pub(crate) fn nonempty_groups(&self, rows: usize) -> Result<Vec<Vec<usize>>> {
        self.check_samples(rows)?;
        self.require_every_class()?;
        Ok(self.groups())
    }

    /// Errors with [`Error::EmptyClass`] on the first class without samples.
    pub(crate) fn require_every_class(&self) -> Result<()> {
        match self.offsets.windows(2).position(|w| w[0] == w[1]) {
            Some(class) => Err(Error::EmptyClass { class }),
            None => Ok(()),
        }
    }
}

impl<T> From<Labels> for Membership<T> {
    fn from(labels: Labels) -> Self {
        Self {
            n: labels.n_samples(),
            k: labels.n_classes(),
            repr: Repr::Hard(labels),
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Labels", 2)?;
        st.serialize_field("labels", &self.to_vec())?;
        st.serialize_field("n_classes", &self.n_classes())?;
        st.end()
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Repr {
            labels: Vec<usize>,
            n_classes: usize,
        }
        let r = Repr::deserialize(d)?;
        Labels::new(&r.labels, r.n_classes).map_err(serde::de::Error::custom)
    }
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
    /// Hard labels, each in `0..classes` (the same as `Labels::new(labels, classes)?.into()`;
    /// errors as [`Labels::new`]).
    pub fn hard(labels: &[usize], classes: usize) -> Result<Self> {
        Ok(Labels::new(labels, classes)?.into())
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
            Repr::Hard(labels) => labels
                .class_sizes()
                .into_iter()
                .map(T::from_usize)
                .collect(),
            Repr::Soft { pi } => pi.columns().into_iter().map(|c| c.sum()).collect(),
        }
    }

    /// The hard labels, or `None` for a soft membership.
    pub fn labels(&self) -> Option<&Labels> {
        match &self.repr {
            Repr::Hard(labels) => Some(labels),
            Repr::Soft { .. } => None,
        }
    }

    /// Π as a dense `n × k` matrix (one-hot rows for hard labels).
    pub fn to_matrix(&self) -> Array2<T> {
        match &self.repr {
            Repr::Hard(labels) => {
                let mut pi = Array2::zeros((self.n, self.k));
                for (i, l) in labels.iter().enumerate() {
                    pi[(i, l)] = T::one();
                }
                pi
            }
            Repr::Soft { pi } => pi.clone(),
        }
    }

    /// The label of every sample, for hard memberships.
    pub(crate) fn hard_labels(&self) -> Option<&[u32]> {
        match &self.repr {
            Repr::Hard(labels) => Some(labels.as_u32()),
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
            Repr::Hard(labels) => {
                let rows = labels.members_u32(j);
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
