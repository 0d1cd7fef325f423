//! MSSA's backward pass, beside its forward (`mssa.rs`).
//!
//! Forward, per sequence and head k (tokens as rows): `W = X Uᵀ` (all heads at once, `U` =
//! `qkv.weight`), `S_k = s·W_k W_kᵀ`, `A_k = softmax_rows(S_k)`, `O_k = A_k W_k`, then the
//! output `Y = O W_outᵀ + b` (reference), `Y = O` (one head as wide as the tokens), or
//! `Y = κβ(β·O U − X)` (white box, β = p/(nε²)). Backward, from `dY`:
//!
//! * output: `dO = dY W_out`, `∂W_out += dYᵀ O`, `∂b += Σ_rows dY` (reference); `dO = dY`
//!   (identity); `dO = κβ²·dY Uᵀ`, `∂U += κβ²·Oᵀ dY`, `dX += −κβ·dY` (white box);
//! * each head (`A_k` kept by the forward, or computed again from `W_k`; see [`MssaCache`]):
//!   `dA_k = dO_k W_kᵀ`,
//!   `dS_k = A_k ⊙ (dA_k − rowsum(dA_k ⊙ A_k))` (softmax),
//!   `dW_k = A_kᵀ dO_k + s·(dS_k + dS_kᵀ) W_k` (the symmetric part as one product);
//! * projection: `∂U += dWᵀ X`, `dX += dW U`.

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewMut2, ArrayViewMutD, s};

use super::heads::{for_each_head_rows, for_each_head_rows_and_map};
use super::mssa::{Mssa, Output};
use crate::kernels::{softmax_backward_rows_in_place, softmax_rows_in_place};
use crate::nn::{
    Layer, Trainable, check_gradients, check_upstream, column_sums, grad_matrix, grad_vector,
    update_array,
};
use crate::workspace::Scratch;
use crate::{Float, Result};

/// What [`Mssa`]'s backward needs, for m = b·n tokens: the input X (m × dim), the projected
/// tokens W and the head outputs O (m × heads·dim_head each), `m·(dim + 2·heads·dim_head)`
/// values, and the attention maps (b·heads·n² values) when they are at most twice that,
/// `heads·n ≤ 2·(dim + 2·heads·dim_head)`, and fit the memory budget (CRATE's sizes at 197
/// tokens all keep them, as PyTorch's autograd does). Longer sequences do not keep them: the
/// backward computes each head's map again from W (one n × n product and a softmax per
/// head, bit for bit the forward's), so the cache does not grow with b·heads·n². The
/// gradients are the same either way, bit for bit.
#[derive(Debug, Clone)]
pub struct MssaCache<T: Float> {
    x: Scratch<T>,
    w: Scratch<T>,
    o: Scratch<T>,
    maps: Option<Scratch<T>>,
    n: usize,
}

/// Whether the training forward keeps the attention maps of sequences of `n` tokens: when
/// `heads·n ≤ 2·(dim + 2·heads·dim_head)`, the maps (heads·n² values per sequence) at most
/// twice the rest of the cache (n·(dim + 2·heads·dim_head)), and within the memory budget.
/// Keeping them saves the backward one n × n product and one softmax per head.
fn keeps_maps<T: Float>(mssa: &Mssa<T>, m: usize, n: usize) -> bool {
    let rest = mssa.dim() + 2 * mssa.heads * mssa.dim_head;
    mssa.heads.saturating_mul(n) <= rest.saturating_mul(2)
        && crate::validate::elements_of::<T>("attention maps", &[m, mssa.heads, n]).is_ok()
}

impl<T: Float> Mssa<T> {
    /// `A_k = softmax_rows(s·W_k W_kᵀ)` into `a` (n × n), for the n × dim_head block `wk` of
    /// one sequence and head: the training forward and the backward both compute it here, so
    /// the backward's map is the forward's, bit for bit.
    fn head_map(&self, wk: ArrayView2<T>, mut a: ArrayViewMut2<T>) {
        crate::linalg::gemm(
            T::from_f64(self.scale),
            wk,
            wk.t(),
            false,
            a.view_mut(),
            false,
        );
        softmax_rows_in_place(a);
    }

    /// [`Trainable::forward_train`] on tokens it may keep as they are (a layer's output that
    /// its caller no longer needs), without copying them into the cache. The caller has
    /// checked them (finite, `dim` columns). With a `residual` r (same shape), returns
    /// `r + MSSA(x)`, formed as the inference forward forms a block's `z½` (bit for bit).
    pub(crate) fn forward_train_owned(
        &self,
        x: Scratch<T>,
        n: usize,
        residual: Option<ArrayView2<T>>,
    ) -> Result<(Array2<T>, MssaCache<T>)> {
        debug_assert_eq!(x.ncols(), self.dim());
        crate::nn::check_sequences(x.nrows(), n)?;
        crate::validate::elements_of::<T>("attention map of one head", &[n, n])?;
        super::check_projection(self, x.nrows())?;
        let mut w = crate::workspace::take::<T>(x.nrows(), self.qkv.nrows());
        crate::linalg::gemm(T::one(), x.view(), self.qkv.t(), false, w.view_mut(), true);
        let (o, maps) = self.attend_training(&w, n);
        // `finish` reads y as the input only in the white box; the others overwrite it whole
        let mut y = match self.output {
            Output::Compression { .. } => crate::workspace::copied(x.view()),
            _ => crate::workspace::for_overwrite(x.nrows(), x.ncols()),
        };
        self.finish(o.view(), n, residual, &mut y);
        crate::validate::finite_output("MSSA output", &y)?;
        let cache = MssaCache { x, w, o, maps, n };
        Ok((y, cache))
    }

    /// `O_k = A_k W_k` for every sequence s and head k, from the projected tokens (one task
    /// per (sequence, head) pair, see [`for_each_head_rows`]), and the maps `A_k` where the
    /// cache keeps them ([`keeps_maps`]).
    fn attend_training(&self, w: &Array2<T>, n: usize) -> (Scratch<T>, Option<Scratch<T>>) {
        let (m, inner) = w.dim();
        let p = self.dim_head;
        let mut o = crate::workspace::take::<T>(m, inner);
        let head = |sq: usize, k: usize, ok: ArrayViewMut2<T>, mut a: ArrayViewMut2<T>| {
            let wk = w.slice(s![sq * n..(sq + 1) * n, k * p..(k + 1) * p]);
            self.head_map(wk, a.view_mut());
            crate::linalg::gemm(T::one(), a.view(), wk, false, ok, false);
        };
        if keeps_maps(self, m, n) {
            // written whole: each task's map by its score product
            let mut maps = crate::workspace::take::<T>(m * self.heads, n);
            for_each_head_rows_and_map(p, n, &mut o, &mut maps, head);
            return (o, Some(maps));
        }
        for_each_head_rows(p, n, &mut o, |sq, k, ok| {
            let mut a = crate::workspace::take::<T>(n, n);
            head(sq, k, ok, a.view_mut());
        });
        (o, None)
    }
}

impl<T: Float> Trainable<T> for Mssa<T> {
    type Cache = MssaCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        self.forward_train_owned(crate::workspace::copy_of(x), n, None)
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
        // written whole: by the white box's −κβ·dY below, or else by the last product
        let mut dx = crate::workspace::for_overwrite::<T>(cache.x.nrows(), cache.x.ncols());
        let white_box = matches!(self.output, Output::Compression { .. });
        // overwritten whole by each branch below
        let mut d_o = crate::workspace::take::<T>(m, inner);
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
                let c0 = -T::from_f64(kappa * beta);
                dx.zip_mut_with(&dy, |d, &y| *d = c0 * y);
            }
        }
        let dw = self.heads_backward(cache, &d_o);
        crate::linalg::gemm(T::one(), dw.t(), cache.x.view(), true, gq, true);
        crate::linalg::gemm(
            T::one(),
            dw.view(),
            self.qkv.view(),
            white_box,
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
    fn heads_backward(&self, cache: &MssaCache<T>, d_o: &Array2<T>) -> Scratch<T> {
        let n = cache.n;
        let (m, inner) = cache.w.dim();
        let p = self.dim_head;
        let scale = T::from_f64(self.scale);
        // written whole: each head's first product below overwrites its block
        let mut dw = crate::workspace::take::<T>(m, inner);
        for_each_head_rows(p, n, &mut dw, |sq, k, mut dwk| {
            let rows = sq * n..(sq + 1) * n;
            let cols = k * p..(k + 1) * p;
            let wk = cache.w.slice(s![rows.clone(), cols.clone()]);
            let dok = d_o.slice(s![rows, cols]);
            // A_k, kept or computed again in an n × n scratch of this thread, and dS_k in
            // another: dA = dO_k W_kᵀ, then the softmax's backward in place
            let mut again = None;
            let a = match &cache.maps {
                Some(maps) => {
                    let first = (sq * self.heads + k) * n;
                    maps.slice(s![first..first + n, ..])
                }
                None => {
                    let a = again.insert(crate::workspace::take::<T>(n, n));
                    self.head_map(wk, a.view_mut());
                    a.view()
                }
            };
            let mut ds = crate::workspace::take::<T>(n, n);
            crate::linalg::gemm(T::one(), dok, wk.t(), false, ds.view_mut(), false);
            softmax_backward_rows_in_place(ds.view_mut(), a);
            crate::linalg::gemm(T::one(), a.t(), dok, false, dwk.view_mut(), false);
            symmetrize_in_place(ds.view_mut());
            crate::linalg::gemm(scale, ds.view(), wk, true, dwk, false);
        });
        dw
    }
}

/// `S ← S + Sᵀ` for a square S, in place: the scores enter the map through both factors of
/// `W_k W_kᵀ`, so `s·dS W_k + s·dSᵀ W_k` is one product `s·(dS + dSᵀ) W_k`. (Visiting S in
/// 32 × 32 tiles, or through 16 × 16 transposed copies, measured no faster at n = 197.)
fn symmetrize_in_place<T: Float>(mut s: ArrayViewMut2<T>) {
    let n = s.nrows();
    debug_assert_eq!(n, s.ncols());
    for i in 0..n {
        s[[i, i]] = s[[i, i]] + s[[i, i]];
        for j in i + 1..n {
            let v = s[[i, j]] + s[[j, i]];
            s[[i, j]] = v;
            s[[j, i]] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crate_layer::MssaConfig;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// `S + Sᵀ` in place is the sum formed entry by entry (upper entry first), bit for bit.
    #[test]
    fn symmetrize_matches_the_plain_sum() {
        let mut rng = StdRng::seed_from_u64(9);
        for n in [1, 31, 32, 33, 64, 197] {
            let a = Array2::<f64>::from_shape_simple_fn((n, n), || rng.random_range(-1.0..1.0));
            // the upper entry first, as the plain loop adds them
            let want = Array2::from_shape_fn((n, n), |(i, j)| {
                let (upper, lower) = ((i.min(j), i.max(j)), (i.max(j), i.min(j)));
                a[upper] + a[lower]
            });
            let mut got = a.clone();
            symmetrize_in_place(got.view_mut());
            assert_eq!(got, want, "n = {n}");
        }
    }

    /// The backward from kept maps and from maps computed again gives the same gradients,
    /// bit for bit, for the reference and the white-box outputs; the policy keeps the maps
    /// at CRATE's sizes and drops them for long sequences.
    #[test]
    fn kept_and_recomputed_maps_give_the_same_gradients() {
        let mut rng = StdRng::seed_from_u64(5);
        let config = MssaConfig {
            dim: 12,
            heads: 3,
            dim_head: 4,
        };
        let reference = Mssa::<f64>::new(&config, &mut rng).unwrap();
        let bases: Vec<Array2<f64>> = (0..3)
            .map(|k| {
                reference
                    .qkv
                    .slice(s![k * 4..(k + 1) * 4, ..])
                    .t()
                    .to_owned()
            })
            .collect();
        let white =
            Mssa::from_subspaces(&bases, crate::Precision::from_eps(0.5).unwrap(), 0.1).unwrap();
        let (b, n) = (3, 9);
        let x = Array2::from_shape_simple_fn((b * n, 12), || rng.random_range(-1.0..1.0));
        let dy = Array2::from_shape_simple_fn((b * n, 12), || rng.random_range(-1.0..1.0));
        for mssa in [&reference, &white] {
            let (_, kept) = mssa.forward_train(x.view(), n).unwrap();
            assert!(kept.maps.is_some());
            let mut again = kept.clone();
            again.maps = None;
            let run = |cache: &MssaCache<f64>| {
                let mut grads: Vec<_> = mssa
                    .gradient_buffers()
                    .into_iter()
                    .map(|(_, g)| g)
                    .collect();
                let dx = mssa.backward(cache, dy.view(), &mut grads).unwrap();
                (dx, grads)
            };
            assert_eq!(run(&kept), run(&again));
        }
        let tiny = |heads, dim_head, dim| {
            keeps_maps(
                &Mssa::<f32>::new(
                    &MssaConfig {
                        dim,
                        heads,
                        dim_head,
                    },
                    &mut StdRng::seed_from_u64(0),
                )
                .unwrap(),
                197 * 32,
                197,
            )
        };
        // CRATE-T, CRATE-S and CRATE-B at 197 tokens keep their maps
        assert!(tiny(6, 64, 384) && tiny(12, 48, 576) && tiny(12, 64, 768));
        assert!(!keeps_maps(&reference, 1 << 20, 1 << 10));
    }
}
