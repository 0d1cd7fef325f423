//! Multi-head subspace self-attention: the compression step of CRATE.

use ndarray::{Array1, Array2, ArrayRef2, ArrayView2, ArrayViewD, ArrayViewMut2, Axis};
use rand::Rng;

use super::heads::{attention_rows, for_each_head_block, query_splits};
use crate::kernels::softmax_rows_in_place;
use crate::nn::{Checkpoint, Layer, ScopedWriter, TensorReader};
use crate::workspace::Scratch;
use crate::{Error, Float, Precision, Result};

/// Sizes of a [`Mssa`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MssaConfig {
    /// Token dimension.
    pub dim: usize,
    /// Number of heads (subspaces).
    pub heads: usize,
    /// Dimension of each head.
    pub dim_head: usize,
}

impl MssaConfig {
    /// Whether the reference has an output projection (all but heads = 1, dim_head = dim).
    pub fn project_out(&self) -> bool {
        !(self.heads == 1 && self.dim_head == self.dim)
    }

    /// Errors unless every size is ≥ 1 and the weights fit in memory.
    pub fn check(&self) -> Result<()> {
        crate::validate::at_least_one("dim", self.dim)?;
        crate::validate::at_least_one("heads", self.heads)?;
        crate::validate::at_least_one("dim_head", self.dim_head)?;
        crate::validate::elements(&[self.heads, self.dim_head, self.dim])?;
        Ok(())
    }
}

/// How the concatenated head outputs `O = [SSA_1 … SSA_K]` (rows are tokens) become the
/// block's update.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output<T> {
    /// `O` itself (the reference code when heads = 1 and dim_head = dim).
    Identity,
    /// `O Wᵀ + b`, W: dim × inner (the reference `to_out`; CRATE-α has no bias).
    Linear {
        weight: Array2<T>,
        bias: Option<Array1<T>>,
    },
    /// The paper's compression step, as an update added to Z:
    /// `κβ(β·O·[U_1 … U_K]ᵀ − Z)`, β = p/(nε²) with n the number of tokens.
    Compression { kappa: f64, eps_sq: f64 },
}

/// Multi-head subspace self-attention, `MSSA(Z | U_1..U_K)`.
///
/// For head k with basis `U_k` (dim × p; the reference code stores `U_kᵀ` as rows
/// `k·p..(k+1)·p` of `qkv.weight`), with tokens as rows:
///
/// * `W_k = Z U_k` (n × p) — one tied projection serves as query, key and value;
/// * `SSA_k = softmax_rows(s · W_k W_kᵀ) W_k`, s = p^{-½} in the reference code, 1 in the paper;
/// * the head outputs are concatenated and mapped back (see [`Mssa::forward`]).
///
/// Reference: Yu et al., *White-Box Transformers via Sparse Rate Reduction*, arXiv 2306.01129,
/// Eq. 9–11; the reference `Attention` module of `Ma-Lab-Berkeley/CRATE`.
///
/// ```
/// use mcr2::crate_layer::Mssa;
/// use mcr2::ndarray::{Array2, s};
/// use mcr2::Precision;
/// // white box: two 2-dimensional subspaces of R⁴, κ the step on the compression term
/// let eye = Array2::<f64>::eye(4);
/// let bases = [eye.slice(s![.., 0..2]).to_owned(), eye.slice(s![.., 2..4]).to_owned()];
/// let mssa = Mssa::from_subspaces(&bases, Precision::from_eps_sq(0.5)?, 0.5)?;
/// let z = Array2::from_shape_fn((5, 4), |(i, j)| ((i + 2 * j) % 3) as f64 - 1.0);
/// assert_eq!(mssa.forward(&z)?.dim(), (5, 4));
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Mssa<T: Float> {
    pub(crate) heads: usize,
    pub(crate) dim_head: usize,
    /// heads·dim_head × dim: the rows of head k are U_kᵀ.
    pub(crate) qkv: Array2<T>,
    pub(crate) scale: f64,
    pub(crate) output: Output<T>,
}

impl<T: Float> Mssa<T> {
    /// The reference parameterisation: `qkv` (heads·dim_head × dim), and the output
    /// projection `(weight: dim × heads·dim_head, bias: dim)`, which must be `None` exactly when
    /// heads = 1 and dim_head = dim. Attention scale dim_head^{-½}.
    pub fn from_parts(
        qkv: Array2<T>,
        heads: usize,
        to_out: Option<(Array2<T>, Array1<T>)>,
    ) -> Result<Self> {
        Self::with_output(qkv, heads, to_out.map(|(w, b)| (w, Some(b))))
    }

    /// CRATE-α's parameterisation: `qkv` and an output projection without bias (`None`
    /// exactly when heads = 1 and dim_head = dim).
    pub fn from_parts_unbiased(
        qkv: Array2<T>,
        heads: usize,
        to_out: Option<Array2<T>>,
    ) -> Result<Self> {
        Self::with_output(qkv, heads, to_out.map(|w| (w, None)))
    }

    fn with_output(
        qkv: Array2<T>,
        heads: usize,
        to_out: Option<(Array2<T>, Option<Array1<T>>)>,
    ) -> Result<Self> {
        let (inner, dim) = qkv.dim();
        if heads == 0 || inner == 0 || dim == 0 || inner % heads != 0 {
            return Err(Error::InvalidParameter {
                name: "heads",
                value: heads.to_string(),
                reason: "must be ≥ 1 and divide the rows of qkv (heads·dim_head)",
            });
        }
        crate::validate::matrix("qkv weight", &qkv)?;
        let dim_head = inner / heads;
        let project = !(heads == 1 && dim_head == dim);
        let output = match (to_out, project) {
            (None, false) => Output::Identity,
            (Some((w, b)), true) => {
                let bias_len = b.as_ref().map_or(dim, |b| b.len());
                if w.dim() != (dim, inner) || bias_len != dim {
                    return Err(Error::ShapeMismatch {
                        what: "output projection",
                        expected: format!("weight {dim}×{inner} and bias {dim}"),
                        got: format!("weight {}×{} and bias {bias_len}", w.nrows(), w.ncols()),
                    });
                }
                crate::validate::matrix("output projection weight", &w)?;
                if let Some(b) = &b {
                    crate::validate::finite(
                        "output projection bias",
                        &b.view().insert_axis(Axis(0)),
                    )?;
                }
                Output::Linear { weight: w, bias: b }
            }
            (None, true) => {
                return Err(Error::InvalidParameter {
                    name: "to_out",
                    value: "None".into(),
                    reason: "an output projection is required unless heads = 1 and dim_head = dim",
                });
            }
            (Some(_), false) => {
                return Err(Error::InvalidParameter {
                    name: "to_out",
                    value: "Some".into(),
                    reason: "the reference has no output projection when heads = 1 and dim_head = dim",
                });
            }
        };
        Ok(Self {
            heads,
            dim_head,
            qkv,
            scale: (dim_head as f64).powf(-0.5),
            output,
        })
    }

    /// Random weights with the reference initialization (PyTorch `Linear` defaults:
    /// U(±1/√fan_in) for weights and biases).
    pub fn new<R: Rng + ?Sized>(config: &MssaConfig, rng: &mut R) -> Result<Self> {
        let (qkv, to_out) = Self::random_weights(config, rng)?;
        Self::from_parts(qkv, config.heads, to_out)
    }

    /// CRATE-α's attention with random weights (PyTorch `Linear` defaults, no biases).
    pub fn new_unbiased<R: Rng + ?Sized>(config: &MssaConfig, rng: &mut R) -> Result<Self> {
        let (qkv, to_out) = Self::random_weights(config, rng)?;
        Self::from_parts_unbiased(qkv, config.heads, to_out.map(|(w, _)| w))
    }

    /// `qkv`, and `(weight, bias)` of the output projection where the reference has one.
    #[allow(clippy::type_complexity)]
    fn random_weights<R: Rng + ?Sized>(
        config: &MssaConfig,
        rng: &mut R,
    ) -> Result<(Array2<T>, Option<(Array2<T>, Array1<T>)>)> {
        config.check()?;
        let MssaConfig {
            dim,
            heads,
            dim_head,
        } = *config;
        let inner = heads * dim_head;
        let mut uniform = |rows: usize, cols: usize, fan_in: usize| {
            let b = 1.0 / (fan_in as f64).sqrt();
            Array2::from_shape_simple_fn((rows, cols), || T::from_f64(rng.random_range(-b..b)))
        };
        let qkv = uniform(inner, dim, dim);
        let to_out = if heads == 1 && dim_head == dim {
            None
        } else {
            let w = uniform(dim, inner, inner);
            let b = uniform(1, dim, inner).row(0).to_owned();
            Some((w, b))
        };
        Ok((qkv, to_out))
    }

    /// The white-box compression step of the paper from orthonormal subspace bases
    /// `U_1..U_K` (each dim × p), precision ε and step κ:
    ///
    /// `Z^{ℓ+½} = (1 − κβ) Z + κβ·MSSA(Z | U)`, `MSSA(Z | U) = β [U_1 … U_K] [SSA_1; …; SSA_K]`,
    /// `β = p/(nε²)`, SSA without the 1/√p scale (arXiv 2306.01129, Eq. 9–11). As a block's
    /// residual update, [`forward`](Self::forward) returns `Z^{ℓ+½} − Z`. To first order this
    /// is a gradient step of size κ on the compression term
    /// `Rc(Z | U) = ½ Σ_k logdet(I + β (U_kᵀZ)ᵀ(U_kᵀZ))`.
    pub fn from_subspaces(bases: &[Array2<T>], eps: Precision, kappa: f64) -> Result<Self> {
        let first = bases.first().ok_or_else(|| Error::InvalidParameter {
            name: "bases",
            value: "[]".into(),
            reason: "at least one subspace basis is required",
        })?;
        let (dim, p) = first.dim();
        crate::validate::positive("kappa", kappa)?;
        let mut qkv = Array2::<T>::zeros((bases.len() * p, dim));
        for (k, u) in bases.iter().enumerate() {
            if u.dim() != (dim, p) {
                return Err(Error::ShapeMismatch {
                    what: "subspace basis",
                    expected: format!("{dim}×{p}"),
                    got: format!("{}×{}", u.nrows(), u.ncols()),
                });
            }
            crate::validate::matrix("subspace basis", u)?;
            crate::linalg::block_mut(qkv.view_mut(), k * p..(k + 1) * p, 0..dim).assign(&u.t());
        }
        if dim == 0 || p == 0 {
            return Err(Error::Empty {
                what: "subspace basis",
                rows: dim,
                cols: p,
            });
        }
        Ok(Self {
            heads: bases.len(),
            dim_head: p,
            qkv,
            scale: 1.0,
            output: Output::Compression {
                kappa,
                eps_sq: eps.eps_sq(),
            },
        })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.qkv.ncols()
    }

    /// Number of heads (subspaces).
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Dimension of each head (subspace).
    pub fn dim_head(&self) -> usize {
        self.dim_head
    }

    /// The stacked projections `[U_1 … U_K]ᵀ` (heads·dim_head × dim).
    pub fn qkv(&self) -> &Array2<T> {
        &self.qkv
    }

    /// The output projection `(weight, bias)` of the reference parameterisation, if any
    /// (the bias is `None` in CRATE-α's).
    pub fn to_out(&self) -> Option<(&Array2<T>, Option<&Array1<T>>)> {
        match &self.output {
            Output::Linear { weight, bias } => Some((weight, bias.as_ref())),
            _ => None,
        }
    }

    /// This layer's sizes.
    pub fn config(&self) -> MssaConfig {
        MssaConfig {
            dim: self.dim(),
            heads: self.heads,
            dim_head: self.dim_head,
        }
    }

    /// Whether this is the white-box compression step built by
    /// [`from_subspaces`](Self::from_subspaces).
    pub fn is_white_box(&self) -> bool {
        matches!(self.output, Output::Compression { .. })
    }

    /// The attention update for one sequence `x` (n × dim, tokens as rows): the block adds it
    /// to its input. Reference parameterisation: `concat_k[softmax(s·W_k W_kᵀ) W_k]·Wᵀ + b`;
    /// white box: `κβ(β [U_1 … U_K][SSA_k]_k − Z)` (see [`from_subspaces`](Self::from_subspaces)).
    pub fn forward(&self, x: &ndarray::ArrayRef2<T>) -> Result<Array2<T>> {
        crate::validate::matrix_with_cols("tokens", x, self.dim())?;
        super::check_projection(self, x.nrows())?;
        let y = self.apply(x.view(), x.nrows());
        crate::validate::finite_output("MSSA output", &y)?;
        Ok(y)
    }

    /// The projected tokens `W = Z [U_1 … U_K]` (m × heads·dim_head) of `x` (m × dim).
    pub(crate) fn project(&self, x: ArrayView2<T>) -> Scratch<T> {
        let mut w = crate::workspace::take::<T>(x.nrows(), self.qkv.nrows());
        crate::linalg::gemm(T::one(), x, self.qkv.t(), false, w.view_mut(), true);
        w
    }

    /// The update for `x` (b·n × dim, `b` sequences of `n` tokens), added to `x` by the
    /// block's residual.
    pub(crate) fn apply(&self, x: ArrayView2<T>, n: usize) -> Array2<T> {
        let (_, o) = self.attend(x, n);
        let mut y = x.as_standard_layout().into_owned();
        self.finish(o.view(), n, None, &mut y);
        y
    }

    /// The projected tokens `W` (b·n × heads·dim_head) of `x` and the concatenated head
    /// outputs `O = [SSA_1 … SSA_K]` (same shape).
    pub(crate) fn attend(&self, x: ArrayView2<T>, n: usize) -> (Scratch<T>, Scratch<T>) {
        let m = x.nrows();
        let b = m / n;
        let p = self.dim_head;
        let inner = self.qkv.nrows();
        let w = self.project(x);
        let scale = T::from_f64(self.scale);
        let heads = self.heads;
        // head k of sequence s: O_k = softmax(s·W_k W_kᵀ) W_k, written in place into O, a
        // block of query rows at a time (softmax is row by row, so this is exact): blocks of
        // at most `attention_rows(n)` rows, so that a long sequence's scores fit the scratch,
        // and cut further when the b·heads pairs alone would leave threads idle
        let splits = query_splits(b * heads, n, crate::rows::threads());
        let rows = attention_rows(n).min(n.div_ceil(splits));
        let one_task = b * heads * n.div_ceil(rows) == 1;
        let head = |s: usize, k: usize, r0: usize, ok: ArrayViewMut2<T>| {
            let wk = crate::linalg::block(w.view(), s * n..(s + 1) * n, k * p..(k + 1) * p);
            let wq = wk.slice(ndarray::s![r0..r0 + ok.nrows(), ..]);
            let mut a = crate::workspace::take::<T>(ok.nrows(), n);
            // the full product: cheaper than mirroring a triangle element by element
            crate::linalg::gemm(scale, wq, wk.t(), false, a.view_mut(), one_task);
            softmax_rows_in_place(a.view_mut());
            crate::linalg::gemm(T::one(), a.view(), wk, false, ok, one_task);
        };
        let mut o = crate::workspace::take::<T>(m, inner);
        for_each_head_block(p, n, rows, &mut o, head);
        (w, o)
    }

    /// The attention maps `softmax(s·W_k W_kᵀ)` from the projected tokens `w` (b·n ×
    /// heads·dim_head, see [`project`](Self::project); sequences of `n` tokens), as
    /// b × heads × n × n: entry (s, k, i, j) is how much token i attends to token j in head
    /// k of sequence s (rows sum to 1).
    pub(crate) fn attention_maps(&self, w: ArrayView2<T>, n: usize) -> ndarray::Array4<T> {
        let b = w.nrows() / n;
        let p = self.dim_head;
        let scale = T::from_f64(self.scale);
        let mut maps = ndarray::Array4::<T>::zeros((b, self.heads, n, n));
        let mut a = Array2::<T>::zeros((n, n));
        for s in 0..b {
            for k in 0..self.heads {
                let wk = crate::linalg::block(w.view(), s * n..(s + 1) * n, k * p..(k + 1) * p);
                crate::linalg::gemm(scale, wk, wk.t(), false, a.view_mut(), true);
                softmax_rows_in_place(a.view_mut());
                maps.index_axis_mut(Axis(0), s)
                    .index_axis_mut(Axis(0), k)
                    .assign(&a);
            }
        }
        maps
    }

    /// `y ← base + update(O)` for sequences of `n` tokens, where `y` holds the attention's input `h` on entry (the
    /// white-box update reads it) and `base` is the residual (`None`: zero).
    pub(crate) fn finish(
        &self,
        o: ArrayView2<T>,
        n: usize,
        base: Option<ArrayView2<T>>,
        y: &mut Array2<T>,
    ) {
        match &self.output {
            Output::Identity => match base {
                Some(x) => crate::rows::for_rows(y.view_mut(), |r0, mut y| {
                    let rows = r0..r0 + y.nrows();
                    ndarray::Zip::from(&mut y)
                        .and(x.slice(ndarray::s![rows.clone(), ..]))
                        .and(o.slice(ndarray::s![rows, ..]))
                        .for_each(|y, &x, &o| *y = x + o)
                }),
                None => crate::rows::zip_rows(y.view_mut(), o, |mut y, o| y.assign(&o)),
            },
            Output::Linear { weight, bias } => {
                let rows = |mut y: ArrayViewMut2<T>, x: Option<ArrayView2<T>>| match (x, bias) {
                    (Some(x), Some(bias)) => ndarray::Zip::from(y.rows_mut())
                        .and(x.rows())
                        .for_each(|mut yr, xr| {
                            ndarray::Zip::from(&mut yr)
                                .and(&xr)
                                .and(bias)
                                .for_each(|y, &x, &b| *y = x + b)
                        }),
                    (Some(x), None) => y.assign(&x),
                    (None, Some(bias)) => {
                        for mut yr in y.rows_mut() {
                            yr.assign(bias);
                        }
                    }
                    (None, None) => y.fill(T::zero()),
                };
                match base {
                    Some(x) => crate::rows::zip_rows(y.view_mut(), x, |y, x| rows(y, Some(x))),
                    None => crate::rows::for_rows(y.view_mut(), |_, y| rows(y, None)),
                }
                crate::linalg::gemm(T::one(), o, weight.t(), true, y.view_mut(), true);
            }
            Output::Compression { kappa, eps_sq } => {
                let beta = self.dim_head as f64 / (n as f64 * eps_sq);
                let c = T::from_f64(kappa * beta);
                // κβ(β·O·[U_1..U_K]ᵀ − h), O·[U_1..U_K]ᵀ being O·qkv; y holds h
                match base {
                    Some(x) => crate::rows::zip_rows(y.view_mut(), x, |mut y, x| {
                        ndarray::Zip::from(&mut y)
                            .and(&x)
                            .for_each(|y, &x| *y = x - c * *y)
                    }),
                    None => crate::rows::for_rows(y.view_mut(), |_, mut y| {
                        y.map_inplace(|h| *h = -c * *h)
                    }),
                }
                crate::linalg::gemm(
                    T::from_f64(kappa * beta * beta),
                    o,
                    self.qkv.view(),
                    true,
                    y.view_mut(),
                    true,
                );
            }
        }
    }
}

impl<T: Float> Layer<T> for Mssa<T> {
    fn dim(&self) -> usize {
        self.qkv.ncols()
    }

    fn forward(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        Mssa::forward(self, x)
    }

    /// `qkv.weight`, and `to_out.0.weight`, `to_out.0.bias` where the reference has them
    /// (none for the white-box step, whose bases are `qkv.weight`).
    fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let mut p = vec![("qkv.weight".to_string(), self.qkv.view().into_dyn())];
        if let Some((w, b)) = self.to_out() {
            p.push(("to_out.0.weight".to_string(), w.view().into_dyn()));
            if let Some(b) = b {
                p.push(("to_out.0.bias".to_string(), b.view().into_dyn()));
            }
        }
        p
    }
}

impl<T: Float> Checkpoint<T> for Mssa<T> {
    type Config = MssaConfig;

    /// Reads `qkv.weight` (heads·dim_head × dim) and, unless heads = 1 and dim_head = dim,
    /// `to_out.0.weight` (dim × heads·dim_head) and `to_out.0.bias` (dim).
    fn load(reader: &TensorReader<'_>, c: &MssaConfig) -> Result<Self> {
        c.check()?;
        let inner = c.heads * c.dim_head;
        let qkv = reader.matrix("qkv.weight", inner, c.dim)?;
        let to_out = if c.project_out() {
            Some((
                reader.matrix("to_out.0.weight", c.dim, inner)?,
                reader.vector("to_out.0.bias", c.dim)?,
            ))
        } else {
            None
        };
        Self::from_parts(qkv, c.heads, to_out)
    }

    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        if self.is_white_box() {
            return Err(Error::InvalidParameter {
                name: "attention",
                value: "white-box".into(),
                reason: "the white-box compression step has no reference state_dict",
            });
        }
        crate::nn::save_parameters(self, writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    /// Past 1024 tokens the scores are formed a block of query rows at a time; the result
    /// is that of the full n × n softmax.
    #[test]
    fn row_blocks_match_the_full_attention() {
        let n = 2500;
        assert!(attention_rows(n) < n);
        let mssa = Mssa::<f64>::new(
            &MssaConfig {
                dim: 6,
                heads: 2,
                dim_head: 3,
            },
            &mut StdRng::seed_from_u64(0),
        )
        .unwrap();
        let x = Array2::from_shape_fn((n, 6), |(i, j)| ((i * 7 + j * 3) % 11) as f64 / 5.0 - 1.0);
        let (w, o) = mssa.attend(x.view(), n);
        let maps = mssa.attention_maps(w.view(), n);
        for k in 0..2 {
            let wk = w.slice(ndarray::s![.., k * 3..(k + 1) * 3]);
            let want = maps.index_axis(Axis(0), 0).index_axis(Axis(0), k).dot(&wk);
            let got = o.slice(ndarray::s![.., k * 3..(k + 1) * 3]);
            let err = (&want - &got).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-12, "head {k}: {err}");
        }
    }
}
