//! Saving and loading a fitted [`Micl`] classifier: per class its mean and the
//! eigendecomposition of its scatter as safetensors tensors (f64), the coder, the sizes and
//! each class's count and coding length in the metadata.

use super::micl::{ClassCode, Micl};
use super::{Coder, MeanCoding, Unit};
use crate::nn::{TensorReader, TensorWriter};
use crate::{Error, Precision, Result};

/// The value of the `mcr2.model` metadata entry of a saved MICL classifier.
const MODEL: &str = "MICL";

impl Micl {
    /// The classifier as safetensors bytes: tensors `classes.{j}.mean` (n),
    /// `classes.{j}.eigenvalues` (n) and `classes.{j}.eigenvectors` (n × n); metadata
    /// `mcr2.model = MICL`, `eps_sq`, `unit` (`bits` or `nats`), `mean` (`separate` or
    /// `zero`), `dim`, `classes`, `total`, and `count.{j}`, `length.{j}` per class.
    ///
    /// ```
    /// use mcr2::coding::{Coder, Micl};
    /// use mcr2::{Labels, Precision};
    /// let x = mcr2::ndarray::array![[1.0, 0.1], [2.0, -0.1], [0.1, 1.0], [-0.1, 2.0]];
    /// let labels = Labels::new(&[0, 0, 1, 1], 2)?;
    /// let micl = Micl::fit(&x, &labels, Coder::new(Precision::from_eps(0.1)?))?;
    /// let back = Micl::from_safetensors(&micl.to_safetensors()?)?;
    /// assert_eq!(back, micl);
    /// # Ok::<(), mcr2::Error>(())
    /// ```
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut w = TensorWriter::new();
        w.set_model(MODEL);
        w.set_metadata("eps_sq", self.coder.eps.eps_sq());
        w.set_metadata(
            "unit",
            match self.coder.unit {
                Unit::Bits => "bits",
                Unit::Nats => "nats",
            },
        );
        w.set_metadata(
            "mean",
            match self.coder.mean {
                MeanCoding::Separate => "separate",
                MeanCoding::ZeroMean => "zero",
            },
        );
        w.set_metadata("dim", self.dim);
        w.set_metadata("classes", self.classes.len());
        w.set_metadata("total", self.total);
        for (j, c) in self.classes.iter().enumerate() {
            w.set_metadata(&format!("count.{j}"), c.count);
            w.set_metadata(&format!("length.{j}"), c.length);
            let mut s = w.scoped(&format!("classes.{j}."));
            s.put("mean", &c.mean.clone().into_dyn());
            s.put("eigenvalues", &c.eigenvalues.clone().into_dyn());
            s.put("eigenvectors", &c.eigenvectors.clone().into_dyn());
        }
        w.to_bytes()
    }

    /// Reads a classifier written by [`to_safetensors`](Self::to_safetensors); a file that is
    /// not one, or whose metadata, names, shapes or values are wrong, is an error naming what
    /// is wrong.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let r = TensorReader::new(bytes)?;
        let bad = |name: &str, reason: String| Error::InvalidWeights {
            name: name.to_string(),
            reason,
        };
        r.expect_model(MODEL, "")?;
        let unit = match r.metadata("unit") {
            Some("bits") => Unit::Bits,
            Some("nats") => Unit::Nats,
            other => return Err(bad("metadata \"unit\"", format!("{other:?}"))),
        };
        let mean = match r.metadata("mean") {
            Some("separate") => MeanCoding::Separate,
            Some("zero") => MeanCoding::ZeroMean,
            other => return Err(bad("metadata \"mean\"", format!("{other:?}"))),
        };
        let coder = Coder {
            eps: Precision::from_eps_sq(r.metadata_value("eps_sq")?)?,
            unit,
            mean,
        };
        let dim: usize = r.metadata_value("dim")?;
        let classes: usize = r.metadata_value("classes")?;
        let total: usize = r.metadata_value("total")?;
        crate::validate::at_least_one("dim", dim)?;
        crate::validate::at_least_one("classes", classes)?;
        // three tensors per class: a file cannot claim more classes than it holds
        if classes.checked_mul(3) != Some(r.names().len()) {
            return Err(bad(
                "classes",
                format!(
                    "{classes} classes need {} tensors, the file has {}",
                    3 * classes as u128,
                    r.names().len()
                ),
            ));
        }
        crate::validate::elements_of::<f64>(
            "MICL class codes",
            &[classes, dim.saturating_add(2), dim],
        )?;
        let mut codes = Vec::with_capacity(classes);
        let mut counted = 0usize;
        for j in 0..classes {
            let s = r.scoped(&format!("classes.{j}."));
            let count: usize = r.metadata_value(&format!("count.{j}"))?;
            let length: f64 = r.metadata_value(&format!("length.{j}"))?;
            let eigenvalues = s.vector("eigenvalues", dim)?;
            if count == 0 || !length.is_finite() || eigenvalues.iter().any(|&l| l < 0.0) {
                return Err(bad(
                    &s.full_name(""),
                    "a class needs a count ≥ 1, a finite length and eigenvalues ≥ 0".into(),
                ));
            }
            counted = counted.saturating_add(count);
            codes.push(ClassCode {
                count,
                mean: s.vector("mean", dim)?,
                eigenvalues,
                eigenvectors: s.matrix("eigenvectors", dim, dim)?,
                length,
            });
        }
        if counted != total {
            return Err(bad(
                "metadata \"total\"",
                format!("{total}, but the class counts sum to {counted}"),
            ));
        }
        Ok(Micl {
            coder,
            classes: codes,
            dim,
            total,
        })
    }
}
