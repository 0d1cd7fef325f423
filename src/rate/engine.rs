//! One evaluation of R and Rc: the Gram matrices are formed once, each log-det is taken on
//! the smaller side by [`factor::identity_plus`] (Cholesky, or the singular values of the rows
//! where Cholesky would lose accuracy), and the factors are kept for the gradients
//! (`gradient.rs`).
//!
//! Layout: `z` is n × d with samples as rows. With `G = ZᵀZ` (d × d) or `K = Z Zᵀ` (n × n),
//! the equations and the function that states each:
//!
//! * R  = ½ logdet(I + a G) = ½ logdet(I + a K),  a = γ₁ d/(n ε²)  ([`rate_scale`])
//! * Rc = Σ_j w_j · logdet(I + a_j Zᵀ W_j Z),  w_j = t_j/(2n) ([`class_weight`]),
//!   a_j = d/(t_j ε²) ([`class_scale`]),  t_j = tr Π_j (+ offset)
//! * ∂R/∂Z  = a Z (I + a G)⁻¹ = a (I + a K)⁻¹ Z
//! * ∂Rc/∂Z = κ Σ_j W_j Z (I + a_j G_j)⁻¹ = κ Σ_j S_j (I + a_j S_j Z Zᵀ S_j)⁻¹ S_j Z,
//!   κ = 2 w_j a_j = d/(n ε²) ([`class_gradient_scale`]),  S_j = W_j^{½}

use ndarray::{Array2, ArrayRef2, ArrayView2};

use super::factor::{self, Factor};
use super::gram::{for_classes, gather, sqrt_weights, weighted_gram, worth_threads};
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

/// `a = γ₁ d/(n ε²)`: the scale inside `R = ½ logdet(I + a ZᵀZ)` (Yu et al. 2020, Eq. 2).
pub(crate) fn rate_scale(n: usize, d: usize, params: Params) -> f64 {
    params.gam1 * d as f64 / (n as f64 * params.eps_sq)
}

/// `a_j = d/(t_j ε²)`, `t_j = tr Π_j` (+ the offset): the scale inside class j's log-det in
/// `Rc` (Yu et al. 2020, Eq. 3); `None` for an empty class.
pub(crate) fn class_scale(trace: f64, params: Params, d: usize) -> Option<f64> {
    if trace <= 0.0 {
        return None;
    }
    Some(d as f64 / ((trace + params.trace_offset) * params.eps_sq))
}

/// `w_j = t_j/(2n)`: the weight of class j's log-det in `Rc`.
pub(crate) fn class_weight(trace: f64, params: Params, n: usize) -> f64 {
    (trace + params.trace_offset) / (2.0 * n as f64)
}

/// `c·κ` with `κ = 2 w_j a_j = d/(n ε²)`: the factor of every class's part of `c·∂Rc/∂Z`
/// (the weight and the scale cancel to the same value for every class).
pub(crate) fn class_gradient_scale(c: f64, n: usize, d: usize, params: Params) -> f64 {
    c * d as f64 / (n as f64 * params.eps_sq)
}

/// A factored `I + a·(Gram)`, on the side it was taken.
pub(crate) enum Side<T> {
    /// I + a·G, d × d.
    Primal(Factor<T>),
    /// I + a·S Z Zᵀ S over the class's samples, n_j × n_j.
    Dual(Factor<T>),
}

impl<T: Float> Side<T> {
    pub(crate) fn factor(&self) -> &Factor<T> {
        match self {
            Side::Primal(f) | Side::Dual(f) => f,
        }
    }
}

pub(crate) fn cholesky<T: Float>(side: &Option<Side<T>>) -> Option<&crate::linalg::Cholesky<T>> {
    side.as_ref().and_then(|s| s.factor().cholesky())
}

pub(crate) fn spectral<T: Float>(side: &Option<Side<T>>) -> Option<&factor::Spectral> {
    side.as_ref().and_then(|s| s.factor().spectral())
}

pub(crate) struct ClassEval<'m, T> {
    pub(crate) rows: ClassRows<'m, T>,
    /// `None` for an empty class (contributes exactly 0).
    pub(crate) side: Option<Side<T>>,
    pub(crate) term: T,
}

impl<'m, T: Float> ClassEval<'m, T> {
    fn empty(rows: ClassRows<'m, T>) -> Self {
        Self {
            rows,
            side: None,
            term: T::zero(),
        }
    }

    /// The class with its factor: its term `w_j · logdet`.
    fn factored(rows: ClassRows<'m, T>, side: Side<T>, params: Params, n: usize) -> Self {
        let term = T::from_f64(class_weight(rows.trace, params, n)) * side.factor().logdet();
        Self {
            rows,
            side: Some(side),
            term,
        }
    }
}

pub(crate) struct Evaluation<'z, 'm, T> {
    pub(crate) z: ArrayView2<'z, T>,
    pub(crate) membership: Option<&'m Membership<T>>,
    pub(crate) params: Params,
    /// Factor of R's matrix, when R was asked for.
    pub(crate) r_side: Option<Side<T>>,
    pub(crate) r: T,
    pub(crate) classes: Vec<ClassEval<'m, T>>,
    pub(crate) soft: bool,
}

/// The class factors and R's factor.
type Factored<'m, T> = (Vec<ClassEval<'m, T>>, Option<Side<T>>);

impl<'z, 'm, T: Float> Evaluation<'z, 'm, T> {
    /// Factors R (when `need_r`) and every class term of Rc. Validates nothing: callers check
    /// `z` and `membership` first.
    pub(crate) fn new(
        z: ArrayView2<'z, T>,
        membership: Option<&'m Membership<T>>,
        params: Params,
        need_r: bool,
    ) -> Result<Self> {
        let (n, d) = z.dim();
        let soft = membership.is_some_and(|m| !m.is_hard());
        let (classes, r_side) = if n < d {
            factor_on_samples(z, membership, params, need_r)?
        } else {
            factor_on_features(z, membership, params, need_r, soft)?
        };
        let r = r_side
            .as_ref()
            .map_or(T::zero(), |s| T::from_f64(0.5) * s.factor().logdet());
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

    /// Per-class terms `w_j · logdet(I + a_j Zᵀ W_j Z)`.
    pub(crate) fn class_terms(&self) -> Vec<T> {
        self.classes.iter().map(|c| c.term).collect()
    }

    /// `Rc = Σ_j` terms.
    pub(crate) fn rc(&self) -> T {
        self.classes.iter().map(|c| c.term).sum()
    }
}

/// The rows of class j (weighted by `S_j` when soft), copied: n_j × d.
fn class_samples<T: Float>(z: ArrayView2<T>, rows: &ClassRows<'_, T>) -> Array2<T> {
    let sw = sqrt_weights(rows);
    let mut x = Array2::<T>::zeros((rows.rows.len(), z.ncols()));
    gather(z, &rows.rows, sw.as_deref(), x.view_mut());
    x
}

/// n < d: every class has n_j ≤ n < d, so every log-det is on the sample side, each class's
/// `S_j K_j S_j` read from one `K = Z Zᵀ`.
fn factor_on_samples<'m, T: Float>(
    z: ArrayView2<'_, T>,
    membership: Option<&'m Membership<T>>,
    params: Params,
    need_r: bool,
) -> Result<Factored<'m, T>> {
    let (n, d) = z.dim();
    let mut kmat = Array2::<T>::zeros((n, n));
    crate::linalg::gram_rows(z, T::one(), false, kmat.view_mut(), true);
    let k = membership.map_or(0, |m| m.n_classes());
    let evals = for_classes(
        k,
        worth_threads(n, d),
        |j, inner| -> Result<ClassEval<'m, T>> {
            let rows = membership
                .expect("k > 0 implies a membership")
                .class_rows(j);
            let (Some(aj), false) = (class_scale(rows.trace, params, d), rows.rows.is_empty())
            else {
                return Ok(ClassEval::empty(rows));
            };
            let kj = class_block(&kmat, &rows);
            let f = factor::identity_plus(
                &kj,
                T::from_f64(aj),
                || class_samples(z, &rows),
                "I + a_j·K_j",
                inner,
            )?;
            Ok(ClassEval::factored(rows, Side::Dual(f), params, n))
        },
    );
    let classes = evals.into_iter().collect::<Result<Vec<_>>>()?;
    let a = T::from_f64(rate_scale(n, d, params));
    let r_side = if need_r {
        let f = factor::identity_plus(&kmat, a, || z.to_owned(), "I + a·K", true)?;
        Some(Side::Dual(f))
    } else {
        None
    };
    Ok((classes, r_side))
}

/// `S_j K_j S_j`: class j's block of `K` (lower triangle), weighted by `√π_ij` when soft.
fn class_block<T: Float>(kmat: &Array2<T>, rows: &ClassRows<'_, T>) -> Array2<T> {
    let sw = sqrt_weights(rows);
    let nj = rows.rows.len();
    let mut kj = Array2::<T>::zeros((nj, nj));
    for p in 0..nj {
        let ip = rows.rows[p] as usize;
        for q in 0..=p {
            let iq = rows.rows[q] as usize;
            let v = if ip >= iq {
                kmat[(ip, iq)]
            } else {
                kmat[(iq, ip)]
            };
            kj[(p, q)] = match &sw {
                Some(s) => v * s[p] * s[q],
                None => v,
            };
        }
    }
    kj
}

/// d ≤ n: R on the feature side; each class on its smaller side. With hard labels the total
/// Gram `G = Σ_j G_j` comes from the class Grams at no extra pass over the data.
fn factor_on_features<'m, T: Float>(
    z: ArrayView2<'_, T>,
    membership: Option<&'m Membership<T>>,
    params: Params,
    need_r: bool,
    soft: bool,
) -> Result<Factored<'m, T>> {
    let (n, d) = z.dim();
    let k = membership.map_or(0, |m| m.n_classes());
    let mut g = Array2::<T>::zeros((d, d));
    if (soft || k == 0) && need_r {
        crate::linalg::gram_cols(z, T::one(), false, g.view_mut(), true);
    }
    let want_gram = !soft && need_r;
    let evals = for_classes(k, worth_threads(n, d), |j, inner| {
        let rows = membership
            .expect("k > 0 implies a membership")
            .class_rows(j);
        class_on_features(z, rows, params, want_gram, inner)
    });
    let mut classes = Vec::with_capacity(k);
    for e in evals {
        let (class, gj) = e?;
        if let Some(gj) = gj {
            g += &gj;
        }
        classes.push(class);
    }
    let a = T::from_f64(rate_scale(n, d, params));
    let r_side = if need_r {
        let f = factor::identity_plus(&g, a, || z.to_owned(), "I + a·G", true)?;
        Some(Side::Primal(f))
    } else {
        None
    };
    Ok((classes, r_side))
}

/// One class when d ≤ n: `I + a_j K_j` (n_j × n_j) when the class has fewer samples than
/// dimensions, `I + a_j G_j` (d × d) otherwise; with `want_gram`, also its Gram `G_j`
/// (for R's `G = Σ_j G_j`).
fn class_on_features<'m, T: Float>(
    z: ArrayView2<'_, T>,
    rows: ClassRows<'m, T>,
    params: Params,
    want_gram: bool,
    inner: bool,
) -> Result<(ClassEval<'m, T>, Option<Array2<T>>)> {
    let (n, d) = z.dim();
    let (Some(aj), false) = (class_scale(rows.trace, params, d), rows.rows.is_empty()) else {
        return Ok((ClassEval::empty(rows), None));
    };
    let aj = T::from_f64(aj);
    if rows.rows.len() < d {
        let x = class_samples(z, &rows);
        let mut kj = Array2::<T>::zeros((x.nrows(), x.nrows()));
        crate::linalg::gram_rows(x.view(), T::one(), false, kj.view_mut(), inner);
        let gx = want_gram.then(|| {
            let mut gx = Array2::<T>::zeros((d, d));
            crate::linalg::gram_cols(x.view(), T::one(), false, gx.view_mut(), inner);
            gx
        });
        let f = factor::identity_plus(&kj, aj, || x.clone(), "I + a_j·K_j", inner)?;
        Ok((ClassEval::factored(rows, Side::Dual(f), params, n), gx))
    } else {
        let sw = sqrt_weights(&rows);
        let gj = weighted_gram(z, &rows.rows, sw.as_deref(), None, inner);
        let f = factor::identity_plus(&gj, aj, || class_samples(z, &rows), "I + a_j·G_j", inner)?;
        let gj = want_gram.then_some(gj);
        Ok((ClassEval::factored(rows, Side::Primal(f), params, n), gj))
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
