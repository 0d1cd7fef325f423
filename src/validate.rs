//! Input checks shared by every public entry point.

use ndarray::ArrayRef2;

use crate::{Error, Float, Result};

/// Errors on an empty matrix or a non-finite entry.
pub(crate) fn matrix<T: Float>(what: &'static str, a: &ArrayRef2<T>) -> Result<()> {
    let (rows, cols) = a.dim();
    if rows == 0 || cols == 0 {
        return Err(Error::Empty { what, rows, cols });
    }
    finite(what, a)
}

/// Errors on the first non-finite entry.
pub(crate) fn finite<T: Float>(what: &'static str, a: &ArrayRef2<T>) -> Result<()> {
    // 0·x is 0 for finite x and NaN otherwise: one vectorizable pass in the common case
    // (eight independent lanes, so that the additions do not form one serial chain)
    let all_finite = match a.as_slice_memory_order() {
        Some(s) => {
            let mut acc = [T::zero(); 8];
            let chunks = s.chunks_exact(8);
            let rest = chunks
                .remainder()
                .iter()
                .fold(T::zero(), |m, &x| m + T::zero() * x);
            for c in chunks {
                for k in 0..8 {
                    acc[k] += T::zero() * c[k];
                }
            }
            acc.iter().fold(rest, |m, &x| m + x) == T::zero()
        }
        None => a.iter().all(|x| x.is_finite()),
    };
    if all_finite {
        return Ok(());
    }
    for ((row, col), x) in a.indexed_iter() {
        if !x.is_finite() {
            return Err(Error::NonFinite { what, row, col });
        }
    }
    Ok(())
}

/// Errors unless `value` is finite and > 0.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: "must be finite and > 0",
        })
    }
}

/// Errors on an empty matrix, a non-finite entry, or a column count other than `cols`.
pub(crate) fn matrix_with_cols<T: Float>(
    what: &'static str,
    a: &ArrayRef2<T>,
    cols: usize,
) -> Result<()> {
    matrix(what, a)?;
    if a.ncols() != cols {
        return Err(Error::ShapeMismatch {
            what,
            expected: format!("{cols} columns"),
            got: format!("{} columns", a.ncols()),
        });
    }
    Ok(())
}
