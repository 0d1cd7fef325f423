//! Central finite differences for every layer's backward (f64, relative 1e-6), on random
//! small shapes.

use mcr2::Precision;
use mcr2::crate_layer::{CrateBlock, Ista, Mssa};
use mcr2::ndarray::{Array1, Array2};
use mcr2::nn::{LayerNorm, Linear, Trainable};
use mcr2::nn::{Mlp, MlpConfig};
use mcr2::rand::{Rng, SeedableRng, rngs::StdRng};
use mcr2::tost::{CausalTssa, CausalTssaConfig, ToStBlock, ToStBlockConfig, Tssa};
use proptest::prelude::*;

const H: f64 = 1e-5;

pub(super) fn random(rng: &mut StdRng, rows: usize, cols: usize, scale: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || scale * (2.0 * rng.random::<f64>() - 1.0))
}

pub(super) fn vector(rng: &mut StdRng, len: usize, center: f64, scale: f64) -> Array1<f64> {
    Array1::from_shape_simple_fn(len, || center + scale * (2.0 * rng.random::<f64>() - 1.0))
}

/// `L = Σ y ⊙ dy`.
pub(super) fn loss<L: Trainable<f64>>(
    layer: &L,
    x: &Array2<f64>,
    n: usize,
    dy: &Array2<f64>,
) -> f64 {
    let (y, _) = layer.forward_train(x.view(), n).unwrap();
    (&y * dy).sum()
}

/// `layer` with `h` added to entry `j` of parameter `p`.
pub(super) fn nudged<L: Trainable<f64> + Clone>(layer: &L, p: usize, j: usize, h: f64) -> L {
    let mut out = layer.clone();
    let mut i = 0;
    out.update_parameters(&mut |_, mut v| {
        if i == p {
            *v.iter_mut().nth(j).unwrap() += h;
        }
        i += 1;
    })
    .unwrap();
    out
}

/// The five-point central difference of `f` at 0 (truncation error O(H⁴)), or `None` near a
/// kink (the ReLU of ISTA switching within 3·H of 0).
///
/// For a smooth `f` the gap between the one-sided slopes over a step `k·H`,
/// `gₖ = (f(kH) − 2f(0) + f(−kH))/(kH) = k·H·f''(0) + O(H³)`, grows linearly with `k`. A change
/// of slope `s` at a distance `d < kH` adds `s·(kH − d)/(kH)` to `gₖ`. The zeros in `d` of
/// `g₂ − 2g₁` and `g₃ − 3g₁` differ (2H/3 and 3H/4), so wherever in `[−2H, 2H]` the kink lies
/// (beyond, it does not touch the estimate) the larger of the two is at least `s/12.5` and at
/// least the kink's error in the estimate: a kink that passes moves it by less than the
/// tolerance.
pub(super) fn central(f: impl Fn(f64) -> f64) -> Option<f64> {
    let zero = f(0.0);
    let [(plus, minus), (plus2, minus2), (plus3, minus3)] =
        [1.0, 2.0, 3.0].map(|k| (f(k * H), f(-k * H)));
    let gap = |plus: f64, minus: f64, k: f64| (plus - 2.0 * zero + minus) / (k * H);
    let g1 = gap(plus, minus, 1.0);
    // rounding: each value of `f` is off by about 10⁻¹⁵·(1 + |f|), each gap by that over H
    let tolerance = 1e-8 * (1.0 + zero.abs());
    let smooth = (gap(plus2, minus2, 2.0) - 2.0 * g1).abs() <= tolerance
        && (gap(plus3, minus3, 3.0) - 3.0 * g1).abs() <= tolerance;
    smooth.then(|| (8.0 * (plus - minus) - (plus2 - minus2)) / (12.0 * H))
}

/// The largest relative error (`|fd − analytic| / max |analytic|`, per tensor) over the input
/// and every parameter.
pub(super) fn worst_error<L: Trainable<f64> + Clone>(
    layer: &L,
    x: &Array2<f64>,
    n: usize,
    seed: u64,
) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let (y, cache) = layer.forward_train(x.view(), n).unwrap();
    let dy = random(&mut rng, y.nrows(), y.ncols(), 1.0);
    let mut grads = crate::common::zero_gradients(layer);
    let dx = layer.backward(&cache, dy.view(), &mut grads).unwrap();
    // a central difference of L carries a rounding error of about u·|L|/H ≈ 10⁻¹¹·|L|:
    // differences below 10⁻⁹·(1 + |L|) are that noise (it matters only where a gradient is
    // nearly zero, as for a LayerNorm over 2 or 3 features), the rest is measured relative to
    // the tensor's largest gradient entry
    let noise = 1e-9 * (1.0 + loss(layer, x, n, &dy).abs());
    let relative = |pairs: Vec<(f64, Option<f64>)>| {
        let scale = pairs.iter().fold(1e-12f64, |m, (a, _)| m.max(a.abs()));
        pairs
            .iter()
            .filter_map(|(a, fd)| fd.map(|fd| ((a - fd).abs() - noise).max(0.0) / scale))
            .fold(0.0, f64::max)
    };
    let mut worst = relative(
        (0..x.len())
            .map(|j| {
                let fd = central(|h| {
                    let mut xp = x.clone();
                    *xp.iter_mut().nth(j).unwrap() += h;
                    loss(layer, &xp, n, &dy)
                });
                (*dx.iter().nth(j).unwrap(), fd)
            })
            .collect(),
    );
    for (p, g) in grads.iter().enumerate() {
        let e = relative(
            (0..g.len())
                .map(|j| {
                    let fd = central(|h| loss(&nudged(layer, p, j, h), x, n, &dy));
                    (*g.iter().nth(j).unwrap(), fd)
                })
                .collect(),
        );
        worst = worst.max(e);
    }
    worst
}

pub(super) fn layer_norm(rng: &mut StdRng, dim: usize) -> LayerNorm<f64> {
    LayerNorm::from_parts(vector(rng, dim, 1.0, 0.3), vector(rng, dim, 0.0, 0.3), 1e-5).unwrap()
}

fn mssa(rng: &mut StdRng, dim: usize, heads: usize, p: usize) -> Mssa<f64> {
    let qkv = random(rng, heads * p, dim, 0.6);
    let out = (heads != 1 || p != dim)
        .then(|| (random(rng, dim, heads * p, 0.5), vector(rng, dim, 0.0, 0.3)));
    Mssa::from_parts(qkv, heads, out).unwrap()
}

fn white_box_mssa(rng: &mut StdRng, dim: usize, heads: usize, p: usize) -> Mssa<f64> {
    let bases: Vec<Array2<f64>> = (0..heads).map(|_| random(rng, dim, p, 0.6)).collect();
    Mssa::from_subspaces(&bases, Precision::from_eps_sq(0.5).unwrap(), 0.3).unwrap()
}

fn ista(rng: &mut StdRng, dim: usize) -> Ista<f64> {
    Ista::from_parts(random(rng, dim, dim, 0.5), 0.1, 0.1).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn linear(seed in 0u64..1000, rows in 1usize..5, i in 1usize..5, o in 1usize..5, bias: bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let b = bias.then(|| vector(&mut rng, o, 0.0, 1.0));
        let layer = Linear::from_parts(random(&mut rng, o, i, 1.0), b).unwrap();
        let x = random(&mut rng, rows, i, 1.0);
        prop_assert!(worst_error(&layer, &x, rows, seed) < 1e-6);
    }

    /// From 3 features: over 2 the normalized row is ±(1, −1) whatever x is, so the gradient
    /// is only the eps term and both sides are rounding error relative to it.
    #[test]
    fn layer_norm_backward(seed in 0u64..1000, rows in 1usize..5, dim in 3usize..7) {
        let mut rng = StdRng::seed_from_u64(seed);
        let layer = layer_norm(&mut rng, dim);
        let x = random(&mut rng, rows, dim, 2.0);
        prop_assert!(worst_error(&layer, &x, rows, seed) < 1e-6);
    }

    #[test]
    fn ista_backward(seed in 0u64..1000, rows in 1usize..5, dim in 1usize..6) {
        let mut rng = StdRng::seed_from_u64(seed);
        let layer = ista(&mut rng, dim);
        let x = random(&mut rng, rows, dim, 1.0);
        prop_assert!(worst_error(&layer, &x, rows, seed) < 1e-6);
    }

    #[test]
    fn mssa_backward(seed in 0u64..1000, b in 1usize..3, n in 1usize..5, heads in 1usize..3,
                     p in 1usize..4, dim in 2usize..6, white_box: bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let layer = if white_box {
            white_box_mssa(&mut rng, dim, heads, p)
        } else {
            mssa(&mut rng, dim, heads, p)
        };
        let x = random(&mut rng, b * n, dim, 1.0);
        prop_assert!(worst_error(&layer, &x, n, seed) < 1e-6);
    }

    #[test]
    fn mssa_without_projection(seed in 0u64..1000, n in 1usize..5, dim in 1usize..5) {
        let mut rng = StdRng::seed_from_u64(seed);
        let layer = mssa(&mut rng, dim, 1, dim);
        let x = random(&mut rng, 2 * n, dim, 1.0);
        prop_assert!(worst_error(&layer, &x, n, seed) < 1e-6);
    }

    #[test]
    fn crate_block(seed in 0u64..1000, b in 1usize..3, n in 1usize..4, heads in 1usize..3,
                   p in 1usize..3, dim in 3usize..6, white_box: bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let block = if white_box {
            CrateBlock::white_box(white_box_mssa(&mut rng, dim, heads, p), ista(&mut rng, dim))
        } else {
            let ln1 = layer_norm(&mut rng, dim);
            let m = mssa(&mut rng, dim, heads, p);
            let ln2 = layer_norm(&mut rng, dim);
            CrateBlock::from_parts(ln1, m, ln2, ista(&mut rng, dim))
        }
        .unwrap();
        let x = random(&mut rng, b * n, dim, 1.0);
        prop_assert!(worst_error(&block, &x, n, seed) < 1e-6);
    }

    #[test]
    fn tssa_backward(seed in 0u64..1000, b in 1usize..3, n in 1usize..5, heads in 1usize..3,
                     p in 1usize..4, bias: bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let dim = heads * p;
        let qkv = Linear::from_parts(
            random(&mut rng, dim, dim, 0.8),
            bias.then(|| vector(&mut rng, dim, 0.0, 0.3)),
        )
        .unwrap();
        let out = Linear::from_parts(random(&mut rng, dim, dim, 0.8), Some(vector(&mut rng, dim, 0.0, 0.3))).unwrap();
        let layer = Tssa::from_parts(qkv, vector(&mut rng, heads, 1.0, 0.5), out).unwrap();
        let x = random(&mut rng, b * n, dim, 1.0);
        // the training forward computes what the inference forward does, sequence by sequence
        let (y, _) = layer.forward_train(x.view(), n).unwrap();
        let plain = layer.forward_batch(&x.to_shape((b, n, dim)).unwrap()).unwrap();
        let plain = plain.to_shape((b * n, dim)).unwrap();
        prop_assert!(y.iter().zip(plain.iter()).all(|(a, c)| (a - c).abs() <= 1e-12 * (1.0 + c.abs())));
        prop_assert!(worst_error(&layer, &x, n, seed) < 1e-6);
    }

    #[test]
    fn mlp_backward(seed in 0u64..1000, rows in 1usize..5, dim in 1usize..4, hidden in 1usize..6) {
        let mut rng = StdRng::seed_from_u64(seed);
        let layer = randomized(Mlp::new(&MlpConfig { dim, hidden }, &mut rng).unwrap(), &mut rng);
        let x = random(&mut rng, rows, dim, 1.5);
        prop_assert!(worst_error(&layer, &x, rows, seed) < 1e-6);
    }

    #[test]
    fn tost_block_backward(seed in 0u64..1000, b in 1usize..3, n in 1usize..4, heads in 1usize..3,
                           p in 2usize..4) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut config = ToStBlockConfig::new(heads * p, heads);
        config.mlp_ratio = 2;
        let block = randomized(ToStBlock::new(&config, &mut rng).unwrap(), &mut rng);
        let x = random(&mut rng, b * n, heads * p, 1.0);
        prop_assert!(worst_error(&block, &x, n, seed) < 1e-6);
    }

    #[test]
    fn causal_tssa_backward(seed in 0u64..1000, b in 1usize..3, n in 1usize..5,
                            heads in 1usize..3, p in 1usize..4) {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = CausalTssaConfig { dim: heads * p, heads, block_size: 6 };
        let layer = randomized(CausalTssa::new(&config, &mut rng).unwrap(), &mut rng);
        let x = random(&mut rng, b * n, heads * p, 1.0);
        let (y, _) = layer.forward_train(x.view(), n).unwrap();
        let plain = layer.forward_batch(&x.to_shape((b, n, heads * p)).unwrap()).unwrap();
        let plain = plain.to_shape((b * n, heads * p)).unwrap();
        prop_assert!(y.iter().zip(plain.iter()).all(|(a, c)| (a - c).abs() <= 1e-12 * (1.0 + c.abs())));
        prop_assert!(worst_error(&layer, &x, n, seed) < 1e-6);
    }
}

/// Sequences longer than one block of the sums over tokens (256 rows): TSSA's statistics and
/// their backward, and the ToST block's LayerScale sums, add partial sums of blocks.
#[test]
fn tssa_and_tost_block_backward_over_several_blocks_of_tokens() {
    let mut rng = StdRng::seed_from_u64(11);
    let config = ToStBlockConfig {
        mlp_ratio: 2,
        ..ToStBlockConfig::new(4, 2)
    };
    let block = randomized(ToStBlock::new(&config, &mut rng).unwrap(), &mut rng);
    let tssa = randomized(Tssa::new(&config.tssa(), &mut rng).unwrap(), &mut rng);
    let x = random(&mut rng, 2 * 260, 4, 1.0);
    let e = worst_error(&tssa, &x, 260, 1);
    assert!(e < 1e-6, "TSSA {e:e}");
    let e = worst_error(&block, &x, 260, 2);
    assert!(e < 1e-6, "ToST block {e:e}");
}

/// `layer` with every parameter moved by up to ±0.3 (so that LayerNorm affines, biases and
/// LayerScales are not at their initial constants).
fn randomized<L: Trainable<f64>>(mut layer: L, rng: &mut StdRng) -> L {
    layer
        .update_parameters(&mut |_, mut p| {
            p.mapv_inplace(|v| v + 0.3 * (2.0 * rng.random::<f64>() - 1.0))
        })
        .unwrap();
    layer
}

/// Five-point differences of `loss` for every parameter of `model` (buffers shaped like
/// `buffers`); NaN at a ReLU kink, where the differences are meaningless.
pub(super) fn model_differences<M: mcr2::train::Learnable<f64> + Clone>(
    model: &M,
    buffers: Vec<ndarray::ArrayD<f64>>,
    loss: impl Fn(&M) -> f64,
) -> Vec<ndarray::ArrayD<f64>> {
    let mut grads = buffers;
    for (p, g) in grads.iter_mut().enumerate() {
        for j in 0..g.len() {
            let at = |step: f64| {
                let mut m = model.clone();
                let mut i = 0;
                m.visit_parameters(&mut |_, mut v| {
                    if i == p {
                        *v.iter_mut().nth(j).unwrap() += step;
                    }
                    i += 1;
                })
                .unwrap();
                loss(&m)
            };
            *g.iter_mut().nth(j).unwrap() = central(at).unwrap_or(f64::NAN);
        }
    }
    grads
}

/// The largest relative error of `analytic` against `fd` (entries where `fd` is NaN skipped).
pub(super) fn relative_to_differences(
    analytic: &ndarray::ArrayD<f64>,
    fd: &ndarray::ArrayD<f64>,
) -> f64 {
    let scale = fd
        .iter()
        .filter(|v| !v.is_nan())
        .fold(1e-12f64, |m, v| m.max(v.abs()));
    analytic
        .iter()
        .zip(fd)
        .filter(|(_, b)| !b.is_nan())
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// `fd` with its NaN entries (kinks) replaced by the analytic values.
pub(super) fn or_analytic(
    fd: &ndarray::ArrayD<f64>,
    analytic: &ndarray::ArrayD<f64>,
) -> ndarray::ArrayD<f64> {
    let mut out = fd.clone();
    out.zip_mut_with(analytic, |o, &g| {
        if o.is_nan() {
            *o = g;
        }
    });
    out
}
