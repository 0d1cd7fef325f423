//! TSSA's backward pass, beside its forward (`tssa.rs`).
//!
//! Forward, per sequence (tokens as rows, head k(c) of coordinate c): `W = X Qᵀ + b`,
//! `s_c = Σ_i W_ic²`, `ν_c = 1/max(√s_c, 10⁻¹²)`, `E_ik = τ_k Σ_{c∈k} (W_ic ν_c)²`,
//! `Π_i = softmax_k(E_i)`, `m_k = Σ_i Π_ik`, `M_c = Σ_i Π_ik(c) W_ic²`,
//! `g_c = 1/(1 + M_c/(m_k(c) + 10⁻⁸))`, `Y_ic = −Π_ik(c) W_ic g_c`, output `Y W_outᵀ + b_out`.
//! The backward follows the same chain in reverse (see [`Tssa::statistics_backward`]).

use ndarray::{Array1, Array2, ArrayD, ArrayView2, ArrayViewMut1, ArrayViewMutD, Axis, s};

use super::tssa::Tssa;
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
    /// per sequence: ν, g, M (rows of b × dim)
    nu: Array2<T>,
    gain: Array2<T>,
    moment: Array2<T>,
    /// per sequence: m (b × heads)
    mass: Array2<T>,
    n: usize,
}

impl<T: Float> Trainable<T> for Tssa<T> {
    type Cache = TssaCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        crate::nn::check_sequences(x.nrows(), n)?;
        let (m, dim, h) = (x.nrows(), self.dim(), self.heads());
        let p = dim / h;
        let b = m / n;
        let x = LinearCache::copy_of(x);
        let w = self.qkv.apply(x.view());
        let mut pi = Array2::<T>::zeros((m, h));
        let mut y = Array2::<T>::zeros((m, dim));
        let (mut nu, mut gain) = (Array2::zeros((b, dim)), Array2::zeros((b, dim)));
        let (mut moment, mut mass) = (Array2::zeros((b, dim)), Array2::<T>::zeros((b, h)));
        for sq in 0..b {
            let rows = sq * n..(sq + 1) * n;
            let ws = w.slice(s![rows.clone(), ..]);
            let (pis, g) = self.statistics(ws);
            let mut nus = nu.row_mut(sq);
            for (c, col) in ws.axis_iter(Axis(1)).enumerate() {
                let norm = col.iter().map(|&v| v * v).sum::<T>().sqrt();
                nus[c] = T::one() / norm.max(T::from_f64(NORM_FLOOR));
            }
            for (i, r) in ws.rows().into_iter().enumerate() {
                for k in 0..h {
                    mass[(sq, k)] += pis[(i, k)];
                    for c in k * p..(k + 1) * p {
                        moment[(sq, c)] += pis[(i, k)] * r[c] * r[c];
                        y[(sq * n + i, c)] = -pis[(i, k)] * r[c] * g[c];
                    }
                }
            }
            gain.row_mut(sq).assign(&g);
            pi.slice_mut(s![rows, ..]).assign(&pis);
        }
        let out = self.to_out.apply(y.view());
        crate::validate::finite_output("TSSA output", &out)?;
        let cache = TssaCache {
            x,
            w,
            pi,
            y: LinearCache::adopt(y),
            nu,
            gain,
            moment,
            mass,
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
        let mut g_temp = temperature_grad(&mut g_temp[0]);
        let mut dw = Array2::<T>::zeros(cache.w.dim());
        for sq in 0..cache.x.nrows() / cache.n {
            self.statistics_backward(cache, sq, &d_head, &mut dw, &mut g_temp);
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
    /// Sequence `sq`'s share of the backward: from `dY` (the head outputs' gradient) adds
    /// `∂L/∂W` into `dw` and `∂L/∂τ` into `g_temp`, in the reverse order of the forward:
    /// `Y → (Π, W, g)`, `g → (M, m)`, `(M, m) → (Π, W)`, `Π → E` (softmax), `E → (τ, W, ν)`,
    /// `ν → s → W`.
    fn statistics_backward(
        &self,
        cache: &TssaCache<T>,
        sq: usize,
        d_y: &Array2<T>,
        dw: &mut Array2<T>,
        g_temp: &mut ArrayViewMut1<'_, T>,
    ) {
        let (n, dim, h) = (cache.n, self.dim(), self.heads());
        let p = dim / h;
        let rows = sq * n..(sq + 1) * n;
        let w = cache.w.slice(s![rows.clone(), ..]);
        let pi = cache.pi.slice(s![rows.clone(), ..]);
        let dys = d_y.slice(s![rows.clone(), ..]);
        let (nu, g) = (cache.nu.row(sq), cache.gain.row(sq));
        let (moment, mass) = (cache.moment.row(sq), cache.mass.row(sq));
        let eps = T::from_f64(PI_FLOOR);
        let two = T::from_f64(2.0);
        let mut dpi = Array2::<T>::zeros((n, h));
        let mut dws = Array2::<T>::zeros((n, dim));
        // Y_ic = −Π_ik W_ic g_c
        let mut dg = Array1::<T>::zeros(dim);
        for i in 0..n {
            for c in 0..dim {
                let k = c / p;
                let d = dys[(i, c)];
                dws[(i, c)] -= pi[(i, k)] * g[c] * d;
                dpi[(i, k)] -= w[(i, c)] * g[c] * d;
                dg[c] -= pi[(i, k)] * w[(i, c)] * d;
            }
        }
        // g_c = 1/(1 + r_c), r_c = M_c/(m_k + ε)
        let mut dm = Array1::<T>::zeros(h);
        let mut d_moment = Array1::<T>::zeros(dim);
        for c in 0..dim {
            let k = c / p;
            let dr = -g[c] * g[c] * dg[c];
            let denom = mass[k] + eps;
            d_moment[c] = dr / denom;
            dm[k] -= dr * moment[c] / (denom * denom);
        }
        // M_c = Σ_i Π_ik W_ic², m_k = Σ_i Π_ik
        for i in 0..n {
            for c in 0..dim {
                let k = c / p;
                dpi[(i, k)] += d_moment[c] * w[(i, c)] * w[(i, c)];
                dws[(i, c)] += two * pi[(i, k)] * w[(i, c)] * d_moment[c];
            }
            for k in 0..h {
                dpi[(i, k)] += dm[k];
            }
        }
        // Π_i = softmax(E_i); E_ik = τ_k Σ_{c∈k} (W_ic ν_c)²
        let mut dnu = Array1::<T>::zeros(dim);
        for i in 0..n {
            let dot = (0..h).map(|k| pi[(i, k)] * dpi[(i, k)]).sum::<T>();
            for k in 0..h {
                let de = pi[(i, k)] * (dpi[(i, k)] - dot);
                let mut e = T::zero();
                for c in k * p..(k + 1) * p {
                    let v = w[(i, c)] * nu[c];
                    e += v * v;
                    dws[(i, c)] += de * self.temp[k] * two * w[(i, c)] * nu[c] * nu[c];
                    dnu[c] += de * self.temp[k] * two * w[(i, c)] * w[(i, c)] * nu[c];
                }
                g_temp[k] += de * e;
            }
        }
        // ν_c = s_c^{-½} above the floor, s_c = Σ_i W_ic²
        let floor = T::from_f64(NORM_FLOOR);
        for c in 0..dim {
            if T::one() / nu[c] > floor {
                let ds = -dnu[c] * nu[c] * nu[c] * nu[c] / two;
                for i in 0..n {
                    dws[(i, c)] += two * w[(i, c)] * ds;
                }
            }
        }
        let mut target = dw.slice_mut(s![rows, ..]);
        target += &dws;
    }
}
