//! The false-negative dose: how much of each query's softmax mass sits on documents
//! known to answer it.
//!
//! A false negative in the denominator costs a query its own softmax weight: the
//! gradient pushes the query away from document `j` in proportion to
//! `p_ij = exp s_ij / Σ_n exp s_in`. So the share `Σ_{j ∈ F_i} p_ij` over the query's
//! false negatives `F_i` is what masking them can remove, and it is what decides
//! whether a judge pays: near 0, masking changes nothing; a large share means the
//! softmax spends that much of every step pushing the query from its own answers.
//!
//! The dose is always measured as if nothing were masked (policy `none`: every
//! document of the denominator but identical texts), before masking, for the qrels'
//! other positives ([`KNOWN`]), the judge's positives ([`JUDGED`]) and their union.
//! The positive's own share is reported beside it, for scale.

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::loss::Cell;

/// Flag: the document is another known positive of the query (qrels, same question).
pub const KNOWN: u8 = 1;
/// Flag: the judge labeled the document relevant to the query.
pub const JUDGED: u8 = 2;

/// One query's shares of its softmax mass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueryDose {
    pub known: f64,
    pub judged: f64,
    /// Known or judged (each document counted once).
    pub any: f64,
    /// The query's own positive.
    pub positive: f64,
}

/// One denominator term: its logit, its [`KNOWN`]/[`JUDGED`] flags, and whether it is
/// the query's own positive.
#[derive(Debug, Clone, Copy)]
pub struct Term {
    pub logit: f64,
    pub flags: u8,
    pub positive: bool,
}

impl QueryDose {
    /// Shares over the complete denominator `terms`.
    pub fn from_terms(terms: &[Term]) -> Self {
        let max = terms
            .iter()
            .map(|t| t.logit)
            .fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return Self::default();
        }
        let mut d = Self::default();
        let mut z = 0.0;
        for t in terms {
            let w = (t.logit - max).exp();
            z += w;
            d.add(t, w);
        }
        d.scale(1.0 / z);
        d
    }

    /// Shares when the denominator's log-sum-exp is known without some of its terms:
    /// `lse` covers everything but `missing`, and `flagged` lists the logits of every
    /// flagged term (whether in `lse` or in `missing`) and of the positive.
    pub fn from_lse(lse: f64, missing: &[f64], flagged: &[Term]) -> Self {
        let mut max = lse;
        for &l in missing.iter().chain(flagged.iter().map(|t| &t.logit)) {
            max = max.max(l);
        }
        if !max.is_finite() {
            return Self::default();
        }
        let z = (lse - max).exp() + missing.iter().map(|l| (l - max).exp()).sum::<f64>();
        let mut d = Self::default();
        for t in flagged {
            d.add(t, (t.logit - max).exp());
        }
        d.scale(1.0 / z);
        d
    }

    /// Adds term `t`'s (unnormalised) weight `w` to the shares it counts in.
    fn add(&mut self, t: &Term, w: f64) {
        if t.positive {
            self.positive += w;
        }
        if t.flags & KNOWN != 0 {
            self.known += w;
        }
        if t.flags & JUDGED != 0 {
            self.judged += w;
        }
        if t.flags != 0 {
            self.any += w;
        }
    }

    fn scale(&mut self, f: f64) {
        self.known *= f;
        self.judged *= f;
        self.any *= f;
        self.positive *= f;
    }
}

/// Mean and maximum of a share over queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub mean: f64,
    pub max: f64,
}

impl Share {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let (mut sum, mut max, mut n) = (0.0, 0.0f64, 0usize);
        for v in values {
            sum += v;
            max = max.max(v);
            n += 1;
        }
        Self {
            mean: if n > 0 { sum / n as f64 } else { 0.0 },
            max,
        }
    }
}

/// The dose over a set of queries (a batch, a run, a dataset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Dose {
    /// On other known positives (qrels, answers to the same question).
    pub known: Share,
    /// On the judge's positives.
    pub judged: Share,
    /// On either.
    pub any: Share,
    /// On the query's own positive, for scale.
    pub positive: Share,
}

impl Dose {
    pub fn of(queries: &[QueryDose]) -> Self {
        Self {
            known: Share::of(queries.iter().map(|q| q.known)),
            judged: Share::of(queries.iter().map(|q| q.judged)),
            any: Share::of(queries.iter().map(|q| q.any)),
            positive: Share::of(queries.iter().map(|q| q.positive)),
        }
    }
}

/// Unit rows in f64: the in-batch dose is a sum of many small shares, computed in the
/// precision of the dense reference it is tested against.
fn normalized_rows(x: &[f32], dim: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(dim.max(1)) {
        let n = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        let n = if n > 0.0 { n } else { 1.0 };
        out.extend(row.iter().map(|&v| v as f64 / n));
    }
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Per query of an in-batch step: `queries` (`B × dim`) and `documents` (`M × dim`)
/// are the batch's embeddings (any norm), `batch` its layout.
pub fn in_batch(
    queries: &[f32],
    documents: &[f32],
    dim: usize,
    batch: &Batch,
    scale: f64,
) -> Vec<QueryDose> {
    let q = normalized_rows(queries, dim);
    let d = normalized_rows(documents, dim);
    let (b, m) = (batch.table.queries, batch.table.documents);
    let mut out = Vec::with_capacity(b);
    let mut terms = Vec::with_capacity(m);
    for i in 0..b {
        terms.clear();
        let qi = &q[i * dim..(i + 1) * dim];
        for j in 0..m {
            let flags = batch.related[i * m + j];
            // Identical texts are out of every denominator; masked false negatives are
            // put back: the dose is what an unmasked softmax would spend on them.
            if batch.table.get(i, j) == Cell::Excluded && flags == 0 {
                continue;
            }
            terms.push(Term {
                logit: scale * dot(qi, &d[j * dim..(j + 1) * dim]),
                flags,
                positive: j == i,
            });
        }
        out.push(QueryDose::from_terms(&terms));
    }
    out
}

/// Every document known or judged to answer `e`'s query (never its own positive or its
/// own text), as `row(text)` positions with their [`KNOWN`]/[`JUDGED`] flags, sorted by
/// position; texts with no row are left out.
pub fn related_rows(
    e: &crate::data::Example,
    row: impl Fn(crate::data::TextId) -> Option<usize>,
) -> Vec<(usize, u8)> {
    let mut flagged: std::collections::BTreeMap<usize, u8> = Default::default();
    for (list, flag) in [(&e.known, KNOWN), (&e.judged, JUDGED)] {
        for &t in list {
            if t == e.positive || t == e.query {
                continue;
            }
            if let Some(r) = row(t) {
                *flagged.entry(r).or_default() |= flag;
            }
        }
    }
    flagged.into_iter().collect()
}

/// One query of the whole-corpus estimate: its embedding's row in `queries`, the
/// corpus row of its own text (left out, identical), its positive's row and every
/// related row with its flags.
#[derive(Debug, Clone)]
pub struct CorpusQuery {
    pub query: usize,
    pub own_text: Option<usize>,
    pub positive: usize,
    pub flagged: Vec<(usize, u8)>,
}

/// Per query, the dose of the exact softmax over the whole corpus (`corpus`,
/// `N × dim`): every row but the query's own text in the denominator. Scores blocks
/// of queries at once with one matrix product each.
pub fn whole_corpus(
    queries: &[f32],
    corpus: &[f32],
    dim: usize,
    items: &[CorpusQuery],
    scale: f64,
) -> candle_core::Result<Vec<QueryDose>> {
    use candle_core::{Device, Tensor};
    let unit = |x: &[f32]| -> Vec<f32> {
        let mut v = x.to_vec();
        crate::rows::normalize_rows(&mut v, dim);
        v
    };
    let n = corpus.len() / dim.max(1);
    let c = Tensor::from_vec(unit(corpus), (n, dim), &Device::Cpu)?;
    let ct = c.t()?;
    let q = unit(queries);
    let mut out = Vec::with_capacity(items.len());
    for block in items.chunks(256) {
        let mut rows = Vec::with_capacity(block.len() * dim);
        for it in block {
            rows.extend_from_slice(&q[it.query * dim..(it.query + 1) * dim]);
        }
        let logits = Tensor::from_vec(rows, (block.len(), dim), &Device::Cpu)?
            .matmul(&ct)?
            .to_vec2::<f32>()?;
        for (it, row) in block.iter().zip(logits) {
            let flags: std::collections::HashMap<usize, u8> = it.flagged.iter().copied().collect();
            let terms: Vec<Term> = row
                .iter()
                .enumerate()
                .filter(|(k, _)| Some(*k) != it.own_text)
                .map(|(k, &s)| Term {
                    logit: scale * s as f64,
                    flags: flags.get(&k).copied().unwrap_or(0),
                    positive: k == it.positive,
                })
                .collect();
            out.push(QueryDose::from_terms(&terms));
        }
    }
    Ok(out)
}

/// Quantiles of a share over queries, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
    /// Queries with at least 1% / 10% of their mass on false negatives.
    pub at_least_1pct: f64,
    pub at_least_10pct: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let n = v.len() as f64;
        Self {
            mean: v.iter().sum::<f64>() / n,
            median: q(0.5),
            p90: q(0.9),
            max: v[v.len() - 1],
            at_least_1pct: v.iter().filter(|&&x| x >= 0.01).count() as f64 / n,
            at_least_10pct: v.iter().filter(|&&x| x >= 0.1).count() as f64 / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_by_hand() {
        // Logits ln 4 (positive), ln 2 (known), ln 1 (judged), ln 1 (both), ln 2 (other):
        // weights 4, 2, 1, 1, 2 over Z = 10.
        let t = |w: f64, flags, positive| Term {
            logit: w.ln(),
            flags,
            positive,
        };
        let terms = [
            t(4.0, 0, true),
            t(2.0, KNOWN, false),
            t(1.0, JUDGED, false),
            t(1.0, KNOWN | JUDGED, false),
            t(2.0, 0, false),
        ];
        let d = QueryDose::from_terms(&terms);
        assert!((d.positive - 0.4).abs() < 1e-12);
        assert!((d.known - 0.3).abs() < 1e-12);
        assert!((d.judged - 0.2).abs() < 1e-12);
        assert!((d.any - 0.4).abs() < 1e-12);
        // The same from a log-sum-exp that left the known-only term out (as a masked
        // loss does): lse = ln 8, missing = [ln 2].
        let flagged: Vec<Term> = terms
            .iter()
            .copied()
            .filter(|t| t.flags != 0 || t.positive)
            .collect();
        let e = QueryDose::from_lse(8f64.ln(), &[2f64.ln()], &flagged);
        for (a, b) in [
            (d.positive, e.positive),
            (d.known, e.known),
            (d.judged, e.judged),
            (d.any, e.any),
        ] {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let batch = Dose::of(&[d, QueryDose::default()]);
        assert!((batch.any.mean - 0.2).abs() < 1e-12);
        assert!((batch.any.max - 0.4).abs() < 1e-12);
    }

    #[test]
    fn whole_corpus_by_hand() {
        // Query along x; corpus rows at cos 1 (its own text), 1 (positive), 0 (known),
        // 0 (other), −1 (judged). Scale ln 4: weights (own text left out) 4, 1, 1, 1/4.
        let dim = 2;
        let corpus = [1.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, -3.0, -1.0, 0.0];
        let items = [CorpusQuery {
            query: 0,
            own_text: Some(0),
            positive: 1,
            flagged: vec![(2, KNOWN), (4, JUDGED)],
        }];
        let d = whole_corpus(&[5.0, 0.0], &corpus, dim, &items, 4f64.ln()).unwrap();
        let z = 4.0 + 1.0 + 1.0 + 0.25;
        assert!((d[0].positive - 4.0 / z).abs() < 1e-6);
        assert!((d[0].known - 1.0 / z).abs() < 1e-6);
        assert!((d[0].judged - 0.25 / z).abs() < 1e-6);
        assert!((d[0].any - 1.25 / z).abs() < 1e-6);
        let s = Spread::of(&[0.0, 0.05, 0.2]);
        assert!((s.at_least_10pct - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.median, 0.05);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let terms = [
            Term {
                logit: 1000.0,
                flags: 0,
                positive: true,
            },
            Term {
                logit: 1000.0,
                flags: KNOWN,
                positive: false,
            },
        ];
        let d = QueryDose::from_terms(&terms);
        assert!((d.known - 0.5).abs() < 1e-12);
    }
}
