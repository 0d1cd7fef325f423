//! The optional backend: ndarray-linalg (LAPACK) and ndarray's BLAS-backed products.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};
use ndarray_linalg::{Eigh, JobSvd, Lapack, SVDDC, Scalar, UPLO};

pub(crate) fn gram_cols<T: Lapack + Scalar<Real = T>>(
    a: ArrayView2<T>,
    alpha: T,
    accumulate: bool,
    mut out: ArrayViewMut2<T>,
    _parallel: bool,
) {
    let beta = if accumulate { T::one() } else { T::zero() };
    general_mat_mul(alpha, &a.t(), &a, beta, &mut out);
}

pub(crate) fn gemm<T: Lapack + Scalar<Real = T>>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    accumulate: bool,
    mut c: ArrayViewMut2<T>,
    _parallel: bool,
) {
    let beta = if accumulate { T::one() } else { T::zero() };
    general_mat_mul(alpha, &a, &b, beta, &mut c);
}

/// `c ← then(alpha·a b)`: the BLAS product, then `then` on blocks of rows (in parallel when
/// large).
pub(crate) fn gemm_then<T: Lapack + Scalar<Real = T> + Send + Sync>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    mut c: ArrayViewMut2<T>,
    _parallel: bool,
    then: &super::Then<'_, T>,
) {
    general_mat_mul(alpha, &a, &b, T::zero(), &mut c);
    crate::rows::for_rows(c, |_, block| then(block));
}

pub(crate) fn cholesky_in_place<T: Lapack + Scalar<Real = T>>(
    mut a: ArrayViewMut2<T>,
    _parallel: bool,
) -> Result<(), usize> {
    use ndarray_linalg::CholeskyInto;
    // LAPACK works on a contiguous copy; the result is written back (lower triangle).
    let n = a.nrows();
    let mut owned = a.to_owned();
    crate::linalg::symmetrize_from_lower(owned.view_mut());
    match owned.cholesky_into(UPLO::Lower) {
        Ok(l) => {
            for i in 0..n {
                for j in 0..=i {
                    a[(i, j)] = l[(i, j)];
                }
            }
            Ok(())
        }
        Err(ndarray_linalg::error::LinalgError::Lapack(e)) => Err(lapack_pivot(&e).unwrap_or(0)),
        Err(_) => Err(0),
    }
}

fn lapack_pivot(e: &lax::error::Error) -> Option<usize> {
    match e {
        lax::error::Error::LapackComputationalFailure { return_code } => {
            usize::try_from(*return_code)
                .ok()
                .map(|r| r.saturating_sub(1))
        }
        _ => None,
    }
}

pub(crate) fn cholesky_inverse<T: Lapack + Scalar<Real = T> + num_traits::Float>(
    l: ArrayView2<T>,
    _parallel: bool,
) -> Array2<T> {
    use ndarray_linalg::{CholeskyFactorized, InverseC};
    let f = CholeskyFactorized {
        factor: l.to_owned(),
        uplo: UPLO::Lower,
    };
    let mut inv = f.invc().unwrap_or_else(|_| {
        // A valid factor always inverts; fall back to solving column by column.
        let n = l.nrows();
        let mut id = Array2::<T>::eye(n);
        cholesky_solve_in_place(l, id.view_mut(), false);
        id
    });
    crate::linalg::symmetrize_from_lower(inv.view_mut());
    inv
}

pub(crate) fn cholesky_solve_in_place<T: Lapack + Scalar<Real = T> + num_traits::Float>(
    l: ArrayView2<T>,
    mut b: ArrayViewMut2<T>,
    _parallel: bool,
) {
    use ndarray_linalg::{Diag, SolveTriangular};
    let rhs = b.to_owned();
    let solved = l
        .solve_triangular(UPLO::Lower, Diag::NonUnit, &rhs)
        .and_then(|y| l.t().solve_triangular(UPLO::Upper, Diag::NonUnit, &y));
    if let Ok(x) = solved {
        b.assign(&x);
    } else {
        b.fill(<T as num_traits::Float>::nan());
    }
}

pub(crate) fn eigh<T: Lapack + Scalar<Real = T>>(
    a: ArrayView2<T>,
) -> Option<(Array1<T>, Array2<T>)> {
    let mut full = a.to_owned();
    crate::linalg::symmetrize_from_lower(full.view_mut());
    full.eigh(UPLO::Lower).ok()
}

#[allow(clippy::type_complexity)]
pub(crate) fn thin_svd<T: Lapack + Scalar<Real = T>>(
    a: ArrayView2<T>,
) -> Option<(Array2<T>, Array1<T>, Array2<T>)> {
    let (u, s, vt) = a.to_owned().svddc(JobSvd::Some).ok()?;
    Some((u?, s, vt?.t().to_owned()))
}
