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
    + crate::pool::Pooled
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
    /// `x ← exp(x)` for every finite entry of a slice, to within a few ulp, in a form the
    /// compiler vectorizes (used by the attention softmax, where the arguments are ≤ 0).
    /// Arguments below −75 (f32) or −690 (f64) give exactly 0, so that softmax weights never
    /// become subnormal numbers (whose arithmetic is very slow); their true values are below
    /// 1e-32 (1e-299) and do not change a softmax at the type's precision.
    #[doc(hidden)]
    fn exp_in_place(xs: &mut [Self]);
}

/// `softmax` of a short slice in place (max-shifted).
pub(crate) fn softmax_in_place<T: Float>(v: &mut [T]) {
    let max = v.iter().fold(T::neg_infinity(), |m, &x| m.max(x));
    let mut sum = T::zero();
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

// exp(x) = 2^k · e^r with k = round(x / ln 2) found by the add-a-magic-number trick (no
// floor instruction needed), r = x − k ln 2 in two parts (Cody–Waite), |r| ≤ ln 2 / 2, and a
// Taylor polynomial of e^r whose truncation error is below the type's rounding error.
macro_rules! exp_taylor {
    ($r:expr, $($c:expr),+) => {{
        let r = $r;
        let mut p = 0.0;
        $( p = p * r + $c; )+
        p
    }};
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn exp_in_place(xs: &mut [f32]) {
        const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        for x in xs.iter_mut() {
            let keep = *x >= -75.0;
            // below −75 the result is 0; clamping there keeps every intermediate normal
            let v = x.clamp(-75.0, 88.0);
            let t = v * std::f32::consts::LOG2_E + MAGIC;
            let k = t - MAGIC;
            let r = v - k * LN2_HI - k * LN2_LO;
            let p: f32 = exp_taylor!(
                r,
                1.0 / 5040.0,
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
                1.0,
                1.0
            );
            let ki = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
            let e = p * f32::from_bits(((ki + 127) as u32) << 23);
            *x = if keep { e } else { 0.0 };
        }
    }
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
    #[inline(always)]
    fn exp_in_place(xs: &mut [f64]) {
        const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 · 2⁵²
        const LN2_HI: f64 = 0.693_147_180_369_123_8;
        const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
        for x in xs.iter_mut() {
            let keep = *x >= -690.0;
            let v = x.clamp(-690.0, 709.0);
            let t = v * std::f64::consts::LOG2_E + MAGIC;
            let k = t - MAGIC;
            let r = v - k * LN2_HI - k * LN2_LO;
            let p: f64 = exp_taylor!(
                r,
                1.0 / 6_227_020_800.0,
                1.0 / 479_001_600.0,
                1.0 / 39_916_800.0,
                1.0 / 3_628_800.0,
                1.0 / 362_880.0,
                1.0 / 40_320.0,
                1.0 / 5040.0,
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
                1.0,
                1.0
            );
            let ki = (t.to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64);
            let e = p * f64::from_bits(((ki + 1023) as u64) << 52);
            *x = if keep { e } else { 0.0 };
        }
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::Float;

    #[test]
    fn fast_exp_is_accurate() {
        let xs64: Vec<f64> = (0..20001).map(|i| -690.0 + i as f64 * 0.0695).collect();
        let mut e = xs64.clone();
        f64::exp_in_place(&mut e);
        let worst = xs64
            .iter()
            .zip(&e)
            .map(|(x, y)| ((y - x.exp()) / x.exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 4.0 * f64::EPSILON, "f64: {worst:e}");
        let xs32: Vec<f32> = (0..20001).map(|i| -75.0 + i as f32 * 0.008).collect();
        let mut e = xs32.clone();
        f32::exp_in_place(&mut e);
        let worst = xs32
            .iter()
            .zip(&e)
            .map(|(x, y)| ((*y as f64 - (*x as f64).exp()) / (*x as f64).exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 4.0 * f32::EPSILON as f64, "f32: {worst:e}");
        let mut tiny = [-75.5f32, -1000.0];
        f32::exp_in_place(&mut tiny);
        assert_eq!(tiny, [0.0, 0.0]);
        let mut tiny = [-690.5f64, -1e6];
        f64::exp_in_place(&mut tiny);
        assert_eq!(tiny, [0.0, 0.0]);
    }
}
