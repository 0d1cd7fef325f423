//! ReduNet: a deep network whose layers are computed in closed form from the training data,
//! each one a projected gradient-ascent step on the rate reduction ΔR (no back-propagation).
//!
//! Chan, Yu, You, Qi, Wright, Ma, *ReduNet: A White-box Deep Network from the Principle of
//! Maximizing Rate Reduction*, JMLR 23 (2022); the vector layers of the reference code
//! (`Ma-Lab-Berkeley/ReduNet`, `redunet/layers/vector.py`).
//!
//! Features are rows (m samples × d). From the features `Z` entering a layer and the true
//! labels (m_j samples in class j), with ε² the precision:
//!
//! * `E = c (I + c ZᵀZ)⁻¹`, c = d/(m ε²) — the expansion operator (the gradient of R);
//! * `C_j = c_j (I + c_j Z_jᵀZ_j)⁻¹`, c_j = d/(m_j ε²) — one compression operator per class;
//! * `γ_j = m_j/m`.
//!
//! The layer maps any feature z (train or test) to
//! `normalize(z + η (E z − Σ_j γ_j π̂_j(z) C_j z))`, where the soft membership
//! `π̂(z) = softmax_j(−λ ‖C_j z‖)` stands in for the unknown label (‖C_j z‖ clamped at 1e-8).
//! E and C_j are symmetric, so the row and column forms agree.
//!
//! ```
//! use mcr2::data::gaussian_toy;
//! use mcr2::rand::{SeedableRng, rngs::StdRng};
//! use mcr2::redunet::{LayerProgress, ReduNet, ReduNetConfig};
//! // the reference 2D toy: two classes around (1, 0) and (0, 1)
//! let centers = mcr2::ndarray::array![[1.0, 0.0], [0.0, 1.0]];
//! let (x, labels) = gaussian_toy(&centers, 50, 0.1, &mut StdRng::seed_from_u64(0))?;
//! let config = ReduNetConfig { layers: 20, ..ReduNetConfig::default() };
//! let (net, z, _report) = ReduNet::fit(&x, &labels, &config, |_: &LayerProgress| ())?;
//! assert_eq!((net.layers().len(), z.dim()), (20, (100, 2)));
//! assert!(net.accuracy(&x, &labels)? > 0.9);
//! # Ok::<(), mcr2::Error>(())
//! ```

mod io;

use ndarray::{Array2, ArrayRef2, ArrayView2, ArrayViewMut2, Axis};

use crate::observe::{Flow, Report, Stop};
use crate::{Error, Float, Labels, Membership, Precision, RateReduction, Result};

/// Sizes and constants of a ReduNet, with the reference defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReduNetConfig {
    /// Number of layers (reference toys: 200).
    pub layers: usize,
    /// Step size η (reference 0.5).
    pub eta: f64,
    /// Precision ε (reference code `eps = 0.1` is ε² = 0.1).
    pub eps: Precision,
    /// Softmax sharpness λ of the soft membership (reference toys 200, MNIST 500).
    pub lambda: f64,
}

impl Default for ReduNetConfig {
    /// The reference toy settings: 200 layers, η = 0.5, ε² = 0.1, λ = 200.
    fn default() -> Self {
        Self {
            layers: 200,
            eta: 0.5,
            eps: Precision::from_eps_sq(0.1).expect("0.1 is a valid ε²"),
            lambda: 200.0,
        }
    }
}

impl ReduNetConfig {
    /// Errors unless layers ≥ 1, η > 0 and λ ≥ 0 are finite.
    pub fn check(&self) -> Result<()> {
        if self.layers == 0 {
            return Err(Error::InvalidParameter {
                name: "layers",
                value: "0".into(),
                reason: "must be ≥ 1",
            });
        }
        crate::validate::positive("eta", self.eta)?;
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "lambda",
                value: self.lambda.to_string(),
                reason: "must be finite and ≥ 0",
            });
        }
        Ok(())
    }
}

/// One ReduNet layer: its operators E, C_j and weights γ_j (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ReduLayer<T: Float> {
    e: Array2<T>,
    c: Vec<Array2<T>>,
    gamma: Vec<T>,
}

impl<T: Float> ReduLayer<T> {
    /// The expansion operator E (d × d, symmetric).
    pub fn expansion(&self) -> &Array2<T> {
        &self.e
    }

    /// The compression operator C_j of class j (d × d, symmetric).
    pub fn compression(&self, class: usize) -> Option<&Array2<T>> {
        self.c.get(class)
    }

    /// γ_j = m_j/m for every class.
    pub fn gamma(&self) -> &[T] {
        &self.gamma
    }

    /// Computes the operators from features `z` (m × d, rows of class j listed in `rows[j]`).
    fn from_features(z: ArrayView2<T>, rows: &[Vec<usize>], eps_sq: f64) -> Result<Self> {
        let (m, d) = z.dim();
        let op = |g: Array2<T>, count: usize| -> Result<Array2<T>> {
            let c = d as f64 / (count as f64 * eps_sq);
            let chol =
                crate::rate::factor::identity_plus_gram(&g, T::from_f64(c), "I + c ZᵀZ", false)?;
            Ok(chol.inverse(false).mapv(|v| v * T::from_f64(c)))
        };
        // Gram matrices accumulated over row blocks: no copy of a class's rows is larger
        // than one block
        let block = crate::rate::gram::chunk_rows(d).max(1);
        let mut total = Array2::<T>::zeros((d, d));
        let mut c = Vec::with_capacity(rows.len());
        let mut buf = Array2::<T>::zeros((block.min(m).max(1), d));
        for members in rows {
            let mut g = Array2::<T>::zeros((d, d));
            for chunk in members.chunks(block) {
                let mut part = crate::rate::gram::head_rows(&mut buf, chunk.len());
                for (mut r, &i) in part.rows_mut().into_iter().zip(chunk) {
                    r.assign(&z.row(i));
                }
                crate::linalg::gram_cols(part.view(), T::one(), true, g.view_mut(), false);
            }
            total += &g;
            c.push(op(g, members.len())?);
        }
        let e = op(total, m)?;
        let gamma = rows
            .iter()
            .map(|r| T::from_f64(r.len() as f64 / m as f64))
            .collect();
        Ok(Self { e, c, gamma })
    }

    /// Applies the layer to a block of rows in place; writes the soft membership π̂ (rows ×
    /// classes) into `pi`.
    fn apply_block(&self, mut z: ArrayViewMut2<T>, eta: T, lambda: T, mut pi: ArrayViewMut2<T>) {
        let (b, d) = z.dim();
        let k = self.c.len();
        let mut expd = Array2::<T>::zeros((b, d));
        crate::linalg::gemm(
            T::one(),
            z.view(),
            self.e.view(),
            false,
            expd.view_mut(),
            false,
        );
        let mut comps = Vec::with_capacity(k);
        for cj in &self.c {
            let mut comp = Array2::<T>::zeros((b, d));
            crate::linalg::gemm(T::one(), z.view(), cj.view(), false, comp.view_mut(), false);
            comps.push(comp);
        }
        let floor = T::from_f64(1e-8);
        for i in 0..b {
            // π̂ = softmax(−λ ‖C_j z‖), stabilized by the largest logit
            let mut pr = pi.row_mut(i);
            for (p, c) in pr.iter_mut().zip(&comps) {
                let r = c.row(i);
                *p = -lambda * r.dot(&r).sqrt().max(floor);
            }
            crate::kernels::softmax_in_place(pr.as_slice_mut().expect("rows of π̂ are contiguous"));
            let mut row = z.row_mut(i);
            for t in 0..d {
                let mut clus = T::zero();
                for j in 0..k {
                    clus += self.gamma[j] * pi[(i, j)] * comps[j][(i, t)];
                }
                row[t] += eta * (expd[(i, t)] - clus);
            }
            let norm = row.dot(&row).sqrt().max(floor);
            row.mapv_inplace(|v| v / norm);
        }
    }
}

/// A ReduNet built layer by layer from training data ([`ReduNet::fit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReduNet<T: Float> {
    config: ReduNetConfig,
    dim: usize,
    layers: Vec<ReduLayer<T>>,
    /// rates of the training features: entry 0 at the input (after projection to the
    /// sphere), entry ℓ after layer ℓ
    history: Vec<RateReduction<T>>,
}

/// Progress of [`ReduNet::fit`] after each layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerProgress {
    /// Layers built so far.
    pub layer: usize,
    /// ΔR, R and Rc of the training features after this layer (true labels).
    pub delta_r: f64,
    /// R.
    pub r: f64,
    /// Rc.
    pub rc: f64,
}

/// Rows per block when applying a layer: bounds the temporaries to about 2¹⁸ elements per
/// operator whatever the number of samples.
fn block_rows(d: usize, classes: usize) -> usize {
    ((1usize << 18) / (d * (classes + 1)).max(1)).max(1)
}

/// Projects every row to the unit sphere (rows of any finite magnitude), erroring on a
/// zero row.
fn to_sphere<T: Float>(x: &ArrayRef2<T>) -> Result<Array2<T>> {
    let mut z = x.to_owned();
    for (i, row) in z.rows_mut().into_iter().enumerate() {
        if crate::kernels::normalize_row(row) == T::zero() {
            return Err(Error::InvalidParameter {
                name: "samples",
                value: format!("row {i}"),
                reason: "a zero vector cannot be projected to the unit sphere",
            });
        }
    }
    Ok(z)
}

impl<T: Float> ReduNet<T> {
    /// Builds the network from training samples `x` (m × d, projected to the unit sphere
    /// first) with labels in 0..classes: for each layer, the operators are computed from the
    /// current training features, then the layer is applied to them. Returns the network and
    /// the training features after the last layer. `observer` sees every layer's rates.
    ///
    /// Memory: the training features (m × d) are updated in place; besides the stored
    /// operators ((classes + 1) d² per layer), a layer needs the d × d Gram matrices and
    /// blocks of rows bounded independently of m.
    pub fn fit<R: Flow>(
        x: &ArrayRef2<T>,
        labels: &Labels,
        config: &ReduNetConfig,
        mut observer: impl FnMut(&LayerProgress) -> R,
    ) -> Result<(Self, Array2<T>, Report<LayerProgress>)> {
        config.check()?;
        crate::validate::matrix("samples", x)?;
        let rows = labels.nonempty_groups(x.nrows())?;
        // every layer stores E and the C_j: (classes + 1) d² values
        crate::validate::elements_of::<T>(
            "ReduNet operators",
            &[config.layers, labels.n_classes() + 1, x.ncols(), x.ncols()],
        )?;
        let membership = Membership::from(labels.clone());
        let mut z = to_sphere(x)?;
        let eps_sq = config.eps.eps_sq();
        let mut history = vec![crate::rate_reduction(&z, &membership, config.eps)?];
        let mut layers = Vec::new();
        let mut progress = Vec::new();
        let mut stop = Stop::MaxIterations;
        for l in 0..config.layers {
            let layer = ReduLayer::from_features(z.view(), &rows, eps_sq)?;
            Self::apply_layer(&layer, config, &mut z);
            let rr = crate::rate_reduction(&z, &membership, config.eps)?;
            let p = LayerProgress {
                layer: l + 1,
                delta_r: rr.delta_r.as_f64(),
                r: rr.r.as_f64(),
                rc: rr.rc.as_f64(),
            };
            let flow = observer(&p).flow();
            progress.push(p);
            history.push(rr);
            layers.push(layer);
            if flow.is_break() {
                stop = Stop::Observer;
                break;
            }
        }
        let report = Report {
            iterations: layers.len(),
            stop,
            history: progress,
        };
        Ok((
            Self {
                config: *config,
                dim: x.ncols(),
                layers,
                history,
            },
            z,
            report,
        ))
    }

    /// Applies one layer to all rows of `z` in blocks; returns π̂ of every row.
    fn apply_layer(layer: &ReduLayer<T>, config: &ReduNetConfig, z: &mut Array2<T>) -> Array2<T> {
        let (m, d) = z.dim();
        let k = layer.c.len();
        let block = block_rows(d, k);
        let mut pi = Array2::<T>::zeros((m, k));
        let (eta, lambda) = (T::from_f64(config.eta), T::from_f64(config.lambda));
        let run =
            |(zb, pb): (ArrayViewMut2<T>, ArrayViewMut2<T>)| layer.apply_block(zb, eta, lambda, pb);
        let zs = z.axis_chunks_iter_mut(Axis(0), block);
        let ps = pi.axis_chunks_iter_mut(Axis(0), block);
        #[cfg(feature = "parallel")]
        if m > block && crate::rows::threads() > 1 {
            use rayon::prelude::*;
            zs.into_par_iter().zip(ps.into_par_iter()).for_each(run);
            return pi;
        }
        zs.zip(ps).for_each(run);
        pi
    }

    /// The exponential-moving-average update of the reference code: with the features of
    /// `x` (labels in 0..classes, the same classes as the fit) entering each layer, every
    /// operator moves towards the one those features give, `E ← E + τ(E_new − E)` (the same
    /// for each C_j; γ_j is kept), and the updated layer carries the features on. τ ∈ (0, 1].
    pub fn update(&mut self, x: &ArrayRef2<T>, labels: &Labels, tau: f64) -> Result<()> {
        if !(tau > 0.0 && tau <= 1.0) {
            return Err(Error::InvalidParameter {
                name: "tau",
                value: tau.to_string(),
                reason: "must be in (0, 1]",
            });
        }
        crate::validate::matrix_with_cols("samples", x, self.dim)?;
        if labels.n_classes() != self.n_classes() {
            return Err(Error::ShapeMismatch {
                what: "labels",
                expected: format!("{} classes (the fit's)", self.n_classes()),
                got: format!("{} classes", labels.n_classes()),
            });
        }
        let rows = labels.nonempty_groups(x.nrows())?;
        let mut z = to_sphere(x)?;
        let t = T::from_f64(tau);
        for layer in &mut self.layers {
            let new = ReduLayer::from_features(z.view(), &rows, self.config.eps.eps_sq())?;
            layer.e.zip_mut_with(&new.e, |a, &b| *a += t * (b - *a));
            for (c, nc) in layer.c.iter_mut().zip(&new.c) {
                c.zip_mut_with(nc, |a, &b| *a += t * (b - *a));
            }
            Self::apply_layer(layer, &self.config, &mut z);
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &ReduNetConfig {
        &self.config
    }

    /// The layers.
    pub fn layers(&self) -> &[ReduLayer<T>] {
        &self.layers
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.layers[0].c.len()
    }

    /// ΔR, R and Rc of the training features (true labels): entry 0 at the input, entry ℓ
    /// after layer ℓ (empty for a network read by
    /// [`from_safetensors`](Self::from_safetensors)).
    pub fn history(&self) -> &[RateReduction<T>] {
        &self.history
    }

    /// Features and the last layer's soft membership of new samples.
    fn run(&self, x: &ArrayRef2<T>) -> Result<(Array2<T>, Array2<T>)> {
        crate::validate::matrix_with_cols("samples", x, self.dim)?;
        let mut z = to_sphere(x)?;
        let mut pi = Array2::zeros((0, 0));
        for layer in &self.layers {
            pi = Self::apply_layer(layer, &self.config, &mut z);
        }
        Ok((z, pi))
    }

    /// Maps new samples (rows) through every layer.
    pub fn transform(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        Ok(self.run(x)?.0)
    }

    /// The last layer's soft membership π̂ of new samples (samples × classes).
    pub fn membership(&self, x: &ArrayRef2<T>) -> Result<Array2<T>> {
        Ok(self.run(x)?.1)
    }

    /// The class of largest π̂ in the last layer, for every row of `x`.
    pub fn predict(&self, x: &ArrayRef2<T>) -> Result<Vec<usize>> {
        let pi = self.membership(x)?;
        Ok(pi
            .rows()
            .into_iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, T::neg_infinity()),
                        |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                    )
                    .0
            })
            .collect())
    }

    /// Fraction of rows of `x` predicted as `labels`.
    pub fn accuracy(&self, x: &ArrayRef2<T>, labels: &Labels) -> Result<f64> {
        crate::metrics::accuracy(&self.predict(x)?, labels)
    }
}
