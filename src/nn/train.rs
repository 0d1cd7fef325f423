//! The training side of the layer vocabulary: a forward that keeps what the backward needs,
//! the backward beside it, and parameter updates that keep each layer's derived state
//! consistent.
//!
//! Gradients are plain arrays, one per entry of [`Layer::parameters`] (same order and
//! shapes: [`Layer::gradient_buffers`] makes them); a backward *adds* its parameter
//! gradients into them, so one buffer can collect a whole batch or several losses.

use ndarray::{
    Array, Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMut1, ArrayViewMut2, ArrayViewMutD,
    Dimension,
};

use super::Layer;
use crate::{Error, Float, Result};

/// A layer that can be trained. Rows of `x` are tokens: `b` sequences of `n` tokens as
/// b·n rows (layers that act row by row ignore `n`).
pub trait Trainable<T: Float>: Layer<T> {
    /// What the training forward keeps for the backward (its size is documented per layer).
    type Cache;

    /// The forward on `x` (b·n × dim), and the cache for [`backward`](Self::backward).
    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)>;

    /// Given `dy = ∂L/∂y` (shape of the forward's output), adds `∂L/∂θ` into `grads` (one
    /// array per parameter, in [`Layer::parameters`] order) and returns `∂L/∂x`.
    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>>;

    /// Calls `update(name, parameter)` for every parameter in [`Layer::parameters`] order,
    /// then recomputes what the layer derives from its parameters. Errors (and leaves the
    /// layer unusable for nothing: the values stay as `update` left them) when a parameter
    /// became non-finite.
    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()>;
}

/// Errors unless `grads` has one array per parameter of `layer`, each of its shape.
pub(crate) fn check_gradients<T: Float>(
    parameters: &[(String, ArrayViewD<'_, T>)],
    grads: &[ArrayD<T>],
) -> Result<()> {
    check_gradient_shapes(
        parameters
            .iter()
            .map(|(name, p)| (name.as_str(), p.shape())),
        grads,
    )
}

/// Errors unless `grads` has one array per `(name, shape)`, each of that shape.
pub(crate) fn check_gradient_shapes<'a, T>(
    shapes: impl ExactSizeIterator<Item = (&'a str, &'a [usize])>,
    grads: &[ArrayD<T>],
) -> Result<()> {
    if grads.len() != shapes.len() {
        return Err(Error::ShapeMismatch {
            what: "gradient buffers",
            expected: format!("{} arrays (one per parameter)", shapes.len()),
            got: format!("{}", grads.len()),
        });
    }
    for ((name, shape), g) in shapes.zip(grads) {
        if shape != g.shape() {
            return Err(Error::ShapeMismatch {
                what: "gradient buffer",
                expected: format!("{name}: {shape:?}"),
                got: format!("{:?}", g.shape()),
            });
        }
    }
    Ok(())
}

/// Errors unless `dy` has `shape`.
pub(crate) fn check_upstream<T>(dy: &ArrayView2<T>, shape: (usize, usize)) -> Result<()> {
    if dy.dim() != shape {
        return Err(Error::ShapeMismatch {
            what: "upstream gradient",
            expected: format!("{}×{}", shape.0, shape.1),
            got: format!("{}×{}", dy.nrows(), dy.ncols()),
        });
    }
    Ok(())
}

/// Passes parameter `a` to `update` under `name`, then errors if it is no longer finite.
pub(crate) fn update_array<T: Float, D: Dimension>(
    update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    name: &str,
    a: &mut Array<T, D>,
) -> Result<()> {
    update(name, a.view_mut().into_dyn());
    check_updated(name, &a.view().into_dyn())
}

/// A gradient buffer known (checked) to be a matrix.
pub(crate) fn grad_matrix<T>(g: &mut ArrayD<T>) -> ArrayViewMut2<'_, T> {
    g.view_mut()
        .into_dimensionality()
        .expect("a checked gradient buffer")
}

/// A gradient buffer known (checked) to be a vector.
pub(crate) fn grad_vector<T>(g: &mut ArrayD<T>) -> ArrayViewMut1<'_, T> {
    g.view_mut()
        .into_dimensionality()
        .expect("a checked gradient buffer")
}

/// Errors when a parameter is no longer finite after an update.
fn check_updated<T: Float>(name: &str, p: &ArrayViewD<'_, T>) -> Result<()> {
    if p.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::InvalidWeights {
            name: name.to_string(),
            reason: "not finite after the update".into(),
        })
    }
}

/// Rows of `a` summed: `Σ_i a_i` (a length-`ncols` vector).
pub(crate) fn column_sums<T: Float>(a: ArrayView2<T>) -> ndarray::Array1<T> {
    crate::rows::sum_over_row_blocks(a.nrows(), a.ncols(), |rows, mut acc| {
        for row in a.slice(ndarray::s![rows, ..]).rows() {
            acc += &row;
        }
    })
}

/// Errors unless `m` rows are a whole number (≥ 1) of sequences of `n ≥ 1` tokens.
pub(crate) fn check_sequences(m: usize, n: usize) -> Result<()> {
    if n == 0 || m == 0 || m % n != 0 {
        return Err(Error::ShapeMismatch {
            what: "token rows",
            expected: format!("a positive multiple of the sequence length {n}"),
            got: format!("{m}"),
        });
    }
    Ok(())
}

/// `update` with every name prefixed by `prefix`: what a composite layer passes to its parts'
/// [`Trainable::update_parameters`].
pub(crate) fn scoped<'a, T: Float>(
    prefix: &'a str,
    update: &'a mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
) -> impl FnMut(&str, ArrayViewMutD<'_, T>) + 'a {
    move |name: &str, p: ArrayViewMutD<'_, T>| update(&format!("{prefix}{name}"), p)
}

/// The training forward through a stack of layers on `x` (sequences of `n` tokens): the
/// output and every layer's cache, in order.
pub(crate) fn stack_forward_train<T: Float, L: Trainable<T>>(
    layers: &[L],
    x: Array2<T>,
    n: usize,
) -> Result<(Array2<T>, Vec<L::Cache>)> {
    let mut caches = Vec::with_capacity(layers.len());
    let mut z = x;
    for layer in layers {
        let (out, cache) = layer.forward_train(z.view(), n)?;
        caches.push(cache);
        // the layer kept what it needs: the input's buffer serves the next step
        crate::workspace::recycle(std::mem::replace(&mut z, out));
    }
    Ok((z, caches))
}

/// The backward through a stack of layers (last layer first): `grads` holds every layer's
/// gradient buffers one layer after another; returns `∂L/∂x`.
pub(crate) fn stack_backward<T: Float, L: Trainable<T>>(
    layers: &[L],
    caches: &[L::Cache],
    grads: &mut [ArrayD<T>],
    dy: Array2<T>,
) -> Result<Array2<T>> {
    let per = layers.first().map_or(0, |l| l.parameters().len());
    let mut d = dy;
    for ((layer, cache), g) in layers
        .iter()
        .zip(caches)
        .zip(grads.chunks_mut(per.max(1)))
        .rev()
    {
        let dx = layer.backward(cache, d.view(), g)?;
        crate::workspace::recycle(std::mem::replace(&mut d, dx));
    }
    Ok(d)
}
