//! Lossy coding: the coding length of a group of samples, segmentation by agglomerative lossy
//! compression (ALC), and classification by minimum incremental coding length (MICL).
//!
//! Samples are rows: a group `W` is m × n (m samples of dimension n). With the mean coded
//! separately ([`MeanCoding::Separate`], the default), `μ = (1/m) Σ w_i` and `W̄ = W − 1μᵀ`:
//!
//! `L(W) = ((m + n)/2) log₂ det(I + n/(ε² m) W̄ᵀW̄) + (n/2) log₂(1 + μᵀμ/ε²)`.
//!
//! The first term is Eq. 6 of Ma, Derksen, Hong, Wright, *Segmentation of multivariate mixed
//! data via lossy data coding and compression*, IEEE TPAMI 29(9), 2007: m/2 · logdet codes the
//! samples up to distortion ε² and n/2 · logdet the codebook. The mean term is the one stated
//! in the same paper for data that is not zero-mean; it is what coding the n entries of μ costs
//! when each entry, of power μᵀμ/n, is coded at the per-entry share ε²/n of the distortion:
//! n · ½ log₂(1 + (μᵀμ/n)/(ε²/n)). With [`MeanCoding::ZeroMean`] the data is taken as is (no
//! mean, no mean term): `L(W) = ((m + n)/2) log₂ det(I + n/(ε² m) WᵀW)`.
//!
//! A segmentation `W = W_1 ∪ … ∪ W_k` of m samples costs
//! `L^s = Σ_i [ L(W_i) − |W_i| log₂(|W_i|/m) ]`, the second term being the membership
//! (Huffman) bits. [`alc`] minimizes it greedily from singletons (Ma et al. 2007, Alg. 1);
//! [`Micl`] classifies a sample into the class whose coding length grows least
//! (Wright, Tao, Zhou, Ma, Sastry, *Classification via minimum incremental coding length*,
//! NIPS 2007): `δL_j(x) = L(X_j ∪ {x}) − L(X_j) − log₂ π_j`, `π_j = m_j/m`.
//!
//! Every log-det is taken on the smaller side: `det(I_n + c W̄ᵀW̄) = det(I_m + c W̄W̄ᵀ)`.
//! Computation is in f64 for f32 and f64 inputs alike.

use ndarray::{Array1, Array2, ArrayRef2, ArrayView1, Axis};

use crate::{Error, Float, Precision, Result};

/// The unit of coding lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Unit {
    /// log₂ (the papers' unit).
    #[default]
    Bits,
    /// Natural logarithm.
    Nats,
}

/// Whether the mean of a group is coded separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MeanCoding {
    /// Center the group and add the cost of its mean, `(n/2) log₂(1 + μᵀμ/ε²)` (the papers'
    /// form for data that is not zero-mean).
    #[default]
    Separate,
    /// Code the samples as they are (subspaces through the origin).
    ZeroMean,
}

/// How coding lengths are measured: the distortion ε, the unit and the mean coding.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Coder {
    /// The allowed distortion ε (ε² per sample).
    pub eps: Precision,
    /// Bits (default) or nats.
    pub unit: Unit,
    /// Mean coded separately (default) or zero-mean data.
    pub mean: MeanCoding,
}

/// A group of samples summarized for coding: count, mean and scatter about the mean (or raw
/// second moment for zero-mean coding), with the member indices.
#[derive(Debug, Clone)]
struct Group {
    members: Vec<usize>,
    mean: Array1<f64>,
    /// n × n scatter; built on first use (small groups are coded from their samples)
    scatter: Option<Array2<f64>>,
    /// L(W) in nats
    length: f64,
}

impl Coder {
    /// Bits, mean coded separately.
    pub fn new(eps: Precision) -> Self {
        Self {
            eps,
            unit: Unit::Bits,
            mean: MeanCoding::Separate,
        }
    }

    /// The same coder in another unit.
    pub fn with_unit(mut self, unit: Unit) -> Self {
        self.unit = unit;
        self
    }

    /// The same coder with another mean coding.
    pub fn with_mean(mut self, mean: MeanCoding) -> Self {
        self.mean = mean;
        self
    }

    fn scale(&self, nats: f64) -> f64 {
        match self.unit {
            Unit::Bits => nats / std::f64::consts::LN_2,
            Unit::Nats => nats,
        }
    }

    fn centered(&self) -> bool {
        self.mean == MeanCoding::Separate
    }

    /// The coding length L(W) of the rows of `x` (m samples × n dimensions).
    pub fn length<T: Float>(&self, x: &ArrayRef2<T>) -> Result<f64> {
        crate::validate::matrix("samples", x)?;
        let x = x.mapv(|v| v.as_f64());
        let g = self.group(&x, (0..x.nrows()).collect());
        Ok(self.scale(g.length))
    }

    /// The segmentation coding length `Σ_i [L(W_i) − |W_i| log₂(|W_i|/m)]` of the rows of `x`
    /// grouped by `labels` (any values; each distinct label is a group).
    pub fn segmentation_length<T: Float>(&self, x: &ArrayRef2<T>, labels: &[usize]) -> Result<f64> {
        crate::validate::matrix("samples", x)?;
        check_labels(labels, x.nrows())?;
        let x = x.mapv(|v| v.as_f64());
        let m = x.nrows() as f64;
        let mut total = 0.0;
        for members in groups_of(labels) {
            let k = members.len() as f64;
            total += self.group(&x, members).length - k * (k / m).ln();
        }
        Ok(self.scale(total))
    }

    /// A group's statistics and coding length (nats) from its member rows of `x`.
    fn group(&self, x: &Array2<f64>, members: Vec<usize>) -> Group {
        let n = x.ncols();
        let mut mean = Array1::<f64>::zeros(n);
        if self.centered() {
            for &i in &members {
                mean += &x.row(i);
            }
            mean /= members.len() as f64;
        }
        let mut g = Group {
            members,
            mean,
            scatter: None,
            length: 0.0,
        };
        if g.members.len() > n {
            g.scatter = Some(scatter_of(x, &g.members, &g.mean));
        }
        g.length = self.length_of(x, &g.members, &g.mean, g.scatter.as_ref());
        g
    }

    /// L (nats) of a group given its mean and, when it has more samples than dimensions, its
    /// scatter; otherwise coded from its centered samples (the smaller side).
    fn length_of(
        &self,
        x: &Array2<f64>,
        members: &[usize],
        mean: &Array1<f64>,
        scatter: Option<&Array2<f64>>,
    ) -> f64 {
        let n = x.ncols();
        let k = members.len();
        let c = n as f64 / (self.eps.get_eps_sq() * k as f64);
        let logdet = match scatter {
            Some(s) if k > n => logdet_i_plus(s, c),
            _ => {
                // k × k Gram of the centered samples
                let mut w = Array2::<f64>::zeros((k, n));
                for (mut r, &i) in w.rows_mut().into_iter().zip(members) {
                    r.assign(&x.row(i));
                    r -= mean;
                }
                logdet_i_plus(&w.dot(&w.t()), c)
            }
        };
        let mut l = 0.5 * (k + n) as f64 * logdet;
        if self.centered() {
            l += 0.5 * n as f64 * (mean.dot(mean) / self.eps.get_eps_sq()).ln_1p();
        }
        l
    }

    /// The union of two groups (statistics merged exactly; its length computed).
    fn merge(&self, x: &Array2<f64>, a: &Group, b: &Group, with_scatter: bool) -> Group {
        let (ka, kb) = (a.members.len() as f64, b.members.len() as f64);
        let k = ka + kb;
        let n = x.ncols();
        let mean = if self.centered() {
            (&a.mean * ka + &b.mean * kb) / k
        } else {
            Array1::zeros(n)
        };
        let mut members = Vec::with_capacity(a.members.len() + b.members.len());
        members.extend_from_slice(&a.members);
        members.extend_from_slice(&b.members);
        let scatter = if members.len() > n || with_scatter {
            // S_ab = S_a + S_b + (k_a k_b / k) (μ_a − μ_b)(μ_a − μ_b)ᵀ (stable: no large
            // uncentered moments are subtracted)
            let sa = a
                .scatter
                .clone()
                .unwrap_or_else(|| scatter_of(x, &a.members, &a.mean));
            let sb = b
                .scatter
                .as_ref()
                .map_or_else(|| scatter_of(x, &b.members, &b.mean), |s| s.clone());
            let mut s = sa + sb;
            if self.centered() {
                let d = &a.mean - &b.mean;
                let f = ka * kb / k;
                for i in 0..n {
                    for j in 0..n {
                        s[(i, j)] += f * d[i] * d[j];
                    }
                }
            }
            Some(s)
        } else {
            None
        };
        let length = self.length_of(x, &members, &mean, scatter.as_ref());
        Group {
            members,
            mean,
            scatter,
            length,
        }
    }
}

/// Σ_{i ∈ members} (x_i − μ)(x_i − μ)ᵀ.
fn scatter_of(x: &Array2<f64>, members: &[usize], mean: &Array1<f64>) -> Array2<f64> {
    let n = x.ncols();
    let mut w = Array2::<f64>::zeros((members.len(), n));
    for (mut r, &i) in w.rows_mut().into_iter().zip(members) {
        r.assign(&x.row(i));
        r -= mean;
    }
    w.t().dot(&w)
}

/// `ln det(I + c·S)` for a symmetric positive semi-definite S, by Cholesky (I + cS is
/// positive definite). Small matrices use a plain loop; larger ones the crate's backend.
fn logdet_i_plus(s: &Array2<f64>, c: f64) -> f64 {
    let k = s.nrows();
    let mut a = s * c;
    for i in 0..k {
        a[(i, i)] += 1.0;
    }
    if k > 64 {
        // positive definite in exact arithmetic; should rounding say otherwise, the loop
        // below (which clamps its pivots) decides
        if let Ok(chol) = crate::linalg::Cholesky::new(a.clone(), "I + cS", false) {
            return chol.logdet();
        }
    }
    let mut logdet = 0.0;
    for j in 0..k {
        let mut d = a[(j, j)];
        for p in 0..j {
            d -= a[(j, p)] * a[(j, p)];
        }
        // rounding can only shrink a pivot that is ≥ 1 in exact arithmetic to just below it
        let d = d.max(f64::MIN_POSITIVE).sqrt();
        a[(j, j)] = d;
        logdet += 2.0 * d.ln();
        for i in (j + 1)..k {
            let mut v = a[(i, j)];
            for p in 0..j {
                v -= a[(i, p)] * a[(j, p)];
            }
            a[(i, j)] = v / d;
        }
    }
    logdet
}

fn check_labels(labels: &[usize], rows: usize) -> Result<()> {
    if labels.len() != rows {
        return Err(Error::ShapeMismatch {
            what: "labels",
            expected: format!("{rows} labels (one per sample)"),
            got: format!("{}", labels.len()),
        });
    }
    Ok(())
}

/// Member lists of the distinct labels, in order of first appearance.
fn groups_of(labels: &[usize]) -> Vec<Vec<usize>> {
    let mut index = std::collections::HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        let g = *index.entry(l).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// One merge of [`alc`], as the observer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AlcProgress {
    /// Merges done so far.
    pub merges: usize,
    /// Current number of groups.
    pub groups: usize,
    /// Current segmentation coding length (in the coder's unit).
    pub coding_length: f64,
}

/// The result of [`alc`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Segmentation {
    /// Group of each sample, numbered 0.. in order of each group's first sample.
    pub labels: Vec<usize>,
    /// Number of groups.
    pub groups: usize,
    /// The segmentation coding length before the first merge and after each merge (in the
    /// coder's unit); it decreases strictly.
    pub trace: Vec<f64>,
}

/// Segments the rows of `x` by agglomerative lossy compression: start from one group per
/// sample; repeatedly merge the pair of groups whose union lowers the segmentation coding
/// length `L^s` the most; stop when no merge lowers it. The number of groups is chosen by the
/// data and ε alone.
///
/// Every pair's change in coding length is cached (an m × m table) and only the pairs of the
/// merged group are recomputed after a merge, with the best partner of each group tracked so
/// that finding the next merge is one pass over the groups. Each evaluation codes the union
/// on its smaller side: from the k × k Gram of its centered samples while it has k ≤ n samples,
/// from its merged n × n scatter afterwards. Cost: m(m − 1)/2 evaluations to start, then at
/// most (current number of groups) per merge, so O(m²) evaluations of O(min(k, n)³) each
/// in total, and O(m²) memory (8 bytes per pair: 32 MB at m = 2000). With the `parallel`
/// feature the evaluations run on the rayon pool.
pub fn alc<T: Float>(
    x: &ArrayRef2<T>,
    coder: &Coder,
    mut observer: impl FnMut(&AlcProgress),
) -> Result<Segmentation> {
    crate::validate::matrix("samples", x)?;
    let x = x.mapv(|v| v.as_f64());
    let m = x.nrows();
    let mf = m as f64;
    // membership bits of a group of k samples (nats)
    let member = |k: usize| -(k as f64) * (k as f64 / mf).ln();
    let mut groups: Vec<Option<Group>> = (0..m).map(|i| Some(coder.group(&x, vec![i]))).collect();
    let mut total: f64 = groups
        .iter()
        .flatten()
        .map(|g| g.length + member(g.members.len()))
        .sum();
    let delta_of = |a: &Group, b: &Group| -> f64 {
        let u = coder.merge(&x, a, b, false);
        (u.length + member(u.members.len()))
            - (a.length + member(a.members.len()))
            - (b.length + member(b.members.len()))
    };
    // the pair table, full (both triangles) so that rows are contiguous
    let mut delta = Array2::<f64>::from_elem((m, m), f64::INFINITY);
    {
        let gs: Vec<&Group> = groups
            .iter()
            .map(|g| g.as_ref().expect("all present"))
            .collect();
        let fill_row = |i: usize, mut row: ndarray::ArrayViewMut1<f64>| {
            for j in (i + 1)..m {
                row[j] = delta_of(gs[i], gs[j]);
            }
        };
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            delta
                .axis_iter_mut(Axis(0))
                .into_par_iter()
                .enumerate()
                .for_each(|(i, row)| fill_row(i, row));
        }
        #[cfg(not(feature = "parallel"))]
        for (i, row) in delta.axis_iter_mut(Axis(0)).enumerate() {
            fill_row(i, row);
        }
        for i in 0..m {
            for j in (i + 1)..m {
                delta[(j, i)] = delta[(i, j)];
            }
        }
    }
    let mut active: Vec<usize> = (0..m).collect();
    let best_in = |delta: &Array2<f64>, active: &[usize], i: usize| -> (f64, usize) {
        let row = delta.row(i);
        active
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| (row[j], j))
            .fold(
                (f64::INFINITY, usize::MAX),
                |b, c| if c.0 < b.0 { c } else { b },
            )
    };
    let mut best: Vec<(f64, usize)> = (0..m).map(|i| best_in(&delta, &active, i)).collect();
    let scale = |v: f64| coder.scale(v);
    let mut trace = vec![scale(total)];
    let mut merges = 0;
    observer(&AlcProgress {
        merges,
        groups: active.len(),
        coding_length: scale(total),
    });
    while active.len() > 1 {
        let (gain, a) =
            active
                .iter()
                .map(|&i| (best[i].0, i))
                .fold(
                    (f64::INFINITY, usize::MAX),
                    |b, c| if c.0 < b.0 { c } else { b },
                );
        if gain.is_nan() || gain >= 0.0 {
            break;
        }
        let b = best[a].1;
        let (a, b) = (a.min(b), a.max(b));
        let ga = groups[a].take().expect("active");
        let gb = groups[b].take().expect("active");
        let merged = coder.merge(&x, &ga, &gb, false);
        total += gain;
        groups[a] = Some(merged);
        active.retain(|&i| i != b);
        delta.row_mut(b).fill(f64::INFINITY);
        delta.column_mut(b).fill(f64::INFINITY);
        // the merged group's row
        let ga = groups[a].as_ref().expect("just merged");
        let others: Vec<usize> = active.iter().copied().filter(|&c| c != a).collect();
        let eval = |&c: &usize| delta_of(ga, groups[c].as_ref().expect("active"));
        #[cfg(feature = "parallel")]
        let row: Vec<f64> = {
            use rayon::prelude::*;
            others.par_iter().map(eval).collect()
        };
        #[cfg(not(feature = "parallel"))]
        let row: Vec<f64> = others.iter().map(eval).collect();
        for (&c, &v) in others.iter().zip(&row) {
            delta[(a, c)] = v;
            delta[(c, a)] = v;
        }
        for &c in &others {
            if best[c].1 == a || best[c].1 == b {
                best[c] = best_in(&delta, &active, c);
            } else if delta[(c, a)] < best[c].0 {
                best[c] = (delta[(c, a)], a);
            }
        }
        best[a] = best_in(&delta, &active, a);
        merges += 1;
        trace.push(scale(total));
        observer(&AlcProgress {
            merges,
            groups: active.len(),
            coding_length: scale(total),
        });
    }
    let mut labels = vec![0usize; m];
    let mut order: Vec<&Group> = groups.iter().flatten().collect();
    order.sort_by_key(|g| g.members.iter().min().copied());
    for (l, g) in order.iter().enumerate() {
        for &i in &g.members {
            labels[i] = l;
        }
    }
    Ok(Segmentation {
        labels,
        groups: order.len(),
        trace,
    })
}

/// The fraction of samples misassigned under the best one-to-one matching of predicted
/// groups to true classes (Hungarian algorithm); samples of unmatched groups count as errors.
/// Cost O(g³) time and O(g²) memory for g = the larger of the numbers of groups and classes.
pub fn segmentation_error(predicted: &[usize], truth: &[usize]) -> Result<f64> {
    check_labels(predicted, truth.len())?;
    if truth.is_empty() {
        return Err(Error::Empty {
            what: "labels",
            rows: 0,
            cols: 0,
        });
    }
    let relabel = |l: &[usize]| -> (Vec<usize>, usize) {
        let mut map = std::collections::HashMap::new();
        let v = l
            .iter()
            .map(|x| {
                let next = map.len();
                *map.entry(*x).or_insert(next)
            })
            .collect();
        (v, map.len())
    };
    let (p, np) = relabel(predicted);
    let (t, nt) = relabel(truth);
    let size = np.max(nt);
    // cost = −(samples in common), padded to a square matrix
    let mut cost = vec![vec![0i64; size]; size];
    for (&a, &b) in p.iter().zip(&t) {
        cost[a][b] -= 1;
    }
    let matched: i64 = -hungarian(&cost);
    Ok(1.0 - matched as f64 / truth.len() as f64)
}

/// Minimum-cost perfect matching of a square cost matrix (shortest augmenting paths with
/// potentials); returns the minimum total cost.
fn hungarian(cost: &[Vec<i64>]) -> i64 {
    let n = cost.len();
    const INF: i64 = i64::MAX / 4;
    // 1-based: u, v potentials; p[j] = row matched to column j; way = predecessor column
    let mut u = vec![0i64; n + 1];
    let mut v = vec![0i64; n + 1];
    let mut p = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![INF; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = INF;
            let mut j1 = 0;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=n).map(|j| cost[p[j] - 1][j - 1]).sum()
}

/// One class of a [`Micl`] classifier: its count, mean, the eigendecomposition of its
/// scatter (the factor every test sample's rank-one update uses) and its coding length.
#[derive(Debug, Clone, PartialEq)]
struct ClassCode {
    count: usize,
    mean: Array1<f64>,
    eigenvalues: Array1<f64>,
    /// n × n, eigenvectors as columns
    eigenvectors: Array2<f64>,
    /// L(X_j) in nats
    length: f64,
}

/// Classification by minimum incremental coding length.
///
/// [`fit`](Self::fit) summarizes each class once: count m_j, mean μ_j and the
/// eigendecomposition `S_j = Q Λ Qᵀ` of its scatter. For a test sample x the class grows to
/// m' = m_j + 1 samples with mean μ' = μ_j + v/m' (v = x − μ_j) and scatter
/// `S' = S_j + (m_j/m') v vᵀ`, so with c' = n/(ε² m')
///
/// `logdet(I + c'S') = Σ_i ln(1 + c'λ_i) + ln(1 + c'(m_j/m') Σ_i (Qᵀv)_i² / (1 + c'λ_i))`:
/// O(n²) per sample and class, no factorization. (Zero-mean coding: v = x and S' = S_j + x xᵀ.)
#[derive(Debug, Clone, PartialEq)]
pub struct Micl {
    coder: Coder,
    classes: Vec<ClassCode>,
    dim: usize,
    total: usize,
}

impl Micl {
    /// Fits one code per class from the rows of `x` labelled `labels` (0..classes); every
    /// class needs at least one sample.
    pub fn fit<T: Float>(
        x: &ArrayRef2<T>,
        labels: &[usize],
        classes: usize,
        coder: Coder,
    ) -> Result<Self> {
        crate::validate::matrix("samples", x)?;
        let members = crate::subspace::class_members(labels, classes, x.nrows())?;
        let x = x.mapv(|v| v.as_f64());
        let n = x.ncols();
        let mut codes = Vec::with_capacity(classes);
        for members in members {
            let g = coder.group(&x, members);
            let scatter = g
                .scatter
                .clone()
                .unwrap_or_else(|| scatter_of(&x, &g.members, &g.mean));
            let (eigenvalues, eigenvectors) = crate::linalg::eigh::<f64>(scatter.view())
                .ok_or(Error::NoConvergence("eigendecomposition"))?;
            codes.push(ClassCode {
                count: g.members.len(),
                mean: g.mean,
                eigenvalues: eigenvalues.mapv(|l| l.max(0.0)),
                eigenvectors,
                length: g.length,
            });
        }
        Ok(Self {
            coder,
            classes: codes,
            dim: n,
            total: x.nrows(),
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes.len()
    }

    fn increase(&self, x: ArrayView1<f64>, j: usize) -> f64 {
        let c = &self.classes[j];
        let n = self.dim as f64;
        let eps_sq = self.coder.eps.get_eps_sq();
        let m = c.count as f64;
        let m1 = m + 1.0;
        let cp = n / (eps_sq * m1);
        let centered = self.coder.centered();
        let (v, w, mean) = if centered {
            let v = &x - &c.mean;
            let mean = &c.mean + &(&v / m1);
            (v, m / m1, mean)
        } else {
            (x.to_owned(), 1.0, c.mean.clone())
        };
        let q = c.eigenvectors.t().dot(&v);
        let mut logdet = 0.0;
        let mut quad = 0.0;
        for (&l, &qi) in c.eigenvalues.iter().zip(&q) {
            let d = 1.0 + cp * l;
            logdet += d.ln();
            quad += qi * qi / d;
        }
        logdet += (cp * w * quad).ln_1p();
        let mut length = 0.5 * (m1 + n) * logdet;
        if centered {
            length += 0.5 * n * (mean.dot(&mean) / eps_sq).ln_1p();
        }
        let prior = (m / self.total as f64).ln();
        length - c.length - prior
    }

    /// `δL_j(x) = L(X_j ∪ {x}) − L(X_j) − log₂ π_j` for every row of `x` and class
    /// (samples × classes, in the coder's unit).
    pub fn length_increase<T: Float>(&self, x: &ArrayRef2<T>) -> Result<Array2<f64>> {
        crate::validate::matrix_with_cols("samples", x, self.dim)?;
        let x = x.mapv(|v| v.as_f64());
        let mut out = Array2::<f64>::zeros((x.nrows(), self.classes.len()));
        for (row, mut o) in x.rows().into_iter().zip(out.rows_mut()) {
            for (j, v) in o.iter_mut().enumerate() {
                *v = self.coder.scale(self.increase(row, j));
            }
        }
        Ok(out)
    }

    /// The class of smallest coding-length increase for every row of `x`.
    pub fn predict<T: Float>(&self, x: &ArrayRef2<T>) -> Result<Vec<usize>> {
        let d = self.length_increase(x)?;
        Ok(d.rows()
            .into_iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, f64::INFINITY),
                        |b, (j, &v)| if v < b.1 { (j, v) } else { b },
                    )
                    .0
            })
            .collect())
    }

    /// Fraction of rows of `x` predicted as `labels`.
    pub fn accuracy<T: Float>(&self, x: &ArrayRef2<T>, labels: &[usize]) -> Result<f64> {
        crate::subspace::accuracy_of(x.nrows(), labels, || self.predict(x))
    }
}
