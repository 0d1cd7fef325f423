//! Row-parallel element-wise passes.
//!
//! The products of a CRATE block run on every core, but its element-wise passes (layer
//! norms, residual sums, the ISTA threshold, the finiteness checks) ran on the calling
//! thread: at batch 32 they were about a tenth of the block's time at 2 threads, and a serial
//! tail that grows with the core count (Amdahl). With the `parallel` feature, the passes here
//! split a matrix into blocks of whole rows, a few per thread of the current rayon pool, when
//! the matrix has at least [`ELEMENTWISE_WORK`] entries; smaller ones stay on the calling
//! thread. Each row is computed by the same code either way, so results are bit for bit the
//! same at every thread count.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

/// The number of threads parallel work shares: the current rayon pool's with the `parallel`
/// feature, else 1.
pub(crate) fn threads() -> usize {
    #[cfg(feature = "parallel")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "parallel"))]
    {
        1
    }
}

/// Runs `f`, a whole computation made of several parallel steps (a block's forward, a
/// classifier's, ΔR with its gradient), on a thread of the current rayon pool when the
/// `parallel` feature is on, the pool has more than one thread, the caller is not already
/// one of its threads and the computation's largest product has at least
/// [`PARALLEL_WORK`](crate::linalg::PARALLEL_WORK) multiply-adds (`multiply_adds`); else on
/// the calling thread.
///
/// Each parallel step started from outside the pool hands its work over and puts the caller
/// to sleep until the pool is done: two thread wake-ups per step, and the woken threads were
/// seen sharing one core for milliseconds while the other sat idle. Started from a pool
/// thread, the steps only share their work with the other threads, which are still
/// spinning from the previous step. On the 2-core Intel Xeon, 2 threads, the old and the new
/// build in turn, medians: CRATE-T block forward at batch 1 (f32) 1.33–1.36 → 1.16–1.19 ms
/// (context switches 4× fewer), the CRATE-T classifier on 8 images (f32) 111–113 → 104–107
/// ms, ΔR value+gradient at (d, n, k) = (512, 10⁴, 10) 60–63 → 56–63 ms. The same code runs
/// either way, so the results are the same bits.
///
/// Not for training passes: a step's forward and backward, each moved, may land on
/// different threads, and the buffers of its caches, kept per thread for the next step
/// (`workspace`), then pile up on the wrong one (the CRATE-T block's f64 forward+backward at
/// batch 32 took 429–484 ms instead of 229–239).
pub(crate) fn on_pool<R: Send>(multiply_adds: usize, f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "parallel")]
    if multiply_adds >= crate::linalg::PARALLEL_WORK
        && rayon::current_thread_index().is_none()
        && threads() > 1
    {
        return rayon::scope(|_| f());
    }
    let _ = multiply_adds;
    f()
}

/// [`on_pool`] for a computation whose largest products are `rows × width` by
/// `width × width` (a layer's projections of its tokens).
pub(crate) fn on_pool_rows<R: Send>(rows: usize, width: usize, f: impl FnOnce() -> R + Send) -> R {
    on_pool(rows.saturating_mul(width).saturating_mul(width), f)
}

/// Entries below which an element-wise pass stays on the calling thread (a pass over 2¹⁶
/// entries takes tens of microseconds; waking the pool a few).
#[cfg_attr(not(feature = "parallel"), allow(dead_code))]
pub(crate) const ELEMENTWISE_WORK: usize = 1 << 16;

/// Rows per task for a pass over a `rows × cols` matrix, or `None` to stay on the calling
/// thread: four tasks per thread (for balance), each of at least 2¹³ entries.
fn rows_per_task(rows: usize, cols: usize) -> Option<usize> {
    #[cfg(feature = "parallel")]
    {
        let threads = rayon::current_num_threads();
        if threads > 1 && rows > 1 && rows.saturating_mul(cols) >= ELEMENTWISE_WORK {
            let least = (1usize << 13).div_ceil(cols.max(1));
            return Some(rows.div_ceil(4 * threads).max(least));
        }
    }
    let _ = (rows, cols);
    None
}

/// Runs `f(r0, block)` on blocks of whole rows of `a` that together cover it, `r0` being the
/// index of the block's first row (in parallel when large).
pub(crate) fn for_rows<T, F>(mut a: ArrayViewMut2<'_, T>, f: F)
where
    T: Send + Sync,
    F: Fn(usize, ArrayViewMut2<'_, T>) + Send + Sync,
{
    match rows_per_task(a.nrows(), a.ncols()) {
        #[cfg(feature = "parallel")]
        Some(per) => {
            use rayon::prelude::*;
            a.axis_chunks_iter_mut(Axis(0), per)
                .into_par_iter()
                .enumerate()
                .for_each(|(i, block)| f(i * per, block))
        }
        _ => f(0, a.view_mut()),
    }
}

/// Runs `f` on matching blocks of whole rows of `a` and `b` (same number of rows) that
/// together cover them (in parallel when large).
pub(crate) fn zip_rows<T, U, F>(a: ArrayViewMut2<'_, T>, b: ArrayView2<'_, U>, f: F)
where
    T: Send + Sync,
    U: Send + Sync,
    F: Fn(ArrayViewMut2<'_, T>, ArrayView2<'_, U>) + Send + Sync,
{
    debug_assert_eq!(a.nrows(), b.nrows());
    for_rows(a, |r0, block| {
        let rows = r0..r0 + block.nrows();
        f(block, b.slice(ndarray::s![rows, ..]))
    })
}

/// Runs `f(r0, a_block, b_block, c_block)` on matching blocks of whole rows of three
/// matrices with the same number of rows, all written, `r0` being the blocks' first row (in
/// parallel when large); whether `f` returned true on every block (each block runs either
/// way).
pub(crate) fn all_row_triples<T, U, V, F>(
    mut a: ArrayViewMut2<'_, T>,
    mut b: ArrayViewMut2<'_, U>,
    mut c: ArrayViewMut2<'_, V>,
    f: F,
) -> bool
where
    T: Send + Sync,
    U: Send + Sync,
    V: Send + Sync,
    F: Fn(usize, ArrayViewMut2<'_, T>, ArrayViewMut2<'_, U>, ArrayViewMut2<'_, V>) -> bool
        + Send
        + Sync,
{
    debug_assert!(a.nrows() == b.nrows() && b.nrows() == c.nrows());
    match rows_per_task(a.nrows(), a.ncols().max(b.ncols()).max(c.ncols())) {
        #[cfg(feature = "parallel")]
        Some(per) => {
            use rayon::prelude::*;
            a.axis_chunks_iter_mut(Axis(0), per)
                .into_par_iter()
                .zip(b.axis_chunks_iter_mut(Axis(0), per).into_par_iter())
                .zip(c.axis_chunks_iter_mut(Axis(0), per).into_par_iter())
                .enumerate()
                .map(|(i, ((a, b), c))| f(i * per, a, b, c))
                .reduce(|| true, |x, y| x && y)
        }
        _ => f(0, a.view_mut(), b.view_mut(), c.view_mut()),
    }
}

/// [`all_row_triples`] on two matrices.
pub(crate) fn all_row_pairs<T, U, F>(a: ArrayViewMut2<'_, T>, b: ArrayViewMut2<'_, U>, f: F) -> bool
where
    T: Send + Sync,
    U: Send + Sync,
    F: Fn(usize, ArrayViewMut2<'_, T>, ArrayViewMut2<'_, U>) -> bool + Send + Sync,
{
    let mut none = ndarray::Array2::<u8>::zeros((a.nrows(), 0));
    all_row_triples(a, b, none.view_mut(), |r0, a, b, _| f(r0, a, b))
}

/// Whether `test` holds for every block of a slice (blocks of 2¹⁵ entries, tested in
/// parallel when the slice is large).
pub(crate) fn all_blocks<T, F>(s: &[T], test: F) -> bool
where
    T: Send + Sync,
    F: Fn(&[T]) -> bool + Send + Sync,
{
    match rows_per_task(s.len(), 1) {
        #[cfg(feature = "parallel")]
        Some(_) => {
            use rayon::prelude::*;
            s.par_chunks(1 << 15).all(test)
        }
        _ => test(s),
    }
}

/// Rows per block of [`sum_over_row_blocks`]: fixed, so that the sums do not depend on the
/// thread count.
const ROWS_PER_SUM: usize = 256;

/// `Σ_r f(r)` over `rows` rows as a vector of `width` entries: `add(range, acc)` adds the
/// terms of a range of rows to `acc` (in row order). The rows are cut into fixed blocks of
/// 256, each summed into its own partial (on the pool when large), and the partials are
/// added in block order: the result is the same on any number of threads, with or without
/// the `parallel` feature.
pub(crate) fn sum_over_row_blocks<T, F>(rows: usize, width: usize, add: F) -> ndarray::Array1<T>
where
    T: crate::Float,
    F: Fn(std::ops::Range<usize>, ndarray::ArrayViewMut1<'_, T>) + Send + Sync,
{
    // The same blocks as a writing pass over a rows × 0 matrix of `()`, which holds nothing.
    let mut rows_only = ndarray::Array2::from_elem((rows, 0), ());
    sum_over_written_row_blocks(rows_only.view_mut(), width, |r0, block, acc| {
        add(r0..r0 + block.nrows(), acc)
    })
}

/// `Σ_r f(r)` as in [`sum_over_row_blocks`], for passes that also write the rows of `a`:
/// `f(r0, block, acc)` gets a block of (at most) 256 whole rows of `a`, `r0` being its first
/// row, and adds that block's terms to `acc` in row order. The partials are added in block
/// order, so the result does not depend on the thread count.
pub(crate) fn sum_over_written_row_blocks<T, U, F>(
    mut a: ArrayViewMut2<'_, U>,
    width: usize,
    f: F,
) -> ndarray::Array1<T>
where
    T: crate::Float,
    U: Send + Sync,
    F: Fn(usize, ArrayViewMut2<'_, U>, ndarray::ArrayViewMut1<'_, T>) + Send + Sync,
{
    let rows = a.nrows();
    let blocks = rows.div_ceil(ROWS_PER_SUM);
    let mut partials = ndarray::Array2::<T>::zeros((blocks, width));
    #[cfg(feature = "parallel")]
    if threads() > 1 && blocks > 1 && rows.saturating_mul(width.max(a.ncols())) >= ELEMENTWISE_WORK
    {
        use rayon::prelude::*;
        partials
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(
                a.axis_chunks_iter_mut(Axis(0), ROWS_PER_SUM)
                    .into_par_iter(),
            )
            .enumerate()
            .for_each(|(b, (acc, block))| f(b * ROWS_PER_SUM, block, acc));
        return sum_in_order(partials, width);
    }
    let pairs = partials
        .axis_iter_mut(Axis(0))
        .zip(a.axis_chunks_iter_mut(Axis(0), ROWS_PER_SUM));
    for (b, (acc, block)) in pairs.enumerate() {
        f(b * ROWS_PER_SUM, block, acc);
    }
    sum_in_order(partials, width)
}

/// Runs `f(s, block)` on the consecutive blocks of `n` rows of `a` (the sequences of a
/// batch, s = 0, 1, …), on the pool with the `parallel` feature, and returns the results in
/// sequence order.
pub(crate) fn map_sequences<T, R, F>(a: ArrayViewMut2<'_, T>, n: usize, f: F) -> Vec<R>
where
    T: Send + Sync,
    R: Send,
    F: Fn(usize, ArrayViewMut2<'_, T>) -> R + Send + Sync,
{
    // the same sequences paired with a rows × 0 matrix of `()`, which holds nothing
    let mut none = ndarray::Array2::from_elem((a.nrows(), 0), ());
    map_sequence_pairs(a, none.view_mut(), n, |s, block, _| f(s, block))
}

/// [`map_sequences`] over two matrices with the same rows, both written: `f(s, a_block,
/// b_block)` gets sequence `s`'s rows of each.
pub(crate) fn map_sequence_pairs<T, U, R, F>(
    mut a: ArrayViewMut2<'_, T>,
    mut b: ArrayViewMut2<'_, U>,
    n: usize,
    f: F,
) -> Vec<R>
where
    T: Send + Sync,
    U: Send + Sync,
    R: Send,
    F: Fn(usize, ArrayViewMut2<'_, T>, ArrayViewMut2<'_, U>) -> R + Send + Sync,
{
    debug_assert_eq!(a.nrows(), b.nrows());
    let n = n.max(1);
    #[cfg(feature = "parallel")]
    if threads() > 1 && a.nrows() > n {
        use rayon::prelude::*;
        return a
            .axis_chunks_iter_mut(Axis(0), n)
            .into_par_iter()
            .zip(b.axis_chunks_iter_mut(Axis(0), n).into_par_iter())
            .enumerate()
            .map(|(s, (a, b))| f(s, a, b))
            .collect();
    }
    a.axis_chunks_iter_mut(Axis(0), n)
        .zip(b.axis_chunks_iter_mut(Axis(0), n))
        .enumerate()
        .map(|(s, (a, b))| f(s, a, b))
        .collect()
}

fn sum_in_order<T: crate::Float>(partials: ndarray::Array2<T>, width: usize) -> ndarray::Array1<T> {
    let mut total = ndarray::Array1::<T>::zeros(width);
    for p in partials.rows() {
        total += &p;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// `f` on a fresh pool of `threads` threads.
    #[cfg(feature = "parallel")]
    fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
        pool.unwrap().install(f)
    }

    #[test]
    fn passes_cover_every_row_once() {
        for &(rows, cols) in &[(1, 1), (3, 5), (1000, 97), (4096, 64)] {
            let mut a = Array2::<f64>::zeros((rows, cols));
            for_rows(a.view_mut(), |_, mut c| c.map_inplace(|v| *v += 1.0));
            assert!(a.iter().all(|&v| v == 1.0));
            let b = Array2::from_shape_fn((rows, cols), |(i, j)| (i * cols + j) as f64);
            zip_rows(a.view_mut(), b.view(), |mut c, d| {
                c.zip_mut_with(&d, |x, &y| *x += y)
            });
            assert!(a.iter().zip(b.iter()).all(|(&x, &y)| x == y + 1.0));
            let flat = b.as_slice().unwrap();
            assert!(all_blocks(flat, |s| s.iter().all(|v| v.is_finite())));
            let mut bad = b.clone();
            bad[(rows - 1, cols - 1)] = f64::NAN;
            assert!(!all_blocks(bad.as_slice().unwrap(), |s| s
                .iter()
                .all(|v| v.is_finite())));
        }
    }

    /// A large computation runs on a thread of the pool (when it has several), a small one
    /// and one started on a pool thread where they were called; `f`'s value either way.
    #[test]
    fn whole_computations_go_to_the_pool_when_large() {
        let here = std::thread::current().id();
        let large = crate::linalg::PARALLEL_WORK;
        let (id, v) = on_pool(large - 1, || (std::thread::current().id(), 7));
        assert_eq!((id, v), (here, 7));
        let (id, v) = on_pool(large, || (std::thread::current().id(), 8));
        assert_eq!(v, 8);
        #[cfg(feature = "parallel")]
        if rayon::current_num_threads() > 1 {
            assert_ne!(id, here, "moved to the pool");
            assert!(on_pool(large, || rayon::current_thread_index().is_some()));
        } else {
            assert_eq!(id, here);
        }
        #[cfg(not(feature = "parallel"))]
        assert_eq!(id, here);
        #[cfg(feature = "parallel")]
        for threads in [1, 3] {
            on_threads(threads, || {
                let worker = std::thread::current().id();
                assert_eq!(on_pool(large, || std::thread::current().id()), worker);
            });
        }
    }

    /// Block sums equal the plain column sums (exactly, on integers) and do not depend on
    /// the thread count (bit for bit, on fractions).
    #[test]
    fn row_block_sums() {
        let a = Array2::from_shape_fn((1000, 97), |(i, j)| ((i * 7 + j) % 13) as f64);
        let add = |r: std::ops::Range<usize>, mut acc: ndarray::ArrayViewMut1<'_, f64>| {
            for row in a.slice(ndarray::s![r, ..]).rows() {
                acc += &row;
            }
        };
        assert_eq!(sum_over_row_blocks(1000, 97, add), a.sum_axis(Axis(0)));
        let b = Array2::from_shape_fn((3000, 50), |(i, j)| 1.0 / (1.0 + (i * 50 + j) as f64));
        let add = |r: std::ops::Range<usize>, mut acc: ndarray::ArrayViewMut1<'_, f64>| {
            for row in b.slice(ndarray::s![r, ..]).rows() {
                acc += &row;
            }
        };
        let one = sum_over_row_blocks(3000, 50, add);
        // the definition: blocks of 256 rows, each summed in row order, then added in order
        let mut want = ndarray::Array1::<f64>::zeros(50);
        for chunk in b.axis_chunks_iter(Axis(0), 256) {
            let mut part = ndarray::Array1::<f64>::zeros(50);
            for row in chunk.rows() {
                part += &row;
            }
            want += &part;
        }
        assert_eq!(one, want);
        #[cfg(feature = "parallel")]
        for threads in [2, 5] {
            assert_eq!(
                on_threads(threads, || sum_over_row_blocks(3000, 50, add)),
                one
            );
        }
        assert_eq!(sum_over_row_blocks(0, 3, add).len(), 3);
    }

    /// The writing form: every row written once, the same sums as the plain form, bit for
    /// bit on any thread count; sequences mapped in order.
    #[test]
    fn written_row_block_sums_and_sequences() {
        let b = Array2::from_shape_fn((3000, 50), |(i, j)| 1.0 / (1.0 + (i * 50 + j) as f64));
        let add = |r: std::ops::Range<usize>, mut acc: ndarray::ArrayViewMut1<'_, f64>| {
            for row in b.slice(ndarray::s![r, ..]).rows() {
                acc += &row;
            }
        };
        let want = sum_over_row_blocks(3000, 50, add);
        let run = || {
            let mut out = Array2::<f64>::zeros((3000, 50));
            let sums = sum_over_written_row_blocks(out.view_mut(), 50, |r0, mut blk, mut acc| {
                for (i, mut row) in blk.rows_mut().into_iter().enumerate() {
                    row.assign(&b.row(r0 + i));
                    row.mapv_inplace(|v| v + 1.0);
                    acc += &b.row(r0 + i);
                }
            });
            (out, sums)
        };
        let (out, sums) = run();
        assert_eq!(sums, want);
        assert_eq!(out, b.mapv(|v| v + 1.0));
        let mut a = Array2::<f64>::zeros((12, 2));
        let firsts = map_sequences(a.view_mut(), 3, |s, mut blk| {
            blk.fill(s as f64);
            blk.nrows()
        });
        assert_eq!(firsts, vec![3; 4]);
        assert!(
            a.rows()
                .into_iter()
                .enumerate()
                .all(|(i, r)| r[0] == (i / 3) as f64)
        );
        #[cfg(feature = "parallel")]
        for threads in [2, 5] {
            assert_eq!(on_threads(threads, run).1, want);
            let mut c = Array2::<f64>::zeros((12, 2));
            let got = on_threads(threads, || map_sequences(c.view_mut(), 3, |s, _| s));
            assert_eq!(got, vec![0, 1, 2, 3]);
        }
        let mut empty = Array2::<f64>::zeros((0, 4));
        assert_eq!(
            sum_over_written_row_blocks::<f64, _, _>(empty.view_mut(), 4, |_, _, _| ()).len(),
            4
        );
    }
}
