//! The masked autoencoder's data side: patchify and unpatchify, per-sample random masking,
//! and the fixed 2-D sine-cosine position embedding.

use ndarray::{Array2, Array3, Array4, ArrayRef3, ArrayRef4};
use rand::Rng;

use crate::{Error, Float, Result};

/// The patches of a batch of images (b × channels × h·p × w·p) as b × (h·w) × (p·p·channels),
/// each patch's values in `(p1 p2 c)` order (the reference `patchify`:
/// `nchpwq → nhwpqc`), patches in row-major grid order.
///
/// ```
/// use mcr2::crate_mae::{patchify, unpatchify};
/// use mcr2::ndarray::Array4;
/// let images = Array4::from_shape_fn((2, 3, 4, 6), |(b, c, y, x)| (b * 100 + c * 10 + y * 6 + x) as f64);
/// let patches = patchify(&images, 2)?;
/// assert_eq!(patches.dim(), (2, 6, 12));
/// assert_eq!(unpatchify(&patches, 2, 3, 2)?, images);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn patchify<T: Float>(images: &ArrayRef4<T>, patch: usize) -> Result<Array3<T>> {
    let (b, c, h, w) = images.dim();
    crate::validate::at_least_one("patch", patch)?;
    let max = (h / patch) * (w / patch);
    let (rows, l) = crate::nn::image_patches(
        images,
        c,
        patch,
        max,
        crate::nn::PatchOrder::PixelsThenChannel,
    )?;
    let d = rows.ncols();
    Ok(rows
        .view()
        .to_owned()
        .into_shape_with_order((b, l, d))
        .expect("b·l rows"))
}

/// The inverse of [`patchify`]: b × (h·w) × (p·p·channels) patches of a grid `rows` patches
/// high back to b × channels × rows·p × (h·w/rows)·p images.
pub fn unpatchify<T: Float>(
    patches: &ArrayRef3<T>,
    patch: usize,
    channels: usize,
    rows: usize,
) -> Result<Array4<T>> {
    let (b, l, d) = patches.dim();
    crate::validate::at_least_one("patch", patch)?;
    crate::validate::at_least_one("channels", channels)?;
    crate::validate::at_least_one("rows", rows)?;
    if d != patch * patch * channels || l % rows != 0 {
        return Err(Error::ShapeMismatch {
            what: "patches",
            expected: format!(
                "{}-value patches on a grid of {rows} rows",
                patch * patch * channels
            ),
            got: format!("{l} patches of {d} values"),
        });
    }
    let cols = l / rows;
    crate::validate::elements_of::<T>("images", &[b, channels, rows, patch, cols, patch])?;
    Ok(Array4::from_shape_fn(
        (b, channels, rows * patch, cols * patch),
        |(i, ch, y, x)| {
            let (gy, p1, gx, p2) = (y / patch, y % patch, x / patch, x % patch);
            patches[(i, gy * cols + gx, (p1 * patch + p2) * channels + ch)]
        },
    ))
}

/// Which patches of each sample the encoder sees: per-sample random masking by sorting
/// uniform noise (the reference `random_masking`), `keep = ⌊L·(1 − ratio)⌋` patches per
/// sample, with the order that puts the kept and the removed patches back in place.
///
/// ```
/// use mcr2::crate_mae::Masking;
/// use mcr2::rand::{SeedableRng, rngs::StdRng};
/// let m = Masking::random(2, 16, 0.75, &mut StdRng::seed_from_u64(0))?;
/// assert_eq!(m.keep(), 4);
/// assert_eq!((0..16).filter(|&j| !m.is_masked(1, j)).count(), 4);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masking {
    len: usize,
    keep: usize,
    /// per sample: the kept patches, in shuffle order (the order the encoder sees them)
    kept: Vec<Vec<usize>>,
    /// per sample: the rank of each patch in the shuffle (kept iff rank < keep)
    restore: Vec<Vec<usize>>,
}

impl Masking {
    /// Random masking of `batch` sequences of `len` patches: for each sample, noise
    /// uniform in [0, 1) per patch, ascending sort, the first `⌊len·(1 − ratio)⌋` kept.
    /// `ratio` in [0, 1).
    pub fn random<R: Rng + ?Sized>(
        batch: usize,
        len: usize,
        ratio: f64,
        rng: &mut R,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&ratio) {
            return Err(Error::InvalidParameter {
                name: "mask ratio",
                value: ratio.to_string(),
                reason: "must be in [0, 1)",
            });
        }
        crate::validate::elements_of::<usize>("masking", &[2, batch, len])?;
        let keep = (len as f64 * (1.0 - ratio)) as usize;
        let kept = (0..batch)
            .map(|_| {
                let noise: Vec<f64> = (0..len).map(|_| rng.random::<f64>()).collect();
                let mut order: Vec<usize> = (0..len).collect();
                order.sort_by(|&a, &b| noise[a].total_cmp(&noise[b]));
                order.truncate(keep);
                order
            })
            .collect();
        Self::from_kept(len, kept)
    }

    /// A masking that keeps the given patches of each sample (in the order the encoder
    /// sees them): every sample the same number, each patch index below `len` and distinct.
    pub fn from_kept(len: usize, kept: Vec<Vec<usize>>) -> Result<Self> {
        let keep = kept.first().map_or(0, Vec::len);
        crate::validate::elements_of::<usize>("masking", &[kept.len(), len])?;
        if kept.is_empty() || len == 0 {
            return Err(Error::Empty {
                what: "masking",
                rows: kept.len(),
                cols: len,
            });
        }
        let mut restore = Vec::with_capacity(kept.len());
        for k in &kept {
            let mut rank = vec![usize::MAX; len];
            if k.len() != keep {
                return Err(Error::ShapeMismatch {
                    what: "kept patches",
                    expected: format!("{keep} per sample"),
                    got: format!("{}", k.len()),
                });
            }
            for (r, &j) in k.iter().enumerate() {
                if j >= len || rank[j] != usize::MAX {
                    return Err(Error::InvalidParameter {
                        name: "kept patches",
                        value: j.to_string(),
                        reason: "each kept patch must be below len and listed once",
                    });
                }
                rank[j] = r;
            }
            // the removed patches follow, in patch order
            for (next, r) in (keep..).zip(rank.iter_mut().filter(|r| **r == usize::MAX)) {
                *r = next;
            }
            restore.push(rank);
        }
        Ok(Self {
            len,
            keep,
            kept,
            restore,
        })
    }

    /// Number of samples.
    pub fn batch(&self) -> usize {
        self.kept.len()
    }

    /// Patches per sample L.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a masking covers at least one patch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Patches kept per sample.
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// The kept patches of sample `i`, in the order the encoder sees them.
    pub fn kept(&self, i: usize) -> &[usize] {
        &self.kept[i]
    }

    /// Whether patch `j` of sample `i` is removed (the loss is taken on those).
    pub fn is_masked(&self, i: usize, j: usize) -> bool {
        self.restore[i][j] >= self.keep
    }

    /// The position of patch `j` of sample `i` among the kept ones, if kept.
    pub(crate) fn kept_rank(&self, i: usize, j: usize) -> Option<usize> {
        let r = self.restore[i][j];
        (r < self.keep).then_some(r)
    }

    /// The reference's binary mask (batch × L): 1 for a removed patch, 0 for a kept one.
    pub fn mask(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.batch(), self.len), |(i, j)| {
            if self.is_masked(i, j) { 1.0 } else { 0.0 }
        })
    }
}

/// The fixed 2-D sine-cosine position embedding of a `grid × grid` patch grid (MAE's
/// `get_2d_sincos_pos_embed`), `(grid² + 1) × dim` with a zero first row for the class token.
/// For patch t = i·grid + j (row i, column j) and ω_k = 10000^(−k/(dim/4)), k < dim/4:
///
/// `[sin(j·ω), cos(j·ω), sin(i·ω), cos(i·ω)]` (each block dim/4 long; the reference puts the
/// column coordinate first). `dim` must be a multiple of 4.
///
/// ```
/// let e = mcr2::crate_mae::sincos_position_embedding(8, 2)?;
/// assert_eq!(e.dim(), (5, 8));
/// // patch 3 is row 1, column 1: sin(1·ω₀) = sin 1 in the first and the fifth entries
/// assert!((e[[4, 0]] - 1f64.sin()).abs() < 1e-15 && (e[[4, 4]] - 1f64.sin()).abs() < 1e-15);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn sincos_position_embedding(dim: usize, grid: usize) -> Result<Array2<f64>> {
    if dim == 0 || dim % 4 != 0 {
        return Err(Error::InvalidParameter {
            name: "position embedding dim",
            value: dim.to_string(),
            reason: "must be a positive multiple of 4",
        });
    }
    crate::validate::elements_of::<f64>("position embedding", &[grid, grid, dim])?;
    let q = dim / 4;
    let omega: Vec<f64> = (0..q)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / q as f64))
        .collect();
    let mut e = Array2::<f64>::zeros((grid * grid + 1, dim));
    for i in 0..grid {
        for j in 0..grid {
            let mut row = e.row_mut(1 + i * grid + j);
            for (k, w) in omega.iter().enumerate() {
                row[k] = (j as f64 * w).sin();
                row[q + k] = (j as f64 * w).cos();
                row[2 * q + k] = (i as f64 * w).sin();
                row[3 * q + k] = (i as f64 * w).cos();
            }
        }
    }
    Ok(e)
}
