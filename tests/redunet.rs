//! ReduNet: operators against their closed forms, monotone ΔR and orthogonal classes on the
//! reference toys, held-out accuracy, errors.

use mcr2::data::gaussian_toy;
use mcr2::metrics::class_means;
use mcr2::redunet::{ReduNet, ReduNetConfig};
use mcr2::{Error, Labels, Precision};
use ndarray::{Array2, ArrayView2, array};
use rand::{SeedableRng, rngs::StdRng};

/// M⁻¹ by Gauss–Jordan elimination with partial pivoting (independent of the crate).
fn inverse(m: &Array2<f64>) -> Array2<f64> {
    let k = m.nrows();
    let mut a = ndarray::concatenate![ndarray::Axis(1), m.view(), Array2::<f64>::eye(k).view()];
    for c in 0..k {
        let p = (c..k)
            .max_by(|&i, &j| a[(i, c)].abs().total_cmp(&a[(j, c)].abs()))
            .unwrap();
        for t in 0..2 * k {
            a.swap((c, t), (p, t));
        }
        let piv = a[(c, c)];
        a.row_mut(c).mapv_inplace(|v| v / piv);
        let pr = a.row(c).to_owned();
        for r in (0..k).filter(|&r| r != c) {
            let f = a[(r, c)];
            a.row_mut(r).scaled_add(-f, &pr);
        }
    }
    a.slice_axis(ndarray::Axis(1), (k..2 * k).into()).to_owned()
}

/// c (I + c ZᵀZ)⁻¹ with c = d/(m ε²).
fn operator(z: ArrayView2<f64>, eps_sq: f64) -> Array2<f64> {
    let (m, d) = z.dim();
    let c = d as f64 / (m as f64 * eps_sq);
    inverse(&(Array2::<f64>::eye(d) + z.t().dot(&z) * c)) * c
}

fn max_rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// One layer applied by the formulas of the module docs, written out independently.
fn layer_forward(
    z: &Array2<f64>,
    e: &Array2<f64>,
    c: &[Array2<f64>],
    gamma: &[f64],
    eta: f64,
    lambda: f64,
) -> Array2<f64> {
    let mut out = z.clone();
    for (i, zi) in z.rows().into_iter().enumerate() {
        let comps: Vec<_> = c.iter().map(|cj| cj.dot(&zi)).collect();
        let logits: Vec<f64> = comps
            .iter()
            .map(|v| -lambda * v.dot(v).sqrt().max(1e-8))
            .collect();
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ex: Vec<f64> = logits.iter().map(|l| (l - mx).exp()).collect();
        let s: f64 = ex.iter().sum();
        let mut clus = ndarray::Array1::<f64>::zeros(zi.len());
        for j in 0..c.len() {
            clus.scaled_add(gamma[j] * ex[j] / s, &comps[j]);
        }
        let mut v = &zi + &((e.dot(&zi) - clus) * eta);
        let n = v.dot(&v).sqrt();
        v /= n;
        out.row_mut(i).assign(&v);
    }
    out
}

#[test]
fn operators_match_closed_forms() {
    let mut rng = StdRng::seed_from_u64(0);
    let (x, labels) = gaussian_toy(
        &array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        30,
        0.3,
        &mut rng,
    )
    .unwrap();
    let config = ReduNetConfig {
        layers: 2,
        ..ReduNetConfig::default()
    };
    let (net, _, _) = ReduNet::fit(&x, &labels, &config, |_| {}).unwrap();
    let mut z: Array2<f64> = x.clone();
    for mut row in z.rows_mut() {
        let n: f64 = row.dot(&row).sqrt();
        row /= n;
    }
    let mut worst: f64 = 0.0;
    for layer in net.layers() {
        let e = operator(z.view(), 0.1);
        worst = worst.max(max_rel(layer.expansion(), &e));
        let mut cs = Vec::new();
        for j in 0..3 {
            let rows: Vec<usize> = labels.members(j).collect();
            let zj = z.select(ndarray::Axis(0), &rows);
            let cj = operator(zj.view(), 0.1);
            worst = worst.max(max_rel(layer.compression(j).unwrap(), &cj));
            assert!(
                (layer.gamma()[j] - rows.len() as f64 / labels.n_samples() as f64).abs() < 1e-15
            );
            cs.push(cj);
        }
        z = layer_forward(&z, &e, &cs, layer.gamma(), 0.5, 200.0);
    }
    assert!(worst < 1e-10, "{worst:e}");
    // and the network's forward agrees with the formulas
    let t = net.transform(&x).unwrap();
    assert!(max_rel(&t, &z) < 1e-10);
    println!("E, C_j against the closed forms: worst relative error {worst:.1e}");
}

fn run_toy(centers: Array2<f64>, name: &str) -> (ReduNet<f64>, Array2<f64>, Labels) {
    let k = centers.nrows();
    let mut rng = StdRng::seed_from_u64(1);
    let (x, labels) = gaussian_toy(&centers, 100, 0.1, &mut rng).unwrap();
    let (net, z, _) = ReduNet::fit(&x, &labels, &ReduNetConfig::default(), |_| {}).unwrap();
    let h = net.history();
    assert_eq!(h.len(), 201);
    let worst_drop = h
        .windows(2)
        .map(|w| w[0].delta_r - w[1].delta_r)
        .fold(0.0f64, f64::max);
    let means = class_means(&z, &labels).unwrap();
    let mut cos = Vec::new();
    for a in 0..k {
        for b in (a + 1)..k {
            let (u, v) = (means.row(a), means.row(b));
            cos.push(u.dot(&v) / (u.dot(&u) * v.dot(&v)).sqrt());
        }
    }
    let mean_cos = cos.iter().sum::<f64>() / cos.len() as f64;
    println!(
        "{name}: ΔR {:.4} → {:.4} over 200 layers, largest decrease {worst_drop:.1e}, mean cosine between class means {mean_cos:.4}",
        h[0].delta_r, h[200].delta_r
    );
    assert!(worst_drop <= 1e-9, "ΔR decreased by {worst_drop:e}");
    assert!(mean_cos.abs() < 0.1, "{cos:?}");
    let mut test_rng = StdRng::seed_from_u64(2);
    let (xt, lt) = gaussian_toy(&centers, 100, 0.1, &mut test_rng).unwrap();
    let acc = net.accuracy(&xt, &lt).unwrap();
    println!("{name}: held-out accuracy {:.1}%", 100.0 * acc);
    (net, xt, lt)
}

#[test]
fn toy_2d_classes_become_orthogonal() {
    run_toy(array![[1.0, 0.0], [0.0, 1.0]], "2D toy");
}

#[test]
fn toy_3d_classes_become_orthogonal_and_generalize() {
    let (net, xt, lt) = run_toy(
        array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "3D toy",
    );
    assert!(net.accuracy(&xt, &lt).unwrap() >= 0.99);
    // the EMA update with the training data itself leaves the operators where they are
    let mut rng = StdRng::seed_from_u64(1);
    let (x, labels) = gaussian_toy(
        &array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        100,
        0.1,
        &mut rng,
    )
    .unwrap();
    let mut same = net.clone();
    same.update(&x, &labels, 0.5).unwrap();
    assert!(
        max_rel(
            same.layers()[199].expansion(),
            net.layers()[199].expansion()
        ) < 1e-9
    );
    // with other data they move by τ of the way
    let (x2, l2) = gaussian_toy(
        &array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        50,
        0.3,
        &mut rng,
    )
    .unwrap();
    let mut moved = net.clone();
    moved.update(&x2, &l2, 0.1).unwrap();
    assert!(moved.layers()[0].expansion() != net.layers()[0].expansion());
}

#[test]
fn f32_networks_run() {
    let mut rng = StdRng::seed_from_u64(3);
    let (x, labels) = gaussian_toy(&array![[1.0f32, 0.0], [0.0, 1.0]], 50, 0.1, &mut rng).unwrap();
    let config = ReduNetConfig {
        layers: 20,
        ..ReduNetConfig::default()
    };
    let (net, _, _) = ReduNet::fit(&x, &labels, &config, |_| {}).unwrap();
    assert!(net.accuracy(&x, &labels).unwrap() > 0.95);
}

#[test]
fn bad_input_is_an_error() {
    let x = array![[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]];
    let cfg = ReduNetConfig {
        layers: 2,
        ..ReduNetConfig::default()
    };
    assert!(matches!(
        Labels::new(&[0, 1, 2], 2).and_then(|l| ReduNet::fit(&x, &l, &cfg, |_| {})),
        Err(Error::LabelOutOfRange { .. })
    ));
    assert!(
        Labels::new(&[0, 0, 0], 2)
            .and_then(|l| ReduNet::fit(&x, &l, &cfg, |_| {}))
            .is_err(),
        "class 1 has no samples"
    );
    assert!(
        Labels::new(&[0, 1], 2)
            .and_then(|l| ReduNet::fit(&x, &l, &cfg, |_| {}))
            .is_err()
    );
    let mut nan = x.clone();
    nan[(1, 1)] = f64::NAN;
    assert!(matches!(
        Labels::new(&[0, 1, 1], 2).and_then(|l| ReduNet::fit(&nan, &l, &cfg, |_| {})),
        Err(Error::NonFinite { .. })
    ));
    let zero = array![[1.0, 0.0], [0.0, 0.0], [0.7, 0.7]];
    assert!(
        Labels::new(&[0, 1, 1], 2)
            .and_then(|l| ReduNet::fit(&zero, &l, &cfg, |_| {}))
            .is_err()
    );
    for bad in [
        ReduNetConfig { layers: 0, ..cfg },
        ReduNetConfig { eta: 0.0, ..cfg },
        ReduNetConfig {
            lambda: f64::NAN,
            ..cfg
        },
    ] {
        assert!(
            Labels::new(&[0, 1, 1], 2)
                .and_then(|l| ReduNet::fit(&x, &l, &bad, |_| {}))
                .is_err()
        );
    }
    let (mut net, _, _) = Labels::new(&[0, 1, 1], 2)
        .and_then(|l| ReduNet::fit(&x, &l, &cfg, |_| {}))
        .unwrap();
    assert!(net.transform(&array![[1.0, 0.0, 0.0]]).is_err());
    assert!(net.predict(&array![[0.0, 0.0]]).is_err());
    assert!(
        net.update(&x, &Labels::new(&[0, 1, 1], 2).unwrap(), 0.0)
            .is_err()
    );
    assert!(
        net.update(&x, &Labels::new(&[0, 1, 1], 2).unwrap(), 1.5)
            .is_err()
    );
    let _ = Precision::from_eps_sq(0.1).unwrap();
}

/// A saved network carries its configuration: loading needs nothing else, gives the same
/// transform, and refuses files that are not a ReduNet or whose sizes do not fit.
#[test]
fn save_and_load_round_trip() {
    use mcr2::redunet::LayerProgress;
    let centers = array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let mut rng = StdRng::seed_from_u64(3);
    let (x, labels) = gaussian_toy(&centers, 30, 0.1, &mut rng).unwrap();
    let config = ReduNetConfig {
        layers: 7,
        ..ReduNetConfig::default()
    };
    let (net, _, _) = ReduNet::<f64>::fit(&x, &labels, &config, |_: &LayerProgress| ()).unwrap();
    let bytes = net.to_safetensors().unwrap();
    let back = ReduNet::<f64>::from_safetensors(&bytes).unwrap();
    assert_eq!(back.config(), net.config());
    assert_eq!(back.layers(), net.layers());
    assert_eq!(back.predict(&x).unwrap(), net.predict(&x).unwrap());
    // read in f32: same predictions
    let back32 = ReduNet::<f32>::from_safetensors(&bytes).unwrap();
    assert_eq!(
        back32.predict(&x.mapv(|v| v as f32)).unwrap(),
        net.predict(&x).unwrap()
    );
    // a CRATE checkpoint, or any other file, is not a ReduNet
    let other = mcr2::nn::TensorWriter::new().to_bytes().unwrap();
    assert!(ReduNet::<f64>::from_safetensors(&other).is_err());
    assert!(ReduNet::<f64>::from_safetensors(&bytes[..bytes.len() / 2]).is_err());
}
