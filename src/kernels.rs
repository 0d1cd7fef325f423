//! Private element-wise kernels: lane sums and maxima, the vectorized exponential, softmax
//! and GELU.

use crate::Float;

mod gelu;
mod normal_f64;

pub use gelu::Gelu;
pub(crate) use gelu::{gelu_in_place, mul_gelu_grad};

/// The vectorized exponential of one float type (implemented on [`crate::float::Body`]).
pub trait Exp<S> {
    /// `x ← exp(x)` for every finite entry of a slice, to within a few ulp, in a form the
    /// compiler vectorizes (used by the attention softmax, where the arguments are ≤ 0).
    /// Arguments below −75 (f32) or −690 (f64) give exactly 0, so that softmax weights never
    /// become subnormal numbers (whose arithmetic is very slow); their true values are below
    /// 1e-32 (1e-299) and do not change a softmax at the type's precision.
    ///
    /// `x ← exp(x − shift)`, the subtraction rounded as written (the softmax's max shift,
    /// folded into the same pass). The polynomial is evaluated with fused multiply-adds
    /// (`mul_add`, one rounding each): on processors with FMA, which every vectorized path
    /// dispatches to, that is one instruction; elsewhere it is a correctly rounded library
    /// call, so the result is the same on every machine.
    fn exp_shifted_in_place(xs: &mut [S], shift: S);
}

/// `x ← exp(x)` for a slice (see [`Exp::exp_shifted_in_place`]).
#[inline(always)]
pub(crate) fn exp_in_place<T: Float>(xs: &mut [T]) {
    <T::Kernels as Exp<T>>::exp_shifted_in_place(xs, T::zero())
}

/// `x ← exp(x − shift)` for a slice (see [`Exp::exp_shifted_in_place`]).
#[inline(always)]
pub(crate) fn exp_shifted_in_place<T: Float>(xs: &mut [T], shift: T) {
    <T::Kernels as Exp<T>>::exp_shifted_in_place(xs, shift)
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

/// Sum with eight independent accumulators (vectorizes without reassociation flags).
#[inline(always)]
pub(crate) fn sum8<T: Float>(xs: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += v;
    }
    s
}

/// Maximum with eight independent lanes.
#[inline(always)]
pub(crate) fn max8<T: Float>(xs: &[T]) -> T {
    let mut acc = [T::neg_infinity(); 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = acc
        .iter()
        .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
    for &v in rest {
        m = if v > m { v } else { m };
    }
    m
}

/// `softmax` of each row of length `n` of a contiguous row-major matrix.
#[inline(always)]
fn softmax_rows<T: Float>(a: &mut [T], n: usize) {
    for r in a.chunks_exact_mut(n) {
        let max = max8(r);
        exp_shifted_in_place(r, max);
        let inv = T::one() / sum8(r);
        for v in r.iter_mut() {
            *v *= inv;
        }
    }
}

/// Runs [`softmax_rows`] compiled for the widest vector instructions the processor has
/// (selected at run time; the portable build only assumes SSE2).
struct SoftmaxRows<'a, T> {
    a: &'a mut [T],
    n: usize,
}

impl<T: Float> pulp::WithSimd for SoftmaxRows<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        softmax_rows(self.a, self.n)
    }
}

/// Dot product with eight independent accumulators (vectorizes without reassociation flags).
#[inline(always)]
pub(crate) fn dot8<T: Float>(xs: &[T], ys: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let n = xs.len().min(ys.len());
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let (xc, yc) = (xs.chunks_exact(8), ys.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in xr.iter().zip(yr) {
        s += x * y;
    }
    s
}

/// The softmax's backward on each row of length `n` of two contiguous row-major matrices:
/// `g ← a ⊙ (g − ⟨g, a⟩)`, `a` a row of the softmax output and `g` the gradient at it.
#[inline(always)]
fn softmax_backward_rows<T: Float>(g: &mut [T], a: &[T], n: usize) {
    for (g, a) in g.chunks_exact_mut(n).zip(a.chunks_exact(n)) {
        let dot = dot8(g, a);
        for (g, &a) in g.iter_mut().zip(a) {
            *g = a * (*g - dot);
        }
    }
}

/// Runs [`softmax_backward_rows`] compiled for the widest vector instructions the processor
/// has (selected at run time).
struct SoftmaxBackwardRows<'a, T> {
    g: &'a mut [T],
    a: &'a [T],
    n: usize,
}

impl<T: Float> pulp::WithSimd for SoftmaxBackwardRows<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        softmax_backward_rows(self.g, self.a, self.n)
    }
}

/// The row-wise softmax's backward in place: with `a = softmax_rows(s)` and `g = ∂L/∂a`,
/// `g ← ∂L/∂s = a ⊙ (g − rowsum(g ⊙ a))` (any layouts of the same shape; contiguous rows
/// take the vectorized path).
pub(crate) fn softmax_backward_rows_in_place<T: Float>(
    mut g: ndarray::ArrayViewMut2<'_, T>,
    a: ndarray::ArrayView2<'_, T>,
) {
    debug_assert_eq!(g.dim(), a.dim());
    let n = g.ncols();
    match (g.as_slice_mut(), a.as_slice()) {
        (Some(g), Some(a)) => pulp::Arch::new().dispatch(SoftmaxBackwardRows { g, a, n }),
        _ => {
            for (mut gr, ar) in g.rows_mut().into_iter().zip(a.rows()) {
                let dot = gr.dot(&ar);
                ndarray::Zip::from(&mut gr)
                    .and(&ar)
                    .for_each(|g, &a| *g = a * (*g - dot));
            }
        }
    }
}

/// Scales `row` to unit norm and returns its norm `‖x‖` (0 for a zero row, left as is).
/// The row is divided by its largest magnitude first, so that rows whose squared norm
/// would overflow (or underflow) still come out as unit vectors; the returned norm is then
/// `+∞` only if ‖x‖ itself exceeds the type's range.
pub(crate) fn normalize_row<T: Float>(mut row: ndarray::ArrayViewMut1<'_, T>) -> T {
    let largest = row.iter().fold(T::zero(), |m, &v| m.max(v.abs()));
    if largest == T::zero() || !largest.is_finite() {
        return largest;
    }
    row.mapv_inplace(|v| v / largest);
    let scaled = row.dot(&row).sqrt();
    row.mapv_inplace(|v| v / scaled);
    largest * scaled
}

/// Row-wise softmax of a score matrix, in place (any layout; contiguous rows take the
/// vectorized path).
pub(crate) fn softmax_rows_in_place<T: Float>(mut a: ndarray::ArrayViewMut2<'_, T>) {
    let n = a.ncols();
    match a.as_slice_mut() {
        Some(flat) => pulp::Arch::new().dispatch(SoftmaxRows { a: flat, n }),
        None => {
            for mut row in a.rows_mut() {
                let max = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
                row.mapv_inplace(|v| (v - max).exp());
                let inv = T::one() / row.sum();
                row.mapv_inplace(|v| v * inv);
            }
        }
    }
}

/// `GELU(x) = x Φ(x) = ½ x (1 + erf(x/√2))`, the exact form PyTorch's `nn.GELU()` uses,
/// evaluated in `f64` with `libm::erf`. (The MLP applies it to matrices with vectorized
/// forms that agree to a few units in the last place of their type.)
pub fn gelu<T: Float>(x: T) -> T {
    let v = x.as_f64();
    // the limits: GELU(+∞) = +∞, GELU(−∞) = 0 (x Φ(x) would be −∞ · 0)
    if v == f64::NEG_INFINITY {
        return T::zero();
    }
    T::from_f64(0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)))
}

// exp(x) = 2^k · e^r with k = round(x / ln 2) found by the add-a-magic-number trick (no
// floor instruction needed), r = x − k ln 2 in two parts (Cody–Waite), |r| ≤ ln 2 / 2, and a
// Taylor polynomial of e^r whose truncation error is below the type's rounding error, in
// Horner's form with fused multiply-adds (half the dependent operations of a multiply and an
// add: on an Intel Xeon the f32 softmax of a 197 × 197 map took 34–46 µs against 62–67 with
// separate operations, AVX2 paths of a micro-benchmark).
macro_rules! exp_taylor {
    ($r:expr, $($c:expr),+) => {{
        let r = $r;
        let mut p = 0.0 * r;
        $( p = p.mul_add(r, $c); )+
        p
    }};
}

impl Exp<f32> for crate::float::Body<f32> {
    #[inline(always)]
    fn exp_shifted_in_place(xs: &mut [f32], shift: f32) {
        const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        for x in xs.iter_mut() {
            let x0 = *x - shift;
            let keep = x0 >= -75.0;
            // below −75 the result is 0; clamping there keeps every intermediate normal
            let v = x0.clamp(-75.0, 88.0);
            let t = v.mul_add(std::f32::consts::LOG2_E, MAGIC);
            let k = t - MAGIC;
            let r = (-k).mul_add(LN2_LO, (-k).mul_add(LN2_HI, v));
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
}

impl Exp<f64> for crate::float::Body<f64> {
    #[inline(always)]
    fn exp_shifted_in_place(xs: &mut [f64], shift: f64) {
        const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 · 2⁵²
        const LN2_HI: f64 = 0.693_147_180_369_123_8;
        const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
        for x in xs.iter_mut() {
            let x0 = *x - shift;
            let keep = x0 >= -690.0;
            let v = x0.clamp(-690.0, 709.0);
            let t = v.mul_add(std::f64::consts::LOG2_E, MAGIC);
            let k = t - MAGIC;
            let r = (-k).mul_add(LN2_LO, (-k).mul_add(LN2_HI, v));
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
}

#[cfg(test)]
mod tests {
    use super::exp_in_place;

    #[test]
    fn fast_exp_is_accurate() {
        let xs64: Vec<f64> = (0..20001).map(|i| -690.0 + i as f64 * 0.0695).collect();
        let mut e = xs64.clone();
        exp_in_place::<f64>(&mut e);
        let worst = xs64
            .iter()
            .zip(&e)
            .map(|(x, y)| ((y - x.exp()) / x.exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 4.0 * f64::EPSILON, "f64: {worst:e}");
        let xs32: Vec<f32> = (0..20001).map(|i| -75.0 + i as f32 * 0.008).collect();
        let mut e = xs32.clone();
        exp_in_place::<f32>(&mut e);
        let worst = xs32
            .iter()
            .zip(&e)
            .map(|(x, y)| ((*y as f64 - (*x as f64).exp()) / (*x as f64).exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 4.0 * f32::EPSILON as f64, "f32: {worst:e}");
        let mut tiny = [-75.5f32, -1000.0];
        exp_in_place::<f32>(&mut tiny);
        assert_eq!(tiny, [0.0, 0.0]);
        let mut tiny = [-690.5f64, -1e6];
        exp_in_place::<f64>(&mut tiny);
        assert_eq!(tiny, [0.0, 0.0]);
    }

    /// The softmax's backward against its definition: with `a = softmax(s)`, the
    /// Jacobian-vector product `∂L/∂s_j = Σ_i g_i (δ_ij a_i − a_i a_j)` (f64, rows of 197,
    /// not a multiple of the 8 lanes), in the contiguous and the strided path.
    #[test]
    fn softmax_backward_is_the_jacobian_product() {
        use ndarray::Array2;
        let n = 197;
        let mut s =
            Array2::<f64>::from_shape_fn((5, n), |(i, j)| ((i * 31 + j * 7) % 23) as f64 / 5.0);
        super::softmax_rows_in_place(s.view_mut());
        let a = s;
        let g = Array2::<f64>::from_shape_fn((5, n), |(i, j)| ((i * 13 + j * 3) % 17) as f64 - 8.0);
        let mut expected = Array2::<f64>::zeros((5, n));
        for r in 0..5 {
            for j in 0..n {
                expected[[r, j]] = (0..n)
                    .map(|i| {
                        g[[r, i]] * (if i == j { a[[r, i]] } else { 0.0 } - a[[r, i]] * a[[r, j]])
                    })
                    .sum();
            }
        }
        let mut fast = g.clone();
        super::softmax_backward_rows_in_place(fast.view_mut(), a.view());
        let mut strided = g.t().as_standard_layout().reversed_axes().to_owned();
        assert!(strided.as_slice().is_none());
        super::softmax_backward_rows_in_place(strided.view_mut(), a.view());
        for got in [&fast, &strided] {
            for (x, y) in got.iter().zip(&expected) {
                assert!((x - y).abs() <= 1e-14 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
        assert_eq!(super::dot8(&[1.0f64; 11], &[2.0; 11]), 22.0);
    }
}
