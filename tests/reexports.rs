//! A downstream crate needs no ndarray or rand of its own: everything through `mcr2::ndarray`
//! and `mcr2::rand` (this file names neither crate directly).

use mcr2::crate_layer::{CrateBlock, CrateBlockConfig};
use mcr2::ndarray::{Array2, array};
use mcr2::rand::{SeedableRng, rngs::StdRng};
use mcr2::{Membership, Precision, rate_reduction};

#[test]
fn arrays_and_generators_through_the_reexports() -> Result<(), mcr2::Error> {
    let z = array![
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0]
    ];
    let labels = Membership::hard(&[0, 0, 1, 1], 2)?;
    let eps = Precision::from_eps_sq(0.5)?;
    let rr = rate_reduction(&z, &labels, eps)?;
    assert!((rr.r - 5f64.ln()).abs() < 1e-12);
    // a view goes in as `&view`
    let view = z.view();
    assert_eq!(rate_reduction(&view, &labels, eps)?, rr);
    let mut rng = StdRng::seed_from_u64(0);
    let block = CrateBlock::<f64>::new(&CrateBlockConfig::new(4, 2, 2), &mut rng)?;
    let x = Array2::<f64>::from_elem((3, 4), 0.5);
    assert_eq!(block.forward(&x)?.dim(), (3, 4));
    Ok(())
}
