//! ToST: TSSA against an independent computation of the reference formulas, the causal
//! variant (against a direct computation, and causality), the book form's gradient, blocks,
//! weight files and errors.

use mcr2::nn::Checkpoint;
use mcr2::nn::gelu;
use mcr2::nn::{LayerNorm, LayerNormConfig, Linear};
use mcr2::tost::{
    CausalTssa, CausalTssaConfig, ToStBlock, ToStBlockConfig, ToStEncoder, ToStEncoderConfig, Tssa,
    TssaConfig, VariationalCompression,
};
use mcr2::{Error, Precision};
use ndarray::{Array1, Array2, Array3, Array4, Axis};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// Hand-set weights: smooth deterministic patterns, no random generator involved.
struct Weights {
    q: Array2<f64>,
    qb: Array1<f64>,
    temp: Array1<f64>,
    o: Array2<f64>,
    ob: Array1<f64>,
}

fn weights(dim: usize, heads: usize) -> Weights {
    Weights {
        q: Array2::from_shape_fn((dim, dim), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f64 / 11.0 - 0.45
        }),
        qb: Array1::from_shape_fn(dim, |i| 0.05 * i as f64 - 0.1),
        temp: Array1::from_shape_fn(heads, |k| 0.5 + 0.75 * k as f64),
        o: Array2::from_shape_fn((dim, dim), |(i, j)| {
            ((i * 5 + j * 2) % 13) as f64 / 13.0 - 0.5
        }),
        ob: Array1::from_shape_fn(dim, |i| 0.02 * i as f64),
    }
}

fn hand_set(dim: usize, heads: usize) -> Tssa<f64> {
    let w = weights(dim, heads);
    tssa_from_weights(heads, w.q, Some(w.qb), w.temp, w.o, w.ob).unwrap()
}

fn tokens(b: usize, n: usize, d: usize) -> Array3<f64> {
    Array3::from_shape_fn((b, n, d), |(s, i, c)| {
        ((s * 17 + i * 5 + c * 3) % 19) as f64 / 9.5 - 1.0
    })
}

/// The reference `AttentionTSSA.forward`, written in its own (b, h, n, p) layout.
fn reference_tssa(x: &Array3<f64>, heads: usize) -> Array3<f64> {
    let (b, n, dim) = x.dim();
    let p = dim / heads;
    let Weights { q, qb, temp, o, ob } = weights(dim, heads);
    // w = qkv(x) → (b, h, n, p)
    let mut w = Array4::<f64>::zeros((b, heads, n, p));
    for s in 0..b {
        for i in 0..n {
            for out in 0..dim {
                let mut v = qb[out];
                for inp in 0..dim {
                    v += x[(s, i, inp)] * q[(out, inp)];
                }
                w[(s, out / p, i, out % p)] = v;
            }
        }
    }
    let mut y = Array3::<f64>::zeros((b, n, dim));
    for s in 0..b {
        // F.normalize(w, dim=-2): each (head, coordinate) column over the tokens
        let mut wn = w.index_axis(Axis(0), s).to_owned();
        for k in 0..heads {
            for c in 0..p {
                let norm = (0..n)
                    .map(|i| w[(s, k, i, c)].powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-12);
                for i in 0..n {
                    wn[(k, i, c)] = w[(s, k, i, c)] / norm;
                }
            }
        }
        // Π = softmax over heads of temp_k Σ_c wn²
        let mut pi = Array2::<f64>::zeros((heads, n));
        for i in 0..n {
            let logits: Vec<f64> = (0..heads)
                .map(|k| temp[k] * (0..p).map(|c| wn[(k, i, c)].powi(2)).sum::<f64>())
                .collect();
            let z: f64 = logits.iter().map(|l| l.exp()).sum();
            for k in 0..heads {
                pi[(k, i)] = logits[k].exp() / z;
            }
        }
        // dots = (Π / (ΣΠ + 1e-8)) · w², attn = 1/(1 + dots), out = −Π w attn
        let mut out = Array2::<f64>::zeros((n, dim));
        for k in 0..heads {
            let mass: f64 = pi.row(k).sum() + 1e-8;
            for c in 0..p {
                let dots: f64 = (0..n)
                    .map(|i| pi[(k, i)] / mass * w[(s, k, i, c)].powi(2))
                    .sum();
                let attn = 1.0 / (1.0 + dots);
                for i in 0..n {
                    out[(i, k * p + c)] = -pi[(k, i)] * w[(s, k, i, c)] * attn;
                }
            }
        }
        for i in 0..n {
            for r in 0..dim {
                let mut v = ob[r];
                for c in 0..dim {
                    v += out[(i, c)] * o[(r, c)];
                }
                y[(s, i, r)] = v;
            }
        }
    }
    y
}

#[test]
fn tssa_matches_the_reference_formulas() {
    for &(b, n, dim, heads) in &[
        (2usize, 7usize, 12usize, 3usize),
        (1, 30, 8, 2),
        (3, 5, 6, 1),
        // longer than one block of the sums over tokens (256 rows)
        (2, 600, 12, 3),
    ] {
        let x = tokens(b, n, dim);
        let want = reference_tssa(&x, heads);
        let t = hand_set(dim, heads);
        let got = t.forward_batch(&x).unwrap();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let e64 = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(e64 < 1e-12, "f64 {e64:e}");
        // single-sequence API agrees
        let one = t.forward(&x.index_axis(Axis(0), 0)).unwrap();
        assert_eq!(one, got.index_axis(Axis(0), 0));
        // f32
        let Weights { q, qb, temp, o, ob } = weights(dim, heads);
        let t32 = tssa_from_weights(
            heads,
            q.mapv(|v| v as f32),
            Some(qb.mapv(|v| v as f32)),
            temp.mapv(|v| v as f32),
            o.mapv(|v| v as f32),
            ob.mapv(|v| v as f32),
        )
        .unwrap();
        let got32 = t32.forward_batch(&x.mapv(|v| v as f32)).unwrap();
        let e32 = got32
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()))
            / scale;
        assert!(e32 < 1e-5, "f32 {e32:e}");
        println!("TSSA b={b} n={n} dim={dim} heads={heads}: f64 {e64:.1e}, f32 {e32:.1e}");
        // the membership is a distribution over heads
        let pi = t.membership(&x.index_axis(Axis(0), 0)).unwrap();
        assert!(pi.rows().into_iter().all(|r| (r.sum() - 1.0).abs() < 1e-12));
    }
}

/// The causal variant written directly: for token i, every running sum recomputed over
/// tokens 0..=i.
fn reference_causal(x: &Array2<f64>, heads: usize, denom: &Array2<f64>) -> Array2<f64> {
    let (n, dim) = x.dim();
    let p = dim / heads;
    let Weights { q, qb, temp, o, ob } = weights(dim, heads);
    let w = x.dot(&q.t()) + &qb;
    let mut pis = Array2::<f64>::zeros((n, heads));
    for i in 0..n {
        let logits: Vec<f64> = (0..heads)
            .map(|k| {
                temp[k]
                    * (k * p..(k + 1) * p)
                        .map(|c| {
                            let s: f64 = (0..=i).map(|t| w[(t, c)].powi(2)).sum();
                            w[(i, c)].powi(2) / s.max(1e-12) + denom[(k, i)]
                        })
                        .sum::<f64>()
            })
            .collect();
        let z: f64 = logits.iter().map(|l| l.exp()).sum();
        for k in 0..heads {
            pis[(i, k)] = logits[k].exp() / z;
        }
    }
    let mut out = Array2::<f64>::zeros((n, dim));
    for i in 0..n {
        for c in 0..dim {
            let k = c / p;
            let num: f64 = (0..=i).map(|t| pis[(t, k)] * w[(t, c)].powi(2)).sum();
            let den: f64 = (0..=i).map(|t| pis[(t, k)]).sum::<f64>() + 1e-8;
            out[(i, c)] = -pis[(i, k)] * w[(i, c)] / (1.0 + num / den);
        }
    }
    out.dot(&o.t()) + &ob
}

#[test]
fn causal_tssa_matches_direct_computation_and_is_causal() {
    let (n, dim, heads, block) = (9, 8, 2, 12);
    let denom = Array2::from_shape_fn((heads, block), |(k, i)| 0.1 * k as f64 - 0.02 * i as f64);
    let c = CausalTssa::from_parts(hand_set(dim, heads), denom.clone()).unwrap();
    let x = tokens(1, n, dim).index_axis(Axis(0), 0).to_owned();
    let got = c.forward(&x).unwrap();
    let want = reference_causal(&x, heads, &denom);
    let e = got
        .iter()
        .zip(&want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(e < 1e-12, "{e:e}");
    // changing a later token never changes an earlier output
    let mut rng = StdRng::seed_from_u64(0);
    for later in 1..n {
        let mut x2 = x.clone();
        for v in x2.row_mut(later) {
            *v += rng.sample::<f64, _>(StandardNormal);
        }
        let y2 = c.forward(&x2).unwrap();
        for i in 0..later {
            assert_eq!(
                y2.row(i),
                got.row(i),
                "token {i} changed when token {later} did"
            );
        }
        assert_ne!(y2.row(later), got.row(later));
    }
    // too long for the block size
    assert!(
        c.forward(&tokens(1, block + 1, dim).index_axis(Axis(0), 0))
            .is_err()
    );
    // batch API agrees
    let xb = tokens(2, n, dim);
    let yb = c.forward_batch(&xb).unwrap();
    assert_eq!(
        yb.index_axis(Axis(0), 1),
        c.forward(&xb.index_axis(Axis(0), 1)).unwrap()
    );
}

fn random_bases(d: usize, k: usize, p: usize, rng: &mut StdRng) -> Vec<Array2<f64>> {
    // coordinate blocks rotated by a random orthogonal matrix (Gram–Schmidt)
    let mut q = Array2::<f64>::from_shape_simple_fn((d, d), || rng.sample(StandardNormal));
    for j in 0..d {
        for i in 0..j {
            let proj = q.column(i).dot(&q.column(j));
            let ci = q.column(i).to_owned();
            q.column_mut(j).scaled_add(-proj, &ci);
        }
        let n = q.column(j).dot(&q.column(j)).sqrt();
        q.column_mut(j).mapv_inplace(|v| v / n);
    }
    (0..k)
        .map(|j| {
            q.slice_axis(Axis(1), (j * p..(j + 1) * p).into())
                .to_owned()
        })
        .collect()
}

/// The book form: the gradient (Π fixed) against central finite differences, the TSSA step
/// equal to −τ times it, and a small step decreasing R^var.
#[test]
fn variational_gradient_and_step() {
    let mut rng = StdRng::seed_from_u64(3);
    let (d, k, p, n) = (8, 3, 2, 20);
    let vc = VariationalCompression::new(
        random_bases(d, k, p, &mut rng),
        Precision::from_eps_sq(0.5).unwrap(),
        0.3,
    )
    .unwrap();
    let z = Array2::<f64>::from_shape_simple_fn((n, d), || rng.sample(StandardNormal));
    let pi = vc.membership(&z).unwrap();
    let g = vc.gradient(&z, &pi).unwrap();
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for i in 0..n {
        for c in 0..d {
            let mut zp = z.clone();
            zp[(i, c)] += h;
            let mut zm = z.clone();
            zm[(i, c)] -= h;
            let fd =
                (vc.objective(&zp, &pi).unwrap() - vc.objective(&zm, &pi).unwrap()) / (2.0 * h);
            worst = worst.max((fd - g[(i, c)]).abs());
        }
    }
    let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(worst < 1e-8 * gmax.max(1.0), "FD error {worst:e}");
    let tau = 0.05;
    let step = vc.step(&z, tau).unwrap();
    let e = (&step - &(&z - &(&g * tau)))
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(e < 1e-14);
    let before = vc.objective(&z, &pi).unwrap();
    let after = vc.objective(&step, &pi).unwrap();
    println!(
        "book TSSA: FD gradient error {worst:.1e} (max |∇| {gmax:.2}); R^var {before:.6} → {after:.6} after a step τ = {tau}"
    );
    assert!(after < before);
    assert!(vc.gradient(&z, &Array2::<f64>::zeros((n, k))).is_err());
    assert!(vc.gradient(&z, &Array2::<f64>::ones((n + 1, k))).is_err());
}

#[test]
fn block_is_the_composition_of_its_parts() {
    let config = ToStBlockConfig::new(12, 3);
    let mut rng = StdRng::seed_from_u64(5);
    let block = ToStBlock::<f64>::new(&config, &mut rng).unwrap();
    let x = tokens(1, 6, 12).index_axis(Axis(0), 0).to_owned();
    // pieces through their public APIs (fresh LayerNorms: weight 1, bias 0, ε 1e-6)
    let ln = LayerNorm::<f64>::new(&LayerNormConfig::new(12).with_eps(1e-6)).unwrap();
    let a = block.attention().forward(&ln.forward(&x).unwrap()).unwrap();
    let y = &x + &a;
    let bytes = block.to_safetensors("").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str, r: usize, c: usize| -> Array2<f64> {
        let t = st.tensor(name).unwrap();
        let v: Vec<f64> = t
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Array2::from_shape_vec((r, c), v).unwrap()
    };
    let h = ln
        .forward(&y)
        .unwrap()
        .dot(&get("mlp.fc1.weight", 48, 12).t())
        .mapv(gelu);
    let want = &y + &h.dot(&get("mlp.fc2.weight", 12, 48).t());
    let got = block.forward(&x).unwrap();
    let e = (&got - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(e < 1e-12, "{e:e}");
    // save → load is bit-identical, for a block and an encoder
    let back = ToStBlock::<f64>::from_safetensors(&bytes, &config, "").unwrap();
    assert_eq!(back, block);
    let enc = ToStEncoder::<f32>::new(
        &ToStEncoderConfig {
            depth: 3,
            block: config,
        },
        &mut rng,
    )
    .unwrap();
    let eb = enc.to_safetensors("blocks.").unwrap();
    let enc2 = ToStEncoder::<f32>::from_safetensors(
        &eb,
        &ToStEncoderConfig {
            depth: 3,
            block: config,
        },
        "blocks.",
    )
    .unwrap();
    assert_eq!(enc2, enc);
    let xb = tokens(2, 5, 12).mapv(|v| v as f32);
    assert_eq!(
        enc2.forward_batch(&xb).unwrap(),
        enc.forward_batch(&xb).unwrap()
    );
    // missing tensor, wrong shape
    assert!(matches!(
        ToStEncoder::<f32>::from_safetensors(
            &eb,
            &ToStEncoderConfig {
                depth: 4,
                block: config
            },
            "blocks."
        ),
        Err(Error::InvalidWeights { .. })
    ));
    assert!(matches!(
        ToStBlock::<f64>::from_safetensors(&bytes, &ToStBlockConfig::new(12, 4), ""),
        Err(Error::InvalidWeights { .. })
    ));
    assert!(matches!(
        ToStBlock::<f64>::from_safetensors(&bytes[..bytes.len() - 3], &config, ""),
        Err(Error::MalformedFile(_))
    ));
}

#[test]
fn weight_files_round_trip() {
    let t = hand_set(12, 3);
    let bytes = t.to_safetensors("attn.").unwrap();
    assert_eq!(
        Tssa::<f64>::from_safetensors(
            &bytes,
            &TssaConfig {
                dim: 12,
                heads: 3,
                qkv_bias: true
            },
            "attn."
        )
        .unwrap(),
        t
    );
    assert!(matches!(
        Tssa::<f64>::from_safetensors(
            &bytes,
            &TssaConfig {
                dim: 12,
                heads: 3,
                qkv_bias: true
            },
            ""
        ),
        Err(Error::InvalidWeights { .. })
    ));
    assert!(
        Tssa::<f64>::from_safetensors(
            &bytes,
            &TssaConfig {
                dim: 12,
                heads: 5,
                qkv_bias: true
            },
            "attn."
        )
        .is_err()
    );
    let c = CausalTssa::<f32>::new(
        &CausalTssaConfig {
            dim: 8,
            heads: 2,
            block_size: 16,
        },
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap();
    let cb = c.to_safetensors("h.0.attn.").unwrap();
    assert_eq!(
        CausalTssa::<f32>::from_safetensors(
            &cb,
            &CausalTssaConfig {
                dim: 8,
                heads: 2,
                block_size: 16
            },
            "h.0.attn."
        )
        .unwrap(),
        c
    );
    assert!(
        CausalTssa::<f32>::from_safetensors(
            &cb,
            &CausalTssaConfig {
                dim: 8,
                heads: 2,
                block_size: 17
            },
            "h.0.attn."
        )
        .is_err()
    );
}

#[test]
fn bad_input_is_an_error() {
    let mut rng = StdRng::seed_from_u64(0);
    assert!(
        Tssa::<f64>::new(
            &TssaConfig {
                dim: 10,
                heads: 3,
                qkv_bias: true
            },
            &mut rng
        )
        .is_err(),
        "heads must divide dim"
    );
    assert!(
        Tssa::<f64>::new(
            &TssaConfig {
                dim: 0,
                heads: 1,
                qkv_bias: true
            },
            &mut rng
        )
        .is_err()
    );
    let t = Tssa::<f64>::new(
        &TssaConfig {
            dim: 6,
            heads: 2,
            qkv_bias: true,
        },
        &mut rng,
    )
    .unwrap();
    assert!(matches!(
        t.forward(&Array2::zeros((3, 5))),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        t.forward(&Array2::zeros((0, 6))),
        Err(Error::Empty { .. })
    ));
    let mut bad = Array3::<f64>::zeros((2, 3, 6));
    bad[(1, 2, 3)] = f64::INFINITY;
    assert!(matches!(
        t.forward_batch(&bad),
        Err(Error::NonFinite { .. })
    ));
    assert!(t.forward_batch(&Array3::zeros((0, 3, 6))).is_err());
    let Weights { q, qb, temp, o, ob } = weights(6, 2);
    assert!(
        tssa_from_weights(
            2,
            q.clone(),
            Some(qb.clone()),
            Array1::ones(4),
            o.clone(),
            ob.clone()
        )
        .is_err()
    );
    assert!(
        tssa_from_weights(
            2,
            q.clone(),
            Some(Array1::zeros(5)),
            temp.clone(),
            o.clone(),
            ob.clone()
        )
        .is_err()
    );
    let mut qn = q.clone();
    qn[(0, 0)] = f64::NAN;
    assert!(tssa_from_weights(2, qn, Some(qb), temp, o, ob).is_err());
    assert!(CausalTssa::from_parts(t.clone(), Array2::zeros((3, 4))).is_err());
    assert!(
        ToStBlock::<f64>::new(
            &ToStBlockConfig {
                mlp_ratio: 0,
                ..ToStBlockConfig::new(6, 2)
            },
            &mut rng
        )
        .is_err()
    );
    assert!(
        ToStEncoder::<f64>::new(
            &ToStEncoderConfig {
                depth: 0,
                block: ToStBlockConfig::new(6, 2)
            },
            &mut rng
        )
        .is_err()
    );
    let bases = vec![Array2::<f64>::eye(4)];
    assert!(
        VariationalCompression::new(bases.clone(), Precision::from_eps(1.0).unwrap(), 0.0).is_err()
    );
    assert!(
        VariationalCompression::<f64>::new(vec![], Precision::from_eps(1.0).unwrap(), 1.0).is_err()
    );
    let vc = VariationalCompression::new(bases, Precision::from_eps(1.0).unwrap(), 1.0).unwrap();
    assert!(vc.membership(&Array2::zeros((3, 5))).is_err());
    assert!(vc.step(&Array2::ones((3, 4)), -1.0).is_err());
}

/// TSSA from the reference tensors; the number of heads is that of the temperatures.
fn tssa_from_weights<T: mcr2::Float>(
    _heads: usize,
    q: Array2<T>,
    qb: Option<Array1<T>>,
    temp: Array1<T>,
    o: Array2<T>,
    ob: Array1<T>,
) -> mcr2::Result<Tssa<T>> {
    Tssa::from_parts(
        Linear::from_parts(q, qb)?,
        temp,
        Linear::from_parts(o, Some(ob))?,
    )
}
