//! The scratch workspace: a small per-thread cache of scratch buffers.
//!
//! A CRATE block at batch 1 needs a few temporaries of a few hundred kilobytes each. Fresh
//! allocations of that size are mapped from the operating system and returned to it when
//! dropped, so every forward pass paid for page faults on first touch: measured at about a
//! quarter of a CRATE-S block's time. Temporaries taken from this cache go back to the
//! calling thread's cache when dropped and are reused by the next pass.
//!
//! Each thread keeps, per scalar type, at most [`KEEP`] buffers of at most [`MAX_BYTES`]
//! bytes each and [`TOTAL_BYTES`] together (the largest are kept); larger requests are plain
//! allocations that are never kept.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

use ndarray::Array2;

use crate::Float;

/// Buffers kept per thread and type.
pub(crate) const KEEP: usize = 8;
/// Largest buffer kept: 64 MiB.
pub(crate) const MAX_BYTES: usize = 64 << 20;
/// Most kept per thread and type: 192 MiB.
pub(crate) const TOTAL_BYTES: usize = 192 << 20;

fn max_elems<T>() -> usize {
    MAX_BYTES / std::mem::size_of::<T>()
}

/// Kept buffers of one thread.
pub type Pool<T> = RefCell<Vec<Vec<T>>>;

/// The per-thread pool of a scalar type (implemented on [`crate::float::Body`]; private).
pub trait Pooled<S: 'static> {
    /// The calling thread's cache for this type.
    fn pool() -> &'static LocalKey<Pool<S>>;
}

/// The calling thread's cache for `T`.
fn pool<T: Float>() -> &'static LocalKey<Pool<T>> {
    <T::Kernels as Pooled<T>>::pool()
}

/// Frees every scratch buffer that the calling thread keeps for later calls.
///
/// Layers borrow temporaries from a per-thread cache (at most 8 buffers of at most 64 MiB,
/// 192 MiB in all, per thread and float type) so that repeated forward passes do not pay for
/// fresh memory each time. The cache lives as long as its thread; call this to give the
/// memory back sooner, e.g. after the last forward pass of a long-lived thread. The next call
/// that needs a temporary allocates again.
///
/// ```
/// mcr2::release_workspace();
/// ```
pub fn release_workspace() {
    let _ = pool::<f32>().try_with(|p| p.borrow_mut().clear());
    let _ = pool::<f64>().try_with(|p| p.borrow_mut().clear());
}

macro_rules! pooled {
    ($t:ty) => {
        impl Pooled<$t> for crate::float::Body<$t> {
            fn pool() -> &'static LocalKey<Pool<$t>> {
                thread_local! {
                    static POOL: Pool<$t> = const { RefCell::new(Vec::new()) };
                }
                &POOL
            }
        }
    };
}
pooled!(f32);
pooled!(f64);

/// A rows × cols standard-layout matrix on loan from the thread's cache. Its initial contents
/// are unspecified (values left by an earlier user, or zeros): the borrower overwrites it.
pub(crate) struct Scratch<T: Float> {
    a: Option<Array2<T>>,
}

/// Takes a rows × cols scratch matrix (see [`Scratch`]).
pub(crate) fn take<T: Float>(rows: usize, cols: usize) -> Scratch<T> {
    let len = rows * cols;
    let reused = if len <= max_elems::<T>() {
        pool::<T>()
            .try_with(|p| {
                let mut p = p.borrow_mut();
                // the smallest kept buffer that is large enough
                let best = p
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.capacity() >= len)
                    .min_by_key(|(_, v)| v.capacity())
                    .map(|(i, _)| i);
                best.map(|i| p.swap_remove(i))
            })
            .ok()
            .flatten()
    } else {
        None
    };
    let mut v = reused.unwrap_or_else(|| Vec::with_capacity(len));
    v.resize(len, T::zero());
    Scratch {
        a: Some(Array2::from_shape_vec((rows, cols), v).expect("len = rows·cols")),
    }
}

impl<T: Float> Deref for Scratch<T> {
    type Target = Array2<T>;
    fn deref(&self) -> &Array2<T> {
        self.a.as_ref().expect("present until dropped")
    }
}

impl<T: Float> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut Array2<T> {
        self.a.as_mut().expect("present until dropped")
    }
}

impl<T: Float> Drop for Scratch<T> {
    fn drop(&mut self) {
        let Some(a) = self.a.take() else { return };
        let (v, _) = a.into_raw_vec_and_offset();
        if v.capacity() > max_elems::<T>() {
            return;
        }
        // a thread being torn down no longer has a pool: the buffer is simply freed
        let _ = pool::<T>().try_with(|p| {
            let mut p = p.borrow_mut();
            p.push(v);
            let limit = TOTAL_BYTES / std::mem::size_of::<T>();
            while p.len() > KEEP || p.iter().map(Vec::capacity).sum::<usize>() > limit {
                // drop the smallest
                let i = (0..p.len())
                    .min_by_key(|&i| p[i].capacity())
                    .expect("non-empty");
                p.swap_remove(i);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let first = take::<f64>(30, 40);
        let ptr = first.as_ptr();
        drop(first);
        // a smaller request reuses the kept buffer
        let again = take::<f64>(20, 10);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(again.dim(), (20, 10));
        drop(again);
        let many: Vec<_> = (0..KEEP + 3).map(|i| take::<f32>(i + 1, 5)).collect();
        drop(many);
        let kept = pool::<f32>().with(|p| p.borrow().len());
        assert_eq!(kept, KEEP);
        // the largest were kept
        let smallest = pool::<f32>().with(|p| p.borrow().iter().map(Vec::capacity).min());
        assert_eq!(smallest, Some(4 * 5));
        // a buffer above the per-buffer limit is not kept; the total stays bounded
        drop(take::<f64>(MAX_BYTES / 8 + 1, 1));
        let big = pool::<f64>().with(|p| p.borrow().iter().map(Vec::capacity).max());
        assert!(big.unwrap_or(0) <= MAX_BYTES / 8);
        let many: Vec<_> = (0..4).map(|_| take::<f64>(MAX_BYTES / 8, 1)).collect();
        drop(many);
        let total: usize = pool::<f64>().with(|p| p.borrow().iter().map(Vec::capacity).sum());
        assert!(total * 8 <= TOTAL_BYTES, "{total}");
        assert_eq!(total * 8, 3 * MAX_BYTES);
    }
}
