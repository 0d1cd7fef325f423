//! Serialization round trips (feature `serde`).
#![cfg(feature = "serde")]

use mcr2::{Labels, Precision, RateStats, ReferenceLoss};
use ndarray::Array2;

#[test]
fn rate_stats_round_trip_preserves_rates() {
    let z = Array2::from_shape_fn((40, 6), |(i, j)| {
        ((i * 13 + j * 7) % 11) as f64 / 11.0 - 0.4
    });
    let labels: Vec<usize> = (0..40).map(|i| i % 3).collect();
    let mut stats = RateStats::new(6, 3).unwrap();
    stats.push(&z, &Labels::new(&labels, 3).unwrap()).unwrap();
    let eps = Precision::from_eps(0.5).unwrap();
    let json = serde_json::to_string(&stats).unwrap();
    let back: RateStats<f64> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, stats);
    assert_eq!(
        back.rate_reduction(eps).unwrap(),
        stats.rate_reduction(eps).unwrap()
    );
}

#[test]
fn malformed_stats_are_rejected() {
    let stats = RateStats::<f64>::new(2, 2).unwrap();
    let json = serde_json::to_string(&stats).unwrap();
    // a Gram matrix of the wrong size
    let bad = json.replacen("\"dim\":[2,2]", "\"dim\":[3,3]", 1);
    assert_ne!(bad, json);
    assert!(serde_json::from_str::<RateStats<f64>>(&bad).is_err());
    // a negative class weight
    let bad = json.replacen("\"traces\":[0.0,0.0]", "\"traces\":[-1.0,0.0]", 1);
    assert_ne!(bad, json);
    assert!(serde_json::from_str::<RateStats<f64>>(&bad).is_err());
    // class weights beyond the sample count (1e300 made Rc = NaN in f32)
    let mut stats = RateStats::<f32>::new(2, 1).unwrap();
    let one = Labels::new(&[0, 0], 1).unwrap();
    stats
        .push(&ndarray::array![[1.0f32, 0.0], [0.0, 1.0]], &one)
        .unwrap();
    let json = serde_json::to_string(&stats).unwrap();
    let bad = json.replacen("\"traces\":[2.0]", "\"traces\":[1e300]", 1);
    assert_ne!(bad, json);
    assert!(serde_json::from_str::<RateStats<f32>>(&bad).is_err());
    let back: RateStats<f32> = serde_json::from_str(&json).unwrap();
    let eps = Precision::from_eps_sq(0.5).unwrap();
    assert!(back.rate_reduction(eps).unwrap().rc.is_finite());
}

#[test]
fn precision_and_loss_round_trip_and_validate() {
    let p = Precision::from_eps(0.5).unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(json, "{\"eps_sq\":0.25}");
    assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), p);
    assert!(serde_json::from_str::<Precision>("{\"eps_sq\":-1.0}").is_err());
    let l = ReferenceLoss::new(p, 20.0, 0.05).unwrap();
    let back: ReferenceLoss = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
    assert_eq!(back, l);
}
