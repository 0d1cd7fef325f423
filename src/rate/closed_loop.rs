//! The rate terms of closed-loop transcription (CTRL): how far apart the features `Z` of the
//! data and `Ẑ` of their reconstructions are, as a rate reduction.
//!
//! Dai, Tong, Liao, Wright, Ma et al., *CTRL: Closed-Loop Transcription to an LDR via
//! Minimaxing Rate Reduction*, Entropy 2022 (arXiv 2111.06636), Eq. 9–11:
//!
//! `ΔR(Z, Ẑ) = R(Z ∪ Ẑ) − ½(R(Z) + R(Ẑ))`,
//!
//! with `R(Z) = ½ logdet(I + d/(nε²) ZᵀZ)` on each set's own sample count; per class
//! `Σ_j ΔR(Z_j, Ẑ_j)`, the rows of class j of both sets.

use ndarray::{Array2, ArrayRef2, ArrayView2, Axis};

use crate::{Error, Float, Labels, Precision, Result};

/// `ΔR(Z, Ẑ)` with its three rates.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClosedLoopRate<T> {
    /// `R(Z ∪ Ẑ)`: the rows of both sets together.
    pub joint: T,
    /// `R(Z)`.
    pub r: T,
    /// `R(Ẑ)`.
    pub r_hat: T,
    /// `ΔR(Z, Ẑ) = joint − ½(r + r_hat)`.
    pub delta_r: T,
}

/// `ΔR(Z, Ẑ)`, and its gradients with respect to `z` (n × d) and `z_hat` (n̂ × d); the two
/// sets may have different sample counts.
///
/// ```
/// use mcr2::rate::closed_loop_rate_with_grad;
/// use mcr2::Precision;
/// use ndarray::array;
/// let z = array![[1.0f64, 0.0], [1.0, 0.0]];
/// // Ẑ = Z: the union codes like either set, ΔR = 0 (rows of Z are duplicated, R unchanged)
/// let (v, gz, gzh) = closed_loop_rate_with_grad(&z, &z, Precision::from_eps_sq(0.5)?)?;
/// assert!(v.delta_r.abs() < 1e-15);
/// assert_eq!((gz.dim(), gzh.dim()), ((2, 2), (2, 2)));
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn closed_loop_rate_with_grad<T: Float>(
    z: &ArrayRef2<T>,
    z_hat: &ArrayRef2<T>,
    eps: Precision,
) -> Result<(ClosedLoopRate<T>, Array2<T>, Array2<T>)> {
    crate::validate::matrix("Z", z)?;
    crate::validate::matrix("Ẑ", z_hat)?;
    if z.ncols() != z_hat.ncols() {
        return Err(Error::ShapeMismatch {
            what: "Ẑ",
            expected: format!("{} columns (as Z)", z.ncols()),
            got: format!("{} columns", z_hat.ncols()),
        });
    }
    crate::validate::elements_of::<T>("Z ∪ Ẑ", &[z.nrows() + z_hat.nrows(), z.ncols()])?;
    pair(z.view(), z_hat.view(), eps)
}

/// The three rates of one pair and the gradients of `ΔR` (inputs checked).
fn pair<T: Float>(
    z: ArrayView2<T>,
    z_hat: ArrayView2<T>,
    eps: Precision,
) -> Result<(ClosedLoopRate<T>, Array2<T>, Array2<T>)> {
    let union = ndarray::concatenate(Axis(0), &[z, z_hat]).expect("same number of columns");
    let (joint, g_joint) = super::coding_rate_with_grad(&union, eps)?;
    let (r, g_r) = super::coding_rate_with_grad(&z, eps)?;
    let (r_hat, g_rh) = super::coding_rate_with_grad(&z_hat, eps)?;
    let half = T::from_f64(0.5);
    let n = z.nrows();
    let mut gz = g_joint.slice(ndarray::s![..n, ..]).to_owned();
    gz.scaled_add(-half, &g_r);
    let mut gzh = g_joint.slice(ndarray::s![n.., ..]).to_owned();
    gzh.scaled_add(-half, &g_rh);
    let value = ClosedLoopRate {
        joint,
        r,
        r_hat,
        delta_r: joint - half * (r + r_hat),
    };
    Ok((value, gz, gzh))
}

/// The per-class closed-loop rates `ΔR(Z_j, Ẑ_j)` and their sum.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClosedLoopClassRates<T> {
    /// `ΔR(Z_j, Ẑ_j)` per class (0 for an empty class).
    pub class_terms: Vec<T>,
    /// `Σ_j ΔR(Z_j, Ẑ_j)`.
    pub total: T,
}

/// `Σ_j ΔR(Z_j, Ẑ_j)` over the classes of `labels` (row i of `z` and of `z_hat` both have
/// label i: Ẑ holds the features of the reconstructions of Z's samples), with its gradients
/// with respect to `z` and `z_hat` (n × d each).
pub fn closed_loop_class_rates_with_grad<T: Float>(
    z: &ArrayRef2<T>,
    z_hat: &ArrayRef2<T>,
    labels: &Labels,
    eps: Precision,
) -> Result<(ClosedLoopClassRates<T>, Array2<T>, Array2<T>)> {
    crate::validate::matrix("Z", z)?;
    crate::validate::matrix("Ẑ", z_hat)?;
    if z.dim() != z_hat.dim() {
        return Err(Error::ShapeMismatch {
            what: "Ẑ",
            expected: format!("{}×{} (as Z)", z.nrows(), z.ncols()),
            got: format!("{}×{}", z_hat.nrows(), z_hat.ncols()),
        });
    }
    labels.check_samples(z.nrows())?;
    let mut gz = Array2::<T>::zeros(z.dim());
    let mut gzh = Array2::<T>::zeros(z.dim());
    let mut class_terms = Vec::with_capacity(labels.n_classes());
    for j in 0..labels.n_classes() {
        let rows: Vec<usize> = labels.members(j).collect();
        if rows.is_empty() {
            class_terms.push(T::zero());
            continue;
        }
        let (zj, zhj) = (z.select(Axis(0), &rows), z_hat.select(Axis(0), &rows));
        let (v, g, gh) = pair(zj.view(), zhj.view(), eps)?;
        for (k, &i) in rows.iter().enumerate() {
            gz.row_mut(i).assign(&g.row(k));
            gzh.row_mut(i).assign(&gh.row(k));
        }
        class_terms.push(v.delta_r);
    }
    let total = class_terms.iter().copied().sum();
    Ok((ClosedLoopClassRates { class_terms, total }, gz, gzh))
}
