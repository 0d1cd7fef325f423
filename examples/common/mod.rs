//! Helpers shared by the examples: the built-in digits data and a `--quick` switch.
#![allow(dead_code)]

use std::io::Read;

use ndarray::Array2;

/// The UCI optical-recognition digits test set (1797 images of 8 × 8 pixels, 10 classes;
/// E. Alpaydin and C. Kaynak, 1998, CC BY 4.0), shipped in `data/digits.csv.gz`.
const DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Pixels (n × 64, values 0..16) and labels (0..9).
pub fn digits() -> Result<(Array2<f64>, Vec<usize>), String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| format!("digits.csv.gz: {e}"))?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(format!(
                "digits.csv.gz line {}: {} fields, expected 65",
                line_no + 1,
                fields.len()
            ));
        }
        for f in &fields[..64] {
            pixels.push(
                f.trim()
                    .parse::<f64>()
                    .map_err(|e| format!("line {}: {e}", line_no + 1))?,
            );
        }
        labels.push(
            fields[64]
                .trim()
                .parse::<usize>()
                .map_err(|e| format!("line {}: {e}", line_no + 1))?,
        );
    }
    let n = labels.len();
    let x = Array2::from_shape_vec((n, 64), pixels).map_err(|e| e.to_string())?;
    Ok((x, labels))
}

/// Scales every row to unit Euclidean norm (rows that are all zero stay zero).
pub fn normalize_rows(x: &mut Array2<f64>) {
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|v| v / norm);
        }
    }
}

/// `--quick` on the command line (or `MCR2_QUICK=1`): a smaller run, as CI uses.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick") || std::env::var("MCR2_QUICK").is_ok_and(|v| v == "1")
}
