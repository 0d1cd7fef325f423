//! Classification by minimum incremental coding length (MICL).

use ndarray::{Array1, Array2, ArrayRef2, ArrayView1};

use super::{Coder, scatter_of};
use crate::{Error, Float, Labels, Result};

/// One class of a [`Micl`] classifier: its count, mean, the eigendecomposition of its
/// scatter (the factor every test sample's rank-one update uses) and its coding length.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClassCode {
    pub(crate) count: usize,
    pub(crate) mean: Array1<f64>,
    pub(crate) eigenvalues: Array1<f64>,
    /// n × n, eigenvectors as columns
    pub(crate) eigenvectors: Array2<f64>,
    /// L(X_j) in nats
    pub(crate) length: f64,
}

/// Classification by minimum incremental coding length.
///
/// [`fit`](Self::fit) summarizes each class once: count m_j, mean μ_j and the
/// eigendecomposition `S_j = Q Λ Qᵀ` of its scatter. For a test sample x the class grows to
/// m' = m_j + 1 samples with mean μ' = μ_j + v/m' (v = x − μ_j) and scatter
/// `S' = S_j + (m_j/m') v vᵀ`, so with c' = n/(ε² m')
///
/// `logdet(I + c'S') = Σ_i ln(1 + c'λ_i) + ln(1 + c'(m_j/m') Σ_i (Qᵀv)_i² / (1 + c'λ_i))`:
/// O(n²) per sample and class, no factorization. (Zero-mean coding: v = x and S' = S_j + x xᵀ.)
#[derive(Debug, Clone, PartialEq)]
pub struct Micl {
    pub(crate) coder: Coder,
    pub(crate) classes: Vec<ClassCode>,
    pub(crate) dim: usize,
    pub(crate) total: usize,
}

impl Micl {
    /// Fits one code per class from the rows of `x` labelled `labels` (0..classes); every
    /// class needs at least one sample.
    pub fn fit<T: Float>(x: &ArrayRef2<T>, labels: &Labels, coder: Coder) -> Result<Self> {
        crate::validate::matrix("samples", x)?;
        let members = labels.nonempty_groups(x.nrows())?;
        let classes = labels.n_classes();
        let x = x.mapv(|v| v.as_f64());
        let n = x.ncols();
        let mut codes = Vec::with_capacity(classes);
        for members in members {
            let g = coder.group(&x, members);
            let scatter = g
                .scatter
                .clone()
                .unwrap_or_else(|| scatter_of(&x, &g.members, &g.mean));
            let (eigenvalues, eigenvectors) = crate::linalg::eigh::<f64>(scatter.view())
                .ok_or(Error::NoConvergence("eigendecomposition"))?;
            codes.push(ClassCode {
                count: g.members.len(),
                mean: g.mean,
                eigenvalues: eigenvalues.mapv(|l| l.max(0.0)),
                eigenvectors,
                length: g.length,
            });
        }
        Ok(Self {
            coder,
            classes: codes,
            dim: n,
            total: x.nrows(),
        })
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.classes.len()
    }

    fn increase(&self, x: ArrayView1<f64>, j: usize) -> f64 {
        let c = &self.classes[j];
        let n = self.dim as f64;
        let eps_sq = self.coder.eps.eps_sq();
        let m = c.count as f64;
        let m1 = m + 1.0;
        let cp = n / (eps_sq * m1);
        let centered = self.coder.centered();
        let (v, w, mean) = if centered {
            let v = &x - &c.mean;
            let mean = &c.mean + &(&v / m1);
            (v, m / m1, mean)
        } else {
            (x.to_owned(), 1.0, c.mean.clone())
        };
        let q = c.eigenvectors.t().dot(&v);
        let mut logdet = 0.0;
        let mut quad = 0.0;
        for (&l, &qi) in c.eigenvalues.iter().zip(&q) {
            let d = 1.0 + cp * l;
            logdet += d.ln();
            quad += qi * qi / d;
        }
        logdet += (cp * w * quad).ln_1p();
        let mut length = 0.5 * (m1 + n) * logdet;
        if centered {
            length += 0.5 * n * (mean.dot(&mean) / eps_sq).ln_1p();
        }
        let prior = (m / self.total as f64).ln();
        length - c.length - prior
    }

    /// `δL_j(x) = L(X_j ∪ {x}) − L(X_j) − log₂ π_j` for every row of `x` and class
    /// (samples × classes, in the coder's unit).
    pub fn length_increase<T: Float>(&self, x: &ArrayRef2<T>) -> Result<Array2<f64>> {
        crate::validate::matrix_with_cols("samples", x, self.dim)?;
        let x = x.mapv(|v| v.as_f64());
        let mut out = Array2::<f64>::zeros((x.nrows(), self.classes.len()));
        for (row, mut o) in x.rows().into_iter().zip(out.rows_mut()) {
            for (j, v) in o.iter_mut().enumerate() {
                *v = self.coder.scale(self.increase(row, j));
            }
        }
        crate::validate::finite_output("coding length increase", &out)?;
        Ok(out)
    }

    /// The class of smallest coding-length increase for every row of `x`.
    pub fn predict<T: Float>(&self, x: &ArrayRef2<T>) -> Result<Vec<usize>> {
        let d = self.length_increase(x)?;
        // never answer a class for a sample whose scores overflowed
        crate::validate::finite_output("MICL coding length increase", &d)?;
        Ok(d.rows()
            .into_iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, f64::INFINITY),
                        |b, (j, &v)| if v < b.1 { (j, v) } else { b },
                    )
                    .0
            })
            .collect())
    }

    /// Fraction of rows of `x` predicted as `labels`.
    pub fn accuracy<T: Float>(&self, x: &ArrayRef2<T>, labels: &Labels) -> Result<f64> {
        crate::metrics::accuracy(&self.predict(x)?, labels)
    }
}
