//! One evaluation of R, Rc and their gradients: the Gram matrices are formed once, each
//! log-det is taken on the smaller side by [`factor::identity_plus`] (Cholesky, or the
//! singular values of the rows where Cholesky would lose accuracy), and the gradients reuse
//! those factors.
//!
//! Layout: `z` is n × d with samples as rows. With `G = ZᵀZ` (d × d) or `K = Z Zᵀ` (n × n):
//!
//! * R  = ½ logdet(I + a G) = ½ logdet(I + a K),  a = γ₁ d/(n ε²)
//! * Rc = Σ_j t_j/(2n) · logdet(I + a_j Zᵀ W_j Z),  a_j = d/(t_j ε²),  t_j = tr Π_j (+ offset)
//! * ∂R/∂Z  = a Z (I + a G)⁻¹ = a (I + a K)⁻¹ Z
//! * ∂Rc/∂Z = κ Σ_j W_j Z (I + a_j G_j)⁻¹ = κ Σ_j S_j (I + a_j S_j Z Zᵀ S_j)⁻¹ S_j Z,
//!   κ = d/(n ε²), S_j = W_j^{½}  (the weight t_j/(2n) and the scale a_j cancel to κ).

use ndarray::{Array2, ArrayRef2, ArrayView2, ArrayViewMut2, Axis};

use super::factor::{self, Factor};
use super::gram::{
    chunk_rows, for_classes, gather, head_rows, sqrt_weights, threads, weighted_gram,
};
use crate::labels::ClassRows;
use crate::{Float, Membership, Result};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) eps_sq: f64,
    /// Scale inside R's log-det (the reference code's `gam1`); 1 in the papers.
    pub(crate) gam1: f64,
    /// Added to tr(Π_j) in both the weight and the scale of each class term (the reference
    /// code uses 1e-8); 0 in the papers.
    pub(crate) trace_offset: f64,
}

enum Side<T> {
    /// I + a·G, d × d.
    Primal(Factor<T>),
    /// I + a·S Z Zᵀ S over the class's samples, n_j × n_j.
    Dual(Factor<T>),
}

fn cholesky<T: Float>(side: &Option<Side<T>>) -> Option<&crate::linalg::Cholesky<T>> {
    match side {
        Some(Side::Primal(f)) | Some(Side::Dual(f)) => f.cholesky(),
        None => None,
    }
}

fn spectral<T: Float>(side: &Option<Side<T>>) -> Option<&factor::Spectral> {
    match side {
        Some(Side::Primal(f)) | Some(Side::Dual(f)) => f.spectral(),
        None => None,
    }
}

struct ClassEval<'m, T> {
    rows: ClassRows<'m, T>,
    /// `None` for an empty class (contributes exactly 0).
    side: Option<Side<T>>,
    term: T,
}

pub(crate) struct Evaluation<'z, 'm, T> {
    z: ArrayView2<'z, T>,
    membership: Option<&'m Membership<T>>,
    params: Params,
    /// Factor of R's matrix, when R was asked for.
    r_side: Option<Side<T>>,
    pub(crate) r: T,
    classes: Vec<ClassEval<'m, T>>,
    soft: bool,
}

/// What a class contributes to the gradient, before it is written into the output rows.
enum ClassOp<T> {
    None,
    /// Rows of the class times this d × d matrix.
    Primal(Array2<T>),
    /// The class's rows of the result, n_j × d (n_j < d).
    Dual(Array2<T>),
}

impl<'z, 'm, T: Float> Evaluation<'z, 'm, T> {
    /// Validates nothing: callers check `z` and `membership` first.
    pub(crate) fn new(
        z: ArrayView2<'z, T>,
        membership: Option<&'m Membership<T>>,
        params: Params,
        need_r: bool,
    ) -> Result<Self> {
        let (n, d) = z.dim();
        let a = T::from_f64(params.gam1 * d as f64 / (n as f64 * params.eps_sq));
        let soft = membership.is_some_and(|m| !m.is_hard());
        let k = membership.map_or(0, |m| m.n_classes());
        let class_rows = |j: usize| {
            membership
                .expect("k > 0 implies a membership")
                .class_rows(j)
        };
        let mut classes = Vec::with_capacity(k);
        let r_side;

        if n < d {
            // every class has n_j ≤ n < d: all log-dets on the sample side, from one K = Z Zᵀ
            let mut kmat = Array2::<T>::zeros((n, n));
            crate::linalg::gram_rows(z, T::one(), false, kmat.view_mut(), true);
            let kref = &kmat;
            let evals = for_classes(k, |j, inner| -> Result<ClassEval<'m, T>> {
                let rows = class_rows(j);
                let Some(aj) = Self::class_scale(&rows, params, d) else {
                    return Ok(ClassEval {
                        rows,
                        side: None,
                        term: T::zero(),
                    });
                };
                let sw = sqrt_weights(&rows);
                let nj = rows.rows.len();
                let mut kj = Array2::<T>::zeros((nj, nj));
                for p in 0..nj {
                    let ip = rows.rows[p] as usize;
                    for q in 0..=p {
                        let iq = rows.rows[q] as usize;
                        let v = if ip >= iq {
                            kref[(ip, iq)]
                        } else {
                            kref[(iq, ip)]
                        };
                        kj[(p, q)] = match &sw {
                            Some(s) => v * s[p] * s[q],
                            None => v,
                        };
                    }
                }
                let class_x = || {
                    let mut x = Array2::<T>::zeros((nj, d));
                    gather(z, &rows.rows, sw.as_deref(), x.view_mut());
                    x
                };
                let f = factor::identity_plus(&kj, aj, class_x, "I + a_j·K_j", inner)?;
                let term = Self::class_weight(&rows, params, n) * f.logdet();
                Ok(ClassEval {
                    rows,
                    side: Some(Side::Dual(f)),
                    term,
                })
            });
            for e in evals {
                classes.push(e?);
            }
            r_side = if need_r {
                Some(Side::Dual(factor::identity_plus(
                    &kmat,
                    a,
                    || z.to_owned(),
                    "I + a·K",
                    true,
                )?))
            } else {
                None
            };
        } else {
            // d ≤ n: R on the feature side. With hard labels G = Σ_j G_j comes for free.
            let mut g = Array2::<T>::zeros((d, d));
            if (soft || k == 0) && need_r {
                crate::linalg::gram_cols(z, T::one(), false, g.view_mut(), true);
            }
            type Out<'m, T> = Result<(ClassEval<'m, T>, Option<Array2<T>>)>;
            let evals = for_classes(k, |j, inner| -> Out<'m, T> {
                let rows = class_rows(j);
                let Some(aj) = Self::class_scale(&rows, params, d) else {
                    return Ok((
                        ClassEval {
                            rows,
                            side: None,
                            term: T::zero(),
                        },
                        None,
                    ));
                };
                let sw = sqrt_weights(&rows);
                let nj = rows.rows.len();
                let weight = Self::class_weight(&rows, params, n);
                if nj < d {
                    let mut x = Array2::<T>::zeros((nj, d));
                    gather(z, &rows.rows, sw.as_deref(), x.view_mut());
                    let mut kj = Array2::<T>::zeros((nj, nj));
                    crate::linalg::gram_rows(x.view(), T::one(), false, kj.view_mut(), inner);
                    let gx = (!soft && need_r).then(|| {
                        let mut gx = Array2::<T>::zeros((d, d));
                        crate::linalg::gram_cols(x.view(), T::one(), false, gx.view_mut(), inner);
                        gx
                    });
                    let f = factor::identity_plus(&kj, aj, || x.clone(), "I + a_j·K_j", inner)?;
                    let term = weight * f.logdet();
                    Ok((
                        ClassEval {
                            rows,
                            side: Some(Side::Dual(f)),
                            term,
                        },
                        gx,
                    ))
                } else {
                    let gj = weighted_gram(z, &rows.rows, sw.as_deref(), None, inner);
                    let class_x = || {
                        let mut x = Array2::<T>::zeros((nj, d));
                        gather(z, &rows.rows, sw.as_deref(), x.view_mut());
                        x
                    };
                    let f = factor::identity_plus(&gj, aj, class_x, "I + a_j·G_j", inner)?;
                    let term = weight * f.logdet();
                    let gj = (!soft && need_r).then_some(gj);
                    Ok((
                        ClassEval {
                            rows,
                            side: Some(Side::Primal(f)),
                            term,
                        },
                        gj,
                    ))
                }
            });
            for e in evals {
                let (class, gj) = e?;
                if let Some(gj) = gj {
                    g += &gj;
                }
                classes.push(class);
            }
            r_side = if need_r {
                Some(Side::Primal(factor::identity_plus(
                    &g,
                    a,
                    || z.to_owned(),
                    "I + a·G",
                    true,
                )?))
            } else {
                None
            };
        }
        let half = T::from_f64(0.5);
        let r = match &r_side {
            Some(Side::Primal(f)) | Some(Side::Dual(f)) => half * f.logdet(),
            None => T::zero(),
        };
        Ok(Self {
            z,
            membership,
            params,
            r_side,
            r,
            classes,
            soft,
        })
    }

    /// a_j = d/(t_j ε²), or `None` for an empty class.
    fn class_scale(rows: &ClassRows<'_, T>, params: Params, d: usize) -> Option<T> {
        if rows.rows.is_empty() || rows.trace <= 0.0 {
            return None;
        }
        let t = rows.trace + params.trace_offset;
        Some(T::from_f64(d as f64 / (t * params.eps_sq)))
    }

    /// t_j/(2n).
    fn class_weight(rows: &ClassRows<'_, T>, params: Params, n: usize) -> T {
        T::from_f64((rows.trace + params.trace_offset) / (2.0 * n as f64))
    }

    /// Per-class terms t_j/(2n)·logdet(I + a_j Zᵀ W_j Z).
    pub(crate) fn class_terms(&self) -> Vec<T> {
        self.classes.iter().map(|c| c.term).collect()
    }

    /// Rc = Σ_j terms.
    pub(crate) fn rc(&self) -> T {
        self.classes.iter().map(|c| c.term).sum()
    }

    /// Writes `c_r·∂R/∂Z + c_rc·∂Rc/∂Z` into `out` (n × d): the terms factored by Cholesky
    /// through their inverses, then those taken by singular values added row by row.
    pub(crate) fn gradient_into(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        self.cholesky_terms_into(c_r, c_rc, out.view_mut());
        self.add_spectral_terms(c_r, c_rc, out);
    }

    /// Adds `c_r·a·Z(I + aG)⁻¹` and `κ·S_j X_j(I + a_j X_jᵀX_j)⁻¹` for the terms whose
    /// factor is [`Factor::Spectral`] (see [`factor::Spectral::solution`]).
    fn add_spectral_terms(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        let (n, d) = self.z.dim();
        let a = self.params.gam1 * d as f64 / (n as f64 * self.params.eps_sq);
        if let (Some(f), true) = (spectral(&self.r_side), c_r != 0.0) {
            out += &f.solution::<T>(c_r * a);
        }
        let kappa = c_rc * d as f64 / (n as f64 * self.params.eps_sq);
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

    /// The terms factored by Cholesky.
    fn cholesky_terms_into(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        let z = self.z;
        let (n, d) = z.dim();
        let a = self.params.gam1 * d as f64 / (n as f64 * self.params.eps_sq);
        let kappa = T::from_f64(c_rc * d as f64 / (n as f64 * self.params.eps_sq));
        let ca = T::from_f64(c_r * a);

        if n < d {
            // Everything is on the sample side: the gradient is W Z with the n × n matrix
            // W = c_r·a·(I + aK)⁻¹ + κ Σ_j S_j (I + a_j K_j)⁻¹ S_j (class blocks scattered to
            // their samples): one product, no per-class solves.
            let mut w = match cholesky(&self.r_side) {
                Some(f) if c_r != 0.0 => f.inverse(true).mapv(|x| x * ca),
                _ => Array2::<T>::zeros((n, n)),
            };
            let blocks = for_classes(self.classes.len(), |j, inner| {
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
            return;
        }
        self.feature_side_into(c_r, c_rc, out);
    }

    /// The feature-side (d ≤ n) gradient of the terms factored by Cholesky.
    fn feature_side_into(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        let z = self.z;
        let (n, d) = z.dim();
        let a = self.params.gam1 * d as f64 / (n as f64 * self.params.eps_sq);
        let kappa = T::from_f64(c_rc * d as f64 / (n as f64 * self.params.eps_sq));
        let ca = T::from_f64(c_r * a);

        // R's part: E = c_r·a·(I + aG)⁻¹ (feature side, d ≤ n).
        let e: Option<Array2<T>> = match cholesky(&self.r_side) {
            Some(f) if c_r != 0.0 => Some(f.inverse(true).mapv(|x| x * ca)),
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

        let ops = for_classes(self.classes.len(), |j, inner| {
            let class = &self.classes[j];
            match &class.side {
                Some(Side::Primal(Factor::Cholesky(f))) => {
                    let mut m = f.inverse(inner).mapv(|x| x * kappa);
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

        // feature-side classes: stream contiguous blocks of rows (in parallel), grouping each
        // block's rows by class so that every group is one matrix product
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
                       x: &mut Array2<T>,
                       y: &mut Array2<T>| {
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
        let scratch = || {
            (
                Array2::<T>::zeros((block, d)),
                Array2::<T>::zeros((block, d)),
            )
        };
        let blocks: Vec<(usize, ArrayViewMut2<T>)> = out
            .axis_chunks_iter_mut(Axis(0), block)
            .enumerate()
            .collect();
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            blocks
                .into_par_iter()
                .for_each_init(scratch, |(x, y), blk| {
                    crate::linalg::clear_upper_simd_state();
                    process(blk, x, y)
                });
        }
        #[cfg(not(feature = "parallel"))]
        {
            let (mut x, mut y) = scratch();
            for blk in blocks {
                process(blk, &mut x, &mut y);
            }
        }
    }
}

/// Errors unless a caller-supplied gradient buffer is n × d.
pub(crate) fn check_out<T>(out: &ArrayRef2<T>, n: usize, d: usize) -> Result<()> {
    if out.dim() != (n, d) {
        return Err(crate::Error::ShapeMismatch {
            what: "gradient output",
            expected: format!("{n}×{d}"),
            got: format!("{}×{}", out.nrows(), out.ncols()),
        });
    }
    Ok(())
}
