//! The training losses and their gradients: cross-entropy on logits and the MCR² loss on
//! features.

use ndarray::{Array2, ArrayRef2};

use crate::{Error, Float, Labels, Membership, Precision, Result};

/// A loss value and its gradient with respect to the loss's input.
#[derive(Debug, Clone, PartialEq)]
pub struct LossValue<T> {
    /// The loss.
    pub loss: T,
    /// `∂loss/∂input`, the input's shape.
    pub grad: Array2<T>,
}

/// Cross-entropy of `logits` (b × classes) against hard `labels`, mean over the batch, with
/// optional label smoothing `s ∈ [0, 1)` (PyTorch's `F.cross_entropy(.., label_smoothing=s)`):
///
/// `loss = (1/b) Σ_i [ (1 − s)·(−log p_{i,y_i}) + s·mean_c(−log p_{i,c}) ]`,
/// `p_i = softmax(logits_i)`; `∂loss/∂logits_i = (p_i − q_i)/b`,
/// `q_i = (1 − s)·onehot(y_i) + s/classes`.
///
/// ```
/// use mcr2::train::cross_entropy;
/// use mcr2::{Labels, ndarray::array};
/// let logits = array![[0.0, 0.0], [2.0, 0.0]];
/// let out = cross_entropy(&logits, &Labels::new(&[0, 0], 2)?, 0.0)?;
/// let expected = (2f64.ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
/// assert!((out.loss - expected).abs() < 1e-15);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn cross_entropy<T: Float>(
    logits: &ArrayRef2<T>,
    labels: &Labels,
    label_smoothing: f64,
) -> Result<LossValue<T>> {
    crate::validate::matrix("logits", logits)?;
    let (b, c) = logits.dim();
    if labels.n_samples() != b || labels.n_classes() != c {
        return Err(Error::ShapeMismatch {
            what: "labels",
            expected: format!("{b} samples in {c} classes (the logits' shape)"),
            got: format!(
                "{} samples in {} classes",
                labels.n_samples(),
                labels.n_classes()
            ),
        });
    }
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(Error::InvalidParameter {
            name: "label_smoothing",
            value: label_smoothing.to_string(),
            reason: "must be in [0, 1)",
        });
    }
    let s = label_smoothing;
    let mut grad = Array2::<T>::zeros((b, c));
    let mut total = 0.0f64;
    let ys = labels.to_vec();
    for (i, (row, mut g)) in logits.rows().into_iter().zip(grad.rows_mut()).enumerate() {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.as_f64()));
        let sum: f64 = row.iter().map(|v| (v.as_f64() - max).exp()).sum();
        let log_z = max + sum.ln();
        let y = ys[i];
        let nll = log_z - row[y].as_f64();
        let mean_nll = log_z - row.iter().map(|v| v.as_f64()).sum::<f64>() / c as f64;
        total += (1.0 - s) * nll + s * mean_nll;
        for (k, (gk, v)) in g.iter_mut().zip(row).enumerate() {
            let p = (v.as_f64() - log_z).exp();
            let q = if k == y { 1.0 - s } else { 0.0 } + s / c as f64;
            *gk = T::from_f64((p - q) / b as f64);
        }
    }
    Ok(LossValue {
        loss: T::from_f64(total / b as f64),
        grad,
    })
}

/// The floor of the feature norms in [`mcr2_loss`] (PyTorch's `F.normalize` default).
pub const NORMALIZE_EPS: f64 = 1e-12;

/// The MCR² loss on features (b × dim, rows are samples): `−ΔR(Z | labels)` of the rows
/// scaled to unit norm, `Z_i = F_i/max(‖F_i‖, 10⁻¹²)` (Yu et al. 2020; PyTorch's
/// `F.normalize`, so a zero row stays zero), with the `rate` module's exact gradient taken
/// back through the normalization: `∂loss/∂F_i = −(G_i − (G_i·Z_i) Z_i)/‖F_i‖`,
/// `G = ∂ΔR/∂Z` (`−G_i/10⁻¹²` for a row below the floor).
///
/// ```
/// use mcr2::train::mcr2_loss;
/// use mcr2::{Labels, Precision, ndarray::array};
/// // orthogonal classes: ΔR = R − Rc with R = ½ logdet(I + d/(nε²) ZᵀZ)
/// let f = array![[2.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]];
/// let out = mcr2_loss(&f, &Labels::new(&[0, 0, 1, 1], 2)?, Precision::from_eps_sq(0.5)?)?;
/// // R = ln(1 + 2) (twice ½ ln(1 + 4·2/4)), Rc = 2·(¼ ln(1 + 2·2/1)) = ½ ln 5
/// assert!((out.loss + (3f64.ln() - 0.5 * 5f64.ln())).abs() < 1e-12);
/// # Ok::<(), mcr2::Error>(())
/// ```
pub fn mcr2_loss<T: Float>(
    features: &ArrayRef2<T>,
    labels: &Labels,
    eps: Precision,
) -> Result<LossValue<T>> {
    crate::validate::matrix("features", features)?;
    // PyTorch's F.normalize: F_i / max(‖F_i‖, 10⁻¹²), so a zero row stays zero
    let mut z = features.to_owned();
    let norms: Vec<T> = z
        .rows_mut()
        .into_iter()
        .map(|mut row| {
            let norm = crate::kernels::normalize_row(row.view_mut());
            let floor = T::from_f64(NORMALIZE_EPS);
            if norm < floor {
                row.mapv_inplace(|v| v * norm / floor);
                floor
            } else {
                norm
            }
        })
        .collect();
    if let Some(i) = norms.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "features (norm)",
            row: i,
            col: 0,
        });
    }
    let membership = Membership::from(labels.clone());
    let (rr, mut g) = crate::rate_reduction_with_grad(&z, &membership, eps)?;
    let floor = T::from_f64(NORMALIZE_EPS);
    for ((mut gi, zi), &ni) in g.rows_mut().into_iter().zip(z.rows()).zip(&norms) {
        if ni > floor {
            let c = gi.dot(&zi);
            gi.scaled_add(-c, &zi);
        }
        gi.mapv_inplace(|v| -v / ni);
    }
    Ok(LossValue {
        loss: -rr.delta_r,
        grad: g,
    })
}
