//! Private linear-algebra backend: one small interface, two bodies.
//!
//! The default body is faer (pure Rust); with the `lapack` feature the same interface is
//! served by ndarray-linalg. Nothing of the backend appears in a public type.
//!
//! All matrices are ndarray values; symmetric matrices are read from, and written to,
//! their **lower** triangle only unless a function says otherwise.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};

use crate::Float;

pub(crate) mod faer_backend;
#[cfg(feature = "lapack")]
pub(crate) mod lapack_backend;

/// The backend interface, implemented for the private body type of `f32` and of `f64`
/// ([`crate::Float::Kernels`]). The trait lives in a private module: a downstream crate can
/// neither name it nor call its functions; inside the crate the free functions below call it.
pub trait Backend<S> {
    /// `out ← alpha·aᵀa (+ out if accumulate)`, lower triangle only (d × d for a: n × d).
    fn gram_cols(
        a: ArrayView2<S>,
        alpha: S,
        accumulate: bool,
        out: ArrayViewMut2<S>,
        parallel: bool,
    );
    /// `c ← alpha·a b (+ c if accumulate)`.
    fn gemm(
        alpha: S,
        a: ArrayView2<S>,
        b: ArrayView2<S>,
        accumulate: bool,
        c: ArrayViewMut2<S>,
        parallel: bool,
    );
    /// `c ← then(alpha·a b)`: `then` maps blocks of `c` in place once their entries are
    /// final (each tile of a tiled product right after it is formed, while it is in cache).
    fn gemm_then(
        alpha: S,
        a: ArrayView2<S>,
        b: ArrayView2<S>,
        c: ArrayViewMut2<S>,
        parallel: bool,
        then: &Then<'_, S>,
    );
    /// Lower Cholesky factor in place (reads and writes the lower triangle; the strict upper
    /// triangle is left as it was). `Err(pivot)` when the matrix is not positive definite.
    fn cholesky_in_place(a: ArrayViewMut2<S>, parallel: bool) -> Result<(), usize>;
    /// `(L Lᵀ)⁻¹` as a full symmetric matrix, from a lower factor `L`.
    fn cholesky_inverse(l: ArrayView2<S>, parallel: bool) -> Array2<S>;
    /// Solves `(L Lᵀ) X = B` in place (B has as many rows as L).
    fn cholesky_solve_in_place(l: ArrayView2<S>, b: ArrayViewMut2<S>, parallel: bool);
    /// Symmetric eigendecomposition from the lower triangle: eigenvalues ascending and the
    /// eigenvectors as columns. `None` if it did not converge.
    fn eigh(a: ArrayView2<S>) -> Option<(Array1<S>, Array2<S>)>;
    /// Thin SVD `a = U diag(s) Vᵀ`: returns `(U, s, V)` with `s` descending, U: m × r,
    /// V: n × r, r = min(m, n). `None` if it did not converge.
    #[allow(clippy::type_complexity)]
    fn thin_svd(a: ArrayView2<S>) -> Option<(Array2<S>, Array1<S>, Array2<S>)>;
}

macro_rules! impl_backend {
    ($t:ty, $imp:path) => {
        impl Backend<$t> for crate::float::Body<$t> {
            #[inline]
            fn gram_cols(a: ArrayView2<$t>, alpha: $t, acc: bool, out: ArrayViewMut2<$t>, p: bool) {
                {
                    use $imp as b;
                    b::gram_cols(a, alpha, acc, out, p);
                }
                clear_upper_simd_state();
            }
            #[inline]
            fn gemm(
                alpha: $t,
                a: ArrayView2<$t>,
                bm: ArrayView2<$t>,
                acc: bool,
                c: ArrayViewMut2<$t>,
                p: bool,
            ) {
                {
                    use $imp as b;
                    b::gemm(alpha, a, bm, acc, c, p);
                }
                clear_upper_simd_state();
            }
            #[inline]
            fn gemm_then(
                alpha: $t,
                a: ArrayView2<$t>,
                bm: ArrayView2<$t>,
                c: ArrayViewMut2<$t>,
                p: bool,
                then: &Then<'_, $t>,
            ) {
                {
                    use $imp as b;
                    b::gemm_then(alpha, a, bm, c, p, then);
                }
                clear_upper_simd_state();
            }
            #[inline]
            fn cholesky_in_place(a: ArrayViewMut2<$t>, p: bool) -> Result<(), usize> {
                let r = {
                    use $imp as b;
                    b::cholesky_in_place(a, p)
                };
                clear_upper_simd_state();
                r
            }
            #[inline]
            fn cholesky_inverse(l: ArrayView2<$t>, p: bool) -> Array2<$t> {
                let r = {
                    use $imp as b;
                    b::cholesky_inverse(l, p)
                };
                clear_upper_simd_state();
                r
            }
            #[inline]
            fn cholesky_solve_in_place(l: ArrayView2<$t>, rhs: ArrayViewMut2<$t>, p: bool) {
                {
                    use $imp as b;
                    b::cholesky_solve_in_place(l, rhs, p);
                }
                clear_upper_simd_state();
            }
            #[inline]
            fn eigh(a: ArrayView2<$t>) -> Option<(Array1<$t>, Array2<$t>)> {
                let r = {
                    use $imp as b;
                    b::eigh(a)
                };
                clear_upper_simd_state();
                r
            }
            #[inline]
            fn thin_svd(a: ArrayView2<$t>) -> Option<(Array2<$t>, Array1<$t>, Array2<$t>)> {
                let r = {
                    use $imp as b;
                    b::thin_svd(a)
                };
                clear_upper_simd_state();
                r
            }
        }
    };
}

#[cfg(not(feature = "lapack"))]
impl_backend!(f32, faer_backend);
#[cfg(not(feature = "lapack"))]
impl_backend!(f64, faer_backend);
#[cfg(feature = "lapack")]
impl_backend!(f32, lapack_backend);
#[cfg(feature = "lapack")]
impl_backend!(f64, lapack_backend);

/// Products with fewer multiply-adds than this run on the calling thread even where the
/// caller allows threads: waking the pool costs more than it saves (measured on the digits
/// CRATE's training step, 32 sequences of 5 tokens of width 64, 2 threads: 2.99 ms with
/// threads for every product, 2.25 ms from 2¹⁸ multiply-adds, 1.37 ms from 2²⁰).
pub(crate) const PARALLEL_WORK: usize = 1 << 20;

/// Whether a product of `m × k` by `k × n` may use threads.
#[inline]
fn threads_pay(parallel: bool, m: usize, k: usize, n: usize) -> bool {
    parallel && m.saturating_mul(k).saturating_mul(n) >= PARALLEL_WORK
}

/// `out ← alpha·aᵀa (+ out if accumulate)`, lower triangle only (d × d for a: n × d).
#[inline]
pub(crate) fn gram_cols<T: Float>(
    a: ArrayView2<T>,
    alpha: T,
    accumulate: bool,
    out: ArrayViewMut2<T>,
    parallel: bool,
) {
    // the lower triangle: about half the multiply-adds of the full product
    let parallel = threads_pay(parallel, a.ncols(), a.nrows(), a.ncols().div_ceil(2));
    <T::Kernels as Backend<T>>::gram_cols(a, alpha, accumulate, out, parallel)
}

/// `out ← alpha·a aᵀ (+ out if accumulate)`, lower triangle only (n × n for a: n × d).
#[inline]
pub(crate) fn gram_rows<T: Float>(
    a: ArrayView2<T>,
    alpha: T,
    accumulate: bool,
    out: ArrayViewMut2<T>,
    parallel: bool,
) {
    // a aᵀ is the Gram of the columns of aᵀ
    <T::Kernels as Backend<T>>::gram_cols(a.t(), alpha, accumulate, out, parallel)
}

/// `c ← alpha·a b (+ c if accumulate)`.
#[inline]
pub(crate) fn gemm<T: Float>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    accumulate: bool,
    c: ArrayViewMut2<T>,
    parallel: bool,
) {
    let parallel = threads_pay(parallel, a.nrows(), a.ncols(), b.ncols());
    <T::Kernels as Backend<T>>::gemm(alpha, a, b, accumulate, c, parallel)
}

/// An in-place map of a block of a product's result (see [`gemm_then`]).
pub(crate) type Then<'a, T> = dyn Fn(ArrayViewMut2<'_, T>) + Sync + 'a;

/// `c ← then(alpha·a b)`, `then` an entry-wise map applied to blocks of `c` (any blocks: it
/// must not depend on where a block lies). A product cut into tiles on the pool maps each
/// tile as soon as it is formed, while it is still in cache, instead of in a second pass
/// over `c`; the result is the same bits either way.
#[inline]
pub(crate) fn gemm_then<T: Float>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    c: ArrayViewMut2<T>,
    parallel: bool,
    then: &Then<'_, T>,
) {
    let parallel = threads_pay(parallel, a.nrows(), a.ncols(), b.ncols());
    <T::Kernels as Backend<T>>::gemm_then(alpha, a, b, c, parallel, then)
}

/// Symmetric eigendecomposition from the lower triangle (eigenvalues ascending, eigenvectors
/// as columns); `None` if it did not converge.
#[inline]
pub(crate) fn eigh<T: Float>(a: ArrayView2<T>) -> Option<(Array1<T>, Array2<T>)> {
    <T::Kernels as Backend<T>>::eigh(a)
}

/// Thin SVD `a = U diag(s) Vᵀ` (`s` descending); `None` if it did not converge.
#[allow(clippy::type_complexity)]
#[inline]
pub(crate) fn thin_svd<T: Float>(a: ArrayView2<T>) -> Option<(Array2<T>, Array1<T>, Array2<T>)> {
    <T::Kernels as Backend<T>>::thin_svd(a)
}

/// Clears the upper halves of the vector registers (`vzeroupper`) on x86-64 CPUs with AVX.
///
/// faer's kernels use 256- and 512-bit registers and may return with their upper halves in
/// use; the crate's own loops are compiled for baseline x86-64 (SSE), and SSE instructions
/// executed in that state run several times slower (measured here: a 197 × 197 softmax took
/// 240 µs instead of 60 µs). Called after every backend kernel and at the start of every
/// parallel task.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX is available (checked at run time). `vzeroupper` only zeroes bits
            // 128 and up of the vector registers; code compiled without AVX (all of this crate)
            // keeps no values there, so no live state is lost.
            unsafe { std::arch::x86_64::_mm256_zeroupper() }
        }
    }
}

/// The block `rows × cols` of a view (the `s!` macro is not usable under `forbid(unsafe_code)`).
pub(crate) fn block<T>(
    mut a: ArrayView2<'_, T>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> ArrayView2<'_, T> {
    a.slice_axis_inplace(ndarray::Axis(0), ndarray::Slice::from(rows));
    a.slice_axis_inplace(ndarray::Axis(1), ndarray::Slice::from(cols));
    a
}

/// Mutable [`block`].
pub(crate) fn block_mut<T>(
    mut a: ArrayViewMut2<'_, T>,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> ArrayViewMut2<'_, T> {
    a.slice_axis_inplace(ndarray::Axis(0), ndarray::Slice::from(rows));
    a.slice_axis_inplace(ndarray::Axis(1), ndarray::Slice::from(cols));
    a
}

/// Copies the lower triangle onto the upper one.
pub(crate) fn symmetrize_from_lower<T: Clone>(mut a: ArrayViewMut2<T>) {
    let n = a.nrows();
    for i in 0..n {
        for j in (i + 1)..n {
            a[(i, j)] = a[(j, i)].clone();
        }
    }
}

/// A Cholesky factor `A = L Lᵀ` of a symmetric positive definite matrix, from which the
/// log-determinant, the inverse and solves are all taken (factor once, reuse).
#[derive(Debug, Clone)]
pub(crate) struct Cholesky<T> {
    l: Array2<T>,
}

impl<T: Float> Cholesky<T> {
    /// Factors `a` (lower triangle read) in place.
    pub(crate) fn new(mut a: Array2<T>, what: &'static str, parallel: bool) -> crate::Result<Self> {
        debug_assert_eq!(a.nrows(), a.ncols());
        // an overflowed input (entries ±∞ or NaN) is reported the same way by both backends
        let bad_row = (0..a.nrows()).find(|&i| !a.row(i).iter().take(i + 1).all(|x| x.is_finite()));
        if let Some(pivot) = bad_row {
            return Err(crate::Error::Factorization { what, pivot });
        }
        // measured: threads only pay off for the factorization from about n = 1024
        let parallel = parallel && a.nrows() >= 1024;
        <T::Kernels as Backend<T>>::cholesky_in_place(a.view_mut(), parallel)
            .map_err(|pivot| crate::Error::Factorization { what, pivot })?;
        if let Some(pivot) = a
            .diag()
            .iter()
            .position(|&x| !(x.is_finite() && x > T::zero()))
        {
            return Err(crate::Error::Factorization { what, pivot });
        }
        // zero the strict upper triangle so that `l` is exactly L
        for (i, mut row) in a.rows_mut().into_iter().enumerate() {
            row.slice_axis_mut(ndarray::Axis(0), ndarray::Slice::from(i + 1..))
                .fill(T::zero());
        }
        Ok(Self { l: a })
    }

    /// `log det A = 2 Σ log L_ii`.
    pub(crate) fn logdet(&self) -> T {
        let two = T::one() + T::one();
        two * self.l.diag().iter().map(|&x| x.ln()).sum::<T>()
    }

    /// The diagonal of L.
    pub(crate) fn diagonal(&self) -> ndarray::ArrayView1<'_, T> {
        self.l.diag()
    }

    /// `A⁻¹`, full symmetric.
    pub(crate) fn inverse(&self, parallel: bool) -> Array2<T> {
        // measured: threads pay off for the inverse from about n = 768
        <T::Kernels as Backend<T>>::cholesky_inverse(
            self.l.view(),
            parallel && self.l.nrows() >= 768,
        )
    }

    /// `B ← A⁻¹ B`.
    pub(crate) fn solve_in_place(&self, b: ArrayViewMut2<T>, parallel: bool) {
        <T::Kernels as Backend<T>>::cholesky_solve_in_place(self.l.view(), b, parallel)
    }

    #[cfg(test)]
    pub(crate) fn factor(&self) -> &Array2<T> {
        &self.l
    }
}

/// `I + alpha·G` from the lower triangle of `G` (a new matrix, lower triangle meaningful).
pub(crate) fn shifted_identity<T: crate::Float>(g: &Array2<T>, alpha: T) -> Array2<T> {
    let mut a = g.mapv(|x| x * alpha);
    a.diag_mut().mapv_inplace(|x| x + T::one());
    a
}

#[cfg(test)]
mod tests;
