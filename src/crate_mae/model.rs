//! The CRATE masked autoencoder: sizes, weights under the reference names, checkpoints.

use ndarray::{Array1, Array2};
use rand::Rng;

use super::decoder::{CrateDecoderBlock, xavier_mssa};
use super::masking::sincos_position_embedding;
use crate::crate_layer::{CrateBlock, CrateBlockConfig, Ista, MssaConfig};
use crate::nn::{
    Checkpoint, LayerNorm, LayerNormConfig, Linear, LinearConfig, ScopedWriter, TensorReader,
    TensorWriter,
};
use crate::{Error, Float, Result};

/// Sizes and constants of a [`CrateMae`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrateMaeConfig {
    /// Side of the (square) images.
    pub image_size: usize,
    /// Side of the (square) patches.
    pub patch_size: usize,
    /// Image channels (3 in the reference).
    pub channels: usize,
    /// The encoder's layers: CRATE blocks (ISTA λ = 0.5 in the reference encoder).
    pub encoder: CrateBlockConfig,
    /// Number of encoder layers.
    pub depth: usize,
    /// The decoder's width, heads and head dimension.
    pub decoder: MssaConfig,
    /// Number of decoder layers.
    pub decoder_depth: usize,
    /// Whether the loss compares with per-patch normalized pixels (the reference
    /// `norm_pix_loss`, default false).
    pub norm_pix_loss: bool,
}

/// The reference encoder's ISTA sparsity weight λ (`crate_encoder.FeedForward`).
pub const MAE_ENCODER_LAMBDA: f64 = 0.5;

/// LayerNorm ε of the encoder's and decoder's final norms (`norm_layer` of the reference).
const FINAL_LN_EPS: f64 = 1e-6;

impl CrateMaeConfig {
    /// A configuration with the reference constants: encoder CRATE blocks of `heads` heads
    /// of dim/heads with λ = 0.5, a decoder of `decoder_dim` and `decoder_heads` heads of
    /// decoder_dim/decoder_heads, RGB images, raw-pixel loss.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        image_size: usize,
        patch_size: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        decoder_dim: usize,
        decoder_depth: usize,
        decoder_heads: usize,
    ) -> Self {
        let mut encoder = CrateBlockConfig::new(dim, heads, dim / heads.max(1));
        encoder.ista_lambda = MAE_ENCODER_LAMBDA;
        Self {
            image_size,
            patch_size,
            channels: 3,
            encoder,
            depth,
            decoder: MssaConfig {
                dim: decoder_dim,
                heads: decoder_heads,
                dim_head: decoder_dim / decoder_heads.max(1),
            },
            decoder_depth,
            norm_pix_loss: false,
        }
    }

    /// The reference `mae_crate_tiny`: patch 16, 384 wide, 12 + 12 layers of 6 heads.
    pub fn tiny() -> Self {
        Self::new(224, 16, 384, 12, 6, 384, 12, 6)
    }

    /// The reference `mae_crate_small`: 576 wide, 12 + 12 layers of 12 heads.
    pub fn small() -> Self {
        Self::new(224, 16, 576, 12, 12, 576, 12, 12)
    }

    /// The reference `mae_crate_base`: 768 wide, 12 + 12 layers of 12 heads.
    pub fn base() -> Self {
        Self::new(224, 16, 768, 12, 12, 768, 12, 12)
    }

    /// The reference `mae_crate_large`: 1024 wide, 24 + 24 layers of 16 heads.
    pub fn large() -> Self {
        Self::new(224, 16, 1024, 24, 16, 1024, 24, 16)
    }

    /// Patches per row of the grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Patches per image L.
    pub fn num_patches(&self) -> usize {
        self.grid().saturating_mul(self.grid())
    }

    /// Values per patch, patch²·channels.
    pub fn patch_dim(&self) -> usize {
        self.patch_size
            .saturating_mul(self.patch_size)
            .saturating_mul(self.channels)
    }

    /// Number of trainable parameters (the two fixed position embeddings excluded).
    /// (Saturates at `usize::MAX` for sizes that cannot exist.)
    pub fn parameter_count(&self) -> usize {
        let w = |v: usize| v as u128;
        let (d, dd, pd) = (
            w(self.encoder.dim),
            w(self.decoder.dim),
            w(self.patch_dim()),
        );
        let block = |c: &MssaConfig| {
            let (dim, inner) = (w(c.dim), w(c.heads) * w(c.dim_head));
            let out = if c.project_out() {
                inner * dim + dim
            } else {
                0
            };
            4 * dim + inner * dim + out + dim * dim
        };
        let count = d * (pd + 1)
            + d
            + w(self.depth) * block(&self.encoder.mssa())
            + 2 * d
            + dd * (d + 1)
            + dd
            + w(self.decoder_depth) * block(&self.decoder)
            + 2 * dd
            + pd * (dd + 1);
        usize::try_from(count).unwrap_or(usize::MAX)
    }

    /// Errors unless the sizes are ≥ 1, the image is a whole number of patches, both widths
    /// are multiples of 4 (the sine-cosine embedding) and the layers' configurations are
    /// valid.
    pub fn check(&self) -> Result<()> {
        crate::validate::patch_grid(self.patch_size, self.image_size, self.channels)?;
        crate::validate::at_least_one("depth", self.depth)?;
        crate::validate::at_least_one("decoder_depth", self.decoder_depth)?;
        self.encoder.check()?;
        self.decoder.check()?;
        for (name, d) in [("dim", self.encoder.dim), ("decoder_dim", self.decoder.dim)] {
            if d % 4 != 0 {
                return Err(Error::InvalidParameter {
                    name,
                    value: d.to_string(),
                    reason: "must be a multiple of 4 (the 2-D sine-cosine position embedding)",
                });
            }
        }
        crate::validate::elements(&[
            self.num_patches() + 1,
            self.encoder.dim.max(self.decoder.dim),
        ])?;
        crate::validate::elements(&[self.patch_dim(), self.encoder.dim.max(self.decoder.dim)])?;
        // all the layers' weights together
        crate::validate::elements(&[self.parameter_count()])?;
        Ok(())
    }
}

/// The CRATE masked autoencoder (CRATE-MAE), images b × channels × height × width:
///
/// 1. patches embedded by a convolution (kernel = stride = patch), plus the fixed 2-D
///    sine-cosine position embedding ([`sincos_position_embedding`]);
/// 2. per-sample random masking ([`Masking`](super::Masking)): the encoder sees the class
///    token and the kept patches only;
/// 3. the encoder: CRATE layers ([`CrateBlock`], ISTA λ = 0.5), then LayerNorm (ε = 1e-6);
/// 4. `decoder_embed` (linear), the mask token at every removed patch, the original order
///    restored, the decoder's fixed sine-cosine embedding added;
/// 5. the decoder: [`CrateDecoderBlock`]s, LayerNorm (ε = 1e-6) and `decoder_pred` (linear to
///    patch² · channels values);
/// 6. the loss: the mean squared error per patch, averaged over the removed patches, against
///    the patches in `(p1 p2 c)` order (per-patch normalized with `norm_pix_loss`).
///
/// This is the MAE pipeline of the paper (Pai et al., ICLR 2024, arXiv 2404.02446). The
/// reference code (`model/crate_ae/crate_ae.py` of Ma-Lab-Berkeley/CRATE) differs: its
/// `forward_encoder` inserts the mask tokens before the encoder and never calls
/// `decoder_embed`. The tensor names are the reference's (`patch_embed.proj.*`,
/// `cls_token`, `pos_embed`, `blocks.{l}.layers.0.*`, `norm.*`, `decoder_embed.*`,
/// `mask_token`, `decoder_pos_embed`, `decoder_blocks.{l}.layers.0.*`, `decoder_norm.*`,
/// `decoder_pred.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct CrateMae<T: Float> {
    pub(crate) config: CrateMaeConfig,
    /// dim × patch_dim in the convolution's `(c p1 p2)` order, with bias
    pub(crate) patch: Linear<T>,
    pub(crate) cls_token: Array1<T>,
    /// (patches + 1) × dim, fixed
    pub(crate) pos_embed: Array2<T>,
    pub(crate) blocks: Vec<CrateBlock<T>>,
    pub(crate) norm: LayerNorm<T>,
    pub(crate) decoder_embed: Linear<T>,
    pub(crate) mask_token: Array1<T>,
    /// (patches + 1) × decoder_dim, fixed
    pub(crate) decoder_pos_embed: Array2<T>,
    pub(crate) decoder_blocks: Vec<CrateDecoderBlock<T>>,
    pub(crate) decoder_norm: LayerNorm<T>,
    pub(crate) decoder_pred: Linear<T>,
}

/// The model name written in a checkpoint's metadata.
const MODEL: &str = "CrateMae";

fn fixed_embedding<T: Float>(dim: usize, grid: usize) -> Result<Array2<T>> {
    Ok(sincos_position_embedding(dim, grid)?.mapv(T::from_f64))
}

impl<T: Float> CrateMae<T> {
    /// A model with the reference initialization: the patch kernel Xavier-uniform (as a
    /// dim × patch_dim matrix) with PyTorch's default convolution bias U(±1/√patch_dim), the
    /// class and mask tokens N(0, 0.02²), every `Linear` (the attention's, `decoder_embed`,
    /// `decoder_pred`) Xavier-uniform with zero bias, the ISTA and decoder dictionaries
    /// Kaiming-uniform, LayerNorms 1 and 0, and the fixed sine-cosine embeddings.
    pub fn new<R: Rng + ?Sized>(config: &CrateMaeConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let (d, dd, pd) = (config.encoder.dim, config.decoder.dim, config.patch_dim());
        let b = 1.0 / (pd as f64).sqrt();
        let patch_w = crate::nn::xavier_uniform(d, pd, rng);
        let patch_b = Array1::from_shape_simple_fn(d, || T::from_f64(rng.random_range(-b..b)));
        let xavier = |rng: &mut R, o: usize, i: usize| {
            Linear::from_parts(crate::nn::xavier_uniform(o, i, rng), Some(Array1::zeros(o)))
        };
        let token = |rng: &mut R, n: usize| crate::nn::normal(1, n, 0.02, rng).row(0).to_owned();
        let cls_token = token(rng, d);
        let mask_token = token(rng, dd);
        let mut blocks = Vec::with_capacity(config.depth);
        for _ in 0..config.depth {
            let ln = || LayerNorm::new(&config.encoder.layer_norm());
            let mssa = xavier_mssa(&config.encoder.mssa(), rng)?;
            let ista = Ista::new(&config.encoder.ista(), rng)?;
            blocks.push(CrateBlock::from_parts(ln()?, mssa, ln()?, ista)?);
        }
        let decoder_blocks = (0..config.decoder_depth)
            .map(|_| CrateDecoderBlock::new(&config.decoder, rng))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = |dim| LayerNorm::new(&LayerNormConfig::new(dim).with_eps(FINAL_LN_EPS));
        Ok(Self {
            config: *config,
            patch: Linear::from_parts(patch_w, Some(patch_b))?,
            cls_token,
            pos_embed: fixed_embedding(d, config.grid())?,
            blocks,
            norm: final_norm(d)?,
            decoder_embed: xavier(rng, dd, d)?,
            mask_token,
            decoder_pos_embed: fixed_embedding(dd, config.grid())?,
            decoder_blocks,
            decoder_norm: final_norm(dd)?,
            decoder_pred: xavier(rng, pd, dd)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CrateMaeConfig {
        &self.config
    }

    /// The encoder's layers.
    pub fn blocks(&self) -> &[CrateBlock<T>] {
        &self.blocks
    }

    /// The decoder's layers.
    pub fn decoder_blocks(&self) -> &[CrateDecoderBlock<T>] {
        &self.decoder_blocks
    }

    /// The reference state_dict names of a configuration: the trainable parameters
    /// ([`parameters`](Self::parameters) order) and the fixed `pos_embed` and
    /// `decoder_pos_embed`.
    pub fn tensor_names(config: &CrateMaeConfig) -> Vec<String> {
        let mut names: Vec<String> = [
            "patch_embed.proj.weight",
            "patch_embed.proj.bias",
            "cls_token",
        ]
        .map(String::from)
        .into();
        for l in 0..config.depth {
            for n in config.encoder.tensor_names() {
                names.push(format!("blocks.{l}.layers.0.{n}"));
            }
        }
        names.extend(
            [
                "norm.weight",
                "norm.bias",
                "decoder_embed.weight",
                "decoder_embed.bias",
                "mask_token",
            ]
            .map(String::from),
        );
        let mut dec = vec![
            "0.norm.weight",
            "0.norm.bias",
            "0.fn.weight",
            "1.norm.weight",
            "1.norm.bias",
            "1.fn.qkv.weight",
        ];
        if config.decoder.project_out() {
            dec.extend(["1.fn.to_out.0.weight", "1.fn.to_out.0.bias"]);
        }
        for l in 0..config.decoder_depth {
            for n in &dec {
                names.push(format!("decoder_blocks.{l}.layers.0.{n}"));
            }
        }
        names.extend(
            [
                "decoder_norm.weight",
                "decoder_norm.bias",
                "decoder_pred.weight",
                "decoder_pred.bias",
            ]
            .map(String::from),
        );
        names.extend(["pos_embed", "decoder_pos_embed"].map(String::from));
        names
    }

    /// The model as safetensors bytes under the reference names, with its configuration in
    /// the metadata (`mcr2.model = CrateMae`).
    pub fn to_checkpoint(&self) -> Result<Vec<u8>> {
        let mut w = TensorWriter::new();
        self.save(&mut w.scoped(""))?;
        w.set_model(MODEL);
        let c = &self.config;
        for (key, v) in [
            ("image_size", c.image_size),
            ("patch_size", c.patch_size),
            ("channels", c.channels),
            ("dim", c.encoder.dim),
            ("heads", c.encoder.heads),
            ("dim_head", c.encoder.dim_head),
            ("depth", c.depth),
            ("decoder_dim", c.decoder.dim),
            ("decoder_heads", c.decoder.heads),
            ("decoder_dim_head", c.decoder.dim_head),
            ("decoder_depth", c.decoder_depth),
            ("norm_pix_loss", usize::from(c.norm_pix_loss)),
        ] {
            w.set_metadata(&format!("mcr2.{key}"), v);
        }
        for (key, v) in [
            ("ista_step", c.encoder.ista_step),
            ("ista_lambda", c.encoder.ista_lambda),
            ("ln_eps", c.encoder.ln_eps),
        ] {
            w.set_metadata(&format!("mcr2.{key}"), v);
        }
        w.to_bytes()
    }

    /// Reads a checkpoint written by [`to_checkpoint`](Self::to_checkpoint).
    pub fn from_checkpoint(bytes: &[u8]) -> Result<Self> {
        let r = TensorReader::new(bytes)?;
        r.expect_model(
            MODEL,
            " (a file without its configuration is read with `from_safetensors` and a `CrateMaeConfig`)",
        )?;
        let get = |key: &str| r.metadata_value::<usize>(&format!("mcr2.{key}"));
        let getf = |key: &str| r.metadata_value::<f64>(&format!("mcr2.{key}"));
        let config = CrateMaeConfig {
            image_size: get("image_size")?,
            patch_size: get("patch_size")?,
            channels: get("channels")?,
            encoder: CrateBlockConfig {
                dim: get("dim")?,
                heads: get("heads")?,
                dim_head: get("dim_head")?,
                ista_step: getf("ista_step")?,
                ista_lambda: getf("ista_lambda")?,
                ln_eps: getf("ln_eps")?,
            },
            depth: get("depth")?,
            decoder: MssaConfig {
                dim: get("decoder_dim")?,
                heads: get("decoder_heads")?,
                dim_head: get("decoder_dim_head")?,
            },
            decoder_depth: get("decoder_depth")?,
            norm_pix_loss: get("norm_pix_loss")? != 0,
        };
        Self::load(&r, &config)
    }
}

impl<T: Float> Checkpoint<T> for CrateMae<T> {
    type Config = CrateMaeConfig;

    /// Reads every tensor of [`tensor_names`](CrateMae::tensor_names) (no other may be
    /// there): `patch_embed.proj.weight` dim × channels × patch × patch, the tokens and
    /// position embeddings 1 × n × width, the layers and linear maps under their reference
    /// names; F32, F64, BF16 or F16. Missing, extra, misshapen, non-finite or wrongly typed
    /// tensors are [`Error::InvalidWeights`] naming them.
    fn load(reader: &TensorReader<'_>, config: &CrateMaeConfig) -> Result<Self> {
        config.check()?;
        reader.expect_exactly(&Self::tensor_names(config))?;
        let c = config;
        let (d, dd, pd, ps) = (c.encoder.dim, c.decoder.dim, c.patch_dim(), c.patch_size);
        let n = c.num_patches() + 1;
        let weight =
            reader.reshaped("patch_embed.proj.weight", &[d, c.channels, ps, ps], (d, pd))?;
        let bias = reader.vector("patch_embed.proj.bias", d)?;
        let blocks = (0..c.depth)
            .map(|l| CrateBlock::load(&reader.scoped(&format!("blocks.{l}.layers.0.")), &c.encoder))
            .collect::<Result<Vec<_>>>()?;
        let decoder_blocks = (0..c.decoder_depth)
            .map(|l| {
                CrateDecoderBlock::load(
                    &reader.scoped(&format!("decoder_blocks.{l}.layers.0.")),
                    &c.decoder,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = |prefix: &str, dim| {
            LayerNorm::load(
                &reader.scoped(prefix),
                &LayerNormConfig::new(dim).with_eps(FINAL_LN_EPS),
            )
        };
        let linear =
            |prefix: &str, i, o| Linear::load(&reader.scoped(prefix), &LinearConfig::new(i, o));
        Ok(Self {
            config: *c,
            patch: Linear::from_parts(weight, Some(bias))?,
            cls_token: reader.reshaped("cls_token", &[1, 1, d], d)?,
            pos_embed: reader.reshaped("pos_embed", &[1, n, d], (n, d))?,
            blocks,
            norm: norm("norm.", d)?,
            decoder_embed: linear("decoder_embed.", d, dd)?,
            mask_token: reader.reshaped("mask_token", &[1, 1, dd], dd)?,
            decoder_pos_embed: reader.reshaped("decoder_pos_embed", &[1, n, dd], (n, dd))?,
            decoder_blocks,
            decoder_norm: norm("decoder_norm.", dd)?,
            decoder_pred: linear("decoder_pred.", dd, pd)?,
        })
    }

    /// Writes every tensor (in `T`'s dtype) under the reference names and shapes.
    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        for (name, p) in self.parameters() {
            writer.put_shaped(&name, p.shape(), p.iter().copied());
        }
        for (name, e) in [
            ("pos_embed", &self.pos_embed),
            ("decoder_pos_embed", &self.decoder_pos_embed),
        ] {
            writer.put_shaped(name, &[1, e.nrows(), e.ncols()], e.iter().copied());
        }
        Ok(())
    }
}
