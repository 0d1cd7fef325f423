//! ToST: token-statistics self-attention (TSSA), attention whose cost grows linearly with the
//! number of tokens, derived from a variational form of the compression term of the rate
//! reduction.
//!
//! Wu, Ding, Lu, Pai, Zhang, Wang, Yu, Ma, Haeffele, *Token Statistics Transformer:
//! Linear-Time Attention via Variational Rate Reduction*, 2024 (arXiv 2412.17810); the
//! reference `AttentionTSSA` of `RobinWu218/ToST`.
//!
//! Tokens are rows (a sequence is n × dim). Three forms:
//!
//! * [`Tssa`], the reference parameterisation: `W = X Qᵀ + b` split into heads of p = dim/heads
//!   coordinates; every coordinate column normalized over the tokens; the membership
//!   `Π_ik = softmax_k(temp_k Σ_{c∈k} Ŵ_ic²)` over heads; per head and coordinate the
//!   Π-weighted second moment `m_c = Σ_i Π_ik W_ic² / (Σ_i Π_ik + 1e-8)`; the update
//!   `O_ic = −Π_ik W_ic / (1 + m_c)`; the output projection. No n × n matrix: O(n·dim) beyond
//!   the two projections.
//! * [`CausalTssa`], the language-model variant: the same with running sums over the tokens
//!   seen so far, so that a token's output depends only on it and earlier tokens.
//! * [`VariationalCompression`], the book form from subspace bases: the variational
//!   objective `R^var`, its gradient, the membership and the TSSA step `Z − τ ∇R^var`.

use std::collections::HashMap;

use ndarray::{Array1, Array2, Array3, ArrayRef2, ArrayRef3, ArrayView2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::crate_layer::weights::{matrix, out, parse, reshaped, serialize, vector};
use crate::crate_layer::{LayerNorm, linear};
pub use crate::kernels::gelu;
use crate::{Error, Float, Precision, Result};

const NORM_FLOOR: f64 = 1e-12;
const PI_FLOOR: f64 = 1e-8;

fn check_heads(dim: usize, heads: usize) -> Result<usize> {
    if dim == 0 || heads == 0 || dim % heads != 0 {
        return Err(Error::InvalidParameter {
            name: "heads",
            value: format!("{heads} heads for dim {dim}"),
            reason: "dim and heads must be ≥ 1 and heads must divide dim",
        });
    }
    Ok(dim / heads)
}

fn check_linear<T: Float>(
    what: &'static str,
    w: &Array2<T>,
    b: Option<&Array1<T>>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    if w.dim() != (rows, cols) {
        return Err(Error::ShapeMismatch {
            what,
            expected: format!("{rows}×{cols}"),
            got: format!("{}×{}", w.nrows(), w.ncols()),
        });
    }
    crate::validate::matrix(what, w)?;
    if let Some(b) = b {
        if b.len() != rows {
            return Err(Error::ShapeMismatch {
                what,
                expected: format!("bias of {rows}"),
                got: format!("bias of {}", b.len()),
            });
        }
        if b.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidParameter {
                name: what,
                value: "bias".into(),
                reason: "non-finite entry",
            });
        }
    }
    Ok(())
}

/// Truncated-normal-like initialization of the reference (timm `trunc_normal_(std=0.02)`,
/// whose cut at ±2 is 100 standard deviations away: a normal with σ = 0.02).
fn normal<T: Float, R: Rng + ?Sized>(rows: usize, cols: usize, rng: &mut R) -> Array2<T> {
    Array2::from_shape_simple_fn((rows, cols), || {
        T::from_f64(0.02 * rng.sample::<f64, _>(StandardNormal))
    })
}

fn check3<T: Float>(x: &ArrayRef3<T>, dim: usize) -> Result<()> {
    crate::crate_layer::check3(x)?;
    let d = x.dim().2;
    if d != dim {
        return Err(Error::ShapeMismatch {
            what: "tokens",
            expected: format!("{dim} features"),
            got: format!("{d} features"),
        });
    }
    Ok(())
}

/// Runs `f` on every sequence of a batch (b × n × dim → b × n × dim), in parallel over the
/// sequences with the `parallel` feature.
fn per_sequence<T: Float>(
    x: &ArrayRef3<T>,
    f: impl Fn(ArrayView2<T>) -> Array2<T> + Sync,
) -> Array3<T> {
    let (b, n, _) = x.dim();
    let outs: Vec<Array2<T>> = {
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            (0..b)
                .into_par_iter()
                .map(|s| f(x.index_axis(Axis(0), s)))
                .collect()
        }
        #[cfg(not(feature = "parallel"))]
        {
            (0..b).map(|s| f(x.index_axis(Axis(0), s))).collect()
        }
    };
    let d = outs[0].ncols();
    let mut y = Array3::<T>::zeros((b, n, d));
    for (s, o) in outs.into_iter().enumerate() {
        y.index_axis_mut(Axis(0), s).assign(&o);
    }
    y
}

/// Token-statistics self-attention, the reference `AttentionTSSA` (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Tssa<T: Float> {
    heads: usize,
    /// dim × dim
    qkv_weight: Array2<T>,
    qkv_bias: Option<Array1<T>>,
    /// one temperature per head
    temp: Array1<T>,
    /// dim × dim
    out_weight: Array2<T>,
    out_bias: Array1<T>,
}

impl<T: Float> Tssa<T> {
    /// From weights: `qkv` (dim × dim, optional bias), `temp` (heads), `to_out` (dim × dim
    /// with bias).
    pub fn from_weights(
        heads: usize,
        qkv_weight: Array2<T>,
        qkv_bias: Option<Array1<T>>,
        temp: Array1<T>,
        out_weight: Array2<T>,
        out_bias: Array1<T>,
    ) -> Result<Self> {
        let dim = qkv_weight.ncols();
        check_heads(dim, heads)?;
        check_linear("qkv", &qkv_weight, qkv_bias.as_ref(), dim, dim)?;
        check_linear("to_out", &out_weight, Some(&out_bias), dim, dim)?;
        if temp.len() != heads || temp.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "temp",
                value: format!("{} entries", temp.len()),
                reason: "one finite temperature per head",
            });
        }
        Ok(Self {
            heads,
            qkv_weight,
            qkv_bias,
            temp,
            out_weight,
            out_bias,
        })
    }

    /// The reference initialization: Linear weights N(0, 0.02²), biases 0, temperatures 1.
    pub fn random<R: Rng + ?Sized>(
        dim: usize,
        heads: usize,
        qkv_bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        check_heads(dim, heads)?;
        Self::from_weights(
            heads,
            normal(dim, dim, rng),
            qkv_bias.then(|| Array1::zeros(dim)),
            Array1::ones(heads),
            normal(dim, dim, rng),
            Array1::zeros(dim),
        )
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.qkv_weight.ncols()
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The per-head temperatures.
    pub fn temperatures(&self) -> &Array1<T> {
        &self.temp
    }

    /// The attention update of one sequence (n × dim, tokens as rows).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        Ok(self.apply(x.view()))
    }

    /// The attention update of a batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check3(x, self.dim())?;
        Ok(per_sequence(x, |s| self.apply(s)))
    }

    /// The membership Π (n × heads) of one sequence: which head (subspace) each token is
    /// assigned to.
    pub fn membership(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        let w = linear(x.view(), &self.qkv_weight, self.qkv_bias.as_ref());
        Ok(self.statistics(w.view()).0)
    }

    /// Π (n × heads) and the per-coordinate gains 1/(1 + m_c) of projected tokens `w`.
    fn statistics(&self, w: ArrayView2<T>) -> (Array2<T>, Array1<T>) {
        let (n, dim) = w.dim();
        let (h, p) = (self.heads, dim / self.heads);
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
        let mut w = linear(x, &self.qkv_weight, self.qkv_bias.as_ref());
        let (pi, gain) = self.statistics(w.view());
        let p = self.dim() / self.heads;
        for (mut r, pr) in w.rows_mut().into_iter().zip(pi.rows()) {
            for (c, v) in r.iter_mut().enumerate() {
                *v = -pr[c / p] * *v * gain[c];
            }
        }
        linear(w.view(), &self.out_weight, Some(&self.out_bias))
    }

    /// Loads the reference tensors `{prefix}qkv.weight`, `{prefix}qkv.bias` (when
    /// `qkv_bias`), `{prefix}temp` (heads × 1), `{prefix}to_out.0.weight`,
    /// `{prefix}to_out.0.bias` from safetensors bytes (F32, F64, BF16 or F16).
    pub fn from_safetensors(
        bytes: &[u8],
        dim: usize,
        heads: usize,
        qkv_bias: bool,
        prefix: &str,
    ) -> Result<Self> {
        check_heads(dim, heads)?;
        let st = parse(bytes)?;
        Self::read(&st, &REFERENCE_NAMES, dim, heads, qkv_bias, prefix)
    }

    fn read(
        st: &safetensors::SafeTensors<'_>,
        names: &Projections,
        dim: usize,
        heads: usize,
        qkv_bias: bool,
        prefix: &str,
    ) -> Result<Self> {
        let (input, output) = (
            format!("{prefix}{}.", names.input),
            format!("{prefix}{}.", names.output),
        );
        Self::from_weights(
            heads,
            matrix(st, &format!("{input}weight"), dim, dim)?,
            if qkv_bias {
                Some(vector(st, &format!("{input}bias"), dim)?)
            } else {
                None
            },
            reshaped(st, &format!("{prefix}temp"), &[heads, 1], heads)?,
            matrix(st, &format!("{output}weight"), dim, dim)?,
            vector(st, &format!("{output}bias"), dim)?,
        )
    }

    fn write(
        &self,
        names: &Projections,
        prefix: &str,
        map: &mut HashMap<String, crate::crate_layer::weights::Out>,
    ) {
        let mut put = |name: String, shape: &[usize], values: Vec<&T>| {
            map.insert(
                format!("{prefix}{name}"),
                out::<T>(shape, values.into_iter()),
            );
        };
        let d = self.dim();
        let (input, output) = (names.input, names.output);
        put(
            format!("{input}.weight"),
            &[d, d],
            self.qkv_weight.iter().collect(),
        );
        if let Some(b) = &self.qkv_bias {
            put(format!("{input}.bias"), &[d], b.iter().collect());
        }
        put("temp".into(), &[self.heads, 1], self.temp.iter().collect());
        put(
            format!("{output}.weight"),
            &[d, d],
            self.out_weight.iter().collect(),
        );
        put(
            format!("{output}.bias"),
            &[d],
            self.out_bias.iter().collect(),
        );
    }

    /// Writes the tensors under the reference names (in `T`'s dtype).
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let mut map = HashMap::new();
        self.write(&REFERENCE_NAMES, prefix, &mut map);
        serialize(map)
    }
}

/// The names of TSSA's input and output projections, under which `.weight` and `.bias` are
/// stored.
struct Projections {
    input: &'static str,
    output: &'static str,
}

/// `AttentionTSSA`: `qkv`, `to_out.0`.
const REFERENCE_NAMES: Projections = Projections {
    input: "qkv",
    output: "to_out.0",
};

/// `CausalSelfAttention_TSSA`: `c_attn`, `c_proj`.
const CAUSAL_NAMES: Projections = Projections {
    input: "c_attn",
    output: "c_proj",
};

/// The causal TSSA of the reference language model (`CausalSelfAttention_TSSA`): token i only
/// sees tokens 0..=i. With `S_ic = Σ_{i'≤i} W_i'c²`:
///
/// * `Π_ik = softmax_k(temp_k Σ_{c∈k} (W_ic² / max(S_ic, 1e-12) + β_ki))`, β the learned
///   `denom_bias` (heads × block_size), added to every coordinate before the sum over the head;
/// * `m_ic = Σ_{i'≤i} Π_i'k W_i'c² / (Σ_{i'≤i} Π_i'k + 1e-8)`;
/// * `O_ic = −Π_ik W_ic / (1 + m_ic)`, then the output projection.
///
/// Running sums make it O(n·dim); weights `c_attn.weight`, `c_attn.bias`, `temp`,
/// `denom_bias`, `c_proj.weight`, `c_proj.bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct CausalTssa<T: Float> {
    inner: Tssa<T>,
    /// heads × block_size
    denom_bias: Array2<T>,
}

impl<T: Float> CausalTssa<T> {
    /// From a [`Tssa`] (its `qkv` is the reference `c_attn`, its `to_out` the `c_proj`) and
    /// the per-head, per-position bias (heads × block_size; block_size bounds the sequence
    /// length).
    pub fn new(inner: Tssa<T>, denom_bias: Array2<T>) -> Result<Self> {
        if denom_bias.nrows() != inner.heads || denom_bias.ncols() == 0 {
            return Err(Error::ShapeMismatch {
                what: "denom_bias",
                expected: format!("{} × block_size (≥ 1)", inner.heads),
                got: format!("{}×{}", denom_bias.nrows(), denom_bias.ncols()),
            });
        }
        crate::validate::matrix("denom_bias", &denom_bias)?;
        Ok(Self { inner, denom_bias })
    }

    /// The reference initialization (as [`Tssa::random`], `denom_bias` 0).
    pub fn random<R: Rng + ?Sized>(
        dim: usize,
        heads: usize,
        block_size: usize,
        rng: &mut R,
    ) -> Result<Self> {
        Self::new(
            Tssa::random(dim, heads, true, rng)?,
            Array2::zeros((heads, block_size)),
        )
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Longest sequence.
    pub fn block_size(&self) -> usize {
        self.denom_bias.ncols()
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
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        self.check_len(x.nrows())?;
        Ok(self.apply(x.view()))
    }

    /// The causal update of a batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check3(x, self.dim())?;
        self.check_len(x.dim().1)?;
        Ok(per_sequence(x, |s| self.apply(s)))
    }

    fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let t = &self.inner;
        let mut w = linear(x, &t.qkv_weight, t.qkv_bias.as_ref());
        let dim = t.dim();
        let (h, p) = (t.heads, dim / t.heads);
        let floor = T::from_f64(NORM_FLOOR);
        let eps = T::from_f64(PI_FLOOR);
        let mut s2 = Array1::<T>::zeros(dim);
        let mut pw = Array1::<T>::zeros(dim);
        let mut mass = Array1::<T>::zeros(h);
        let mut pi = vec![T::zero(); h];
        for (i, mut r) in w.rows_mut().into_iter().enumerate() {
            for (s, &v) in s2.iter_mut().zip(r.iter()) {
                *s += v * v;
            }
            for (k, pk) in pi.iter_mut().enumerate() {
                let mut e = T::zero();
                for c in k * p..(k + 1) * p {
                    e += r[c] * r[c] / s2[c].max(floor) + self.denom_bias[(k, i)];
                }
                *pk = t.temp[k] * e;
            }
            crate::kernels::softmax_in_place(&mut pi);
            for k in 0..h {
                mass[k] += pi[k];
                for c in k * p..(k + 1) * p {
                    pw[c] += pi[k] * r[c] * r[c];
                    let m = pw[c] / (mass[k] + eps);
                    r[c] = -pi[k] * r[c] / (T::one() + m);
                }
            }
        }
        linear(w.view(), &t.out_weight, Some(&t.out_bias))
    }

    /// Loads `{prefix}c_attn.weight`, `{prefix}c_attn.bias`, `{prefix}temp` (heads × 1),
    /// `{prefix}denom_bias` (heads × block_size × 1), `{prefix}c_proj.weight`,
    /// `{prefix}c_proj.bias`.
    pub fn from_safetensors(
        bytes: &[u8],
        dim: usize,
        heads: usize,
        block_size: usize,
        prefix: &str,
    ) -> Result<Self> {
        check_heads(dim, heads)?;
        let st = parse(bytes)?;
        let inner = Tssa::read(&st, &CAUSAL_NAMES, dim, heads, true, prefix)?;
        let denom = reshaped(
            &st,
            &format!("{prefix}denom_bias"),
            &[heads, block_size, 1],
            (heads, block_size),
        )?;
        Self::new(inner, denom)
    }

    /// Writes the tensors under the reference names.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let t = &self.inner;
        let mut map = HashMap::new();
        t.write(&CAUSAL_NAMES, prefix, &mut map);
        // the reference's `c_attn` always has a bias: a projection without one stores zeros
        if t.qkv_bias.is_none() {
            let zero = Array1::<T>::zeros(t.dim());
            map.insert(
                format!("{prefix}c_attn.bias"),
                out::<T>(&[t.dim()], zero.iter()),
            );
        }
        map.insert(
            format!("{prefix}denom_bias"),
            out::<T>(&[t.heads, self.block_size(), 1], self.denom_bias.iter()),
        );
        serialize(map)
    }
}

/// The book form of TSSA from orthonormal subspace bases `U_1..U_K` (each d × p): with
/// `f(x) = ln(1 + (d/ε²) x)`, membership Π (n × K) and `N_k = Σ_j Π_jk`,
///
/// * `R^var(Z, Π) = ½ Σ_k (N_k/N) Σ_i f(s_ki)`, `s_ki = Σ_j Π_jk (U_kᵀz_j)_i² / N_k`
///   (an upper bound of the compression term, tight when U_k diagonalizes the class's
///   second moment);
/// * `∇_Z R^var = (1/N) Σ_k U_k D_k U_kᵀ Z Diag(π_k)`, `D_k = Diag(f′(s_k))` (Π held fixed);
/// * `Π_jk = softmax_k(‖U_kᵀ z_j‖² / (2η))`;
/// * the TSSA step `Z⁺ = Z − τ ∇_Z R^var(Z, Π(Z))`.
#[derive(Debug, Clone, PartialEq)]
pub struct VariationalCompression<T: Float> {
    bases: Vec<Array2<T>>,
    eps_sq: f64,
    eta: f64,
}

impl<T: Float> VariationalCompression<T> {
    /// From bases (each d × p, the same shape), precision ε and membership temperature η > 0.
    pub fn new(bases: Vec<Array2<T>>, eps: Precision, eta: f64) -> Result<Self> {
        let first = bases.first().ok_or(Error::InvalidParameter {
            name: "bases",
            value: "[]".into(),
            reason: "at least one basis is required",
        })?;
        let shape = first.dim();
        for u in &bases {
            if u.dim() != shape {
                return Err(Error::ShapeMismatch {
                    what: "subspace basis",
                    expected: format!("{}×{}", shape.0, shape.1),
                    got: format!("{}×{}", u.nrows(), u.ncols()),
                });
            }
            crate::validate::matrix("subspace basis", u)?;
        }
        crate::validate::positive("eta", eta)?;
        Ok(Self {
            bases,
            eps_sq: eps.get_eps_sq(),
            eta,
        })
    }

    fn check(&self, z: &ArrayRef2<T>) -> Result<()> {
        crate::validate::matrix_with_cols("tokens", z, self.bases[0].nrows())
    }

    fn check_pi(&self, z: &ArrayRef2<T>, pi: &ArrayRef2<T>) -> Result<()> {
        if pi.dim() != (z.nrows(), self.bases.len()) {
            return Err(Error::ShapeMismatch {
                what: "membership",
                expected: format!("{}×{}", z.nrows(), self.bases.len()),
                got: format!("{}×{}", pi.nrows(), pi.ncols()),
            });
        }
        crate::validate::finite("membership", pi)?;
        if pi.iter().any(|&v| v < T::zero()) || pi.sum_axis(Axis(0)).iter().any(|&s| s <= T::zero())
        {
            return Err(Error::InvalidMembership(
                "entries must be ≥ 0 and every column must have positive mass".into(),
            ));
        }
        Ok(())
    }

    /// `Π_jk = softmax_k(‖U_kᵀ z_j‖² / (2η))` (n × K).
    pub fn membership(&self, z: &ArrayRef2<T>) -> Result<Array2<T>> {
        self.check(z)?;
        let n = z.nrows();
        let mut pi = Array2::<T>::zeros((n, self.bases.len()));
        let scale = T::from_f64(0.5 / self.eta);
        for (k, u) in self.bases.iter().enumerate() {
            let w = z.dot(u);
            for (j, r) in w.rows().into_iter().enumerate() {
                pi[(j, k)] = r.dot(&r) * scale;
            }
        }
        for mut r in pi.rows_mut() {
            crate::kernels::softmax_in_place(r.as_slice_mut().expect("standard layout"));
        }
        Ok(pi)
    }

    /// For every head: the projected tokens U_kᵀ z_j (n × p), N_k and s_k.
    fn stats(&self, z: &ArrayRef2<T>, pi: &ArrayRef2<T>) -> Vec<(Array2<T>, T, Array1<T>)> {
        self.bases
            .iter()
            .enumerate()
            .map(|(k, u)| {
                let w = z.dot(u);
                let nk: T = pi.column(k).sum();
                let mut s = Array1::<T>::zeros(u.ncols());
                for (r, &pjk) in w.rows().into_iter().zip(pi.column(k)) {
                    for (si, &v) in s.iter_mut().zip(r) {
                        *si += pjk * v * v;
                    }
                }
                s /= nk;
                (w, nk, s)
            })
            .collect()
    }

    fn alpha(&self) -> T {
        T::from_f64(self.bases[0].nrows() as f64 / self.eps_sq)
    }

    /// `R^var(Z, Π)`.
    pub fn objective(&self, z: &ArrayRef2<T>, pi: &ArrayRef2<T>) -> Result<T> {
        self.check(z)?;
        self.check_pi(z, pi)?;
        let n = T::from_usize(z.nrows());
        let a = self.alpha();
        let half = T::from_f64(0.5);
        Ok(self
            .stats(z, pi)
            .iter()
            .map(|(_, nk, s)| half * (*nk / n) * s.iter().map(|&x| (a * x).ln_1p()).sum::<T>())
            .sum())
    }

    /// `∇_Z R^var(Z, Π)` with Π held fixed (n × d).
    pub fn gradient(&self, z: &ArrayRef2<T>, pi: &ArrayRef2<T>) -> Result<Array2<T>> {
        self.check(z)?;
        self.check_pi(z, pi)?;
        let n = T::from_usize(z.nrows());
        let a = self.alpha();
        let mut g = Array2::<T>::zeros(z.dim());
        for ((w, _, s), (k, u)) in self
            .stats(z, pi)
            .into_iter()
            .zip(self.bases.iter().enumerate())
        {
            // rows: π_jk · (D_k U_kᵀ z_j)ᵀ, then times U_kᵀ
            let d: Array1<T> = s.mapv(|x| a / (T::one() + a * x));
            let mut scaled = w;
            for (mut r, &pjk) in scaled.rows_mut().into_iter().zip(pi.column(k)) {
                for (v, &di) in r.iter_mut().zip(&d) {
                    *v *= di * pjk / n;
                }
            }
            crate::linalg::gemm(T::one(), scaled.view(), u.t(), true, g.view_mut(), false);
        }
        Ok(g)
    }

    /// The TSSA step `Z − τ ∇_Z R^var(Z, Π(Z))` (τ > 0).
    pub fn step(&self, z: &ArrayRef2<T>, tau: f64) -> Result<Array2<T>> {
        crate::validate::positive("tau", tau)?;
        let pi = self.membership(z)?;
        let g = self.gradient(z, &pi)?;
        Ok(z.to_owned() - &(g * T::from_f64(tau)))
    }
}

/// Sizes and constants of a ToST block.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ToStBlockConfig {
    /// Token dimension.
    pub dim: usize,
    /// Heads (must divide dim).
    pub heads: usize,
    /// MLP hidden size as a multiple of dim (reference 4).
    pub mlp_ratio: usize,
    /// Initial LayerScale γ (reference 1.0 for depth 12, 1e-5 for depth 24).
    pub layer_scale: f64,
    /// LayerNorm ε (reference 1e-6).
    pub ln_eps: f64,
    /// Whether the TSSA projection has a bias (reference models: yes).
    pub qkv_bias: bool,
}

impl ToStBlockConfig {
    /// A block of the given sizes with the reference constants.
    pub fn new(dim: usize, heads: usize) -> Self {
        Self {
            dim,
            heads,
            mlp_ratio: 4,
            layer_scale: 1.0,
            ln_eps: 1e-6,
            qkv_bias: true,
        }
    }

    /// Errors unless the sizes and constants are valid.
    pub fn check(&self) -> Result<()> {
        check_heads(self.dim, self.heads)?;
        if self.mlp_ratio == 0 {
            return Err(Error::InvalidParameter {
                name: "mlp_ratio",
                value: "0".into(),
                reason: "must be ≥ 1",
            });
        }
        if !self.layer_scale.is_finite() {
            return Err(Error::InvalidParameter {
                name: "layer_scale",
                value: self.layer_scale.to_string(),
                reason: "must be finite",
            });
        }
        crate::validate::positive("ln_eps", self.ln_eps)
    }
}

/// A ToST block: `x + γ₁ ⊙ TSSA(LN₁(x))`, then `x + γ₂ ⊙ MLP(LN₂(x))` with a GELU MLP
/// (`fc1`, GELU, `fc2`). Weight names (under a prefix): `norm1.*`, `attn.*` (as [`Tssa`]),
/// `gamma1`, `norm2.*`, `mlp.fc1.*`, `mlp.fc2.*`, `gamma2`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToStBlock<T: Float> {
    norm1: LayerNorm<T>,
    attn: Tssa<T>,
    gamma1: Array1<T>,
    norm2: LayerNorm<T>,
    fc1_weight: Array2<T>,
    fc1_bias: Array1<T>,
    fc2_weight: Array2<T>,
    fc2_bias: Array1<T>,
    gamma2: Array1<T>,
}

impl<T: Float> ToStBlock<T> {
    /// The reference initialization: Linear weights N(0, 0.02²) and biases 0, LayerNorms 1
    /// and 0, temperatures 1, LayerScale γ = `layer_scale`.
    pub fn new<R: Rng + ?Sized>(config: &ToStBlockConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let (d, hidden) = (config.dim, config.dim * config.mlp_ratio);
        let g = Array1::from_elem(d, T::from_f64(config.layer_scale));
        Ok(Self {
            norm1: LayerNorm::new(d, config.ln_eps)?,
            attn: Tssa::random(d, config.heads, config.qkv_bias, rng)?,
            gamma1: g.clone(),
            norm2: LayerNorm::new(d, config.ln_eps)?,
            fc1_weight: normal(hidden, d, rng),
            fc1_bias: Array1::zeros(hidden),
            fc2_weight: normal(d, hidden, rng),
            fc2_bias: Array1::zeros(d),
            gamma2: g,
        })
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.attn.dim()
    }

    /// The attention.
    pub fn attention(&self) -> &Tssa<T> {
        &self.attn
    }

    fn apply(&self, x: ArrayView2<T>) -> Array2<T> {
        let h = self.norm1.apply(x);
        let a = self.attn.apply(h.view());
        let mut y = x.to_owned();
        for (mut yr, ar) in y.rows_mut().into_iter().zip(a.rows()) {
            ndarray::Zip::from(&mut yr)
                .and(&ar)
                .and(&self.gamma1)
                .for_each(|y, &a, &g| *y += g * a);
        }
        let h2 = self.norm2.apply(y.view());
        let mut hidden = linear(h2.view(), &self.fc1_weight, Some(&self.fc1_bias));
        hidden.mapv_inplace(gelu);
        let m = linear(hidden.view(), &self.fc2_weight, Some(&self.fc2_bias));
        for (mut yr, mr) in y.rows_mut().into_iter().zip(m.rows()) {
            ndarray::Zip::from(&mut yr)
                .and(&mr)
                .and(&self.gamma2)
                .for_each(|y, &m, &g| *y += g * m);
        }
        y
    }

    /// One sequence (n × dim).
    pub fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        Ok(self.apply(x.view()))
    }

    /// A batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check3(x, self.dim())?;
        Ok(per_sequence(x, |s| self.apply(s)))
    }

    fn read(
        st: &safetensors::SafeTensors<'_>,
        config: &ToStBlockConfig,
        prefix: &str,
    ) -> Result<Self> {
        config.check()?;
        let (d, hidden) = (config.dim, config.dim * config.mlp_ratio);
        let n = |s: &str| format!("{prefix}{s}");
        let norm = |w: &str, b: &str| -> Result<LayerNorm<T>> {
            LayerNorm::from_parts(vector(st, &n(w), d)?, vector(st, &n(b), d)?, config.ln_eps)
        };
        let block = Self {
            norm1: norm("norm1.weight", "norm1.bias")?,
            attn: Tssa::read(
                st,
                &REFERENCE_NAMES,
                d,
                config.heads,
                config.qkv_bias,
                &n("attn."),
            )?,
            gamma1: vector(st, &n("gamma1"), d)?,
            norm2: norm("norm2.weight", "norm2.bias")?,
            fc1_weight: matrix(st, &n("mlp.fc1.weight"), hidden, d)?,
            fc1_bias: vector(st, &n("mlp.fc1.bias"), hidden)?,
            fc2_weight: matrix(st, &n("mlp.fc2.weight"), d, hidden)?,
            fc2_bias: vector(st, &n("mlp.fc2.bias"), d)?,
            gamma2: vector(st, &n("gamma2"), d)?,
        };
        Ok(block)
    }

    fn write(&self, prefix: &str, map: &mut HashMap<String, crate::crate_layer::weights::Out>) {
        self.attn
            .write(&REFERENCE_NAMES, &format!("{prefix}attn."), map);
        let mut put = |name: &str, shape: &[usize], values: Vec<&T>| {
            map.insert(
                format!("{prefix}{name}"),
                out::<T>(shape, values.into_iter()),
            );
        };
        let d = self.dim();
        put("norm1.weight", &[d], self.norm1.weight().iter().collect());
        put("norm1.bias", &[d], self.norm1.bias().iter().collect());
        put("gamma1", &[d], self.gamma1.iter().collect());
        put("norm2.weight", &[d], self.norm2.weight().iter().collect());
        put("norm2.bias", &[d], self.norm2.bias().iter().collect());
        put(
            "mlp.fc1.weight",
            self.fc1_weight.shape(),
            self.fc1_weight.iter().collect(),
        );
        put(
            "mlp.fc1.bias",
            self.fc1_bias.shape(),
            self.fc1_bias.iter().collect(),
        );
        put(
            "mlp.fc2.weight",
            self.fc2_weight.shape(),
            self.fc2_weight.iter().collect(),
        );
        put(
            "mlp.fc2.bias",
            self.fc2_bias.shape(),
            self.fc2_bias.iter().collect(),
        );
        put("gamma2", &[d], self.gamma2.iter().collect());
    }

    /// Loads a block from safetensors bytes (names under `prefix`, see the type docs).
    pub fn from_safetensors(bytes: &[u8], config: &ToStBlockConfig, prefix: &str) -> Result<Self> {
        Self::read(&parse(bytes)?, config, prefix)
    }

    /// Writes the block's tensors under `prefix`.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let mut map = HashMap::new();
        self.write(prefix, &mut map);
        serialize(map)
    }
}

/// A stack of [`ToStBlock`]s (weights `{prefix}{l}.…`, e.g. `blocks.{l}.` in the reference).
#[derive(Debug, Clone, PartialEq)]
pub struct ToStEncoder<T: Float> {
    blocks: Vec<ToStBlock<T>>,
}

impl<T: Float> ToStEncoder<T> {
    /// `depth` blocks with the reference initialization.
    pub fn new<R: Rng + ?Sized>(
        config: &ToStBlockConfig,
        depth: usize,
        rng: &mut R,
    ) -> Result<Self> {
        if depth == 0 {
            return Err(Error::InvalidParameter {
                name: "depth",
                value: "0".into(),
                reason: "must be ≥ 1",
            });
        }
        let blocks = (0..depth)
            .map(|_| ToStBlock::new(config, rng))
            .collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    /// The blocks.
    pub fn blocks(&self) -> &[ToStBlock<T>] {
        &self.blocks
    }

    /// Runs every block on a batch (b × n × dim).
    pub fn forward_batch(&self, x: &ArrayRef3<T>) -> Result<Array3<T>> {
        check3(x, self.blocks[0].dim())?;
        Ok(per_sequence(x, |s| {
            let mut z = self.blocks[0].apply(s);
            for b in &self.blocks[1..] {
                z = b.apply(z.view());
            }
            z
        }))
    }

    /// Loads `depth` blocks named `{prefix}{l}.…`.
    pub fn from_safetensors(
        bytes: &[u8],
        config: &ToStBlockConfig,
        depth: usize,
        prefix: &str,
    ) -> Result<Self> {
        if depth == 0 {
            return Err(Error::InvalidParameter {
                name: "depth",
                value: "0".into(),
                reason: "must be ≥ 1",
            });
        }
        let st = parse(bytes)?;
        let blocks = (0..depth)
            .map(|l| ToStBlock::read(&st, config, &format!("{prefix}{l}.")))
            .collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    /// Writes every block as `{prefix}{l}.…`.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let mut map = HashMap::new();
        for (l, b) in self.blocks.iter().enumerate() {
            b.write(&format!("{prefix}{l}."), &mut map);
        }
        serialize(map)
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::gelu;

    #[test]
    fn gelu_matches_known_values() {
        // Φ(x) from erf values: erf(1/√2) = 0.682689492137086, erf(√2) = 0.954499736103642
        for (x, want) in [
            (0.0f64, 0.0f64),
            (1.0, 0.5 * (1.0 + 0.682_689_492_137_086)),
            (-1.0, -0.5 * (1.0 - 0.682_689_492_137_086)),
            (2.0, 1.0 + 0.954_499_736_103_642),
        ] {
            assert!((gelu(x) - want).abs() < 1e-14, "{x}");
        }
    }
}
