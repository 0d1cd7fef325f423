//! The whole CRATE image classifier, as the reference `CRATE` module runs it.

use ndarray::{Array1, Array2, Array3, Array4, ArrayRef4, ArrayView2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;

use super::CrateBlockConfig;
use super::encoder::{CrateEncoder, CrateEncoderConfig, LayerDiagnostics, measure};
use crate::nn::{
    Checkpoint, LayerNorm, LayerNormConfig, Linear, LinearConfig, ScopedWriter, TensorReader,
};
use crate::{Float, Result};

/// How the encoder's tokens become one vector per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Pooling {
    /// The class token (token 0), the reference default `pool='cls'`.
    #[default]
    Cls,
    /// The mean over all tokens, class token included (`pool='mean'`).
    Mean,
}

/// Sizes of a CRATE classifier. The reference configurations are [`tiny`](Self::tiny),
/// [`small`](Self::small), [`base`](Self::base) and [`large`](Self::large) (224 × 224 RGB
/// images, patches of 16, 1000 classes); [`new`](Self::new) makes custom ones.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrateConfig {
    /// Side of the (square) images the position embedding is sized for. Smaller images whose
    /// sides are multiples of the patch also run: like the reference, they use the first
    /// `1 + patches` rows of the position embedding.
    pub image_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// Image channels (3 for RGB).
    pub channels: usize,
    /// Number of classes of the head.
    pub num_classes: usize,
    /// Depth and layer sizes of the encoder.
    pub encoder: CrateEncoderConfig,
    /// Pooling before the head.
    pub pooling: Pooling,
}

impl CrateConfig {
    /// A custom configuration: RGB images, class-token pooling, the reference constants
    /// (ISTA η = λ = 0.1, LayerNorm ε = 1e-5).
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
            encoder: CrateEncoderConfig {
                depth,
                block: CrateBlockConfig::new(dim, heads, dim_head),
            },
            pooling: Pooling::Cls,
        }
    }

    /// CRATE-T: dim 384, depth 12, 6 heads of 64 (6,090,856 parameters).
    pub fn tiny() -> Self {
        Self::new(224, 16, 1000, 384, 12, 6, 64)
    }

    /// CRATE-S: dim 576, depth 12, 12 heads of 48 (13,116,328 parameters).
    pub fn small() -> Self {
        Self::new(224, 16, 1000, 576, 12, 12, 48)
    }

    /// CRATE-B: dim 768, depth 12, 12 heads of 64 (22,796,008 parameters).
    pub fn base() -> Self {
        Self::new(224, 16, 1000, 768, 12, 12, 64)
    }

    /// CRATE-L: dim 1024, depth 24, 16 heads of 64 (77,641,192 parameters).
    pub fn large() -> Self {
        Self::new(224, 16, 1000, 1024, 24, 16, 64)
    }

    /// Token dimension.
    pub fn dim(&self) -> usize {
        self.encoder.block.dim
    }

    /// Patches of a full-size image: (image_size / patch_size)² (saturating at `usize::MAX`,
    /// which [`check`](Self::check) refuses).
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size.max(1);
        side.saturating_mul(side)
    }

    /// Length of a flattened patch: patch_size² · channels (saturating at `usize::MAX`,
    /// which [`check`](Self::check) refuses).
    pub fn patch_dim(&self) -> usize {
        self.patch_size
            .saturating_mul(self.patch_size)
            .saturating_mul(self.channels)
    }

    /// Number of parameters: patch embedding `2·P + dim·P + dim + 2·dim` (P = patch_dim),
    /// class token `dim`, position embedding `(patches + 1)·dim`, per layer
    /// `4·dim + inner·dim + (dim·inner + dim) + dim²` (inner = heads·dim_head; the output
    /// projection is absent when heads = 1 and dim_head = dim), head `2·dim + classes·dim +
    /// classes`.
    pub fn parameter_count(&self) -> usize {
        let (d, p, c) = (self.dim(), self.patch_dim(), self.num_classes);
        let b = &self.encoder.block;
        let inner = b.heads * b.dim_head;
        let out = if b.project_out() { d * inner + d } else { 0 };
        let layer = 4 * d + inner * d + out + d * d;
        (2 * p + d * p + 3 * d)
            + d
            + (self.num_patches() + 1) * d
            + self.encoder.depth * layer
            + (2 * d + c * d + c)
    }

    /// Errors unless every size is ≥ 1, the patch divides the image side, the encoder
    /// configuration is valid, and the embedding matrices fit the memory budget
    /// ([`Error::TooLarge`](crate::Error::TooLarge) otherwise).
    pub fn check(&self) -> Result<()> {
        crate::validate::patch_grid(self.patch_size, self.image_size, self.channels)?;
        crate::validate::at_least_one("num_classes", self.num_classes)?;
        self.encoder.check()?;
        let d = self.dim();
        let tokens = self.num_patches().saturating_add(1);
        crate::validate::elements(&[tokens, d])?;
        crate::validate::elements(&[self.patch_dim(), d])?;
        crate::validate::elements(&[self.num_classes, d])?;
        Ok(())
    }
}

/// A CRATE image classifier (tokens are rows, images are b × channels × height × width):
///
/// 1. patch embedding: `b c (h p1) (w p2) → b (h w) (p1 p2 c)`, LayerNorm, Linear, LayerNorm;
/// 2. the class token is prepended and the position embedding added;
/// 3. the encoder of CRATE layers ([`CrateEncoder`]);
/// 4. pooling ([`Pooling`]), then the head: LayerNorm and Linear to the class logits.
///
/// Weights load from and save to safetensors files under the reference state_dict names
/// ([`from_safetensors`](Self::from_safetensors)).
#[derive(Debug, Clone, PartialEq)]
pub struct CrateClassifier<T: Float> {
    pub(crate) config: CrateConfig,
    pub(crate) patch_norm: LayerNorm<T>,
    /// dim × patch_dim
    pub(crate) patch_linear: Linear<T>,
    pub(crate) embed_norm: LayerNorm<T>,
    pub(crate) cls_token: Array1<T>,
    /// (patches + 1) × dim
    pub(crate) pos_embedding: Array2<T>,
    pub(crate) encoder: CrateEncoder<T>,
    pub(crate) head_norm: LayerNorm<T>,
    /// classes × dim
    pub(crate) head_linear: Linear<T>,
}

/// One layer of a [`CrateClassifier::inspect`] pass.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInspection<T> {
    /// The layer's output tokens, b × (patches + 1) × dim (token 0 is the class token).
    pub tokens: Array3<T>,
    /// The layer's attention maps, b × heads × (patches + 1) × (patches + 1): entry
    /// (image, head, i, j) is the weight token i gives token j (rows sum to 1). Row 0 over
    /// columns 1.. is the class token's attention over the patches, the map the CRATE
    /// authors show as a picture.
    pub attention: Array4<T>,
    /// Compression of the layer's input and sparsity of its output.
    pub diagnostics: LayerDiagnostics<T>,
}

/// Everything a forward pass computed, layer by layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection<T> {
    /// The embedded tokens entering the first layer, b × (patches + 1) × dim.
    pub embedded: Array3<T>,
    /// One entry per layer.
    pub layers: Vec<LayerInspection<T>>,
    /// The class logits, b × classes.
    pub logits: Array2<T>,
}

/// The reference state_dict names of the non-encoder tensors.
const PATCH_NORM: [&str; 2] = ["to_patch_embedding.1.weight", "to_patch_embedding.1.bias"];
const PATCH_LINEAR: [&str; 2] = ["to_patch_embedding.2.weight", "to_patch_embedding.2.bias"];
const EMBED_NORM: [&str; 2] = ["to_patch_embedding.3.weight", "to_patch_embedding.3.bias"];
const CLS_TOKEN: &str = "cls_token";
const POS_EMBEDDING: &str = "pos_embedding";
const HEAD_NORM: [&str; 2] = ["mlp_head.0.weight", "mlp_head.0.bias"];
const HEAD_LINEAR: [&str; 2] = ["mlp_head.1.weight", "mlp_head.1.bias"];
const LAYERS: &str = "transformer.layers.";

/// The prefix of a part's `[weight, bias]` names (`"mlp_head.0."` for `mlp_head.0.weight`).
fn part(names: [&str; 2]) -> &str {
    names[0]
        .strip_suffix("weight")
        .expect("the names of a part end in weight")
}

impl<T: Float> CrateClassifier<T> {
    /// A model with the reference initialization: class token and position embedding
    /// N(0, 1), every Linear U(±1/√fan_in) (weights and biases), LayerNorms weight 1 and
    /// bias 0, the encoder as [`CrateEncoder::new`].
    pub fn new<R: Rng + ?Sized>(config: &CrateConfig, rng: &mut R) -> Result<Self> {
        config.check()?;
        let (d, p, c) = (config.dim(), config.patch_dim(), config.num_classes);
        let ln = |dim: usize| LayerNorm::new(&config.encoder.block.layer_norm().with_dim(dim));
        let mut uniform = |rows: usize, cols: usize, fan_in: usize| {
            let b = 1.0 / (fan_in as f64).sqrt();
            Array2::from_shape_simple_fn((rows, cols), || T::from_f64(rng.random_range(-b..b)))
        };
        let patch_linear = Linear::from_parts(
            uniform(d, p, p),
            Some(uniform(1, d, p).remove_axis(Axis(0))),
        )?;
        let head_linear = Linear::from_parts(
            uniform(c, d, d),
            Some(uniform(1, c, d).remove_axis(Axis(0))),
        )?;
        let mut gauss = |rows: usize, cols: usize| {
            Array2::from_shape_simple_fn((rows, cols), || {
                T::from_f64(rng.sample::<f64, _>(StandardNormal))
            })
        };
        let cls_token = gauss(1, d).remove_axis(Axis(0));
        let pos_embedding = gauss(config.num_patches() + 1, d);
        let encoder = CrateEncoder::new(&config.encoder, rng)?;
        Ok(Self {
            config: *config,
            patch_norm: ln(p)?,
            patch_linear,
            embed_norm: ln(d)?,
            cls_token,
            pos_embedding,
            encoder,
            head_norm: ln(d)?,
            head_linear,
        })
    }

    /// Every tensor name a checkpoint of this configuration holds.
    pub fn tensor_names(config: &CrateConfig) -> Vec<String> {
        let mut names: Vec<String> = [
            &PATCH_NORM[..],
            &PATCH_LINEAR,
            &EMBED_NORM,
            &[CLS_TOKEN, POS_EMBEDDING],
            &HEAD_NORM,
            &HEAD_LINEAR,
        ]
        .concat()
        .into_iter()
        .map(|n| n.to_string())
        .collect();
        let block = config.encoder.block.tensor_names();
        for l in 0..config.encoder.depth {
            names.extend(block.iter().map(|n| format!("{LAYERS}{l}.{n}")));
        }
        names
    }

    /// The configuration.
    pub fn config(&self) -> &CrateConfig {
        &self.config
    }

    /// The encoder.
    pub fn encoder(&self) -> &CrateEncoder<T> {
        &self.encoder
    }

    /// Number of parameters (equal to the configuration's count).
    pub fn parameter_count(&self) -> usize {
        self.config.parameter_count()
    }

    /// Checks a batch of images and returns the embedded tokens (b·(patches + 1) × dim) and
    /// the number of tokens per image.
    fn embed(&self, images: &ArrayRef4<T>) -> Result<(Array2<T>, usize)> {
        let (mut x, patches) = self.patch_rows(images)?;
        let b = x.nrows() / patches;
        super::check_projection(&self.encoder.blocks()[0].mssa, b * (patches + 1))?;
        self.patch_norm.apply_in_place(&mut x);
        let mut emb = self.patch_linear.apply(x.view());
        drop(x);
        self.embed_norm.apply_in_place(&mut emb);
        Ok(self.tokens(emb.view(), b, patches))
    }

    /// `[cls; patch embeddings] + pos`: the tokens (b·(patches + 1) × dim) from the embedded
    /// patches (b·patches × dim), and the number of tokens per image. Row 0 of each image is
    /// the class token.
    pub(crate) fn tokens(
        &self,
        emb: ArrayView2<T>,
        b: usize,
        patches: usize,
    ) -> (Array2<T>, usize) {
        crate::nn::with_class_token(emb, &self.cls_token, &self.pos_embedding, b, patches)
    }

    /// Checks a batch of images and cuts it into patch rows (b·patches × patch_dim,
    /// `b c (h p1) (w p2) → b (h w) (p1 p2 c)`); returns them and the patches per image.
    pub(crate) fn patch_rows(
        &self,
        images: &ArrayRef4<T>,
    ) -> Result<(crate::workspace::Scratch<T>, usize)> {
        crate::nn::image_patches(
            images,
            self.config.channels,
            self.config.patch_size,
            self.config.num_patches(),
            crate::nn::PatchOrder::PixelsThenChannel,
        )
    }

    /// Pooling and head on the encoder's output (b·n × dim).
    fn head(&self, z: ArrayView2<T>, n: usize) -> Array2<T> {
        let mut pooled = self.pool(z, z.nrows() / n, n);
        self.head_norm.apply_in_place(&mut pooled);
        self.head_linear.apply(pooled.view())
    }

    /// Class logits (b × classes) of a batch of images (b × channels × height × width; height
    /// and width multiples of the patch size, at most the configured number of patches).
    pub fn forward(&self, images: &ArrayRef4<T>) -> Result<Array2<T>> {
        crate::rows::on_pool(images.len().saturating_mul(self.config.dim()), || {
            let (tokens, n) = self.embed(images)?;
            let mut z = tokens;
            for block in self.encoder.blocks() {
                let next = block.apply(z.view(), n);
                crate::workspace::recycle(std::mem::replace(&mut z, next));
            }
            let logits = self.head(z.view(), n);
            crate::validate::finite_output("logits", &logits)?;
            Ok(logits)
        })
    }

    /// The `k` most likely classes of each image, as (class, logit), best first.
    pub fn top_k(&self, images: &ArrayRef4<T>, k: usize) -> Result<Vec<Vec<(usize, T)>>> {
        crate::metrics::top_k(&self.forward(images)?, k)
    }

    /// A forward pass that keeps every layer's tokens, attention maps and diagnostics (the
    /// compression and sparsity measures of [`CrateEncoder::forward_with_diagnostics`]).
    /// Keeps depth × batch × heads × tokens² attention entries:
    /// [`Error::TooLarge`](crate::Error::TooLarge) when they (or the kept tokens) exceed the
    /// memory budget.
    pub fn inspect(&self, images: &ArrayRef4<T>) -> Result<Inspection<T>> {
        let (tokens, n) = self.embed(images)?;
        let b = tokens.nrows() / n;
        let d = self.config.dim();
        // everything kept: every layer's attention maps and tokens
        let depth = self.encoder.blocks().len();
        let heads = self.config.encoder.block.heads;
        crate::validate::elements_of::<T>(
            "attention maps of the inspection",
            &[depth, b, heads, n, n],
        )?;
        crate::validate::elements_of::<T>("tokens of the inspection", &[depth + 1, b, n, d])?;
        let shape = |a: Array2<T>| a.into_shape_with_order((b, n, d)).expect("rows are b·n");
        let embedded = shape(tokens.clone());
        let mut z = tokens;
        let mut layers = Vec::with_capacity(self.encoder.blocks().len());
        for block in self.encoder.blocks() {
            let [h, _, _, _, out] = block.apply_trace(z.view(), n);
            let w = block.mssa.project(h.view());
            let attention = block.mssa.attention_maps(w.view(), n);
            let diagnostics = measure(block, w.view(), out.view(), n)?;
            z = out;
            layers.push(LayerInspection {
                tokens: shape(z.clone()),
                attention,
                diagnostics,
            });
        }
        let logits = self.head(z.view(), n);
        Ok(Inspection {
            embedded,
            layers,
            logits,
        })
    }
}

impl<T: Float> Checkpoint<T> for CrateClassifier<T> {
    type Config = CrateConfig;

    /// Reads a checkpoint saved under the reference state_dict names
    /// (`to_patch_embedding.*`, `cls_token`, `pos_embedding`, `transformer.layers.{l}.{0,1}.*`,
    /// `mlp_head.*`). Every name of [`tensor_names`](CrateClassifier::tensor_names) must be
    /// present with its exact shape, and no other may be (under the reader's prefix); tensors
    /// may be F32, F64, BF16 or F16 (converted to `T`). A file that is not valid safetensors
    /// (for instance truncated) is [`Error::MalformedFile`](crate::Error::MalformedFile); a
    /// missing, extra, misshapen, non-finite or wrongly typed tensor is
    /// [`Error::InvalidWeights`](crate::Error::InvalidWeights) naming it.
    fn load(reader: &TensorReader<'_>, config: &CrateConfig) -> Result<Self> {
        config.check()?;
        reader.expect_exactly(&Self::tensor_names(config))?;
        let (d, p, c) = (config.dim(), config.patch_dim(), config.num_classes);
        let eps = config.encoder.block.layer_norm().eps;
        let norm = |names: [&str; 2], dim: usize| {
            LayerNorm::load(&reader.scoped(part(names)), &LayerNormConfig { dim, eps })
        };
        let linear = |names: [&str; 2], in_dim: usize, out_dim: usize| {
            let config = LinearConfig {
                in_dim,
                out_dim,
                bias: true,
            };
            Linear::load(&reader.scoped(part(names)), &config)
        };
        let tokens = config.num_patches() + 1;
        Ok(Self {
            config: *config,
            patch_norm: norm(PATCH_NORM, p)?,
            patch_linear: linear(PATCH_LINEAR, p, d)?,
            embed_norm: norm(EMBED_NORM, d)?,
            cls_token: reader.reshaped(CLS_TOKEN, &[1, 1, d], d)?,
            pos_embedding: reader.reshaped(POS_EMBEDDING, &[1, tokens, d], (tokens, d))?,
            encoder: CrateEncoder::load(&reader.scoped(LAYERS), &config.encoder)?,
            head_norm: norm(HEAD_NORM, d)?,
            head_linear: linear(HEAD_LINEAR, d, c)?,
        })
    }

    /// Writes every tensor (in `T`'s dtype) under the reference names.
    fn save(&self, writer: &mut ScopedWriter<'_>) -> Result<()> {
        for (names, ln) in [
            (PATCH_NORM, &self.patch_norm),
            (EMBED_NORM, &self.embed_norm),
            (HEAD_NORM, &self.head_norm),
        ] {
            ln.save(&mut writer.scoped(part(names)))?;
        }
        for (names, lin) in [
            (PATCH_LINEAR, &self.patch_linear),
            (HEAD_LINEAR, &self.head_linear),
        ] {
            lin.save(&mut writer.scoped(part(names)))?;
        }
        let d = self.config.dim();
        writer.put_shaped(CLS_TOKEN, &[1, 1, d], self.cls_token.iter().copied());
        writer.put_shaped(
            POS_EMBEDDING,
            &[1, self.pos_embedding.nrows(), d],
            self.pos_embedding.iter().copied(),
        );
        self.encoder.save(&mut writer.scoped(LAYERS))
    }
}
