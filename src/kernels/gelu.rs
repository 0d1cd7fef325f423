//! The exact (erf) GELU and its derivative over slices, as the ToST MLP applies them.
//!
//! `GELU(x) = x Φ(x)`, `GELU'(x) = Φ(x) + x φ(x)`, Φ and φ the standard normal distribution
//! and density. A `libm::erf` call per entry (as the scalar [`super::gelu`] makes) takes
//! tens of nanoseconds, and an MLP of width 1536 on 32 × 197 tokens has 9.7 million entries;
//! both kernels use forms the compiler vectorizes instead. In `f64`, Φ comes from Cody's
//! rational approximations (`normal_f64`), within a few units in the last place. In `f32` it
//! is evaluated in `f64` as
//! `erfc(z) = t·exp(−z² + P(t))`, `t = 1/(1 + z/2)`, `P` the degree-9 polynomial of the
//! Chebyshev fit in Press, Teukolsky, Vetterling & Flannery, *Numerical Recipes* (2nd ed.,
//! §6.2, `erfcc`), whose relative error is below 1.2·10⁻⁷ for every z ≥ 0; then
//! `Φ(x) = 1 − ½ erfc(x/√2)` for x ≥ 0 and `½ erfc(|x|/√2)` below, so that the negative tail
//! keeps its relative accuracy. The results are within a few units in the last place of f32
//! of the exact values (test `f32_gelu_is_the_exact_gelu_to_a_few_ulp`).

use super::exp_in_place;
use super::normal_f64::{CHUNK, normal_cdf_f64};

/// The GELU kernels of one float type (implemented on [`crate::float::Body`]).
pub trait Gelu<S> {
    /// `x ← GELU(x)` for every entry (`GELU(−∞) = 0`, NaN stays NaN).
    fn gelu_in_place(xs: &mut [S]);
    /// `d ← d · GELU'(x)` entry by entry (`GELU'(+∞) = 1`, `GELU'(−∞) = 0`, NaN stays NaN).
    fn mul_gelu_grad(d: &mut [S], x: &[S]);
}

/// `x ← GELU(x)` for a slice (see [`Gelu::gelu_in_place`]).
#[inline]
pub(crate) fn gelu_in_place<T: crate::Float>(xs: &mut [T]) {
    <T::Kernels as Gelu<T>>::gelu_in_place(xs)
}

/// `d ← d · GELU'(x)` for two slices of the same length (see [`Gelu::mul_gelu_grad`]).
#[inline]
pub(crate) fn mul_gelu_grad<T: crate::Float>(d: &mut [T], x: &[T]) {
    debug_assert_eq!(d.len(), x.len());
    <T::Kernels as Gelu<T>>::mul_gelu_grad(d, x)
}

/// The coefficients of `P(t)` from the constant term up (Numerical Recipes, `erfcc`).
const ERFC_FIT: [f64; 10] = [
    -1.265_512_23,
    1.000_023_68,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_203_98,
    1.488_515_87,
    -0.822_152_23,
    0.170_872_77,
];

/// `Φ(x)` in f64 of up to [`CHUNK`] f32 values into `cdf`.
#[inline(always)]
fn normal_cdf(x: &[f32], cdf: &mut [f64]) {
    let mut t = [0.0f64; CHUNK];
    for ((&v, c), t) in x.iter().zip(cdf.iter_mut()).zip(t.iter_mut()) {
        let z = f64::from(v).abs() * std::f64::consts::FRAC_1_SQRT_2;
        let s = 1.0 / (1.0 + 0.5 * z);
        let mut p = ERFC_FIT[9];
        for &a in ERFC_FIT[..9].iter().rev() {
            p = p * s + a;
        }
        *c = p - z * z;
        *t = s;
    }
    exp_in_place::<f64>(cdf);
    for ((c, &s), &v) in cdf.iter_mut().zip(&t).zip(x) {
        let half_erfc = 0.5 * s * *c;
        *c = if v >= 0.0 { 1.0 - half_erfc } else { half_erfc };
    }
}

/// Φ of a chunk, in f64, for each float type: the fit above for f32, Cody's approximations
/// (`normal_f64`) for f64.
trait NormalCdf: crate::Float {
    /// `Φ(x)` into `cdf` for up to [`CHUNK`] values, and `exp(−x²/2)` into `gauss` when
    /// `with_gauss` (f64 fills it always: its Φ computes it on the way).
    fn normal_cdf(x: &[Self], cdf: &mut [f64], gauss: &mut [f64], with_gauss: bool);
}

impl NormalCdf for f32 {
    #[inline(always)]
    fn normal_cdf(x: &[f32], cdf: &mut [f64], gauss: &mut [f64], with_gauss: bool) {
        normal_cdf(x, cdf);
        if with_gauss {
            for (e, &v) in gauss.iter_mut().zip(x) {
                let v = f64::from(v);
                *e = -0.5 * v * v;
            }
            exp_in_place::<f64>(gauss);
        }
    }
}

impl NormalCdf for f64 {
    #[inline(always)]
    fn normal_cdf(x: &[f64], cdf: &mut [f64], gauss: &mut [f64], _: bool) {
        normal_cdf_f64(x, cdf, gauss);
    }
}

/// `x ← GELU(x)`, evaluated in f64.
#[inline(always)]
fn gelu_slice<T: NormalCdf>(xs: &mut [T]) {
    let (mut cdf, mut gauss) = ([0.0f64; CHUNK], [0.0f64; CHUNK]);
    for chunk in xs.chunks_mut(CHUNK) {
        let (cdf, gauss) = (&mut cdf[..chunk.len()], &mut gauss[..chunk.len()]);
        T::normal_cdf(chunk, cdf, gauss, false);
        for (x, &c) in chunk.iter_mut().zip(cdf.iter()) {
            // Φ = 0 far in the negative tail (and at −∞, where x·Φ would be NaN)
            *x = if c == 0.0 {
                T::zero()
            } else {
                T::from_f64(x.as_f64() * c)
            };
        }
    }
}

/// `d ← d · GELU'(x)`, evaluated in f64.
#[inline(always)]
fn mul_gelu_grad_slice<T: NormalCdf>(d: &mut [T], x: &[T]) {
    let (mut cdf, mut gauss) = ([0.0f64; CHUNK], [0.0f64; CHUNK]);
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    for (dc, xc) in d.chunks_mut(CHUNK).zip(x.chunks(CHUNK)) {
        let (cdf, gauss) = (&mut cdf[..xc.len()], &mut gauss[..xc.len()]);
        T::normal_cdf(xc, cdf, gauss, true);
        for (((d, &v), &c), &e) in dc.iter_mut().zip(xc).zip(cdf.iter()).zip(gauss.iter()) {
            let v = v.as_f64();
            let g = if v.is_infinite() {
                c
            } else {
                c + v * e * inv_sqrt_2pi
            };
            *d = T::from_f64(d.as_f64() * g);
        }
    }
}

/// Runs [`gelu_slice`] compiled for the widest vector instructions the processor has.
struct GeluKernel<'a, T>(&'a mut [T]);

impl<T: NormalCdf> pulp::WithSimd for GeluKernel<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        gelu_slice(self.0)
    }
}

/// Runs [`mul_gelu_grad_slice`] compiled for the widest vector instructions the processor
/// has.
struct MulGeluGradKernel<'a, T>(&'a mut [T], &'a [T]);

impl<T: NormalCdf> pulp::WithSimd for MulGeluGradKernel<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        mul_gelu_grad_slice(self.0, self.1)
    }
}

impl Gelu<f32> for crate::float::Body<f32> {
    fn gelu_in_place(xs: &mut [f32]) {
        pulp::Arch::new().dispatch(GeluKernel(xs))
    }

    fn mul_gelu_grad(d: &mut [f32], x: &[f32]) {
        pulp::Arch::new().dispatch(MulGeluGradKernel(d, x))
    }
}

impl Gelu<f64> for crate::float::Body<f64> {
    fn gelu_in_place(xs: &mut [f64]) {
        pulp::Arch::new().dispatch(GeluKernel(xs))
    }

    fn mul_gelu_grad(d: &mut [f64], x: &[f64]) {
        pulp::Arch::new().dispatch(MulGeluGradKernel(d, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against f64 `libm` on a dense grid over [−20, 20] and at the special values: GELU
    /// (as `½ x erfc(−x/√2)`) to 4 units of f32's rounding relative to the value, GELU' to 4
    /// units absolute (it crosses zero near x = −0.75).
    #[test]
    fn f32_gelu_is_the_exact_gelu_to_a_few_ulp() {
        let xs: Vec<f32> = (0..400_001).map(|i| -20.0 + i as f32 * 1e-4).collect();
        let mut g = xs.clone();
        gelu_in_place::<f32>(&mut g);
        let mut d = vec![1.0f32; xs.len()];
        mul_gelu_grad::<f32>(&mut d, &xs);
        let u = f64::from(f32::EPSILON);
        let (mut worst, mut worst_grad) = (0.0f64, 0.0f64);
        for ((&x, &y), &dy) in xs.iter().zip(&g).zip(&d) {
            // x Φ(x) through erfc: the erf form loses the negative tail to cancellation
            let v = f64::from(x);
            let want = 0.5 * v * libm::erfc(-v * std::f64::consts::FRAC_1_SQRT_2);
            if want.abs() > f64::from(f32::MIN_POSITIVE) {
                worst = worst.max((f64::from(y) - want).abs() / want.abs());
            }
            let want_grad = gelu_grad(f64::from(x));
            worst_grad = worst_grad.max((f64::from(dy) - want_grad).abs());
        }
        println!("f32 GELU: worst relative {worst:.2e}, GELU' worst absolute {worst_grad:.2e}");
        assert!(worst < 4.0 * u, "GELU: {worst:e}");
        assert!(worst_grad < 4.0 * u, "GELU': {worst_grad:e}");
        let mut special = [
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            -200.0,
        ];
        let xs = special;
        gelu_in_place::<f32>(&mut special);
        assert_eq!(special[..2], [f32::INFINITY, 0.0]);
        assert!(special[2].is_nan());
        assert_eq!(special[3..], [0.0, 0.0, 0.0]);
        let mut d = [2.0f32; 6];
        mul_gelu_grad::<f32>(&mut d, &xs);
        assert_eq!(d[..2], [2.0, 0.0]);
        assert!(d[2].is_nan());
        // GELU'(0) = ½, to the fit's accuracy
        assert!(
            d[3..5]
                .iter()
                .all(|&v| (v - 1.0).abs() < 4.0 * f32::EPSILON)
        );
        assert_eq!(d[5], 0.0);
    }

    /// The derivative of the exact GELU in f64 through `libm`: `Φ(x) + x φ(x)` with
    /// `Φ(x) = ½ erfc(−x/√2)` (1 at +∞, 0 at −∞).
    fn gelu_grad(v: f64) -> f64 {
        if v.is_infinite() {
            return if v > 0.0 { 1.0 } else { 0.0 };
        }
        let cdf = 0.5 * libm::erfc(-v * std::f64::consts::FRAC_1_SQRT_2);
        let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
        cdf + v * pdf
    }

    /// Against `libm` on a dense grid over [−40, 40], at the ends of Cody's intervals and at
    /// the special values: GELU (as `½ x erfc(−x/√2)`) relative to the value (below x = −37,
    /// where it is under 10⁻²⁹⁰, as 0), GELU' absolute (it crosses zero near x = −0.75), both
    /// within a few units of f64's rounding.
    #[test]
    fn f64_gelu_is_the_exact_gelu_to_a_few_ulp() {
        let mut xs: Vec<f64> = (0..800_001).map(|i| -40.0 + i as f64 * 1e-4).collect();
        for edge in [0.468_75, 4.0] {
            let x = edge * std::f64::consts::SQRT_2;
            for k in -3i32..=3 {
                let step = f64::EPSILON * x * f64::from(k);
                xs.extend([x + step, -x - step]);
            }
        }
        let mut g = xs.clone();
        gelu_in_place::<f64>(&mut g);
        let mut d = vec![1.0f64; xs.len()];
        mul_gelu_grad::<f64>(&mut d, &xs);
        let (mut worst, mut worst_grad) = (0.0f64, 0.0f64);
        for ((&v, &y), &dy) in xs.iter().zip(&g).zip(&d) {
            let want = 0.5 * v * libm::erfc(-v * std::f64::consts::FRAC_1_SQRT_2);
            // from x ≈ −37.1 on, exp(−x²/2) < 10⁻²⁹⁹ is flushed to 0 (see `exp_in_place`)
            if v > -37.0 {
                worst = worst.max((y - want).abs() / want.abs());
            } else {
                assert!(y.abs() <= 1e-290, "{v}: {y}");
            }
            worst_grad = worst_grad.max((dy - gelu_grad(v)).abs());
        }
        let u = f64::EPSILON;
        println!("f64 GELU: worst relative {worst:.2e}, GELU' worst absolute {worst_grad:.2e}");
        assert!(worst < 8.0 * u, "GELU: {worst:e}");
        assert!(worst_grad < 4.0 * u, "GELU': {worst_grad:e}");
        let mut special = [
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            0.0,
            -0.0,
            -200.0,
        ];
        let xs = special;
        gelu_in_place::<f64>(&mut special);
        assert_eq!(special[..2], [f64::INFINITY, 0.0]);
        assert!(special[2].is_nan());
        assert_eq!(special[3..], [0.0, 0.0, 0.0]);
        let mut d = [2.0f64; 6];
        mul_gelu_grad::<f64>(&mut d, &xs);
        assert_eq!(d[..2], [2.0, 0.0]);
        assert!(d[2].is_nan());
        assert_eq!(d[3..5], [1.0, 1.0]);
        assert_eq!(d[5], 0.0);
        // the slice kernels and the public scalar form agree
        for v in [-7.5, -1.0, -0.3, 0.2, 0.9, 3.0, 12.0] {
            let mut one = [v];
            gelu_in_place::<f64>(&mut one);
            assert!((one[0] - crate::kernels::gelu(v)).abs() <= 1e-15 * (1.0 + v.abs()));
        }
    }
}
