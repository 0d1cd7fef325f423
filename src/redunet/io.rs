//! Saving and loading a fitted [`ReduNet`]: its operators as safetensors tensors, its
//! configuration and sizes in the file's metadata, so that loading needs nothing else.

use super::{ReduLayer, ReduNet, ReduNetConfig};
use crate::nn::{TensorReader, TensorWriter};
use crate::{Error, Float, Precision, Result};

/// The value of the `mcr2.model` metadata entry of a saved ReduNet.
const MODEL: &str = "ReduNet";

impl<T: Float> ReduNet<T> {
    /// The network as safetensors bytes: tensors `layers.{l}.expansion` (d × d),
    /// `layers.{l}.compression.{j}` (d × d) and `layers.{l}.gamma` (classes), in `T`; the
    /// metadata holds `mcr2.model = ReduNet`, the configuration (`layers`, `eta`, `eps_sq`,
    /// `lambda`) and the sizes (`dim`, `classes`). The training history is not saved.
    ///
    /// ```
    /// use mcr2::data::gaussian_toy;
    /// use mcr2::rand::{SeedableRng, rngs::StdRng};
    /// use mcr2::redunet::{LayerProgress, ReduNet, ReduNetConfig};
    /// let centers = mcr2::ndarray::array![[1.0, 0.0], [0.0, 1.0]];
    /// let (x, labels) = gaussian_toy(&centers, 20, 0.1, &mut StdRng::seed_from_u64(0))?;
    /// let config = ReduNetConfig { layers: 5, ..ReduNetConfig::default() };
    /// let (net, _, _) = ReduNet::fit(&x, &labels, &config, |_: &LayerProgress| ())?;
    /// let back = ReduNet::<f64>::from_safetensors(&net.to_safetensors()?)?;
    /// assert_eq!(back.transform(&x)?, net.transform(&x)?);
    /// # Ok::<(), mcr2::Error>(())
    /// ```
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut w = TensorWriter::new();
        w.set_model(MODEL);
        w.set_metadata("layers", self.layers.len());
        w.set_metadata("eta", self.config.eta);
        w.set_metadata("eps_sq", self.config.eps.eps_sq());
        w.set_metadata("lambda", self.config.lambda);
        w.set_metadata("dim", self.dim);
        w.set_metadata("classes", self.n_classes());
        for (l, layer) in self.layers.iter().enumerate() {
            let mut s = w.scoped(&format!("layers.{l}."));
            s.put("expansion", &layer.e.clone().into_dyn());
            for (j, c) in layer.c.iter().enumerate() {
                s.put(&format!("compression.{j}"), &c.clone().into_dyn());
            }
            s.put_shaped("gamma", &[layer.gamma.len()], layer.gamma.iter().copied());
        }
        w.to_bytes()
    }

    /// Reads a network written by [`to_safetensors`](Self::to_safetensors) (any float type:
    /// tensors are converted to `T`). A file that is not such a network, or whose metadata,
    /// names, shapes or values are wrong, is an error naming what is wrong; the sizes are
    /// checked against the memory budget before any tensor is read.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let r = TensorReader::new(bytes)?;
        r.expect_model(MODEL, "")?;
        let config = ReduNetConfig {
            layers: r.metadata_value("layers")?,
            eta: r.metadata_value("eta")?,
            eps: Precision::from_eps_sq(r.metadata_value("eps_sq")?)?,
            lambda: r.metadata_value("lambda")?,
        };
        config.check()?;
        let dim: usize = r.metadata_value("dim")?;
        let classes: usize = r.metadata_value("classes")?;
        crate::validate::at_least_one("dim", dim)?;
        crate::validate::at_least_one("classes", classes)?;
        // each layer has 2 + classes tensors: a file cannot claim more layers than it holds
        let expected = classes
            .checked_add(2)
            .and_then(|t| t.checked_mul(config.layers));
        if expected != Some(r.names().len()) {
            return Err(Error::InvalidWeights {
                name: "layers".into(),
                reason: format!(
                    "{} tensors in the file, {} layers of {classes} classes need {}",
                    r.names().len(),
                    config.layers,
                    expected.map_or("more than usize::MAX".into(), |e| e.to_string())
                ),
            });
        }
        crate::validate::elements_of::<T>(
            "ReduNet operators",
            &[config.layers, classes + 1, dim, dim],
        )?;
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let s = r.scoped(&format!("layers.{l}."));
            let e = s.matrix("expansion", dim, dim)?;
            let c = (0..classes)
                .map(|j| s.matrix(&format!("compression.{j}"), dim, dim))
                .collect::<Result<Vec<_>>>()?;
            let gamma = s.vector("gamma", classes)?.to_vec();
            if gamma.iter().any(|&g| g < T::zero()) {
                return Err(Error::InvalidWeights {
                    name: s.full_name("gamma"),
                    reason: "class weights must be ≥ 0".into(),
                });
            }
            layers.push(ReduLayer { e, c, gamma });
        }
        Ok(Self {
            config,
            dim,
            layers,
            history: Vec::new(),
        })
    }
}
