//! Training the whole CRATE classifier: its parameters by reference name, a forward that
//! keeps what the backward needs, and the backward from the logits and/or the encoder's
//! output tokens, beside the inference forward (`classifier.rs`).

use ndarray::{Array2, ArrayD, ArrayRef4, ArrayView2, ArrayViewD, ArrayViewMutD};

use super::block::CrateBlockCache;
use super::classifier::{CrateClassifier, Pooling};
use crate::nn::{Layer, LayerNormCache, Trainable, check_upstream, scoped};
use crate::{Error, Float, Result};

/// What [`CrateClassifier::backward`] needs from [`CrateClassifier::forward_train`]: the
/// caches of the patch embedding (its LayerNorms and Linear: about `b·p·(2·patch_dim + 3·dim)`
/// values for b images of p patches), of every encoder layer (see [`CrateBlockCache`]), the
/// encoder's output tokens (b·n × dim) and the head's caches (about `3·b·dim`).
#[derive(Debug, Clone)]
pub struct CrateClassifierCache<T: Float> {
    b: usize,
    n: usize,
    patch_norm: LayerNormCache<T>,
    patch_linear: crate::nn::LinearCache<T>,
    embed_norm: LayerNormCache<T>,
    encoder: Vec<CrateBlockCache<T>>,
    features: Array2<T>,
    head_norm: LayerNormCache<T>,
    head_linear: crate::nn::LinearCache<T>,
}

impl<T: Float> CrateClassifierCache<T> {
    /// The encoder's output tokens, b·n × dim (image after image; token 0 of each image is
    /// the class token).
    pub fn features(&self) -> &Array2<T> {
        &self.features
    }

    /// The class tokens after the encoder, b × dim (the features of the MCR² loss).
    pub fn class_tokens(&self) -> Array2<T> {
        crate::nn::class_tokens(self.features.view(), self.n)
    }

    /// Tokens per image (patches + 1).
    pub fn tokens_per_image(&self) -> usize {
        self.n
    }
}

impl<T: Float> CrateClassifier<T> {
    /// Every parameter by its reference name, in [`tensor_names`](Self::tensor_names)
    /// order, with the reference shapes (`cls_token` 1 × 1 × dim, `pos_embedding`
    /// 1 × (patches + 1) × dim).
    pub fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let d = self.config.dim();
        let n = self.pos_embedding.nrows();
        let mut p = Vec::new();
        for (prefix, layer) in [
            ("to_patch_embedding.1.", &self.patch_norm as &dyn Layer<T>),
            ("to_patch_embedding.2.", &self.patch_linear),
            ("to_patch_embedding.3.", &self.embed_norm),
        ] {
            p.extend(crate::nn::prefixed(prefix, layer.parameters()));
        }
        let cls = self.cls_token.view().into_shape_with_order((1, 1, d));
        let pos = self.pos_embedding.view().into_shape_with_order((1, n, d));
        p.push(("cls_token".into(), cls.expect("d entries").into_dyn()));
        p.push(("pos_embedding".into(), pos.expect("n·d entries").into_dyn()));
        for (prefix, layer) in [
            ("mlp_head.0.", &self.head_norm as &dyn Layer<T>),
            ("mlp_head.1.", &self.head_linear),
        ] {
            p.extend(crate::nn::prefixed(prefix, layer.parameters()));
        }
        p.extend(crate::nn::prefixed(
            "transformer.layers.",
            self.encoder.parameters(),
        ));
        p
    }

    /// Zero buffers matching [`parameters`](Self::parameters) one to one.
    pub fn gradient_buffers(&self) -> Vec<(String, ArrayD<T>)> {
        crate::nn::zero_buffers(self.parameters())
    }

    /// The logits (b × classes) of a batch of images, and the cache for
    /// [`backward`](Self::backward).
    pub fn forward_train(
        &self,
        images: &ArrayRef4<T>,
    ) -> Result<(Array2<T>, CrateClassifierCache<T>)> {
        let (x, patches) = self.patch_rows(images)?;
        let b = x.nrows() / patches;
        let (h, patch_norm) = self.patch_norm.forward_train(x.view(), 1)?;
        drop(x);
        let (e, patch_linear) = self.patch_linear.forward_train(h.view(), 1)?;
        let (emb, embed_norm) = self.embed_norm.forward_train(e.view(), 1)?;
        let (tokens, n) = self.tokens(emb.view(), b, patches);
        let (features, encoder) = self.encoder.forward_train(tokens.view(), n)?;
        let pooled = self.pool(features.view(), b, n);
        let (pn, head_norm) = self.head_norm.forward_train(pooled.view(), 1)?;
        let (logits, head_linear) = self.head_linear.forward_train(pn.view(), 1)?;
        crate::validate::finite_output("logits", &logits)?;
        let cache = CrateClassifierCache {
            b,
            n,
            patch_norm,
            patch_linear,
            embed_norm,
            encoder,
            features,
            head_norm,
            head_linear,
        };
        Ok((logits, cache))
    }

    /// The pooled tokens (b × dim): the class token or the mean over the tokens.
    pub(crate) fn pool(&self, z: ArrayView2<T>, b: usize, n: usize) -> Array2<T> {
        let mut pooled = Array2::<T>::zeros((b, z.ncols()));
        for (img, mut row) in pooled.rows_mut().into_iter().enumerate() {
            match self.config.pooling {
                Pooling::Cls => row.assign(&z.row(img * n)),
                Pooling::Mean => {
                    for t in 0..n {
                        row += &z.row(img * n + t);
                    }
                    row.mapv_inplace(|v| v / T::from_usize(n));
                }
            }
        }
        pooled
    }

    /// The gradient of a loss with respect to every parameter (in
    /// [`parameters`](Self::parameters) order), given its gradient with respect to the
    /// logits (b × classes) and/or to the encoder's output tokens (b·n × dim, see
    /// [`CrateClassifierCache::features`]); at least one of the two.
    pub fn backward(
        &self,
        cache: &CrateClassifierCache<T>,
        d_logits: Option<ArrayView2<T>>,
        d_features: Option<ArrayView2<T>>,
    ) -> Result<Vec<ArrayD<T>>> {
        let (b, n, d) = (cache.b, cache.n, self.config.dim());
        let mut grads: Vec<ArrayD<T>> = self
            .gradient_buffers()
            .into_iter()
            .map(|(_, g)| g)
            .collect();
        let (g_embed, rest) = grads.split_at_mut(6);
        let (g_tokens, rest) = rest.split_at_mut(2);
        let (g_head, g_encoder) = rest.split_at_mut(4);
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
                let dpn = self.head_linear.backward(&cache.head_linear, dl, gl)?;
                let dp = self.head_norm.backward(&cache.head_norm, dpn.view(), gn)?;
                self.unpool(dp.view(), &mut dz, n);
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
        let dt = self
            .encoder
            .backward(&cache.encoder, dz.view(), g_encoder)?;
        // tokens = [cls; emb] + pos: cls and pos collect over the images
        let demb = {
            let (g_cls, g_pos) = g_tokens.split_at_mut(1);
            let g_cls = g_cls[0].view_mut().into_shape_with_order(d).expect("1×1×d");
            let g_pos = g_pos[0]
                .view_mut()
                .into_shape_with_order((n, d))
                .expect("1×n×d");
            crate::nn::with_class_token_backward(dt.view(), b, n, g_cls, g_pos)
        };
        let (g1, rest) = g_embed.split_at_mut(2);
        let (g2, g3) = rest.split_at_mut(2);
        let de = self
            .embed_norm
            .backward(&cache.embed_norm, demb.view(), g3)?;
        let dh = self
            .patch_linear
            .backward(&cache.patch_linear, de.view(), g2)?;
        self.patch_norm.backward(&cache.patch_norm, dh.view(), g1)?;
        Ok(grads)
    }

    /// Adds the pooled tokens' gradient (b × dim) to the tokens' (b·n × dim).
    fn unpool(&self, dp: ArrayView2<T>, dz: &mut Array2<T>, n: usize) {
        for (img, row) in dp.rows().into_iter().enumerate() {
            match self.config.pooling {
                Pooling::Cls => {
                    let mut r = dz.row_mut(img * n);
                    r += &row;
                }
                Pooling::Mean => {
                    let scaled = row.mapv(|v| v / T::from_usize(n));
                    for t in 0..n {
                        let mut r = dz.row_mut(img * n + t);
                        r += &scaled;
                    }
                }
            }
        }
    }

    /// Calls `update(name, parameter)` for every parameter in
    /// [`parameters`](Self::parameters) order (with the reference shapes), then recomputes
    /// what the layers derive from them; errors when a parameter became non-finite.
    pub fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        let (d, n) = (self.config.dim(), self.pos_embedding.nrows());
        self.patch_norm
            .update_parameters(&mut scoped("to_patch_embedding.1.", update))?;
        self.patch_linear
            .update_parameters(&mut scoped("to_patch_embedding.2.", update))?;
        self.embed_norm
            .update_parameters(&mut scoped("to_patch_embedding.3.", update))?;
        crate::nn::update_embedding(update, "cls_token", &mut self.cls_token, &[1, 1, d])?;
        crate::nn::update_embedding(update, "pos_embedding", &mut self.pos_embedding, &[1, n, d])?;
        self.head_norm
            .update_parameters(&mut scoped("mlp_head.0.", update))?;
        self.head_linear
            .update_parameters(&mut scoped("mlp_head.1.", update))?;
        self.encoder
            .update_parameters(&mut scoped("transformer.layers.", update))?;
        Ok(())
    }
}
