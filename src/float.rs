//! The crate's float trait: every public function is generic over `f32` and `f64`.

use std::fmt::{Debug, Display, LowerExp};
use std::iter::Sum;
use std::marker::PhantomData;

use ndarray::{LinalgScalar, ScalarOperand};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The private computational body of `f32` and of `f64`: the linear-algebra backend, the
/// vectorized exponential and the scratch workspace. It is the [`Float::Kernels`] type; the
/// traits it implements live in private modules, so code outside this crate cannot call them.
#[doc(hidden)]
#[derive(Debug)]
pub struct Body<T>(PhantomData<T>);

/// A real floating-point scalar this crate computes with: `f32` or `f64`.
///
/// The trait is sealed. Its supertraits give the usual float operations
/// (`ln`, `sqrt`, …) and ndarray arithmetic. The linear algebra, the vectorized kernels and
/// the scratch workspace behind it are private: a downstream crate cannot reach them.
///
/// ```compile_fail
/// // the backend is not callable from outside the crate
/// fn product<T: mcr2::Float>(a: ndarray::ArrayView2<T>, c: ndarray::ArrayViewMut2<T>) {
///     T::Kernels::gemm(T::one(), a, a, false, c, false);
/// }
/// ```
/// ```compile_fail
/// fn exp<T: mcr2::Float>(xs: &mut [T]) {
///     T::Kernels::exp_shifted_in_place(xs, T::zero());
/// }
/// ```
/// ```compile_fail
/// fn pool<T: mcr2::Float>() {
///     let _ = T::Kernels::pool();
/// }
/// ```
/// ```compile_fail
/// fn also_not<T: mcr2::Float>(xs: &mut [T]) {
///     T::exp_shifted_in_place(xs, T::zero());
/// }
/// ```
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
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// The relative error a log-determinant `logdet(I + a·G)` may carry on the fast
    /// (Cholesky) route before this crate takes the SVD route instead: 10⁻¹² in `f64`,
    /// 10⁻⁶ in `f32`.
    const LOGDET_TOLERANCE: f64;
    /// The private body (see [`Body`]); its functions cannot be named outside the crate.
    #[doc(hidden)]
    type Kernels: crate::linalg::Backend<Self>
        + crate::kernels::Exp<Self>
        + crate::kernels::Gelu<Self>
        + crate::workspace::Pooled<Self>;
    /// Convert from `f64` (rounding to nearest for `f32`).
    fn from_f64(x: f64) -> Self;
    /// Convert to `f64` (exact).
    fn as_f64(self) -> f64;
    /// Convert a count or size.
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

macro_rules! impl_float {
    ($t:ty, $tolerance:expr) => {
        impl Float for $t {
            const NAME: &'static str = stringify!($t);
            const LOGDET_TOLERANCE: f64 = $tolerance;
            type Kernels = Body<$t>;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn as_f64(self) -> f64 {
                self as f64
            }
        }
    };
}

impl_float!(f32, 1e-6);
impl_float!(f64, 1e-12);
