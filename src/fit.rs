//! MCR² representation learning by gradient ascent on the rate reduction ΔR.
//!
//! Three problems (Yu et al., arXiv 2006.08558; Wang et al., arXiv 2406.01909):
//!
//! * [`ascend_on_sphere`]: maximize ΔR(Z) over the features themselves, every row kept on the
//!   unit sphere (projected gradient ascent);
//! * [`ascend_regularized`]: maximize `R(Z) − Rc(Z) − (λ/2)‖Z‖²_F`, whose local and global
//!   maximizers are known in closed form (REFERENCE: Wang et al., Theorem on local/global optima);
//! * [`LinearMap::fit`]: learn `W` so that the features `normalize(X W)` maximize ΔR; new
//!   samples are then mapped with [`LinearMap::transform`].
//!
//! Progress is reported through an observer closure (iteration, ΔR, R, Rc, gradient norm)
//! that may stop the run ([`crate::observe`]); the library never prints.
//!
//! ```
//! use mcr2::data::{SubspaceMixtureConfig, mixture_of_subspaces};
//! use mcr2::fit::{FitConfig, Progress, ascend_on_sphere};
//! use mcr2::rand::{SeedableRng, rngs::StdRng};
//! use mcr2::{Membership, Precision, rate_reduction};
//! let cfg = SubspaceMixtureConfig::new(8, 2, 1, 20, 0.1);
//! let mix = mixture_of_subspaces::<f64, _>(&cfg, &mut StdRng::seed_from_u64(0))?;
//! let labels = Membership::from(mix.labels.clone());
//! let mut config = FitConfig::new(Precision::from_eps_sq(0.5)?);
//! config.max_iterations = 50;
//! let (z, report) = ascend_on_sphere(&mix.samples, &labels, &config, |_: &Progress| ())?;
//! let before = rate_reduction(&mix.samples, &labels, config.eps)?.delta_r;
//! assert!(rate_reduction(&z, &labels, config.eps)?.delta_r > before);
//! assert!(report.iterations <= 50);
//! # Ok::<(), mcr2::Error>(())
//! ```

use ndarray::{Array2, ArrayRef2};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::observe::{Flow, Report, Stop};
use crate::{Error, Float, Membership, Precision, Result, rate_reduction_with_grad};

/// Step size, iteration budget and stopping tolerance of a fit.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FitConfig {
    /// Precision ε of the rates.
    pub eps: Precision,
    /// Gradient step size (> 0): the first step's, and every step's under
    /// [`StepSchedule::Constant`].
    pub step: f64,
    /// How the step size changes over the iterations (default constant).
    #[cfg_attr(feature = "serde", serde(default))]
    pub schedule: StepSchedule,
    /// Maximum number of iterations.
    pub max_iterations: usize,
    /// Stop when the norm of the (projected) gradient falls below this (≥ 0), as stated for
    /// f64; in f32 it is scaled by √(u_f32/u_f64) ≈ 2.3·10⁴ (see
    /// [`tolerance_for`](Self::tolerance_for)), where rounding keeps the gradient's norm from
    /// going lower.
    pub tolerance: f64,
}

impl FitConfig {
    /// Defaults: step 0.5, constant, 500 iterations, tolerance 1e-8 (2.3·10⁻⁴ in f32).
    pub fn new(eps: Precision) -> Self {
        Self {
            eps,
            step: 0.5,
            schedule: StepSchedule::Constant,
            max_iterations: 500,
            tolerance: 1e-8,
        }
    }

    /// The tolerance in force for float type `T`: `tolerance · √(u_T/u_f64)` (the stated
    /// value for f64; about 2.3·10⁴ times it for f32).
    ///
    /// ```
    /// let config = mcr2::fit::FitConfig::new(mcr2::Precision::from_eps_sq(0.5)?);
    /// assert_eq!(config.tolerance_for::<f64>(), 1e-8);
    /// assert!((config.tolerance_for::<f32>() - 2.32e-4).abs() < 2e-6);
    /// # Ok::<(), mcr2::Error>(())
    /// ```
    pub fn tolerance_for<T: Float>(&self) -> f64 {
        self.tolerance * (T::epsilon().as_f64() / f64::EPSILON).sqrt()
    }

    fn check(&self) -> Result<()> {
        crate::validate::positive("step", self.step)?;
        if let StepSchedule::Cosine { final_fraction } = self.schedule
            && !(0.0..=1.0).contains(&final_fraction)
        {
            return Err(Error::InvalidParameter {
                name: "final_fraction",
                value: final_fraction.to_string(),
                reason: "must be in [0, 1]",
            });
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "tolerance",
                value: self.tolerance.to_string(),
                reason: "must be finite and ≥ 0",
            });
        }
        Ok(())
    }
}

/// How the step size of a fit changes with the iteration `t` of `T = max_iterations`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum StepSchedule {
    /// Every step is `step`.
    #[default]
    Constant,
    /// Cosine decay from `step` to `final_fraction · step`:
    /// `step_t = step · (f + (1 − f)·½(1 + cos(π t / T)))`. A fixed step that is large enough
    /// to move fast early keeps oscillating around the maximum; the decay lets it settle.
    Cosine {
        /// `f`, the last step as a fraction of the first, in [0, 1].
        final_fraction: f64,
    },
}

impl StepSchedule {
    /// The step size at iteration `t` of `total`, for a first step `step`.
    ///
    /// ```
    /// use mcr2::fit::StepSchedule;
    /// let cosine = StepSchedule::Cosine { final_fraction: 0.1 };
    /// assert_eq!(cosine.step_at(0.5, 0, 100), 0.5);
    /// assert!((cosine.step_at(0.5, 50, 100) - 0.275).abs() < 1e-12);
    /// assert_eq!(StepSchedule::Constant.step_at(0.5, 99, 100), 0.5);
    /// ```
    pub fn step_at(&self, step: f64, t: usize, total: usize) -> f64 {
        match *self {
            Self::Constant => step,
            Self::Cosine { final_fraction: f } => {
                let progress = t as f64 / total.max(1) as f64;
                step * (f + (1.0 - f) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
            }
        }
    }
}

/// One iteration as the observer sees it (values before the step).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Progress {
    /// Iteration index, from 0.
    pub iteration: usize,
    /// ΔR = R − Rc.
    pub delta_r: f64,
    /// R.
    pub r: f64,
    /// Rc.
    pub rc: f64,
    /// The maximized objective (ΔR, or ΔR − (λ/2)‖Z‖² for the regularized problem).
    pub objective: f64,
    /// Norm of the gradient that the step follows.
    pub grad_norm: f64,
}

impl Progress {
    fn of<T: Float>(
        iteration: usize,
        rr: &crate::RateReduction<T>,
        objective: f64,
        grad_norm: f64,
    ) -> Self {
        Self {
            iteration,
            delta_r: rr.delta_r.as_f64(),
            r: rr.r.as_f64(),
            rc: rr.rc.as_f64(),
            objective,
            grad_norm,
        }
    }
}

/// How a fit ended (see [`Report`]).
pub type FitReport = Report<Progress>;

fn normalize_rows<T: Float>(z: &mut Array2<T>) -> Vec<T> {
    z.rows_mut()
        .into_iter()
        .map(crate::kernels::normalize_row)
        .collect()
}

/// Removes from every row of `g` its component along the (unit) row of `z`.
fn tangent<T: Float>(g: &mut Array2<T>, z: &Array2<T>) {
    for (mut gi, zi) in g.rows_mut().into_iter().zip(z.rows()) {
        let c = gi.dot(&zi);
        gi.scaled_add(-c, &zi);
    }
}

fn fro<T: Float>(a: &Array2<T>) -> f64 {
    a.iter()
        .map(|v| v.as_f64() * v.as_f64())
        .sum::<f64>()
        .sqrt()
}

fn check_inputs<T: Float>(z: &ArrayRef2<T>, m: &Membership<T>, config: &FitConfig) -> Result<()> {
    config.check()?;
    crate::validate::matrix("Z", z)?;
    m.check_samples(z.nrows())
}

/// One gradient-ascent problem: the state it moves (features or weights), how to evaluate
/// it, and how to step it.
trait Ascent {
    /// The iteration's progress at the current state, and the ascent direction.
    fn evaluate(&mut self, iteration: usize) -> Result<Progress>;
    /// Moves the state a step of `size` along the direction of the last evaluation.
    fn step(&mut self, size: f64);
}

/// The loop shared by the fits: evaluate, report, stop on convergence (gradient norm ≤
/// tolerance), on the observer's request or at the budget, else step.
fn ascend<T: Float, R: Flow>(
    problem: &mut impl Ascent,
    config: &FitConfig,
    observer: &mut impl FnMut(&Progress) -> R,
) -> Result<FitReport> {
    let tolerance = config.tolerance_for::<T>();
    let mut history = Vec::new();
    for it in 0..config.max_iterations {
        let p = problem.evaluate(it)?;
        let flow = observer(&p).flow();
        history.push(p);
        let stop = if p.grad_norm <= tolerance {
            Some(Stop::Converged)
        } else if flow.is_break() {
            Some(Stop::Observer)
        } else {
            None
        };
        if let Some(stop) = stop {
            return Ok(Report {
                iterations: it + 1,
                stop,
                history,
            });
        }
        problem.step(
            config
                .schedule
                .step_at(config.step, it, config.max_iterations),
        );
    }
    Ok(Report {
        iterations: config.max_iterations,
        stop: Stop::MaxIterations,
        history,
    })
}

/// Features on the sphere (see [`ascend_on_sphere`]).
struct Sphere<'m, T: Float> {
    z: Array2<T>,
    grad: Array2<T>,
    membership: &'m Membership<T>,
    eps: Precision,
}

impl<T: Float> Ascent for Sphere<'_, T> {
    fn evaluate(&mut self, it: usize) -> Result<Progress> {
        let (rr, mut g) = rate_reduction_with_grad(&self.z, self.membership, self.eps)?;
        tangent(&mut g, &self.z);
        let p = Progress::of(it, &rr, rr.delta_r.as_f64(), fro(&g));
        self.grad = g;
        Ok(p)
    }

    fn step(&mut self, size: f64) {
        self.z.scaled_add(T::from_f64(size), &self.grad);
        normalize_rows(&mut self.z);
    }
}

/// Features with the ‖Z‖² penalty (see [`ascend_regularized`]).
struct Regularized<'m, T: Float> {
    z: Array2<T>,
    grad: Array2<T>,
    membership: &'m Membership<T>,
    eps: Precision,
    lambda: f64,
}

impl<T: Float> Ascent for Regularized<'_, T> {
    fn evaluate(&mut self, it: usize) -> Result<Progress> {
        let (rr, mut g) = rate_reduction_with_grad(&self.z, self.membership, self.eps)?;
        g.scaled_add(-T::from_f64(self.lambda), &self.z);
        let sq: f64 = self.z.iter().map(|v| v.as_f64() * v.as_f64()).sum();
        let objective = rr.delta_r.as_f64() - 0.5 * self.lambda * sq;
        let p = Progress::of(it, &rr, objective, fro(&g));
        self.grad = g;
        Ok(p)
    }

    fn step(&mut self, size: f64) {
        self.z.scaled_add(T::from_f64(size), &self.grad);
    }
}

/// The weights of a linear map (see [`LinearMap::fit`]).
struct Weights<'a, T: Float> {
    w: Array2<T>,
    grad: Array2<T>,
    x: &'a ArrayRef2<T>,
    membership: &'a Membership<T>,
    eps: Precision,
}

impl<T: Float> Ascent for Weights<'_, T> {
    fn evaluate(&mut self, it: usize) -> Result<Progress> {
        let mut z = self.x.dot(&self.w);
        let norms = normalize_rows(&mut z);
        if let Some(i) = norms.iter().position(|n| *n <= T::zero()) {
            return Err(Error::InvalidParameter {
                name: "X W",
                value: format!("row {i} is zero"),
                reason: "every sample must have a nonzero feature vector",
            });
        }
        let (rr, mut g) = rate_reduction_with_grad(&z, self.membership, self.eps)?;
        tangent(&mut g, &z);
        for (mut gi, &ni) in g.rows_mut().into_iter().zip(&norms) {
            gi.mapv_inplace(|v| v / ni);
        }
        self.grad = self.x.t().dot(&g);
        Ok(Progress::of(it, &rr, rr.delta_r.as_f64(), fro(&self.grad)))
    }

    fn step(&mut self, size: f64) {
        self.w.scaled_add(T::from_f64(size), &self.grad);
    }
}

/// Projected gradient ascent on ΔR over the features, each row kept on the unit sphere:
/// `Z ← normalize(Z + step · P_T(∂ΔR/∂Z))` with `P_T` the projection on the sphere's tangent
/// spaces. Returns the final features and the report.
pub fn ascend_on_sphere<T: Float, R: Flow>(
    z0: &ArrayRef2<T>,
    membership: &Membership<T>,
    config: &FitConfig,
    mut observer: impl FnMut(&Progress) -> R,
) -> Result<(Array2<T>, FitReport)> {
    check_inputs(z0, membership, config)?;
    let mut z = z0.to_owned();
    normalize_rows(&mut z);
    let mut problem = Sphere {
        grad: Array2::zeros(z.dim()),
        z,
        membership,
        eps: config.eps,
    };
    let report = ascend::<T, _>(&mut problem, config, &mut observer)?;
    Ok((problem.z, report))
}

/// Gradient ascent on `R(Z) − Rc(Z) − (λ/2)‖Z‖²_F` (no normalization):
/// `Z ← Z + step · (∂ΔR/∂Z − λ Z)`.
pub fn ascend_regularized<T: Float, R: Flow>(
    z0: &ArrayRef2<T>,
    membership: &Membership<T>,
    lambda: f64,
    config: &FitConfig,
    mut observer: impl FnMut(&Progress) -> R,
) -> Result<(Array2<T>, FitReport)> {
    check_inputs(z0, membership, config)?;
    crate::validate::positive("lambda", lambda)?;
    let z = z0.to_owned();
    let mut problem = Regularized {
        grad: Array2::zeros(z.dim()),
        z,
        membership,
        eps: config.eps,
        lambda,
    };
    let report = ascend::<T, _>(&mut problem, config, &mut observer)?;
    Ok((problem.z, report))
}

/// A learned linear feature map `x ↦ normalize(x W)`, W: input dim × feature dim.
///
/// ```
/// use mcr2::data::{SubspaceMixtureConfig, mixture_of_subspaces};
/// use mcr2::fit::{FitConfig, LinearMap, Progress};
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// use mcr2::{Membership, Precision};
/// let mut rng = StdRng::seed_from_u64(0);
/// let mix = mixture_of_subspaces::<f64, _>(&SubspaceMixtureConfig::new(10, 2, 2, 30, 0.05), &mut rng)?;
/// let mut config = FitConfig::new(Precision::from_eps_sq(0.5)?);
/// config.max_iterations = 20;
/// let labels = Membership::from(mix.labels.clone());
/// let (map, _report) = LinearMap::fit(&mix.samples, &labels, 4, &config, &mut rng, |_: &Progress| ())?;
/// assert_eq!(map.transform(&mix.samples)?.dim(), (60, 4)); // unit-norm features in R⁴
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        try_from = "LinearMapRepr<T>",
        into = "LinearMapRepr<T>",
        bound(
            serialize = "T: Float + serde::Serialize",
            deserialize = "T: Float + serde::Deserialize<'de>"
        )
    )
)]
pub struct LinearMap<T> {
    w: Array2<T>,
}

impl<T: Float> LinearMap<T> {
    /// From given weights (input dim × feature dim).
    pub fn from_weights(w: Array2<T>) -> Result<Self> {
        crate::validate::matrix("W", &w)?;
        Ok(Self { w })
    }

    /// The weights W.
    pub fn weights(&self) -> &Array2<T> {
        &self.w
    }

    /// Features `normalize(x W)` (rows of x are samples).
    pub fn transform(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("X", x, self.w.nrows())?;
        let mut z = x.dot(&self.w);
        crate::validate::finite_output("X W", &z)?;
        normalize_rows(&mut z);
        Ok(z)
    }

    /// Learns W (`x.ncols()` × `out_dim`, Gaussian initialization scaled by 1/√in) by gradient
    /// ascent on ΔR(normalize(X W)): with F = X W and G = ∂ΔR/∂Z,
    /// `∂ΔR/∂W = Xᵀ [ (G_i − (G_i·z_i) z_i) / ‖F_i‖ ]_i`.
    pub fn fit<R: Rng + ?Sized, F: Flow>(
        x: &ArrayRef2<T>,
        membership: &Membership<T>,
        out_dim: usize,
        config: &FitConfig,
        rng: &mut R,
        mut observer: impl FnMut(&Progress) -> F,
    ) -> Result<(Self, FitReport)> {
        check_inputs(x, membership, config)?;
        crate::validate::at_least_one("out_dim", out_dim)?;
        let d_in = x.ncols();
        crate::validate::elements_of::<T>("linear map weights", &[d_in, out_dim])?;
        let scale = 1.0 / (d_in as f64).sqrt();
        let w = Array2::<T>::from_shape_simple_fn((d_in, out_dim), || {
            T::from_f64(scale * rng.sample::<f64, _>(StandardNormal))
        });
        let mut problem = Weights {
            grad: Array2::zeros(w.dim()),
            w,
            x,
            membership,
            eps: config.eps,
        };
        let report = ascend::<T, _>(&mut problem, config, &mut observer)?;
        Ok((Self { w: problem.w }, report))
    }
}

/// Serialized form of a [`LinearMap`], read back through [`LinearMap::from_weights`].
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct LinearMapRepr<T> {
    w: Array2<T>,
}

#[cfg(feature = "serde")]
impl<T: Float> TryFrom<LinearMapRepr<T>> for LinearMap<T> {
    type Error = Error;
    fn try_from(r: LinearMapRepr<T>) -> Result<Self> {
        Self::from_weights(r.w)
    }
}

#[cfg(feature = "serde")]
impl<T: Float> From<LinearMap<T>> for LinearMapRepr<T> {
    fn from(m: LinearMap<T>) -> Self {
        LinearMapRepr { w: m.w }
    }
}
