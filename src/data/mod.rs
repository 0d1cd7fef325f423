//! Data: the built-in digits ([`digits`]), mixtures of subspaces (with a fresh test draw
//! from the same subspaces) and the ReduNet reference toys.
//!
//! ```
//! use mcr2::data::{SubspaceMixtureConfig, mixture_of_subspaces};
//! use rand::{SeedableRng, rngs::StdRng};
//! let cfg = SubspaceMixtureConfig::new(16, 3, 2, 50, 0.0);
//! let mix = mixture_of_subspaces::<f64, _>(&cfg, &mut StdRng::seed_from_u64(0))?;
//! assert_eq!(mix.samples.dim(), (150, 16));
//! # Ok::<(), mcr2::Error>(())
//! ```

use ndarray::{Array2, ArrayRef2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::{Error, Float, Labels, Result};

mod digits;
pub use digits::{Digits, digits};

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
        let total = self
            .samples
            .iter()
            .try_fold(0usize, |acc, &n| acc.checked_add(n));
        let Some(total) = total else {
            return Err(Error::TooLarge {
                what: "samples (their sum overflows)",
                bytes: None,
                budget: crate::validate::memory_budget(),
            });
        };
        crate::validate::elements(&[total, self.dim])?;
        let widest = self.subspace_dims.iter().copied().max().unwrap_or(0);
        crate::validate::elements(&[self.dim, widest])?;
        if total == 0 {
            return bad(
                "samples",
                format!("{:?}", self.samples),
                "at least one sample is needed",
            );
        }
        if self.orthogonal
            && self
                .subspace_dims
                .iter()
                .try_fold(0usize, |acc, &p| acc.checked_add(p))
                .is_none_or(|total| total > self.dim)
        {
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
    pub labels: Labels,
    /// Orthonormal basis U_k (d × p_k) of each class's subspace.
    pub bases: Vec<Array2<T>>,
}

/// Orthonormal basis of the column space of `a` (d × p, full column rank assumed), by thin SVD.
pub(crate) fn orthonormal<T: Float>(a: &Array2<T>) -> Result<Array2<T>> {
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
    draw(bases, config, rng)
}

/// `config.samples[k]` points of class k from the subspace spanned by `bases[k]`.
fn draw<T: Float, R: Rng + ?Sized>(
    bases: Vec<Array2<T>>,
    config: &SubspaceMixtureConfig,
    rng: &mut R,
) -> Result<SubspaceMixture<T>> {
    let d = config.dim;
    let gauss = |rng: &mut R, r: usize, c: usize| {
        Array2::<T>::from_shape_simple_fn((r, c), || T::from_f64(rng.sample(StandardNormal)))
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
            for r in block.rows_mut() {
                crate::kernels::normalize_row(r);
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
        labels: Labels::new(&labels, config.samples.len())?,
        bases,
    })
}

impl<T: Float> SubspaceMixture<T> {
    /// A fresh draw from the same subspaces (a test set for a model fitted on `self`):
    /// `config` gives the sample counts, noise and sphere projection; its dimension and
    /// subspace dimensions must be those of `self`.
    ///
    /// ```
    /// use mcr2::data::{SubspaceMixtureConfig, mixture_of_subspaces};
    /// use mcr2::rand::{SeedableRng, rngs::StdRng};
    /// let mut rng = StdRng::seed_from_u64(0);
    /// let cfg = SubspaceMixtureConfig::new(16, 3, 2, 50, 0.05);
    /// let train = mixture_of_subspaces::<f64, _>(&cfg, &mut rng)?;
    /// let test = train.draw(&SubspaceMixtureConfig::new(16, 3, 2, 20, 0.05), &mut rng)?;
    /// assert_eq!(test.bases, train.bases);
    /// assert_eq!(test.samples.dim(), (60, 16));
    /// # Ok::<(), mcr2::Error>(())
    /// ```
    pub fn draw<R: Rng + ?Sized>(
        &self,
        config: &SubspaceMixtureConfig,
        rng: &mut R,
    ) -> Result<SubspaceMixture<T>> {
        config.check()?;
        let dims: Vec<usize> = self.bases.iter().map(|b| b.ncols()).collect();
        let d = self.bases.first().map_or(0, |b| b.nrows());
        if config.dim != d || config.subspace_dims != dims {
            return Err(Error::ShapeMismatch {
                what: "mixture configuration",
                expected: format!("dim {d}, subspace dims {dims:?}"),
                got: format!(
                    "dim {}, subspace dims {:?}",
                    config.dim, config.subspace_dims
                ),
            });
        }
        draw(self.bases.clone(), config, rng)
    }

    /// The samples and labels in a random order (the bases unchanged).
    pub fn shuffled<R: Rng + ?Sized>(self, rng: &mut R) -> Result<SubspaceMixture<T>> {
        use rand::seq::SliceRandom;
        let mut order: Vec<usize> = (0..self.samples.nrows()).collect();
        order.shuffle(rng);
        Ok(SubspaceMixture {
            samples: self.samples.select(Axis(0), &order),
            labels: self.labels.select(&order)?,
            bases: self.bases,
        })
    }
}

/// The reference toy data: `per_class` samples around each row of `centers` (classes × d),
/// `N(center, noise² I)`, each then scaled to unit norm. The reference's 2D toy has centers
/// (1, 0) and (0, 1); its 3D toy e₁, e₂, e₃; both with noise 0.1.
pub fn gaussian_toy<T: Float, R: rand::Rng + ?Sized>(
    centers: &ArrayRef2<T>,
    per_class: usize,
    noise: f64,
    rng: &mut R,
) -> Result<(Array2<T>, Labels)> {
    crate::validate::matrix("centers", centers)?;
    if per_class == 0 {
        return Err(Error::InvalidParameter {
            name: "per_class",
            value: "0".into(),
            reason: "must be ≥ 1",
        });
    }
    if !(noise.is_finite() && noise >= 0.0) {
        return Err(Error::InvalidParameter {
            name: "noise",
            value: noise.to_string(),
            reason: "must be finite and ≥ 0",
        });
    }
    let (k, d) = centers.dim();
    let n = k.checked_mul(per_class).ok_or(Error::TooLarge {
        what: "gaussian_toy samples",
        bytes: None,
        budget: crate::validate::memory_budget(),
    })?;
    crate::validate::elements_of::<T>("gaussian_toy samples", &[n, d])?;
    let mut x = Array2::<T>::zeros((n, d));
    let mut labels = Vec::with_capacity(n);
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        let j = i / per_class;
        for (t, v) in row.iter_mut().enumerate() {
            let e: f64 = rng.sample(rand_distr::StandardNormal);
            *v = centers[(j, t)] + T::from_f64(noise * e);
        }
        crate::kernels::normalize_row(row);
        labels.push(j);
    }
    Ok((x, Labels::new(&labels, k)?))
}
