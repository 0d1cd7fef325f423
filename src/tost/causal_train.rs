//! Causal TSSA's backward pass, beside its forward (`causal.rs`).
//!
//! Forward, per sequence, token i attending to tokens j ≤ i (head k(c) of coordinate c):
//! `W = X Qᵀ + b`, `S_ic = Σ_{j≤i} W_jc²`, `E_ik = τ_k Σ_{c∈k} (W_ic²/max(S_ic, 10⁻¹²) + β_ki)`,
//! `Π_i = softmax_k(E_i)`, `m_ik = Σ_{j≤i} Π_jk`, `P_ic = Σ_{j≤i} Π_jk W_jc²`,
//! `Y_ic = −Π_ik W_ic / (1 + P_ic/(m_ik + 10⁻⁸))`, output `Y W_outᵀ + b_out`. The backward
//! runs the chain in reverse; each prefix sum becomes a suffix sum of its gradient.

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewMutD, s};

use super::causal::CausalTssa;
use super::{NORM_FLOOR, PI_FLOOR};
use crate::nn::{Layer, LinearCache, Trainable, check_gradients, check_upstream};
use crate::{Error, Float, Result};

/// What [`CausalTssa`]'s backward needs, for m = b·n tokens: the input, the projected tokens,
/// the head outputs and `S`, `P` (m × dim each), Π and m (m × heads): `m·(5·dim + 2·heads)`
/// values.
#[derive(Debug, Clone)]
pub struct CausalTssaCache<T: Float> {
    x: LinearCache<T>,
    w: Array2<T>,
    y: LinearCache<T>,
    prefix_sq: Array2<T>,
    prefix_moment: Array2<T>,
    pi: Array2<T>,
    prefix_mass: Array2<T>,
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
        let p = dim / h;
        let x = LinearCache::copy_of(x);
        let w = t.qkv.apply(x.view());
        let (floor, eps) = (T::from_f64(NORM_FLOOR), T::from_f64(PI_FLOOR));
        let mut y = Array2::<T>::zeros((m, dim));
        let (mut prefix_sq, mut prefix_moment) = (Array2::zeros((m, dim)), Array2::zeros((m, dim)));
        let (mut pi, mut prefix_mass) = (Array2::zeros((m, h)), Array2::<T>::zeros((m, h)));
        for r in 0..m {
            let i = r % n;
            let first = i == 0;
            for c in 0..dim {
                let before = if first {
                    T::zero()
                } else {
                    prefix_sq[(r - 1, c)]
                };
                prefix_sq[(r, c)] = before + w[(r, c)] * w[(r, c)];
            }
            let mut e = vec![T::zero(); h];
            for (k, ek) in e.iter_mut().enumerate() {
                let mut acc = T::zero();
                for c in k * p..(k + 1) * p {
                    acc += w[(r, c)] * w[(r, c)] / prefix_sq[(r, c)].max(floor)
                        + self.denom_bias[(k, i)];
                }
                *ek = t.temp[k] * acc;
            }
            crate::kernels::softmax_in_place(&mut e);
            for k in 0..h {
                pi[(r, k)] = e[k];
                let before = if first {
                    T::zero()
                } else {
                    prefix_mass[(r - 1, k)]
                };
                prefix_mass[(r, k)] = before + e[k];
                for c in k * p..(k + 1) * p {
                    let before = if first {
                        T::zero()
                    } else {
                        prefix_moment[(r - 1, c)]
                    };
                    prefix_moment[(r, c)] = before + e[k] * w[(r, c)] * w[(r, c)];
                    let q = T::one() + prefix_moment[(r, c)] / (prefix_mass[(r, k)] + eps);
                    y[(r, c)] = -e[k] * w[(r, c)] / q;
                }
            }
        }
        let out = t.to_out.apply(y.view());
        crate::validate::finite_output("causal TSSA output", &out)?;
        let cache = CausalTssaCache {
            x,
            w,
            y: LinearCache::adopt(y),
            prefix_sq,
            prefix_moment,
            pi,
            prefix_mass,
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
        let mut dw = Array2::<T>::zeros(cache.w.dim());
        for sq in 0..cache.x.nrows() / cache.n {
            self.sequence_backward(cache, sq, &d_head, &mut dw, &mut g_temp, &mut g_bias);
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
    /// Sequence `sq`'s share of the backward (see the module docs): adds `∂L/∂W` into `dw`,
    /// `∂L/∂τ` into `g_temp` and `∂L/∂β` into `g_bias`.
    fn sequence_backward(
        &self,
        cache: &CausalTssaCache<T>,
        sq: usize,
        d_y: &Array2<T>,
        dw: &mut Array2<T>,
        g_temp: &mut ndarray::ArrayViewMut1<'_, T>,
        g_bias: &mut ndarray::ArrayViewMut2<'_, T>,
    ) {
        let t = &self.inner;
        let (n, dim, h) = (cache.n, t.dim(), t.heads());
        let p = dim / h;
        let rows = sq * n..(sq + 1) * n;
        let w = cache.w.slice(s![rows.clone(), ..]);
        let pi = cache.pi.slice(s![rows.clone(), ..]);
        let ssq = cache.prefix_sq.slice(s![rows.clone(), ..]);
        let pm = cache.prefix_moment.slice(s![rows.clone(), ..]);
        let mass = cache.prefix_mass.slice(s![rows.clone(), ..]);
        let dys = d_y.slice(s![rows.clone(), ..]);
        let (floor, eps, two) = (
            T::from_f64(NORM_FLOOR),
            T::from_f64(PI_FLOOR),
            T::from_f64(2.0),
        );
        let mut dws = Array2::<T>::zeros((n, dim));
        let mut dpi = Array2::<T>::zeros((n, h));
        // suffix sums of dP and dm, and of dS, built from the last token back
        let mut suffix_dp = vec![T::zero(); dim];
        let mut suffix_dm = vec![T::zero(); h];
        let mut suffix_ds = vec![T::zero(); dim];
        for i in (0..n).rev() {
            // Y_ic = −Π_ik W_ic / q_ic, q_ic = 1 + P_ic/(m_ik + ε)
            for c in 0..dim {
                let k = c / p;
                let denom = mass[(i, k)] + eps;
                let q = T::one() + pm[(i, c)] / denom;
                let d = dys[(i, c)];
                dws[(i, c)] -= pi[(i, k)] / q * d;
                dpi[(i, k)] -= w[(i, c)] / q * d;
                let dq = pi[(i, k)] * w[(i, c)] / (q * q) * d;
                suffix_dp[c] += dq / denom;
                suffix_dm[k] -= dq * pm[(i, c)] / (denom * denom);
            }
            // P_ic and m_ik are prefix sums over j ≤ i: token i receives the suffix sums
            for c in 0..dim {
                let k = c / p;
                dpi[(i, k)] += suffix_dp[c] * w[(i, c)] * w[(i, c)];
                dws[(i, c)] += two * pi[(i, k)] * w[(i, c)] * suffix_dp[c];
            }
            for k in 0..h {
                dpi[(i, k)] += suffix_dm[k];
            }
            // Π_i = softmax(E_i), E_ik = τ_k Σ_{c∈k} (W_ic²/S_ic + β_ki)
            let dot = (0..h).map(|k| pi[(i, k)] * dpi[(i, k)]).sum::<T>();
            for k in 0..h {
                let de = pi[(i, k)] * (dpi[(i, k)] - dot);
                let mut inner = T::zero();
                for c in k * p..(k + 1) * p {
                    let sc = ssq[(i, c)].max(floor);
                    inner += w[(i, c)] * w[(i, c)] / sc + self.denom_bias[(k, i)];
                    let dterm = de * t.temp[k];
                    dws[(i, c)] += dterm * two * w[(i, c)] / sc;
                    if ssq[(i, c)] > floor {
                        suffix_ds[c] -= dterm * w[(i, c)] * w[(i, c)] / (sc * sc);
                    }
                }
                g_temp[k] += de * inner;
                g_bias[(k, i)] += de * t.temp[k] * T::from_usize(p);
            }
            // S_ic = Σ_{j≤i} W_jc²: token i receives the suffix sum of dS
            for c in 0..dim {
                dws[(i, c)] += two * w[(i, c)] * suffix_ds[c];
            }
        }
        let mut target = dw.slice_mut(s![rows, ..]);
        target += &dws;
    }
}
