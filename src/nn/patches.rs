//! Images to patch rows, and the class token with the position embedding: the input side
//! shared by the image models.

use ndarray::{Array1, Array2, ArrayRef4, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::workspace::Scratch;
use crate::{Error, Float, Result};

/// The order of the values of a patch row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchOrder {
    /// `(p1 p2 c)`: the channel runs fastest (CRATE's `Rearrange`).
    PixelsThenChannel,
    /// `(c p1 p2)`: the layout of a convolution kernel `dim × c × p × p` (CRATE-α's and
    /// MAE's convolutional patch embedding).
    ChannelThenPixels,
}

/// Checks a batch of images (b × channels × height × width) and cuts it into patch rows
/// (b·patches × channels·patch², patches in row-major grid order); returns them and the
/// patches per image. Height and width must be multiples of `patch`, with at most
/// `max_patches` patches per image.
pub(crate) fn image_patches<T: Float>(
    images: &ArrayRef4<T>,
    channels: usize,
    patch: usize,
    max_patches: usize,
    order: PatchOrder,
) -> Result<(Scratch<T>, usize)> {
    let (b, c, h, w) = images.dim();
    let ps = patch;
    if b == 0 || h == 0 || w == 0 {
        return Err(Error::Empty {
            what: "images",
            rows: b,
            cols: c * h * w,
        });
    }
    if c != channels {
        return Err(Error::ShapeMismatch {
            what: "images",
            expected: format!("{channels} channels"),
            got: format!("{c} channels"),
        });
    }
    if h % ps != 0 || w % ps != 0 {
        return Err(Error::ShapeMismatch {
            what: "images",
            expected: format!("height and width multiples of the patch size {ps}"),
            got: format!("{h} × {w}"),
        });
    }
    let patches = (h / ps) * (w / ps);
    if patches > max_patches {
        return Err(Error::ShapeMismatch {
            what: "images",
            expected: format!("at most {max_patches} patches (the position embedding's size)"),
            got: format!("{patches} patches ({h} × {w})"),
        });
    }
    if let Some(pos) = images.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "images",
            row: pos / (c * h * w),
            col: pos % (c * h * w),
        });
    }
    let pd = c * ps * ps;
    let gw = w / ps;
    let mut x = crate::workspace::take::<T>(b * patches, pd);
    for (r, mut row) in x.rows_mut().into_iter().enumerate() {
        let (img, pi) = (r / patches, r % patches);
        let (hi, wi) = (pi / gw, pi % gw);
        let row = row.as_slice_mut().expect("standard layout");
        for p1 in 0..ps {
            for p2 in 0..ps {
                for ch in 0..c {
                    let at = match order {
                        PatchOrder::PixelsThenChannel => (p1 * ps + p2) * c + ch,
                        PatchOrder::ChannelThenPixels => (ch * ps + p1) * ps + p2,
                    };
                    row[at] = images[(img, ch, hi * ps + p1, wi * ps + p2)];
                }
            }
        }
    }
    Ok((x, patches))
}

/// The tokens of `b` images: for each, the class token then its `patches` embedded patches
/// (rows of `emb`), plus the position embedding's first patches + 1 rows. Returns the
/// tokens (b·(patches + 1) × dim) and the tokens per image.
pub(crate) fn with_class_token<T: Float>(
    emb: ArrayView2<T>,
    cls: &Array1<T>,
    pos: &Array2<T>,
    b: usize,
    patches: usize,
) -> (Array2<T>, usize) {
    let n = patches + 1;
    let mut tokens = Array2::<T>::zeros((b * n, cls.len()));
    for img in 0..b {
        for t in 0..n {
            let mut row = tokens.row_mut(img * n + t);
            if t == 0 {
                row.assign(cls);
            } else {
                row.assign(&emb.row(img * patches + t - 1));
            }
            row += &pos.row(t);
        }
    }
    (tokens, n)
}

/// The backward of [`with_class_token`]: adds the tokens' gradient `dt` (b·n × dim) into
/// the class token's (`g_cls`) and the position embedding's (`g_pos`, its first n rows)
/// gradients, and returns the embedded patches' gradient (b·(n − 1) × dim).
pub(crate) fn with_class_token_backward<T: Float>(
    dt: ArrayView2<T>,
    b: usize,
    n: usize,
    mut g_cls: ArrayViewMut1<T>,
    mut g_pos: ArrayViewMut2<T>,
) -> Array2<T> {
    let patches = n - 1;
    let mut demb = Array2::<T>::zeros((b * patches, dt.ncols()));
    for img in 0..b {
        g_cls += &dt.row(img * n);
        for t in 0..n {
            let mut row = g_pos.row_mut(t);
            row += &dt.row(img * n + t);
            if t > 0 {
                demb.row_mut(img * patches + t - 1)
                    .assign(&dt.row(img * n + t));
            }
        }
    }
    demb
}
