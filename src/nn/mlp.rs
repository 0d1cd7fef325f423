//! The two-layer GELU perceptron of transformer blocks.

use ndarray::{Array2, ArrayD, ArrayRef2, ArrayView2, ArrayViewD, ArrayViewMutD};
use rand::Rng;

use super::{
    Checkpoint, Layer, Linear, LinearCache, LinearConfig, ScopedWriter, TensorReader, Trainable,
};
use crate::workspace::Scratch;
use crate::{Error, Float, Result};

/// Sizes of an [`Mlp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MlpConfig {
    /// Input and output width.
    pub dim: usize,
    /// Hidden width.
    pub hidden: usize,
}

impl MlpConfig {
    /// Errors on a zero size or weights that would not fit in memory.
    pub fn check(&self) -> Result<()> {
        LinearConfig::new(self.dim, self.hidden).check()
    }
}

/// `MLP(x) = fc2(GELU(fc1(x)))` on every row, with the exact GELU `x Φ(x)` (PyTorch's
/// `nn.GELU()`). Reference names: `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`.
///
/// ```
/// use mcr2::ndarray::Array2;
/// use mcr2::nn::{Mlp, MlpConfig};
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// let mlp = Mlp::<f32>::new(&MlpConfig { dim: 8, hidden: 32 }, &mut StdRng::seed_from_u64(0))?;
/// assert_eq!(mlp.forward(&Array2::<f32>::zeros((3, 8)))?.dim(), (3, 8));
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp<T: Float> {
    fc1: Linear<T>,
    fc2: Linear<T>,
}

impl<T: Float> Mlp<T> {
    /// The reference initialization of both Linear layers (N(0, 0.02²), biases 0).
    pub fn new<R: Rng + ?Sized>(config: &MlpConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        Self::from_parts(
            Linear::new(&LinearConfig::new(config.dim, config.hidden), rng)?,
            Linear::new(&LinearConfig::new(config.hidden, config.dim), rng)?,
        )
    }

    /// From the two layers (dim → hidden → dim).
    pub fn from_parts(fc1: Linear<T>, fc2: Linear<T>) -> Result<Self> {
        if fc2.in_dim() != fc1.out_dim() || fc2.out_dim() != fc1.in_dim() {
            return Err(Error::ShapeMismatch {
                what: "fc2",
                expected: format!("{} → {}", fc1.out_dim(), fc1.in_dim()),
                got: format!("{} → {}", fc2.in_dim(), fc2.out_dim()),
            });
        }
        Ok(Self { fc1, fc2 })
    }

    /// The first layer (dim → hidden).
    pub fn fc1(&self) -> &Linear<T> {
        &self.fc1
    }

    /// The second layer (hidden → dim).
    pub fn fc2(&self) -> &Linear<T> {
        &self.fc2
    }

    /// `fc2(GELU(fc1(x)))` of checked rows.
    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut hidden = self.fc1.apply(x);
        gelu_rows(hidden.view_mut());
        self.fc2.apply(hidden.view())
    }

    /// `fc2(GELU(fc1(x)))` for every row of `x` (n × dim).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("MLP input", x, self.fc1.in_dim())?;
        let y = self.apply(x.view());
        crate::validate::finite_output("MLP output", &y)?;
        Ok(y)
    }
}

impl<T: Float> Layer<T> for Mlp<T> {
    fn dim(&self) -> usize {
        self.fc1.in_dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        Mlp::forward(self, x)
    }

    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        super::prefixed("fc1.", self.fc1.parameters())
            .chain(super::prefixed("fc2.", self.fc2.parameters()))
            .collect()
    }
}

impl<T: Float> Checkpoint<T> for Mlp<T> {
    type Config = MlpConfig;

    fn load(reader: &TensorReader<'_>, c: &MlpConfig) -> Result<Self> {
        c.check()?;
        Self::from_parts(
            Linear::load(&reader.scoped("fc1."), &LinearConfig::new(c.dim, c.hidden))?,
            Linear::load(&reader.scoped("fc2."), &LinearConfig::new(c.hidden, c.dim))?,
        )
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        super::save_parameters(self, writer)
    }
}

/// What [`Mlp`]'s backward needs: the input (m × dim) and the hidden pre-activations
/// (m × hidden): `m·(dim + 2·hidden)` values with the GELU outputs, in buffers of the
/// thread's scratch workspace (reused by the next step once the cache is dropped).
#[derive(Debug, Clone)]
pub struct MlpCache<T: Float> {
    x: LinearCache<T>,
    pre: Scratch<T>,
    hidden: LinearCache<T>,
}

impl<T: Float> Trainable<T> for Mlp<T> {
    type Cache = MlpCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, _n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("MLP input", &x, self.fc1.in_dim())?;
        let x = LinearCache::copy_of(x);
        let pre = crate::workspace::adopt(self.fc1.apply(x.view()));
        let mut hidden = crate::workspace::copied(pre.view());
        gelu_rows(hidden.view_mut());
        let y = self.fc2.apply(hidden.view());
        crate::validate::finite_output("MLP output", &y)?;
        let hidden = LinearCache::adopt(hidden);
        Ok((y, MlpCache { x, pre, hidden }))
    }

    /// Through fc2, then `GELU'(pre) = Φ + x φ` elementwise, then fc1.
    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        super::check_gradients(&self.parameters(), grads)?;
        let (g1, g2) = grads.split_at_mut(self.fc1.parameters().len());
        let mut dh = self.fc2.backward(&cache.hidden, dy, g2)?;
        crate::rows::zip_rows(dh.view_mut(), cache.pre.view(), |mut dh, pre| {
            for (mut d, p) in dh.rows_mut().into_iter().zip(pre.rows()) {
                match (d.as_slice_mut(), p.as_slice()) {
                    (Some(d), Some(p)) => crate::kernels::mul_gelu_grad(d, p),
                    _ => d.zip_mut_with(&p, |d, &p| {
                        crate::kernels::mul_gelu_grad(std::slice::from_mut(d), &[p])
                    }),
                }
            }
        });
        self.fc1.backward(&cache.x, dh.view(), g1)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        self.fc1
            .update_parameters(&mut super::scoped("fc1.", update))?;
        self.fc2
            .update_parameters(&mut super::scoped("fc2.", update))
    }
}

/// `GELU` of every entry, on blocks of rows across the pool when large (an `erf` per entry;
/// vectorized in f32, see `kernels::gelu`).
fn gelu_rows<T: Float>(a: ndarray::ArrayViewMut2<'_, T>) {
    crate::rows::for_rows(a, |_, mut block| {
        for mut row in block.rows_mut() {
            match row.as_slice_mut() {
                Some(r) => crate::kernels::gelu_in_place(r),
                None => row.map_inplace(|v| crate::kernels::gelu_in_place(std::slice::from_mut(v))),
            }
        }
    });
}
