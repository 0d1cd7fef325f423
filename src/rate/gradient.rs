//! The gradients of R and Rc from the factors of one [`Evaluation`]:
//!
//! * `∂R/∂Z = a Z (I + a G)⁻¹ = a (I + a K)⁻¹ Z`
//! * `∂Rc/∂Z = κ Σ_j W_j Z (I + a_j G_j)⁻¹ = κ Σ_j S_j (I + a_j S_j Z Zᵀ S_j)⁻¹ S_j Z`
//!
//! (notation of `engine.rs`). On the sample side (n < d) the whole gradient is one product
//! `W Z` with an n × n matrix W; on the feature side each row is multiplied by its class's
//! `E + κ A_j⁻¹` (E = a(I + aG)⁻¹), streamed in row blocks across the cores. Terms factored by
//! singular values instead of Cholesky are added row by row from [`super::factor::Spectral`].

use ndarray::{Array2, ArrayViewMut2, Axis};

use super::engine::{Evaluation, Side, cholesky, class_gradient_scale, rate_scale, spectral};
use super::factor::Factor;
use super::gram::{chunk_rows, for_classes, gather, head_rows, sqrt_weights, worth_threads};
use crate::Float;
use crate::rows::threads;
use crate::workspace::Scratch;

/// What a class contributes to the gradient, before it is written into the output rows.
enum ClassOp<T> {
    None,
    /// Rows of the class times this d × d matrix.
    Primal(Array2<T>),
    /// The class's rows of the result, n_j × d (n_j < d).
    Dual(Array2<T>),
}

impl<T: Float> Evaluation<'_, '_, T> {
    /// Writes `c_r·∂R/∂Z + c_rc·∂Rc/∂Z` into `out` (n × d): the terms factored by Cholesky
    /// through their inverses, then those taken by singular values added row by row.
    pub(crate) fn gradient_into(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        self.cholesky_terms_into(c_r, c_rc, out.view_mut());
        self.add_spectral_terms(c_r, c_rc, out);
    }

    /// Adds `c_r·a·Z(I + aG)⁻¹` and `κ·S_j X_j(I + a_j X_jᵀX_j)⁻¹` for the terms whose
    /// factor is [`Factor::Spectral`] (see [`super::factor::Spectral::solution`]).
    fn add_spectral_terms(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        let (n, d) = self.z.dim();
        let a = rate_scale(n, d, self.params);
        if let (Some(f), true) = (spectral(&self.r_side), c_r != 0.0) {
            out += &f.solution::<T>(c_r * a);
        }
        let kappa = class_gradient_scale(c_rc, n, d, self.params);
        for class in &self.classes {
            let Some(f) = spectral(&class.side) else {
                continue;
            };
            let rows = f.solution::<T>(kappa);
            let sw = sqrt_weights(&class.rows);
            for (p, &i) in class.rows.rows.iter().enumerate() {
                let w = sw.as_ref().map_or(T::one(), |s| s[p]);
                out.row_mut(i as usize)
                    .zip_mut_with(&rows.row(p), |o, &v| *o += w * v);
            }
        }
    }

    /// The terms factored by Cholesky: on the sample side when n < d (every factor is
    /// there), else on the feature side.
    fn cholesky_terms_into(&self, c_r: f64, c_rc: f64, out: ArrayViewMut2<T>) {
        if self.z.nrows() < self.z.ncols() {
            self.sample_side_into(c_r, c_rc, out);
        } else {
            self.feature_side_into(c_r, c_rc, out);
        }
    }

    /// n < d: the gradient is `W Z` with the n × n matrix
    /// `W = c_r·a·(I + aK)⁻¹ + c_rc·κ Σ_j S_j (I + a_j K_j)⁻¹ S_j` (class blocks scattered to
    /// their samples): one product, no per-class solves.
    fn sample_side_into(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        let z = self.z;
        let (n, d) = z.dim();
        let ca = T::from_f64(c_r * rate_scale(n, d, self.params));
        let kappa = T::from_f64(class_gradient_scale(c_rc, n, d, self.params));
        let mut w = match cholesky(&self.r_side) {
            Some(f) if c_r != 0.0 => f.inverse(true).mapv(|x| x * ca),
            _ => Array2::<T>::zeros((n, n)),
        };
        let blocks = for_classes(self.classes.len(), worth_threads(n, d), |j, inner| {
            cholesky(&self.classes[j].side).map(|f| f.inverse(inner))
        });
        for (class, binv) in self.classes.iter().zip(blocks) {
            let Some(binv) = binv else { continue };
            let rows: &[u32] = &class.rows.rows;
            let sw = sqrt_weights(&class.rows);
            for (p, &ip) in rows.iter().enumerate() {
                let sp = sw.as_ref().map_or(T::one(), |s| s[p]);
                for (q, &iq) in rows.iter().enumerate() {
                    let sq = sw.as_ref().map_or(T::one(), |s| s[q]);
                    w[(ip as usize, iq as usize)] += kappa * sp * sq * binv[(p, q)];
                }
            }
        }
        crate::linalg::gemm(T::one(), w.view(), z, false, out.view_mut(), true);
    }

    /// The feature-side (d ≤ n) gradient of the terms factored by Cholesky.
    fn feature_side_into(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        let z = self.z;
        let (n, d) = z.dim();
        let ca = T::from_f64(c_r * rate_scale(n, d, self.params));
        let kappa = T::from_f64(class_gradient_scale(c_rc, n, d, self.params));

        // R's part: E = c_r·a·(I + aG)⁻¹ (feature side, d ≤ n).
        let e: Option<Array2<T>> = match cholesky(&self.r_side) {
            Some(f) if c_r != 0.0 => {
                let mut e = f.inverse(true);
                e.mapv_inplace(|x| x * ca);
                Some(e)
            }
            _ => {
                out.fill(T::zero());
                None
            }
        };
        // With soft membership (rows in several classes), or no R part, the R part is applied
        // once to all rows and the class parts are added; with hard labels each row gets one
        // product with E + κ A_j⁻¹.
        let additive = self.soft
            || e.is_none()
            || self.classes.is_empty()
            || self.classes.iter().any(|c| spectral(&c.side).is_some());
        if let (Some(e), true) = (&e, additive) {
            crate::linalg::gemm(T::one(), z, e.view(), false, out.view_mut(), true);
        }
        let e_ref = e.as_ref();

        let ops = for_classes(self.classes.len(), worth_threads(n, d), |j, inner| {
            let class = &self.classes[j];
            match &class.side {
                Some(Side::Primal(Factor::Cholesky(f))) => {
                    let mut m = f.inverse(inner);
                    m.mapv_inplace(|x| x * kappa);
                    if !additive {
                        m += e_ref.expect("feature-side R when not additive");
                    }
                    ClassOp::Primal(m)
                }
                Some(Side::Dual(Factor::Cholesky(f))) => {
                    // κ·S (I + a_j S Z_s Z_sᵀ S)⁻¹ S Z_s  (n_j < d, so this is small)
                    let rows: &[u32] = &class.rows.rows;
                    let sw = sqrt_weights(&class.rows);
                    let mut x = Array2::<T>::zeros((rows.len(), d));
                    gather(z, rows, None, x.view_mut());
                    let mut y = x.clone();
                    if let Some(s) = &sw {
                        for (mut r, &sp) in y.axis_iter_mut(Axis(0)).zip(s) {
                            r.mapv_inplace(|v| v * sp);
                        }
                    }
                    f.solve_in_place(y.view_mut(), inner);
                    for (p, mut r) in y.axis_iter_mut(Axis(0)).enumerate() {
                        let sc = kappa * sw.as_ref().map_or(T::one(), |s| s[p]);
                        r.mapv_inplace(|v| v * sc);
                    }
                    if !additive {
                        let e = e_ref.expect("feature-side R when not additive");
                        crate::linalg::gemm(
                            T::one(),
                            x.view(),
                            e.view(),
                            true,
                            y.view_mut(),
                            inner,
                        );
                    }
                    ClassOp::Dual(y)
                }
                _ => ClassOp::None,
            }
        });

        // sample-side classes: their rows are ready
        for (class, op) in self.classes.iter().zip(&ops) {
            if let ClassOp::Dual(y) = op {
                for (p, &i) in class.rows.rows.iter().enumerate() {
                    let mut o = out.row_mut(i as usize);
                    if additive {
                        o += &y.row(p);
                    } else {
                        o.assign(&y.row(p));
                    }
                }
            }
        }

        self.stream_class_products(&ops, additive, out);
    }

    /// Feature-side classes: each row times its class's d × d matrix, over contiguous blocks
    /// of rows (in parallel), grouping each block's rows by class so that every group is one
    /// matrix product; added to `out` when `additive`, else written.
    fn stream_class_products(&self, ops: &[ClassOp<T>], additive: bool, mut out: ArrayViewMut2<T>) {
        let z = self.z;
        let (n, d) = z.dim();
        let primal: Vec<Option<&Array2<T>>> = ops
            .iter()
            .map(|op| {
                if let ClassOp::Primal(m) = op {
                    Some(m)
                } else {
                    None
                }
            })
            .collect();
        if primal.iter().all(Option::is_none) {
            return;
        }
        // at least two blocks per thread and a multiple of the thread count, for balance
        // (blocks of at least ~128 rows per class keep the products efficient)
        let t = threads();
        let target = chunk_rows(d).max(128 * self.classes.len());
        let nblocks = n.div_ceil(target).max(2 * t).div_ceil(t) * t;
        let block = n.div_ceil(nblocks).max(1);
        let membership = self.membership.expect("classes imply a membership");
        let labels = membership.hard_labels();
        let pi = membership.soft_matrix();
        let process = |(b, mut out_block): (usize, ArrayViewMut2<T>),
                       x: &mut Scratch<T>,
                       y: &mut Scratch<T>| {
            let r0 = b * block;
            let len = out_block.nrows();
            let mut groups: Vec<(Vec<u32>, Vec<T>)> = vec![(Vec::new(), Vec::new()); primal.len()];
            for r in 0..len {
                if let Some(labels) = labels {
                    let j = labels[r0 + r] as usize;
                    if primal[j].is_some() {
                        groups[j].0.push((r0 + r) as u32);
                    }
                } else if let Some(pi) = pi {
                    for (j, &w) in pi.row(r0 + r).iter().enumerate() {
                        if w > T::zero() && primal[j].is_some() {
                            groups[j].0.push((r0 + r) as u32);
                            groups[j].1.push(w);
                        }
                    }
                }
            }
            for (j, (rows, weights)) in groups.iter().enumerate() {
                let Some(m) = primal[j] else { continue };
                if rows.is_empty() {
                    continue;
                }
                let mut xs = head_rows(x, rows.len());
                gather(z, rows, None, xs.view_mut());
                let mut ys = head_rows(y, rows.len());
                crate::linalg::gemm(
                    T::one(),
                    xs.view(),
                    m.view(),
                    false,
                    ys.view_mut(),
                    threads() == 1,
                );
                for (p, &i) in rows.iter().enumerate() {
                    let mut o = out_block.row_mut(i as usize - r0);
                    match (weights.get(p), additive) {
                        (Some(&w), _) => o.zip_mut_with(&ys.row(p), |o, &v| *o += w * v),
                        (None, true) => o += &ys.row(p),
                        (None, false) => o.assign(&ys.row(p)),
                    }
                }
            }
        };
        // every row used is written by the gather or the product first
        let scratch = || {
            (
                crate::workspace::take::<T>(block, d),
                crate::workspace::take::<T>(block, d),
            )
        };
        let blocks: Vec<(usize, ArrayViewMut2<T>)> = out
            .axis_chunks_iter_mut(Axis(0), block)
            .enumerate()
            .collect();
        #[cfg(feature = "parallel")]
        if blocks.len() > 1 && crate::rows::threads() > 1 && worth_threads(n, d) {
            use rayon::prelude::*;
            blocks
                .into_par_iter()
                .for_each_init(scratch, |(x, y), blk| {
                    crate::linalg::clear_upper_simd_state();
                    process(blk, x, y)
                });
            return;
        }
        let (mut x, mut y) = scratch();
        for blk in blocks {
            process(blk, &mut x, &mut y);
        }
    }
}
