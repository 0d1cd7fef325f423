//! The scratch workspace: a small per-thread cache of scratch buffers.
//!
//! A CRATE block at batch 1 needs a few temporaries of a few hundred kilobytes each. Fresh
//! allocations of that size are mapped from the operating system and returned to it when
//! dropped, so every forward pass paid for page faults on first touch: measured at about a
//! quarter of a CRATE-S block's time. Temporaries taken from this cache go back to the
//! calling thread's cache when dropped and are reused by the next pass.
//!
//! The training forwards keep what their backward needs in the same kind of buffer, so a
//! training step's caches go back to the cache when the step drops them and the next step
//! reuses them. Fresh memory for every cache, every step (page faults and zeroing), took
//! about a quarter of a CRATE-T block's forward+backward at batch 32: 380 ms before, 271 ms
//! with the caches kept here (criterion, f32, 2 threads, AMD EPYC).
//!
//! Each thread keeps, per scalar type, at most [`KEEP`] buffers of at most [`MAX_BYTES`]
//! bytes each and [`TOTAL_BYTES`] together (the largest are kept); larger requests are plain
//! allocations that are never kept.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

use ndarray::Array2;

use crate::Float;

/// Buffers kept per thread and type: enough for the caches of a deep model's
/// training step.
pub(crate) const KEEP: usize = 256;
/// Largest buffer kept: 256 MiB (the attention maps of a CRATE-S block at batch 32 in f64
/// are 119 MB).
pub(crate) const MAX_BYTES: usize = 256 << 20;
/// Most kept per thread and type: 1 GiB (a CRATE-S block's forward+backward at batch 32 in
/// f64 uses about 0.5 GiB of caches and temporaries).
pub(crate) const TOTAL_BYTES: usize = 1 << 30;

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

/// Frees every scratch buffer that the calling thread and, with the `parallel` feature, the
/// threads of the current rayon pool keep for later calls.
///
/// Layers and the rate functions borrow temporaries, and the training forwards their caches,
/// from a per-thread cache (at most 256 buffers of at most 256 MiB, 1 GiB in all, per thread
/// and float type) so that repeated forward passes, rate evaluations and training steps do
/// not pay for fresh memory each time. A large forward pass or rate evaluation runs on a
/// thread of the rayon pool (the `parallel` feature), so its temporaries are kept there.
/// The caches live as long as their threads; call this to give the memory back sooner, e.g.
/// after the last forward pass or training step. The next call that needs a temporary
/// allocates again.
///
/// ```
/// mcr2::release_workspace();
/// ```
pub fn release_workspace() {
    release_this_thread();
    #[cfg(feature = "parallel")]
    rayon::broadcast(|_| release_this_thread());
}

/// Frees the calling thread's kept buffers.
fn release_this_thread() {
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
    let v = match reused {
        Some(mut v) => {
            v.resize(len, T::zero());
            v
        }
        // zeroed by the allocator: fresh pages from the operating system come zeroed, so a
        // large buffer is not written twice
        None => vec![T::zero(); len],
    };
    Scratch {
        a: Some(Array2::from_shape_vec((rows, cols), v).expect("len = rows·cols")),
    }
}

/// A copy of `x` in a matrix from the cache (see [`Scratch`]).
pub(crate) fn copy_of<T: Float>(x: ndarray::ArrayView2<T>) -> Scratch<T> {
    let mut a = take::<T>(x.nrows(), x.ncols());
    a.assign(&x);
    a
}

/// A rows × cols plain array whose buffer comes from the cache, its contents unspecified
/// (see [`Scratch`]): for results that the caller overwrites whole and that leave a layer
/// as plain arrays (a composite layer gives them back with [`recycle`] once used).
pub(crate) fn for_overwrite<T: Float>(rows: usize, cols: usize) -> Array2<T> {
    let mut a = take::<T>(rows, cols);
    a.a.take().expect("present until dropped")
}

/// A copy of `x` as a plain array whose buffer comes from the cache (see [`for_overwrite`]).
pub(crate) fn copied<T: Float>(x: ndarray::ArrayView2<T>) -> Array2<T> {
    let mut a = copy_of(x);
    a.a.take().expect("present until dropped")
}

/// `a` as a [`Scratch`], whose buffer goes to the calling thread's cache when dropped (a
/// copy if `a` is not in standard layout).
pub(crate) fn adopt<T: Float>(a: Array2<T>) -> Scratch<T> {
    if a.is_standard_layout() {
        Scratch { a: Some(a) }
    } else {
        copy_of(a.view())
    }
}

/// Gives the buffer of `a` to the calling thread's cache (see [`for_overwrite`]).
pub(crate) fn recycle<T: Float>(a: Array2<T>) {
    drop(Scratch { a: Some(a) });
}

impl<T: Float> Clone for Scratch<T> {
    fn clone(&self) -> Self {
        copy_of(self.view())
    }
}

impl<T: Float> std::fmt::Debug for Scratch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
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
            trim(&mut p, KEEP, TOTAL_BYTES / std::mem::size_of::<T>());
        });
    }
}

/// Drops the smallest kept buffers until at most `keep` are left holding at most `limit`
/// elements together.
fn trim<T>(p: &mut Vec<Vec<T>>, keep: usize, limit: usize) {
    let mut total: usize = p.iter().map(Vec::capacity).sum();
    while p.len() > keep || total > limit {
        let i = (0..p.len())
            .min_by_key(|&i| p[i].capacity())
            .expect("non-empty");
        total -= p.swap_remove(i).capacity();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `release_workspace` empties the caches of every thread of the pool it is called on.
    #[cfg(feature = "parallel")]
    #[test]
    fn release_empties_every_thread_of_the_pool() {
        let kept = || pool::<f32>().with(|p| p.borrow().len());
        let pool3 = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool3.install(|| {
            rayon::broadcast(|_| drop(take::<f32>(16, 16)));
            assert!(rayon::broadcast(|_| kept()).iter().all(|&k| k >= 1));
            release_workspace();
            assert_eq!(rayon::broadcast(|_| kept()), vec![0; 3]);
        });
    }

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
        // a buffer above the per-buffer limit is not kept
        drop(take::<f64>(MAX_BYTES / 8 + 1, 1));
        let big = pool::<f64>().with(|p| p.borrow().iter().map(Vec::capacity).max());
        assert!(big.unwrap_or(0) <= MAX_BYTES / 8);
        // the total stays bounded: the smallest go first
        let mut p: Vec<Vec<u8>> = [5, 1, 4, 2, 3].map(Vec::with_capacity).into();
        trim(&mut p, 4, 9);
        let mut left: Vec<_> = p.iter().map(Vec::capacity).collect();
        left.sort();
        assert_eq!(left, [4, 5]);
        trim(&mut p, 1, 100);
        assert_eq!(p.iter().map(Vec::capacity).collect::<Vec<_>>(), [5]);
    }

    /// A training step's caches and intermediates go back to the cache when dropped, and
    /// the next step takes the same buffers instead of fresh memory.
    #[test]
    fn training_steps_reuse_their_buffers() {
        use crate::crate_layer::{CrateBlock, CrateBlockConfig};
        use crate::nn::Trainable;
        use rand::{SeedableRng, rngs::StdRng};
        let block = CrateBlock::<f64>::new(
            &CrateBlockConfig::new(8, 2, 4),
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap();
        let x = ndarray::Array2::from_shape_fn((30, 8), |(i, j)| ((i * 3 + j) % 7) as f64 - 3.0);
        let dy = ndarray::Array2::from_elem((30, 8), 0.5);
        let kept = || {
            let mut p: Vec<usize> =
                pool::<f64>().with(|p| p.borrow().iter().map(|v| v.as_ptr() as usize).collect());
            p.sort();
            p
        };
        let step = || {
            let (y, cache) = block.forward_train(x.view(), 10).unwrap();
            let mut grads: Vec<_> = crate::nn::Layer::gradient_buffers(&block)
                .into_iter()
                .map(|(_, g)| g)
                .collect();
            let dx = block.backward(&cache, dy.view(), &mut grads).unwrap();
            recycle(y);
            recycle(dx);
        };
        release_workspace();
        step();
        let first = kept();
        // the caches (x̂ twice, MSSA's x, W and O, ISTA's x and y) at least
        assert!(first.len() >= 7, "{}", first.len());
        step();
        assert_eq!(kept(), first);
    }

    #[test]
    fn copied_and_adopted_matrices() {
        let x = ndarray::Array2::from_shape_fn((2, 5), |(i, j)| (i * 5 + j) as f32);
        let c = copy_of(x.t());
        assert_eq!(*c, x.t());
        assert!(c.is_standard_layout());
        assert_eq!(*c.clone(), *c);
        // a plain array from the cache, given back and taken again
        assert_eq!(copied(x.view()), x);
        let a = for_overwrite::<f32>(6, 7);
        assert_eq!(a.dim(), (6, 7));
        let ptr = a.as_ptr();
        recycle(a);
        assert_eq!(take::<f32>(7, 6).as_ptr(), ptr);
        // adopted arrays go back to the cache too; a transposed one is copied first
        let b = adopt(ndarray::Array2::<f32>::zeros((3, 3)));
        let ptr = b.as_ptr();
        drop(b);
        assert_eq!(take::<f32>(1, 9).as_ptr(), ptr);
        let t = ndarray::Array2::from_shape_fn((2, 3), |(i, j)| (i + 10 * j) as f32);
        let tt = adopt(t.clone().reversed_axes());
        assert!(tt.is_standard_layout());
        assert_eq!(*tt, t.t());
    }
}
