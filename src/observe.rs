//! Observers and reports of the iterative fits (feature ascent, ReduNet construction,
//! agglomerative segmentation): one report type, and observers that can stop a run.
//!
//! An observer is a closure called once per iteration with that iteration's progress. It
//! returns either `()` (keep going) or a [`ControlFlow`]: `ControlFlow::Break(())` stops the
//! run after the current iteration, and the result so far comes back with
//! [`Stop::Observer`]. The library never prints.
//!
//! ```
//! use std::ops::ControlFlow;
//! use mcr2::fit::{FitConfig, ascend_on_sphere};
//! use mcr2::observe::Stop;
//! use mcr2::{Membership, Precision};
//! let z = ndarray::Array2::from_shape_fn((8, 3), |(i, j)| ((i * 3 + j) % 5) as f64 + 0.5);
//! let m = Membership::hard(&[0, 0, 0, 0, 1, 1, 1, 1], 2)?;
//! let config = FitConfig::new(Precision::from_eps_sq(0.5)?);
//! // stop after the third iteration
//! let (_, report) = ascend_on_sphere(&z, &m, &config, |p| {
//!     if p.iteration == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
//! })?;
//! assert_eq!((report.iterations, report.stop), (3, Stop::Observer));
//! // an observer that returns nothing never stops a run
//! let (_, report) = ascend_on_sphere(&z, &m, &config, |_| {})?;
//! assert_ne!(report.stop, Stop::Observer);
//! # Ok::<(), mcr2::Error>(())
//! ```

use std::ops::ControlFlow;

/// Why an iterative fit stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Stop {
    /// The stopping criterion was met (gradient norm below the tolerance; for ALC, no merge
    /// lowers the coding length).
    Converged,
    /// The iteration budget (or the configured number of layers) was used up.
    MaxIterations,
    /// The observer returned `ControlFlow::Break(())`.
    Observer,
}

/// How an iterative fit ended: iterations run, why it stopped, and every iteration's
/// progress as the observer saw it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Report<P> {
    /// Iterations run.
    pub iterations: usize,
    /// Why the run stopped.
    pub stop: Stop,
    /// Every iteration's progress.
    pub history: Vec<P>,
}

impl<P> Report<P> {
    /// Whether the stopping criterion was met.
    pub fn converged(&self) -> bool {
        self.stop == Stop::Converged
    }
}

/// What an observer may return: `()` (continue) or a [`ControlFlow`].
pub trait Flow {
    /// As a [`ControlFlow`].
    fn flow(self) -> ControlFlow<()>;
}

impl Flow for () {
    fn flow(self) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

impl Flow for ControlFlow<()> {
    fn flow(self) -> ControlFlow<()> {
        self
    }
}
