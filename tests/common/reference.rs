//! The reference models' building blocks written from their equations as loops, in the
//! reference layout (batch × tokens × dim), for the tests that check a whole model against
//! an independent forward.

use ndarray::{Array3, ArrayD};

/// `nn.LayerNorm` over the last axis (biased variance).
pub fn layer_norm(x: &Array3<f64>, w: &ArrayD<f64>, b: &ArrayD<f64>, eps: f64) -> Array3<f64> {
    let (bs, n, d) = x.dim();
    let mut y = Array3::zeros((bs, n, d));
    for i in 0..bs {
        for t in 0..n {
            let mean = (0..d).map(|k| x[[i, t, k]]).sum::<f64>() / d as f64;
            let var = (0..d).map(|k| (x[[i, t, k]] - mean).powi(2)).sum::<f64>() / d as f64;
            for k in 0..d {
                y[[i, t, k]] = (x[[i, t, k]] - mean) / (var + eps).sqrt() * w[[k]] + b[[k]];
            }
        }
    }
    y
}

/// `F.linear(x, W, b)` = `x Wᵀ + b` over the last axis (W: out × in).
pub fn linear(x: &Array3<f64>, w: &ArrayD<f64>, b: Option<&ArrayD<f64>>) -> Array3<f64> {
    let (bs, n, d) = x.dim();
    let o = w.shape()[0];
    Array3::from_shape_fn((bs, n, o), |(i, t, r)| {
        (0..d).map(|k| x[[i, t, k]] * w[[r, k]]).sum::<f64>() + b.map_or(0.0, |b| b[[r]])
    })
}

/// The CRATE attention: `w = qkv(x)`, per head `softmax(w wᵀ/√p) w`, then `to_out`.
pub fn attention(
    x: &Array3<f64>,
    qkv: &ArrayD<f64>,
    out: &ArrayD<f64>,
    out_bias: Option<&ArrayD<f64>>,
    heads: usize,
) -> Array3<f64> {
    let w = linear(x, qkv, None);
    let (bs, n, inner) = w.dim();
    let p = inner / heads;
    let scale = (p as f64).powf(-0.5);
    let mut o = Array3::zeros((bs, n, inner));
    for i in 0..bs {
        for h in 0..heads {
            for q in 0..n {
                let dots: Vec<f64> = (0..n)
                    .map(|k| {
                        (0..p)
                            .map(|c| w[[i, q, h * p + c]] * w[[i, k, h * p + c]])
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let top = dots.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = dots.iter().map(|v| (v - top).exp()).collect();
                let s: f64 = e.iter().sum();
                for c in 0..p {
                    o[[i, q, h * p + c]] = (0..n).map(|k| e[k] / s * w[[i, k, h * p + c]]).sum();
                }
            }
        }
    }
    linear(&o, out, out_bias)
}
