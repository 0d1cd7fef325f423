//! The reference TSSA layer.

use ndarray::{Array1, Array2, Array3, ArrayRef2, ArrayRef3, ArrayView2, ArrayViewD};
use rand::Rng;

use super::{NORM_FLOOR, PI_FLOOR, check_heads, per_sequence};
use crate::nn::{Checkpoint, Layer, Linear, LinearConfig, ScopedWriter, TensorReader, check_batch};
use crate::{Error, Float, Result};

/// Sizes of a [`Tssa`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TssaConfig {
    /// Token dimension.
    pub dim: usize,
    /// Heads (must divide dim).
    pub heads: usize,
    /// Whether the input projection has a bias (the reference models: yes).
    pub qkv_bias: bool,
}

impl TssaConfig {
    /// `dim` and `heads` with a biased input projection, as the reference models.
    pub fn new(dim: usize, heads: usize) -> Self {
        Self {
            dim,
            heads,
            qkv_bias: true,
        }
    }

    /// Errors unless dim, heads ≥ 1 and heads divides dim.
    pub fn check(&self) -> Result<()> {
        check_heads(self.dim, self.heads).map(|_| ())
    }
}

/// Token-statistics self-attention, the reference `AttentionTSSA` (see the module docs).
/// Reference names: `qkv.weight`, `qkv.bias` (when present), `temp` (heads × 1),
/// `to_out.0.weight`, `to_out.0.bias`.
///
/// ```
/// use mcr2::ndarray::Array2;
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// use mcr2::tost::{Tssa, TssaConfig};
/// let attn = Tssa::<f32>::new(&TssaConfig::new(16, 4), &mut StdRng::seed_from_u64(0))?;
/// let x = Array2::<f32>::from_shape_fn((100, 16), |(i, j)| ((i + j) % 7) as f32 / 7.0);
/// assert_eq!(attn.forward(&x)?.dim(), (100, 16)); // linear in the number of tokens
/// let pi = attn.membership(&x)?; // each token's soft assignment to the 4 heads
/// assert!(pi.rows().into_iter().all(|r| (r.sum() - 1.0).abs() < 1e-5));
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Tssa<T: Float> {
    /// dim → dim
    pub(crate) qkv: Linear<T>,
    /// one temperature per head
    pub(crate) temp: Array1<T>,
    /// dim → dim, with bias
    pub(crate) to_out: Linear<T>,
}

/// The names of TSSA's input and output projections, under which `.weight` and `.bias` are
/// stored.
pub(crate) struct Projections {
    input: &'static str,
    output: &'static str,
}

/// `AttentionTSSA`: `qkv`, `to_out.0`.
pub(crate) const REFERENCE_NAMES: Projections = Projections {
    input: "qkv.",
    output: "to_out.0.",
};

/// `CausalSelfAttention_TSSA`: `c_attn`, `c_proj`.
pub(crate) const CAUSAL_NAMES: Projections = Projections {
    input: "c_attn.",
    output: "c_proj.",
};

impl<T: Float> Tssa<T> {
    /// Largest accepted |temperature|: beyond it the membership logits of finite tokens may
    /// overflow.
    pub const MAX_TEMPERATURE: f64 = 1e6;

    /// The reference initialization: Linear weights N(0, 0.02²), biases 0, temperatures 1.
    pub fn new<R: Rng + ?Sized>(config: &TssaConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let d = config.dim;
        let mut qkv = LinearConfig::new(d, d);
        qkv.bias = config.qkv_bias;
        Self::from_parts(
            Linear::new(&qkv, rng)?,
            Array1::ones(config.heads),
            Linear::new(&LinearConfig::new(d, d), rng)?,
        )
    }

    /// From parts: the input projection `qkv` (dim → dim, bias optional), one temperature per
    /// head (so heads = `temp.len()`), and the output projection `to_out` (dim → dim, with
    /// bias).
    pub fn from_parts(qkv: Linear<T>, temp: Array1<T>, to_out: Linear<T>) -> Result<Self> {
        let dim = qkv.in_dim();
        check_heads(dim, temp.len())?;
        for (what, l) in [("qkv", &qkv), ("to_out", &to_out)] {
            if l.in_dim() != dim || l.out_dim() != dim {
                return Err(Error::ShapeMismatch {
                    what,
                    expected: format!("{dim}×{dim}"),
                    got: format!("{}×{}", l.out_dim(), l.in_dim()),
                });
            }
        }
        if to_out.bias().is_none() {
            return Err(Error::InvalidParameter {
                name: "to_out",
                value: "no bias".into(),
                reason: "the output projection has a bias",
            });
        }
        if temp
            .iter()
            .any(|v| !(v.is_finite() && v.abs().as_f64() <= Self::MAX_TEMPERATURE))
        {
            return Err(Error::InvalidParameter {
                name: "temp",
                value: format!("{temp}"),
                reason: "one finite temperature per head, |temp| ≤ 1e6",
            });
        }
        Ok(Self { qkv, temp, to_out })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.qkv.in_dim()
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.temp.len()
    }

    /// The per-head temperatures.
    pub fn temperatures(&self) -> &Array1<T> {
        &self.temp
    }

    /// This layer's sizes.
    pub fn config(&self) -> TssaConfig {
        TssaConfig {
            dim: self.dim(),
            heads: self.heads(),
            qkv_bias: self.qkv.bias().is_some(),
        }
    }

    /// The attention update of one sequence (n × dim, tokens as rows).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        let y = self.apply(x.view());
        crate::validate::finite_output("TSSA output", &y)?;
        Ok(y)
    }

    /// The attention update of a batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check_batch(x, self.dim())?;
        let y = per_sequence(x, |s| self.apply(s));
        crate::validate::finite_output("TSSA output", &y)?;
        Ok(y)
    }

    /// The membership Π (n × heads) of one sequence: which head (subspace) each token is
    /// assigned to.
    pub fn membership(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        let w = self.qkv.apply(x.view());
        let pi = self.statistics(w.view()).0;
        crate::validate::finite_output("TSSA membership", &pi)?;
        Ok(pi)
    }

    /// Π (n × heads) and the per-coordinate gains 1/(1 + m_c) of projected tokens `w`.
    pub(crate) fn statistics(&self, w: ArrayView2<T>) -> (Array2<T>, Array1<T>) {
        let (n, dim) = w.dim();
        let (h, p) = (self.heads(), dim / self.heads());
        // column norms over the tokens
        let mut sq = Array1::<T>::zeros(dim);
        for r in w.rows() {
            for (s, &v) in sq.iter_mut().zip(r) {
                *s += v * v;
            }
        }
        let floor = T::from_f64(NORM_FLOOR);
        let inv: Array1<T> = sq.mapv(|s| T::one() / s.sqrt().max(floor));
        // Π: softmax over heads of temp_k Σ_{c∈k} (w_ic / ‖w_c‖)²
        let mut pi = Array2::<T>::zeros((n, h));
        for (r, mut pr) in w.rows().into_iter().zip(pi.rows_mut()) {
            for k in 0..h {
                let mut e = T::zero();
                for c in k * p..(k + 1) * p {
                    let v = r[c] * inv[c];
                    e += v * v;
                }
                pr[k] = self.temp[k] * e;
            }
            crate::kernels::softmax_in_place(pr.as_slice_mut().expect("standard layout"));
        }
        // Π-weighted second moments per coordinate and the gains
        let mut mass = Array1::<T>::zeros(h);
        let mut moment = Array1::<T>::zeros(dim);
        for (r, pr) in w.rows().into_iter().zip(pi.rows()) {
            for k in 0..h {
                mass[k] += pr[k];
                for c in k * p..(k + 1) * p {
                    moment[c] += pr[k] * r[c] * r[c];
                }
            }
        }
        let eps = T::from_f64(PI_FLOOR);
        let gain = Array1::from_shape_fn(dim, |c| {
            T::one() / (T::one() + moment[c] / (mass[c / p] + eps))
        });
        (pi, gain)
    }

    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut w = self.qkv.apply(x);
        let (pi, gain) = self.statistics(w.view());
        let p = self.dim() / self.heads();
        for (mut r, pr) in w.rows_mut().into_iter().zip(pi.rows()) {
            for (c, v) in r.iter_mut().enumerate() {
                *v = -pr[c / p] * *v * gain[c];
            }
        }
        self.to_out.apply(w.view())
    }

    /// Reads the projections under `names` and `temp` (heads × 1).
    pub(crate) fn load_named(
        reader: &TensorReader<'_>,
        names: &Projections,
        config: &TssaConfig,
    ) -> Result<Self> {
        config.check()?;
        let d = config.dim;
        let mut qkv = LinearConfig::new(d, d);
        qkv.bias = config.qkv_bias;
        Self::from_parts(
            Linear::load(&reader.scoped(names.input), &qkv)?,
            reader.reshaped("temp", &[config.heads, 1], config.heads)?,
            Linear::load(&reader.scoped(names.output), &LinearConfig::new(d, d))?,
        )
    }

    /// Writes the projections under `names` and `temp` (heads × 1).
    pub(crate) fn save_named(
        &self,
        writer: &mut ScopedWriter<'_>,
        names: &Projections,
    ) -> Result<()> {
        self.qkv.save(&mut writer.scoped(names.input))?;
        writer.put_shaped("temp", &[self.heads(), 1], self.temp.iter().copied());
        self.to_out.save(&mut writer.scoped(names.output))
    }
}

impl<T: Float> Layer<T> for Tssa<T> {
    fn dim(&self) -> usize {
        self.qkv.in_dim()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        Tssa::forward(self, x)
    }

    fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        Tssa::forward_batch(self, x)
    }

    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let mut p: Vec<_> = crate::nn::prefixed("qkv.", self.qkv.parameters()).collect();
        p.push((
            "temp".to_string(),
            self.temp
                .view()
                .into_shape_with_order((self.heads(), 1))
                .expect("contiguous")
                .into_dyn(),
        ));
        p.extend(crate::nn::prefixed("to_out.0.", self.to_out.parameters()));
        p
    }
}

impl<T: Float> Checkpoint<T> for Tssa<T> {
    type Config = TssaConfig;

    /// Reads `qkv.weight`, `qkv.bias` (when `qkv_bias`), `temp` (heads × 1),
    /// `to_out.0.weight`, `to_out.0.bias` (F32, F64, BF16 or F16).
    fn load(reader: &TensorReader<'_>, config: &TssaConfig) -> Result<Self> {
        Self::load_named(reader, &REFERENCE_NAMES, config)
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        self.save_named(writer, &REFERENCE_NAMES)
    }
}
