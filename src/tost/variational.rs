//! The book form of TSSA: the variational compression objective from subspace bases.

use ndarray::{Array1, Array2, ArrayRef2, Axis};

use crate::{Error, Float, Precision, Result};

/// The book form of TSSA from orthonormal subspace bases `U_1..U_K` (each d × p): with
/// `f(x) = ln(1 + (d/ε²) x)`, membership Π (n × K) and `N_k = Σ_j Π_jk`,
///
/// * `R^var(Z, Π) = ½ Σ_k (N_k/N) Σ_i f(s_ki)`, `s_ki = Σ_j Π_jk (U_kᵀz_j)_i² / N_k`
///   (an upper bound of the compression term, tight when U_k diagonalizes the class's
///   second moment);
/// * `∇_Z R^var = (1/N) Σ_k U_k D_k U_kᵀ Z Diag(π_k)`, `D_k = Diag(f′(s_k))` (Π held fixed);
/// * `Π_jk = softmax_k(‖U_kᵀ z_j‖² / (2η))`;
/// * the TSSA step `Z⁺ = Z − τ ∇_Z R^var(Z, Π(Z))`.
///
/// ```
/// use mcr2::ndarray::{Array2, s};
/// use mcr2::tost::VariationalCompression;
/// use mcr2::Precision;
/// // two heads: the coordinate planes e₁e₂ and e₃e₄ of R⁴
/// let eye = Array2::<f64>::eye(4);
/// let bases = vec![eye.slice(s![.., 0..2]).to_owned(), eye.slice(s![.., 2..4]).to_owned()];
/// let vc = VariationalCompression::new(bases, Precision::from_eps_sq(0.5)?, 0.5)?;
/// let z = Array2::from_shape_fn((6, 4), |(i, j)| ((i * 3 + j) % 5) as f64 / 5.0);
/// let pi = vc.membership(&z)?;
/// // one TSSA step compresses: the variational objective does not grow
/// let z1 = vc.step(&z, 0.1)?;
/// assert!(vc.objective(&z1, &pi)? <= vc.objective(&z, &pi)?);
/// # Ok::<(), mcr2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct VariationalCompression<T: Float> {
    bases: Vec<Array2<T>>,
    eps_sq: f64,
    eta: f64,
}

impl<T: Float> VariationalCompression<T> {
    /// From bases (each d × p, the same shape), precision ε and membership temperature η > 0.
    pub fn new(bases: Vec<Array2<T>>, eps: Precision, eta: f64) -> Result<Self> {
        let first = bases.first().ok_or(Error::InvalidParameter {
            name: "bases",
            value: "[]".into(),
            reason: "at least one basis is required",
        })?;
        let shape = first.dim();
        for u in &bases {
            if u.dim() != shape {
                return Err(Error::ShapeMismatch {
                    what: "subspace basis",
                    expected: format!("{}×{}", shape.0, shape.1),
                    got: format!("{}×{}", u.nrows(), u.ncols()),
                });
            }
            crate::validate::matrix("subspace basis", u)?;
        }
        crate::validate::positive("eta", eta)?;
        Ok(Self {
            bases,
            eps_sq: eps.eps_sq(),
            eta,
        })
    }

    fn check(&self, z: &ArrayRef2<T>) -> Result<()> {
        crate::validate::matrix_with_cols("tokens", z, self.bases[0].nrows())
    }

    fn check_pi(&self, z: &ArrayRef2<T>, pi: &ArrayRef2<T>) -> Result<()> {
        if pi.dim() != (z.nrows(), self.bases.len()) {
            return Err(Error::ShapeMismatch {
                what: "membership",
                expected: format!("{}×{}", z.nrows(), self.bases.len()),
                got: format!("{}×{}", pi.nrows(), pi.ncols()),
            });
        }
        crate::validate::finite("membership", pi)?;
        if pi.iter().any(|&v| v < T::zero()) || pi.sum_axis(Axis(0)).iter().any(|&s| s <= T::zero())
        {
            return Err(Error::InvalidMembership(
                "entries must be ≥ 0 and every column must have positive mass".into(),
            ));
        }
        Ok(())
    }

    /// `Π_jk = softmax_k(‖U_kᵀ z_j‖² / (2η))` (n × K).
    pub fn membership(&self, z: &ArrayRef2<T>) -> Result<Array2<T>> {
        self.check(z)?;
        let n = z.nrows();
        let mut pi = Array2::<T>::zeros((n, self.bases.len()));
        let scale = T::from_f64(0.5 / self.eta);
        for (k, u) in self.bases.iter().enumerate() {
            let w = z.dot(u);
            for (j, r) in w.rows().into_iter().enumerate() {
                pi[(j, k)] = r.dot(&r) * scale;
            }
        }
        crate::validate::finite_output("membership logits ‖U_kᵀz‖²/(2η)", &pi)?;
        for mut r in pi.rows_mut() {
            crate::kernels::softmax_in_place(r.as_slice_mut().expect("standard layout"));
        }
        Ok(pi)
    }

    /// For every head: the projected tokens U_kᵀ z_j (n × p), N_k and s_k.
    fn stats(&self, z: &ArrayRef2<T>, pi: &ArrayRef2<T>) -> Vec<(Array2<T>, T, Array1<T>)> {
        self.bases
            .iter()
            .enumerate()
            .map(|(k, u)| {
                let w = z.dot(u);
                let nk: T = pi.column(k).sum();
                let mut s = Array1::<T>::zeros(u.ncols());
                for (r, &pjk) in w.rows().into_iter().zip(pi.column(k)) {
                    for (si, &v) in s.iter_mut().zip(r) {
                        *si += pjk * v * v;
                    }
                }
                s /= nk;
                (w, nk, s)
            })
            .collect()
    }

    fn alpha(&self) -> T {
        T::from_f64(self.bases[0].nrows() as f64 / self.eps_sq)
    }

    /// `R^var(Z, Π)`.
    pub fn objective(&self, z: &ArrayRef2<T>, pi: &ArrayRef2<T>) -> Result<T> {
        self.check(z)?;
        self.check_pi(z, pi)?;
        let n = T::from_usize(z.nrows());
        let a = self.alpha();
        let half = T::from_f64(0.5);
        let value = self
            .stats(z, pi)
            .iter()
            .map(|(_, nk, s)| half * (*nk / n) * s.iter().map(|&x| (a * x).ln_1p()).sum::<T>())
            .sum();
        crate::validate::finite_value("variational objective", value)
    }

    /// `∇_Z R^var(Z, Π)` with Π held fixed (n × d).
    pub fn gradient(&self, z: &ArrayRef2<T>, pi: &ArrayRef2<T>) -> Result<Array2<T>> {
        self.check(z)?;
        self.check_pi(z, pi)?;
        let n = T::from_usize(z.nrows());
        let a = self.alpha();
        let mut g = Array2::<T>::zeros(z.dim());
        for ((w, _, s), (k, u)) in self
            .stats(z, pi)
            .into_iter()
            .zip(self.bases.iter().enumerate())
        {
            // rows: π_jk · (D_k U_kᵀ z_j)ᵀ, then times U_kᵀ
            let d: Array1<T> = s.mapv(|x| a / (T::one() + a * x));
            let mut scaled = w;
            for (mut r, &pjk) in scaled.rows_mut().into_iter().zip(pi.column(k)) {
                for (v, &di) in r.iter_mut().zip(&d) {
                    *v *= di * pjk / n;
                }
            }
            crate::linalg::gemm(T::one(), scaled.view(), u.t(), true, g.view_mut(), false);
        }
        crate::validate::finite_output("variational gradient", &g)?;
        Ok(g)
    }

    /// The TSSA step `Z − τ ∇_Z R^var(Z, Π(Z))` (τ > 0).
    pub fn step(&self, z: &ArrayRef2<T>, tau: f64) -> Result<Array2<T>> {
        crate::validate::positive("tau", tau)?;
        let pi = self.membership(z)?;
        let g = self.gradient(z, &pi)?;
        let out = z.to_owned() - &(g * T::from_f64(tau));
        crate::validate::finite_output("TSSA step", &out)?;
        Ok(out)
    }
}
