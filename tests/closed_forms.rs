//! Published closed forms and the reference anchors of REFERENCE.md §2.3.

use mcr2::{Membership, Precision, ReferenceLoss, class_coding_rate, coding_rate, rate_reduction};
use ndarray::{Array2, array};

fn four_rows() -> (Array2<f64>, Membership<f64>) {
    let z = array![
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0]
    ];
    (z, Membership::hard(&[0, 0, 1, 1], 2).unwrap())
}

#[test]
fn four_row_example_eps_sq_half() {
    let (z, m) = four_rows();
    let rr = rate_reduction(&z, &m, Precision::from_eps_sq(0.5).unwrap()).unwrap();
    assert!((rr.r - 5f64.ln()).abs() < 1e-14, "{}", rr.r);
    assert!((rr.rc - 112f64.ln() / 4.0).abs() < 1e-14, "{}", rr.rc);
    // same in f32, to f32 precision
    let rr32 = rate_reduction(
        &z.mapv(|x| x as f32),
        &Membership::hard(&[0, 0, 1, 1], 2).unwrap(),
        Precision::from_eps_sq(0.5).unwrap(),
    )
    .unwrap();
    assert!((rr32.r as f64 - 5f64.ln()).abs() < 1e-6);
    assert!((rr32.rc as f64 - 112f64.ln() / 4.0).abs() < 1e-6);
}

#[test]
fn four_row_example_eps_sq_hundredth() {
    let (z, m) = four_rows();
    let rr = rate_reduction(&z, &m, Precision::from_eps(0.1).unwrap()).unwrap();
    let rc = (301f64.ln() + 2.0 * 151f64.ln()) / 4.0;
    assert!((rr.rc - rc).abs() < 1e-13);
    assert!((rr.r - 6.839373112).abs() < 1e-6);
}

#[test]
fn reference_loss_anchors() {
    let (z, m) = four_rows();
    let v = ReferenceLoss::new(Precision::from_eps_sq(0.5).unwrap(), 1.0, 1.0)
        .unwrap()
        .evaluate(&z, &m)
        .unwrap();
    assert!((v.loss - (-0.429813266)).abs() < 1e-6, "{}", v.loss);
    let v = ReferenceLoss::new(Precision::from_eps_sq(0.01).unwrap(), 1.0, 1.0)
        .unwrap()
        .evaluate(&z, &m)
        .unwrap();
    assert!((v.loss - (-2.903955698)).abs() < 1e-6, "{}", v.loss);
    let v = ReferenceLoss::new(Precision::from_eps_sq(0.5).unwrap(), 20.0, 0.05)
        .unwrap()
        .evaluate(&z, &m)
        .unwrap();
    assert!((v.r_emp - 5.489423752).abs() < 1e-6, "{}", v.r_emp);
    assert!((v.loss - 0.905153513).abs() < 1e-6, "{}", v.loss);
    // the same in f32, as the anchors were computed
    let z32 = z.mapv(|x| x as f32);
    let m32 = Membership::<f32>::hard(&[0, 0, 1, 1], 2).unwrap();
    let v = ReferenceLoss::new(Precision::from_eps_sq(0.5).unwrap(), 20.0, 0.05)
        .unwrap()
        .evaluate(&z32, &m32)
        .unwrap();
    assert!((v.loss as f64 - 0.905153513).abs() < 1e-6, "{}", v.loss);
}

/// K orthonormal directions with N_k copies each:
/// R = ½ Σ_k ln(1 + d N_k/(N ε²)), Rc = ½ ln(1 + d/ε²) (independent of K).
#[test]
fn orthonormal_directions_with_copies() {
    for (d, counts, eps_sq) in [
        (5usize, vec![3usize, 1, 7], 0.5),
        (8, vec![10, 10], 0.01),
        (4, vec![1, 2, 3, 4], 2.0),
        (3, vec![50, 60, 70], 0.1), // n ≫ d
        (64, vec![2, 3], 1.0),      // n < d: sample-side log-dets
    ] {
        // random orthonormal directions: QR of a fixed matrix via Gram–Schmidt
        let k = counts.len();
        let mut q: Vec<Vec<f64>> = Vec::new();
        for j in 0..k {
            let mut v: Vec<f64> = (0..d)
                .map(|i| (((i + 1) * (j + 2)) as f64 * 0.7 + j as f64).sin())
                .collect();
            for u in &q {
                let p: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= p * b);
            }
            let nrm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter_mut().for_each(|x| *x /= nrm);
            q.push(v);
        }
        let n: usize = counts.iter().sum();
        let mut z = Array2::zeros((n, d));
        let mut labels = Vec::new();
        let mut row = 0;
        for (j, &c) in counts.iter().enumerate() {
            for _ in 0..c {
                for i in 0..d {
                    z[(row, i)] = q[j][i];
                }
                labels.push(j);
                row += 1;
            }
        }
        let eps = Precision::from_eps_sq(eps_sq).unwrap();
        let m = Membership::hard(&labels, k).unwrap();
        let r_want: f64 = counts
            .iter()
            .map(|&c| 0.5 * (1.0 + d as f64 * c as f64 / (n as f64 * eps_sq)).ln())
            .sum();
        let rc_want = 0.5 * (1.0 + d as f64 / eps_sq).ln();
        let r = coding_rate(&z, eps).unwrap();
        let rc = class_coding_rate(&z, &m, eps).unwrap();
        assert!(
            (r - r_want).abs() < 1e-12 * r_want,
            "d={d}: R {r} vs {r_want}"
        );
        assert!(
            (rc - rc_want).abs() < 1e-12 * rc_want,
            "d={d}: Rc {rc} vs {rc_want}"
        );
    }
}

/// Empty classes contribute exactly 0.
#[test]
fn empty_class_contributes_zero() {
    let (z, _) = four_rows();
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let with_empty = rate_reduction(&z, &Membership::hard(&[0, 0, 2, 2], 4).unwrap(), eps).unwrap();
    let without = rate_reduction(&z, &Membership::hard(&[0, 0, 1, 1], 2).unwrap(), eps).unwrap();
    assert_eq!(with_empty.class_terms[1], 0.0);
    assert_eq!(with_empty.class_terms[3], 0.0);
    assert_eq!(with_empty.rc, without.rc);
}
