//! CRATE-MAE's forward with its loss, and the backward beside it (`model.rs` holds the
//! weights).

use ndarray::{Array2, Array3, Array4, ArrayD, ArrayRef4, ArrayViewD, ArrayViewMutD, Axis};

use super::masking::{Masking, unpatchify};
use super::model::CrateMae;
use crate::crate_layer::CrateBlockCache;
use crate::nn::{Layer, LayerNormCache, PatchOrder, Trainable, scoped};
use crate::{Error, Float, Result};

use super::decoder::CrateDecoderBlockCache;

/// A forward pass: the predicted patches and the loss on the removed ones.
#[derive(Debug, Clone, PartialEq)]
pub struct MaeOutput<T> {
    /// b × L × patch²·channels, every patch (kept ones too), `(p1 p2 c)` order.
    pub pred: Array3<T>,
    /// The mean over the removed patches of each patch's mean squared error.
    pub loss: T,
}

/// What [`CrateMae::backward`] needs from [`CrateMae::forward_train`]: the masking, every
/// layer's cache, the predictions and the targets (b·L × patch_dim each).
#[derive(Debug, Clone)]
pub struct CrateMaeCache<T: Float> {
    masking: Masking,
    patch: crate::nn::LinearCache<T>,
    blocks: Vec<CrateBlockCache<T>>,
    norm: LayerNormCache<T>,
    decoder_embed: crate::nn::LinearCache<T>,
    decoder_blocks: Vec<CrateDecoderBlockCache<T>>,
    decoder_norm: LayerNormCache<T>,
    decoder_pred: crate::nn::LinearCache<T>,
    pred: Array2<T>,
    target: Array2<T>,
}

/// The convolution kernel's 4-D shape.
fn conv_shape(c: &super::CrateMaeConfig) -> (usize, usize, usize, usize) {
    (c.encoder.dim, c.channels, c.patch_size, c.patch_size)
}

impl<T: Float> CrateMae<T> {
    /// The trainable parameters by reference name and shape, in
    /// [`tensor_names`](Self::tensor_names) order (the fixed position embeddings are not
    /// trained and not listed).
    pub fn parameters(&self) -> Vec<(String, ArrayViewD<'_, T>)> {
        let c = &self.config;
        let (d, dd) = (c.encoder.dim, c.decoder.dim);
        let conv = self
            .patch
            .weight()
            .view()
            .into_shape_with_order(conv_shape(c));
        let mut p = vec![
            (
                "patch_embed.proj.weight".to_string(),
                conv.expect("dim × patch_dim").into_dyn(),
            ),
            (
                "patch_embed.proj.bias".to_string(),
                self.patch.bias().expect("bias").view().into_dyn(),
            ),
            (
                "cls_token".to_string(),
                self.cls_token
                    .view()
                    .into_shape_with_order((1, 1, d))
                    .expect("d")
                    .into_dyn(),
            ),
        ];
        for (l, b) in self.blocks.iter().enumerate() {
            p.extend(crate::nn::prefixed(
                &format!("blocks.{l}.layers.0."),
                b.parameters(),
            ));
        }
        p.extend(crate::nn::prefixed("norm.", self.norm.parameters()));
        p.extend(crate::nn::prefixed(
            "decoder_embed.",
            self.decoder_embed.parameters(),
        ));
        let mask = self.mask_token.view().into_shape_with_order((1, 1, dd));
        p.push(("mask_token".to_string(), mask.expect("dd").into_dyn()));
        for (l, b) in self.decoder_blocks.iter().enumerate() {
            p.extend(crate::nn::prefixed(
                &format!("decoder_blocks.{l}.layers.0."),
                b.parameters(),
            ));
        }
        p.extend(crate::nn::prefixed(
            "decoder_norm.",
            self.decoder_norm.parameters(),
        ));
        p.extend(crate::nn::prefixed(
            "decoder_pred.",
            self.decoder_pred.parameters(),
        ));
        p
    }

    /// Zero buffers matching [`parameters`](Self::parameters) one to one.
    pub fn gradient_buffers(&self) -> Vec<(String, ArrayD<T>)> {
        crate::nn::zero_buffers(self.parameters())
    }

    /// The loss targets: the images' patches (b·L × patch_dim, `(p1 p2 c)` order), per-patch
    /// normalized with `norm_pix_loss` (`(t − mean)/√(var + 1e-6)`, unbiased variance).
    fn targets(&self, images: &ArrayRef4<T>) -> Result<Array2<T>> {
        let c = &self.config;
        let (t, _) = crate::nn::image_patches(
            images,
            c.channels,
            c.patch_size,
            c.num_patches(),
            PatchOrder::PixelsThenChannel,
        )?;
        let mut t = t.view().to_owned();
        if c.norm_pix_loss {
            let k = t.ncols();
            if k < 2 {
                return Err(Error::InvalidParameter {
                    name: "norm_pix_loss",
                    value: "true".into(),
                    reason: "per-patch normalization needs at least 2 values per patch",
                });
            }
            for mut row in t.rows_mut() {
                let (mean, s) = patch_scale(row.view());
                row.mapv_inplace(|v| (v - mean) / s);
            }
        }
        Ok(t)
    }

    /// The predicted patches and the loss of a batch of images (b × channels × image_size²)
    /// under `masking` (b samples of L patches).
    pub fn forward(&self, images: &ArrayRef4<T>, masking: &Masking) -> Result<MaeOutput<T>> {
        crate::rows::on_pool(images.len().saturating_mul(self.config.encoder.dim), || {
            let (out, _) = self.forward_train(images, masking)?;
            Ok(out)
        })
    }

    /// The forward with the cache for [`backward`](Self::backward).
    pub fn forward_train(
        &self,
        images: &ArrayRef4<T>,
        masking: &Masking,
    ) -> Result<(MaeOutput<T>, CrateMaeCache<T>)> {
        let c = &self.config;
        let l = c.num_patches();
        let (b, _, h, w) = images.dim();
        if h != c.image_size || w != c.image_size {
            return Err(Error::ShapeMismatch {
                what: "images",
                expected: format!("{0} × {0}", c.image_size),
                got: format!("{h} × {w}"),
            });
        }
        if masking.batch() != b || masking.len() != l {
            return Err(Error::ShapeMismatch {
                what: "masking",
                expected: format!("{b} samples of {l} patches"),
                got: format!("{} samples of {} patches", masking.batch(), masking.len()),
            });
        }
        if masking.keep() == l {
            return Err(Error::InvalidParameter {
                name: "masking",
                value: "no patch removed".into(),
                reason: "the loss is taken on the removed patches: remove at least one",
            });
        }
        let target = self.targets(images)?;
        let (x, _) = crate::nn::image_patches(
            images,
            c.channels,
            c.patch_size,
            l,
            PatchOrder::ChannelThenPixels,
        )?;
        let (e, patch) = self.patch.forward_train(x.view(), 1)?;
        drop(x);
        let (d, keep) = (c.encoder.dim, masking.keep());
        let ne = keep + 1;
        let mut z = Array2::<T>::zeros((b * ne, d));
        for i in 0..b {
            let mut row = z.row_mut(i * ne);
            row.assign(&self.cls_token);
            row += &self.pos_embed.row(0);
            for (r, &j) in masking.kept(i).iter().enumerate() {
                let mut row = z.row_mut(i * ne + 1 + r);
                row.assign(&e.row(i * l + j));
                row += &self.pos_embed.row(1 + j);
            }
        }
        let (z, blocks) = crate::nn::stack_forward_train(&self.blocks, z, ne)?;
        let (zn, norm) = self.norm.forward_train(z.view(), 1)?;
        let (y, decoder_embed) = self.decoder_embed.forward_train(zn.view(), 1)?;
        let (dd, nd) = (c.decoder.dim, l + 1);
        let mut f = Array2::<T>::zeros((b * nd, dd));
        for i in 0..b {
            for t in 0..nd {
                let mut row = f.row_mut(i * nd + t);
                let source = if t == 0 {
                    Some(0)
                } else {
                    masking.kept_rank(i, t - 1).map(|r| r + 1)
                };
                match source {
                    Some(s) => row.assign(&y.row(i * ne + s)),
                    None => row.assign(&self.mask_token),
                }
                row += &self.decoder_pos_embed.row(t);
            }
        }
        let (f, decoder_blocks) = crate::nn::stack_forward_train(&self.decoder_blocks, f, nd)?;
        let (fnorm, decoder_norm) = self.decoder_norm.forward_train(f.view(), 1)?;
        let (p, decoder_pred) = self.decoder_pred.forward_train(fnorm.view(), 1)?;
        let rows: Vec<usize> = (0..b)
            .flat_map(|i| (1..nd).map(move |t| i * nd + t))
            .collect();
        let pred = p.select(Axis(0), &rows);
        crate::validate::finite_output("CRATE-MAE prediction", &pred)?;
        let loss =
            crate::validate::finite_value("CRATE-MAE loss", masked_loss(&pred, &target, masking))?;
        let out = MaeOutput {
            pred: pred
                .clone()
                .into_shape_with_order((b, l, c.patch_dim()))
                .expect("b·L rows"),
            loss,
        };
        let cache = CrateMaeCache {
            masking: masking.clone(),
            patch,
            blocks,
            norm,
            decoder_embed,
            decoder_blocks,
            decoder_norm,
            decoder_pred,
            pred,
            target,
        };
        Ok((out, cache))
    }

    /// The images with every removed patch replaced by its prediction (b × channels ×
    /// image_size²); with `norm_pix_loss`, a prediction is mapped back with its patch's own
    /// mean and standard deviation, as MAE's visualizations do.
    pub fn reconstruct(&self, images: &ArrayRef4<T>, masking: &Masking) -> Result<Array4<T>> {
        let out = self.forward(images, masking)?;
        let c = &self.config;
        let (raw, _) = crate::nn::image_patches(
            images,
            c.channels,
            c.patch_size,
            c.num_patches(),
            PatchOrder::PixelsThenChannel,
        )?;
        let (b, l, k) = out.pred.dim();
        let mut patches = raw
            .view()
            .to_owned()
            .into_shape_with_order((b, l, k))
            .expect("b·L rows");
        for i in 0..b {
            for j in (0..l).filter(|&j| masking.is_masked(i, j)) {
                let mut row = patches.index_axis_mut(Axis(0), i);
                let mut row = row.row_mut(j);
                let pred = out.pred.index_axis(Axis(0), i);
                let pred = pred.row(j);
                if c.norm_pix_loss {
                    let (mean, s) = patch_scale(row.view());
                    ndarray::Zip::from(&mut row)
                        .and(&pred)
                        .for_each(|r, &p| *r = p * s + mean);
                } else {
                    row.assign(&pred);
                }
            }
        }
        unpatchify(&patches, c.patch_size, c.channels, c.grid())
    }

    /// The gradient of the loss with respect to every trainable parameter, in
    /// [`parameters`](Self::parameters) order.
    pub fn backward(&self, cache: &CrateMaeCache<T>) -> Result<Vec<ArrayD<T>>> {
        let c = &self.config;
        let m = &cache.masking;
        let (b, l, keep) = (m.batch(), m.len(), m.keep());
        let (ne, nd, pd) = (keep + 1, l + 1, c.patch_dim());
        let mut grads: Vec<ArrayD<T>> = self
            .gradient_buffers()
            .into_iter()
            .map(|(_, g)| g)
            .collect();
        let per_enc = self.blocks.first().map_or(0, |x| x.parameters().len());
        let per_dec = self
            .decoder_blocks
            .first()
            .map_or(0, |x| x.parameters().len());
        let (g_patch, rest) = grads.split_at_mut(2);
        let (g_cls, rest) = rest.split_at_mut(1);
        let (g_blocks, rest) = rest.split_at_mut(per_enc * self.blocks.len());
        let (g_norm, rest) = rest.split_at_mut(2);
        let (g_embed, rest) = rest.split_at_mut(2);
        let (g_mask, rest) = rest.split_at_mut(1);
        let (g_dec, rest) = rest.split_at_mut(per_dec * self.decoder_blocks.len());
        let (g_dnorm, g_pred) = rest.split_at_mut(2);
        // ∂loss/∂pred on the removed patches: 2(pred − target)/(patch_dim · removed)
        let scale = T::from_f64(2.0 / (pd as f64 * (b * (l - keep)) as f64));
        let mut dp = Array2::<T>::zeros((b * nd, pd));
        for i in 0..b {
            for j in (0..l).filter(|&j| m.is_masked(i, j)) {
                let r = i * l + j;
                let mut row = dp.row_mut(i * nd + 1 + j);
                ndarray::Zip::from(&mut row)
                    .and(&cache.pred.row(r))
                    .and(&cache.target.row(r))
                    .for_each(|g, &p, &t| *g = scale * (p - t));
            }
        }
        let dn = self
            .decoder_pred
            .backward(&cache.decoder_pred, dp.view(), g_pred)?;
        let df = self
            .decoder_norm
            .backward(&cache.decoder_norm, dn.view(), g_dnorm)?;
        let df = crate::nn::stack_backward(&self.decoder_blocks, &cache.decoder_blocks, g_dec, df)?;
        let dd = c.decoder.dim;
        let mut dy = Array2::<T>::zeros((b * ne, dd));
        {
            let mut gm = g_mask[0]
                .view_mut()
                .into_shape_with_order(dd)
                .expect("1×1×dd");
            for i in 0..b {
                dy.row_mut(i * ne).assign(&df.row(i * nd));
                for j in 0..l {
                    match m.kept_rank(i, j) {
                        Some(r) => dy.row_mut(i * ne + 1 + r).assign(&df.row(i * nd + 1 + j)),
                        None => gm += &df.row(i * nd + 1 + j),
                    }
                }
            }
        }
        let dzn = self
            .decoder_embed
            .backward(&cache.decoder_embed, dy.view(), g_embed)?;
        let dz = self.norm.backward(&cache.norm, dzn.view(), g_norm)?;
        let dz = crate::nn::stack_backward(&self.blocks, &cache.blocks, g_blocks, dz)?;
        let d = c.encoder.dim;
        let mut de = Array2::<T>::zeros((b * l, d));
        {
            let mut gc = g_cls[0].view_mut().into_shape_with_order(d).expect("1×1×d");
            for i in 0..b {
                gc += &dz.row(i * ne);
                for (r, &j) in m.kept(i).iter().enumerate() {
                    de.row_mut(i * l + j).assign(&dz.row(i * ne + 1 + r));
                }
            }
        }
        crate::nn::conv_backward(&self.patch, &cache.patch, de.view(), g_patch)?;
        Ok(grads)
    }

    /// Calls `update(name, parameter)` for every trainable parameter in
    /// [`parameters`](Self::parameters) order; errors when one became non-finite.
    pub fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&str, ArrayViewMutD<'_, T>),
    ) -> Result<()> {
        let c = self.config;
        let (d, dd) = (c.encoder.dim, c.decoder.dim);
        crate::nn::conv_update(&mut self.patch, "patch_embed.proj.", conv_shape(&c), update)?;
        crate::nn::update_embedding(update, "cls_token", &mut self.cls_token, &[1, 1, d])?;
        for (l, block) in self.blocks.iter_mut().enumerate() {
            block.update_parameters(&mut scoped(&format!("blocks.{l}.layers.0."), update))?;
        }
        self.norm.update_parameters(&mut scoped("norm.", update))?;
        self.decoder_embed
            .update_parameters(&mut scoped("decoder_embed.", update))?;
        crate::nn::update_embedding(update, "mask_token", &mut self.mask_token, &[1, 1, dd])?;
        for (l, block) in self.decoder_blocks.iter_mut().enumerate() {
            block.update_parameters(&mut scoped(
                &format!("decoder_blocks.{l}.layers.0."),
                update,
            ))?;
        }
        self.decoder_norm
            .update_parameters(&mut scoped("decoder_norm.", update))?;
        self.decoder_pred
            .update_parameters(&mut scoped("decoder_pred.", update))
    }
}

/// A patch's mean and the scale of `norm_pix_loss`, `√(var + 1e-6)` with the unbiased
/// variance (at least 2 values).
fn patch_scale<T: Float>(row: ndarray::ArrayView1<T>) -> (T, T) {
    let k = row.len();
    let mean = row.sum() / T::from_usize(k);
    let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() / T::from_usize(k - 1);
    (mean, (var + T::from_f64(1e-6)).sqrt())
}

/// The mean over the removed patches of each patch's mean squared error.
fn masked_loss<T: Float>(pred: &Array2<T>, target: &Array2<T>, m: &Masking) -> T {
    let (l, k) = (m.len(), pred.ncols());
    let mut total = 0.0;
    for i in 0..m.batch() {
        for j in (0..l).filter(|&j| m.is_masked(i, j)) {
            let r = i * l + j;
            let sq: f64 = pred
                .row(r)
                .iter()
                .zip(target.row(r))
                .map(|(&p, &t)| (p - t).as_f64().powi(2))
                .sum();
            total += sq / k as f64;
        }
    }
    T::from_f64(total / (m.batch() * (l - m.keep())) as f64)
}
