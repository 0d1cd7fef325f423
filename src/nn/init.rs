//! Reference initializations.

use ndarray::Array2;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::Float;

/// A rows × cols matrix of independent N(0, std²) entries.
///
/// The reference ViT code initializes with timm's `trunc_normal_(std=0.02)`, whose cut at
/// ±2 lies 100 standard deviations out: the same as a plain normal with σ = 0.02.
pub(crate) fn normal<T: Float, R: Rng + ?Sized>(
    rows: usize,
    cols: usize,
    std: f64,
    rng: &mut R,
) -> Array2<T> {
    Array2::from_shape_simple_fn((rows, cols), || {
        T::from_f64(std * rng.sample::<f64, _>(StandardNormal))
    })
}

/// A rows × cols matrix (a `Linear` weight, out × in) with PyTorch's `xavier_uniform_`:
/// U(±√(6/(rows + cols))).
pub(crate) fn xavier_uniform<T: Float, R: Rng + ?Sized>(
    rows: usize,
    cols: usize,
    rng: &mut R,
) -> Array2<T> {
    let bound = (6.0 / (rows + cols) as f64).sqrt();
    Array2::from_shape_simple_fn((rows, cols), || {
        T::from_f64(rng.random_range(-bound..bound))
    })
}
