use ndarray::{Array2, ArrayViewMut2, array};

use super::*;

/// Deterministic values uniform in [−0.5, 0.5) from a simple LCG.
fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }
}

fn spd(n: usize, seed: u64) -> Array2<f64> {
    // deterministic, well-conditioned: B Bᵀ + n I
    let mut next = uniform(seed);
    let b = Array2::from_shape_fn((n, n + 3), |_| next());
    let mut a = b.dot(&b.t());
    a.diag_mut().mapv_inplace(|x| x + n as f64);
    a
}

#[test]
fn cholesky_logdet_inverse_solve() {
    let a = spd(7, 1);
    let f = Cholesky::new(a.clone(), "a", true).unwrap();
    let l = f.factor();
    let back = l.dot(&l.t());
    assert!((&back - &a).iter().all(|x| x.abs() < 1e-12));
    let inv = f.inverse(true);
    let id = a.dot(&inv);
    assert!(
        (&id - &Array2::<f64>::eye(7))
            .iter()
            .all(|x| x.abs() < 1e-12)
    );
    let (vals, _) = super::eigh::<f64>(a.view()).unwrap();
    let logdet: f64 = vals.iter().map(|v| v.ln()).sum();
    assert!((f.logdet() - logdet).abs() < 1e-12 * logdet.abs().max(1.0));
    let mut b = array![
        [1.0, 2.0],
        [0.0, 1.0],
        [3.0, -1.0],
        [0.5, 0.5],
        [1.0, 1.0],
        [2.0, 0.0],
        [0.0, 0.0]
    ];
    let b0 = b.clone();
    f.solve_in_place(b.view_mut(), true);
    assert!((a.dot(&b) - b0).iter().all(|x| x.abs() < 1e-12));
}

#[test]
fn cholesky_reports_indefinite() {
    let a = array![[1.0, 2.0], [2.0, 1.0]];
    assert!(matches!(
        Cholesky::new(a, "a", false),
        Err(crate::Error::Factorization { pivot: 1, .. })
    ));
}

#[test]
fn grams_are_lower_products() {
    let z = array![[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]];
    let mut g = Array2::zeros((3, 3));
    super::gram_cols::<f64>(z.view(), 2.0, false, g.view_mut(), false);
    let full = z.t().dot(&z) * 2.0;
    for i in 0..3 {
        for j in 0..=i {
            assert!((g[(i, j)] - full[(i, j)]).abs() < 1e-14);
        }
    }
    let mut k = Array2::zeros((2, 2));
    super::gram_rows::<f64>(z.view(), 1.0, false, k.view_mut(), true);
    let full = z.dot(&z.t());
    for i in 0..2 {
        for j in 0..=i {
            assert!((k[(i, j)] - full[(i, j)]).abs() < 1e-14);
        }
    }
}

#[test]
fn thin_svd_reconstructs() {
    let a = array![[3.0, 1.0], [1.0, 3.0], [0.0, 1.0]];
    let (u, s, v) = super::thin_svd::<f64>(a.view()).unwrap();
    assert_eq!(u.dim(), (3, 2));
    assert_eq!(v.dim(), (2, 2));
    assert!(s[0] >= s[1]);
    let rec = (&u * &s).dot(&v.t());
    assert!((&rec - &a).iter().all(|x| x.abs() < 1e-12));
}

/// The two backends agree to 1e-12 on every operation of the interface.
#[cfg(feature = "lapack")]
#[test]
fn backends_agree() {
    use super::{faer_backend as fb, lapack_backend as lb};
    let close = |x: &Array2<f64>, y: &Array2<f64>, what: &str| {
        let scale = x.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let err = (x - y).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err <= 1e-12 * scale, "{what}: {err:e}");
    };
    let lower = |a: &Array2<f64>| {
        let mut a = a.clone();
        for i in 0..a.nrows() {
            for j in (i + 1)..a.ncols() {
                a[(i, j)] = 0.0;
            }
        }
        a
    };
    let a = spd(40, 7);
    let z = spd(40, 9)
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..25))
        .to_owned();
    let (mut g1, mut g2) = (Array2::zeros((40, 40)), Array2::zeros((40, 40)));
    fb::gram_cols(z.view(), 0.5, false, g1.view_mut(), true);
    lb::gram_cols(z.view(), 0.5, false, g2.view_mut(), true);
    close(&lower(&g1), &lower(&g2), "gram_cols");
    let (mut k1, mut k2) = (Array2::zeros((25, 25)), Array2::zeros((25, 25)));
    fb::gram_cols(z.t(), 0.5, false, k1.view_mut(), true);
    lb::gram_cols(z.t(), 0.5, false, k2.view_mut(), true);
    close(&lower(&k1), &lower(&k2), "gram_rows");
    let (mut c1, mut c2) = (Array2::zeros((25, 40)), Array2::zeros((25, 40)));
    fb::gemm(1.5, z.view(), a.view(), false, c1.view_mut(), true);
    lb::gemm(1.5, z.view(), a.view(), false, c2.view_mut(), true);
    close(&c1, &c2, "gemm");
    let (mut l1, mut l2) = (a.clone(), a.clone());
    fb::cholesky_in_place(l1.view_mut(), true).unwrap();
    lb::cholesky_in_place(l2.view_mut(), true).unwrap();
    let (l1, l2) = (lower(&l1), lower(&l2));
    close(&l1, &l2, "cholesky");
    close(
        &fb::cholesky_inverse(l1.view(), true),
        &lb::cholesky_inverse(l2.view(), true),
        "inverse",
    );
    let (mut b1, mut b2) = (z.t().to_owned(), z.t().to_owned());
    fb::cholesky_solve_in_place(l1.view(), b1.view_mut(), true);
    lb::cholesky_solve_in_place(l2.view(), b2.view_mut(), true);
    close(&b1, &b2, "solve");
    let (e1, v1) = fb::eigh(a.view()).unwrap();
    let (e2, v2) = lb::eigh(a.view()).unwrap();
    close(
        &e1.insert_axis(ndarray::Axis(0)),
        &e2.insert_axis(ndarray::Axis(0)),
        "eigenvalues",
    );
    // eigenvectors up to sign
    for c in 0..40 {
        let s = v1.column(c).dot(&v2.column(c)).signum();
        let d = (&v1.column(c) - &(&v2.column(c) * s))
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(d < 1e-10, "eigenvector {c}: {d:e}");
    }
    let (_, s1, _) = fb::thin_svd(z.view()).unwrap();
    let (_, s2, _) = lb::thin_svd(z.view()).unwrap();
    close(
        &s1.insert_axis(ndarray::Axis(0)),
        &s2.insert_axis(ndarray::Axis(0)),
        "singular values",
    );
}

/// The product on several threads is bit for bit the single-threaded product, for the
/// blocks' shapes (and ragged ones), row- and column-major outputs, with and without
/// accumulation: as tiles (16 threads; 2 and 3 threads for short reductions, among them
/// one row tile by column tiles 96 wide) and as faer's own parallel product (long
/// reductions on 2 and 3 threads).
#[cfg(all(feature = "parallel", not(feature = "lapack")))]
#[test]
fn tiled_products_are_the_single_threaded_ones_bit_for_bit() {
    use super::faer_backend as fb;
    fn check<T: crate::Float + faer::traits::RealField>(of: fn(f64) -> T) {
        let mut uniform = uniform(3);
        let mut next = || of(uniform());
        for threads in [2, 3, 16] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (m, k, n) in [
                (197, 96, 96),
                (197, 300, 570),
                (384, 197, 130),
                (1000, 64, 200),
                (70, 300, 130),
                (130, 1500, 100),
            ] {
                let a = Array2::from_shape_simple_fn((m, k), &mut next);
                let b = Array2::from_shape_simple_fn((n, k), &mut next);
                let c0 = Array2::from_shape_simple_fn((m, n), &mut next);
                for accumulate in [false, true] {
                    for column_major in [false, true] {
                        let fresh = || {
                            if column_major {
                                c0.t().as_standard_layout().reversed_axes().to_owned()
                            } else {
                                c0.clone()
                            }
                        };
                        let mut one = fresh();
                        fb::gemm(of(1.5), a.view(), b.t(), accumulate, one.view_mut(), false);
                        let mut many = fresh();
                        pool.install(|| {
                            let (r, c) = fb::tiles(m, k, n, threads);
                            assert!(r * c > 1);
                            fb::gemm(of(1.5), a.view(), b.t(), accumulate, many.view_mut(), true)
                        });
                        assert_eq!(
                            one, many,
                            "{m}×{k}×{n}, accumulate {accumulate}, {threads} threads"
                        );
                    }
                }
            }
        }
    }
    check::<f32>(|v| v as f32);
    check::<f64>(|v| v);
}

/// Long reductions (weight gradients) go to faer's own threads on small pools only.
#[cfg(all(feature = "parallel", not(feature = "lapack")))]
#[test]
fn long_reductions_use_faer_threads_on_few_threads() {
    use super::faer_backend::long_reduction_on_few_threads as few;
    // 384 × 6304 by 6304 × 384: a CRATE-T weight gradient at batch 32
    assert!(few(384, 6304, 384, 2));
    assert!(few(384, 6304, 384, 4));
    assert!(!few(384, 6304, 384, 16));
    // token products (k = dim ≤ rows) keep the tiles at any thread count
    assert!(!few(6304, 384, 384, 2));
    assert!(!few(197, 384, 384, 2));
    assert!(!few(384, 384, 384, 2));
}

/// The tile grid: within its bounds, and one tile for small products.
#[cfg(all(feature = "parallel", not(feature = "lapack")))]
#[test]
fn tile_grids() {
    use super::faer_backend::tiles;
    // 16 threads: the sweep's grids
    assert_eq!(tiles(197, 384, 384, 16), (3, 8));
    assert_eq!(tiles(197, 576, 576, 16), (3, 12));
    assert_eq!(tiles(6304, 384, 384, 16), (32, 3));
    assert_eq!(tiles(1576, 384, 384, 16), (24, 4));
    assert_eq!(tiles(64, 64, 64, 16), (1, 1));
    // 2 threads: column tiles of whole multiples of 96 for tall products, one row tile per
    // thread by two column tiles below 4096 rows
    assert_eq!(tiles(6304, 384, 384, 2), (32, 2));
    assert_eq!(tiles(6304, 576, 576, 2), (32, 3));
    assert_eq!(tiles(1576, 576, 576, 2), (2, 2));
    // short products: one row tile by column tiles 96 wide, when they give each thread
    // three or more, share the threads evenly, and k is at least the rows
    assert_eq!(tiles(197, 384, 384, 2), (2, 2));
    assert_eq!(tiles(197, 576, 576, 2), (1, 6));
    assert_eq!(tiles(197, 384, 1536, 4), (1, 16));
    assert_eq!(tiles(197, 576, 1152, 3), (1, 12));
    assert_eq!(tiles(197, 576, 576, 4), (3, 2));
    assert_eq!(tiles(384, 197, 384, 2), (2, 2));
    assert_eq!(tiles(394, 576, 576, 2), (2, 2));
    assert_eq!(tiles(100, 300, 130, 4), (1, 2));
    assert_eq!(tiles(64, 64, 64, 2), (1, 1));
    for threads in [1, 2, 16] {
        for (m, k, n) in [(1, 1, 1), (0, 5, 5), (100_000, 2, 100_000), (5, 100_000, 5)] {
            let (r, c) = tiles(m, k, n, threads);
            assert!(r >= 1 && c >= 1 && r * c <= 96, "{m} {k} {n}: {r} × {c}");
        }
    }
}

/// `gemm_then` maps every entry of the product exactly once (the map `v ↦ 2v + 1` would
/// show a second application), and gives the bits of the product followed by the map: on
/// one thread, on tiles of 2, 3 and 16 threads, and on the long reductions that go to
/// faer's own threads.
#[test]
fn mapped_products_map_each_entry_once() {
    fn check<T: crate::Float>(of: fn(f64) -> T) {
        let mut uniform = uniform(4);
        let mut next = || of(uniform());
        let once = |mut block: ArrayViewMut2<'_, T>| {
            block.map_inplace(|v| *v = of(2.0) * *v + T::one());
        };
        #[cfg(feature = "parallel")]
        let pools: Vec<_> = [1, 2, 3, 16]
            .into_iter()
            .map(|t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
            })
            .collect();
        for (m, k, n) in [(197, 96, 96), (1000, 64, 200), (130, 1500, 100), (5, 3, 4)] {
            let a = Array2::from_shape_simple_fn((m, k), &mut next);
            let b = Array2::from_shape_simple_fn((k, n), &mut next);
            let mut want = Array2::from_elem((m, n), of(f64::NAN));
            gemm(of(1.5), a.view(), b.view(), false, want.view_mut(), false);
            want.mapv_inplace(|v| of(2.0) * v + T::one());
            let run = |parallel: bool| {
                // the stale contents of a reused buffer must not leak into the result
                let mut got = Array2::from_elem((m, n), of(f64::NAN));
                gemm_then(of(1.5), a.view(), b.view(), got.view_mut(), parallel, &once);
                got
            };
            assert_eq!(run(false), want, "{m}×{k}×{n}, one thread");
            #[cfg(feature = "parallel")]
            for pool in &pools {
                let threads = pool.current_num_threads();
                assert_eq!(
                    pool.install(|| run(true)),
                    want,
                    "{m}×{k}×{n}, {threads} threads"
                );
            }
        }
    }
    check::<f32>(|v| v as f32);
    check::<f64>(|v| v);
}
