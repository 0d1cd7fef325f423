//! SimDINO's objectives (Wu, Zhang, Ding, Pai, Ma et al., *Simplifying DINO via Coding Rate
//! Regularization*, arXiv 2502.10385; RobinWu218/SimDINO, `simdinov2/loss/dino_clstoken_loss.py`,
//! class `MCRLoss`), with that code's `eps`, which is ε² (default 0.05).
//!
//! For V_t teacher (global) views and V_s ≥ V_t student views, each m × p with unit rows:
//!
//! * **compression** `C = Σ_{t,s} sim(t, s) / (V_t V_s − min(V_t, V_s))`, with
//!   `sim(t, s) = (1/m) Σ_i ⟨teacher_{t,i}, student_{s,i}⟩` and the diagonal `sim(i, i)` set to 0;
//! * **expansion** `E = γ · (1/V_t) Σ_v ½ logdet(I + p/(m N ε²) Σ_v)`, `Σ_v = Z_vᵀZ_v` over the
//!   first V_t student views (or their means with the teacher views), with the balancing
//!   factor `γ = (p + N m)/(p N m)`; N is the number of processes whose covariances are summed
//!   (the code's `reduce_cov = 1`), so m N is the total number of samples per view;
//! * the loss (minimized) `L = −coeff·C − E`.
//!
//! [`ViewCovariances`] is the statistics form of the expansion: each process pushes its
//! views, the covariances are merged (summed), and every process takes the gradient of E
//! for its own rows from the merged statistics.

use ndarray::{Array2, ArrayView2};

use super::numerics::{FactorReport, GramFactor, factor_gram};
use super::views::check_views;
use crate::linalg::symmetrize_from_lower;
use crate::{Error, Float, Result};

/// The summed covariances `Σ_v = Z_vᵀZ_v` (p × p) of V views, and the number of samples per
/// view they hold: the statistics of SimDINO's expansion term.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewCovariances<T> {
    dim: usize,
    samples: usize,
    covariances: Vec<Array2<T>>,
}

/// The expansion term from merged statistics, with a report per factorization.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion<T> {
    /// `E = γ (1/V) Σ_v ½ logdet(I + p/(M ε²) Σ_v)`, M = samples per view.
    pub value: T,
    /// `γ = (p + M)/(p M)`.
    pub balance: f64,
    /// One report per view (Cholesky, or the eigenvalue fallback).
    pub factors: Vec<FactorReport>,
}

impl<T: Float> ViewCovariances<T> {
    /// Empty statistics for `views` views of dimension `dim`.
    pub fn new(dim: usize, views: usize) -> Result<Self> {
        crate::validate::at_least_one("dim", dim)?;
        crate::validate::at_least_one("views", views)?;
        crate::validate::elements_of::<T>("view covariances", &[views, dim, dim])?;
        Ok(Self {
            dim,
            samples: 0,
            covariances: vec![Array2::zeros((dim, dim)); views],
        })
    }

    /// Adds one batch: one m × p matrix per view (the same m samples in every view).
    pub fn push(&mut self, views: &[ArrayView2<T>]) -> Result<()> {
        let m = self.check_local(views)?;
        let samples = crate::validate::sample_count(self.samples, m)?;
        for (c, z) in self.covariances.iter_mut().zip(views) {
            crate::linalg::gram_cols(z.view(), T::one(), true, c.view_mut(), true);
            symmetrize_from_lower(c.view_mut());
        }
        self.samples = samples;
        Ok(())
    }

    /// Adds the statistics of another process (same dimension and views).
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.dim != self.dim || other.covariances.len() != self.covariances.len() {
            return Err(Error::ShapeMismatch {
                what: "statistics to merge",
                expected: format!("dim {}, {} views", self.dim, self.covariances.len()),
                got: format!("dim {}, {} views", other.dim, other.covariances.len()),
            });
        }
        self.samples = crate::validate::sample_count(self.samples, other.samples)?;
        for (a, b) in self.covariances.iter_mut().zip(&other.covariances) {
            *a += b;
        }
        Ok(())
    }

    /// Samples per view pushed (over every merged process).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Errors unless `views` are one finite m × p matrix per view of these statistics;
    /// returns m.
    fn check_local(&self, views: &[ArrayView2<T>]) -> Result<usize> {
        let (m, p) = check_views("views", views)?;
        if views.len() != self.covariances.len() || p != self.dim {
            return Err(Error::ShapeMismatch {
                what: "views",
                expected: format!("{} views of {} columns", self.covariances.len(), self.dim),
                got: format!("{} views of {p} columns", views.len()),
            });
        }
        Ok(m)
    }

    /// The scale `s = p/(M ε²)`, the balance `γ = (p + M)/(p M)` for M samples per view,
    /// and every `I + s·Σ_v` factored (Cholesky, or the eigenvalue fallback).
    #[allow(clippy::type_complexity)]
    fn factored(
        &self,
        eps_sq: f64,
        samples: f64,
    ) -> Result<(f64, f64, Vec<(GramFactor<T>, FactorReport)>)> {
        crate::validate::positive("eps", eps_sq)?;
        if self.samples == 0 {
            return Err(Error::Empty {
                what: "view covariances (no samples pushed)",
                rows: 0,
                cols: self.dim,
            });
        }
        let p = self.dim as f64;
        let (scale, balance) = (p / (samples * eps_sq), (p + samples) / (p * samples));
        let factors = self
            .covariances
            .iter()
            .map(|c| factor_gram(c, T::from_f64(scale), "I + p/(M ε²)·Σ_v", false))
            .collect::<Result<_>>()?;
        Ok((scale, balance, factors))
    }

    /// `E = γ (1/V) Σ_v ½ logdet(I + s Σ_v)` from the factors.
    fn expansion_from(
        &self,
        balance: f64,
        factors: Vec<(GramFactor<T>, FactorReport)>,
    ) -> Result<Expansion<T>> {
        let total: f64 = factors.iter().map(|(f, _)| 0.5 * f.logdet().as_f64()).sum();
        let value = T::from_f64(balance * total / self.covariances.len() as f64);
        crate::validate::finite_value("SimDINO expansion", value)?;
        Ok(Expansion {
            value,
            balance,
            factors: factors.into_iter().map(|(_, r)| r).collect(),
        })
    }

    /// `∂E/∂Z_v = γ/V · s·Z_v (I + s Σ_v)⁻¹` for the rows `local` (checked), from the factors.
    fn grads_from(
        &self,
        scale: f64,
        balance: f64,
        factors: &[(GramFactor<T>, FactorReport)],
        local: &[ArrayView2<T>],
    ) -> Vec<Array2<T>> {
        let c = T::from_f64(balance * scale / self.covariances.len() as f64);
        factors
            .iter()
            .zip(local)
            .map(|((f, _), z)| {
                let mut g = Array2::<T>::zeros(z.raw_dim());
                crate::linalg::gemm(c, z.view(), f.inverse().view(), false, g.view_mut(), true);
                g
            })
            .collect()
    }

    /// The expansion term `E` (ε² = the code's `eps`, finite and > 0).
    pub fn expansion(&self, eps_sq: f64) -> Result<Expansion<T>> {
        self.expansion_over(eps_sq, 1)
    }

    /// The expansion term of statistics that hold one of `processes` processes' rows, not
    /// merged (the code's default `reduce_cov = 0`: the local covariance, scaled as if the
    /// m·N samples of every process were coded).
    pub fn expansion_over(&self, eps_sq: f64, processes: usize) -> Result<Expansion<T>> {
        crate::validate::at_least_one("processes", processes)?;
        let (_, balance, factors) =
            self.factored(eps_sq, self.samples as f64 * processes as f64)?;
        self.expansion_from(balance, factors)
    }

    /// `∂E/∂Z_v` for one process's rows of each view (m_local × p each), from the merged
    /// statistics: `γ/V · s·Z_v (I + s Σ_v)⁻¹`, s = p/(M ε²).
    pub fn expansion_grad(&self, eps_sq: f64, local: &[ArrayView2<T>]) -> Result<Vec<Array2<T>>> {
        self.check_local(local)?;
        let (scale, balance, factors) = self.factored(eps_sq, self.samples as f64)?;
        Ok(self.grads_from(scale, balance, &factors, local))
    }

    /// `E` and `∂E/∂Z_v` for the rows `local`, each covariance factored once.
    fn expansion_with_grad(
        &self,
        eps_sq: f64,
        local: &[ArrayView2<T>],
    ) -> Result<(Expansion<T>, Vec<Array2<T>>)> {
        self.check_local(local)?;
        let (scale, balance, factors) = self.factored(eps_sq, self.samples as f64)?;
        let grads = self.grads_from(scale, balance, &factors, local);
        Ok((self.expansion_from(balance, factors)?, grads))
    }
}

/// Which features the expansion term codes (the code's `expa_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ExpansionOf {
    /// The first V_t student views (`expa_type = 0`, the default).
    #[default]
    Student,
    /// `(student_v + teacher_v)/2` for the first V_t views (`expa_type = 1`).
    StudentTeacherMean,
}

/// SimDINO's loss as that code computes it on one process (N = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SimDinoLoss {
    /// The code's `eps` (ε²); default 0.05.
    pub eps: f64,
    /// Weight of the compression term; default 1.
    pub coeff: f64,
    /// What the expansion codes.
    pub expansion: ExpansionOf,
    /// Whether the diagonal pairs (the same view for student and teacher) are excluded from
    /// the compression term (the code's `no_diag`, default true).
    pub no_diag: bool,
}

impl Default for SimDinoLoss {
    fn default() -> Self {
        Self {
            eps: 0.05,
            coeff: 1.0,
            expansion: ExpansionOf::Student,
            no_diag: true,
        }
    }
}

/// The value of a [`SimDinoLoss`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SimDinoValue<T> {
    /// `−coeff·compression − expansion`.
    pub loss: T,
    /// `C`.
    pub compression: T,
    /// `Σ_t Σ_{s < V_t} sim(t, s) / V_t` (the code's `global_comp_loss`, reported only).
    pub global_compression: T,
    /// `E`.
    pub expansion: T,
}

/// The loss's value and its gradients with respect to every student and teacher view.
pub type SimDinoGrads<T> = (SimDinoValue<T>, Vec<Array2<T>>, Vec<Array2<T>>);

impl SimDinoLoss {
    /// The loss and its gradients with respect to the student views and the teacher views
    /// (features taken as given: the code's `normalized = True`).
    ///
    /// ```
    /// use mcr2::rate::SimDinoLoss;
    /// use ndarray::array;
    /// let s = array![[1.0f64, 0.0], [0.0, 1.0]];
    /// let t = array![[1.0f64, 0.0], [0.0, 1.0]];
    /// let (v, ds, dt) = SimDinoLoss::default()
    ///     .evaluate_with_grad(&[s.view(), s.view()], &[t.view(), t.view()])?;
    /// assert!((v.compression - 1.0).abs() < 1e-15); // every off-diagonal pair agrees
    /// assert_eq!((ds.len(), dt.len()), (2, 2));
    /// # Ok::<(), mcr2::Error>(())
    /// ```
    pub fn evaluate_with_grad<T: Float>(
        &self,
        student: &[ArrayView2<T>],
        teacher: &[ArrayView2<T>],
    ) -> Result<SimDinoGrads<T>> {
        crate::validate::positive("eps", self.eps)?;
        crate::validate::finite_non_negative("coeff", self.coeff)?;
        let (m, p) = check_views("student views", student)?;
        let shape = check_views("teacher views", teacher)?;
        let (vs, vt) = (student.len(), teacher.len());
        if shape != (m, p) || vt > vs {
            return Err(Error::ShapeMismatch {
                what: "teacher views",
                expected: format!("at most {vs} views of {m}×{p}"),
                got: format!("{vt} views of {}×{}", shape.0, shape.1),
            });
        }
        let terms = vt * vs - vt.min(vs);
        if terms == 0 {
            return Err(Error::InvalidParameter {
                name: "views",
                value: format!("{vt} teacher, {vs} student"),
                reason: "the compression term needs a pair of different views",
            });
        }
        let (mut ds, mut dt): (Vec<_>, Vec<_>) = (
            student
                .iter()
                .map(|s| Array2::<T>::zeros(s.raw_dim()))
                .collect(),
            teacher
                .iter()
                .map(|t| Array2::<T>::zeros(t.raw_dim()))
                .collect(),
        );
        let (mut total, mut global) = (T::zero(), T::zero());
        let pair_scale = T::one() / T::from_usize(m * terms);
        let coeff = T::from_f64(self.coeff);
        for (t, tv) in teacher.iter().enumerate() {
            for (s, sv) in student.iter().enumerate() {
                if self.no_diag && t == s {
                    continue;
                }
                let sim = (tv * sv).sum() / T::from_usize(m);
                total += sim;
                if s < vt {
                    global += sim;
                }
                // L = −coeff·C: ∂L/∂student_s = −coeff·teacher_t/(m·terms), and back
                ds[s].scaled_add(-coeff * pair_scale, tv);
                dt[t].scaled_add(-coeff * pair_scale, sv);
            }
        }
        let compression = total / T::from_usize(terms);
        let global_compression = global / T::from_usize(vt);
        let coded: Vec<Array2<T>> = match self.expansion {
            ExpansionOf::Student => student[..vt].iter().map(|s| s.to_owned()).collect(),
            ExpansionOf::StudentTeacherMean => student[..vt]
                .iter()
                .zip(teacher)
                .map(|(s, t)| (s + t).mapv(|x| x * T::from_f64(0.5)))
                .collect(),
        };
        let views: Vec<ArrayView2<T>> = coded.iter().map(|c| c.view()).collect();
        let mut stats = ViewCovariances::new(p, vt)?;
        stats.push(&views)?;
        let (expansion, de) = stats.expansion_with_grad(self.eps, &views)?;
        let expansion = expansion.value;
        for (v, g) in de.iter().enumerate() {
            // L = … − E
            match self.expansion {
                ExpansionOf::Student => ds[v].scaled_add(-T::one(), g),
                ExpansionOf::StudentTeacherMean => {
                    ds[v].scaled_add(-T::from_f64(0.5), g);
                    dt[v].scaled_add(-T::from_f64(0.5), g);
                }
            }
        }
        let value = SimDinoValue {
            loss: -coeff * compression - expansion,
            compression,
            global_compression,
            expansion,
        };
        crate::validate::finite_value("SimDINO loss", value.loss)?;
        Ok((value, ds, dt))
    }
}
