//! The affine map on tokens.

use ndarray::{Array1, Array2, ArrayD, ArrayRef2, ArrayView2, ArrayViewD, ArrayViewMutD};
use rand::Rng;

use super::{
    Checkpoint, Layer, ScopedWriter, TensorReader, Trainable, check_gradients, check_upstream,
    column_sums, grad_matrix, grad_vector, update_array,
};
use crate::workspace::Scratch;
use crate::{Error, Float, Result};
use std::ops::Deref;

/// Sizes of a [`Linear`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LinearConfig {
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

impl LinearConfig {
    /// The standard deviation of the reference initialization, `trunc_normal_(std=0.02)`.
    pub const INIT_STD: f64 = 0.02;

    /// `in_dim → out_dim` with a bias.
    pub fn new(in_dim: usize, out_dim: usize) -> Self {
        Self {
            in_dim,
            out_dim,
            bias: true,
        }
    }

    /// The same sizes without a bias.
    pub fn without_bias(mut self) -> Self {
        self.bias = false;
        self
    }

    /// Errors on a zero size or one whose weight would not fit in memory.
    pub fn check(&self) -> Result<()> {
        crate::validate::at_least_one("in_dim", self.in_dim)?;
        crate::validate::at_least_one("out_dim", self.out_dim)?;
        crate::validate::elements(&[self.in_dim, self.out_dim])?;
        Ok(())
    }
}

/// `y = x Wᵀ + b` on every row (token) of `x`, with W: out × in as PyTorch's `nn.Linear`
/// stores it. Reference names: `weight`, `bias`.
///
/// ```
/// use mcr2::ndarray::array;
/// use mcr2::nn::Linear;
/// let layer = Linear::from_parts(array![[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]], Some(array![0.5, 0.0, -1.0]))?;
/// assert_eq!(layer.forward(&array![[1.0, 1.0]])?, array![[3.5, 1.0, 0.0]]);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<T: Float> {
    weight: Array2<T>,
    bias: Option<Array1<T>>,
}

impl<T: Float> Linear<T> {
    /// The reference initialization: W ~ N(0, 0.02²) entrywise, b = 0.
    pub fn new<R: Rng + ?Sized>(config: &LinearConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        Self::from_parts(
            super::normal(config.out_dim, config.in_dim, LinearConfig::INIT_STD, rng),
            config.bias.then(|| Array1::zeros(config.out_dim)),
        )
    }

    /// From a weight (out × in) and an optional bias (out).
    pub fn from_parts(weight: Array2<T>, bias: Option<Array1<T>>) -> Result<Self> {
        crate::validate::matrix("linear weight", &weight)?;
        if let Some(b) = &bias {
            if b.len() != weight.nrows() {
                return Err(Error::ShapeMismatch {
                    what: "linear bias",
                    expected: format!("{} entries (the weight's rows)", weight.nrows()),
                    got: format!("{}", b.len()),
                });
            }
            crate::validate::finite("linear bias", &b.view().insert_axis(ndarray::Axis(0)))?;
        }
        Ok(Self {
            weight: weight.as_standard_layout().into_owned(),
            bias: bias.map(|b| b.as_standard_layout().into_owned()),
        })
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight.ncols()
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight.nrows()
    }

    /// The weight W (out × in).
    pub fn weight(&self) -> &Array2<T> {
        &self.weight
    }

    /// The bias b, if any.
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_ref()
    }

    /// This layer's sizes.
    pub fn config(&self) -> LinearConfig {
        LinearConfig {
            in_dim: self.in_dim(),
            out_dim: self.out_dim(),
            bias: self.bias.is_some(),
        }
    }

    /// `x Wᵀ + b` for every row of `x` (n × in).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("linear input", x, self.in_dim())?;
        Ok(self.apply(x.view()))
    }

    /// `x Wᵀ + b` of checked rows.
    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut y = Array2::<T>::zeros((x.nrows(), self.out_dim()));
        self.apply_into(x, &mut y);
        y
    }

    /// `y ← y + x Wᵀ + b`.
    pub(crate) fn apply_into(&self, x: ArrayView2<T>, y: &mut Array2<T>) {
        if let Some(b) = &self.bias {
            for mut r in y.rows_mut() {
                r += b;
            }
        }
        crate::linalg::gemm(T::one(), x, self.weight.t(), true, y.view_mut(), true);
    }
}

impl<T: Float> Layer<T> for Linear<T> {
    fn dim(&self) -> usize {
        self.in_dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        Linear::forward(self, x)
    }

    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let mut p = vec![("weight".to_string(), self.weight.view().into_dyn())];
        if let Some(b) = &self.bias {
            p.push(("bias".to_string(), b.view().into_dyn()));
        }
        p
    }
}

impl<T: Float> Checkpoint<T> for Linear<T> {
    type Config = LinearConfig;

    fn load(reader: &TensorReader<'_>, config: &LinearConfig) -> Result<Self> {
        config.check()?;
        let weight = reader.matrix("weight", config.out_dim, config.in_dim)?;
        let bias = if config.bias {
            Some(reader.vector("bias", config.out_dim)?)
        } else {
            None
        };
        Self::from_parts(weight, bias)
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        super::save_parameters(self, writer)
    }
}

/// What [`Linear`]'s backward needs: its input x, m × in values for m rows (read as a
/// matrix through `Deref`). The buffer comes from the thread's scratch workspace and goes
/// back to it when the cache is dropped, so that the next training step reuses it.
#[derive(Debug, Clone)]
pub struct LinearCache<T: Float> {
    x: Scratch<T>,
}

impl<T: Float> LinearCache<T> {
    /// A copy of `x` in a workspace buffer.
    pub(crate) fn copy_of(x: ArrayView2<T>) -> Self {
        Self {
            x: crate::workspace::copy_of(x),
        }
    }

    /// `x` itself, which the caller gives up (it goes back to the workspace when dropped).
    pub(crate) fn adopt(x: Array2<T>) -> Self {
        Self {
            x: crate::workspace::adopt(x),
        }
    }
}

impl<T: Float> Deref for LinearCache<T> {
    type Target = Array2<T>;
    fn deref(&self) -> &Array2<T> {
        &self.x
    }
}

impl<T: Float> Trainable<T> for Linear<T> {
    type Cache = LinearCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, _n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("linear input", &x, self.in_dim())?;
        let y = self.apply(x);
        crate::validate::finite_output("linear output", &y)?;
        Ok((y, LinearCache::copy_of(x)))
    }

    /// `∂W += dyᵀ x`, `∂b += Σ_rows dy`, `∂x = dy W`.
    fn backward(
        &self,
        cache: &LinearCache<T>,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        let x = &cache.x;
        check_gradients(&self.parameters(), grads)?;
        check_upstream(&dy, (x.nrows(), self.out_dim()))?;
        let gw = grad_matrix(&mut grads[0]);
        crate::linalg::gemm(T::one(), dy.t(), x.view(), true, gw, true);
        if self.bias.is_some() {
            let mut gb = grad_vector(&mut grads[1]);
            gb += &column_sums(dy);
        }
        // written whole by the product
        let mut dx = crate::workspace::for_overwrite::<T>(x.nrows(), x.ncols());
        crate::linalg::gemm(T::one(), dy, self.weight.view(), false, dx.view_mut(), true);
        Ok(dx)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        update_array(update, "weight", &mut self.weight)?;
        if let Some(b) = &mut self.bias {
            update_array(update, "bias", b)?;
        }
        Ok(())
    }
}
