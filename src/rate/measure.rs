//! The per-head coding rate exactly as the CRATE authors measure "compression"
//! (Ma-Lab-Berkeley/CRATE, `vis_utils/coding_rate.py` with the hook of `crate_hook.py`).

use ndarray::{Array2, ArrayRef3};

use crate::{Error, Float, Precision, Result};

/// The per-head coding rate of a batch: one value per sequence, their mean and standard
/// deviation.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HeadCodingRate<T> {
    /// `½ Σ_k logdet(I + p/(N ε²) Ŵ_k Ŵ_kᵀ)` for each sequence of the batch.
    pub per_sequence: Vec<T>,
    /// Their mean.
    pub mean: T,
    /// Their standard deviation with Bessel's correction (`torch.std`'s default; 0 for one
    /// sequence, where `torch.std` gives NaN).
    pub std: T,
}

/// The CRATE authors' ε² of the measurement (their `CodingRate(eps=0.01)`).
pub const HEAD_CODING_RATE_EPS_SQ: f64 = 0.01;

/// The compression measure of the CRATE paper (Yu et al., arXiv 2306.01129, Fig. 3 and
/// `vis_utils`), on `projected` (b × N × heads·p: each token's projections `U_kᵀz` on the
/// `heads` subspaces side by side, as MSSA's `qkv` outputs them): every projected token of
/// every head is scaled to unit norm (a zero token stays zero, where the reference code
/// divides by zero), then per sequence
///
/// `R^c = ½ Σ_k logdet(I_N + p/(N ε²) Ŵ_k Ŵ_kᵀ)`
///
/// (Ŵ_k: the N × p normalized tokens of head k), and the mean and standard deviation over
/// the batch. The authors use ε² = [`HEAD_CODING_RATE_EPS_SQ`].
///
/// ```
/// use mcr2::rate::{HEAD_CODING_RATE_EPS_SQ, head_coding_rate};
/// use mcr2::Precision;
/// // one sequence of 2 tokens, one head of dimension 2, orthogonal tokens:
/// // ½ logdet(I + 2/(2·0.01) I₂) = ln 101
/// let w = ndarray::Array3::from_shape_vec((1, 2, 2), vec![3.0, 0.0, 0.0, 0.5])?;
/// let m = head_coding_rate(&w, 1, Precision::from_eps_sq(HEAD_CODING_RATE_EPS_SQ)?)?;
/// assert!((m.mean - 101f64.ln()).abs() < 1e-13);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn head_coding_rate<T: Float>(
    projected: &ArrayRef3<T>,
    heads: usize,
    eps: Precision,
) -> Result<HeadCodingRate<T>> {
    let (b, n, width) = projected.dim();
    crate::validate::at_least_one("heads", heads)?;
    if b == 0 || n == 0 || width == 0 {
        return Err(Error::Empty {
            what: "projected tokens",
            rows: b * n,
            cols: width,
        });
    }
    if width % heads != 0 {
        return Err(Error::ShapeMismatch {
            what: "projected tokens",
            expected: format!("a width divisible by {heads} heads"),
            got: format!("width {width}"),
        });
    }
    crate::validate::finite_output("projected tokens", projected)?;
    let p = width / heads;
    let mut per_sequence = Vec::with_capacity(b);
    for s in 0..b {
        let seq = projected.index_axis(ndarray::Axis(0), s);
        let mut total = T::zero();
        for k in 0..heads {
            let mut wk: Array2<T> = seq.slice(ndarray::s![.., k * p..(k + 1) * p]).to_owned();
            for mut row in wk.rows_mut() {
                let norm = row.dot(&row).sqrt();
                if norm > T::zero() {
                    row.mapv_inplace(|v| v / norm);
                }
            }
            // ½ logdet(I_N + p/(N ε²) Ŵ Ŵᵀ) is the coding rate of the N tokens in R^p
            total += super::coding_rate(&wk, eps)?;
        }
        per_sequence.push(total);
    }
    let count = T::from_usize(b);
    let mean = per_sequence.iter().copied().sum::<T>() / count;
    let std = if b > 1 {
        let ss: T = per_sequence.iter().map(|&v| (v - mean) * (v - mean)).sum();
        (ss / T::from_usize(b - 1)).sqrt()
    } else {
        T::zero()
    };
    Ok(HeadCodingRate {
        per_sequence,
        mean,
        std,
    })
}
