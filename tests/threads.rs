//! Results do not depend on the thread count: every parallel pass splits work along rows,
//! heads or sequences and computes each by the same code, so outputs and gradients are bit
//! for bit those of one thread.
#![cfg(feature = "parallel")]

mod common;

use mcr2::crate_layer::{CrateBlock, CrateBlockConfig, CrateClassifier, CrateConfig};
use mcr2::nn::Trainable;
use ndarray::{Array2, Array3, Array4, ArrayD};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// ∂L/∂x and every parameter gradient of a layer's training pass on `rows` (sequences of
/// `n` tokens) for the upstream gradient `dy`.
fn train_pass<L: Trainable<f64>>(
    layer: &L,
    rows: &Array2<f64>,
    n: usize,
    dy: &Array2<f64>,
) -> (Array2<f64>, Vec<ArrayD<f64>>) {
    let (_, cache) = layer.forward_train(rows.view(), n).unwrap();
    let mut grads = common::zero_gradients(layer);
    let dx = layer.backward(&cache, dy.view(), &mut grads).unwrap();
    (dx, grads)
}

/// Output, ∂L/∂x and every parameter gradient of a block for the upstream gradient `dy`.
fn block_pass(
    block: &CrateBlock<f64>,
    x: &Array3<f64>,
    dy: &Array2<f64>,
) -> (Array3<f64>, Array2<f64>, Vec<ArrayD<f64>>) {
    let (b, n, d) = x.dim();
    let y = block.forward_batch(x).unwrap();
    let rows = x.to_shape((b * n, d)).unwrap().to_owned();
    let (dx, grads) = train_pass(block, &rows, n, dy);
    (y, dx, grads)
}

#[test]
fn a_crate_block_is_bit_for_bit_the_same_on_any_thread_count() {
    let mut rng = StdRng::seed_from_u64(7);
    let config = CrateBlockConfig::new(96, 3, 32);
    let block = CrateBlock::<f64>::new(&config, &mut rng).unwrap();
    // 24 sequences of 50 tokens: large enough that every row-parallel pass splits
    let x = Array3::from_shape_simple_fn((24, 50, 96), || rng.sample(StandardNormal));
    let dy = Array2::from_shape_simple_fn((24 * 50, 96), || rng.sample(StandardNormal));
    let one = on_threads(1, || block_pass(&block, &x, &dy));
    for threads in [2, 3, 4] {
        let many = on_threads(threads, || block_pass(&block, &x, &dy));
        assert_eq!(one.0, many.0, "output, {threads} threads");
        assert_eq!(one.1, many.1, "∂L/∂x, {threads} threads");
        assert_eq!(one.2, many.2, "parameter gradients, {threads} threads");
    }
    // and a single sequence (50 × 50 scores per head: below the work at which attention
    // goes to the pool, so the heads run on the calling thread; the CRATE-T-sized test
    // below runs them in parallel)
    let x1 = x.slice(ndarray::s![..1, .., ..]).to_owned();
    let y1 = on_threads(1, || block.forward_batch(&x1).unwrap());
    for threads in [3, 16] {
        assert_eq!(
            y1,
            on_threads(threads, || block.forward_batch(&x1).unwrap())
        );
    }
}

/// At batch 1 on many threads the inference forward cuts each head's query rows into
/// blocks (CRATE-T's 6 heads on 16 threads: 8 blocks of 25 rows, on 12 threads: 2 blocks):
/// the output is still that of one thread, bit for bit, in f32 and f64.
#[test]
fn query_blocks_of_one_sequence_are_bit_for_bit_the_whole_heads() {
    fn check<T: mcr2::Float>(seed: u64)
    where
        StandardNormal: rand_distr::Distribution<T>,
    {
        let mut rng = StdRng::seed_from_u64(seed);
        // CRATE-T's sizes: 6 heads of 64 on 384-dimensional tokens, 197 tokens
        let block = CrateBlock::<T>::new(&CrateBlockConfig::new(384, 6, 64), &mut rng).unwrap();
        let x = Array3::<T>::from_shape_simple_fn((1, 197, 384), || rng.sample(StandardNormal));
        let one = on_threads(1, || block.forward_batch(&x).unwrap());
        for threads in [5, 12, 16] {
            let many = on_threads(threads, || block.forward_batch(&x).unwrap());
            assert_eq!(one, many, "{threads} threads");
        }
    }
    check::<f32>(10);
    check::<f64>(11);
}

/// Called from a thread outside any pool (the test's own), a large computation moves onto the
/// global pool as a whole before its parallel steps start; the results are still those of one
/// thread, bit for bit: a CRATE block's output and gradients, a classifier's logits, ΔR
/// with its gradient.
#[test]
fn computations_started_outside_the_pool_are_those_of_one_thread() {
    let mut rng = StdRng::seed_from_u64(11);
    let block = CrateBlock::<f64>::new(&CrateBlockConfig::new(96, 3, 32), &mut rng).unwrap();
    let x = Array3::from_shape_simple_fn((24, 50, 96), || rng.sample(StandardNormal));
    let dy = Array2::from_shape_simple_fn((24 * 50, 96), || rng.sample(StandardNormal));
    let outside = block_pass(&block, &x, &dy);
    let one = on_threads(1, || block_pass(&block, &x, &dy));
    assert_eq!(outside.0, one.0, "block output");
    assert_eq!(outside.1, one.1, "block ∂L/∂x");
    assert_eq!(outside.2, one.2, "block parameter gradients");

    let config = CrateConfig::new(32, 4, 10, 64, 2, 2, 32);
    let model = CrateClassifier::<f32>::new(&config, &mut rng).unwrap();
    let images = Array4::from_shape_simple_fn((16, 3, 32, 32), || rng.sample(StandardNormal));
    let logits = model.forward(&images).unwrap();
    assert_eq!(logits, on_threads(1, || model.forward(&images).unwrap()));

    let z = Array2::<f64>::from_shape_simple_fn((3000, 64), || rng.sample(StandardNormal));
    let labels: Vec<usize> = (0..3000).map(|i| (i * 7) % 5).collect();
    let m = mcr2::Membership::hard(&labels, 5).unwrap();
    let eps = mcr2::Precision::from_eps_sq(0.5).unwrap();
    let (rr, g) = mcr2::rate_reduction_with_grad(&z, &m, eps).unwrap();
    let (rr1, g1) = on_threads(1, || mcr2::rate_reduction_with_grad(&z, &m, eps).unwrap());
    assert_eq!(rr.delta_r.to_bits(), rr1.delta_r.to_bits());
    assert_eq!(g, g1);
}

#[test]
fn a_crate_classifier_is_bit_for_bit_the_same_on_any_thread_count() {
    let mut rng = StdRng::seed_from_u64(8);
    let config = CrateConfig::new(32, 4, 10, 64, 2, 2, 32);
    let model = CrateClassifier::<f32>::new(&config, &mut rng).unwrap();
    let images = Array4::from_shape_simple_fn((16, 3, 32, 32), || rng.sample(StandardNormal));
    let one = on_threads(1, || model.forward(&images).unwrap());
    for threads in [2, 4] {
        assert_eq!(one, on_threads(threads, || model.forward(&images).unwrap()));
    }
}

#[test]
fn a_tost_block_is_bit_for_bit_the_same_on_any_thread_count() {
    use mcr2::tost::{ToStBlock, ToStBlockConfig};
    let mut rng = StdRng::seed_from_u64(9);
    let block = ToStBlock::<f64>::new(&ToStBlockConfig::new(64, 4), &mut rng).unwrap();
    // one long sequence (the row passes and GELU split inside it) and a small batch
    for shape in [(1, 1200, 64), (3, 400, 64)] {
        let x = Array3::from_shape_simple_fn(shape, || rng.sample(StandardNormal));
        let one = on_threads(1, || block.forward_batch(&x).unwrap());
        for threads in [2, 3] {
            assert_eq!(
                one,
                on_threads(threads, || block.forward_batch(&x).unwrap())
            );
        }
        let rows = x.to_shape((shape.0 * shape.1, 64)).unwrap().to_owned();
        let dy = Array2::from_shape_simple_fn(rows.raw_dim(), || rng.sample(StandardNormal));
        let pass = || train_pass(&block, &rows, shape.1, &dy);
        assert_eq!(on_threads(1, pass), on_threads(3, pass));
    }
}

#[test]
fn causal_tssa_training_is_bit_for_bit_the_same_on_any_thread_count() {
    use mcr2::tost::{CausalTssa, CausalTssaConfig};
    let mut rng = StdRng::seed_from_u64(10);
    let config = CausalTssaConfig {
        dim: 32,
        heads: 4,
        block_size: 300,
    };
    let layer = CausalTssa::<f64>::new(&config, &mut rng).unwrap();
    // a batch of sequences (one per task) and a single sequence (no split)
    for (b, n) in [(5, 300), (1, 64)] {
        let rows = Array2::from_shape_simple_fn((b * n, 32), || rng.sample(StandardNormal));
        let dy = Array2::from_shape_simple_fn(rows.raw_dim(), || rng.sample(StandardNormal));
        let pass = || {
            let (y, _) = layer.forward_train(rows.view(), n).unwrap();
            (y, train_pass(&layer, &rows, n, &dy))
        };
        let one = on_threads(1, pass);
        for threads in [2, 3] {
            assert_eq!(one, on_threads(threads, pass));
        }
    }
}
