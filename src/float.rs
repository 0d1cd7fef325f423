//! The crate's float trait: every public function is generic over `f32` and `f64`.

use std::fmt::{Debug, Display, LowerExp};
use std::iter::Sum;

use ndarray::{LinalgScalar, ScalarOperand};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A real floating-point scalar this crate computes with: `f32` or `f64`.
///
/// The trait is sealed. Its supertraits give the usual float operations
/// (`ln`, `sqrt`, …) and ndarray arithmetic; the linear algebra behind it is private.
pub trait Float:
    num_traits::Float
    + num_traits::NumAssign
    + LinalgScalar
    + ScalarOperand
    + Sum
    + Default
    + Debug
    + Display
    + LowerExp
    + Send
    + Sync
    + 'static
    + sealed::Sealed
    + crate::linalg::Backend
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Convert from `f64` (rounding to nearest for `f32`).
    fn from_f64(x: f64) -> Self;
    /// Convert to `f64` (exact).
    fn as_f64(self) -> f64;
    /// Convert a count or size.
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}
