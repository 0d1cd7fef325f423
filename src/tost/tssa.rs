//! The reference TSSA layer.

use ndarray::{
    Array1, Array2, Array3, ArrayRef2, ArrayRef3, ArrayView2, ArrayViewD, ArrayViewMut2, s,
};
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

/// TSSA's statistics of one sequence (see [`Tssa::statistics_into`]): the column scales ν,
/// the head masses m, the second moments M and the gains g.
#[derive(Debug, Clone)]
pub(crate) struct SequenceStats<T> {
    /// ν (dim)
    pub(crate) nu: Array1<T>,
    /// m (heads)
    pub(crate) mass: Array1<T>,
    /// M (dim)
    pub(crate) moment: Array1<T>,
    /// g (dim)
    pub(crate) gain: Array1<T>,
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
        crate::rows::on_pool_rows(x.nrows(), x.ncols(), || {
            crate::validate::matrix_with_cols("tokens", x, self.dim())?;
            let y = self.apply(x.view());
            crate::validate::finite_output("TSSA output", &y)?;
            Ok(y)
        })
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

    /// Π (n × heads) and the statistics of one sequence's projected tokens `w` (n × dim).
    pub(crate) fn statistics(&self, w: ArrayView2<T>) -> (Array2<T>, SequenceStats<T>) {
        let mut pi = Array2::<T>::zeros((w.nrows(), self.heads()));
        let stats = self.statistics_into(w, pi.view_mut());
        (pi, stats)
    }

    /// The statistics of one sequence's projected tokens `w` (n × dim), writing its
    /// membership Π into `pi` (n × heads, standard layout): the column scales
    /// `ν_c = 1/max(‖W_:c‖, 10⁻¹²)`, `Π_ik = softmax_k(τ_k Σ_{c∈k} (W_ic ν_c)²)`, the head
    /// masses `m_k = Σ_i Π_ik`, the second moments `M_c = Σ_i Π_ik(c) W_ic²` and the gains
    /// `g_c = 1/(1 + M_c/(m_k(c) + 10⁻⁸))`. The sums over tokens run in fixed blocks of rows
    /// ([`crate::rows::sum_over_row_blocks`]), on the pool when the sequence is long.
    pub(crate) fn statistics_into(
        &self,
        w: ArrayView2<T>,
        pi: ArrayViewMut2<T>,
    ) -> SequenceStats<T> {
        let (n, dim) = w.dim();
        let (h, p) = (self.heads(), dim / self.heads());
        let w = w.as_standard_layout();
        let ws = w.as_slice().expect("standard layout");
        let sq = crate::rows::sum_over_row_blocks::<T, _>(n, dim, |rows, mut acc| {
            for r in ws[rows.start * dim..rows.end * dim].chunks_exact(dim) {
                for (s, &v) in acc.iter_mut().zip(r) {
                    *s += v * v;
                }
            }
        });
        let floor = T::from_f64(NORM_FLOOR);
        let nu: Array1<T> = sq.mapv(|s| T::one() / s.sqrt().max(floor));
        let nus = nu.as_slice().expect("contiguous");
        // Π row by row, with [m | M] summed over the rows
        let sums = crate::rows::sum_over_written_row_blocks(pi, h + dim, |r0, mut block, acc| {
            let acc = acc.into_slice().expect("contiguous");
            let (mass, moment) = acc.split_at_mut(h);
            for (i, mut pr) in block.rows_mut().into_iter().enumerate() {
                let pr = pr.as_slice_mut().expect("standard layout");
                let r = &ws[(r0 + i) * dim..(r0 + i + 1) * dim];
                for (k, (e_k, &tau)) in pr.iter_mut().zip(&self.temp).enumerate() {
                    let mut e = T::zero();
                    for c in k * p..(k + 1) * p {
                        let v = r[c] * nus[c];
                        e += v * v;
                    }
                    *e_k = tau * e;
                }
                crate::kernels::softmax_in_place(pr);
                for k in 0..h {
                    mass[k] += pr[k];
                    for c in k * p..(k + 1) * p {
                        moment[c] += pr[k] * r[c] * r[c];
                    }
                }
            }
        });
        let mass = sums.slice(s![..h]).to_owned();
        let moment = sums.slice(s![h..]).to_owned();
        let eps = T::from_f64(PI_FLOOR);
        let gain = Array1::from_shape_fn(dim, |c| {
            T::one() / (T::one() + moment[c] / (mass[c / p] + eps))
        });
        SequenceStats {
            nu,
            mass,
            moment,
            gain,
        }
    }

    pub(crate) fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut w = self.qkv.apply(x);
        let n = w.nrows();
        let (pi, stats) = self.statistics(w.view());
        self.head_outputs(w.view_mut(), &pi, &[stats], n);
        self.to_out.apply(w.view())
    }

    /// The head outputs `Y_ic = −Π_ik(c) W_ic g_c` of a batch of sequences of `n` tokens
    /// (`stats[s]` for sequence s), in place of the projected tokens `w` (standard layout),
    /// on the pool when large.
    pub(crate) fn head_outputs(
        &self,
        w: ArrayViewMut2<T>,
        pi: &Array2<T>,
        stats: &[SequenceStats<T>],
        n: usize,
    ) {
        let (h, p) = (self.heads(), self.dim() / self.heads());
        crate::rows::for_rows(w, |r0, mut block| {
            for (i, mut r) in block.rows_mut().into_iter().enumerate() {
                let row = r0 + i;
                let r = r.as_slice_mut().expect("standard layout");
                let g = stats[row / n].gain.as_slice().expect("contiguous");
                for k in 0..h {
                    let pk = pi[(row, k)];
                    for c in k * p..(k + 1) * p {
                        r[c] = -pk * r[c] * g[c];
                    }
                }
            }
        });
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
