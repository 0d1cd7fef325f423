//! The sweep of CRATE-α and CRATE-MAE (see `tests/sweep.rs`): constructors with extreme
//! sizes and constants, and forwards on images holding extreme values.

use super::*;
use mcr2::crate_alpha::{
    CrateAlphaBlock, CrateAlphaBlockConfig, CrateAlphaClassifier, CrateAlphaConfig, Odl, OdlConfig,
};
use mcr2::crate_mae::{
    CrateMae, CrateMaeConfig, Masking, patchify, sincos_position_embedding, unpatchify,
};

/// Constructors of both families with every extreme size and constant.
pub(super) fn newer_constructors(s: &mut Sweep) {
    let mut rng = StdRng::seed_from_u64(5);
    for a in sizes() {
        s.make(
            || format!("OdlConfig dim {a}"),
            || Odl::<f32>::new(&OdlConfig::new(a), &mut rng),
        );
        s.make(
            || format!("Odl ratio {a}"),
            || {
                Odl::<f32>::new(
                    &OdlConfig {
                        ratio: a,
                        ..OdlConfig::new(4)
                    },
                    &mut rng,
                )
            },
        );
        s.make(
            || format!("CrateAlphaBlock dim {a}"),
            || CrateAlphaBlock::<f32>::new(&CrateAlphaBlockConfig::new(a, 2, a), &mut rng),
        );
        s.make(
            || format!("CrateAlphaClassifier image {a}"),
            || {
                CrateAlphaClassifier::<f32>::new(
                    &CrateAlphaConfig::new(a, 2, 3, 8, 1, 2, 4),
                    &mut rng,
                )
            },
        );
        s.make(
            || format!("CrateAlphaClassifier depth {a}"),
            || {
                CrateAlphaClassifier::<f32>::new(
                    &CrateAlphaConfig::new(4, 2, 3, 8, a, 2, 4),
                    &mut rng,
                )
            },
        );
        s.make(
            || format!("CrateMae dim {a}"),
            || CrateMae::<f32>::new(&CrateMaeConfig::new(4, 2, a, 1, 1, 8, 1, 2), &mut rng),
        );
        s.make(
            || format!("CrateMae decoder depth {a}"),
            || CrateMae::<f32>::new(&CrateMaeConfig::new(4, 2, 8, 1, 2, 8, a, 2), &mut rng),
        );
        s.make(
            || format!("Masking::random len {a}"),
            || Masking::random(2, a, 0.5, &mut rng),
        );
        s.make(
            || format!("Masking::random batch {a}"),
            || Masking::random(a, 4, 0.5, &mut rng),
        );
        s.make(
            || format!("sincos dim {a}"),
            || sincos_position_embedding(a, 2),
        );
        s.make(
            || format!("sincos grid {a}"),
            || sincos_position_embedding(8, a),
        );
        s.make(
            || format!("patchify patch {a}"),
            || patchify(&Array4::<f32>::zeros((1, 1, 4, 4)), a),
        );
        s.make(
            || format!("unpatchify rows {a}"),
            || unpatchify(&Array3::<f32>::zeros((1, 4, 4)), 2, 1, a),
        );
        s.make(
            || format!("CrateAlphaConfig::named B/{a}"),
            || CrateAlphaConfig::named(&format!("B/{a}")),
        );
    }
    for &p in &PARAMS {
        s.make(
            || format!("Odl step {p:e}"),
            || Odl::<f64>::from_parts(Array2::eye(2), Array2::eye(2), p, 0.1),
        );
        s.make(
            || format!("Odl lambda {p:e}"),
            || Odl::<f64>::from_parts(Array2::eye(2), Array2::eye(2), 0.1, p),
        );
        s.make(
            || format!("Masking ratio {p:e}"),
            || Masking::random(2, 4, p, &mut rng),
        );
        let mut block = CrateAlphaBlockConfig::new(4, 2, 2);
        block.ln_eps = p;
        s.make(
            || format!("CrateAlphaBlock ln_eps {p:e}"),
            || CrateAlphaBlock::<f64>::new(&block, &mut rng),
        );
        let mut mae = CrateMaeConfig::new(4, 2, 8, 1, 2, 8, 1, 2);
        mae.encoder.ista_lambda = p;
        s.make(
            || format!("CrateMae ista_lambda {p:e}"),
            || CrateMae::<f64>::new(&mae, &mut rng),
        );
    }
}

/// Forwards of small models on images filled with `v` (and one ordinary pixel).
pub(super) fn newer_forwards<T: Float + Finite>(s: &mut Sweep, v: f64) {
    let mut rng = StdRng::seed_from_u64(6);
    let mut images = Array4::<T>::from_elem((2, 3, 4, 4), T::from_f64(v));
    images[(0, 0, 0, 0)] = T::from_f64(0.5);
    let alpha =
        CrateAlphaClassifier::<T>::new(&CrateAlphaConfig::new(4, 2, 3, 8, 1, 2, 4), &mut rng)
            .unwrap();
    s.call(
        || format!("CrateAlphaClassifier::forward {} v={v:e}", T::NAME),
        || alpha.forward(&images),
    );
    s.call(
        || format!("CrateAlphaClassifier::code_sparsity {} v={v:e}", T::NAME),
        || alpha.code_sparsity(&images),
    );
    let rows = Array2::<T>::from_elem((3, 8), T::from_f64(v));
    let odl = Odl::<T>::new(&OdlConfig::new(8), &mut rng).unwrap();
    s.call(
        || format!("Odl::forward {} v={v:e}", T::NAME),
        || odl.forward(&rows),
    );
    s.call(
        || format!("CrateAlphaBlock::forward {} v={v:e}", T::NAME),
        || alpha.blocks()[0].forward(&rows),
    );
    let mae = CrateMae::<T>::new(&CrateMaeConfig::new(4, 2, 8, 1, 2, 8, 1, 2), &mut rng).unwrap();
    let masking = Masking::random(2, 4, 0.5, &mut rng).unwrap();
    let mut mae_images = Array4::<T>::from_elem((2, 3, 4, 4), T::from_f64(v));
    mae_images[(1, 2, 3, 3)] = T::from_f64(-0.25);
    s.call(
        || format!("CrateMae::forward {} v={v:e}", T::NAME),
        || mae.forward(&mae_images, &masking).map(|o| (o.pred, o.loss)),
    );
    s.call(
        || format!("CrateMae::reconstruct {} v={v:e}", T::NAME),
        || mae.reconstruct(&mae_images, &masking),
    );
}
