//! Causal TSSA's backward pass, beside its forward (`causal.rs`).
//!
//! Forward, per sequence, token i attending to tokens j ≤ i (head k(c) of coordinate c):
//! `W = X Qᵀ + b`, `S_ic = Σ_{j≤i} W_jc²`, `E_ik = τ_k Σ_{c∈k} (W_ic²/max(S_ic, 10⁻¹²) + β_ki)`,
//! `Π_i = softmax_k(E_i)`, `m_ik = Σ_{j≤i} Π_jk`, `P_ic = Σ_{j≤i} Π_jk W_jc²`,
//! `Y_ic = −Π_ik W_ic / (1 + P_ic/(m_ik + 10⁻⁸))`, output `Y W_outᵀ + b_out`. The backward
//! runs the chain in reverse; each prefix sum becomes a suffix sum of its gradient.

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewMut2, ArrayViewMutD, s};

use super::causal::CausalTssa;
use super::{NORM_FLOOR, PI_FLOOR};
use crate::nn::{Layer, LinearCache, Trainable, check_gradients, check_upstream};
use crate::{Error, Float, Result};

/// What [`CausalTssa`]'s backward needs, for m = b·n tokens: the input, the projected tokens
/// and the head outputs (m × dim each) and, per token, the running sums `S`, `P` (dim each),
/// Π and m (heads each): `m·(5·dim + 2·heads)` values.
#[derive(Debug, Clone)]
pub struct CausalTssaCache<T: Float> {
    x: LinearCache<T>,
    w: Array2<T>,
    y: LinearCache<T>,
    /// m × (2·dim + 2·heads): `[S | P | Π | m]` per token
    state: Array2<T>,
    n: usize,
}

impl<T: Float> Trainable<T> for CausalTssa<T> {
    type Cache = CausalTssaCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        crate::nn::check_sequences(x.nrows(), n)?;
        if n > self.block_size() {
            return Err(Error::ShapeMismatch {
                what: "sequence",
                expected: format!("at most block_size = {} tokens", self.block_size()),
                got: format!("{n} tokens"),
            });
        }
        let t = &self.inner;
        let (m, dim, h) = (x.nrows(), t.dim(), t.heads());
        let x = LinearCache::copy_of(x);
        let w = t.qkv.apply(x.view());
        // each sequence's recurrence on the pool; token i starts from token i − 1's sums
        let mut y = w.clone();
        let mut state = Array2::<T>::zeros((m, 2 * dim + 2 * h));
        crate::rows::map_sequence_pairs(y.view_mut(), state.view_mut(), n, |_, mut ys, mut st| {
            let ys = ys.as_slice_mut().expect("standard layout");
            let st = st.as_slice_mut().expect("standard layout");
            let width = 2 * dim + 2 * h;
            for i in 0..ys.len() / dim {
                let (before, after) = st.split_at_mut(i * width);
                let cur = &mut after[..width];
                if i > 0 {
                    cur.copy_from_slice(&before[(i - 1) * width..]);
                }
                let (s2, rest) = cur.split_at_mut(dim);
                let (moment, rest) = rest.split_at_mut(dim);
                let (pi, mass) = rest.split_at_mut(h);
                self.advance(i, &mut ys[i * dim..(i + 1) * dim], s2, moment, pi, mass);
            }
        });
        let out = t.to_out.apply(y.view());
        crate::validate::finite_output("causal TSSA output", &out)?;
        let cache = CausalTssaCache {
            x,
            w,
            y: LinearCache::adopt(y),
            state,
            n,
        };
        Ok((out, cache))
    }

    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        check_gradients(&self.parameters(), grads)?;
        check_upstream(&dy, cache.x.dim())?;
        let t = &self.inner;
        let nq = t.qkv.parameters().len();
        let (g_qkv, rest) = grads.split_at_mut(nq);
        let (g_temp, rest) = rest.split_at_mut(1);
        let (g_out, g_bias) = rest.split_at_mut(t.to_out.parameters().len());
        let d_head = t.to_out.backward(&cache.y, dy, g_out)?;
        let len = g_temp[0].len();
        let mut g_temp = g_temp[0]
            .view_mut()
            .into_shape_with_order(len)
            .expect("heads × 1");
        let (h, block) = self.denom_bias.dim();
        let mut g_bias = g_bias[0]
            .view_mut()
            .into_shape_with_order((h, block))
            .expect("heads × block × 1");
        // each sequence's ∂L/∂W rows and its shares of ∂L/∂τ and ∂L/∂β, on the pool; the
        // shares are added in sequence order (the same sums on any thread count)
        let mut dw = Array2::<T>::zeros(cache.w.dim());
        let shares = crate::rows::map_sequences(dw.view_mut(), cache.n, |sq, dws| {
            self.sequence_backward(cache, sq, d_head.view(), dws)
        });
        for (d_temp, d_bias) in &shares {
            for (g, &d) in g_temp.iter_mut().zip(d_temp) {
                *g += d;
            }
            for (k, row) in d_bias.chunks_exact(cache.n).enumerate() {
                for (i, &d) in row.iter().enumerate() {
                    g_bias[(k, i)] += d;
                }
            }
        }
        t.qkv.backward(&cache.x, dw.view(), g_qkv)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        self.inner.update_parameters(&mut |name: &str, p| {
            let name = name
                .replacen("qkv.", "c_attn.", 1)
                .replacen("to_out.0.", "c_proj.", 1);
            update(&name, p)
        })?;
        let bias = self.denom_bias.view_mut().insert_axis(ndarray::Axis(2));
        update("denom_bias", bias.into_dyn());
        if self.denom_bias.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidWeights {
                name: "denom_bias".into(),
                reason: "not finite after the update".into(),
            });
        }
        Ok(())
    }
}

impl<T: Float> CausalTssa<T> {
    /// Sequence `sq`'s share of the backward (see the module docs): writes `∂L/∂W` of its
    /// rows into `dws` and returns its shares of `∂L/∂τ` (heads) and `∂L/∂β` (heads × n, by
    /// rows), from the last token back.
    fn sequence_backward(
        &self,
        cache: &CausalTssaCache<T>,
        sq: usize,
        d_y: ArrayView2<T>,
        mut dws: ArrayViewMut2<T>,
    ) -> (Vec<T>, Vec<T>) {
        let t = &self.inner;
        let (n, dim, h) = (cache.n, t.dim(), t.heads());
        let (p, width) = (dim / h, 2 * dim + 2 * h);
        let rows = sq * n..(sq + 1) * n;
        let w = cache.w.slice(s![rows.clone(), ..]);
        let state = cache.state.slice(s![rows.clone(), ..]);
        let dys = d_y.slice(s![rows, ..]);
        let contiguous = "standard layout";
        let (w, state, dys) = (
            w.as_slice().expect(contiguous),
            state.as_slice().expect(contiguous),
            dys.as_slice().expect(contiguous),
        );
        let dws = dws.as_slice_mut().expect(contiguous);
        let (floor, eps, two) = (
            T::from_f64(NORM_FLOOR),
            T::from_f64(PI_FLOOR),
            T::from_f64(2.0),
        );
        let (mut d_temp, mut d_bias) = (vec![T::zero(); h], vec![T::zero(); h * n]);
        let mut dpi = vec![T::zero(); h];
        // suffix sums of dP and dm, and of dS, built from the last token back
        let mut suffix_dp = vec![T::zero(); dim];
        let mut suffix_dm = vec![T::zero(); h];
        let mut suffix_ds = vec![T::zero(); dim];
        for i in (0..n).rev() {
            let st = &state[i * width..(i + 1) * width];
            let (ssq, pm) = (&st[..dim], &st[dim..2 * dim]);
            let (pi, mass) = (&st[2 * dim..2 * dim + h], &st[2 * dim + h..]);
            let (wr, dyr) = (&w[i * dim..(i + 1) * dim], &dys[i * dim..(i + 1) * dim]);
            let out = &mut dws[i * dim..(i + 1) * dim];
            // Y_ic = −Π_ik W_ic / q_ic, q_ic = 1 + P_ic/(m_ik + ε)
            for k in 0..h {
                let denom = mass[k] + eps;
                dpi[k] = T::zero();
                for c in k * p..(k + 1) * p {
                    let q = T::one() + pm[c] / denom;
                    let d = dyr[c];
                    out[c] -= pi[k] / q * d;
                    dpi[k] -= wr[c] / q * d;
                    let dq = pi[k] * wr[c] / (q * q) * d;
                    suffix_dp[c] += dq / denom;
                    suffix_dm[k] -= dq * pm[c] / (denom * denom);
                }
            }
            // P_ic and m_ik are prefix sums over j ≤ i: token i receives the suffix sums
            for k in 0..h {
                for c in k * p..(k + 1) * p {
                    dpi[k] += suffix_dp[c] * wr[c] * wr[c];
                    out[c] += two * pi[k] * wr[c] * suffix_dp[c];
                }
                dpi[k] += suffix_dm[k];
            }
            // Π_i = softmax(E_i), E_ik = τ_k Σ_{c∈k} (W_ic²/S_ic + β_ki)
            let dot = (0..h).map(|k| pi[k] * dpi[k]).sum::<T>();
            for k in 0..h {
                let de = pi[k] * (dpi[k] - dot);
                let bias = self.denom_bias[(k, i)];
                let dterm = de * t.temp[k];
                let mut inner = T::zero();
                for c in k * p..(k + 1) * p {
                    let sc = ssq[c].max(floor);
                    inner += wr[c] * wr[c] / sc + bias;
                    out[c] += dterm * two * wr[c] / sc;
                    if ssq[c] > floor {
                        suffix_ds[c] -= dterm * wr[c] * wr[c] / (sc * sc);
                    }
                }
                d_temp[k] += de * inner;
                d_bias[k * n + i] = dterm * T::from_usize(p);
            }
            // S_ic = Σ_{j≤i} W_jc²: token i receives the suffix sum of dS
            for c in 0..dim {
                out[c] += two * wr[c] * suffix_ds[c];
            }
        }
        (d_temp, d_bias)
    }
}
