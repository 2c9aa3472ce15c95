//! What a user reads after mining: how many candidates each query got, how their
//! scores are spread, what each rule dropped, and the recall of the known positives
//! in BM25's, the dense model's and the fused lists.

use std::collections::BTreeMap;
use std::fmt;

use sieve_datasets::mined::MinedRow;

use crate::rules::Rule;
use crate::MineOptions;

/// Cut-offs at which recall is reported.
pub const RECALL_KS: [usize; 3] = [10, 50, 100];

/// Quantiles printed for score distributions.
const QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

/// Mean recall of known positives (over queries that have any) within the top k of
/// one list; `None` where k is deeper than the list was retrieved.
#[derive(Debug, Clone, PartialEq)]
pub struct Recall {
    pub k: usize,
    pub bm25: Option<f64>,
    pub dense: Option<f64>,
    pub hybrid: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MineStats {
    pub queries: usize,
    pub queries_with_positives: usize,
    pub candidates: usize,
    pub min_per_query: usize,
    pub median_per_query: usize,
    pub max_per_query: usize,
    /// `bm25`, `dense`, `both` → candidates.
    pub by_source: BTreeMap<String, usize>,
    pub dense_quantiles: Vec<(f64, f32)>,
    pub bm25_quantiles: Vec<(f64, f32)>,
    /// Rule name → candidates it dropped.
    pub dropped: BTreeMap<String, usize>,
    pub recall: Vec<Recall>,
}

fn quantiles(mut v: Vec<f32>) -> Vec<(f64, f32)> {
    if v.is_empty() {
        return Vec::new();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    QUANTILES
        .iter()
        .map(|&q| {
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            (q, v[i])
        })
        .collect()
}

impl MineStats {
    /// The statistics as `sieve mine --stats-json` writes them.
    pub fn to_json(&self) -> serde_json::Value {
        let recall: Vec<serde_json::Value> = self
            .recall
            .iter()
            .map(|r| serde_json::json!({"k": r.k, "bm25": r.bm25, "dense": r.dense, "hybrid": r.hybrid}))
            .collect();
        serde_json::json!({
            "queries": self.queries,
            "queries_with_positives": self.queries_with_positives,
            "candidates": self.candidates,
            "per_query": {"min": self.min_per_query, "median": self.median_per_query, "max": self.max_per_query},
            "by_source": self.by_source,
            "dropped": self.dropped,
            "dense_quantiles": self.dense_quantiles,
            "bm25_quantiles": self.bm25_quantiles,
            "recall": recall,
        })
    }

    pub fn from_rows(rows: &[MinedRow], opts: &MineOptions) -> Self {
        let mut per_query: Vec<usize> = rows.iter().map(|r| r.candidates.len()).collect();
        per_query.sort_unstable();
        let mut by_source = BTreeMap::new();
        let mut dense = Vec::new();
        let mut bm25 = Vec::new();
        for c in rows.iter().flat_map(|r| &r.candidates) {
            *by_source.entry(c.source.clone()).or_insert(0) += 1;
            dense.push(c.dense);
            bm25.push(c.bm25);
        }
        let mut dropped: BTreeMap<String, usize> = Rule::ALL
            .iter()
            .map(|r| (r.name().to_string(), 0))
            .collect();
        for d in rows.iter().flat_map(|r| &r.dropped) {
            *dropped.entry(d.rule.clone()).or_insert(0) += 1;
        }
        let with_pos: Vec<&MinedRow> = rows
            .iter()
            .filter(|r| !r.positive_hits.is_empty())
            .collect();
        let recall_of =
            |k: usize,
             depth: usize,
             rank: &dyn Fn(&sieve_datasets::mined::PositiveHit) -> Option<u32>| {
                if k > depth || with_pos.is_empty() {
                    return None;
                }
                let sum: f64 = with_pos
                    .iter()
                    .map(|r| {
                        let found = r
                            .positive_hits
                            .iter()
                            .filter(|p| rank(p).is_some_and(|x| x as usize <= k))
                            .count();
                        found as f64 / r.positive_hits.len() as f64
                    })
                    .sum();
                Some(sum / with_pos.len() as f64)
            };
        let deepest = opts.bm25_k.max(opts.dense_k);
        // The standard cut-offs plus the run's own depths, so that a shallow run
        // (k < 10) still reports how many positives its lists hold.
        let mut ks: Vec<usize> = RECALL_KS.to_vec();
        ks.extend([opts.bm25_k, opts.dense_k].into_iter().filter(|&k| k > 0));
        ks.sort_unstable();
        ks.dedup();
        let recall = ks
            .iter()
            .map(|&k| Recall {
                k,
                bm25: recall_of(k, opts.bm25_k, &|p| p.bm25_rank),
                dense: recall_of(k, opts.dense_k, &|p| p.dense_rank),
                // The fused list is complete down to the shallower list's depth; past
                // it, documents only the deeper list found could still be missing.
                hybrid: recall_of(k, deepest, &|p| p.fused_rank),
            })
            .collect();
        MineStats {
            queries: rows.len(),
            queries_with_positives: with_pos.len(),
            candidates: per_query.iter().sum(),
            min_per_query: per_query.first().copied().unwrap_or(0),
            median_per_query: per_query.get(per_query.len() / 2).copied().unwrap_or(0),
            max_per_query: per_query.last().copied().unwrap_or(0),
            by_source,
            dense_quantiles: quantiles(dense),
            bm25_quantiles: quantiles(bm25),
            dropped,
            recall,
        }
    }
}

impl fmt::Display for MineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "queries: {} ({} with known positives)",
            self.queries, self.queries_with_positives
        )?;
        writeln!(
            f,
            "candidates: {} (per query: min {}, median {}, max {})",
            self.candidates, self.min_per_query, self.median_per_query, self.max_per_query
        )?;
        let sources: Vec<String> = self
            .by_source
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(f, "found by: {}", sources.join(", "))?;
        for (name, q) in [
            ("dense cosine", &self.dense_quantiles),
            ("bm25", &self.bm25_quantiles),
        ] {
            let parts: Vec<String> = q
                .iter()
                .map(|(p, v)| format!("p{:.0} {v:.3}", p * 100.0))
                .collect();
            writeln!(f, "{name:>12} scores: {}", parts.join("  "))?;
        }
        let dropped: Vec<String> = self
            .dropped
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(f, "dropped by rule: {}", dropped.join(", "))?;
        writeln!(f, "recall of known positives:")?;
        writeln!(
            f,
            "  {:>5} {:>8} {:>8} {:>8}",
            "k", "bm25", "dense", "hybrid"
        )?;
        let cell = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.4}"));
        for r in &self.recall {
            writeln!(
                f,
                "  {:>5} {:>8} {:>8} {:>8}",
                r.k,
                cell(r.bm25),
                cell(r.dense),
                cell(r.hybrid)
            )?;
        }
        Ok(())
    }
}
