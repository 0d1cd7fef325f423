//! The CRATE-α image classifier: convolutional patch embedding, class token and position
//! embedding, CRATE-α layers, class-token pooling, LayerNorm and a linear head.

use ndarray::{Array1, Array2, ArrayRef4, ArrayView2};
use rand::Rng;
use rand_distr::StandardNormal;

use super::block::{CrateAlphaBlock, CrateAlphaBlockConfig};
use crate::nn::{
    Checkpoint, LayerNorm, LayerNormConfig, Linear, LinearConfig, PatchOrder, ScopedWriter,
    TensorReader, TensorWriter,
};
use crate::{Error, Float, Result};

/// Sizes of a [`CrateAlphaClassifier`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrateAlphaConfig {
    /// Side of the (square) training images.
    pub image_size: usize,
    /// Side of the (square) patches: the convolution's kernel and stride.
    pub patch_size: usize,
    /// Image channels (3 in the reference).
    pub channels: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Number of layers.
    pub depth: usize,
    /// Every layer's sizes and constants.
    pub block: CrateAlphaBlockConfig,
}

/// The published model widths: (name, dim, depth, heads) of the reference variants
/// (JAX `decode_variant`: Ti, S, B, L, H; every head of dim/heads).
pub const CRATE_ALPHA_VARIANTS: [(&str, usize, usize, usize); 5] = [
    ("Ti", 192, 12, 3),
    ("S", 576, 12, 12),
    ("B", 768, 12, 12),
    ("L", 1024, 24, 16),
    ("H", 1280, 32, 16),
];

/// The head's LayerNorm ε (PyTorch's default; the layers' PreNorms use 1e-6).
const HEAD_LN_EPS: f64 = 1e-5;

impl CrateAlphaConfig {
    /// A custom configuration: RGB images, the reference constants (ratio 4, η = λ = 0.1,
    /// LayerNorm ε = 1e-6 in the layers).
    pub fn new(
        image_size: usize,
        patch_size: usize,
        num_classes: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        dim_head: usize,
    ) -> Self {
        Self {
            image_size,
            patch_size,
            channels: 3,
            num_classes,
            depth,
            block: CrateAlphaBlockConfig::new(dim, heads, dim_head),
        }
    }

    /// A published configuration by its name, `"{variant}/{patch}"` with variant Ti, S, B,
    /// L or H (e.g. `"B/16"`, `"L/14"`, `"L/8"`): 224² RGB images, 1000 classes.
    pub fn named(name: &str) -> Result<Self> {
        let bad = || Error::InvalidParameter {
            name: "CRATE-α configuration",
            value: name.to_string(),
            reason: "expected {Ti,S,B,L,H}/{patch}, e.g. B/16 or L/14",
        };
        let (variant, patch) = name.split_once('/').ok_or_else(bad)?;
        let patch: usize = patch.parse().map_err(|_| bad())?;
        let &(_, dim, depth, heads) = CRATE_ALPHA_VARIANTS
            .iter()
            .find(|v| v.0 == variant)
            .ok_or_else(bad)?;
        let config = Self::new(224, patch, 1000, dim, depth, heads, dim / heads);
        config.check()?;
        Ok(config)
    }

    /// CRATE-α-B/16 (dim 768, depth 12, 12 heads; 72,328,936 parameters), the reference
    /// `CRATE_base`.
    pub fn base() -> Self {
        Self::new(224, 16, 1000, 768, 12, 12, 64)
    }

    /// CRATE-α-L/14 (dim 1024, depth 24, 16 heads; 253,650,920 parameters), the reference
    /// `CRATE_large`.
    pub fn large() -> Self {
        Self::new(224, 14, 1000, 1024, 24, 16, 64)
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.block.dim
    }

    /// Patches per image, (image_size / patch_size)².
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size.max(1);
        side.saturating_mul(side)
    }

    /// Values per patch, channels·patch².
    pub fn patch_dim(&self) -> usize {
        self.channels
            .saturating_mul(self.patch_size)
            .saturating_mul(self.patch_size)
    }

    /// Number of parameters: the convolution `dim·(patch_dim + 1)`, the class token and the
    /// position embedding `dim·(patches + 2)`, the layers, the head `2·dim + classes·(dim + 1)`.
    /// (Saturates at `usize::MAX` for sizes that cannot exist.)
    pub fn parameter_count(&self) -> usize {
        let w = |v: usize| v as u128;
        let d = w(self.dim());
        let count = d * (w(self.patch_dim()) + 1)
            + d * (w(self.num_patches()) + 2)
            + w(self.depth) * w(self.block.parameter_count())
            + 2 * d
            + w(self.num_classes) * (d + 1);
        usize::try_from(count).unwrap_or(usize::MAX)
    }

    /// Errors unless every size is ≥ 1, the image is a whole number of patches and the
    /// layers' configuration is valid.
    pub fn check(&self) -> Result<()> {
        crate::validate::patch_grid(self.patch_size, self.image_size, self.channels)?;
        crate::validate::at_least_one("num_classes", self.num_classes)?;
        crate::validate::at_least_one("depth", self.depth)?;
        self.block.check()?;
        let d = self.dim();
        crate::validate::elements(&[self.num_patches().saturating_add(1), d])?;
        crate::validate::elements(&[self.patch_dim(), d])?;
        crate::validate::elements(&[self.num_classes, d])?;
        crate::validate::elements(&[self.depth, self.block.parameter_count()])?;
        Ok(())
    }
}

/// The CRATE-α image classifier (images are b × channels × height × width, tokens are rows):
///
/// 1. patch embedding: a convolution of kernel = stride = patch (one linear map of each
///    patch's values in `(c p1 p2)` order, with bias);
/// 2. the class token is prepended and the position embedding added;
/// 3. the CRATE-α layers ([`CrateAlphaBlock`]);
/// 4. the class token, LayerNorm (ε = 1e-5) and a linear head.
///
/// Weights load from and save to safetensors files under the reference state_dict names
/// (`conv1.*`, `cls_token`, `pos_embedding`, `transformer.layers.{l}.*`, `mlp_head.*`).
/// Reference: Yang et al., arXiv 2405.20299; `torch_inference/model/crate_alpha.py` of
/// UCSC-VLAA/CRATE-alpha.
///
/// ```
/// use mcr2::crate_alpha::{CrateAlphaClassifier, CrateAlphaConfig};
/// use mcr2::ndarray::Array4;
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// assert_eq!(CrateAlphaConfig::base().parameter_count(), 72_328_936);
/// let config = CrateAlphaConfig::new(16, 4, 5, 16, 2, 2, 8);
/// let model = CrateAlphaClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(0))?;
/// let logits = model.forward(&Array4::from_elem((2, 3, 16, 16), 0.5))?;
/// assert_eq!(logits.dim(), (2, 5));
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CrateAlphaClassifier<T: Float> {
    pub(crate) config: CrateAlphaConfig,
    /// dim × patch_dim (the convolution's kernel), with bias
    pub(crate) patch: Linear<T>,
    pub(crate) cls_token: Array1<T>,
    /// (patches + 1) × dim
    pub(crate) pos_embedding: Array2<T>,
    pub(crate) blocks: Vec<CrateAlphaBlock<T>>,
    pub(crate) head_norm: LayerNorm<T>,
    /// classes × dim
    pub(crate) head: Linear<T>,
}

const CONV: &str = "conv1.";
const CLS_TOKEN: &str = "cls_token";
const POS_EMBEDDING: &str = "pos_embedding";
const HEAD_NORM: &str = "mlp_head.0.";
const HEAD: &str = "mlp_head.1.";
const LAYERS: &str = "transformer.layers.";

/// The model name written in a checkpoint's metadata.
const MODEL: &str = "CrateAlphaClassifier";

impl<T: Float> CrateAlphaClassifier<T> {
    /// A model with the reference initialization: the convolution as PyTorch's default
    /// (U(±1/√patch_dim) for kernel and bias), class token and position embedding N(0, 1)
    /// (the reference `torch.randn`), layers as [`CrateAlphaBlock::new`], head LayerNorm
    /// weight 1, bias 0, head `Linear` U(±1/√dim).
    pub fn new<R: Rng + ?Sized>(config: &CrateAlphaConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let d = config.dim();
        let patch = Linear::new(&LinearConfig::new(config.patch_dim(), d), rng)?;
        let normal = |rng: &mut R, shape: (usize, usize)| {
            Array2::from_shape_simple_fn(shape, || T::from_f64(rng.sample(StandardNormal)))
        };
        let pos_embedding = normal(rng, (config.num_patches() + 1, d));
        let cls_token = normal(rng, (1, d)).row(0).to_owned();
        let blocks = (0..config.depth)
            .map(|_| CrateAlphaBlock::new(&config.block, rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: *config,
            patch,
            cls_token,
            pos_embedding,
            blocks,
            head_norm: LayerNorm::new(&LayerNormConfig::new(d).with_eps(HEAD_LN_EPS))?,
            head: Linear::new(&LinearConfig::new(d, config.num_classes), rng)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CrateAlphaConfig {
        &self.config
    }

    /// The layers.
    pub fn blocks(&self) -> &[CrateAlphaBlock<T>] {
        &self.blocks
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.config.parameter_count()
    }

    /// The reference state_dict names of a configuration, in [`parameters`](Self::parameters)
    /// order.
    pub fn tensor_names(config: &CrateAlphaConfig) -> Vec<String> {
        let mut names: Vec<String> = ["conv1.weight", "conv1.bias", CLS_TOKEN, POS_EMBEDDING]
            .map(String::from)
            .into();
        let layer = [
            "0.norm.weight",
            "0.norm.bias",
            "0.fn.qkv.weight",
            "0.fn.to_out.0.weight",
            "1.norm.weight",
            "1.norm.bias",
            "1.fn.D",
            "1.fn.D1",
        ];
        let project = config.block.mssa().project_out();
        for l in 0..config.depth {
            for name in layer {
                if project || name != "0.fn.to_out.0.weight" {
                    names.push(format!("{LAYERS}{l}.{name}"));
                }
            }
        }
        names.extend(
            [
                "mlp_head.0.weight",
                "mlp_head.0.bias",
                "mlp_head.1.weight",
                "mlp_head.1.bias",
            ]
            .map(String::from),
        );
        names
    }

    /// Checks the images and cuts them into patch rows in the convolution's `(c p1 p2)`
    /// order; returns them and the patches per image.
    pub(crate) fn patch_rows(
        &self,
        images: &ArrayRef4<T>,
    ) -> Result<(crate::workspace::Scratch<T>, usize)> {
        crate::nn::image_patches(
            images,
            self.config.channels,
            self.config.patch_size,
            self.config.num_patches(),
            PatchOrder::ChannelThenPixels,
        )
    }

    /// The tokens entering the first layer (b·n × dim) and the tokens per image n.
    fn embed(&self, images: &ArrayRef4<T>) -> Result<(Array2<T>, usize)> {
        let (x, patches) = self.patch_rows(images)?;
        let b = x.nrows() / patches;
        crate::crate_layer::check_projection(&self.blocks[0].mssa, b * (patches + 1))?;
        let e = self.patch.apply(x.view());
        Ok(crate::nn::with_class_token(
            e.view(),
            &self.cls_token,
            &self.pos_embedding,
            b,
            patches,
        ))
    }

    /// The class tokens (b × dim) of the layers' output, through the head's LayerNorm and
    /// linear map.
    fn head_of(&self, z: ArrayView2<T>, n: usize) -> Array2<T> {
        let mut pooled = crate::nn::class_tokens(z, n);
        self.head_norm.apply_in_place(&mut pooled);
        self.head.apply(pooled.view())
    }

    /// Class logits (b × classes) of a batch of images (b × channels × height × width;
    /// height and width multiples of the patch size, at most the configured number of
    /// patches, as the reference slices its position embedding).
    pub fn forward(&self, images: &ArrayRef4<T>) -> Result<Array2<T>> {
        crate::rows::on_pool(images.len().saturating_mul(self.config.dim()), || {
            let (mut z, n) = self.embed(images)?;
            for block in &self.blocks {
                z = block.apply(z.view(), n);
            }
            let logits = self.head_of(z.view(), n);
            crate::validate::finite_output("logits", &logits)?;
            Ok(logits)
        })
    }

    /// The fraction of zeros in each layer's sparse codes `A²` (the ODL step's codes, over
    /// every token of the batch), layer by layer: the sparsity that CRATE-α's coding step
    /// produces.
    pub fn code_sparsity(&self, images: &ArrayRef4<T>) -> Result<Vec<f64>> {
        let (mut z, n) = self.embed(images)?;
        let mut out = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, codes) = block.half_and_codes(z.view(), n);
            let zeros = codes.iter().filter(|v| **v == T::zero()).count();
            out.push(zeros as f64 / codes.len().max(1) as f64);
            z = y;
        }
        Ok(out)
    }

    /// The `k` most likely classes of each image, as (class, logit), best first.
    pub fn top_k(&self, images: &ArrayRef4<T>, k: usize) -> Result<Vec<Vec<(usize, T)>>> {
        crate::metrics::top_k(&self.forward(images)?, k)
    }

    /// The model as safetensors bytes under the reference names, with its configuration in
    /// the metadata (`mcr2.model = CrateAlphaClassifier`).
    pub fn to_checkpoint(&self) -> Result<Vec<u8>> {
        let mut w = TensorWriter::new();
        self.save(&mut w.scoped(""))?;
        w.set_model(MODEL);
        let c = &self.config;
        for (key, v) in [
            ("image_size", c.image_size),
            ("patch_size", c.patch_size),
            ("channels", c.channels),
            ("num_classes", c.num_classes),
            ("depth", c.depth),
            ("dim", c.block.dim),
            ("heads", c.block.heads),
            ("dim_head", c.block.dim_head),
            ("ratio", c.block.ratio),
        ] {
            w.set_metadata(&format!("mcr2.{key}"), v);
        }
        for (key, v) in [
            ("step", c.block.step),
            ("lambda", c.block.lambda),
            ("ln_eps", c.block.ln_eps),
        ] {
            w.set_metadata(&format!("mcr2.{key}"), v);
        }
        w.to_bytes()
    }

    /// Reads a checkpoint written by [`to_checkpoint`](Self::to_checkpoint): the
    /// configuration from its metadata, then every tensor as
    /// [`load`](crate::nn::Checkpoint::load) does.
    pub fn from_checkpoint(bytes: &[u8]) -> Result<Self> {
        let r = TensorReader::new(bytes)?;
        r.expect_model(
            MODEL,
            " (a file without its configuration is read with `from_safetensors` and a `CrateAlphaConfig`)",
        )?;
        let get = |key: &str| r.metadata_value::<usize>(&format!("mcr2.{key}"));
        let getf = |key: &str| r.metadata_value::<f64>(&format!("mcr2.{key}"));
        let config = CrateAlphaConfig {
            image_size: get("image_size")?,
            patch_size: get("patch_size")?,
            channels: get("channels")?,
            num_classes: get("num_classes")?,
            depth: get("depth")?,
            block: CrateAlphaBlockConfig {
                dim: get("dim")?,
                heads: get("heads")?,
                dim_head: get("dim_head")?,
                ratio: get("ratio")?,
                step: getf("step")?,
                lambda: getf("lambda")?,
                ln_eps: getf("ln_eps")?,
            },
        };
        Self::load(&r, &config)
    }
}

impl<T: Float> Checkpoint<T> for CrateAlphaClassifier<T> {
    type Config = CrateAlphaConfig;

    /// Reads a checkpoint saved under the reference state_dict names: `conv1.weight`
    /// (dim × channels × patch × patch), `conv1.bias`, `cls_token` (1 × 1 × dim),
    /// `pos_embedding` (1 × (patches + 1) × dim), every layer's tensors
    /// ([`CrateAlphaBlock`]'s `load`) under `transformer.layers.{l}.`, and `mlp_head.0.*`
    /// (LayerNorm), `mlp_head.1.*` (Linear). Every name of
    /// [`tensor_names`](CrateAlphaClassifier::tensor_names) must be present with its exact
    /// shape and no other may be; tensors may be F32, F64, BF16 or F16. Malformed files are
    /// [`Error::MalformedFile`]; a missing, extra, misshapen, non-finite or wrongly typed
    /// tensor is [`Error::InvalidWeights`] naming it.
    fn load(reader: &TensorReader<'_>, config: &CrateAlphaConfig) -> Result<Self> {
        config.check()?;
        reader.expect_exactly(&Self::tensor_names(config))?;
        let (d, pd, ps, c) = (
            config.dim(),
            config.patch_dim(),
            config.patch_size,
            config.channels,
        );
        let weight = reader.reshaped(&format!("{CONV}weight"), &[d, c, ps, ps], (d, pd))?;
        let bias = reader.vector(&format!("{CONV}bias"), d)?;
        let tokens = config.num_patches() + 1;
        let blocks = (0..config.depth)
            .map(|l| CrateAlphaBlock::load(&reader.scoped(&format!("{LAYERS}{l}.")), &config.block))
            .collect::<Result<Vec<_>>>()?;
        let head_config = LinearConfig::new(d, config.num_classes);
        Ok(Self {
            config: *config,
            patch: Linear::from_parts(weight, Some(bias))?,
            cls_token: reader.reshaped(CLS_TOKEN, &[1, 1, d], d)?,
            pos_embedding: reader.reshaped(POS_EMBEDDING, &[1, tokens, d], (tokens, d))?,
            blocks,
            head_norm: LayerNorm::load(
                &reader.scoped(HEAD_NORM),
                &LayerNormConfig::new(d).with_eps(HEAD_LN_EPS),
            )?,
            head: Linear::load(&reader.scoped(HEAD), &head_config)?,
        })
    }

    /// Writes every tensor (in `T`'s dtype) under the reference names and shapes.
    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        for (name, p) in self.parameters() {
            writer.put_shaped(&name, p.shape(), p.iter().copied());
        }
        Ok(())
    }
}
