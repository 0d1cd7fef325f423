//! The built-in digits: the UCI optical-recognition test set, 1797 images of 8 × 8 pixels in
//! 10 classes (E. Alpaydin and C. Kaynak, 1998, CC BY 4.0), shipped with the crate.

use std::io::Read;

use ndarray::{Array2, Axis};

use crate::{Error, Labels, Result};

const DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Images as rows and their classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Digits {
    /// n × 64 pixel values (0..=16), row-major 8 × 8 images.
    pub pixels: Array2<f64>,
    /// The digit shown, 10 classes.
    pub labels: Labels,
}

impl Digits {
    /// Every row scaled to unit Euclidean norm (the examples' preprocessing; no image is
    /// blank).
    pub fn normalized(mut self) -> Self {
        for row in self.pixels.rows_mut() {
            crate::kernels::normalize_row(row);
        }
        self
    }

    /// The fixed split of the examples: image i goes to the test set when `i % 4 == 3`
    /// (449 images), to the training set otherwise (1348). Returns (train, test).
    pub fn split(&self) -> Result<(Digits, Digits)> {
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..self.labels.n_samples()).partition(|i| i % 4 != 3);
        Ok((self.select(&train)?, self.select(&test)?))
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Result<Digits> {
        let labels = self.labels.select(indices)?;
        Ok(Digits {
            pixels: self.pixels.select(Axis(0), indices),
            labels,
        })
    }
}

/// Decodes the built-in digits.
///
/// ```
/// let digits = mcr2::data::digits()?;
/// assert_eq!(digits.pixels.dim(), (1797, 64));
/// let (train, test) = digits.normalized().split()?;
/// assert_eq!((train.labels.n_samples(), test.labels.n_samples()), (1348, 449));
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn digits() -> Result<Digits> {
    let malformed = |what: String| Error::MalformedFile(format!("built-in digits: {what}"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| malformed(e.to_string()))?;
    let mut pixels = Vec::with_capacity(1797 * 64);
    let mut labels = Vec::with_capacity(1797);
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(malformed(format!(
                "line {}: {} fields",
                line_no + 1,
                fields.len()
            )));
        }
        for f in &fields[..64] {
            pixels.push(
                f.trim()
                    .parse::<f64>()
                    .map_err(|e| malformed(e.to_string()))?,
            );
        }
        labels.push(
            fields[64]
                .trim()
                .parse::<usize>()
                .map_err(|e| malformed(e.to_string()))?,
        );
    }
    let n = labels.len();
    let pixels = Array2::from_shape_vec((n, 64), pixels).map_err(|e| malformed(e.to_string()))?;
    Ok(Digits {
        pixels,
        labels: Labels::new(&labels, 10)?,
    })
}
