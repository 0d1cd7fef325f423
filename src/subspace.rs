//! Mixtures of subspaces: synthetic data, per-class subspace fits, principal angles and the
//! nearest-subspace classifier of the MCR² reference evaluation.

use ndarray::{Array1, Array2, ArrayRef2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::{Error, Float, Result};

/// A mixture of K linear subspaces of R^d: class k has `samples[k]` points
/// `x = U_k a + σ e` (a, e standard normal), optionally projected to the unit sphere.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubspaceMixtureConfig {
    /// Ambient dimension d.
    pub dim: usize,
    /// Dimension p_k of each class's subspace.
    pub subspace_dims: Vec<usize>,
    /// Number of samples n_k of each class.
    pub samples: Vec<usize>,
    /// Noise standard deviation σ (≥ 0).
    pub noise: f64,
    /// Whether the subspaces are mutually orthogonal (needs Σ p_k ≤ d).
    pub orthogonal: bool,
    /// Whether every sample is scaled to unit norm.
    pub unit_sphere: bool,
}

impl SubspaceMixtureConfig {
    /// `classes` subspaces of dimension `p` in R^`dim`, `per_class` samples each, noise σ,
    /// random (not forced orthogonal) subspaces, samples on the unit sphere.
    pub fn new(dim: usize, classes: usize, p: usize, per_class: usize, noise: f64) -> Self {
        Self {
            dim,
            subspace_dims: vec![p; classes],
            samples: vec![per_class; classes],
            noise,
            orthogonal: false,
            unit_sphere: true,
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |name: &'static str, value: String, reason: &'static str| {
            Err(Error::InvalidParameter {
                name,
                value,
                reason,
            })
        };
        if self.dim == 0 {
            return bad("dim", "0".into(), "must be ≥ 1");
        }
        if self.subspace_dims.is_empty() || self.subspace_dims.len() != self.samples.len() {
            return bad(
                "subspace_dims, samples",
                format!(
                    "{} and {} entries",
                    self.subspace_dims.len(),
                    self.samples.len()
                ),
                "one subspace dimension and one sample count per class (at least one class)",
            );
        }
        if self.subspace_dims.iter().any(|&p| p == 0 || p > self.dim) {
            return bad(
                "subspace_dims",
                format!("{:?}", self.subspace_dims),
                "each must be in 1..=dim",
            );
        }
        if self.samples.iter().sum::<usize>() == 0 {
            return bad(
                "samples",
                format!("{:?}", self.samples),
                "at least one sample is needed",
            );
        }
        if self.orthogonal && self.subspace_dims.iter().sum::<usize>() > self.dim {
            return bad(
                "subspace_dims",
                format!("{:?}", self.subspace_dims),
                "orthogonal subspaces need Σ p_k ≤ dim",
            );
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return bad("noise", self.noise.to_string(), "must be finite and ≥ 0");
        }
        Ok(())
    }
}

/// Samples of a [`SubspaceMixtureConfig`] with their labels and the true bases.
#[derive(Debug, Clone, PartialEq)]
pub struct SubspaceMixture<T> {
    /// n × d, rows are samples, grouped by class.
    pub samples: Array2<T>,
    /// The class of each row.
    pub labels: Vec<usize>,
    /// Orthonormal basis U_k (d × p_k) of each class's subspace.
    pub bases: Vec<Array2<T>>,
}

/// Orthonormal basis of the column space of `a` (d × p, full column rank assumed), by thin SVD.
fn orthonormal<T: Float>(a: &Array2<T>) -> Result<Array2<T>> {
    let (u, _, _) = crate::linalg::thin_svd(a.view()).ok_or(Error::NoConvergence("SVD"))?;
    Ok(u)
}

/// Draws a mixture of subspaces (seeded by the caller's generator).
pub fn mixture_of_subspaces<T: Float, R: Rng + ?Sized>(
    config: &SubspaceMixtureConfig,
    rng: &mut R,
) -> Result<SubspaceMixture<T>> {
    config.check()?;
    let d = config.dim;
    let gauss = |rng: &mut R, r: usize, c: usize| {
        Array2::<T>::from_shape_simple_fn((r, c), || T::from_f64(rng.sample(StandardNormal)))
    };
    let bases: Vec<Array2<T>> = if config.orthogonal {
        let total: usize = config.subspace_dims.iter().sum();
        let q = orthonormal(&gauss(rng, d, total))?;
        let mut start = 0;
        config
            .subspace_dims
            .iter()
            .map(|&p| {
                let b = q
                    .slice_axis(Axis(1), ndarray::Slice::from(start..start + p))
                    .to_owned();
                start += p;
                b
            })
            .collect()
    } else {
        config
            .subspace_dims
            .iter()
            .map(|&p| orthonormal(&gauss(rng, d, p)))
            .collect::<Result<_>>()?
    };
    let n: usize = config.samples.iter().sum();
    let mut samples = Array2::<T>::zeros((n, d));
    let mut labels = Vec::with_capacity(n);
    let sigma = T::from_f64(config.noise);
    let mut row = 0;
    for (k, (&nk, u)) in config.samples.iter().zip(&bases).enumerate() {
        let coef = gauss(rng, nk, u.ncols());
        let mut block = coef.dot(&u.t());
        block.zip_mut_with(&gauss(rng, nk, d), |x, &e| *x += sigma * e);
        if config.unit_sphere {
            for mut r in block.rows_mut() {
                let norm = r.dot(&r).sqrt();
                if norm > T::zero() {
                    r.mapv_inplace(|v| v / norm);
                }
            }
        }
        samples
            .slice_axis_mut(Axis(0), ndarray::Slice::from(row..row + nk))
            .assign(&block);
        labels.extend(std::iter::repeat_n(k, nk));
        row += nk;
    }
    Ok(SubspaceMixture {
        samples,
        labels,
        bases,
    })
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
    if let Some(j) = out.iter().position(Vec::is_empty) {
        return Err(Error::InvalidParameter {
            name: "labels",
            value: format!("class {j}"),
            reason: "every class needs at least one training sample",
        });
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

/// A subspace fitted to samples: `x ≈ mean + basis · a`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubspaceFit<T> {
    /// The mean that was subtracted (zeros when fitted without centering).
    pub mean: Array1<T>,
    /// Orthonormal basis, d × r.
    pub basis: Array2<T>,
    /// All singular values of the (centered) samples, descending.
    pub singular_values: Array1<T>,
}

impl<T: Float> SubspaceFit<T> {
    /// Fits a rank-`rank` subspace to the rows of `x` (n × d) by thin SVD, after subtracting
    /// the mean when `center` (PCA) or not (truncated SVD). The rank is capped at min(n, d).
    pub fn fit(x: &ArrayRef2<T>, rank: usize, center: bool) -> Result<Self> {
        crate::validate::matrix("samples", x)?;
        if rank == 0 {
            return Err(Error::InvalidParameter {
                name: "rank",
                value: "0".into(),
                reason: "must be ≥ 1",
            });
        }
        let mean = if center {
            x.sum_axis(Axis(0)).mapv(|v| v / T::from_usize(x.nrows()))
        } else {
            Array1::zeros(x.ncols())
        };
        let xc = &x.view() - &mean;
        let (_, s, v) = crate::linalg::thin_svd(xc.view()).ok_or(Error::NoConvergence("SVD"))?;
        let r = rank.min(v.ncols());
        let basis = v.slice_axis(Axis(1), ndarray::Slice::from(0..r)).to_owned();
        Ok(Self {
            mean,
            basis,
            singular_values: s,
        })
    }

    /// `‖(I − U Uᵀ)(x − μ)‖` for every row of `x`.
    pub fn residual_norms(&self, x: &ArrayRef2<T>) -> Result<Array1<T>> {
        crate::validate::matrix_with_cols("samples", x, self.basis.nrows())?;
        let xc = &x.view() - &self.mean;
        let proj = xc.dot(&self.basis).dot(&self.basis.t());
        let r = &xc - &proj;
        Ok(r.rows()
            .into_iter()
            .map(|row| row.dot(&row).sqrt())
            .collect())
    }
}

/// Principal angles (radians, ascending) between the column spaces of `a` (d × p) and
/// `b` (d × q): `θ_i = arccos σ_i(Q_aᵀ Q_b)` with orthonormal bases Q (Björck–Golub).
pub fn principal_angles<T: Float>(a: &ArrayRef2<T>, b: &ArrayRef2<T>) -> Result<Vec<f64>> {
    crate::validate::matrix("first basis", a)?;
    crate::validate::matrix("second basis", b)?;
    if a.nrows() != b.nrows() {
        return Err(Error::ShapeMismatch {
            what: "second basis",
            expected: format!("{} rows", a.nrows()),
            got: format!("{} rows", b.nrows()),
        });
    }
    let qa = orthonormal(&a.to_owned())?;
    let qb = orthonormal(&b.to_owned())?;
    let m = qa.t().dot(&qb);
    let (_, s, _) = crate::linalg::thin_svd(m.view()).ok_or(Error::NoConvergence("SVD"))?;
    Ok(s.iter()
        .map(|&c| c.as_f64().clamp(-1.0, 1.0).acos())
        .collect())
}

/// The nearest-subspace classifier of the MCR² reference evaluation: one subspace per class
/// (PCA when centered, truncated SVD when not); a sample goes to the class with the smallest
/// residual `‖(I − U_j U_jᵀ)(x − μ_j)‖`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NearestSubspace<T> {
    fits: Vec<SubspaceFit<T>>,
}

impl<T: Float> NearestSubspace<T> {
    /// Fits one rank-`rank` subspace per class to the rows of `x` with labels in `0..classes`
    /// (every class needs at least one sample).
    pub fn fit(
        x: &ArrayRef2<T>,
        labels: &[usize],
        classes: usize,
        rank: usize,
        center: bool,
    ) -> Result<Self> {
        crate::validate::matrix("samples", x)?;
        let m = crate::Membership::<T>::hard(labels, classes)?;
        m.check_samples(x.nrows())?;
        let mut fits = Vec::with_capacity(classes);
        for j in 0..classes {
            let rows = rows_of_class(labels, j);
            if rows.is_empty() {
                return Err(Error::InvalidMembership(format!(
                    "class {j} has no samples to fit a subspace to"
                )));
            }
            fits.push(SubspaceFit::fit(&x.select(Axis(0), &rows), rank, center)?);
        }
        Ok(Self { fits })
    }

    /// The per-class fits.
    pub fn fits(&self) -> &[SubspaceFit<T>] {
        &self.fits
    }

    /// The predicted class of every row of `x`.
    pub fn predict(&self, x: &ArrayRef2<T>) -> Result<Vec<usize>> {
        let residuals = self
            .fits
            .iter()
            .map(|f| f.residual_norms(x))
            .collect::<Result<Vec<_>>>()?;
        Ok((0..x.nrows())
            .map(|i| {
                (0..self.fits.len())
                    .min_by(|&a, &b| {
                        residuals[a][i]
                            .partial_cmp(&residuals[b][i])
                            .unwrap_or(std::cmp::Ordering::Equal)
                    })
                    .unwrap_or(0)
            })
            .collect())
    }

    /// Fraction of rows of `x` predicted as `labels`.
    pub fn accuracy(&self, x: &ArrayRef2<T>, labels: &[usize]) -> Result<f64> {
        accuracy_of(x.nrows(), labels, || self.predict(x))
    }
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
    Ok(pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / rows.max(1) as f64)
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
            let angles = principal_angles(&ns.fits[a].basis, &ns.fits[b].basis)?;
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
