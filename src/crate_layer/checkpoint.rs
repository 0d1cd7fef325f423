//! A CRATE classifier checkpoint that carries its configuration: the reference tensors
//! (see [`CrateClassifier::load`](crate::nn::Checkpoint::load)) and the [`CrateConfig`] in the
//! file's metadata, so that reading it needs nothing else.

use super::{CrateBlockConfig, CrateClassifier, CrateConfig, CrateEncoderConfig, Pooling};
use crate::nn::{Checkpoint, TensorReader, TensorWriter};
use crate::{Error, Float, Result};

/// The value of the `mcr2.model` metadata entry of such a checkpoint.
const MODEL: &str = "CrateClassifier";

impl CrateConfig {
    /// Writes every field into the metadata of `w` (`image_size`, `patch_size`, `channels`,
    /// `num_classes`, `pooling`, `depth`, `dim`, `heads`, `dim_head`, `ista_step`,
    /// `ista_lambda`, `ln_eps`).
    pub fn write_metadata(&self, w: &mut TensorWriter) {
        let b = &self.encoder.block;
        w.set_metadata("image_size", self.image_size);
        w.set_metadata("patch_size", self.patch_size);
        w.set_metadata("channels", self.channels);
        w.set_metadata("num_classes", self.num_classes);
        w.set_metadata(
            "pooling",
            match self.pooling {
                Pooling::Cls => "cls",
                Pooling::Mean => "mean",
            },
        );
        w.set_metadata("depth", self.encoder.depth);
        w.set_metadata("dim", b.dim);
        w.set_metadata("heads", b.heads);
        w.set_metadata("dim_head", b.dim_head);
        w.set_metadata("ista_step", b.ista_step);
        w.set_metadata("ista_lambda", b.ista_lambda);
        w.set_metadata("ln_eps", b.ln_eps);
    }

    /// Reads a configuration written by [`write_metadata`](Self::write_metadata), checked.
    pub fn from_metadata(r: &TensorReader<'_>) -> Result<Self> {
        let pooling = match r.metadata("pooling") {
            Some("cls") => Pooling::Cls,
            Some("mean") => Pooling::Mean,
            other => {
                return Err(Error::InvalidWeights {
                    name: "metadata \"pooling\"".into(),
                    reason: format!("{other:?}, expected \"cls\" or \"mean\""),
                });
            }
        };
        let config = CrateConfig {
            image_size: r.metadata_value("image_size")?,
            patch_size: r.metadata_value("patch_size")?,
            channels: r.metadata_value("channels")?,
            num_classes: r.metadata_value("num_classes")?,
            pooling,
            encoder: CrateEncoderConfig {
                depth: r.metadata_value("depth")?,
                block: CrateBlockConfig {
                    dim: r.metadata_value("dim")?,
                    heads: r.metadata_value("heads")?,
                    dim_head: r.metadata_value("dim_head")?,
                    ista_step: r.metadata_value("ista_step")?,
                    ista_lambda: r.metadata_value("ista_lambda")?,
                    ln_eps: r.metadata_value("ln_eps")?,
                },
            },
        };
        config.check()?;
        Ok(config)
    }
}

impl<T: Float> CrateClassifier<T> {
    /// The model as safetensors bytes under the reference names, with its configuration in
    /// the metadata (`mcr2.model = CrateClassifier` and the fields of
    /// [`CrateConfig::write_metadata`]).
    ///
    /// ```
    /// use mcr2::crate_layer::{CrateClassifier, CrateConfig};
    /// use mcr2::rand::{SeedableRng, rngs::StdRng};
    /// let config = CrateConfig::new(16, 4, 5, 16, 2, 2, 8);
    /// let model = CrateClassifier::<f32>::new(&config, &mut StdRng::seed_from_u64(0))?;
    /// let back = CrateClassifier::<f32>::from_checkpoint(&model.to_checkpoint()?)?;
    /// assert_eq!(back, model); // no configuration needed to read it back
    /// # Ok::<(), mcr2::Error>(())
    /// ```
    pub fn to_checkpoint(&self) -> Result<Vec<u8>> {
        let mut w = TensorWriter::new();
        self.save(&mut w.scoped(""))?;
        w.set_model(MODEL);
        self.config().write_metadata(&mut w);
        w.to_bytes()
    }

    /// Reads a checkpoint written by [`to_checkpoint`](Self::to_checkpoint): the
    /// configuration from its metadata, then every tensor as
    /// [`load`](crate::nn::Checkpoint::load) does.
    pub fn from_checkpoint(bytes: &[u8]) -> Result<Self> {
        let r = TensorReader::new(bytes)?;
        r.expect_model(
            MODEL,
            " (a file without its configuration is read with `from_safetensors` and a `CrateConfig`)",
        )?;
        let config = CrateConfig::from_metadata(&r)?;
        Self::load(&r, &config)
    }
}
