//! Gram matrices and the scratch that streams rows through them: `Σ_p w_p x_p x_pᵀ` over
//! a class's rows, gathered in chunks of fixed size, and the per-class scheduling.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::Float;
use crate::labels::ClassRows;

/// Elements of the gather buffer used to stream a class through the Gram and gradient
/// kernels (rows = `CHUNK_ELEMS / d`): a fixed scratch, independent of n.
const CHUNK_ELEMS: usize = 1 << 18;

pub(crate) fn chunk_rows(d: usize) -> usize {
    (CHUNK_ELEMS / d.max(1)).max(1)
}

/// Multiply-adds of a ΔR evaluation (about n·d·min(n, d): its Gram products) below which
/// its classes and blocks of rows stay on the calling thread: handing them to the pool and
/// waiting costs more than they do. On a 2-core AMD EPYC, value+gradient at (d, n, k) =
/// (16, 300, 4) (77·10³) took 0.07–0.08 ms on one thread and 0.12–0.15 ms on the pool of
/// two; at (32, 500, 10) (5.1·10⁵) the pool won, 0.20–0.33 ms against 0.21–0.44 ms.
const PARALLEL_WORK: usize = 1 << 18;

/// The multiply-adds of the Gram products of ΔR on an n × d matrix: about n·d·min(n, d).
pub(crate) fn gram_work(n: usize, d: usize) -> usize {
    n.saturating_mul(d).saturating_mul(n.min(d))
}

/// Whether ΔR of an n × d matrix is worth the thread pool (see [`PARALLEL_WORK`]).
pub(crate) fn worth_threads(n: usize, d: usize) -> bool {
    gram_work(n, d) >= PARALLEL_WORK
}

/// Runs `f(j, inner)` for every class j: across the rayon pool when the `parallel` feature is
/// on, the problem is `worth` it ([`worth_threads`]) and there is more than one class (then
/// `inner` is false: each class's kernels run sequentially); one after the other otherwise,
/// with `inner` true (kernels may use threads) unless the problem is small.
pub(crate) fn for_classes<R: Send>(
    k: usize,
    worth: bool,
    f: impl Fn(usize, bool) -> R + Sync + Send,
) -> Vec<R> {
    if !worth {
        return (0..k).map(|j| f(j, false)).collect();
    }
    #[cfg(feature = "parallel")]
    if k > 1 && crate::rows::threads() > 1 {
        use rayon::prelude::*;
        return (0..k)
            .into_par_iter()
            .map(|j| {
                crate::linalg::clear_upper_simd_state();
                f(j, false)
            })
            .collect();
    }
    (0..k).map(|j| f(j, true)).collect()
}

/// Copies rows `rows` of `z` into `out` (one row each), scaled by `scale` when given.
pub(crate) fn gather<T: Float>(
    z: ArrayView2<T>,
    rows: &[u32],
    scale: Option<&[T]>,
    mut out: ArrayViewMut2<T>,
) {
    for (p, &i) in rows.iter().enumerate() {
        let src = z.row(i as usize);
        let mut dst = out.row_mut(p);
        match scale {
            Some(s) => {
                let w = s[p];
                dst.zip_mut_with(&src, |o, &x| *o = x * w);
            }
            None => dst.assign(&src),
        }
    }
}

/// The first `len` rows of a scratch buffer.
pub(crate) fn head_rows<T>(buf: &mut Array2<T>, len: usize) -> ArrayViewMut2<'_, T> {
    buf.slice_axis_mut(Axis(0), ndarray::Slice::from(0..len))
}

pub(crate) fn sqrt_weights<T: Float>(rows: &ClassRows<'_, T>) -> Option<Vec<T>> {
    rows.weights
        .as_ref()
        .map(|w| w.iter().map(|x| x.sqrt()).collect())
}

/// `Σ_p w_p x_p x_pᵀ` over the given rows of `z` (lower triangle, d × d), streamed through a
/// scratch of at most `CHUNK_ELEMS` elements from the thread's workspace.
///
/// The rows are gathered by columns (the chunk stored column-major), so that both operands of
/// `XᵀX` run along the summed index in memory: faer's triangular product took 3.4 ms instead
/// of 4.6 ms on a class of 1000 rows of 512 f32 values (one thread, AMD EPYC), with the same
/// bits in the result (test `gathered_gram_is_the_gram_of_the_rows`).
pub(crate) fn weighted_gram<T: Float>(
    z: ArrayView2<T>,
    rows: &[u32],
    sqrt_w: Option<&[T]>,
    accumulate_into: Option<Array2<T>>,
    parallel: bool,
) -> Array2<T> {
    let d = z.ncols();
    let chunk = chunk_rows(d);
    let mut g = accumulate_into.unwrap_or_else(|| Array2::zeros((d, d)));
    // d × chunk, standard layout: its transpose is a column-major chunk × d matrix
    let mut buf = crate::workspace::take::<T>(d, chunk.min(rows.len()));
    for (c, idx) in rows.chunks(chunk).enumerate() {
        let sc = sqrt_w.map(|s| &s[c * chunk..c * chunk + idx.len()]);
        gather_transposed(z, idx, sc, &mut buf);
        let xb = buf.slice_axis(Axis(1), ndarray::Slice::from(0..idx.len()));
        crate::linalg::gram_cols(xb.t(), T::one(), true, g.view_mut(), parallel);
    }
    g
}

/// Rows `rows` of `z` (scaled by `scale` when given) into the first `rows.len()` columns of
/// `out` (d × at least `rows.len()`): row p of the selection becomes column p.
///
/// Eight rows at a time, so that each column of `out` receives eight neighbouring values per
/// pass instead of one: 0.18 ms instead of 0.92 ms for 512 scattered rows of 512 f32 values
/// (AMD EPYC), the difference between a faster Gram and none. Where `z` or `out` is not in
/// standard layout, the rows go one at a time through [`gather`] (same values).
fn gather_transposed<T: Float>(
    z: ArrayView2<T>,
    rows: &[u32],
    scale: Option<&[T]>,
    out: &mut Array2<T>,
) {
    const BLOCK: usize = 8;
    let (d, ld) = (z.ncols(), out.ncols());
    if let (Some(zs), Some(dst)) = (z.to_slice(), out.as_slice_mut()) {
        let row = |i: u32| &zs[i as usize * d..(i as usize + 1) * d];
        for (b, blk) in rows.chunks(BLOCK).enumerate() {
            let p0 = b * BLOCK;
            let src: Vec<&[T]> = blk.iter().map(|&i| row(i)).collect();
            let w = |q: usize| scale.map_or(T::one(), |s| s[p0 + q]);
            for (c, col) in dst.chunks_mut(ld).enumerate() {
                for (q, (o, s)) in col[p0..p0 + blk.len()].iter_mut().zip(&src).enumerate() {
                    *o = s[c] * w(q);
                }
            }
        }
        return;
    }
    let columns = out.slice_axis_mut(Axis(1), ndarray::Slice::from(0..rows.len()));
    gather(z, rows, scale, columns.reversed_axes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

    /// The gathered, column-major chunks give the bits of the Gram of the rows themselves
    /// (with faer; a BLAS may order its sums by layout, so there: to rounding).
    #[test]
    fn gathered_gram_is_the_gram_of_the_rows() {
        fn check<T: Float>(n: usize, d: usize, parallel: bool) {
            let z = Array2::<T>::from_shape_fn((n, d), |(i, j)| {
                T::from_f64(((i * 7919 + j * 104_729) % 1000) as f64 / 997.0).sin()
            });
            let rows: Vec<u32> = (0..n as u32).filter(|i| i % 3 != 1).collect();
            let w: Vec<T> = (0..rows.len())
                .map(|p| T::from_f64(0.5 + (p % 5) as f64 * 0.1))
                .collect();
            // the same matrix stored by columns: its rows go through `gather`
            let mut z_by_columns = Array2::<T>::zeros(z.raw_dim().f());
            z_by_columns.assign(&z);
            for sw in [None, Some(&w[..])] {
                let g = weighted_gram(z.view(), &rows, sw, None, parallel);
                let g_by_columns = weighted_gram(z_by_columns.view(), &rows, sw, None, parallel);
                assert_eq!(g, g_by_columns, "n={n} d={d}, z stored by columns");
                // the same rows gathered by rows, chunk by chunk
                let chunk = chunk_rows(d);
                let mut expected = Array2::<T>::zeros((d, d));
                for (c, idx) in rows.chunks(chunk).enumerate() {
                    let mut x = Array2::<T>::zeros((idx.len(), d));
                    let sc = sw.map(|s| &s[c * chunk..c * chunk + idx.len()]);
                    gather(z.view(), idx, sc, x.view_mut());
                    crate::linalg::gram_cols(
                        x.view(),
                        T::one(),
                        true,
                        expected.view_mut(),
                        parallel,
                    );
                }
                let scale = expected.iter().fold(T::zero(), |m, v| m.max(v.abs()));
                for i in 0..d {
                    for j in 0..=i {
                        let (a, b) = (g[(i, j)], expected[(i, j)]);
                        if cfg!(feature = "lapack") {
                            // a bound for any order of the sum over the rows
                            let tol = T::from_usize(n) * T::epsilon() * scale;
                            assert!((a - b).abs() <= tol, "({i}, {j}) of n={n} d={d}");
                        } else {
                            assert_eq!(a, b, "({i}, {j}) of n={n} d={d}");
                        }
                    }
                }
            }
        }
        check::<f32>(1500, 96, false);
        check::<f64>(1500, 96, false);
        check::<f32>(700, 300, true);
        check::<f64>(40, 520, true);
        check::<f32>(2000, 256, false);
    }
}
