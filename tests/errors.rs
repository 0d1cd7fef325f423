//! Every bad input returns its error variant; nothing panics.

use mcr2::{
    Error, Labels, Membership, Precision, RateStats, ReferenceLoss, class_coding_rate,
    class_coding_rate_grad_membership, coding_rate, coding_rate_with_grad, rate_reduction,
    rate_reduction_with_grad_into,
};
use ndarray::{Array2, array};

fn eps() -> Precision {
    Precision::from_eps(0.5).unwrap()
}

#[test]
fn empty_z() {
    let z = Array2::<f64>::zeros((0, 3));
    assert!(matches!(
        coding_rate(&z, eps()),
        Err(Error::Empty {
            rows: 0,
            cols: 3,
            ..
        })
    ));
    let z = Array2::<f64>::zeros((4, 0));
    assert!(matches!(
        coding_rate(&z, eps()),
        Err(Error::Empty {
            rows: 4,
            cols: 0,
            ..
        })
    ));
    let m = Membership::<f64>::hard(&[0, 0, 0, 0], 1).unwrap();
    assert!(matches!(
        rate_reduction(&z, &m, eps()),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn non_finite_entries() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let z = array![[1.0, 0.0], [0.0, bad]];
        assert!(matches!(
            coding_rate(&z, eps()),
            Err(Error::NonFinite { row: 1, col: 1, .. })
        ));
        let m = Membership::hard(&[0, 1], 2).unwrap();
        assert!(matches!(
            rate_reduction(&z, &m, eps()),
            Err(Error::NonFinite { .. })
        ));
    }
    let z = array![[1.0f32, f32::NAN]];
    assert!(matches!(
        coding_rate(&z, eps()),
        Err(Error::NonFinite { row: 0, col: 1, .. })
    ));
}

#[test]
fn bad_precision() {
    for x in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(
            matches!(
                Precision::from_eps(x),
                Err(Error::InvalidPrecision { name: "eps", .. })
            ),
            "{x}"
        );
        assert!(matches!(
            Precision::from_eps_sq(x),
            Err(Error::InvalidPrecision { name: "eps_sq", .. })
        ));
    }
    // ε so large that ε² overflows, or so small that it underflows to zero
    assert!(Precision::from_eps(1e200).is_err());
    assert!(Precision::from_eps(1e-200).is_err());
    let p = Precision::from_eps(0.5).unwrap();
    assert_eq!(p.eps_sq(), 0.25);
    assert_eq!(p.eps(), 0.5);
}

#[test]
fn bad_hard_labels() {
    assert!(matches!(
        Membership::<f64>::hard(&[0, 1, 5], 3),
        Err(Error::LabelOutOfRange {
            index: 2,
            label: 5,
            classes: 3
        })
    ));
    assert!(matches!(
        Membership::<f64>::hard(&[0, 1], 0),
        Err(Error::InvalidMembership(_))
    ));
    assert!(matches!(
        Membership::<f64>::hard(&[], 2),
        Err(Error::InvalidMembership(_))
    ));
    // length mismatch with Z
    let z = array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];
    let m = Membership::hard(&[0, 1], 2).unwrap();
    assert!(matches!(
        rate_reduction(&z, &m, eps()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        class_coding_rate(&z, &m, eps()),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn bad_soft_membership() {
    assert!(matches!(
        Membership::soft(Array2::<f64>::zeros((0, 2))),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        Membership::soft(array![[0.5, 0.6]]),
        Err(Error::InvalidMembership(_))
    ));
    assert!(matches!(
        Membership::soft(array![[1.5, -0.5]]),
        Err(Error::InvalidMembership(_))
    ));
    assert!(matches!(
        Membership::soft(array![[f64::NAN, 1.0]]),
        Err(Error::NonFinite { .. })
    ));
    // within tolerance is fine; documented tolerance 1e-6 in f64
    assert!(Membership::soft(array![[0.5, 0.5 + 1e-7]]).is_ok());
    assert!(Membership::soft(array![[0.5, 0.5 + 1e-5]]).is_err());
    // f32 tolerance √ε ≈ 3.5e-4
    assert!(Membership::soft(array![[0.5f32, 0.5001]]).is_ok());
    assert!(Membership::soft(array![[0.5f32, 0.501]]).is_err());
    let z = array![[1.0, 0.0]];
    let m = Membership::soft(array![[0.5, 0.5], [0.5, 0.5]]).unwrap();
    assert!(matches!(
        rate_reduction(&z, &m, eps()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        class_coding_rate_grad_membership(&z, &m, eps()),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn gradient_buffer_shape() {
    let z = array![[1.0, 0.0], [0.0, 1.0]];
    let m = Membership::hard(&[0, 1], 2).unwrap();
    let mut g = Array2::zeros((2, 3));
    assert!(matches!(
        rate_reduction_with_grad_into(&z, &m, eps(), &mut g),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn reference_loss_parameters() {
    for g in [0.0, -1.0, f64::NAN] {
        assert!(matches!(
            ReferenceLoss::new(eps(), g, 1.0),
            Err(Error::InvalidParameter { name: "gam1", .. })
        ));
    }
    for g in [-1.0, f64::INFINITY] {
        assert!(matches!(
            ReferenceLoss::new(eps(), 1.0, g),
            Err(Error::InvalidParameter { name: "gam2", .. })
        ));
    }
    let l = ReferenceLoss::new(eps(), 1.0, 1.0).unwrap();
    assert!(matches!(
        l.with_trace_offset(-1e-8),
        Err(Error::InvalidParameter {
            name: "trace_offset",
            ..
        })
    ));
}

#[test]
fn stats_errors() {
    assert!(matches!(
        RateStats::<f64>::new(0, 2),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        RateStats::<f64>::new(2, 0),
        Err(Error::InvalidParameter { .. })
    ));
    let mut s = RateStats::<f64>::new(2, 2).unwrap();
    assert!(matches!(s.rate_reduction(eps()), Err(Error::Empty { .. })));
    assert!(matches!(
        Labels::new(&[0], 2).and_then(|l| s.push(&array![[1.0, 2.0, 3.0]], &l)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Labels::new(&[2], 2).and_then(|l| s.push(&array![[1.0, 2.0]], &l)),
        Err(Error::LabelOutOfRange { .. })
    ));
    assert!(matches!(
        Labels::new(&[0, 1], 2).and_then(|l| s.push(&array![[1.0, 2.0]], &l)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Labels::new(&[0], 2).and_then(|l| s.push(&array![[1.0, f64::NAN]], &l)),
        Err(Error::NonFinite { .. })
    ));
    let other = RateStats::<f64>::new(3, 2).unwrap();
    assert!(matches!(s.merge(&other), Err(Error::ShapeMismatch { .. })));
    // nothing was added by the failed pushes
    assert_eq!(s.n_samples(), 0);
}

/// Huge entries make I + a·G overflow: reported as what it is, a scale beyond the
/// computable range, not as a matrix that is "not positive definite", and not panicked on.
#[test]
fn overflowing_input_is_an_error_not_a_panic() {
    let z = array![[1e300, 1e300], [1e300, -1e300]];
    let r = coding_rate_with_grad(&z, eps());
    assert!(matches!(r, Err(Error::Scale { .. })), "{r:?}");
    let m = Membership::hard(&[0, 1], 2).unwrap();
    let r = rate_reduction(&z, &m, eps());
    assert!(matches!(r, Err(Error::Scale { .. })), "{r:?}");
    let message = r.unwrap_err().to_string();
    assert!(message.contains("scale"), "{message}");
}

/// The three image models refuse the same bad patch grids with the same named errors.
#[test]
fn image_models_refuse_bad_patch_grids() {
    use mcr2::crate_alpha::CrateAlphaConfig;
    use mcr2::crate_layer::CrateConfig;
    use mcr2::crate_mae::CrateMaeConfig;
    // (image_size, patch_size, channels) and the parameter the error names
    let bad = [
        ((32, 0, 3), "patch_size"),
        ((0, 8, 3), "image_size"),
        ((30, 8, 3), "image_size"),
        ((32, 8, 0), "channels"),
    ];
    for ((image, patch, channels), name) in bad {
        let mut plain = CrateConfig::new(image, patch, 10, 16, 2, 2, 8);
        plain.channels = channels;
        let mut alpha = CrateAlphaConfig::new(image, patch, 10, 16, 2, 2, 8);
        alpha.channels = channels;
        let mut mae = CrateMaeConfig::new(image, patch, 16, 2, 2, 16, 1, 2);
        mae.channels = channels;
        for r in [plain.check(), alpha.check(), mae.check()] {
            match r {
                Err(Error::InvalidParameter { name: got, .. }) => assert_eq!(got, name),
                other => panic!("({image}, {patch}, {channels}): {other:?}"),
            }
        }
    }
    // and accept a good one
    let plain = CrateConfig::new(32, 8, 10, 16, 2, 2, 8);
    let alpha = CrateAlphaConfig::new(32, 8, 10, 16, 2, 2, 8);
    let mae = CrateMaeConfig::new(32, 8, 16, 2, 2, 16, 1, 2);
    assert!(plain.check().is_ok() && alpha.check().is_ok() && mae.check().is_ok());
}
