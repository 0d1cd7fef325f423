//! The causal TSSA of the reference language model.

use ndarray::{Array1, Array2, Array3, ArrayRef2, ArrayRef3, ArrayView2, ArrayViewD};
use rand::Rng;

use super::tssa::{CAUSAL_NAMES, Tssa, TssaConfig};
use super::{NORM_FLOOR, PI_FLOOR, per_sequence};
use crate::nn::{Checkpoint, Layer, ScopedWriter, TensorReader, check_batch};
use crate::{Error, Float, Result};

/// Sizes of a [`CausalTssa`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CausalTssaConfig {
    /// Token dimension.
    pub dim: usize,
    /// Heads (must divide dim).
    pub heads: usize,
    /// Longest sequence (the reference `block_size`).
    pub block_size: usize,
}

impl CausalTssaConfig {
    /// Largest accepted |denom_bias| entry: beyond it the membership logits of finite tokens
    /// may overflow.
    pub const MAX_DENOM_BIAS: f64 = 1e6;

    /// Errors unless the sizes are valid.
    pub fn check(&self) -> Result<()> {
        TssaConfig::new(self.dim, self.heads).check()?;
        crate::validate::at_least_one("block_size", self.block_size)?;
        crate::validate::elements(&[self.heads, self.block_size])?;
        Ok(())
    }
}

/// The causal TSSA of the reference language model (`CausalSelfAttention_TSSA`): token i only
/// sees tokens 0..=i. With `S_ic = Σ_{i'≤i} W_i'c²`:
///
/// * `Π_ik = softmax_k(temp_k Σ_{c∈k} (W_ic² / max(S_ic, 1e-12) + β_ki))`, β the learned
///   `denom_bias` (heads × block_size), added to every coordinate before the sum over the head;
/// * `m_ic = Σ_{i'≤i} Π_i'k W_i'c² / (Σ_{i'≤i} Π_i'k + 1e-8)`;
/// * `O_ic = −Π_ik W_ic / (1 + m_ic)`, then the output projection.
///
/// Running sums make it O(n·dim); weights `c_attn.weight`, `c_attn.bias`, `temp`,
/// `denom_bias` (heads × block_size × 1), `c_proj.weight`, `c_proj.bias`.
///
/// ```
/// use mcr2::ndarray::Array2;
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// use mcr2::tost::{CausalTssa, CausalTssaConfig};
/// let config = CausalTssaConfig { dim: 8, heads: 2, block_size: 32 };
/// let attn = CausalTssa::<f64>::new(&config, &mut StdRng::seed_from_u64(0))?;
/// let x = Array2::<f64>::from_shape_fn((10, 8), |(i, j)| (i as f64 - j as f64) / 8.0);
/// let y = attn.forward(&x)?;
/// // causal: the first 4 outputs depend only on the first 4 tokens
/// let y4 = attn.forward(&x.slice(mcr2::ndarray::s![..4, ..]).to_owned())?;
/// assert!((&y.slice(mcr2::ndarray::s![..4, ..]) - &y4).iter().all(|d| d.abs() < 1e-12));
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CausalTssa<T: Float> {
    pub(crate) inner: Tssa<T>,
    /// heads × block_size
    pub(crate) denom_bias: Array2<T>,
}

impl<T: Float> CausalTssa<T> {
    /// The reference initialization (as [`Tssa::new`] with a biased `c_attn`,
    /// `denom_bias` 0).
    pub fn new<R: Rng + ?Sized>(config: &CausalTssaConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        Self::from_parts(
            Tssa::new(&TssaConfig::new(config.dim, config.heads), rng)?,
            Array2::zeros((config.heads, config.block_size)),
        )
    }

    /// From a [`Tssa`] (its `qkv` is the reference `c_attn`, its `to_out` the `c_proj`) and
    /// the per-head, per-position bias (heads × block_size; block_size bounds the sequence
    /// length; entries bounded by [`CausalTssaConfig::MAX_DENOM_BIAS`]).
    pub fn from_parts(inner: Tssa<T>, denom_bias: Array2<T>) -> Result<Self> {
        if denom_bias.nrows() != inner.heads() || denom_bias.ncols() == 0 {
            return Err(Error::ShapeMismatch {
                what: "denom_bias",
                expected: format!("{} × block_size (≥ 1)", inner.heads()),
                got: format!("{}×{}", denom_bias.nrows(), denom_bias.ncols()),
            });
        }
        crate::validate::matrix("denom_bias", &denom_bias)?;
        if denom_bias
            .iter()
            .any(|v| v.abs().as_f64() > CausalTssaConfig::MAX_DENOM_BIAS)
        {
            return Err(Error::InvalidParameter {
                name: "denom_bias",
                value: "an entry above 1e6 in magnitude".into(),
                reason: "entries must be at most 1e6 in magnitude",
            });
        }
        Ok(Self { inner, denom_bias })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Longest sequence.
    pub fn block_size(&self) -> usize {
        self.denom_bias.ncols()
    }

    /// This layer's sizes.
    pub fn config(&self) -> CausalTssaConfig {
        CausalTssaConfig {
            dim: self.dim(),
            heads: self.inner.heads(),
            block_size: self.block_size(),
        }
    }

    fn check_len(&self, n: usize) -> Result<()> {
        if n > self.block_size() {
            return Err(Error::ShapeMismatch {
                what: "tokens",
                expected: format!("at most {} tokens (block_size)", self.block_size()),
                got: format!("{n} tokens"),
            });
        }
        Ok(())
    }

    /// The causal update of one sequence (n × dim, n ≤ block_size).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::rows::on_pool_rows(x.nrows(), x.ncols(), || {
            crate::validate::matrix_with_cols("tokens", x, self.dim())?;
            self.check_len(x.nrows())?;
            let y = self.apply(x.view());
            crate::validate::finite_output("causal TSSA output", &y)?;
            Ok(y)
        })
    }

    /// The causal update of a batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check_batch(x, self.dim())?;
        self.check_len(x.dim().1)?;
        let y = per_sequence(x, |s| self.apply(s));
        crate::validate::finite_output("causal TSSA output", &y)?;
        Ok(y)
    }

    fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let t = &self.inner;
        let mut w = t.qkv.apply(x);
        let (dim, h) = (t.dim(), t.heads());
        // the running sums S, P (dim each) and m (heads); Π of the current token
        let mut sums = vec![T::zero(); 2 * dim + h];
        let mut pi = vec![T::zero(); h];
        for (i, mut r) in w.rows_mut().into_iter().enumerate() {
            let wy = r
                .as_slice_mut()
                .expect("a fresh product is in standard layout");
            let (s2, rest) = sums.split_at_mut(dim);
            let (moment, mass) = rest.split_at_mut(dim);
            self.advance(i, wy, s2, moment, &mut pi, mass);
        }
        t.to_out.apply(w.view())
    }

    /// One token (position i) of the recurrence: the running sums `S` and `P` (dim each) and
    /// m (heads) advance by the token's projected row `wy`, its memberships Π_i go to `pi`,
    /// and `wy` is overwritten by its head output `−Π_ik W_ic / (1 + P_ic/(m_ik + 10⁻⁸))`.
    pub(super) fn advance(
        &self,
        i: usize,
        wy: &mut [T],
        s2: &mut [T],
        moment: &mut [T],
        pi: &mut [T],
        mass: &mut [T],
    ) {
        let t = &self.inner;
        let p = t.dim() / t.heads();
        let (floor, eps) = (T::from_f64(NORM_FLOOR), T::from_f64(PI_FLOOR));
        for (s, &v) in s2.iter_mut().zip(wy.iter()) {
            *s += v * v;
        }
        for (k, pk) in pi.iter_mut().enumerate() {
            let bias = self.denom_bias[(k, i)];
            let mut e = T::zero();
            for c in k * p..(k + 1) * p {
                e += wy[c] * wy[c] / s2[c].max(floor) + bias;
            }
            *pk = t.temp[k] * e;
        }
        crate::kernels::softmax_in_place(pi);
        for (k, &pk) in pi.iter().enumerate() {
            mass[k] += pk;
            for c in k * p..(k + 1) * p {
                moment[c] += pk * wy[c] * wy[c];
                let q = T::one() + moment[c] / (mass[k] + eps);
                wy[c] = -pk * wy[c] / q;
            }
        }
    }
}

impl<T: Float> Layer<T> for CausalTssa<T> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        CausalTssa::forward(self, x)
    }

    fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        CausalTssa::forward_batch(self, x)
    }

    /// `c_attn.*`, `temp`, `c_proj.*` (as [`Tssa`] under the causal names), `denom_bias`.
    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let mut p: Vec<_> = self
            .inner
            .parameters()
            .into_iter()
            .map(|(n, v)| {
                let n = n
                    .replacen("qkv.", "c_attn.", 1)
                    .replacen("to_out.0.", "c_proj.", 1);
                (n, v)
            })
            .collect();
        p.push((
            "denom_bias".to_string(),
            self.denom_bias
                .view()
                .insert_axis(ndarray::Axis(2))
                .into_dyn(),
        ));
        p
    }
}

impl<T: Float> Checkpoint<T> for CausalTssa<T> {
    type Config = CausalTssaConfig;

    /// Reads `c_attn.weight`, `c_attn.bias`, `temp` (heads × 1), `denom_bias`
    /// (heads × block_size × 1), `c_proj.weight`, `c_proj.bias`.
    fn load(reader: &TensorReader<'_>, c: &CausalTssaConfig) -> Result<Self> {
        c.check()?;
        let inner = Tssa::load_named(reader, &CAUSAL_NAMES, &TssaConfig::new(c.dim, c.heads))?;
        let denom = reader.reshaped(
            "denom_bias",
            &[c.heads, c.block_size, 1],
            (c.heads, c.block_size),
        )?;
        Self::from_parts(inner, denom)
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        let t = &self.inner;
        t.save_named(writer, &CAUSAL_NAMES)?;
        // the reference's `c_attn` always has a bias: a projection without one stores zeros
        if t.qkv.bias().is_none() {
            writer.put_shaped(
                "c_attn.bias",
                &[t.dim()],
                Array1::<T>::zeros(t.dim()).iter().copied(),
            );
        }
        writer.put_shaped(
            "denom_bias",
            &[t.heads(), self.block_size(), 1],
            self.denom_bias.iter().copied(),
        );
        Ok(())
    }
}
