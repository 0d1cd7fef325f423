//! `∂Rc/∂Π`: how the compression term changes with a soft membership, for clustering by rate
//! reduction.

use ndarray::{Array2, ArrayRef2};

use super::{check, gram};
use crate::{Float, Membership, Precision, Result};

/// Gradient of `Rc` with respect to a soft membership Π (n × k):
///
/// `∂Rc/∂Π_ij = [logdet A_j − d + tr(A_j⁻¹)]/(2n) + d/(2nε²) · z_iᵀ A_j⁻¹ z_i`,
/// `A_j = I + a_j Zᵀ Π_j Z`. For an empty class (tr Π_j = 0) the value is the one-sided limit
/// `log(1 + d‖z_i‖²/ε²)/(2n)`. Useful for clustering by rate reduction. Costs O(k n d² + k d³).
/// Hard memberships are accepted (as one-hot Π).
pub fn class_coding_rate_grad_membership<T: Float>(
    z: &ArrayRef2<T>,
    membership: &Membership<T>,
    eps: Precision,
) -> Result<Array2<T>> {
    check(z, Some(membership))?;
    let (n, d) = z.dim();
    let k = membership.n_classes();
    let eps_sq = eps.eps_sq();
    let nf = n as f64;
    let norms: Vec<T> = z.rows().into_iter().map(|r| r.dot(&r)).collect();
    let mut out = Array2::<T>::zeros((n, k));
    let mut za = Array2::<T>::zeros((n, d));
    for j in 0..k {
        // G_j = Zᵀ Π_j Z over the class's samples, streamed as for the rates themselves
        let rows = membership.class_rows(j);
        let t = rows.trace;
        if rows.rows.is_empty() || t <= 0.0 {
            let c = d as f64 / eps_sq;
            for i in 0..n {
                out[(i, j)] = T::from_f64((1.0 + c * norms[i].as_f64()).ln() / (2.0 * nf));
            }
            continue;
        }
        let aj = T::from_f64(d as f64 / (t * eps_sq));
        let sw = gram::sqrt_weights(&rows);
        let gj = gram::weighted_gram(z.view(), &rows.rows, sw.as_deref(), None, true);
        let f = super::factor::identity_plus_gram(&gj, aj, "I + a_j·G_j", true)?;
        let inv = f.inverse(true);
        let base = (f.logdet() - T::from_usize(d) + inv.diag().sum()) / T::from_f64(2.0 * nf);
        crate::linalg::gemm(T::one(), z.view(), inv.view(), false, za.view_mut(), true);
        let half_kappa = T::from_f64(d as f64 / (2.0 * nf * eps_sq));
        for i in 0..n {
            out[(i, j)] = base + half_kappa * za.row(i).dot(&z.row(i));
        }
    }
    Ok(out)
}
