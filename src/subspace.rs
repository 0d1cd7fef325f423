//! Per-class subspace fits, principal angles and the nearest-subspace classifier of the MCR²
//! reference evaluation (the synthetic mixtures are in [`crate::data`]).
//!
//! ```
//! use mcr2::subspace::principal_angles;
//! use ndarray::array;
//! let a = array![[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]];
//! let b = array![[0.0], [0.0], [1.0]];
//! let angles = principal_angles(&a, &b)?;
//! assert!((angles[0] - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
//! # Ok::<(), mcr2::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayRef2, Axis};

use crate::{Error, Float, Labels, Result};

/// How a subspace is fitted: its rank, and whether the mean is subtracted first.
///
/// ```
/// use mcr2::subspace::SubspaceConfig;
/// let pca = SubspaceConfig::new(12).centered();
/// assert_eq!((pca.rank, pca.center), (12, true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubspaceConfig {
    /// Rank of the subspace (≥ 1; capped at min(n, d) by the fit).
    pub rank: usize,
    /// Subtract the mean first (PCA) or not (truncated SVD, the MCR² reference's choice).
    pub center: bool,
}

impl SubspaceConfig {
    /// Rank `rank`, not centered (the MCR² reference evaluation).
    pub fn new(rank: usize) -> Self {
        Self {
            rank,
            center: false,
        }
    }

    /// The same, centered (PCA).
    pub fn centered(self) -> Self {
        self.center(true)
    }

    /// The same with `center` set.
    pub fn center(self, center: bool) -> Self {
        Self { center, ..self }
    }

    /// Errors unless rank ≥ 1.
    pub fn check(&self) -> Result<()> {
        crate::validate::at_least_one("rank", self.rank)
    }
}

/// A subspace fitted to samples: `x ≈ mean + basis · a`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubspaceFit<T> {
    /// The mean that was subtracted (zeros when fitted without centering).
    pub mean: Array1<T>,
    /// Orthonormal basis, d × r.
    pub basis: Array2<T>,
    /// All singular values of the (centered) samples, descending.
    pub singular_values: Array1<T>,
}

impl<T: Float> SubspaceFit<T> {
    /// Fits a subspace of rank `config.rank` to the rows of `x` (n × d) by thin SVD, after
    /// subtracting the mean when `config.center` (PCA) or not (truncated SVD). The rank is
    /// capped at min(n, d).
    pub fn fit(x: &ArrayRef2<T>, config: &SubspaceConfig) -> Result<Self> {
        crate::validate::matrix("samples", x)?;
        config.check()?;
        let rank = config.rank;
        let mean = if config.center {
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
        let norms: Array1<T> = r
            .rows()
            .into_iter()
            .map(|row| row.dot(&row).sqrt())
            .collect();
        crate::validate::finite_output("residual norms", &norms)?;
        Ok(norms)
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
    let qa = crate::data::orthonormal(&a.to_owned())?;
    let qb = crate::data::orthonormal(&b.to_owned())?;
    let m = qa.t().dot(&qb);
    let (_, s, _) = crate::linalg::thin_svd(m.view()).ok_or(Error::NoConvergence("SVD"))?;
    Ok(s.iter()
        .map(|&c| c.as_f64().clamp(-1.0, 1.0).acos())
        .collect())
}

/// The nearest-subspace classifier of the MCR² reference evaluation: one subspace per class
/// (PCA when centered, truncated SVD when not); a sample goes to the class with the smallest
/// residual `‖(I − U_j U_jᵀ)(x − μ_j)‖`.
///
/// ```
/// use mcr2::data::{SubspaceMixtureConfig, mixture_of_subspaces};
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// use mcr2::subspace::{NearestSubspace, SubspaceConfig};
/// let mut rng = StdRng::seed_from_u64(0);
/// let train = mixture_of_subspaces::<f64, _>(&SubspaceMixtureConfig::new(12, 3, 2, 40, 0.01), &mut rng)?;
/// let test = train.draw(&SubspaceMixtureConfig::new(12, 3, 2, 10, 0.01), &mut rng)?;
/// let classifier = NearestSubspace::fit(&train.samples, &train.labels, &SubspaceConfig::new(2))?;
/// assert!(classifier.accuracy(&test.samples, &test.labels)? > 0.95);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NearestSubspace<T> {
    fits: Vec<SubspaceFit<T>>,
}

impl<T: Float> NearestSubspace<T> {
    /// Fits one subspace per class to the rows of `x` (every class needs at
    /// least one sample: [`Error::EmptyClass`] otherwise).
    pub fn fit(x: &ArrayRef2<T>, labels: &Labels, config: &SubspaceConfig) -> Result<Self> {
        crate::validate::matrix("samples", x)?;
        config.check()?;
        let fits = labels
            .nonempty_groups(x.nrows())?
            .iter()
            .map(|rows| SubspaceFit::fit(&x.select(Axis(0), rows), config))
            .collect::<Result<Vec<_>>>()?;
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
            .map(|f| {
                let r = f.residual_norms(x)?;
                // never answer a class for a sample whose residuals overflowed
                crate::validate::finite_output("subspace residual norms", &r)?;
                Ok(r)
            })
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
    pub fn accuracy(&self, x: &ArrayRef2<T>, labels: &Labels) -> Result<f64> {
        crate::metrics::accuracy(&self.predict(x)?, labels)
    }
}
