#![cfg_attr(feature = "lapack", allow(dead_code))]
//! The default backend: faer, viewed zero-copy from ndarray.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::triangular::BlockStructure;
use faer::traits::RealField;
use faer::{Accum, Par, Side};
use faer_ext::{IntoFaer, IntoNdarray};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};

use super::Then;

/// The parallelism a kernel uses: the current rayon pool when asked for and the `parallel`
/// feature is on, sequential otherwise.
#[inline]
pub(crate) fn par(parallel: bool) -> Par {
    #[cfg(feature = "parallel")]
    {
        if parallel { Par::rayon(0) } else { Par::Seq }
    }
    #[cfg(not(feature = "parallel"))]
    {
        let _ = parallel;
        Par::Seq
    }
}

#[inline]
fn accum(accumulate: bool) -> Accum {
    if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    }
}

pub(crate) fn gram_cols<T: RealField>(
    a: ArrayView2<T>,
    alpha: T,
    accumulate: bool,
    out: ArrayViewMut2<T>,
    parallel: bool,
) {
    let a = a.into_faer();
    faer::linalg::matmul::triangular::matmul(
        out.into_faer(),
        BlockStructure::TriangularLower,
        accum(accumulate),
        a.transpose(),
        BlockStructure::Rectangular,
        a,
        BlockStructure::Rectangular,
        alpha,
        par(parallel),
    );
}

/// `c ← alpha·a b (+ c)`. With threads, the output is cut into the tiles of [`tiles`] and
/// each tile is one single-threaded product on the rayon pool.
///
/// For the blocks' products (a few hundred to a few thousand token rows by a few hundred
/// columns) this is faster than faer's own parallel product, whose threads each take a
/// thin slice: on a 16-core Intel Xeon, 197 × 384 by 384 × 384 in f32 took 255 µs with
/// faer's threads and 94–96 µs as 3 × 8 tiles; 384 × 6304 by 6304 × 384 (a weight
/// gradient), 4.8 ms and 2.1–2.3 ms; 6304 × 384 by 384 × 384, 1.59 ms and 1.5–1.7 ms (16
/// threads, medians of 15). Every tile is computed as the whole product computes it (the
/// same order of the sum over k), so the result does not depend on the thread count.
///
/// The exception is a long reduction on a few threads ([`long_reduction_on_few_threads`]):
/// there faer's own parallel product is used, which is also bit for bit the sequential one.
pub(crate) fn gemm<T: RealField + Copy>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    accumulate: bool,
    c: ArrayViewMut2<T>,
    parallel: bool,
) {
    product(alpha, a, b, accumulate, c, parallel, None);
}

/// `c ← then(alpha·a b)` (see [`crate::linalg::gemm_then`]): on the tiled path each tile is
/// mapped right after it is formed; otherwise the whole result once it is complete.
pub(crate) fn gemm_then<T: RealField + Copy>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    c: ArrayViewMut2<T>,
    parallel: bool,
    then: &Then<'_, T>,
) {
    product(alpha, a, b, false, c, parallel, Some(then));
}

/// [`gemm`], and `then` on the result where given.
fn product<T: RealField + Copy>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    accumulate: bool,
    mut c: ArrayViewMut2<T>,
    parallel: bool,
    then: Option<&Then<'_, T>>,
) {
    #[cfg(feature = "parallel")]
    if parallel
        && rayon::current_num_threads() > 1
        && worth_threads(c.nrows(), a.ncols(), c.ncols())
    {
        let (m, n) = c.dim();
        if !long_reduction_on_few_threads(m, a.ncols(), n, rayon::current_num_threads()) {
            return tiled_gemm(alpha, a, b, accumulate, c, then);
        }
        faer::linalg::matmul::matmul(
            c.view_mut().into_faer(),
            accum(accumulate),
            a.into_faer(),
            b.into_faer(),
            alpha,
            Par::rayon(0),
        );
        if let Some(then) = then {
            crate::rows::for_rows(c, |_, block| then(block));
        }
        return;
    }
    let _ = parallel;
    faer::linalg::matmul::matmul(
        c.view_mut().into_faer(),
        accum(accumulate),
        a.into_faer(),
        b.into_faer(),
        alpha,
        Par::Seq,
    );
    if let Some(then) = then {
        then(c);
    }
}

/// Whether an m × n product over k is worth the pool: at least two tiles' work (2·2¹⁸
/// multiply-adds). A smaller one runs on the calling thread: handing it to the pool and
/// waiting for it costs a thread wake-up, more than the product.
#[cfg(feature = "parallel")]
fn worth_threads(m: usize, k: usize, n: usize) -> bool {
    m.saturating_mul(k).saturating_mul(n) >= 2 * MIN_TILE_WORK
}

/// Whether an m × n product over k is a long reduction (k > max(m, n): the weight
/// gradients `Xᵀ dY` of a layer over many tokens) on a pool of at most 4 threads, where
/// faer's own parallel product beats the tiles of [`tiles`]: each tile streams its whole
/// strips of both operands over k, and a grid of 48–96 tiles reads each operand 6–12 times.
/// On a 2-core AMD EPYC, 2 threads, medians of 15 alternating runs: 384 × 6304 by 6304 × 384
/// took 18.3 ms in f32 and 46.0 ms in f64 with faer's threads, against 22.9 and 55.2 ms as
/// 6 × 8 tiles; 576 × 6304 by 6304 × 576, 43.8 and 95.6 ms against 63.4 and 132.0 ms (9 × 10
/// tiles). On 16 threads the tiles win (2.1–2.3 ms against 4.8 ms, see [`gemm`]); the
/// switch at 4 threads lies between the two measured counts.
#[cfg(feature = "parallel")]
pub(crate) fn long_reduction_on_few_threads(m: usize, k: usize, n: usize, threads: usize) -> bool {
    threads <= FEW_THREADS && k > m.max(n)
}

/// Fewest multiply-adds of one tile of [`tiles`].
#[cfg(feature = "parallel")]
const MIN_TILE_WORK: usize = 1 << 18;

/// The tiles of an m × n product over k: about one per 64 rows (at most 32) times one per
/// 48 columns (at most 12), at most 96 tiles, and none smaller than 2¹⁸ multiply-adds; as
/// (row tiles, column tiles). From a sweep of tile grids on a 16-core Intel Xeon at 8 and
/// 16 threads, f32 and f64, products of 197 to 6304 rows by 384 to 1152 columns: the best
/// grids had 3–4 row tiles for 197 rows, 24–32 for 6304, 6–12 column tiles for 384 to 1152
/// columns, 24 to 96 tiles in all.
///
/// On at most 4 `threads` ([`FEW_THREADS`]):
///
/// * each column tile is a whole multiple of 96 columns (so a CRATE-T product of 6304 rows
///   by 384 columns is 2 tiles of 192, not 3 of 128, whose last 32 columns run a narrower
///   microkernel). On a 2-core Intel Xeon, 2 threads, 6304 × 384 by 384 × 384 in f32 ran
///   at 279–291 GFLOP/s as 32 × 3 tiles and 292–305 as 32 × 2, and a CRATE-T block's
///   forward+backward at batch 32 took 119.7–120.3 ms against 116.7–117.9 (medians of 25 and
///   of 21 runs);
/// * a product of fewer than [`FEW_THREADS_TALL`] rows is one row tile per thread by two
///   column tiles (more column tiles when there are fewer than 64 rows per thread): small
///   tiles cost more than they balance there. The same machine, 2 threads, two runs, each
///   grid's median over 300 and 200 runs with the grids taken in turn, µs, the grid above
///   against 2 × 2: 197 × 384 by 384 × 384, f32 341 and 419 against 274 and 362, f64 581
///   and 562 against 474 and 469; 1576 × 384 by 384 × 384, f32 1821 and 1897 against 1545
///   and 1549, f64 4033 and 3724 against 3727 and 3048; 1576 × 576 by 576 × 576, f32 4042
///   and 4057 against 3480 and 3470, f64 8287 and 8259 against 7013 and 7428; 197 × 576 by
///   576 × 576, f32 703 and 625 against 686 and 528, f64 1137 and 1080 against 1100 and
///   1150. At 6304 rows the grid above held its own (100 runs: f32, 384 columns, 7603
///   against 8287; f64, 576 columns, 37551 against 44196);
/// * a short product (at most [`FEW_THREADS_SHORT`] rows, no more than its k) whose columns
///   make a multiple of `threads` tiles of [`KERNEL_COLUMNS`], at least three per thread,
///   is one row tile by those column tiles: each thread packs only its own columns of b
///   once. The same machine, 2 threads, two runs of 150–200 rounds with the grids taken in
///   turn, medians in µs, 2 × 2 against 1 × n/96: 197 × 576 by 576 × 576, f32 505 and 514
///   against 475 and 483, f64 1048 and 1062 against 927 and 967; 197 × 384 by 384 × 1536,
///   f32 965 against 842, f64 1991 and 1925 against 1645 and 1601; 197 × 576 by 576 × 1728,
///   f32 2053 and 2001 against 1390 and 1392; 197 × 1536 by 1536 × 384, f64 1764 and 1721
///   against 1638 and 1597; 100 × 576 by 576 × 576, f64 684 and 643 against 528 and 529;
///   197 × 384 by 384 × 384 alike (f32 226–254 either way) alone, but as 1 × 4 the CRATE-T
///   block forward at batch 1 was 3–10 % slower in three of three alternating runs, hence
///   three tiles per thread. At 394 rows the gain was smaller (576 columns, f64 1949 and
///   1939 against 1811 and 1861); at 788 rows, or with fewer k than rows (the weight
///   gradients 384 × 197 by 197 × 384, f32 247 against 268), the grids above were as fast
///   or faster.
#[cfg(feature = "parallel")]
pub(crate) fn tiles(m: usize, k: usize, n: usize, threads: usize) -> (usize, usize) {
    const MAX_TILES: usize = 96;
    let most = (m.saturating_mul(k).saturating_mul(n) / MIN_TILE_WORK).clamp(1, MAX_TILES);
    let few = threads <= FEW_THREADS;
    if few && m < FEW_THREADS_TALL {
        let kernel_tiles = n.div_ceil(KERNEL_COLUMNS);
        if m <= FEW_THREADS_SHORT
            && k >= m
            && kernel_tiles % threads.max(1) == 0
            && kernel_tiles >= 3 * threads
            && kernel_tiles <= most
        {
            // one row tile, column tiles one microkernel wide
            return (1, kernel_tiles);
        }
        let rows = threads.min(m / 64).clamp(1, most);
        // two column tiles, more when there are fewer row tiles than threads
        let wanted = threads.div_ceil(rows).max(2);
        let cols = wanted.min((n / 48).max(1)).min(most / rows).max(1);
        return (rows, cols);
    }
    let rows = (m / 64).clamp(1, 32).min(most);
    let mut cols = (n / 48).clamp(1, 12).min(most / rows).max(1);
    if few && n >= 2 * KERNEL_COLUMNS {
        // whole multiples of the microkernel's width: 384 columns as 2 tiles, not 3 of 128
        let width = n.div_ceil(cols).next_multiple_of(KERNEL_COLUMNS);
        cols = n.div_ceil(width);
    }
    (rows, cols)
}

/// Rows up to which a product on [`FEW_THREADS`] may be one row tile by column tiles of
/// [`KERNEL_COLUMNS`] (see [`tiles`]).
#[cfg(feature = "parallel")]
const FEW_THREADS_SHORT: usize = 256;

/// Rows from which a product on [`FEW_THREADS`] is cut into the many row tiles of
/// [`tiles`] rather than one per thread (measured: 1576 rows gain from one per thread,
/// 6304 do not).
#[cfg(feature = "parallel")]
const FEW_THREADS_TALL: usize = 4096;

/// Columns of faer's widest f32 microkernel on AVX-512 (six vectors of 16; f64's is half,
/// so a multiple of this suits both).
#[cfg(feature = "parallel")]
const KERNEL_COLUMNS: usize = 96;

/// Thread counts up to which [`tiles`] keeps column tiles whole multiples of
/// [`KERNEL_COLUMNS`] (and [`long_reduction_on_few_threads`] applies).
#[cfg(feature = "parallel")]
const FEW_THREADS: usize = 4;

#[cfg(feature = "parallel")]
fn tiled_gemm<T: RealField + Copy>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    accumulate: bool,
    mut c: ArrayViewMut2<T>,
    then: Option<&Then<'_, T>>,
) {
    use ndarray::Axis;
    use rayon::prelude::*;
    let (m, n) = c.dim();
    let (rows, cols) = tiles(m, a.ncols(), n, rayon::current_num_threads());
    let (rs, cs) = (m.div_ceil(rows).max(1), n.div_ceil(cols).max(1));
    c.axis_chunks_iter_mut(Axis(0), rs)
        .into_par_iter()
        .zip(a.axis_chunks_iter(Axis(0), rs).into_par_iter())
        .for_each(|(mut c_rows, a_rows)| {
            c_rows
                .axis_chunks_iter_mut(Axis(1), cs)
                .into_par_iter()
                .zip(b.axis_chunks_iter(Axis(1), cs).into_par_iter())
                .for_each(|(mut c_tile, b_cols)| {
                    faer::linalg::matmul::matmul(
                        c_tile.view_mut().into_faer(),
                        accum(accumulate),
                        a_rows.into_faer(),
                        b_cols.into_faer(),
                        alpha,
                        Par::Seq,
                    );
                    if let Some(then) = then {
                        then(c_tile);
                    }
                    super::clear_upper_simd_state();
                })
        });
}

pub(crate) fn cholesky_in_place<T: RealField>(
    a: ArrayViewMut2<T>,
    parallel: bool,
) -> Result<(), usize> {
    use faer::linalg::cholesky::llt::factor;
    let n = a.nrows();
    let par = par(parallel);
    let mut buf = MemBuffer::new(factor::cholesky_in_place_scratch::<T>(
        n,
        par,
        Default::default(),
    ));
    factor::cholesky_in_place(
        a.into_faer(),
        Default::default(),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map(|_| ())
    .map_err(|e| match e {
        factor::LltError::NonPositivePivot { index } => index,
    })
}

pub(crate) fn cholesky_inverse<T: RealField>(l: ArrayView2<T>, parallel: bool) -> Array2<T> {
    use faer::linalg::cholesky::llt::inverse;
    let n = l.nrows();
    let par = par(parallel);
    let mut out = Array2::<T>::zeros((n, n));
    let mut buf = MemBuffer::new(inverse::inverse_scratch::<T>(n, par));
    inverse::inverse(
        out.view_mut().into_faer(),
        l.into_faer(),
        par,
        MemStack::new(&mut buf),
    );
    super::symmetrize_from_lower(out.view_mut());
    out
}

pub(crate) fn cholesky_solve_in_place<T: RealField>(
    l: ArrayView2<T>,
    b: ArrayViewMut2<T>,
    parallel: bool,
) {
    use faer::linalg::cholesky::llt::solve;
    let n = l.nrows();
    let par = par(parallel);
    let mut buf = MemBuffer::new(solve::solve_in_place_scratch::<T>(n, b.ncols(), par));
    solve::solve_in_place(l.into_faer(), b.into_faer(), par, MemStack::new(&mut buf));
}

pub(crate) fn eigh<T: RealField>(a: ArrayView2<T>) -> Option<(Array1<T>, Array2<T>)> {
    let evd = a.into_faer().self_adjoint_eigen(Side::Lower).ok()?;
    let vals: Array1<T> = evd.S().column_vector().iter().cloned().collect();
    let vecs = evd.U().into_ndarray().to_owned();
    Some((vals, vecs))
}

#[allow(clippy::type_complexity)]
pub(crate) fn thin_svd<T: RealField>(
    a: ArrayView2<T>,
) -> Option<(Array2<T>, Array1<T>, Array2<T>)> {
    let svd = a.into_faer().thin_svd().ok()?;
    let s: Array1<T> = svd.S().column_vector().iter().cloned().collect();
    Some((
        svd.U().into_ndarray().to_owned(),
        s,
        svd.V().into_ndarray().to_owned(),
    ))
}
