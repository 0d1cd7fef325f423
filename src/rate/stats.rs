//! Streaming, mergeable sufficient statistics for the rates.

use ndarray::{Array2, ArrayRef2};

use super::RateReduction;
use super::gram::{sqrt_weights, weighted_gram};
use super::numerics::{RateReport, factor_gram};
use crate::linalg::symmetrize_from_lower;
use crate::{Error, Float, Labels, Membership, Precision, Result};

/// Per-class Gram matrices `G_j = Zᵀ Π_j Z` (d × d) and weights `tr(Π_j)`: everything the
/// rates need. Statistics add, so data larger than memory is processed chunk by chunk
/// ([`push`](Self::push)) and shards are combined in any order ([`merge`](Self::merge));
/// the rates computed from them equal the one-shot rates (up to rounding).
///
/// Memory is O(k d²) whatever the number of samples.
///
/// **Conditioning.** The statistics always work on the d × d side: the Gram matrix squares
/// the data's dynamic range, and the rates are as accurate as the Cholesky factor of
/// `I + a·G` allows (rounding errors about `u·λ_max`), not as the one-shot rates, which
/// switch to the singular values of the rows when that matters. Measured
/// (`tests/rate_numerics.rs`, `stats_conditioning_is_as_documented`: 48 nearly collinear
/// rows of norm 30 in 64 dimensions, ε chosen so that `I + a·G` has condition number κ):
/// the f64 statistics agree with the one-shot R to 1e-13 at κ ≈ 1e4, 3e-11 at 1e7 and 2e-9
/// at 1e11 (the error grows like u·κ); in f32 the Cholesky factor fails from κ ≈ 1e8, where
/// [`coding_rate`](Self::coding_rate) answers [`Error::Scale`] and
/// [`report`](Self::report) falls back to the eigenvalues. Push f32 data into f64
/// statistics ([`push_f32`](RateStats::push_f32)) to keep the f64 accuracy.
///
/// ```
/// use mcr2::{rate_reduction, Labels, Membership, Precision, RateStats};
/// use ndarray::array;
/// let z: ndarray::Array2<f64> = array![[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
/// let eps = Precision::from_eps_sq(0.5)?;
/// let mut a = RateStats::new(3, 2)?;
/// a.push(&z.slice(ndarray::s![..2, ..]), &Labels::new(&[0, 0], 2)?)?;
/// let mut b = RateStats::new(3, 2)?;
/// b.push(&z.slice(ndarray::s![2.., ..]), &Labels::new(&[1, 1], 2)?)?;
/// a.merge(&b)?;
/// let one_shot = rate_reduction(&z, &Membership::hard(&[0, 0, 1, 1], 2)?, eps)?;
/// assert!((a.rate_reduction(eps)?.delta_r - one_shot.delta_r).abs() < 1e-12);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        try_from = "StatsRepr<T>",
        into = "StatsRepr<T>",
        bound(
            serialize = "T: Float + serde::Serialize",
            deserialize = "T: Float + serde::Deserialize<'de>"
        )
    )
)]
pub struct RateStats<T: Float> {
    dim: usize,
    n: usize,
    traces: Vec<f64>,
    /// Lower triangles are authoritative; the upper ones are kept in sync.
    grams: Vec<Array2<T>>,
    /// Set when `+=` met statistics of another shape: every later rate is an error.
    mismatched: bool,
}

/// The class weight at or below which a retraction leaves a class empty.
const RETRACTED_EMPTY: f64 = 1e-9;

impl<T: Float> RateStats<T> {
    /// Empty statistics for features of dimension `dim` and `classes` classes: `classes`
    /// Gram matrices of dim × dim, refused with [`Error::TooLarge`] past the memory budget.
    pub fn new(dim: usize, classes: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::InvalidParameter {
                name: "dim",
                value: "0".into(),
                reason: "must be ≥ 1",
            });
        }
        if classes == 0 {
            return Err(Error::InvalidParameter {
                name: "classes",
                value: "0".into(),
                reason: "must be ≥ 1",
            });
        }
        crate::validate::elements_of::<T>("per-class Gram matrices", &[classes, dim, dim])?;
        // the list of matrices itself: one array header per class
        crate::validate::elements_of::<Array2<T>>("per-class Gram matrices", &[classes])?;
        Ok(Self {
            dim,
            n: 0,
            traces: vec![0.0; classes],
            grams: vec![Array2::zeros((dim, dim)); classes],
            mismatched: false,
        })
    }

    /// Adds a chunk of samples (rows of `z`) with hard labels over the same classes.
    pub fn push(&mut self, z: &ArrayRef2<T>, labels: &Labels) -> Result<()> {
        self.check_labels(labels)?;
        self.push_membership(z, &Membership::from(labels.clone()))
    }

    /// Adds a chunk of samples with any [`Membership`] (hard or soft) over those samples.
    pub fn push_membership(&mut self, z: &ArrayRef2<T>, membership: &Membership<T>) -> Result<()> {
        self.accumulate(z, membership, 1.0)
    }

    /// Subtracts a chunk pushed before (same rows, same membership): a sliding window pushes
    /// the newest chunk and retracts the oldest. Errors when more samples would be retracted
    /// than were pushed. `retract` then `push` of the same chunk restores the statistics up to
    /// rounding (1e-12 relative in f64, measured in `tests/rate_numerics.rs`). A class whose
    /// weight falls to 10⁻⁹ or below is emptied exactly (weight and Gram matrix 0): what
    /// remains of it is rounding.
    pub fn retract(&mut self, z: &ArrayRef2<T>, labels: &Labels) -> Result<()> {
        self.check_labels(labels)?;
        self.retract_membership(z, &Membership::from(labels.clone()))
    }

    /// [`retract`](Self::retract) with any [`Membership`].
    pub fn retract_membership(
        &mut self,
        z: &ArrayRef2<T>,
        membership: &Membership<T>,
    ) -> Result<()> {
        if z.nrows() > self.n {
            return Err(Error::InvalidParameter {
                name: "retract",
                value: format!("{} samples", z.nrows()),
                reason: "more samples than the statistics hold",
            });
        }
        self.accumulate(z, membership, -1.0)
    }

    /// Adds (`sign` = 1) or subtracts (−1) the statistics of a chunk.
    fn accumulate(
        &mut self,
        z: &ArrayRef2<T>,
        membership: &Membership<T>,
        sign: f64,
    ) -> Result<()> {
        self.check_dim(z)?;
        crate::validate::finite("Z", z)?;
        membership.check_samples(z.nrows())?;
        if membership.n_classes() != self.traces.len() {
            return Err(Error::ShapeMismatch {
                what: "membership",
                expected: format!("{} classes", self.traces.len()),
                got: format!("{} classes", membership.n_classes()),
            });
        }
        let n = if sign > 0.0 {
            self.checked_count(z.nrows())?
        } else {
            self.n - z.nrows()
        };
        let zv = z.view();
        for j in 0..self.traces.len() {
            let rows = membership.class_rows(j);
            let sw = sqrt_weights(&rows);
            if sign > 0.0 {
                let g = std::mem::take(&mut self.grams[j]);
                self.grams[j] = weighted_gram(zv, &rows.rows, sw.as_deref(), Some(g), true);
            } else {
                let g = weighted_gram(zv, &rows.rows, sw.as_deref(), None, true);
                self.grams[j] -= &g;
            }
            symmetrize_from_lower(self.grams[j].view_mut());
            self.traces[j] += sign * rows.trace;
            // a class emptied by retraction is exactly empty again
            if sign < 0.0 && self.traces[j] <= RETRACTED_EMPTY {
                self.traces[j] = 0.0;
                self.grams[j].fill(T::zero());
            }
        }
        self.n = n;
        Ok(())
    }

    fn check_labels(&self, labels: &Labels) -> Result<()> {
        if labels.n_classes() != self.traces.len() {
            return Err(Error::ShapeMismatch {
                what: "labels",
                expected: format!("{} classes", self.traces.len()),
                got: format!("{} classes", labels.n_classes()),
            });
        }
        Ok(())
    }

    /// Adds the statistics of `other` (same dimension and number of classes).
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        other.check_not_mismatched()?;
        if other.dim != self.dim || other.traces.len() != self.traces.len() {
            return Err(Error::ShapeMismatch {
                what: "statistics to merge",
                expected: format!("dim {}, {} classes", self.dim, self.traces.len()),
                got: format!("dim {}, {} classes", other.dim, other.traces.len()),
            });
        }
        self.n = self.checked_count(other.n)?;
        for j in 0..self.traces.len() {
            self.traces[j] += other.traces[j];
            self.grams[j] += &other.grams[j];
        }
        Ok(())
    }

    /// `n + more`, or an error naming the overflow of the sample count.
    fn checked_count(&self, more: usize) -> Result<usize> {
        crate::validate::sample_count(self.n, more)
    }

    /// Number of samples pushed.
    pub fn n_samples(&self) -> usize {
        self.n
    }

    /// Feature dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of classes k.
    pub fn n_classes(&self) -> usize {
        self.traces.len()
    }

    /// tr(Π_j) per class (class sizes for hard labels).
    pub fn class_weights(&self) -> &[f64] {
        &self.traces
    }

    /// `G_j = Zᵀ Π_j Z` of class `j` (d × d, symmetric), or `None` if `j` is out of range.
    pub fn gram(&self, j: usize) -> Option<&Array2<T>> {
        self.grams.get(j)
    }

    fn check_dim(&self, z: &ArrayRef2<T>) -> Result<()> {
        if z.ncols() != self.dim {
            return Err(Error::ShapeMismatch {
                what: "Z",
                expected: format!("{} columns", self.dim),
                got: format!("{} columns", z.ncols()),
            });
        }
        Ok(())
    }

    /// Errors when `+=` marked these statistics (they met statistics of another shape).
    fn check_not_mismatched(&self) -> Result<()> {
        if self.mismatched {
            return Err(Error::ShapeMismatch {
                what: "statistics added with +=",
                expected: format!("dim {}, {} classes", self.dim, self.traces.len()),
                got: "statistics of another shape".into(),
            });
        }
        Ok(())
    }

    fn nonempty(&self) -> Result<()> {
        self.check_not_mismatched()?;
        if self.n == 0 {
            return Err(Error::Empty {
                what: "statistics (no samples pushed)",
                rows: 0,
                cols: self.dim,
            });
        }
        Ok(())
    }

    /// `R = ½ logdet(I + d/(nε²) G)`, `G = Σ_j G_j`.
    pub fn coding_rate(&self, eps: Precision) -> Result<T> {
        self.total_with(eps, checked_logdet)
    }

    /// `½ logdet(I + a·G)` with `a = d/(nε²)`, `G = Σ_j G_j`, the log-det taken by `logdet`.
    fn total_with(
        &self,
        eps: Precision,
        logdet: impl FnOnce(&Array2<T>, T, &'static str) -> Result<T>,
    ) -> Result<T> {
        self.nonempty()?;
        let mut g = Array2::<T>::zeros((self.dim, self.dim));
        for gj in &self.grams {
            g += gj;
        }
        let a = T::from_f64(self.dim as f64 / (self.n as f64 * eps.eps_sq()));
        Ok(T::from_f64(0.5) * logdet(&g, a, "I + a·G")?)
    }

    /// The per-class terms of Rc, `tr(Π_j)/(2n) · logdet(I + d/(tr(Π_j) ε²) G_j)` (0 for an
    /// empty class), each log-det taken by `logdet(class, G_j, a_j, what)`.
    fn class_terms_with(
        &self,
        eps: Precision,
        mut logdet: impl FnMut(usize, &Array2<T>, T, &'static str) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.nonempty()?;
        let mut terms = Vec::with_capacity(self.traces.len());
        for (j, (gj, &t)) in self.grams.iter().zip(&self.traces).enumerate() {
            if t <= 0.0 {
                terms.push(T::zero());
                continue;
            }
            let aj = T::from_f64(self.dim as f64 / (t * eps.eps_sq()));
            terms.push(T::from_f64(t / (2.0 * self.n as f64)) * logdet(j, gj, aj, "I + a_j·G_j")?);
        }
        Ok(terms)
    }

    /// `Rc = Σ_j tr(Π_j)/(2n) · logdet(I + d/(tr(Π_j) ε²) G_j)`.
    pub fn class_coding_rate(&self, eps: Precision) -> Result<T> {
        let terms = self.class_terms_with(eps, |_, g, a, what| checked_logdet(g, a, what))?;
        Ok(terms.into_iter().sum())
    }

    /// `R`, `Rc` and `ΔR` from the statistics.
    pub fn rate_reduction(&self, eps: Precision) -> Result<RateReduction<T>> {
        let r = self.coding_rate(eps)?;
        let class_terms = self.class_terms_with(eps, |_, g, a, what| checked_logdet(g, a, what))?;
        Ok(reduction(r, class_terms))
    }

    /// R, Rc and ΔR with a report on every factorization: where Cholesky fails (an f32
    /// Gram matrix of a rank-deficient class at a large scale), the log-det is taken from
    /// the eigenvalues of `I + a·G` with those below the round-off floor set to 1 and the
    /// report says so; never NaN, never [`Error::Scale`]. With `min_eigenvalues`, every
    /// report also carries the smallest eigenvalue of its matrix (one symmetric
    /// eigendecomposition each).
    ///
    /// ```
    /// use mcr2::{FactorRoute, Labels, Precision, RateStats};
    /// let mut stats = RateStats::<f32>::new(3, 1)?;
    /// // one direction of norm 30 repeated: rank one, ε = 0.01
    /// let z = ndarray::Array2::from_shape_fn((4, 3), |(_, j)| if j == 0 { 30.0f32 } else { 0.0 });
    /// stats.push(&z, &Labels::new(&[0, 0, 0, 0], 1)?)?;
    /// let report = stats.report(Precision::from_eps(0.01)?, true)?;
    /// assert!(report.rates.delta_r.is_finite());
    /// assert!(report.total.min_eigenvalue.unwrap() > 0.5);
    /// # Ok::<(), mcr2::Error>(())
    /// ```
    pub fn report(&self, eps: Precision, min_eigenvalues: bool) -> Result<RateReport<T>> {
        let mut total = None;
        let r = self.total_with(eps, |g, a, what| {
            let (f, report) = factor_gram(g, a, what, min_eigenvalues)?;
            total = Some(report);
            Ok(f.logdet())
        })?;
        let mut classes = vec![None; self.traces.len()];
        let class_terms = self.class_terms_with(eps, |j, g, a, what| {
            let (f, report) = factor_gram(g, a, what, min_eigenvalues)?;
            classes[j] = Some(report);
            Ok(f.logdet())
        })?;
        Ok(RateReport {
            rates: reduction(r, class_terms),
            total: total.expect("R is factored whenever it is returned"),
            classes,
        })
    }
}

/// `logdet(I + a·G)` by the checked Gram route ([`Error::Scale`] where it cannot be trusted).
fn checked_logdet<T: Float>(g: &Array2<T>, a: T, what: &'static str) -> Result<T> {
    Ok(super::factor::identity_plus_gram(g, a, what, true)?.logdet())
}

/// R, Rc = Σ terms and ΔR.
fn reduction<T: Float>(r: T, class_terms: Vec<T>) -> RateReduction<T> {
    let rc: T = class_terms.iter().copied().sum();
    RateReduction {
        r,
        rc,
        delta_r: r - rc,
        class_terms,
    }
}

impl RateStats<f64> {
    /// Pushes f32 features into f64 statistics: each chunk is widened (exactly) and its Gram
    /// matrices accumulated in f64 ([`Accumulate::F64`](crate::Accumulate::F64) for
    /// streaming data).
    pub fn push_f32(&mut self, z: &ArrayRef2<f32>, labels: &Labels) -> Result<()> {
        crate::validate::elements_of::<f64>("chunk widened to f64", &[z.nrows(), z.ncols()])?;
        self.push(&z.mapv(f64::from), labels)
    }
}

/// `a += &b` adds the statistics of `b` as [`RateStats::merge`] does. Statistics of another
/// dimension or class count cannot be added: `a` is then marked, and every rate it computes
/// afterwards is an [`Error::ShapeMismatch`] (an operator cannot return the error itself).
impl<T: Float> std::ops::AddAssign<&RateStats<T>> for RateStats<T> {
    fn add_assign(&mut self, other: &RateStats<T>) {
        if other.mismatched || self.merge(other).is_err() {
            self.mismatched = true;
        }
    }
}

/// The sum of shards: an error for no shard or for shards of different shapes.
///
/// ```
/// use mcr2::{Labels, Precision, RateStats};
/// let z = ndarray::Array2::from_shape_fn((6, 2), |(i, j)| (i * 2 + j) as f64 * 0.1);
/// let labels = Labels::new(&[0, 1, 0, 1, 0, 1], 2)?;
/// let shards: Vec<RateStats<f64>> = (0..3)
///     .map(|s| {
///         let mut st = RateStats::new(2, 2)?;
///         st.push(&z.slice(ndarray::s![2 * s..2 * s + 2, ..]), &labels.select(&[2 * s, 2 * s + 1])?)?;
///         Ok(st)
///     })
///     .collect::<mcr2::Result<_>>()?;
/// let total: RateStats<f64> = shards.iter().sum::<mcr2::Result<_>>()?;
/// let mut one = RateStats::new(2, 2)?;
/// one.push(&z, &labels)?;
/// let eps = Precision::from_eps_sq(0.5)?;
/// assert!((total.coding_rate(eps)? - one.coding_rate(eps)?).abs() < 1e-12);
/// # Ok::<(), mcr2::Error>(())
/// ```
impl<'a, T: Float> std::iter::Sum<&'a RateStats<T>> for Result<RateStats<T>> {
    fn sum<I: Iterator<Item = &'a RateStats<T>>>(mut iter: I) -> Self {
        let mut total = iter.next().cloned().ok_or(Error::Empty {
            what: "shards to sum",
            rows: 0,
            cols: 0,
        })?;
        for s in iter {
            total.merge(s)?;
        }
        total.check_not_mismatched()?;
        Ok(total)
    }
}

impl<T: Float> std::iter::Sum<RateStats<T>> for Result<RateStats<T>> {
    fn sum<I: Iterator<Item = RateStats<T>>>(iter: I) -> Self {
        let shards: Vec<RateStats<T>> = iter.collect();
        shards.iter().sum()
    }
}

/// Serialized form, checked on the way in so that a malformed file cannot produce
/// statistics that later panic.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct StatsRepr<T> {
    dim: usize,
    n: usize,
    traces: Vec<f64>,
    grams: Vec<Array2<T>>,
    #[serde(default)]
    mismatched: bool,
}

#[cfg(feature = "serde")]
impl<T: Float> TryFrom<StatsRepr<T>> for RateStats<T> {
    type Error = Error;
    fn try_from(r: StatsRepr<T>) -> Result<Self> {
        let bad = |reason: &'static str| Error::InvalidParameter {
            name: "RateStats",
            value: format!("dim {}, {} classes", r.dim, r.traces.len()),
            reason,
        };
        if r.dim == 0 || r.traces.is_empty() {
            return Err(bad("dim and classes must be ≥ 1"));
        }
        if r.grams.len() != r.traces.len() || r.grams.iter().any(|g| g.dim() != (r.dim, r.dim)) {
            return Err(bad("one dim × dim Gram matrix per class is required"));
        }
        // each class weight is a sum of memberships of at most n samples (each ≤ 1)
        let most = r.n as f64 * (1.0 + 1e-9);
        if r.traces
            .iter()
            .any(|t| !(t.is_finite() && *t >= 0.0 && *t <= most))
        {
            return Err(bad(
                "class weights must be finite, ≥ 0 and at most the sample count",
            ));
        }
        for g in &r.grams {
            crate::validate::finite("Gram matrix", g)?;
        }
        Ok(Self {
            dim: r.dim,
            n: r.n,
            traces: r.traces.clone(),
            grams: r.grams,
            mismatched: r.mismatched,
        })
    }
}

#[cfg(feature = "serde")]
impl<T: Float> From<RateStats<T>> for StatsRepr<T> {
    fn from(s: RateStats<T>) -> Self {
        StatsRepr {
            dim: s.dim,
            n: s.n,
            traces: s.traces,
            grams: s.grams,
            mismatched: s.mismatched,
        }
    }
}
