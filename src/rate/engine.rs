//! One evaluation of R, Rc and their gradients: the Gram matrices are formed once, each
//! log-det is taken on the smaller side by Cholesky, and the gradients reuse those factors.
//!
//! Layout: `z` is n × d with samples as rows. With `G = ZᵀZ` (d × d) or `K = Z Zᵀ` (n × n):
//!
//! * R  = ½ logdet(I + a G) = ½ logdet(I + a K),  a = γ₁ d/(n ε²)
//! * Rc = Σ_j t_j/(2n) · logdet(I + a_j Zᵀ W_j Z),  a_j = d/(t_j ε²),  t_j = tr Π_j (+ offset)
//! * ∂R/∂Z  = a Z (I + a G)⁻¹ = a (I + a K)⁻¹ Z
//! * ∂Rc/∂Z = κ Σ_j W_j Z (I + a_j G_j)⁻¹ = κ Σ_j S_j (I + a_j S_j Z Zᵀ S_j)⁻¹ S_j Z,
//!   κ = d/(n ε²), S_j = W_j^{½}  (the weight t_j/(2n) and the scale a_j cancel to κ).

use ndarray::{Array2, ArrayRef2, ArrayView2, ArrayViewMut2, Axis};

use crate::linalg::{Cholesky, shifted_identity};
use crate::membership::ClassRows;
use crate::{Float, Membership, Result};

/// Elements of the gather buffer used to stream a class through the Gram and gradient
/// kernels (rows = `CHUNK_ELEMS / d`): a fixed scratch, independent of n.
const CHUNK_ELEMS: usize = 1 << 20;

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
    Primal(Cholesky<T>),
    /// I + a·S Z Zᵀ S over the class's samples, n_j × n_j.
    Dual(Cholesky<T>),
}

struct ClassEval<'m, T> {
    rows: ClassRows<'m, T>,
    /// `None` for an empty class (contributes exactly 0).
    side: Option<Side<T>>,
    term: T,
}

pub(crate) struct Evaluation<'z, 'm, T> {
    z: ArrayView2<'z, T>,
    params: Params,
    /// Factor of R's matrix, when R was asked for.
    r_side: Option<Side<T>>,
    pub(crate) r: T,
    classes: Vec<ClassEval<'m, T>>,
    soft: bool,
}

pub(crate) fn chunk_rows(d: usize) -> usize {
    (CHUNK_ELEMS / d.max(1)).max(1)
}

/// Copies rows `rows` of `z` into `out` (one row each), scaled by `scale` when given.
pub(crate) fn gather<T: Float>(z: ArrayView2<T>, rows: &[u32], scale: Option<&[T]>, mut out: ArrayViewMut2<T>) {
    for (p, &i) in rows.iter().enumerate() {
        let src = z.row(i as usize);
        let mut dst = out.row_mut(p);
        match scale {
            Some(s) => {
                let w = s[p];
                dst.zip_mut_with(&src, |o, &x| *o = x * w);
            }
            None => dst.assign(&src),
        }
    }
}

/// The first `len` rows of a scratch buffer.
pub(crate) fn head_rows<T>(buf: &mut Array2<T>, len: usize) -> ArrayViewMut2<'_, T> {
    buf.slice_axis_mut(Axis(0), ndarray::Slice::from(0..len))
}

pub(crate) fn sqrt_weights<T: Float>(rows: &ClassRows<'_, T>) -> Option<Vec<T>> {
    rows.weights.as_ref().map(|w| w.iter().map(|x| x.sqrt()).collect())
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
        let nf = n as f64;
        let df = d as f64;
        let a = T::from_f64(params.gam1 * df / (nf * params.eps_sq));
        let soft = membership.is_some_and(|m| !m.is_hard());
        let k = membership.map_or(0, |m| m.n_classes());
        let mut classes = Vec::with_capacity(k);
        let r_side;

        if n < d {
            // every class has n_j ≤ n < d: all log-dets on the sample side, from one K = Z Zᵀ
            let mut kmat = Array2::<T>::zeros((n, n));
            T::gram_rows(z, T::one(), false, kmat.view_mut());
            for j in 0..k {
                let rows = membership.expect("k > 0 implies a membership").class_rows(j);
                let (side, term) = match Self::class_scale(&rows, params, d) {
                    None => (None, T::zero()),
                    Some(aj) => {
                        let sw = sqrt_weights(&rows);
                        let nj = rows.rows.len();
                        let mut kj = Array2::<T>::zeros((nj, nj));
                        for p in 0..nj {
                            let ip = rows.rows[p] as usize;
                            for q in 0..=p {
                                let iq = rows.rows[q] as usize;
                                let v = if ip >= iq { kmat[(ip, iq)] } else { kmat[(iq, ip)] };
                                kj[(p, q)] = match &sw {
                                    Some(s) => v * s[p] * s[q],
                                    None => v,
                                };
                            }
                        }
                        let f = Cholesky::new(shifted_identity(&kj, aj), "I + a_j·K_j")?;
                        let term = Self::class_weight(&rows, params, n) * f.logdet();
                        (Some(Side::Dual(f)), term)
                    }
                };
                classes.push(ClassEval { rows, side, term });
            }
            r_side = if need_r {
                Some(Side::Dual(Cholesky::new(shifted_identity(&kmat, a), "I + a·K")?))
            } else {
                None
            };
        } else {
            // d ≤ n: R on the feature side. With hard labels G = Σ_j G_j comes for free.
            let mut g = Array2::<T>::zeros((d, d));
            if soft && need_r {
                T::gram_cols(z, T::one(), false, g.view_mut());
            }
            let chunk = chunk_rows(d);
            let mut scratch: Option<Array2<T>> = None;
            for j in 0..k {
                let rows = membership.expect("k > 0 implies a membership").class_rows(j);
                let (side, term) = match Self::class_scale(&rows, params, d) {
                    None => (None, T::zero()),
                    Some(aj) => {
                        let sw = sqrt_weights(&rows);
                        let nj = rows.rows.len();
                        if nj < d {
                            let mut x = Array2::<T>::zeros((nj, d));
                            gather(z, &rows.rows, sw.as_deref(), x.view_mut());
                            let mut kj = Array2::<T>::zeros((nj, nj));
                            T::gram_rows(x.view(), T::one(), false, kj.view_mut());
                            if !soft {
                                T::gram_cols(x.view(), T::one(), true, g.view_mut());
                            }
                            let f = Cholesky::new(shifted_identity(&kj, aj), "I + a_j·K_j")?;
                            let term = Self::class_weight(&rows, params, n) * f.logdet();
                            (Some(Side::Dual(f)), term)
                        } else {
                            let buf = scratch
                                .get_or_insert_with(|| Array2::zeros((chunk.min(n), d)));
                            let mut gj = Array2::<T>::zeros((d, d));
                            for (c, idx) in rows.rows.chunks(chunk).enumerate() {
                                let sc = sw.as_deref().map(|s| &s[c * chunk..c * chunk + idx.len()]);
                                let mut xb = head_rows(buf, idx.len());
                                gather(z, idx, sc, xb.view_mut());
                                T::gram_cols(xb.view(), T::one(), c > 0, gj.view_mut());
                            }
                            if !soft {
                                g.zip_mut_with(&gj, |a, &b| *a += b);
                            }
                            let f = Cholesky::new(shifted_identity(&gj, aj), "I + a_j·G_j")?;
                            let term = Self::class_weight(&rows, params, n) * f.logdet();
                            (Some(Side::Primal(f)), term)
                        }
                    }
                };
                classes.push(ClassEval { rows, side, term });
            }
            r_side = if need_r {
                if k == 0 {
                    T::gram_cols(z, T::one(), false, g.view_mut());
                }
                Some(Side::Primal(Cholesky::new(shifted_identity(&g, a), "I + a·G")?))
            } else {
                None
            };
        }
        let half = T::from_f64(0.5);
        let r = match &r_side {
            Some(Side::Primal(f)) | Some(Side::Dual(f)) => half * f.logdet(),
            None => T::zero(),
        };
        Ok(Self { z, params, r_side, r, classes, soft })
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

    /// Writes `c_r·∂R/∂Z + c_rc·∂Rc/∂Z` into `out` (n × d).
    pub(crate) fn gradient_into(&self, c_r: f64, c_rc: f64, mut out: ArrayViewMut2<T>) {
        let z = self.z;
        let (n, d) = z.dim();
        let a = self.params.gam1 * d as f64 / (n as f64 * self.params.eps_sq);
        let kappa = T::from_f64(c_rc * d as f64 / (n as f64 * self.params.eps_sq));
        let chunk = chunk_rows(d);
        let ca = T::from_f64(c_r * a);

        // R's part: E = c_r·a·(I + aG)⁻¹ on the feature side, or out = c_r·a·(I + aK)⁻¹ Z.
        let e: Option<Array2<T>> = match &self.r_side {
            Some(Side::Primal(f)) if c_r != 0.0 => Some(f.inverse().mapv(|x| x * ca)),
            Some(Side::Dual(f)) if c_r != 0.0 => {
                out.assign(&z);
                f.solve_in_place(out.view_mut());
                out.mapv_inplace(|x| x * ca);
                None
            }
            _ => {
                out.fill(T::zero());
                None
            }
        };
        // With soft membership (rows in several classes), or R already written, the R part
        // is applied once to all rows and the class parts are added.
        let additive = self.soft || e.is_none() || self.classes.is_empty();
        if let (Some(e), true) = (&e, additive) {
            T::gemm(T::one(), z, e.view(), false, out.view_mut());
        }

        let mut xbuf: Option<Array2<T>> = None;
        let mut ybuf: Option<Array2<T>> = None;
        for class in &self.classes {
            let Some(side) = &class.side else { continue };
            let rows: &[u32] = &class.rows.rows;
            match side {
                Side::Primal(f) => {
                    // rows of class j: Z_s·M with M = κ A_j⁻¹ (+ E for hard labels)
                    let mut m = f.inverse().mapv(|x| x * kappa);
                    if !additive {
                        m += e.as_ref().expect("feature-side R when not additive");
                    }
                    let xb = xbuf.get_or_insert_with(|| Array2::zeros((chunk.min(n), d)));
                    let yb = ybuf.get_or_insert_with(|| Array2::zeros((chunk.min(n), d)));
                    for (c, idx) in rows.chunks(chunk).enumerate() {
                        let mut x = head_rows(xb, idx.len());
                        gather(z, idx, None, x.view_mut());
                        let mut y = head_rows(yb, idx.len());
                        T::gemm(T::one(), x.view(), m.view(), false, y.view_mut());
                        match (&class.rows.weights, additive) {
                            (Some(w), _) => {
                                let w = &w[c * chunk..c * chunk + idx.len()];
                                for (p, &i) in idx.iter().enumerate() {
                                    let wp = w[p];
                                    out.row_mut(i as usize)
                                        .zip_mut_with(&y.row(p), |o, &v| *o += wp * v);
                                }
                            }
                            (None, true) => {
                                for (p, &i) in idx.iter().enumerate() {
                                    {
                                    let mut o = out.row_mut(i as usize);
                                    o += &y.row(p);
                                }
                                }
                            }
                            (None, false) => {
                                for (p, &i) in idx.iter().enumerate() {
                                    out.row_mut(i as usize).assign(&y.row(p));
                                }
                            }
                        }
                    }
                }
                Side::Dual(f) => {
                    // κ·S (I + a_j S Z_s Z_sᵀ S)⁻¹ S Z_s  (n_j < d, so this is small)
                    let sw = sqrt_weights(&class.rows);
                    let nj = rows.len();
                    let mut x = Array2::<T>::zeros((nj, d));
                    gather(z, rows, None, x.view_mut());
                    let mut y = match &sw {
                        Some(s) => {
                            let mut y = x.clone();
                            for (mut r, &sp) in y.axis_iter_mut(Axis(0)).zip(s) {
                                r.mapv_inplace(|v| v * sp);
                            }
                            y
                        }
                        None => x.clone(),
                    };
                    f.solve_in_place(y.view_mut());
                    for (p, mut r) in y.axis_iter_mut(Axis(0)).enumerate() {
                        let sc = kappa * sw.as_ref().map_or(T::one(), |s| s[p]);
                        r.mapv_inplace(|v| v * sc);
                    }
                    if !additive {
                        let e = e.as_ref().expect("feature-side R when not additive");
                        T::gemm(T::one(), x.view(), e.view(), true, y.view_mut());
                        for (p, &i) in rows.iter().enumerate() {
                            out.row_mut(i as usize).assign(&y.row(p));
                        }
                    } else {
                        for (p, &i) in rows.iter().enumerate() {
                            {
                                    let mut o = out.row_mut(i as usize);
                                    o += &y.row(p);
                                }
                        }
                    }
                }
            }
        }
    }
}

/// The rows of `z` that a caller-supplied gradient buffer must match.
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
