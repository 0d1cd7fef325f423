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

/// The class tokens (b × dim) of tokens laid out as [`with_class_token`] makes them:
/// row 0 of every sequence of `n`.
pub(crate) fn class_tokens<T: Float>(z: ArrayView2<T>, n: usize) -> Array2<T> {
    let rows: Vec<usize> = (0..z.nrows() / n).map(|i| i * n).collect();
    z.select(ndarray::Axis(0), &rows)
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

/// The parameters of a convolutional patch embedding kept as a `Linear` layer (its weight
/// dim × channels·p², in `(c p1 p2)` order): the kernel under `{prefix}weight` with its
/// reference shape `shape` (dim × channels × p × p), the bias under `{prefix}bias`.
pub(crate) fn conv_parameters<'a, T: Float>(
    linear: &'a super::Linear<T>,
    prefix: &str,
    shape: (usize, usize, usize, usize),
) -> Vec<(String, ndarray::ArrayViewD<'a, T>)> {
    let kernel = linear.weight().view().into_shape_with_order(shape);
    vec![
        (
            format!("{prefix}weight"),
            kernel.expect("dim × patch_dim").into_dyn(),
        ),
        (
            format!("{prefix}bias"),
            linear.bias().expect("with bias").view().into_dyn(),
        ),
    ]
}

/// The backward of a convolutional patch embedding (see [`conv_parameters`]): adds the
/// kernel's gradient (in its 4-D shape) and the bias's into `grads` from the embedded
/// patches' gradient `de`.
pub(crate) fn conv_backward<T: Float>(
    linear: &super::Linear<T>,
    cache: &super::LinearCache<T>,
    de: ArrayView2<T>,
    grads: &mut [ndarray::ArrayD<T>],
) -> Result<()> {
    use super::Trainable;
    let shape = grads[0].raw_dim();
    let mut flat = vec![
        grads[0]
            .view()
            .into_shape_with_order(linear.weight().raw_dim())
            .expect("dim × patch_dim")
            .to_owned()
            .into_dyn(),
        grads[1].clone(),
    ];
    linear.backward(cache, de, &mut flat)?;
    grads[1] = flat.pop().expect("bias");
    grads[0] = flat
        .pop()
        .expect("kernel")
        .into_shape_with_order(shape)
        .expect("same size");
    Ok(())
}

/// Passes a convolutional patch embedding's kernel (in its 4-D reference shape) and bias to
/// `update` under `{prefix}weight` and `{prefix}bias`.
pub(crate) fn conv_update<T: Float>(
    linear: &mut super::Linear<T>,
    prefix: &str,
    shape: (usize, usize, usize, usize),
    update: &mut dyn FnMut(&str, ndarray::ArrayViewMutD<'_, T>),
) -> Result<()> {
    use super::Trainable;
    linear.update_parameters(&mut |name, p| {
        let full = format!("{prefix}{name}");
        if name == "weight" {
            let kernel = p.into_shape_with_order(shape).expect("dim × patch_dim");
            update(&full, kernel.into_dyn());
        } else {
            update(&full, p);
        }
    })
}

/// Passes a token or embedding table (the class or mask token, a position embedding) to
/// `update` under `name` with its reference shape `shape` (e.g. 1 × 1 × dim), then errors if
/// it is no longer finite.
pub(crate) fn update_embedding<T: Float, D: ndarray::Dimension>(
    update: &mut dyn FnMut(&str, ndarray::ArrayViewMutD<'_, T>),
    name: &str,
    a: &mut ndarray::Array<T, D>,
    shape: &[usize],
) -> Result<()> {
    let view = a
        .view_mut()
        .into_shape_with_order(ndarray::IxDyn(shape))
        .expect("the table's reference shape");
    update(name, view);
    if a.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::InvalidWeights {
            name: name.into(),
            reason: "not finite after the update".into(),
        })
    }
}
