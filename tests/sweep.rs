//! The reliability contract as a sweep: every public constructor and function, called with
//! extreme sizes (0, 2³¹, 2³², 2⁶², `usize::MAX`) and values (±0, subnormals, 1e20, 1e38,
//! `f32::MAX`, 1e308, `f64::MAX`, NaN, ±∞), each call under `catch_unwind`, must return an
//! error or a finite result: never a panic, an abort on allocation, a hang, or `Ok` holding
//! NaN/Inf.
//!
//! Quick by default (a grid of extremes plus a few random mixtures, under a second in a
//! release build; the budget is 4 MiB); set `MCR2_SWEEP=full` for 50 times more random cases
//! and a 256 MiB budget under which 2²⁰-sized layers are built and run. A tracking
//! allocator checks that no call even attempted an allocation above the budget.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use mcr2::coding::{Coder, Micl, alc};
use mcr2::crate_layer::{
    CrateBlock, CrateBlockConfig, CrateClassifier, CrateConfig, CrateEncoderConfig, Ista, Mssa,
};
use mcr2::data::{SubspaceMixtureConfig, gaussian_toy, mixture_of_subspaces};
use mcr2::fit::{FitConfig, LinearMap, ascend_on_sphere};
use mcr2::nn::{Checkpoint, LayerNorm, LayerNormConfig, Linear, LinearConfig, Mlp, MlpConfig};
use mcr2::redunet::{ReduNet, ReduNetConfig};
use mcr2::subspace::{NearestSubspace, SubspaceConfig, SubspaceFit, principal_angles};
use mcr2::tost::{CausalTssa, CausalTssaConfig, ToStBlock, ToStBlockConfig, Tssa, TssaConfig};
use mcr2::{Error, Float, Labels, Membership, Precision, RateStats, ReferenceLoss, metrics};
use ndarray::{Array, Array1, Array2, Array3, Array4, Dimension};
use rand::{Rng, SeedableRng, rngs::StdRng};

#[path = "sweep/constructors.rs"]
mod constructors;
use constructors::{constructors, labels6};

#[path = "sweep/newer_models.rs"]
mod newer_models;

/// The system allocator, recording the largest single request: the sweep checks, call by
/// call, that none even attempted an allocation above the memory budget (the two tests take
/// turns through `SERIAL` so that each call's record is its own).
///
/// Page-aligned requests are not counted: they are the matrix-multiplication kernel's
/// per-thread packing buffers (faer's gemm backend reserves twice the L3 cache size once per
/// thread, uninitialized), whose size follows from the machine, not from any argument.
struct Tracking;

fn record(layout: Layout) {
    if layout.align() < 4096 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
    }
}

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the same arguments.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Ok(grown) = Layout::from_size_align(new_size, layout.align()) {
            record(grown);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The memory budget of the sweep: 4 MiB in quick mode (2²⁰-sized layers are then refused
/// at once), 256 MiB in full mode (where they are built and run).
fn budget() -> usize {
    if full() { 256 << 20 } else { 4 << 20 }
}

const SIZES: [usize; 8] = [0, 1, 2, 3, 1 << 31, 1 << 32, 1 << 62, usize::MAX];

/// The sizes and 2²⁰, which exceeds the quick budget and fits the full one.
fn sizes() -> Vec<usize> {
    let mut sizes = SIZES.to_vec();
    sizes.push(1 << 20);
    sizes
}

fn full() -> bool {
    std::env::var("MCR2_SWEEP").as_deref() == Ok("full")
}
const VALUES: [f64; 14] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    5e-324,
    1e-308,
    1e-45,
    1e20,
    1e38,
    f32::MAX as f64,
    1e300,
    -1e308,
    f64::MAX,
    f64::NAN,
];
const PARAMS: [f64; 14] = [
    0.0,
    -1.0,
    5e-324,
    1e-308,
    1e-12,
    0.5,
    1e6,
    1e12,
    1e38,
    1e300,
    f64::MAX,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];

/// What a successful call returned must be finite.
trait Finite {
    fn finite(&self) -> bool;
}
impl Finite for () {
    fn finite(&self) -> bool {
        true
    }
}
impl Finite for usize {
    fn finite(&self) -> bool {
        true
    }
}
impl Finite for f32 {
    fn finite(&self) -> bool {
        self.is_finite()
    }
}
impl Finite for f64 {
    fn finite(&self) -> bool {
        self.is_finite()
    }
}
impl<A: Finite, D: Dimension> Finite for Array<A, D> {
    fn finite(&self) -> bool {
        self.iter().all(Finite::finite)
    }
}
impl<A: Finite> Finite for Vec<A> {
    fn finite(&self) -> bool {
        self.iter().all(Finite::finite)
    }
}
impl<A: Finite, B: Finite> Finite for (A, B) {
    fn finite(&self) -> bool {
        self.0.finite() && self.1.finite()
    }
}
impl<T: Finite> Finite for mcr2::RateReduction<T> {
    fn finite(&self) -> bool {
        self.r.finite() && self.rc.finite() && self.delta_r.finite() && self.class_terms.finite()
    }
}

#[derive(Default)]
struct Sweep {
    calls: usize,
    failures: Vec<String>,
}

impl Sweep {
    /// Calls `f` under `catch_unwind`: a panic, or `Ok` holding a non-finite value, is a
    /// failure.
    fn call<R: Finite>(
        &mut self,
        what: impl FnOnce() -> String,
        f: impl FnOnce() -> mcr2::Result<R>,
    ) {
        self.calls += 1;
        LARGEST.store(0, Ordering::Relaxed);
        let result = catch_unwind(AssertUnwindSafe(f));
        let largest = LARGEST.load(Ordering::Relaxed);
        if largest > budget() {
            self.failures
                .push(format!("allocated {largest} bytes: {}", what()));
            return;
        }
        match result {
            Err(_) => self.failures.push(format!("panic: {}", what())),
            Ok(Ok(r)) if !r.finite() => {
                self.failures.push(format!("Ok but not finite: {}", what()))
            }
            Ok(_) => {}
        }
    }

    /// A constructor: only that it returns.
    fn make<R>(&mut self, what: impl FnOnce() -> String, f: impl FnOnce() -> mcr2::Result<R>) {
        self.call(what, || f().map(|_| ()));
    }
}

fn stop_after<P>(n: usize) -> impl FnMut(&P) -> ControlFlow<()> {
    let mut calls = 0;
    move |_| {
        calls += 1;
        if calls >= n {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// A 6 × 4 matrix: `v` times a fixed ±1/½ pattern, or (mixed) ordinary values with one `v`.
fn matrix<T: Float>(v: f64, mixed: bool) -> Array2<T> {
    Array2::from_shape_fn((6, 4), |(i, j)| {
        let pattern = [1.0, -0.5, 0.25, -1.0, 0.5][(i * 3 + j) % 5];
        if mixed {
            if (i, j) == (2, 1) {
                T::from_f64(v)
            } else {
                T::from_f64(pattern)
            }
        } else {
            T::from_f64(v * pattern)
        }
    })
}

fn rates<T: Float + Finite>(s: &mut Sweep, z: &Array2<T>, tag: &str) {
    let labels = labels6();
    let hard = Membership::<T>::from(labels.clone());
    let soft = Membership::<T>::soft(Array2::from_elem((6, 2), T::from_f64(0.5))).unwrap();
    for &e in &PARAMS {
        let Ok(eps) = Precision::from_eps_sq(e) else {
            continue;
        };
        let w = || format!("{tag} eps²={e:e}");
        s.call(
            || format!("coding_rate {}", w()),
            || mcr2::coding_rate(z, eps),
        );
        s.call(
            || format!("coding_rate_with_grad {}", w()),
            || mcr2::coding_rate_with_grad(z, eps),
        );
        for m in [&hard, &soft] {
            s.call(
                || format!("class_coding_rate {}", w()),
                || mcr2::class_coding_rate(z, m, eps),
            );
            s.call(
                || format!("class_coding_rate_with_grad {}", w()),
                || mcr2::class_coding_rate_with_grad(z, m, eps),
            );
            s.call(
                || format!("rate_reduction {}", w()),
                || mcr2::rate_reduction(z, m, eps),
            );
            s.call(
                || format!("rate_reduction_with_grad {}", w()),
                || mcr2::rate_reduction_with_grad(z, m, eps),
            );
            let mut out = Array2::<T>::zeros(z.dim());
            s.call(
                || format!("rate_reduction_with_grad_into {}", w()),
                || {
                    mcr2::rate_reduction_with_grad_into(z, m, eps, &mut out)
                        .map(|r| (r, out.clone()))
                },
            );
        }
        s.call(
            || format!("class_coding_rate_grad_membership {}", w()),
            || mcr2::class_coding_rate_grad_membership(z, &soft, eps),
        );
        for &g in &[1.0, 1e-12, 1e12, f64::MAX] {
            if let Ok(loss) = ReferenceLoss::new(eps, g, g) {
                s.call(
                    || format!("ReferenceLoss γ={g:e} {}", w()),
                    || loss.evaluate(z, &hard).map(|v| v.loss),
                );
                s.call(
                    || format!("ReferenceLoss grad γ={g:e} {}", w()),
                    || loss.evaluate_with_grad(z, &hard).map(|(v, g)| (v.loss, g)),
                );
            }
        }
        let mut stats = RateStats::<T>::new(4, 2).unwrap();
        if stats.push(z, &labels).is_ok() {
            let copy = stats.clone();
            let _ = stats.merge(&copy);
            s.call(
                || format!("RateStats::rate_reduction {}", w()),
                || stats.rate_reduction(eps),
            );
        }
        let basis = Array2::<T>::from_shape_fn((4, 2), |(i, j)| {
            T::from_f64(if i == j { 1.0 } else { 0.0 })
        });
        s.call(
            || format!("subspace_coding_rate_with_grad {}", w()),
            || {
                mcr2::crate_layer::subspace_coding_rate_with_grad(
                    z,
                    &[basis.clone(), basis.clone()],
                    eps,
                )
            },
        );
    }
}

fn estimators<T: Float + Finite>(s: &mut Sweep, z: &Array2<T>, tag: &str) {
    let labels = labels6();
    let eps = Precision::from_eps_sq(0.5).unwrap();
    let coder = Coder::new(eps);
    s.call(|| format!("Coder::length {tag}"), || coder.length(z));
    s.call(
        || format!("Coder::segmentation_length {tag}"),
        || coder.segmentation_length(z, &labels),
    );
    s.call(
        || format!("alc {tag}"),
        || alc(z, &coder, stop_after(50)).map(|seg| seg.labels.n_classes()),
    );
    if let Ok(micl) = Micl::fit(z, &labels, coder) {
        s.call(
            || format!("Micl::length_increase {tag}"),
            || micl.length_increase(z),
        );
        s.call(
            || format!("Micl::predict {tag}"),
            || micl.predict(z).map(|p| p.len()),
        );
    }
    for rank in sizes() {
        for center in [false, true] {
            let w = || format!("rank {rank} center {center} {tag}");
            if let Ok(fit) = s_fit(s, z, rank, center, &w) {
                s.call(
                    || format!("SubspaceFit::residual_norms {}", w()),
                    || fit.residual_norms(z),
                );
            }
            let ns = NearestSubspace::fit(z, &labels, &SubspaceConfig::new(rank).center(center));
            if let Ok(ns) = ns {
                s.call(
                    || format!("NearestSubspace::predict {}", w()),
                    || ns.predict(z).map(|p| p.len()),
                );
            }
        }
        s.call(
            || format!("class_subspace_angles rank {rank} {tag}"),
            || metrics::class_subspace_angles(z, &labels, rank),
        );
        s.call(
            || format!("top_k {rank} {tag}"),
            || metrics::top_k(z, rank).map(|v| v.len()),
        );
    }
    s.call(
        || format!("class_singular_values {tag}"),
        || metrics::class_singular_values(z, &labels),
    );
    s.call(
        || format!("class_means {tag}"),
        || metrics::class_means(z, &labels),
    );
    s.call(
        || format!("principal_angles {tag}"),
        || principal_angles(z, z),
    );
    let config = FitConfig::new(eps);
    let m = Membership::<T>::from(labels.clone());
    s.call(
        || format!("ascend_on_sphere {tag}"),
        || ascend_on_sphere(z, &m, &config, stop_after(3)).map(|r| r.0),
    );
    for out_dim in sizes() {
        let mut rng = StdRng::seed_from_u64(1);
        s.call(
            || format!("LinearMap::fit out_dim {out_dim} {tag}"),
            || {
                LinearMap::fit(z, &m, out_dim, &config, &mut rng, stop_after(3))
                    .map(|(map, _)| map.transform(z))
                    .and_then(|t| t)
            },
        );
    }
    for &layers in &[1usize, 3, 1 << 32, usize::MAX] {
        let config = ReduNetConfig {
            layers,
            ..ReduNetConfig::default()
        };
        let fitted = catch_unwind(AssertUnwindSafe(|| {
            ReduNet::fit(z, &labels, &config, stop_after(2))
        }));
        match fitted {
            Err(_) => s
                .failures
                .push(format!("panic: ReduNet::fit layers {layers} {tag}")),
            Ok(Ok((net, zt, _))) => {
                s.call(
                    || format!("ReduNet::fit output layers {layers} {tag}"),
                    || Ok(zt),
                );
                s.call(|| format!("ReduNet::transform {tag}"), || net.transform(z));
                s.call(
                    || format!("ReduNet::predict {tag}"),
                    || net.predict(z).map(|p| p.len()),
                );
            }
            Ok(Err(_)) => {}
        }
    }
}

fn s_fit<T: Float>(
    s: &mut Sweep,
    z: &Array2<T>,
    rank: usize,
    center: bool,
    w: &dyn Fn() -> String,
) -> mcr2::Result<SubspaceFit<T>> {
    s.calls += 1;
    catch_unwind(AssertUnwindSafe(|| {
        SubspaceFit::fit(z, &SubspaceConfig::new(rank).center(center))
    }))
    .unwrap_or_else(|_| {
        s.failures.push(format!("panic: SubspaceFit::fit {}", w()));
        Err(Error::NoConvergence("panicked"))
    })
}

fn layers<T: Float + Finite>(s: &mut Sweep, z: &Array2<T>, tag: &str) {
    let mut rng = StdRng::seed_from_u64(2);
    let x3 = z.clone().into_shape_with_order((1, 6, 4)).unwrap();
    let block = CrateBlock::<T>::new(&CrateBlockConfig::new(4, 2, 2), &mut rng).unwrap();
    s.call(|| format!("CrateBlock::forward {tag}"), || block.forward(z));
    s.call(
        || format!("CrateBlock::forward_batch {tag}"),
        || block.forward_batch(&x3),
    );
    let lin = Linear::<T>::new(&LinearConfig::new(4, 3), &mut rng).unwrap();
    s.call(|| format!("Linear::forward {tag}"), || lin.forward(z));
    let ln = LayerNorm::<T>::new(&LayerNormConfig::new(4)).unwrap();
    s.call(|| format!("LayerNorm::forward {tag}"), || ln.forward(z));
    let mlp = Mlp::<T>::new(&MlpConfig { dim: 4, hidden: 8 }, &mut rng).unwrap();
    s.call(|| format!("Mlp::forward {tag}"), || mlp.forward(z));
    let tssa = Tssa::<T>::new(&TssaConfig::new(4, 2), &mut rng).unwrap();
    s.call(|| format!("Tssa::forward {tag}"), || tssa.forward(z));
    s.call(|| format!("Tssa::membership {tag}"), || tssa.membership(z));
    let causal = CausalTssa::<T>::new(
        &CausalTssaConfig {
            dim: 4,
            heads: 2,
            block_size: 8,
        },
        &mut rng,
    )
    .unwrap();
    s.call(
        || format!("CausalTssa::forward {tag}"),
        || causal.forward(z),
    );
    let tost = ToStBlock::<T>::new(&ToStBlockConfig::new(4, 2), &mut rng).unwrap();
    s.call(|| format!("ToStBlock::forward {tag}"), || tost.forward(z));
    let ista = Ista::<T>::from_parts(Array2::eye(4), 0.1, 0.1).unwrap();
    s.call(|| format!("Ista::forward {tag}"), || ista.forward(z));
    s.call(
        || format!("Ista::lasso_objective {tag}"),
        || ista.lasso_objective(z, z),
    );
    let eye = Array2::<T>::eye(4);
    let bases = vec![
        eye.slice(ndarray::s![.., 0..2]).to_owned(),
        eye.slice(ndarray::s![.., 2..4]).to_owned(),
    ];
    let eps = Precision::from_eps_sq(0.5).unwrap();
    if let Ok(vc) = mcr2::tost::VariationalCompression::new(bases.clone(), eps, 0.1) {
        s.call(
            || format!("VariationalCompression::membership {tag}"),
            || vc.membership(z),
        );
        let pi = Array2::<T>::from_elem((6, 2), T::from_f64(0.5));
        s.call(
            || format!("VariationalCompression::objective {tag}"),
            || vc.objective(z, &pi),
        );
        s.call(
            || format!("VariationalCompression::step {tag}"),
            || vc.step(z, 0.1),
        );
    }
    for &kappa in &PARAMS {
        if let Ok(m) = Mssa::<T>::from_subspaces(&bases, eps, kappa) {
            s.call(
                || format!("Mssa::from_subspaces κ={kappa:e} forward {tag}"),
                || m.forward(z),
            );
        }
    }
    for &v in &VALUES {
        s.call(
            || format!("gelu({v:e}) {tag}"),
            || {
                // a finite input gives a finite output (NaN and ±∞ in f32 are not inputs here)
                let x = T::from_f64(v);
                let g = mcr2::nn::gelu(x);
                Ok(if x.is_finite() { g } else { T::zero() })
            },
        );
    }
}

fn grid<T: Float + Finite>(s: &mut Sweep) {
    for &v in &VALUES {
        for mixed in [false, true] {
            let z = matrix::<T>(v, mixed);
            let tag = format!("{} v={v:e} mixed={mixed}", T::NAME);
            rates(s, &z, &tag);
            estimators(s, &z, &tag);
            layers(s, &z, &tag);
        }
        newer_models::newer_forwards::<T>(s, v);
    }
}

fn report(s: Sweep) {
    println!(
        "{} calls, {} failures (budget {} bytes)",
        s.calls,
        s.failures.len(),
        budget()
    );
    assert!(
        s.failures.is_empty(),
        "{} of {} calls failed:\n{}",
        s.failures.len(),
        s.calls,
        s.failures.join("\n")
    );
}

#[test]
fn extreme_values_and_sizes_give_errors_or_finite_results() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    mcr2::set_memory_budget(budget());
    let mut s = Sweep::default();
    constructors(&mut s);
    newer_models::newer_constructors(&mut s);
    grid::<f64>(&mut s);
    grid::<f32>(&mut s);
    report(s);
}

/// Random mixtures of extreme and ordinary entries (proptest-style, seeded): quick by
/// default, `MCR2_SWEEP=full` for 50 times more cases.
#[test]
fn random_mixtures_of_extremes_give_errors_or_finite_results() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    mcr2::set_memory_budget(budget());
    let cases = if full() { 1000 } else { 20 };
    let mut rng = StdRng::seed_from_u64(7);
    let mut s = Sweep::default();
    for case in 0..cases {
        let z = Array2::<f64>::from_shape_fn((6, 4), |_| {
            if rng.random_bool(0.3) {
                VALUES[rng.random_range(0..VALUES.len() - 1)]
                    * if rng.random_bool(0.5) { 1.0 } else { -1.0 }
            } else {
                rng.random_range(-2.0..2.0)
            }
        });
        rates(&mut s, &z, &format!("f64 case {case} {z:?}"));
        layers(&mut s, &z, &format!("f64 case {case} {z:?}"));
        let z32 = z.mapv(|x| x as f32);
        rates(&mut s, &z32, &format!("f32 case {case} {z32:?}"));
        layers(&mut s, &z32, &format!("f32 case {case} {z32:?}"));
    }
    report(s);
}
