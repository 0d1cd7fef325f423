#![cfg_attr(feature = "lapack", allow(dead_code))]
//! The default backend: faer, viewed zero-copy from ndarray.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::triangular::BlockStructure;
use faer::traits::RealField;
use faer::{Accum, Par, Side};
use faer_ext::{IntoFaer, IntoNdarray};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};

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

pub(crate) fn gemm<T: RealField>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    accumulate: bool,
    c: ArrayViewMut2<T>,
    parallel: bool,
) {
    faer::linalg::matmul::matmul(
        c.into_faer(),
        accum(accumulate),
        a.into_faer(),
        b.into_faer(),
        alpha,
        par(parallel),
    );
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
