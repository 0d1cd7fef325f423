//! TSSA's backward pass, beside its forward (`tssa.rs`).
//!
//! Forward, per sequence (tokens as rows, head k(c) of coordinate c): `W = X Qᵀ + b`,
//! `s_c = Σ_i W_ic²`, `ν_c = 1/max(√s_c, 10⁻¹²)`, `E_ik = τ_k Σ_{c∈k} (W_ic ν_c)²`,
//! `Π_i = softmax_k(E_i)`, `m_k = Σ_i Π_ik`, `M_c = Σ_i Π_ik(c) W_ic²`,
//! `g_c = 1/(1 + M_c/(m_k(c) + 10⁻⁸))`, `Y_ic = −Π_ik(c) W_ic g_c`, output `Y W_outᵀ + b_out`.
//! The backward follows the same chain in reverse (see [`Tssa::statistics_backward`]).

use ndarray::{Array1, Array2, ArrayD, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMutD, s};

use super::tssa::{SequenceStats, Tssa};
use super::{NORM_FLOOR, PI_FLOOR};
use crate::nn::{Layer, LinearCache, Trainable, check_gradients, check_upstream};
use crate::{Error, Float, Result};

/// What [`Tssa`]'s backward needs, for m = b·n tokens: the input and the projected tokens
/// (m × dim each), the memberships Π (m × heads), the head outputs (m × dim) and, per
/// sequence, ν, g and M (3·dim) and m (heads): `m·(3·dim + heads) + b·(3·dim + heads)`
/// values.
#[derive(Debug, Clone)]
pub struct TssaCache<T: Float> {
    x: LinearCache<T>,
    w: Array2<T>,
    pi: Array2<T>,
    y: LinearCache<T>,
    /// per sequence: ν, m, M, g
    stats: Vec<SequenceStats<T>>,
    n: usize,
}

impl<T: Float> Trainable<T> for Tssa<T> {
    type Cache = TssaCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        crate::nn::check_sequences(x.nrows(), n)?;
        let (m, h) = (x.nrows(), self.heads());
        let x = LinearCache::copy_of(x);
        let w = self.qkv.apply(x.view());
        // the statistics of each sequence, on the pool
        let mut pi = Array2::<T>::zeros((m, h));
        let stats = crate::rows::map_sequences(pi.view_mut(), n, |sq, pis| {
            self.statistics_into(w.slice(s![sq * n..(sq + 1) * n, ..]), pis)
        });
        let mut y = w.clone();
        self.head_outputs(y.view_mut(), &pi, &stats, n);
        let out = self.to_out.apply(y.view());
        crate::validate::finite_output("TSSA output", &out)?;
        let cache = TssaCache {
            x,
            w,
            pi,
            y: LinearCache::adopt(y),
            stats,
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
        let nq = self.qkv.parameters().len();
        let (g_qkv, rest) = grads.split_at_mut(nq);
        let (g_temp, g_out) = rest.split_at_mut(1);
        let d_head = self.to_out.backward(&cache.y, dy, g_out)?;
        // each sequence's ∂L/∂W rows and its share of ∂L/∂τ, on the pool; the shares are
        // added in sequence order (the same sum on any thread count)
        let mut dw = Array2::<T>::zeros(cache.w.dim());
        let shares = crate::rows::map_sequences(dw.view_mut(), cache.n, |sq, dws| {
            self.statistics_backward(cache, sq, d_head.view(), dws)
        });
        let mut g_temp = temperature_grad(&mut g_temp[0]);
        for share in &shares {
            g_temp += share;
        }
        self.qkv.backward(&cache.x, dw.view(), g_qkv)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        self.qkv
            .update_parameters(&mut crate::nn::scoped("qkv.", update))?;
        let h = self.heads();
        let temp = self.temp.view_mut().into_shape_with_order((h, 1));
        update("temp", temp.expect("contiguous").into_dyn());
        if self.temp.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidWeights {
                name: "temp".into(),
                reason: "not finite after the update".into(),
            });
        }
        self.to_out
            .update_parameters(&mut crate::nn::scoped("to_out.0.", update))
    }
}

/// The temperature gradient buffer (heads × 1) as a vector.
fn temperature_grad<T>(g: &mut ArrayD<T>) -> ArrayViewMut1<'_, T> {
    let len = g.len();
    g.view_mut()
        .into_shape_with_order(len)
        .expect("a checked heads × 1 buffer")
}

impl<T: Float> Tssa<T> {
    /// Sequence `sq`'s share of the backward: from `dY` (the head outputs' gradient, all
    /// sequences) writes `∂L/∂W` of its rows into `dws` and returns its share of `∂L/∂τ`, in
    /// the reverse order of the forward: `Y → (Π, W, g)`, `g → (M, m)`, `(M, m) → (Π, W)`,
    /// `Π → E` (softmax), `E → (τ, W, ν)`, `ν → s → W`. The sums over tokens run in fixed
    /// blocks of rows, on the pool when the sequence is long.
    fn statistics_backward(
        &self,
        cache: &TssaCache<T>,
        sq: usize,
        d_y: ArrayView2<T>,
        mut dws: ArrayViewMut2<T>,
    ) -> Array1<T> {
        let (n, dim, h) = (cache.n, self.dim(), self.heads());
        let p = dim / h;
        let rows = sq * n..(sq + 1) * n;
        let w = cache.w.slice(s![rows.clone(), ..]);
        let pi = cache.pi.slice(s![rows.clone(), ..]);
        let dys = d_y.slice(s![rows, ..]);
        let (w, pi, dys) = (slice(&w), slice(&pi), slice(&dys));
        let st = &cache.stats[sq];
        let (nu, g) = (slice(&st.nu), slice(&st.gain));
        let (moment, mass) = (slice(&st.moment), slice(&st.mass));
        let eps = T::from_f64(PI_FLOOR);
        let two = T::from_f64(2.0);
        // Y_ic = −Π_ik W_ic g_c: dg_c = −Σ_i Π_ik W_ic dY_ic
        let dg = crate::rows::sum_over_row_blocks(n, dim, |rows, acc| {
            let dg = acc.into_slice().expect("contiguous");
            for i in rows {
                let (wr, dyr) = (&w[i * dim..(i + 1) * dim], &dys[i * dim..(i + 1) * dim]);
                for k in 0..h {
                    for c in k * p..(k + 1) * p {
                        dg[c] -= pi[i * h + k] * wr[c] * dyr[c];
                    }
                }
            }
        });
        // g_c = 1/(1 + r_c), r_c = M_c/(m_k + ε)
        let mut dm = vec![T::zero(); h];
        let mut d_moment = vec![T::zero(); dim];
        for c in 0..dim {
            let k = c / p;
            let dr = -g[c] * g[c] * dg[c];
            let denom = mass[k] + eps;
            d_moment[c] = dr / denom;
            dm[k] -= dr * moment[c] / (denom * denom);
        }
        // per token: dΠ from Y and from (M, m) (M_c = Σ_i Π_ik W_ic², m_k = Σ_i Π_ik), the
        // softmax's backward (Π_i = softmax(E_i), E_ik = τ_k Σ_{c∈k} (W_ic ν_c)²) and dW;
        // [dν | dτ] summed over the tokens
        let sums = crate::rows::sum_over_written_row_blocks::<T, _, _>(
            dws.view_mut(),
            dim + h,
            |r0, mut block, acc| {
                let acc = acc.into_slice().expect("contiguous");
                let (dnu, d_temp) = acc.split_at_mut(dim);
                let mut dpi = vec![T::zero(); h];
                for (ii, mut out) in block.rows_mut().into_iter().enumerate() {
                    let i = r0 + ii;
                    let out = out.as_slice_mut().expect("standard layout");
                    let (wr, dyr) = (&w[i * dim..(i + 1) * dim], &dys[i * dim..(i + 1) * dim]);
                    let pr = &pi[i * h..(i + 1) * h];
                    for k in 0..h {
                        let mut d = T::zero();
                        for c in k * p..(k + 1) * p {
                            out[c] = T::zero() - pr[k] * g[c] * dyr[c];
                            d -= wr[c] * g[c] * dyr[c];
                        }
                        dpi[k] = d;
                    }
                    for k in 0..h {
                        for c in k * p..(k + 1) * p {
                            dpi[k] += d_moment[c] * wr[c] * wr[c];
                            out[c] += two * pr[k] * wr[c] * d_moment[c];
                        }
                    }
                    for k in 0..h {
                        dpi[k] += dm[k];
                    }
                    let dot = (0..h).map(|k| pr[k] * dpi[k]).sum::<T>();
                    for k in 0..h {
                        let de = pr[k] * (dpi[k] - dot);
                        let mut e = T::zero();
                        for c in k * p..(k + 1) * p {
                            let v = wr[c] * nu[c];
                            e += v * v;
                            out[c] += de * self.temp[k] * two * wr[c] * nu[c] * nu[c];
                            dnu[c] += de * self.temp[k] * two * wr[c] * wr[c] * nu[c];
                        }
                        d_temp[k] += de * e;
                    }
                }
            },
        );
        // ν_c = s_c^{-½} above the floor, s_c = Σ_i W_ic²
        let floor = T::from_f64(NORM_FLOOR);
        let ds: Vec<T> = (0..dim)
            .map(|c| {
                if T::one() / nu[c] > floor {
                    -sums[c] * nu[c] * nu[c] * nu[c] / two
                } else {
                    T::zero()
                }
            })
            .collect();
        crate::rows::for_rows(dws, |r0, mut block| {
            for (ii, mut out) in block.rows_mut().into_iter().enumerate() {
                let wr = &w[(r0 + ii) * dim..(r0 + ii + 1) * dim];
                for (c, o) in out.iter_mut().enumerate() {
                    *o += two * wr[c] * ds[c];
                }
            }
        });
        sums.slice(s![dim..]).to_owned()
    }
}

/// The contiguous entries of a standard-layout view (every array of the cache is one, and
/// so are its blocks of whole rows).
fn slice<T, D: ndarray::Dimension>(a: &ndarray::ArrayRef<T, D>) -> &[T] {
    a.as_slice().expect("standard layout")
}
