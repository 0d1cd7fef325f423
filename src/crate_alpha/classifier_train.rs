//! Training the CRATE-α classifier: its parameters by reference name, a forward that keeps
//! what the backward needs, and the backward, beside the inference forward
//! (`classifier.rs`).

use ndarray::{Array2, ArrayD, ArrayRef4, ArrayView2, ArrayViewD, ArrayViewMutD};

use super::block::CrateAlphaBlockCache;
use super::classifier::CrateAlphaClassifier;
use crate::nn::{Layer, LayerNormCache, Trainable, check_upstream, scoped};
use crate::{Error, Float, Result};

/// What [`CrateAlphaClassifier::backward`] needs from
/// [`CrateAlphaClassifier::forward_train`]: the patch rows (b·p × patch_dim for b images of
/// p patches), every layer's cache ([`CrateAlphaBlockCache`]), the layers' output tokens
/// (b·n × dim) and the head's caches (about `3·b·dim`).
#[derive(Debug, Clone)]
pub struct CrateAlphaClassifierCache<T: Float> {
    b: usize,
    n: usize,
    patch: crate::nn::LinearCache<T>,
    blocks: Vec<CrateAlphaBlockCache<T>>,
    features: Array2<T>,
    head_norm: LayerNormCache<T>,
    head: crate::nn::LinearCache<T>,
}

impl<T: Float> CrateAlphaClassifierCache<T> {
    /// The layers' output tokens, b·n × dim (token 0 of each image is the class token).
    pub fn features(&self) -> &Array2<T> {
        &self.features
    }

    /// Tokens per image (patches + 1).
    pub fn tokens_per_image(&self) -> usize {
        self.n
    }
}

impl<T: Float> CrateAlphaClassifier<T> {
    /// Every parameter by its reference name and shape, in
    /// [`tensor_names`](Self::tensor_names) order (`conv1.weight` dim × channels × patch ×
    /// patch, `cls_token` 1 × 1 × dim, `pos_embedding` 1 × (patches + 1) × dim).
    pub fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let c = &self.config;
        let (d, ps, n) = (c.dim(), c.patch_size, self.pos_embedding.nrows());
        let mut p = crate::nn::conv_parameters(&self.patch, "conv1.", (d, c.channels, ps, ps));
        let cls = self.cls_token.view().into_shape_with_order((1, 1, d));
        let pos = self.pos_embedding.view().into_shape_with_order((1, n, d));
        p.push(("cls_token".into(), cls.expect("d entries").into_dyn()));
        p.push(("pos_embedding".into(), pos.expect("n·d entries").into_dyn()));
        for (l, block) in self.blocks.iter().enumerate() {
            p.extend(crate::nn::prefixed(
                &format!("transformer.layers.{l}."),
                block.parameters(),
            ));
        }
        p.extend(crate::nn::prefixed(
            "mlp_head.0.",
            self.head_norm.parameters(),
        ));
        p.extend(crate::nn::prefixed("mlp_head.1.", self.head.parameters()));
        p
    }

    /// Zero buffers matching [`parameters`](Self::parameters) one to one.
    pub fn gradient_buffers(&self) -> Vec<(String, ArrayD<T>)> {
        crate::nn::zero_buffers(self.parameters())
    }

    /// The logits (b × classes) and the cache for [`backward`](Self::backward).
    pub fn forward_train(
        &self,
        images: &ArrayRef4<T>,
    ) -> Result<(Array2<T>, CrateAlphaClassifierCache<T>)> {
        let (x, patches) = self.patch_rows(images)?;
        let b = x.nrows() / patches;
        let (e, patch) = self.patch.forward_train(x.view(), 1)?;
        drop(x);
        let (z, n) =
            crate::nn::with_class_token(e.view(), &self.cls_token, &self.pos_embedding, b, patches);
        let (z, blocks) = crate::nn::stack_forward_train(&self.blocks, z, n)?;
        let pooled = crate::nn::class_tokens(z.view(), n);
        let (pn, head_norm) = self.head_norm.forward_train(pooled.view(), 1)?;
        let (logits, head) = self.head.forward_train(pn.view(), 1)?;
        crate::validate::finite_output("logits", &logits)?;
        let cache = CrateAlphaClassifierCache {
            b,
            n,
            patch,
            blocks,
            features: z,
            head_norm,
            head,
        };
        Ok((logits, cache))
    }

    /// The gradient of a loss with respect to every parameter (in
    /// [`parameters`](Self::parameters) order), given its gradient with respect to the
    /// logits (b × classes) and/or to the layers' output tokens (b·n × dim); at least one.
    pub fn backward(
        &self,
        cache: &CrateAlphaClassifierCache<T>,
        d_logits: Option<ArrayView2<T>>,
        d_features: Option<ArrayView2<T>>,
    ) -> Result<Vec<ArrayD<T>>> {
        let (b, n, d) = (cache.b, cache.n, self.config.dim());
        let mut grads: Vec<ArrayD<T>> = self
            .gradient_buffers()
            .into_iter()
            .map(|(_, g)| g)
            .collect();
        let per_block = self.blocks.first().map_or(0, |b| b.parameters().len());
        let (g_conv, rest) = grads.split_at_mut(2);
        let (g_tokens, rest) = rest.split_at_mut(2);
        let (g_blocks, g_head) = rest.split_at_mut(per_block * self.blocks.len());
        let mut dz = match d_features {
            Some(df) => {
                check_upstream(&df, (b * n, d))?;
                df.to_owned()
            }
            None => Array2::<T>::zeros((b * n, d)),
        };
        match d_logits {
            Some(dl) => {
                let (gn, gl) = g_head.split_at_mut(2);
                let dpn = self.head.backward(&cache.head, dl, gl)?;
                let dp = self.head_norm.backward(&cache.head_norm, dpn.view(), gn)?;
                for (img, row) in dp.rows().into_iter().enumerate() {
                    let mut r = dz.row_mut(img * n);
                    r += &row;
                }
            }
            None if d_features.is_none() => {
                return Err(Error::InvalidParameter {
                    name: "backward",
                    value: "no upstream gradient".into(),
                    reason: "give the gradient of the logits, of the features, or both",
                });
            }
            None => {}
        }
        let dz = crate::nn::stack_backward(&self.blocks, &cache.blocks, g_blocks, dz)?;
        let demb = {
            let (g_cls, g_pos) = g_tokens.split_at_mut(1);
            let g_cls = g_cls[0].view_mut().into_shape_with_order(d).expect("1×1×d");
            let g_pos = g_pos[0]
                .view_mut()
                .into_shape_with_order((n, d))
                .expect("1×n×d");
            crate::nn::with_class_token_backward(dz.view(), b, n, g_cls, g_pos)
        };
        crate::nn::conv_backward(&self.patch, &cache.patch, demb.view(), g_conv)?;
        Ok(grads)
    }

    /// Calls `update(name, parameter)` for every parameter in
    /// [`parameters`](Self::parameters) order (with the reference shapes); errors when a
    /// parameter became non-finite.
    pub fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        let c = self.config;
        let (d, ps, n) = (c.dim(), c.patch_size, self.pos_embedding.nrows());
        crate::nn::conv_update(&mut self.patch, "conv1.", (d, c.channels, ps, ps), update)?;
        crate::nn::update_embedding(update, "cls_token", &mut self.cls_token, &[1, 1, d])?;
        crate::nn::update_embedding(update, "pos_embedding", &mut self.pos_embedding, &[1, n, d])?;
        for (l, block) in self.blocks.iter_mut().enumerate() {
            block.update_parameters(&mut scoped(&format!("transformer.layers.{l}."), update))?;
        }
        self.head_norm
            .update_parameters(&mut scoped("mlp_head.0.", update))?;
        self.head
            .update_parameters(&mut scoped("mlp_head.1.", update))
    }
}
