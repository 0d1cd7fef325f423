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

/// Runs `f(j, inner)` for every class j: across the rayon pool when the `parallel` feature is
/// on and there is more than one class (then `inner` is false: each class's kernels run
/// sequentially), one after the other otherwise (`inner` true: kernels may use threads).
pub(crate) fn for_classes<R: Send>(k: usize, f: impl Fn(usize, bool) -> R + Sync + Send) -> Vec<R> {
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
/// scratch of at most `CHUNK_ELEMS` elements.
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
    let mut buf = Array2::<T>::zeros((chunk.min(rows.len()), d));
    for (c, idx) in rows.chunks(chunk).enumerate() {
        let sc = sqrt_w.map(|s| &s[c * chunk..c * chunk + idx.len()]);
        let mut xb = head_rows(&mut buf, idx.len());
        gather(z, idx, sc, xb.view_mut());
        crate::linalg::gram_cols(xb.view(), T::one(), true, g.view_mut(), parallel);
    }
    g
}
