//! The ToST block's backward pass, beside its forward (`block.rs`):
//! `y = x + γ₁ ⊙ TSSA(LN₁(x))`, `z = y + γ₂ ⊙ MLP(LN₂(y))` (LayerScale γ per coordinate).
//! Backward: `∂γ₂ += Σ_i dz_i ⊙ MLP_i`, `dy = dz + LN₂ᵀ(MLPᵀ(γ₂ ⊙ dz))`, then the same
//! through the attention half to `dx`.

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewMutD, Zip};

use super::block::ToStBlock;
use super::tssa_train::TssaCache;
use crate::nn::{
    Layer, LayerNormCache, MlpCache, Trainable, check_gradients, check_upstream, grad_vector,
    scoped, update_array,
};
use crate::{Float, Result};

/// What [`ToStBlock`]'s backward needs: the caches of its LayerNorms, TSSA and MLP, and the
/// two branch outputs before LayerScale (m × dim each); see each part for its size.
#[derive(Debug, Clone)]
pub struct ToStBlockCache<T: Float> {
    norm1: LayerNormCache<T>,
    attn: TssaCache<T>,
    attn_out: Array2<T>,
    norm2: LayerNormCache<T>,
    mlp: MlpCache<T>,
    mlp_out: Array2<T>,
}

/// `Σ_i d_i ⊙ a_i` into `g` and `γ ⊙ d` returned (the LayerScale's backward); the sum runs
/// in fixed blocks of rows ([`crate::rows::sum_over_written_row_blocks`]), on the pool when
/// large.
fn scale_backward<T: Float>(
    gamma: &ndarray::Array1<T>,
    a: &Array2<T>,
    d: ArrayView2<T>,
    mut g: ndarray::ArrayViewMut1<'_, T>,
) -> Array2<T> {
    let mut out = Array2::<T>::zeros(d.dim());
    let sums = crate::rows::sum_over_written_row_blocks(
        out.view_mut(),
        d.ncols(),
        |r0, mut block, mut acc| {
            for (i, mut or) in block.rows_mut().into_iter().enumerate() {
                let (dr, ar) = (d.row(r0 + i), a.row(r0 + i));
                Zip::from(&mut acc)
                    .and(&dr)
                    .and(&ar)
                    .for_each(|s, &d, &a| *s += d * a);
                Zip::from(&mut or)
                    .and(&dr)
                    .and(gamma)
                    .for_each(|o, &d, &gm| *o = d * gm);
            }
        },
    );
    g += &sums;
    out
}

impl<T: Float> Trainable<T> for ToStBlock<T> {
    type Cache = ToStBlockCache<T>;

    fn forward_train(&self, x: ArrayView2<T>, n: usize) -> Result<(Array2<T>, Self::Cache)> {
        crate::validate::matrix_with_cols("tokens", &x, self.dim())?;
        crate::nn::check_sequences(x.nrows(), n)?;
        let (h, norm1) = self.norm1.forward_train(x, n)?;
        let (attn_out, attn) = self.attn.forward_train(h.view(), n)?;
        let mut y = x.as_standard_layout().into_owned();
        super::block::add_scaled_rows(&mut y, &attn_out, &self.gamma1);
        let (h2, norm2) = self.norm2.forward_train(y.view(), n)?;
        let (mlp_out, mlp) = self.mlp.forward_train(h2.view(), n)?;
        super::block::add_scaled_rows(&mut y, &mlp_out, &self.gamma2);
        crate::validate::finite_output("ToST block output", &y)?;
        let cache = ToStBlockCache {
            norm1,
            attn,
            attn_out,
            norm2,
            mlp,
            mlp_out,
        };
        Ok((y, cache))
    }

    fn backward(
        &self,
        cache: &Self::Cache,
        dz: ArrayView2<T>,
        grads: &mut [ArrayD<T>],
    ) -> Result<Array2<T>> {
        check_gradients(&self.parameters(), grads)?;
        check_upstream(&dz, cache.mlp_out.dim())?;
        let (g_n1, rest) = grads.split_at_mut(self.norm1.parameters().len());
        let (g_attn, rest) = rest.split_at_mut(self.attn.parameters().len());
        let (g_gamma1, rest) = rest.split_at_mut(1);
        let (g_n2, rest) = rest.split_at_mut(self.norm2.parameters().len());
        let (g_mlp, g_gamma2) = rest.split_at_mut(self.mlp.parameters().len());
        let dm = scale_backward(
            &self.gamma2,
            &cache.mlp_out,
            dz,
            grad_vector(&mut g_gamma2[0]),
        );
        let dh2 = self.mlp.backward(&cache.mlp, dm.view(), g_mlp)?;
        let mut dy = self.norm2.backward(&cache.norm2, dh2.view(), g_n2)?;
        dy += &dz;
        let da = scale_backward(
            &self.gamma1,
            &cache.attn_out,
            dy.view(),
            grad_vector(&mut g_gamma1[0]),
        );
        let dh = self.attn.backward(&cache.attn, da.view(), g_attn)?;
        let mut dx = self.norm1.backward(&cache.norm1, dh.view(), g_n1)?;
        dx += &dy;
        Ok(dx)
    }

    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        self.norm1
            .update_parameters(&mut scoped("norm1.", update))?;
        self.attn.update_parameters(&mut scoped("attn.", update))?;
        update_array(update, "gamma1", &mut self.gamma1)?;
        self.norm2
            .update_parameters(&mut scoped("norm2.", update))?;
        self.mlp.update_parameters(&mut scoped("mlp.", update))?;
        update_array(update, "gamma2", &mut self.gamma2)
    }
}
