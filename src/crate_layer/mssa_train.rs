//! MSSA's backward pass, beside its forward (`mssa.rs`).
//!
//! Forward, per sequence and head k (tokens as rows): `W = X Uᵀ` (all heads at once, `U` =
//! `qkv.weight`), `S_k = s·W_k W_kᵀ`, `A_k = softmax_rows(S_k)`, `O_k = A_k W_k`, then the
//! output `Y = O W_outᵀ + b` (reference), `Y = O` (one head as wide as the tokens), or
//! `Y = κβ(β·O U − X)` (white box, β = p/(nε²)). Backward, from `dY`:
//!
//! * output: `dO = dY W_out`, `∂W_out += dYᵀ O`, `∂b += Σ_rows dY` (reference); `dO = dY`
//!   (identity); `dO = κβ²·dY Uᵀ`, `∂U += κβ²·Oᵀ dY`, `dX += −κβ·dY` (white box);
//! * each head: `dA_k = dO_k W_kᵀ`, `dS_k = A_k ⊙ (dA_k − rowsum(dA_k ⊙ A_k))` (softmax),
//!   `dW_k = A_kᵀ dO_k + s·(dS_k + dS_kᵀ) W_k`;
//! * projection: `∂U += dWᵀ X`, `dX += dW U`.

use ndarray::{Array2, Array3, ArrayD, ArrayView2, ArrayViewMutD, Axis, s};

use super::mssa::{Mssa, Output, for_each_head_rows};
use crate::kernels::softmax_rows_in_place;
use crate::nn::{
    Layer, Trainable, check_gradients, check_upstream, column_sums, grad_matrix, grad_vector,
    update_array,
};
use crate::{Float, Result};

/// What [`Mssa`]'s backward needs, for m = b·n tokens: the input X (m × dim), the projected
/// tokens W and the head outputs O (m × heads·dim_head each) and the attention maps
/// (b·heads × n × n): `m·(dim + 2·heads·dim_head) + b·heads·n²` values. The backward
/// needs one n × n scratch per thread for the maps' gradients.
#[derive(Debug, Clone)]
pub struct MssaCache<T> {
    x: Array2<T>,
    w: Array2<T>,
    o: Array2<T>,
    attention: Array3<T>,
    n: usize,
}

/// Runs `task(sequence, head, attention map of that pair, rows of that sequence)` for every
/// (sequence, head) pair: `maps` is b·heads × n × n, `rows` b·n × width (each task writes its
/// own maps and its own rows' head columns). With the `parallel` feature, one task per
/// (sequence, head) pair, each product on its thread: b·heads tasks keep every core busy at
/// any batch size.
fn for_each_head<T: Float>(
    heads: usize,
    p: usize,
    n: usize,
    maps: &mut ndarray::Array3<T>,
    rows: &mut Array2<T>,
    task: impl Fn(usize, usize, ndarray::ArrayViewMut2<T>, ndarray::ArrayViewMut2<T>) + Sync + Send,
) {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        maps.axis_chunks_iter_mut(Axis(0), heads)
            .into_par_iter()
            .zip(rows.axis_chunks_iter_mut(Axis(0), n).into_par_iter())
            .enumerate()
            .for_each(|(sq, (mut ms, mut rs))| {
                ms.axis_iter_mut(Axis(0))
                    .into_par_iter()
                    .zip(rs.axis_chunks_iter_mut(Axis(1), p).into_par_iter())
                    .enumerate()
                    .for_each(|(k, (m, cols))| {
                        crate::linalg::clear_upper_simd_state();
                        task(sq, k, m, cols)
                    })
            });
    }
    #[cfg(not(feature = "parallel"))]
    for sq in 0..rows.nrows() / n {
        for k in 0..heads {
            let cols = rows.slice_mut(s![sq * n..(sq + 1) * n, k * p..(k + 1) * p]);
            task(sq, k, maps.index_axis_mut(Axis(0), sq * heads + k), cols);
        }
    }
}

impl<T: Float> Mssa<T> {
    /// `(A_{s,k})` for every sequence s and head k, and `O`, from the projected tokens.
    fn attend_keeping(&self, w: &Array2<T>, n: usize) -> (Array3<T>, Array2<T>) {
        let (m, inner) = w.dim();
        let (b, p) = (m / n, self.dim_head);
        let scale = T::from_f64(self.scale);
        let mut attention = Array3::<T>::zeros((b * self.heads, n, n));
        let mut o = Array2::<T>::zeros((m, inner));
        for_each_head(
            self.heads,
            p,
            n,
            &mut attention,
            &mut o,
            |sq, k, mut a, ok| {
                let wk = w.slice(s![sq * n..(sq + 1) * n, k * p..(k + 1) * p]);
                crate::linalg::gemm(scale, wk, wk.t(), false, a.view_mut(), false);
                softmax_rows_in_place(a.view_mut());
                crate::linalg::gemm(T::one(), a.view(), wk, false, ok, false);
            },
        );
        (attention, o)
    }
}

impl<T: Float> Trainable<T> for Mssa<T> {
    type Cache = MssaCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        crate::nn::check_sequences(x.nrows(), n)?;
        crate::validate::elements_of::<T>(
            "attention maps of the training forward",
            &[x.nrows() / n * self.heads, n, n],
        )?;
        let x = x.as_standard_layout().into_owned();
        let mut w = Array2::<T>::zeros((x.nrows(), self.qkv.nrows()));
        crate::linalg::gemm(T::one(), x.view(), self.qkv.t(), false, w.view_mut(), true);
        let (attention, o) = self.attend_keeping(&w, n);
        let mut y = x.clone();
        self.finish(o.view(), n, None, &mut y);
        crate::validate::finite_output("MSSA output", &y)?;
        let cache = MssaCache {
            x,
            w,
            o,
            attention,
            n,
        };
        Ok((y, cache))
    }

    fn backward(
        &self,
        cache: &Self::Cache,
        dy: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        check_gradients(&self.parameters(), grads)?;
        check_upstream(&dy, cache.x.dim())?;
        let (m, inner) = cache.w.dim();
        let n = cache.n;
        let (gq, gout) = grads.split_at_mut(1);
        let mut gq = grad_matrix(&mut gq[0]);
        let mut dx = Array2::<T>::zeros(cache.x.dim());
        let mut d_o = Array2::<T>::zeros((m, inner));
        match &self.output {
            Output::Identity => d_o.assign(&dy),
            Output::Linear { weight, .. } => {
                crate::linalg::gemm(T::one(), dy, weight.view(), false, d_o.view_mut(), true);
                let gw = grad_matrix(&mut gout[0]);
                crate::linalg::gemm(T::one(), dy.t(), cache.o.view(), true, gw, true);
                if let Some(gb) = gout.get_mut(1) {
                    let mut gb = grad_vector(gb);
                    gb += &column_sums(dy);
                }
            }
            Output::Compression { kappa, eps_sq } => {
                let beta = self.dim_head as f64 / (n as f64 * eps_sq);
                let c1 = T::from_f64(kappa * beta * beta);
                crate::linalg::gemm(c1, dy, self.qkv.t(), false, d_o.view_mut(), true);
                crate::linalg::gemm(c1, cache.o.t(), dy, true, gq.view_mut(), true);
                dx.scaled_add(-T::from_f64(kappa * beta), &dy);
            }
        }
        let dw = self.heads_backward(cache, &d_o);
        crate::linalg::gemm(T::one(), dw.t(), cache.x.view(), true, gq, true);
        crate::linalg::gemm(
            T::one(),
            dw.view(),
            self.qkv.view(),
            true,
            dx.view_mut(),
            true,
        );
        Ok(dx)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        update_array(update, "qkv.weight", &mut self.qkv)?;
        if let Output::Linear { weight, bias } = &mut self.output {
            update_array(update, "to_out.0.weight", weight)?;
            if let Some(bias) = bias {
                update_array(update, "to_out.0.bias", bias)?;
            }
        }
        Ok(())
    }
}

impl<T: Float> Mssa<T> {
    /// `dW` (m × heads·dim_head) from `dO`, head by head:
    /// `dW_k = A_kᵀ dO_k + s·(dS_k + dS_kᵀ) W_k`, `dS_k = A_k ⊙ (dO_k W_kᵀ − rowsum(·))`.
    fn heads_backward(&self, cache: &MssaCache<T>, d_o: &Array2<T>) -> Array2<T> {
        let n = cache.n;
        let (m, inner) = cache.w.dim();
        let p = self.dim_head;
        let scale = T::from_f64(self.scale);
        let mut dw = Array2::<T>::zeros((m, inner));
        for_each_head_rows(p, n, &mut dw, |sq, k, mut dwk| {
            let rows = sq * n..(sq + 1) * n;
            let cols = k * p..(k + 1) * p;
            let wk = cache.w.slice(s![rows.clone(), cols.clone()]);
            let dok = d_o.slice(s![rows, cols]);
            let a = cache.attention.index_axis(Axis(0), sq * self.heads + k);
            // dS_k in an n × n scratch of this thread: dA = dO_k W_kᵀ, then the softmax's
            // backward in place
            let mut ds = crate::workspace::take::<T>(n, n);
            crate::linalg::gemm(T::one(), dok, wk.t(), false, ds.view_mut(), false);
            for (mut dr, ar) in ds.rows_mut().into_iter().zip(a.rows()) {
                let dot = dr.iter().zip(ar).map(|(&d, &a)| d * a).sum::<T>();
                ndarray::Zip::from(&mut dr)
                    .and(&ar)
                    .for_each(|d, &a| *d = a * (*d - dot));
            }
            crate::linalg::gemm(T::one(), a.t(), dok, true, dwk.view_mut(), false);
            crate::linalg::gemm(scale, ds.view(), wk, true, dwk.view_mut(), false);
            crate::linalg::gemm(scale, ds.t(), wk, true, dwk, false);
        });
        dw
    }
}
