//! Lossy coding: coding lengths against an independent dense computation and closed forms,
//! ALC on a mixture of subspaces, MICL's rank-one path against direct recomputation, errors.

use mcr2::coding::{Coder, MeanCoding, Micl, Unit, alc};
use mcr2::data::SubspaceMixtureConfig;
use mcr2::data::mixture_of_subspaces;
use mcr2::metrics::segmentation_error;
use mcr2::{Error, Labels, Precision};
use ndarray::{Array2, Axis, concatenate};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// ln |det A| by Gaussian elimination with partial pivoting (independent of the crate).
fn ln_det(mut a: Array2<f64>) -> f64 {
    let n = a.nrows();
    let mut s = 0.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[(i, c)].abs().total_cmp(&a[(j, c)].abs()))
            .unwrap();
        if p != c {
            for k in 0..n {
                a.swap((c, k), (p, k));
            }
        }
        let piv = a[(c, c)];
        s += piv.abs().ln();
        for r in (c + 1)..n {
            let f = a[(r, c)] / piv;
            for k in c..n {
                a[(r, k)] -= f * a[(c, k)];
            }
        }
    }
    s
}

/// L(W) in bits from the definition, on the n × n side always.
fn dense_length(w: &Array2<f64>, eps_sq: f64, centered: bool) -> f64 {
    let (m, n) = w.dim();
    let mean = if centered {
        w.mean_axis(Axis(0)).unwrap()
    } else {
        ndarray::Array1::zeros(n)
    };
    let wc = w - &mean;
    let a = Array2::<f64>::eye(n) + wc.t().dot(&wc) * (n as f64 / (eps_sq * m as f64));
    let mut l = 0.5 * (m + n) as f64 * ln_det(a);
    if centered {
        l += 0.5 * n as f64 * (1.0 + mean.dot(&mean) / eps_sq).ln();
    }
    l / std::f64::consts::LN_2
}

fn gaussian(rng: &mut StdRng, m: usize, n: usize, scale: f64, shift: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((m, n), || {
        shift + scale * rng.sample::<f64, _>(StandardNormal)
    })
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn coding_length_matches_dense_computation() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut worst: f64 = 0.0;
    // fewer samples than dimensions (coded on the sample side) and more (feature side)
    for &(m, n) in &[
        (3usize, 8usize),
        (8, 8),
        (40, 6),
        (200, 5),
        (7, 70),
        (100, 80),
    ] {
        let w = gaussian(&mut rng, m, n, 0.7, 0.3);
        for &eps_sq in &[0.01, 0.5, 4.0] {
            for mean in [MeanCoding::Separate, MeanCoding::ZeroMean] {
                let coder = Coder::new(Precision::from_eps_sq(eps_sq).unwrap()).with_mean(mean);
                let got = coder.length(&w).unwrap();
                let want = dense_length(&w, eps_sq, mean == MeanCoding::Separate);
                worst = worst.max(rel(got, want));
                assert!(
                    rel(got, want) < 1e-10,
                    "{m}×{n} ε²={eps_sq} {mean:?}: {got} vs {want}"
                );
                let nats = coder.with_unit(Unit::Nats).length(&w).unwrap();
                assert!(rel(nats, want * std::f64::consts::LN_2) < 1e-12);
                // f32 input, computed in f64
                let l32 = coder.length(&w.mapv(|v| v as f32)).unwrap();
                assert!(rel(l32, want) < 1e-5);
            }
        }
    }
    println!("coding length: worst relative error against the dense computation {worst:.1e}");
}

#[test]
fn coding_length_closed_forms() {
    let eps = Precision::from_eps_sq(0.25).unwrap();
    let coder = Coder::new(eps);
    let zero = coder.with_mean(MeanCoding::ZeroMean);
    let x = Array2::from_shape_vec((1, 3), vec![1.0, -2.0, 2.0]).unwrap(); // ‖x‖² = 9
    // one sample: only its mean is coded, (n/2) log₂(1 + ‖x‖²/ε²)
    assert!(rel(coder.length(&x).unwrap(), 1.5 * (1.0f64 + 36.0).log2()) < 1e-14);
    // zero-mean, one sample: ((1 + n)/2) log₂(1 + n‖x‖²/ε²)
    assert!(rel(zero.length(&x).unwrap(), 2.0 * (1.0f64 + 108.0).log2()) < 1e-14);
    // copies of one point: no spread, only the mean
    let copies = Array2::from_shape_fn((5, 3), |(_, j)| x[(0, j)]);
    assert!(rel(coder.length(&copies).unwrap(), 1.5 * 37.0f64.log2()) < 1e-12);
    // the n orthonormal directions, zero-mean: det = (1 + 1/ε²)^n, L = n² log₂(1 + 1/ε²)
    let e = Array2::<f64>::eye(4);
    assert!(rel(zero.length(&e).unwrap(), 16.0 * 5.0f64.log2()) < 1e-13);
    // one group: the segmentation length is the coding length (no membership bits)
    let w = gaussian(&mut StdRng::seed_from_u64(1), 30, 4, 1.0, 0.0);
    let one = coder.segmentation_length(&w, &ids(&[7; 30])).unwrap();
    assert!(rel(one, coder.length(&w).unwrap()) < 1e-14);
    // two groups: Σ L(W_i) − |W_i| log₂(|W_i|/m)
    let labels: Vec<usize> = (0..30).map(|i| usize::from(i >= 10)).collect();
    let want = coder
        .length(&w.slice_axis(Axis(0), (0..10).into()).to_owned())
        .unwrap()
        + coder
            .length(&w.slice_axis(Axis(0), (10..30).into()).to_owned())
            .unwrap()
        - 10.0 * (10.0f64 / 30.0).log2()
        - 20.0 * (20.0f64 / 30.0).log2();
    assert!(rel(coder.segmentation_length(&w, &ids(&labels)).unwrap(), want) < 1e-13);
}

fn three_subspaces(seed: u64, per: usize) -> (Array2<f64>, Vec<usize>) {
    let mut config = SubspaceMixtureConfig::new(5, 3, 1, per, 0.01);
    config.subspace_dims = vec![1, 2, 3];
    config.unit_sphere = false;
    let d = mixture_of_subspaces::<f64, _>(&config, &mut StdRng::seed_from_u64(seed)).unwrap();
    (d.samples, d.labels.to_vec())
}

/// The acceptance case: three subspaces of dimensions 1, 2, 3 in R^5, 100 samples each,
/// noise 0.01. Measured at ε = 0.03 on seeds 0–4: 3 groups, no sample misassigned.
#[test]
fn alc_segments_a_mixture_of_subspaces() {
    for seed in 0..5 {
        let (x, truth) = three_subspaces(seed, 100);
        let coder = Coder::new(Precision::from_eps(0.03).unwrap());
        let mut seen = Vec::new();
        let seg = alc(&x, &coder, |p| seen.push(*p)).unwrap();
        let err = segmentation_error(&seg.labels, &ids(&truth)).unwrap();
        println!(
            "seed {seed}: {} groups, error {:.2}%",
            seg.groups,
            100.0 * err
        );
        assert_eq!(seg.groups, 3);
        assert!(err <= 0.02, "error {err}");
        // the trace falls strictly and ends at the segmentation's coding length
        assert!(seg.trace.windows(2).all(|w| w[1] < w[0]));
        let last = *seg.trace.last().unwrap();
        assert!(rel(last, coder.segmentation_length(&x, &seg.labels).unwrap()) < 1e-9);
        assert!(
            rel(
                seg.trace[0],
                coder
                    .segmentation_length(&x, &ids(&(0..300).collect::<Vec<_>>()))
                    .unwrap()
            ) < 1e-9
        );
        // the observer saw every merge
        assert_eq!(seen.len(), seg.trace.len());
        assert_eq!(seen.last().unwrap().groups, 3);
        assert_eq!(seen.last().unwrap().merges, 297);
    }
}

#[test]
fn alc_groups_fall_as_eps_grows() {
    let (x, _) = three_subspaces(0, 100);
    let groups: Vec<usize> = [0.001, 0.03, 3.0]
        .iter()
        .map(|&e| {
            alc(&x, &Coder::new(Precision::from_eps(e).unwrap()), |_| {})
                .unwrap()
                .groups
        })
        .collect();
    assert!(groups[0] > 3, "{groups:?}");
    assert_eq!(groups[1], 3);
    assert_eq!(groups[2], 1);
}

#[test]
fn segmentation_error_matches_groups_to_classes() {
    assert_eq!(
        segmentation_error(&ids(&[2, 2, 0, 0, 1]), &ids(&[0, 0, 1, 1, 2])).unwrap(),
        0.0
    );
    // one sample in the wrong group
    assert!(
        (segmentation_error(&ids(&[5, 5, 5, 9, 9]), &ids(&[0, 0, 1, 1, 1])).unwrap() - 0.2).abs()
            < 1e-15
    );
    // more groups than classes: the extra group's samples count as errors
    assert!(
        (segmentation_error(&ids(&[0, 0, 1, 2]), &ids(&[0, 0, 1, 1])).unwrap() - 0.25).abs()
            < 1e-15
    );
    // the optimum is not the greedy one
    let pred = [0, 0, 0, 1, 1, 1, 1, 2, 2];
    let truth = [0, 0, 1, 0, 1, 1, 2, 1, 2];
    // best: 0→0 (2), 1→1 (2), 2→2 (1) = 5 of 9
    assert!((segmentation_error(&ids(&pred), &ids(&truth)).unwrap() - 4.0 / 9.0).abs() < 1e-15);
    assert!(segmentation_error(&ids(&[0]), &ids(&[0, 1])).is_err());
    assert!(Labels::from_ids(&[]).is_err());
}

/// MICL's rank-one path equals coding X_j ∪ {x} from scratch, for classes with fewer and
/// more samples than dimensions, both mean codings, bits and nats.
#[test]
fn micl_rank_one_path_equals_direct_recomputation() {
    let mut rng = StdRng::seed_from_u64(4);
    let n = 6;
    let (sizes, shifts) = ([4usize, 25, 60], [0.0, 1.0, -0.5]);
    let blocks: Vec<Array2<f64>> = sizes
        .iter()
        .zip(shifts)
        .map(|(&m, s)| gaussian(&mut rng, m, n, 0.5, s))
        .collect();
    let x = concatenate(
        Axis(0),
        &blocks.iter().map(|b| b.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let labels: Vec<usize> = sizes
        .iter()
        .enumerate()
        .flat_map(|(j, &m)| vec![j; m])
        .collect();
    let test = gaussian(&mut rng, 9, n, 0.8, 0.2);
    let total: usize = sizes.iter().sum();
    let mut worst: f64 = 0.0;
    for mean in [MeanCoding::Separate, MeanCoding::ZeroMean] {
        for unit in [Unit::Bits, Unit::Nats] {
            let coder = Coder::new(Precision::from_eps_sq(0.2).unwrap())
                .with_mean(mean)
                .with_unit(unit);
            let micl = Micl::fit(&x, &Labels::new(&labels, 3).unwrap(), coder).unwrap();
            let d = micl.length_increase(&test).unwrap();
            let log = |v: f64| match unit {
                Unit::Bits => v.log2(),
                Unit::Nats => v.ln(),
            };
            for (i, t) in test.rows().into_iter().enumerate() {
                for (j, b) in blocks.iter().enumerate() {
                    let grown = concatenate![Axis(0), b.view(), t.insert_axis(Axis(0))];
                    let direct = coder.length(&grown).unwrap()
                        - coder.length(b).unwrap()
                        - log(sizes[j] as f64 / total as f64);
                    let e = (d[(i, j)] - direct).abs() / direct.abs().max(1.0);
                    worst = worst.max(e);
                    assert!(
                        e < 1e-9,
                        "{mean:?} {unit:?} sample {i} class {j}: {} vs {direct}",
                        d[(i, j)]
                    );
                }
            }
            let pred = micl.predict(&test).unwrap();
            for (i, p) in pred.iter().enumerate() {
                let row = d.row(i);
                assert!(row.iter().all(|&v| v >= row[*p]));
            }
        }
    }
    println!("MICL rank-one path against direct recomputation: worst error {worst:.1e}");
}

#[test]
fn bad_input_is_an_error() {
    assert!(Precision::from_eps(0.0).is_err());
    assert!(Precision::from_eps(-1.0).is_err());
    let coder = Coder::new(Precision::from_eps(0.1).unwrap());
    let empty = Array2::<f64>::zeros((0, 3));
    assert!(matches!(coder.length(&empty), Err(Error::Empty { .. })));
    assert!(matches!(
        alc(&empty, &coder, |_| {}),
        Err(Error::Empty { .. })
    ));
    let mut bad = Array2::<f64>::ones((4, 3));
    bad[(2, 1)] = f64::NAN;
    assert!(matches!(coder.length(&bad), Err(Error::NonFinite { .. })));
    assert!(matches!(
        alc(&bad, &coder, |_| {}),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        Labels::new(&[0, 0, 1, 1], 2).and_then(|l| Micl::fit(&bad, &l, coder)),
        Err(Error::NonFinite { .. })
    ));
    let good = Array2::<f64>::ones((4, 3));
    assert!(coder.segmentation_length(&good, &ids(&[0, 1])).is_err());
    assert!(matches!(
        Labels::new(&[0, 0, 1, 3], 2).and_then(|l| Micl::fit(&good, &l, coder)),
        Err(Error::LabelOutOfRange { .. })
    ));
    assert!(
        matches!(
            Labels::new(&[0, 0, 0, 0], 2).and_then(|l| Micl::fit(&good, &l, coder)),
            Err(Error::EmptyClass { class: 1 })
        ),
        "class 1 has no samples"
    );
    assert!(
        Labels::new(&[0, 0, 0], 1)
            .and_then(|l| Micl::fit(&good, &l, coder))
            .is_err()
    );
    assert!(
        Labels::new(&[0, 0, 0, 0], 0)
            .and_then(|l| Micl::fit(&good, &l, coder))
            .is_err()
    );
    let micl = Labels::new(&[0, 0, 1, 1], 2)
        .and_then(|l| Micl::fit(&good, &l, coder))
        .unwrap();
    assert!(micl.predict(&Array2::<f64>::ones((2, 4))).is_err());
    assert!(
        micl.accuracy(&good, &Labels::new(&[0], 2).unwrap())
            .is_err()
    );
    // a single sample is one group
    let one = alc(&Array2::<f64>::ones((1, 3)), &coder, |_| {}).unwrap();
    assert_eq!((one.groups, one.labels.to_vec()), (1, vec![0]));
}

/// Labels from arbitrary group ids.
fn ids(v: &[usize]) -> Labels {
    Labels::from_ids(v).unwrap()
}

/// A saved MICL classifier carries its coder and sizes: loading needs nothing else and
/// predicts the same; other files and truncations are errors.
#[test]
fn micl_save_and_load_round_trip() {
    let x = Array2::from_shape_fn((30, 4), |(i, j)| {
        (((i * 7 + j * 3) % 11) as f64 / 11.0 - 0.5) + if i % 3 == j % 3 { 1.0 } else { 0.0 }
    });
    let labels = Labels::new(&(0..30).map(|i| i % 3).collect::<Vec<_>>(), 3).unwrap();
    let coder = Coder::new(Precision::from_eps(0.2).unwrap()).with_unit(Unit::Nats);
    let micl = Micl::fit(&x, &labels, coder).unwrap();
    let bytes = micl.to_safetensors().unwrap();
    let back = Micl::from_safetensors(&bytes).unwrap();
    assert_eq!(back, micl);
    assert_eq!(back.predict(&x).unwrap(), micl.predict(&x).unwrap());
    assert!(Micl::from_safetensors(&bytes[..bytes.len() - 1]).is_err());
    let empty = mcr2::nn::TensorWriter::new().to_bytes().unwrap();
    assert!(Micl::from_safetensors(&empty).is_err());
}

/// A crafted MICL file whose metadata claims an impossible dimension is an error, not an
/// overflow or an allocation.
#[test]
fn micl_file_with_an_impossible_dimension_is_refused() {
    let mut w = mcr2::nn::TensorWriter::new();
    for (k, v) in [
        ("mcr2.model", "MICL".to_string()),
        ("eps_sq", "0.1".into()),
        ("unit", "bits".into()),
        ("mean", "separate".into()),
        ("dim", usize::MAX.to_string()),
        ("classes", "1".into()),
        ("total", "1".into()),
        ("count.0", "1".into()),
        ("length.0", "1.0".into()),
    ] {
        w.set_metadata(k, v);
    }
    let mut s = w.scoped("classes.0.");
    s.put("mean", &ndarray::array![0.0f64, 1.0].into_dyn());
    s.put("eigenvalues", &ndarray::array![0.0f64, 1.0].into_dyn());
    s.put("eigenvectors", &Array2::<f64>::eye(2).into_dyn());
    let bytes = w.to_bytes().unwrap();
    assert!(matches!(
        Micl::from_safetensors(&bytes),
        Err(Error::TooLarge { .. })
    ));
}
