//! Subspace tools: principal angles against a closed form, the mixture generator, the
//! nearest-subspace classifier, and input errors.

use mcr2::data::SubspaceMixtureConfig;
use mcr2::data::mixture_of_subspaces;
use mcr2::metrics::class_subspace_angles;
use mcr2::subspace::{NearestSubspace, SubspaceConfig, SubspaceFit, principal_angles};
use mcr2::{Error, Labels};
use ndarray::{Array2, array};
use rand::{SeedableRng, rngs::StdRng};

#[test]
fn principal_angles_closed_form() {
    for theta in [0.0f64, 0.3, 1.0, std::f64::consts::FRAC_PI_2] {
        // span(e1, e2) and span(e1, cos θ e2 + sin θ e3), the second basis not orthonormal
        let a = array![[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]];
        let b = array![
            [2.0, 0.0],
            [0.0, theta.cos()],
            [0.0, theta.sin()],
            [0.0, 0.0]
        ];
        let ang = principal_angles(&a, &b).unwrap();
        assert!((ang[0] - 0.0).abs() < 1e-7, "{ang:?}");
        assert!((ang[1] - theta).abs() < 1e-7, "θ = {theta}: {ang:?}");
    }
    assert!(matches!(
        principal_angles(&Array2::<f64>::eye(3), &Array2::<f64>::eye(4)),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn mixture_generator_and_nearest_subspace() {
    let mut config = SubspaceMixtureConfig::new(20, 3, 4, 60, 0.05);
    config.orthogonal = true;
    let data = mixture_of_subspaces::<f64, _>(&config, &mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(data.samples.dim(), (180, 20));
    assert_eq!(data.labels.n_samples(), 180);
    // orthonormal, mutually orthogonal bases
    for (i, u) in data.bases.iter().enumerate() {
        let g = u.t().dot(u);
        assert!(
            (&g - &Array2::<f64>::eye(4))
                .iter()
                .all(|v| v.abs() < 1e-12)
        );
        for v in &data.bases[i + 1..] {
            assert!(u.t().dot(v).iter().all(|x| x.abs() < 1e-12));
        }
    }
    // samples on the unit sphere
    assert!(
        data.samples
            .rows()
            .into_iter()
            .all(|r| (r.dot(&r) - 1.0).abs() < 1e-12)
    );
    // the fitted class subspaces recover the true ones (small noise): angles near 0 to the truth
    let ns = NearestSubspace::fit(&data.samples, &data.labels, &SubspaceConfig::new(4)).unwrap();
    for (fit, u) in ns.fits().iter().zip(&data.bases) {
        let ang = principal_angles(&fit.basis, u).unwrap();
        assert!(ang.iter().all(|a| a.to_degrees() < 10.0), "{ang:?}");
    }
    let angles = class_subspace_angles(&data.samples, &data.labels, 4).unwrap();
    assert!(angles[(0, 1)] > 80.0 && angles[(1, 2)] > 80.0);
    let test = mixture_of_subspaces::<f64, _>(&config, &mut StdRng::seed_from_u64(1)).unwrap();
    assert!(ns.accuracy(&test.samples, &test.labels).unwrap() > 0.98);
    // f32 works too
    let d32 = mixture_of_subspaces::<f32, _>(&config, &mut StdRng::seed_from_u64(2)).unwrap();
    assert!(
        NearestSubspace::fit(
            &d32.samples,
            &d32.labels,
            &SubspaceConfig::new(4).centered()
        )
        .is_ok()
    );
}

#[test]
fn bad_inputs() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut c = SubspaceMixtureConfig::new(5, 2, 3, 10, 0.1);
    c.orthogonal = true; // 2 × 3 > 5
    assert!(matches!(
        mixture_of_subspaces::<f64, _>(&c, &mut rng),
        Err(Error::InvalidParameter { .. })
    ));
    let c = SubspaceMixtureConfig::new(5, 2, 6, 10, 0.1); // p > d
    assert!(mixture_of_subspaces::<f64, _>(&c, &mut rng).is_err());
    let c = SubspaceMixtureConfig::new(5, 2, 2, 10, -0.1);
    assert!(mixture_of_subspaces::<f64, _>(&c, &mut rng).is_err());
    let x = Array2::<f64>::ones((4, 3));
    assert!(SubspaceFit::fit(&x, &SubspaceConfig::new(0).centered()).is_err());
    assert!(matches!(
        NearestSubspace::fit(
            &x,
            &Labels::new(&[0, 0, 0, 0], 2).unwrap(),
            &SubspaceConfig::new(1)
        ),
        Err(Error::EmptyClass { class: 1 })
    ));
    assert!(matches!(
        NearestSubspace::fit(
            &x,
            &Labels::new(&[0, 1], 2).unwrap(),
            &SubspaceConfig::new(1)
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let ns = NearestSubspace::fit(
        &x,
        &Labels::new(&[0, 0, 1, 1], 2).unwrap(),
        &SubspaceConfig::new(1),
    )
    .unwrap();
    assert!(matches!(
        ns.predict(&Array2::<f64>::ones((2, 4))),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut bad = x.clone();
    bad[(0, 0)] = f64::NAN;
    assert!(matches!(
        SubspaceFit::fit(&bad, &SubspaceConfig::new(1).centered()),
        Err(Error::NonFinite { .. })
    ));
}
