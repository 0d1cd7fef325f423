//! Input checks shared by every public entry point.

use std::sync::atomic::{AtomicUsize, Ordering};

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
    let ok = match a.as_slice_memory_order() {
        Some(s) => crate::rows::all_blocks(s, all_finite),
        None => a.iter().all(|x| x.is_finite()),
    };
    if ok {
        return Ok(());
    }
    for ((row, col), x) in a.indexed_iter() {
        if !x.is_finite() {
            return Err(Error::NonFinite { what, row, col });
        }
    }
    Ok(())
}

/// Errors with [`Error::NonFinite`] when a computed result holds NaN or ±∞ (finite inputs
/// whose result overflowed): results are finite or an error, never silently not.
pub(crate) fn finite_output<T: Float, D: ndarray::Dimension>(
    what: &'static str,
    a: &ndarray::ArrayRef<T, D>,
) -> Result<()> {
    if let Some(s) = a.as_slice_memory_order() {
        if crate::rows::all_blocks(s, all_finite) {
            return Ok(());
        }
    }
    match a.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(pos) => {
            let cols = a.shape().last().copied().unwrap_or(1).max(1);
            Err(Error::NonFinite {
                what,
                row: pos / cols,
                col: pos % cols,
            })
        }
    }
}

/// Errors with [`Error::NonFinite`] when a computed scalar is NaN or ±∞; passes it through
/// otherwise.
pub(crate) fn finite_value<T: Float>(what: &'static str, value: T) -> Result<T> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::NonFinite {
            what,
            row: 0,
            col: 0,
        })
    }
}

/// Whether every entry is finite: 0·x is 0 for finite x and NaN otherwise, summed in one
/// vectorizable pass (eight independent lanes, so that the additions do not form one serial
/// chain).
fn all_finite<T: Float>(s: &[T]) -> bool {
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

/// `a + b` samples of streaming statistics, or [`Error::TooLarge`] naming the overflow.
pub(crate) fn sample_count(a: usize, b: usize) -> Result<usize> {
    a.checked_add(b).ok_or(Error::TooLarge {
        what: "sample count of the statistics (it overflows usize)",
        bytes: None,
        budget: memory_budget(),
    })
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

/// Errors unless `value` is finite and ≥ 0.
pub(crate) fn finite_non_negative(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: "must be finite and >= 0",
        })
    }
}

/// Largest accepted depth of an encoder (the reference models have 12 or 24 layers).
pub(crate) const MAX_DEPTH: usize = 10_000;

/// Errors unless 1 ≤ `depth` ≤ [`MAX_DEPTH`]: the one depth check of every encoder.
pub(crate) fn depth(depth: usize) -> Result<()> {
    at_least_one("depth", depth)?;
    at_most("depth", depth as f64, MAX_DEPTH as f64)
}

/// Errors unless `value` ≤ `max` (a documented bound that keeps results finite).
pub(crate) fn at_most(name: &'static str, value: f64, max: f64) -> Result<()> {
    if value <= max {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: "exceeds its documented bound (results could overflow)",
        })
    }
}

/// Errors unless `patch_size` and `channels` are ≥ 1 and the image side is a positive
/// multiple of `patch_size` (the patch grid of the image models).
pub(crate) fn patch_grid(patch_size: usize, image_size: usize, channels: usize) -> Result<()> {
    at_least_one("patch_size", patch_size)?;
    at_least_one("channels", channels)?;
    if image_size == 0 || image_size % patch_size != 0 {
        return Err(Error::InvalidParameter {
            name: "image_size",
            value: image_size.to_string(),
            reason: "must be a positive multiple of patch_size",
        });
    }
    Ok(())
}

/// Errors unless `value` ≥ 1.
pub(crate) fn at_least_one(name: &'static str, value: usize) -> Result<()> {
    if value >= 1 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: "must be at least 1",
        })
    }
}

/// The default memory budget: 8 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 8 << 30;

static MEMORY_BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_MEMORY_BUDGET);

/// Sets the largest single allocation, in bytes, that any function of this crate attempts
/// (default [`DEFAULT_MEMORY_BUDGET`], 8 GiB). A call whose arrays would need more returns
/// [`Error::TooLarge`] before allocating. The budget is global to the process.
///
/// ```
/// use mcr2::{Error, RateStats, memory_budget, set_memory_budget};
/// let before = memory_budget();
/// // ten 100 × 100 Gram matrices need 800 kB in f64
/// assert!(RateStats::<f64>::new(100, 10).is_ok());
/// set_memory_budget(100_000);
/// assert!(matches!(
///     RateStats::<f64>::new(100, 10),
///     Err(Error::TooLarge { bytes: Some(800_000), .. })
/// ));
/// set_memory_budget(before);
/// ```
pub fn set_memory_budget(bytes: usize) {
    MEMORY_BUDGET.store(bytes, Ordering::Relaxed);
}

/// The current memory budget in bytes (see [`set_memory_budget`]).
pub fn memory_budget() -> usize {
    MEMORY_BUDGET.load(Ordering::Relaxed)
}

/// The product of `dims` as a number of `T` elements, or [`Error::TooLarge`] when the
/// product overflows or the bytes exceed the memory budget.
pub(crate) fn elements_of<T>(what: &'static str, dims: &[usize]) -> Result<usize> {
    let too_large = |bytes: Option<usize>| Error::TooLarge {
        what,
        bytes,
        budget: memory_budget(),
    };
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(too_large(None))?;
    let bytes = n
        .checked_mul(std::mem::size_of::<T>().max(1))
        .ok_or(too_large(None))?;
    if bytes > memory_budget() {
        return Err(too_large(Some(bytes)));
    }
    Ok(n)
}

/// [`elements_of`] for f64 values, for sizes checked before the float type is known.
pub(crate) fn elements(dims: &[usize]) -> Result<usize> {
    elements_of::<f64>("array", dims)
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
