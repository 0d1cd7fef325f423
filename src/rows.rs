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

#[cfg(feature = "parallel")]
use ndarray::Axis;
use ndarray::{ArrayView2, ArrayViewMut2};

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

/// Runs `f(r0, a_block, b_block)` on matching blocks of whole rows of two matrices with the
/// same number of rows, both written, `r0` being the blocks' first row (in parallel when
/// large).
pub(crate) fn for_row_pairs<T, U, F>(mut a: ArrayViewMut2<'_, T>, mut b: ArrayViewMut2<'_, U>, f: F)
where
    T: Send + Sync,
    U: Send + Sync,
    F: Fn(usize, ArrayViewMut2<'_, T>, ArrayViewMut2<'_, U>) + Send + Sync,
{
    debug_assert_eq!(a.nrows(), b.nrows());
    match rows_per_task(a.nrows(), a.ncols().max(b.ncols())) {
        #[cfg(feature = "parallel")]
        Some(per) => {
            use rayon::prelude::*;
            a.axis_chunks_iter_mut(Axis(0), per)
                .into_par_iter()
                .zip(b.axis_chunks_iter_mut(Axis(0), per).into_par_iter())
                .enumerate()
                .for_each(|(i, (a, b))| f(i * per, a, b))
        }
        _ => f(0, a.view_mut(), b.view_mut()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

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
}
