//! The in-batch contrastive softmax (sentence-transformers' `MultipleNegativesRankingLoss`)
//! with false-negative control.
//!
//! For query `i` and every document `j` of the batch (all positives first, then all hard
//! negatives), `s_ij = scale · cos(q_i, d_j)`. With `P_i` the documents counted as
//! positives of `i` and `X_i` those taken out of the softmax,
//!
//! ```text
//! loss_i = −log Σ_{j∈P_i} exp s_ij + log Σ_{j∉X_i} exp s_ij
//! ```
//!
//! averaged over the batch. `P_i = {i}` plus, under [`FalseNegativePolicy::Positive`],
//! every other batch document known to answer `i`; under [`FalseNegativePolicy::Mask`]
//! those go into `X_i` instead. A document whose text equals query `i`'s positive is
//! always in `X_i`: it is the same document under another example, and pushing the query
//! away from it is pushing it away from its own answer.
//!
//! The optional symmetric term (`MultipleNegativesSymmetricRankingLoss`) scores each
//! positive document against every query of the batch with the same rules, transposed,
//! and the two terms are averaged.
//!
//! Both log-sum-exps subtract a detached maximum and use only ops with a backward:
//! candle's fused softmax has none.

use candle_core::{DType, Device, Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// Added to the logit of an excluded document: `exp` of it underflows to exactly 0 in
/// every float type while staying finite, so gradients never see `inf − inf`.
const EXCLUDED: f64 = -1e9;

/// What to do with a batch document that the judge or the qrels say answers a query
/// other than the one it is the positive of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum FalseNegativePolicy {
    /// Take it out of the query's denominator.
    #[default]
    Mask,
    /// Count it as another positive in the numerator (multi-positive softmax).
    Positive,
    /// Leave it in the denominator as a negative (plain MNRL).
    None,
}

/// How each (query, batch document) pair enters the softmax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// An ordinary in-batch or hard negative.
    Negative,
    /// In the numerator (and the denominator).
    Positive,
    /// Out of both.
    Excluded,
}

/// A `queries × documents` table of [`Cell`]s, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct CellTable {
    pub queries: usize,
    pub documents: usize,
    pub cells: Vec<Cell>,
}

impl CellTable {
    pub fn get(&self, q: usize, d: usize) -> Cell {
        self.cells[q * self.documents + d]
    }

    /// How many cells are `cell`.
    pub fn count(&self, cell: Cell) -> usize {
        self.cells.iter().filter(|&&c| c == cell).count()
    }

    /// Additive biases: 0 where the cell takes part in the denominator, [`EXCLUDED`]
    /// elsewhere; and the same for the numerator.
    fn biases(&self, device: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
        let den: Vec<f64> = self
            .cells
            .iter()
            .map(|c| if *c == Cell::Excluded { EXCLUDED } else { 0.0 })
            .collect();
        let num: Vec<f64> = self
            .cells
            .iter()
            .map(|c| if *c == Cell::Positive { 0.0 } else { EXCLUDED })
            .collect();
        let shape = (self.queries, self.documents);
        Ok((
            Tensor::from_vec(den, shape, device)?.to_dtype(dtype)?,
            Tensor::from_vec(num, shape, device)?.to_dtype(dtype)?,
        ))
    }

    /// The symmetric term's table: positive document `i` (column `i < queries`) against
    /// every query, i.e. the transpose of the square positive block.
    fn transposed_positive_block(&self) -> CellTable {
        let b = self.queries;
        let mut cells = Vec::with_capacity(b * b);
        for doc in 0..b {
            for q in 0..b {
                cells.push(self.get(q, doc));
            }
        }
        CellTable {
            queries: b,
            documents: b,
            cells,
        }
    }
}

/// Loss hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    /// Multiplies cosine similarities (1 / temperature); sentence-transformers uses 20.
    pub scale: f64,
    /// Add the document→query term and average the two.
    pub symmetric: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            scale: 20.0,
            symmetric: false,
        }
    }
}

/// `log Σ exp(x + bias)` along the last dimension, stable and differentiable.
fn masked_logsumexp(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let z = (x + bias)?;
    let max = z.max_keepdim(D::Minus1)?.detach();
    let sum = z.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    (sum.log()? + max)?.squeeze(D::Minus1)
}

/// Mean over rows of `LSE(denominator) − LSE(numerator)` for logits `(rows, cols)`.
fn softmax_term(logits: &Tensor, table: &CellTable) -> Result<Tensor> {
    let (den, num) = table.biases(logits.device(), logits.dtype())?;
    let per_row = (masked_logsumexp(logits, &den)? - masked_logsumexp(logits, &num)?)?;
    per_row.mean_all()
}

/// Row-wise L2 normalisation (a no-op on already-normalised embeddings, but cosine
/// similarity must not depend on the model having a `Normalize` module).
fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// The batch loss for query embeddings `(B, dim)` and document embeddings `(M, dim)`
/// (the `B` positives first), with `table` saying how each pair enters.
pub fn contrastive_loss(
    queries: &Tensor,
    documents: &Tensor,
    table: &CellTable,
    config: &LossConfig,
) -> Result<Tensor> {
    let (b, _) = queries.dims2()?;
    let (m, _) = documents.dims2()?;
    if table.queries != b || table.documents != m || m < b {
        candle_core::bail!(
            "contrastive_loss: {b} queries and {m} documents do not match a {}×{} table",
            table.queries,
            table.documents
        );
    }
    let q = normalize(queries)?;
    let d = normalize(documents)?;
    let logits = (q.matmul(&d.t()?)? * config.scale)?;
    let forward = softmax_term(&logits, table)?;
    if !config.symmetric {
        return Ok(forward);
    }
    let positives = d.narrow(0, 0, b)?;
    let back_logits = (positives.matmul(&q.t()?)? * config.scale)?;
    let backward = softmax_term(&back_logits, &table.transposed_positive_block())?;
    (forward + backward)? / 2.0
}

/// Matryoshka representation learning (Kusupati et al., 2022; sentence-transformers'
/// `MatryoshkaLoss`): the loss summed over nested prefixes of the embedding,
/// `Σ_i w_i · L(q[:, :d_i], D[:, :d_i])`, so that the first `d_i` dimensions alone
/// retrieve well and a user may keep only them. Each prefix is re-normalised inside
/// the loss (cosine), as sentence-transformers' MNRL does. Empty: the plain loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Matryoshka {
    /// Prefix lengths, e.g. `[384, 256, 128, 64]`.
    pub dims: Vec<usize>,
    /// One weight per prefix (empty: all 1, sentence-transformers' default).
    pub weights: Vec<f64>,
}

impl Matryoshka {
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// Each prefix's weight.
    pub fn weighted(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.dims
            .iter()
            .enumerate()
            .map(|(i, &d)| (d, self.weights.get(i).copied().unwrap_or(1.0)))
    }

    /// The prefixes fit an embedding of `dim` and the weights match them.
    pub fn check(&self, dim: Option<usize>) -> std::result::Result<(), String> {
        if !self.weights.is_empty() && self.weights.len() != self.dims.len() {
            return Err(format!(
                "{} Matryoshka weights for {} dimensions",
                self.weights.len(),
                self.dims.len()
            ));
        }
        if let Some(w) = self.weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(format!("Matryoshka weight {w} is not a number ≥ 0"));
        }
        let mut seen = std::collections::HashSet::new();
        for &d in &self.dims {
            if d == 0 || !seen.insert(d) {
                return Err(format!(
                    "Matryoshka dimension {d} is zero or repeated in {:?}",
                    self.dims
                ));
            }
            if let Some(full) = dim.filter(|&full| d > full) {
                return Err(format!(
                    "Matryoshka dimension {d} is larger than the model's {full}"
                ));
            }
        }
        Ok(())
    }

    /// `base` summed over the prefixes (or `base` itself when there are none).
    pub fn loss(
        &self,
        queries: &Tensor,
        documents: &Tensor,
        base: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.is_empty() {
            return base(queries, documents);
        }
        let mut total: Option<Tensor> = None;
        for (d, w) in self.weighted() {
            let l = (base(&queries.narrow(1, 0, d)?, &documents.narrow(1, 0, d)?)? * w)?;
            total = Some(match total {
                Some(t) => (t + l)?,
                None => l,
            });
        }
        total.ok_or_else(|| candle_core::Error::Msg("no Matryoshka dimension".into()))
    }
}

/// One query's listwise distillation target: batch document columns (its positive and
/// the mined candidates the judge scored) and the teacher's score for each, P(relevant)
/// from the judge (1 for a labelled positive). Candidates the judge did not score are
/// left out of the group.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillGroup {
    pub query: usize,
    pub documents: Vec<usize>,
    pub teacher: Vec<f64>,
}

/// The teacher distribution of a group: `softmax(P / temperature)`.
fn teacher_distribution(scores: &[f64], temperature: f64) -> Vec<f64> {
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores
        .iter()
        .map(|s| ((s - max) / temperature).exp())
        .collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

/// Listwise distillation from the judge (FlagEmbedding's `knowledge_distillation`, with
/// the judge's P(relevant) as the teacher): for each group, `KL(t ‖ s)` between the
/// teacher distribution `t = softmax(P / teacher_temperature)` over the group's documents
/// and the model's `s = softmax(scale · cos(q, d))` over the same documents, averaged over
/// the groups (queries without one take no part). Alone it replaces the contrastive loss;
/// added to it, the judge's graded scores shape the ranking among the candidates that a
/// binary mask only removes.
pub fn distillation_loss(
    queries: &Tensor,
    documents: &Tensor,
    groups: &[DistillGroup],
    scale: f64,
    teacher_temperature: f64,
) -> Result<Tensor> {
    let (b, _) = queries.dims2()?;
    let (m, _) = documents.dims2()?;
    if !(teacher_temperature > 0.0 && teacher_temperature.is_finite()) {
        candle_core::bail!("distillation: the teacher temperature must be positive");
    }
    let groups: Vec<&DistillGroup> = groups.iter().filter(|g| g.documents.len() >= 2).collect();
    if groups.is_empty() {
        return Tensor::zeros((), queries.dtype(), queries.device());
    }
    let n = groups.len();
    // Per group row: the target weights and the membership bias over the M columns, and
    // the teacher's own entropy term Σ t log t.
    let mut target = vec![0f64; n * m];
    let mut bias = vec![EXCLUDED; n * m];
    let mut constant = 0f64;
    let mut rows = Vec::with_capacity(n);
    for (r, g) in groups.iter().enumerate() {
        if g.query >= b || g.documents.len() != g.teacher.len() {
            candle_core::bail!(
                "distillation: a group names query {} of {b} or mismatched scores",
                g.query
            );
        }
        rows.push(g.query as u32);
        for (&d, t) in g
            .documents
            .iter()
            .zip(teacher_distribution(&g.teacher, teacher_temperature))
        {
            if d >= m {
                candle_core::bail!("distillation: document column {d} of {m}");
            }
            target[r * m + d] = t;
            bias[r * m + d] = 0.0;
            if t > 0.0 {
                constant += t * t.ln();
            }
        }
    }
    let (device, dtype) = (queries.device(), queries.dtype());
    let rows = Tensor::from_vec(rows, n, device)?;
    let q = normalize(&queries.index_select(&rows, 0)?)?;
    let d = normalize(documents)?;
    let logits = (q.matmul(&d.t()?)? * scale)?;
    let target = Tensor::from_vec(target, (n, m), device)?.to_dtype(dtype)?;
    let bias = Tensor::from_vec(bias, (n, m), device)?.to_dtype(dtype)?;
    // KL_r = Σ t log t − Σ_j t_j (logit_j − LSE_group) = const − Σ t·logit + LSE (Σ t = 1).
    let cross = (logits.clone() * &target)?.sum_all()?;
    let lse = masked_logsumexp(&logits, &bias)?.sum_all()?;
    ((lse - cross)? + constant)? / n as f64
}

/// Dense reference of [`distillation_loss`] in plain f64 loops.
pub fn reference_distillation(
    queries: &[Vec<f64>],
    documents: &[Vec<f64>],
    groups: &[DistillGroup],
    scale: f64,
    teacher_temperature: f64,
) -> f64 {
    let unit = |v: &[f64]| -> Vec<f64> {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect()
    };
    let mut total = 0.0;
    let mut count = 0;
    for g in groups.iter().filter(|g| g.documents.len() >= 2) {
        let q = unit(&queries[g.query]);
        let s: Vec<f64> = g
            .documents
            .iter()
            .map(|&j| {
                scale
                    * q.iter()
                        .zip(unit(&documents[j]))
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
            })
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + s.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let t = teacher_distribution(&g.teacher, teacher_temperature);
        total += t
            .iter()
            .zip(&s)
            .map(|(t, s)| {
                if *t > 0.0 {
                    t * (t.ln() - (s - lse))
                } else {
                    0.0
                }
            })
            .sum::<f64>();
        count += 1;
    }
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

/// Dense reference of [`contrastive_loss`] in plain f64 loops, for tests and for
/// anyone checking the formula.
pub fn reference_loss(
    queries: &[Vec<f64>],
    documents: &[Vec<f64>],
    table: &CellTable,
    config: &LossConfig,
) -> f64 {
    fn unit(v: &[f64]) -> Vec<f64> {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect()
    }
    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }
    let q: Vec<Vec<f64>> = queries.iter().map(|v| unit(v)).collect();
    let d: Vec<Vec<f64>> = documents.iter().map(|v| unit(v)).collect();
    let term = |rows: &[Vec<f64>], cols: &[Vec<f64>], cell: &dyn Fn(usize, usize) -> Cell| {
        let mut total = 0.0;
        for (i, r) in rows.iter().enumerate() {
            let (mut num, mut den) = (0.0, 0.0);
            for (j, c) in cols.iter().enumerate() {
                let e = (config.scale * dot(r, c)).exp();
                match cell(i, j) {
                    Cell::Excluded => {}
                    Cell::Negative => den += e,
                    Cell::Positive => {
                        den += e;
                        num += e;
                    }
                }
            }
            total += den.ln() - num.ln();
        }
        total / rows.len() as f64
    };
    let forward = term(&q, &d, &|i, j| table.get(i, j));
    if !config.symmetric {
        return forward;
    }
    let b = q.len();
    let backward = term(&d[..b], &q, &|doc, qi| table.get(qi, doc));
    (forward + backward) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// A deterministic pseudo-random stream (SplitMix64) so tests need no RNG crate.
    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut r = sieve_datasets::rng::SplitMix64(seed);
        (0..n)
            .map(|_| (r.next_u64() as f64 / u64::MAX as f64) * 2.0 - 1.0)
            .collect()
    }

    fn rows(flat: &[f64], dim: usize) -> Vec<Vec<f64>> {
        flat.chunks(dim).map(<[f64]>::to_vec).collect()
    }

    /// 4 queries, 4 positives and 3 hard negatives, with a false negative marked each
    /// way and an exclusion.
    fn table() -> CellTable {
        let (b, m) = (4, 7);
        let mut cells = vec![Cell::Negative; b * m];
        for i in 0..b {
            cells[i * m + i] = Cell::Positive;
        }
        cells[m + 5] = Cell::Positive; // query 1: hard negative 5 answers it
        cells[2 * m] = Cell::Excluded; // query 2: positive of query 0 is a duplicate
        cells[3 * m + 6] = Cell::Excluded;
        CellTable {
            queries: b,
            documents: m,
            cells,
        }
    }

    /// `(q, d)` as leaf variables of shapes `(b, dim)` and `(m, dim)`.
    fn vars(qv: &[f64], dv: &[f64], dim: usize) -> (Var, Var) {
        let var = |v: &[f64]| {
            let t = Tensor::from_vec(v.to_vec(), (v.len() / dim, dim), &Device::Cpu).unwrap();
            Var::from_tensor(&t).unwrap()
        };
        (var(qv), var(dv))
    }

    /// `loss` (computed from `q` and `d`) equals `reference(qv, dv)` to 1e-12, and its
    /// gradient the reference's central finite differences to 1e-6.
    fn check_against(
        loss: &Tensor,
        (q, d): (&Var, &Var),
        (qv, dv): (&[f64], &[f64]),
        reference: &dyn Fn(&[f64], &[f64]) -> f64,
    ) {
        let got = loss.to_scalar::<f64>().unwrap();
        let want = reference(qv, dv);
        assert!((got - want).abs() < 1e-12, "loss {got} vs reference {want}");
        let grads = loss.backward().unwrap();
        let h = 1e-6;
        for (var, flat, is_query) in [(q, qv, true), (d, dv, false)] {
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let g = g.to_vec1::<f64>().unwrap();
            for k in 0..flat.len() {
                let eval = |delta: f64| {
                    let mut v = flat.to_vec();
                    v[k] += delta;
                    if is_query {
                        reference(&v, dv)
                    } else {
                        reference(qv, &v)
                    }
                };
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                assert!(
                    (g[k] - fd).abs() < 1e-6,
                    "grad {k} ({}): {} vs finite difference {fd}",
                    if is_query { "query" } else { "doc" },
                    g[k]
                );
            }
        }
    }

    fn check(config: LossConfig) {
        let dim = 5;
        let t = table();
        let qv = values(1, t.queries * dim);
        let dv = values(2, t.documents * dim);
        let (q, d) = vars(&qv, &dv, dim);
        let loss = contrastive_loss(q.as_tensor(), d.as_tensor(), &t, &config).unwrap();
        check_against(&loss, (&q, &d), (&qv, &dv), &|qv, dv| {
            reference_loss(&rows(qv, dim), &rows(dv, dim), &t, &config)
        });
    }

    /// Matryoshka's loss is the weighted sum of the reference on each prefix, and its
    /// gradient that sum's finite differences (the coordinates past the shortest prefix
    /// get gradient from the longer ones only).
    #[test]
    fn matryoshka_equals_weighted_references_on_prefixes() {
        let (dim, t) = (6, table());
        let config = LossConfig {
            scale: 20.0,
            symmetric: true,
        };
        let m = Matryoshka {
            dims: vec![6, 4, 2],
            weights: vec![1.0, 0.5, 2.0],
        };
        let qv = values(3, t.queries * dim);
        let dv = values(4, t.documents * dim);
        let reference = |q: &[f64], d: &[f64]| -> f64 {
            m.weighted()
                .map(|(k, w)| {
                    let cut = |v: &[f64]| -> Vec<Vec<f64>> {
                        v.chunks(dim).map(|r| r[..k].to_vec()).collect()
                    };
                    w * reference_loss(&cut(q), &cut(d), &t, &config)
                })
                .sum()
        };
        let (q, d) = vars(&qv, &dv, dim);
        let base = |a: &Tensor, b: &Tensor| contrastive_loss(a, b, &t, &config);
        let loss = m.loss(q.as_tensor(), d.as_tensor(), &base).unwrap();
        check_against(&loss, (&q, &d), (&qv, &dv), &reference);
        // No prefixes: the plain loss.
        let plain = Matryoshka::default()
            .loss(q.as_tensor(), d.as_tensor(), &base)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let full = base(q.as_tensor(), d.as_tensor())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(plain, full);
        // Refusals name the problem.
        for (bad, dim, word) in [
            (
                Matryoshka {
                    dims: vec![8, 4],
                    weights: vec![1.0],
                },
                Some(8),
                "weights",
            ),
            (
                Matryoshka {
                    dims: vec![8, 8],
                    weights: vec![],
                },
                Some(8),
                "repeated",
            ),
            (
                Matryoshka {
                    dims: vec![0],
                    weights: vec![],
                },
                None,
                "zero",
            ),
            (
                Matryoshka {
                    dims: vec![16],
                    weights: vec![],
                },
                Some(8),
                "larger",
            ),
            (
                Matryoshka {
                    dims: vec![4],
                    weights: vec![-1.0],
                },
                Some(8),
                "weight",
            ),
        ] {
            let e = bad.check(dim).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
    }

    /// Distillation's KL equals the dense reference, its gradient the reference's finite
    /// differences; a group whose student already matches the teacher costs 0; a query
    /// without a group (or with one document) takes no part.
    #[test]
    fn distillation_equals_reference_and_finite_differences() {
        let (b, m, dim) = (3, 7, 5);
        let qv = values(5, b * dim);
        let dv = values(6, m * dim);
        let groups = vec![
            DistillGroup {
                query: 0,
                documents: vec![0, 3, 4, 6],
                teacher: vec![1.0, 0.9, 0.1, 0.02],
            },
            DistillGroup {
                query: 2,
                documents: vec![2, 5, 1],
                teacher: vec![1.0, 0.0, 0.5],
            },
            DistillGroup {
                query: 1,
                documents: vec![1],
                teacher: vec![1.0],
            },
        ];
        let (scale, temp) = (20.0, 0.1);
        let (q, d) = vars(&qv, &dv, dim);
        let loss = distillation_loss(q.as_tensor(), d.as_tensor(), &groups, scale, temp).unwrap();
        let reference = |qv: &[f64], dv: &[f64]| {
            reference_distillation(&rows(qv, dim), &rows(dv, dim), &groups, scale, temp)
        };
        assert!(reference(&qv, &dv) > 0.0);
        check_against(&loss, (&q, &d), (&qv, &dv), &reference);
        // A teacher equal to the student: KL 0.
        let qn = rows(&qv, dim);
        let dn = rows(&dv, dim);
        let unit = |v: &[f64]| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let cos = |i: usize, j: usize| {
            unit(&qn[i])
                .iter()
                .zip(unit(&dn[j]))
                .map(|(a, b)| a * b)
                .sum::<f64>()
        };
        // softmax(P / T) = softmax(scale · cos) when P = cos and T = 1 / scale.
        let same = vec![DistillGroup {
            query: 0,
            documents: vec![0, 3, 4],
            teacher: vec![cos(0, 0), cos(0, 3), cos(0, 4)],
        }];
        let zero = distillation_loss(q.as_tensor(), d.as_tensor(), &same, scale, 1.0 / scale)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(zero.abs() < 1e-12, "{zero}");
        // Nothing to distil: zero, not NaN.
        let none = distillation_loss(q.as_tensor(), d.as_tensor(), &groups[2..], scale, temp)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(none, 0.0);
    }

    #[test]
    fn equals_reference_with_masks_and_multiple_positives() {
        check(LossConfig::default());
        check(LossConfig {
            scale: 7.0,
            symmetric: false,
        });
    }

    #[test]
    fn symmetric_term_equals_reference() {
        check(LossConfig {
            scale: 20.0,
            symmetric: true,
        });
    }

    #[test]
    fn plain_batch_is_cross_entropy_on_the_diagonal() {
        // With only diagonal positives the loss is PyTorch's cross_entropy(scores, arange).
        let (b, dim) = (3, 4);
        let qv = values(7, b * dim);
        let dv = values(8, b * dim);
        let mut cells = vec![Cell::Negative; b * b];
        for i in 0..b {
            cells[i * b + i] = Cell::Positive;
        }
        let t = CellTable {
            queries: b,
            documents: b,
            cells,
        };
        let q = Tensor::from_vec(qv.clone(), (b, dim), &Device::Cpu).unwrap();
        let d = Tensor::from_vec(dv.clone(), (b, dim), &Device::Cpu).unwrap();
        let got = contrastive_loss(&q, &d, &t, &LossConfig::default())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let (qr, dr) = (rows(&qv, dim), rows(&dv, dim));
        let cos = |a: &[f64], b: &[f64]| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            dot / (na * nb)
        };
        let mut want = 0.0;
        for i in 0..b {
            let s: Vec<f64> = (0..b).map(|j| 20.0 * cos(&qr[i], &dr[j])).collect();
            let lse = s.iter().map(|x| x.exp()).sum::<f64>().ln();
            want += lse - s[i];
        }
        want /= b as f64;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn excluded_documents_do_not_change_the_loss() {
        // Excluding a document must equal removing its column.
        let (b, dim) = (2, 3);
        let qv = values(3, b * dim);
        let dv = values(4, 3 * dim);
        let full = CellTable {
            queries: 2,
            documents: 3,
            cells: vec![
                Cell::Positive,
                Cell::Negative,
                Cell::Excluded,
                Cell::Negative,
                Cell::Positive,
                Cell::Excluded,
            ],
        };
        let cut = CellTable {
            queries: 2,
            documents: 2,
            cells: vec![
                Cell::Positive,
                Cell::Negative,
                Cell::Negative,
                Cell::Positive,
            ],
        };
        let q = Tensor::from_vec(qv, (b, dim), &Device::Cpu).unwrap();
        let d3 = Tensor::from_vec(dv, (3, dim), &Device::Cpu).unwrap();
        let d2 = d3.narrow(0, 0, 2).unwrap();
        let c = LossConfig::default();
        let a = contrastive_loss(&q, &d3, &full, &c).unwrap();
        let b = contrastive_loss(&q, &d2, &cut, &c).unwrap();
        let (a, b) = (a.to_scalar::<f64>().unwrap(), b.to_scalar::<f64>().unwrap());
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}
