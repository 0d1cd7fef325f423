//! Rate objectives over several views (augmentations) of the same samples: EMP-SSL's total
//! coding rate with invariance, and the multi-view MCR² of the mcr2 reference's
//! self-supervised training, where the views of one sample form one class.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::{RateReduction, ReferenceLoss, ReferenceLossValue};
use crate::{Error, Float, Labels, Membership, Precision, Result};

/// Errors unless `views` holds at least one view and all views are finite matrices of one
/// shape (n × d, n ≥ 1, d ≥ 1); returns (n, d).
pub(crate) fn check_views<T: Float>(
    what: &'static str,
    views: &[ArrayView2<T>],
) -> Result<(usize, usize)> {
    let first = views.first().ok_or(Error::Empty {
        what,
        rows: 0,
        cols: 0,
    })?;
    let dim = first.dim();
    for v in views {
        if v.dim() != dim {
            return Err(Error::ShapeMismatch {
                what,
                expected: format!("{}×{} (the first view)", dim.0, dim.1),
                got: format!("{}×{}", v.nrows(), v.ncols()),
            });
        }
        crate::validate::matrix(what, v)?;
    }
    Ok(dim)
}

/// The value of a [`TotalCodingRate`] objective.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TotalCodingRateValue<T> {
    /// `J = rate + λ·invariance` (to be maximized; the loss is −J).
    pub objective: T,
    /// `(1/V) Σ_v R(Z_v)`: the mean total coding rate of the views.
    pub rate: T,
    /// `(1/(V n)) Σ_v Σ_i cos(z_{v,i}, z̄_i)`, `z̄_i = (1/V) Σ_v z_{v,i}`: the mean cosine of each
    /// view to the mean of its views.
    pub invariance: T,
}

/// EMP-SSL's objective (Tong, Chen, Lecun, Ma, *EMP-SSL: Towards Self-Supervised Learning
/// in One Training Epoch*, arXiv 2304.03977, Eq. 3–5), for V views Z_1 … Z_V (each n × d, row
/// i of every view an augmentation of sample i), to be **maximized**:
///
/// `J = (1/V) Σ_v R(Z_v) + λ·(1/(V n)) Σ_v Σ_i cos(z_{v,i}, z̄_i)`, `z̄_i = (1/V) Σ_v z_{v,i}`,
///
/// with `R(Z) = ½ logdet(I + d/(nε²) ZᵀZ)`. The gradient flows through z̄ as well (the mean
/// is not detached). EMP-SSL's settings: ε² = 0.2 (its code's `eps`), λ = 200.
///
/// ```
/// use mcr2::rate::TotalCodingRate;
/// use mcr2::Precision;
/// use ndarray::array;
/// let a = array![[1.0f64, 0.0], [0.0, 1.0]];
/// let objective = TotalCodingRate::new(Precision::from_eps_sq(0.5)?, 2.0)?;
/// // two identical views: every cosine is 1, and R(Z) = ln 3 for each
/// let (v, grads) = objective.evaluate_with_grad(&[a.view(), a.view()])?;
/// assert!((v.invariance - 1.0).abs() < 1e-15);
/// assert!((v.objective - (3f64.ln() + 2.0)).abs() < 1e-14);
/// assert_eq!(grads.len(), 2);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TotalCodingRate {
    eps: Precision,
    lambda: f64,
}

impl TotalCodingRate {
    /// EMP-SSL's ε² (its code's `eps`).
    pub const EMP_SSL_EPS_SQ: f64 = 0.2;
    /// EMP-SSL's weight of the invariance term.
    pub const EMP_SSL_LAMBDA: f64 = 200.0;

    /// The objective with precision ε and invariance weight λ (finite, ≥ 0).
    pub fn new(eps: Precision, lambda: f64) -> Result<Self> {
        crate::validate::finite_non_negative("lambda", lambda)?;
        Ok(Self { eps, lambda })
    }

    /// EMP-SSL's settings: ε² = 0.2, λ = 200.
    pub fn emp_ssl() -> Self {
        Self {
            eps: Precision::from_eps_sq(Self::EMP_SSL_EPS_SQ).expect("a valid constant"),
            lambda: Self::EMP_SSL_LAMBDA,
        }
    }

    /// The objective and its terms.
    pub fn evaluate<T: Float>(&self, views: &[ArrayView2<T>]) -> Result<TotalCodingRateValue<T>> {
        Ok(self.evaluate_with_grad(views)?.0)
    }

    /// The objective and its gradient with respect to each view (n × d each).
    pub fn evaluate_with_grad<T: Float>(
        &self,
        views: &[ArrayView2<T>],
    ) -> Result<(TotalCodingRateValue<T>, Vec<Array2<T>>)> {
        // also for a value read back by serde, which bypasses `new`
        crate::validate::finite_non_negative("lambda", self.lambda)?;
        let (n, _) = check_views("views", views)?;
        let v_count = T::from_usize(views.len());
        let mut rate = T::zero();
        let mut grads = Vec::with_capacity(views.len());
        for z in views {
            let (r, g) = super::coding_rate_with_grad(z, self.eps)?;
            rate += r / v_count;
            grads.push(g / v_count);
        }
        let (invariance, inv_grads) = mean_cosine_to_mean(views, n)?;
        let lambda = T::from_f64(self.lambda);
        for (g, gi) in grads.iter_mut().zip(&inv_grads) {
            g.scaled_add(lambda, gi);
        }
        let value = TotalCodingRateValue {
            objective: rate + lambda * invariance,
            rate,
            invariance,
        };
        crate::validate::finite_value("total coding rate objective", value.objective)?;
        Ok((value, grads))
    }
}

/// `c = (1/(V n)) Σ_v Σ_i cos(z_{v,i}, z̄_i)` and `∂c/∂Z_v`. With `u = z/‖z‖`, `w = z̄/‖z̄‖`:
/// `∂cos/∂z = (w − cos·u)/‖z‖`, `∂cos/∂z̄ = (u − cos·w)/‖z̄‖`, and `∂z̄/∂z_{v,i} = I/V`.
fn mean_cosine_to_mean<T: Float>(views: &[ArrayView2<T>], n: usize) -> Result<(T, Vec<Array2<T>>)> {
    let v_count = views.len();
    let mut mean = Array2::<T>::zeros(views[0].raw_dim());
    for z in views {
        mean.scaled_add(T::one() / T::from_usize(v_count), z);
    }
    let norms = |a: &ArrayView2<T>| -> Array1<T> { a.map_axis(Axis(1), |r| r.dot(&r).sqrt()) };
    let mean_norm = norms(&mean.view());
    let zero_row = |what: &'static str| Error::InvalidParameter {
        name: what,
        value: "a row of norm 0".into(),
        reason: "the cosine of a zero vector is undefined",
    };
    if mean_norm.iter().any(|&x| x <= T::zero()) {
        return Err(zero_row("mean of the views"));
    }
    let scale = T::one() / T::from_usize(v_count * n);
    let mut total = T::zero();
    let mut grads = Vec::with_capacity(v_count);
    // Σ_v (u_{v,i} − cos_{v,i} w_i) per row i: the part through the mean, shared by every view
    let mut through_mean = Array2::<T>::zeros(mean.raw_dim());
    for z in views {
        let zn = norms(z);
        if zn.iter().any(|&x| x <= T::zero()) {
            return Err(zero_row("view"));
        }
        let mut g = Array2::<T>::zeros(z.raw_dim());
        for i in 0..n {
            let (zi, mi) = (z.row(i), mean.row(i));
            let cos = zi.dot(&mi) / (zn[i] * mean_norm[i]);
            total += cos;
            let mut gi = g.row_mut(i);
            // (w − cos·u)/‖z‖
            gi.zip_mut_with(&mi, |g, &m| *g = m / mean_norm[i] / zn[i]);
            gi.zip_mut_with(&zi, |g, &x| *g -= cos * x / (zn[i] * zn[i]));
            let mut t = through_mean.row_mut(i);
            t.zip_mut_with(&zi, |t, &x| *t += x / zn[i] / mean_norm[i]);
            t.zip_mut_with(&mi, |t, &m| *t -= cos * m / (mean_norm[i] * mean_norm[i]));
        }
        grads.push(g);
    }
    let share = scale / T::from_usize(v_count);
    for g in &mut grads {
        g.mapv_inplace(|x| x * scale);
        g.scaled_add(share, &through_mean);
    }
    Ok((total * scale, grads))
}

/// The classes of the multi-view objective: row i of every view belongs to class i (V·n
/// labels over n classes, views stacked in order).
pub fn view_groups(views: usize, n: usize) -> Result<Labels> {
    crate::validate::at_least_one("views", views)?;
    crate::validate::at_least_one("samples per view", n)?;
    crate::validate::elements_of::<usize>("view labels", &[views, n])?;
    let ids: Vec<usize> = (0..views).flat_map(|_| 0..n).collect();
    Labels::new(&ids, n)
}

/// The V views stacked as V·n rows, and their classes ([`view_groups`]).
fn stacked<T: Float>(views: &[ArrayView2<T>]) -> Result<(Array2<T>, Membership<T>)> {
    let (n, d) = check_views("views", views)?;
    crate::validate::elements_of::<T>("stacked views", &[views.len(), n, d])?;
    let z = ndarray::concatenate(Axis(0), views).map_err(|_| Error::ShapeMismatch {
        what: "views",
        expected: format!("{n}×{d} each"),
        got: "views that do not stack".into(),
    })?;
    Ok((z, Membership::from(view_groups(views.len(), n)?)))
}

/// The stacked gradient (V·n × d) split back into one n × d block per view.
fn split<T: Float>(g: Array2<T>, views: usize) -> Vec<Array2<T>> {
    let n = g.nrows() / views;
    (0..views)
        .map(|v| g.slice(ndarray::s![v * n..(v + 1) * n, ..]).to_owned())
        .collect()
}

/// Multi-view MCR² (Yu et al. 2020, §3 "self-supervised"; the mcr2 reference's
/// `train_selfsup.py`): ΔR of the V views stacked, the views of sample i forming class i
/// (n classes of V members), and its gradient with respect to each view.
///
/// ```
/// use mcr2::rate::multi_view_rate_reduction;
/// use mcr2::Precision;
/// use ndarray::array;
/// let a = array![[1.0f64, 0.0], [0.0, 1.0]];
/// // identical views: each class is one point, compressed to a single direction
/// let (rr, grads) = multi_view_rate_reduction(&[a.view(), a.view()], Precision::from_eps_sq(0.5)?)?;
/// assert!((rr.r - 3f64.ln()).abs() < 1e-14);
/// assert_eq!(grads.len(), 2);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn multi_view_rate_reduction<T: Float>(
    views: &[ArrayView2<T>],
    eps: Precision,
) -> Result<(RateReduction<T>, Vec<Array2<T>>)> {
    let (z, m) = stacked(views)?;
    let (rr, g) = super::rate_reduction_with_grad(&z, &m, eps)?;
    Ok((rr, split(g, views.len())))
}

impl ReferenceLoss {
    /// The reference loss (γ₁, γ₂, trace offset) of the multi-view objective: the V views
    /// stacked, the views of sample i forming class i, as the mcr2 reference's self-supervised
    /// training computes it; the gradient with respect to each view.
    pub fn evaluate_views<T: Float>(
        &self,
        views: &[ArrayView2<T>],
    ) -> Result<(ReferenceLossValue<T>, Vec<Array2<T>>)> {
        let (z, m) = stacked(views)?;
        let (value, g) = self.evaluate_with_grad(&z, &m)?;
        Ok((value, split(g, views.len())))
    }
}
