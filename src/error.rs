//! The crate's one error type.

/// Everything that can go wrong in this crate. Every public function returns
/// [`Result<T>`](crate::Result); no panic is reachable from the public API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input matrix has no rows or no columns.
    #[error("{what} is empty (shape {rows}×{cols}); at least one row and one column are needed")]
    Empty {
        /// Which argument.
        what: &'static str,
        /// Its number of rows.
        rows: usize,
        /// Its number of columns.
        cols: usize,
    },
    /// An input holds NaN or ±∞.
    #[error("{what} has a non-finite value at row {row}, column {col}")]
    NonFinite {
        /// Which argument.
        what: &'static str,
        /// Row of the first non-finite entry.
        row: usize,
        /// Column of the first non-finite entry.
        col: usize,
    },
    /// Two arguments disagree on a dimension.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which argument.
        what: &'static str,
        /// What was expected, e.g. `"200 rows"`.
        expected: String,
        /// What was given.
        got: String,
    },
    /// The precision ε (or ε²) is not a finite positive number.
    #[error("invalid precision: {name} = {value} (must be finite and > 0)")]
    InvalidPrecision {
        /// `"eps"` or `"eps_sq"`.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A hard label is not smaller than the number of classes.
    #[error("label {label} of sample {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// Index of the sample.
        index: usize,
        /// The label given.
        label: usize,
        /// The number of classes.
        classes: usize,
    },
    /// A membership is malformed (no classes, negative weights, rows not summing to 1, …).
    #[error("invalid membership: {0}")]
    InvalidMembership(String),
    /// A parameter is outside its valid range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// The value given, as text.
        value: String,
        /// What is required.
        reason: &'static str,
    },
    /// A matrix that must be symmetric positive definite could not be factored.
    #[error(
        "Cholesky factorization of {what} failed at pivot {pivot}: not numerically positive definite"
    )]
    Factorization {
        /// Which matrix.
        what: &'static str,
        /// Index of the failing pivot.
        pivot: usize,
    },
    /// A weight file could not be read (not a safetensors file, or truncated).
    #[error("malformed weight file: {0}")]
    MalformedFile(String),
    /// A weight file lacks a tensor, or holds one of the wrong shape or dtype.
    #[error("weight tensor `{name}`: {reason}")]
    InvalidWeights {
        /// Tensor name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A class with no samples (or zero total membership) where every class needs some.
    #[error("class {class} has no samples")]
    EmptyClass {
        /// The empty class.
        class: usize,
    },
    /// The arrays a call needs would exceed the memory budget (see
    /// [`set_memory_budget`](crate::set_memory_budget)), or their size overflows.
    #[error("{what} is too large: {} bytes needed, the memory budget is {budget} bytes", .bytes.map_or("more than usize::MAX".to_string(), |b| b.to_string()))]
    TooLarge {
        /// What would have been allocated.
        what: &'static str,
        /// Bytes needed (`None`: more than `usize::MAX`).
        bytes: Option<usize>,
        /// The budget in force.
        budget: usize,
    },
    /// A log-determinant `logdet(I + a·G)` whose scale is beyond the range where it can be
    /// computed to the crate's accuracy (see the [crate docs](crate#reliability)): the data's
    /// norm or `1/ε²` is too large, or `a·G` overflows.
    #[error(
        "{what}: the scale a·tr(G) = {scale:e} is beyond {limit:e}, past which the log-det loses accuracy; rescale the data or use a larger ε"
    )]
    Scale {
        /// Which matrix.
        what: &'static str,
        /// `a·tr(G)` or `a·σ_max²` (may be infinite).
        scale: f64,
        /// The largest scale that would be accepted for this matrix.
        limit: f64,
    },
    /// An iterative decomposition (eigen, SVD) did not converge.
    #[error("{0} did not converge")]
    NoConvergence(&'static str),
    /// A training step failed (a non-finite loss, gradient or parameter, or any other
    /// error): training stops and names the step.
    #[error("training step {step}: {source}")]
    TrainingStep {
        /// The step, from 0 over the whole run.
        step: usize,
        /// What went wrong.
        source: Box<Error>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
