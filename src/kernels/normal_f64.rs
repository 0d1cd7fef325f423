//! The standard normal distribution Φ over f64 slices, in a form the compiler vectorizes, for
//! the f64 GELU kernels.
//!
//! W. J. Cody, *Rational Chebyshev approximations for the error function*, Math. Comp. 23
//! (1969) 631–638, gives near-minimax rational functions, accurate to about 18 significant
//! digits in exact arithmetic, on three intervals of `z ≥ 0`:
//!
//! - `z ≤ 0.46875`: `erf(z) = z·A(z²)/B(z²)`, degrees 4/4;
//! - `0.46875 < z ≤ 4`: `erfc(z) = exp(−z²)·C(z)/D(z)`, degrees 8/8;
//! - `z > 4`: `erfc(z) = exp(−z²)/z·(1/√π − r·P(r)/Q(r))`, `r = 1/z²`, degrees 5/5.
//!
//! With `z = |x|/√2`, `Φ(x) = ½(1 ± erf(z))` on the first interval and `1 − ½ erfc(z)`
//! (x ≥ 0) or `½ erfc(z)` (x < 0) beyond, so that the negative tail keeps its relative
//! accuracy. Every entry evaluates the three rational functions and divides once, after
//! choosing its numerator and denominator (the tail's `r = 1/z²` is the other division). It
//! computes `exp(−z²)` with the rounding of `z²` corrected (`z² = h + l` exactly,
//! `exp(−z²) = exp(−h)·(1 − l)`). The same `exp(−z²) = exp(−x²/2)` is
//! the density's, `φ(x) = exp(−x²/2)/√(2π)`, which GELU′ reuses.

// the coefficients as Cody printed them (18 digits); the compiler rounds them to f64
#![allow(clippy::excessive_precision)]

use super::exp_in_place;

/// Cody's `A` (erf on the first interval), in `z²`, highest degree first.
const ERF_NUM: [f64; 5] = [
    1.857_777_061_846_031_53e-1,
    3.161_123_743_870_565_60,
    1.138_641_541_510_501_56e2,
    3.774_852_376_853_020_21e2,
    3.209_377_589_138_469_47e3,
];
/// Cody's `B`, monic, in `z²`, highest degree first.
const ERF_DEN: [f64; 5] = [
    1.0,
    2.360_129_095_234_412_09e1,
    2.440_246_379_344_441_73e2,
    1.282_616_526_077_372_28e3,
    2.844_236_833_439_170_62e3,
];
/// Cody's `C` (erfc·exp(z²) on the second interval), in `z`, highest degree first.
const MID_NUM: [f64; 9] = [
    2.153_115_354_744_038_46e-8,
    5.641_884_969_886_700_89e-1,
    8.883_149_794_388_375_94,
    6.611_919_063_714_162_95e1,
    2.986_351_381_974_001_31e2,
    8.819_522_212_417_690_90e2,
    1.712_047_612_634_070_58e3,
    2.051_078_377_826_071_47e3,
    1.230_339_354_797_997_25e3,
];
/// Cody's `D`, monic, in `z`, highest degree first.
const MID_DEN: [f64; 9] = [
    1.0,
    1.574_492_611_070_983_47e1,
    1.176_939_508_913_124_99e2,
    5.371_811_018_620_098_58e2,
    1.621_389_574_566_690_19e3,
    3.290_799_235_733_459_63e3,
    4.362_619_090_143_247_16e3,
    3.439_367_674_143_721_64e3,
    1.230_339_354_803_749_42e3,
];
/// Cody's `P` (the asymptotic correction on the third interval), in `r = 1/z²`, highest
/// degree first.
const TAIL_NUM: [f64; 6] = [
    1.631_538_713_730_209_78e-2,
    3.053_266_349_612_323_44e-1,
    3.603_448_999_498_044_39e-1,
    1.257_817_261_112_292_46e-1,
    1.608_378_514_874_227_66e-2,
    6.587_491_615_298_378_03e-4,
];
/// Cody's `Q`, monic, in `r`, highest degree first.
const TAIL_DEN: [f64; 6] = [
    1.0,
    2.568_520_192_289_822_42,
    1.872_952_849_923_460_47,
    5.279_051_029_514_284_12e-1,
    6.051_834_131_244_131_91e-2,
    2.335_204_976_268_691_85e-3,
];

/// Where the first interval ends.
const SMALL: f64 = 0.468_75;

/// `1/√π`.
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_286_95;

/// Entries per pass (the scratch buffers live on the stack).
pub(super) const CHUNK: usize = 64;

/// A polynomial by Horner's rule, coefficients highest degree first.
#[inline(always)]
fn horner<const N: usize>(c: &[f64; N], t: f64) -> f64 {
    let mut p = c[0];
    for &a in &c[1..] {
        p = p.mul_add(t, a);
    }
    p
}

/// `Φ(x)` into `cdf` and `exp(−x²/2)` into `gauss` for up to [`CHUNK`] values (NaN gives
/// NaN, ±∞ give 1 and 0; `gauss` is 0 beyond |x| ≈ 37 and for NaN).
#[inline(always)]
pub(super) fn normal_cdf_f64(x: &[f64], cdf: &mut [f64], gauss: &mut [f64]) {
    let mut low = [0.0f64; CHUNK];
    for ((&v, g), l) in x.iter().zip(gauss.iter_mut()).zip(low.iter_mut()) {
        let z = v.abs() * std::f64::consts::FRAC_1_SQRT_2;
        let h = z * z;
        // exp(−h) is 0 from z ≈ 26.3 on (and ∞ or NaN would make l NaN)
        *l = if z < 27.0 { z.mul_add(z, -h) } else { 0.0 };
        *g = -h;
    }
    exp_in_place::<f64>(gauss);
    for (((&v, c), g), &l) in x.iter().zip(cdf.iter_mut()).zip(gauss.iter_mut()).zip(&low) {
        let z = v.abs() * std::f64::consts::FRAC_1_SQRT_2;
        *g *= 1.0 - l;
        let y = z * z;
        let (small_num, small_den) = (z * horner(&ERF_NUM, y), horner(&ERF_DEN, y));
        let (mid_num, mid_den) = (horner(&MID_NUM, z), horner(&MID_DEN, z));
        // the tail at z ≥ 4 only (elsewhere unused; this keeps it finite)
        let zt = z.max(4.0);
        let r = 1.0 / (zt * zt);
        let (p, q) = (horner(&TAIL_NUM, r), horner(&TAIL_DEN, r));
        let (tail_num, tail_den) = (q.mul_add(FRAC_1_SQRT_PI, -r * p), zt * q);
        let (num, den) = if z <= SMALL {
            (small_num, small_den)
        } else if z <= 4.0 {
            (mid_num, mid_den)
        } else {
            (tail_num, tail_den)
        };
        let ratio = num / den;
        *c = if v.is_nan() {
            v
        } else if z <= SMALL {
            // ratio = erf(z)
            0.5 + 0.5 * if v >= 0.0 { ratio } else { -ratio }
        } else {
            // ratio = erfc(z)·exp(z²)
            let half_erfc = 0.5 * *g * ratio;
            if v >= 0.0 { 1.0 - half_erfc } else { half_erfc }
        };
    }
}
