//! Lossy coding: the coding length of a group of samples, segmentation by agglomerative lossy
//! compression (ALC), and classification by minimum incremental coding length (MICL).
//!
//! Samples are rows: a group `W` is m × n (m samples of dimension n). With the mean coded
//! separately ([`MeanCoding::Separate`], the default), `μ = (1/m) Σ w_i` and `W̄ = W − 1μᵀ`:
//!
//! `L(W) = ((m + n)/2) log₂ det(I + n/(ε² m) W̄ᵀW̄) + (n/2) log₂(1 + μᵀμ/ε²)`.
//!
//! The first term is Eq. 6 of Ma, Derksen, Hong, Wright, *Segmentation of multivariate mixed
//! data via lossy data coding and compression*, IEEE TPAMI 29(9), 2007: m/2 · logdet codes the
//! samples up to distortion ε² and n/2 · logdet the codebook. The mean term is the one stated
//! in the same paper for data that is not zero-mean; it is what coding the n entries of μ costs
//! when each entry, of power μᵀμ/n, is coded at the per-entry share ε²/n of the distortion:
//! n · ½ log₂(1 + (μᵀμ/n)/(ε²/n)). With [`MeanCoding::ZeroMean`] the data is taken as is (no
//! mean, no mean term): `L(W) = ((m + n)/2) log₂ det(I + n/(ε² m) WᵀW)`.
//!
//! A segmentation `W = W_1 ∪ … ∪ W_k` of m samples costs
//! `L^s = Σ_i [ L(W_i) − |W_i| log₂(|W_i|/m) ]`, the second term being the membership
//! (Huffman) bits. [`alc`] minimizes it greedily from singletons (Ma et al. 2007, Alg. 1);
//! [`Micl`] classifies a sample into the class whose coding length grows least
//! (Wright, Tao, Zhou, Ma, Sastry, *Classification via minimum incremental coding length*,
//! NIPS 2007): `δL_j(x) = L(X_j ∪ {x}) − L(X_j) − log₂ π_j`, `π_j = m_j/m`.
//!
//! Every log-det is taken on the smaller side: `det(I_n + c W̄ᵀW̄) = det(I_m + c W̄W̄ᵀ)`.
//! Computation is in f64 for f32 and f64 inputs alike.
//!
//! ```
//! use mcr2::coding::{AlcProgress, Coder, Micl, alc};
//! use mcr2::ndarray::Array2;
//! use mcr2::{Labels, Precision};
//! // two lines through the origin of R³ (along e₁ and e₂ + e₃), twenty samples each
//! let x = Array2::from_shape_fn((40, 3), |(i, j)| {
//!     let t = (1.0 + (i % 10) as f64 / 3.0) * if i % 2 == 0 { 1.0 } else { -1.0 };
//!     if (i < 20) == (j == 0) { t } else { 0.01 * ((i * 7 + j) % 3) as f64 }
//! });
//! let coder = Coder::new(Precision::from_eps(0.2)?);
//! let lines = Labels::new(&(0..40).map(|i| i / 20).collect::<Vec<_>>(), 2)?;
//! // coding each line on its own is cheaper than coding them together
//! assert!(coder.segmentation_length(&x, &lines)? < coder.length(&x)?);
//! // MICL: a new sample joins the class whose coding length grows least
//! let micl = Micl::fit(&x, &lines, coder)?;
//! let new = mcr2::ndarray::array![[3.0, 0.0, 0.0], [0.0, 2.0, 2.0]];
//! assert_eq!(micl.predict(&new)?, vec![0, 1]);
//! // ALC recovers the two lines from the samples alone
//! let seg = alc(&x, &coder, |_: &AlcProgress| ())?;
//! assert_eq!(mcr2::metrics::segmentation_error(&seg.labels, &lines)?, 0.0);
//! # Ok::<(), mcr2::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayRef2};

mod alc;
mod micl;
mod micl_io;

pub use alc::{ALC_MAX_SAMPLES, AlcProgress, Segmentation, alc};
pub use micl::Micl;

use crate::{Float, Labels, Precision, Result};

/// The unit of coding lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Unit {
    /// log₂ (the papers' unit).
    #[default]
    Bits,
    /// Natural logarithm.
    Nats,
}

/// Whether the mean of a group is coded separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MeanCoding {
    /// Center the group and add the cost of its mean, `(n/2) log₂(1 + μᵀμ/ε²)` (the papers'
    /// form for data that is not zero-mean).
    #[default]
    Separate,
    /// Code the samples as they are (subspaces through the origin).
    ZeroMean,
}

/// How coding lengths are measured: the distortion ε, the unit and the mean coding.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Coder {
    /// The allowed distortion ε (ε² per sample).
    pub eps: Precision,
    /// Bits (default) or nats.
    pub unit: Unit,
    /// Mean coded separately (default) or zero-mean data.
    pub mean: MeanCoding,
}

/// A group of samples summarized for coding: count, mean and scatter about the mean (or raw
/// second moment for zero-mean coding), with the member indices.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    members: Vec<usize>,
    mean: Array1<f64>,
    /// n × n scatter; built on first use (small groups are coded from their samples)
    scatter: Option<Array2<f64>>,
    /// L(W) in nats
    length: f64,
}

impl Coder {
    /// Bits, mean coded separately.
    pub fn new(eps: Precision) -> Self {
        Self {
            eps,
            unit: Unit::Bits,
            mean: MeanCoding::Separate,
        }
    }

    /// The same coder in another unit.
    pub fn with_unit(mut self, unit: Unit) -> Self {
        self.unit = unit;
        self
    }

    /// The same coder with another mean coding.
    pub fn with_mean(mut self, mean: MeanCoding) -> Self {
        self.mean = mean;
        self
    }

    fn scale(&self, nats: f64) -> f64 {
        match self.unit {
            Unit::Bits => nats / std::f64::consts::LN_2,
            Unit::Nats => nats,
        }
    }

    fn centered(&self) -> bool {
        self.mean == MeanCoding::Separate
    }

    /// The coding length L(W) of the rows of `x` (m samples × n dimensions).
    pub fn length<T: Float>(&self, x: &ArrayRef2<T>) -> Result<f64> {
        crate::validate::matrix("samples", x)?;
        let x = x.mapv(|v| v.as_f64());
        let g = self.group(&x, (0..x.nrows()).collect());
        crate::validate::finite_value("coding length", self.scale(g.length))
    }

    /// The segmentation coding length `Σ_i [L(W_i) − |W_i| log₂(|W_i|/m)]` of the rows of `x`
    /// grouped by `labels` (empty groups cost nothing; [`Labels::from_ids`] groups arbitrary
    /// ids).
    pub fn segmentation_length<T: Float>(&self, x: &ArrayRef2<T>, labels: &Labels) -> Result<f64> {
        crate::validate::matrix("samples", x)?;
        labels.check_samples(x.nrows())?;
        let x = x.mapv(|v| v.as_f64());
        let m = x.nrows() as f64;
        let mut total = 0.0;
        for members in labels.groups().into_iter().filter(|g| !g.is_empty()) {
            let k = members.len() as f64;
            total += self.group(&x, members).length - k * (k / m).ln();
        }
        crate::validate::finite_value("segmentation coding length", self.scale(total))
    }

    /// A group's statistics and coding length (nats) from its member rows of `x`.
    fn group(&self, x: &Array2<f64>, members: Vec<usize>) -> Group {
        let n = x.ncols();
        let mut mean = Array1::<f64>::zeros(n);
        if self.centered() {
            for &i in &members {
                mean += &x.row(i);
            }
            mean /= members.len() as f64;
        }
        let mut g = Group {
            members,
            mean,
            scatter: None,
            length: 0.0,
        };
        if g.members.len() > n {
            g.scatter = Some(scatter_of(x, &g.members, &g.mean));
        }
        g.length = self.length_of(x, &g.members, &g.mean, g.scatter.as_ref());
        g
    }

    /// L (nats) of a group given its mean and, when it has more samples than dimensions, its
    /// scatter; otherwise coded from its centered samples (the smaller side).
    fn length_of(
        &self,
        x: &Array2<f64>,
        members: &[usize],
        mean: &Array1<f64>,
        scatter: Option<&Array2<f64>>,
    ) -> f64 {
        let n = x.ncols();
        let k = members.len();
        let c = n as f64 / (self.eps.eps_sq() * k as f64);
        let logdet = match scatter {
            Some(s) if k > n => crate::rate::factor::logdet_identity_plus_clamped(s, c),
            _ => {
                // k × k Gram of the centered samples
                let mut w = Array2::<f64>::zeros((k, n));
                for (mut r, &i) in w.rows_mut().into_iter().zip(members) {
                    r.assign(&x.row(i));
                    r -= mean;
                }
                crate::rate::factor::logdet_identity_plus_clamped(&w.dot(&w.t()), c)
            }
        };
        let mut l = 0.5 * (k + n) as f64 * logdet;
        if self.centered() {
            l += 0.5 * n as f64 * (mean.dot(mean) / self.eps.eps_sq()).ln_1p();
        }
        l
    }

    /// The union of two groups (statistics merged exactly; its length computed).
    fn merge(&self, x: &Array2<f64>, a: &Group, b: &Group, with_scatter: bool) -> Group {
        let (ka, kb) = (a.members.len() as f64, b.members.len() as f64);
        let k = ka + kb;
        let n = x.ncols();
        let mean = if self.centered() {
            (&a.mean * ka + &b.mean * kb) / k
        } else {
            Array1::zeros(n)
        };
        let mut members = Vec::with_capacity(a.members.len() + b.members.len());
        members.extend_from_slice(&a.members);
        members.extend_from_slice(&b.members);
        let scatter = if members.len() > n || with_scatter {
            // S_ab = S_a + S_b + (k_a k_b / k) (μ_a − μ_b)(μ_a − μ_b)ᵀ (stable: no large
            // uncentered moments are subtracted)
            let sa = a
                .scatter
                .clone()
                .unwrap_or_else(|| scatter_of(x, &a.members, &a.mean));
            let sb = b
                .scatter
                .as_ref()
                .map_or_else(|| scatter_of(x, &b.members, &b.mean), |s| s.clone());
            let mut s = sa + sb;
            if self.centered() {
                let d = &a.mean - &b.mean;
                let f = ka * kb / k;
                for i in 0..n {
                    for j in 0..n {
                        s[(i, j)] += f * d[i] * d[j];
                    }
                }
            }
            Some(s)
        } else {
            None
        };
        let length = self.length_of(x, &members, &mean, scatter.as_ref());
        Group {
            members,
            mean,
            scatter,
            length,
        }
    }
}

/// Σ_{i ∈ members} (x_i − μ)(x_i − μ)ᵀ.
pub(crate) fn scatter_of(x: &Array2<f64>, members: &[usize], mean: &Array1<f64>) -> Array2<f64> {
    let n = x.ncols();
    let mut w = Array2::<f64>::zeros((members.len(), n));
    for (mut r, &i) in w.rows_mut().into_iter().zip(members) {
        r.assign(&x.row(i));
        r -= mean;
    }
    w.t().dot(&w)
}
