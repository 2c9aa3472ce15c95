//! Retrieval metrics with exactly the definitions of trec_eval / pytrec_eval,
//! which MTEB and BEIR report, so that our numbers are comparable with
//! published leaderboards to the last digit.
//!
//! Per query, the run is ranked as trec_eval does: by score rounded to f32
//! (trec_eval's C `float`), descending, `-0.0` tying with `0.0`; ties broken by document id in
//! *descending* byte order (trec_eval's `comp_sim_docno` compares
//! `strcmp(b, a)`), so `"e" > "d9" > "d10" > "D2"`. A document is relevant when its
//! qrels grade is at least [`RELEVANCE_LEVEL`]. With `R` = number of relevant
//! documents of the query and `rel_i` = 1 if the document at rank `i`
//! (1-based) is relevant:
//!
//! - `ndcg_at_k`: `DCG@k / IDCG@k`, `DCG@k = Σ_{i≤k} grade_i / log2(i + 1)`
//!   (linear gain = the qrels grade; unjudged and negative = 0); the ideal ranking sorts
//!   all positive grades of the query descending and is cut at `k`
//!   (trec_eval `ndcg_cut`).
//! - `map_at_k`: `Σ_{i≤k, rel_i} P@i / R` (trec_eval `map_cut`; divided by `R`,
//!   not `min(k, R)`).
//! - `recall_at_k`: relevant in top `k` / `R`.
//! - `precision_at_k`: relevant in top `k` / `k`, even when fewer than `k`
//!   documents were retrieved (trec_eval `P`).
//! - `mrr_at_k`: `1 / i` for the first relevant document at rank `i ≤ k`, else 0.
//!
//! A query with `R = 0` (or no positive grade, for nDCG) scores 0 on every
//! metric, as pytrec_eval does. Only queries present in both the qrels and the
//! run are evaluated, and the mean is over those.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;
use sieve_datasets::Qrels;

/// query-id -> (doc-id -> score); what a retriever returned.
pub type Run = BTreeMap<String, HashMap<String, f64>>;

/// The cut-offs MTEB evaluates retrieval at.
pub const MTEB_K_VALUES: [usize; 7] = [1, 3, 5, 10, 20, 100, 1000];

/// Minimum qrels grade of a relevant document (trec_eval's default
/// `relevance_level`); grade-0 documents are judged non-relevant.
pub const RELEVANCE_LEVEL: i32 = 1;

/// Metrics per evaluated query and their means.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    /// query-id -> metric name -> value.
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
    /// metric name -> mean over the evaluated queries. Every metric is
    /// present even when no query could be evaluated (then 0), so that result
    /// files always have the same keys.
    pub mean: BTreeMap<String, f64>,
}

/// The metric families, in the order MTEB lists them.
const FAMILIES: [&str; 5] = ["ndcg_at", "map_at", "recall_at", "precision_at", "mrr_at"];

/// Metric names as MTEB writes them: `ndcg_at_{k}`, `map_at_{k}`,
/// `recall_at_{k}`, `precision_at_{k}`, `mrr_at_{k}`.
fn metric_name(family: &str, k: usize) -> String {
    format!("{family}_{k}")
}

/// Evaluates `run` against `qrels` at every cut-off in `k_values` (see the
/// module docs for the definitions). Queries are evaluated in parallel.
pub fn evaluate(qrels: &Qrels, run: &Run, k_values: &[usize]) -> Evaluation {
    let per_query: BTreeMap<String, BTreeMap<String, f64>> = run
        .par_iter()
        .filter_map(|(qid, docs)| {
            let judged = qrels.get(qid)?;
            Some((qid.clone(), evaluate_query(judged, docs, k_values)))
        })
        .collect();

    let mut mean = BTreeMap::new();
    for family in FAMILIES {
        for &k in k_values {
            let name = metric_name(family, k);
            // Summed in query-id order: deterministic, like a sequential mean.
            let sum: f64 = per_query
                .values()
                .map(|m| m.get(&name).copied().unwrap_or(0.0))
                .sum();
            let value = if per_query.is_empty() {
                0.0
            } else {
                sum / per_query.len() as f64
            };
            mean.insert(name, value);
        }
    }
    Evaluation { per_query, mean }
}

/// Score as trec_eval compares it: trec_eval stores run scores as C `float`,
/// so scores are rounded to f32 first (`0.1 + 0.2` ties with `0.3`, `1e300`
/// becomes +inf, denormal doubles become 0), then compared as C does
/// (`-0.0 == 0.0`). NaN has no place in C's order; it is ranked last so that
/// sorting stays a total order.
fn comparable(score: f64) -> f32 {
    let score = score as f32;
    if score == 0.0 {
        0.0
    } else if score.is_nan() {
        f32::NEG_INFINITY
    } else {
        score
    }
}

/// trec_eval's ranking: score descending, then document id descending.
/// Both scores must already be [`comparable`].
fn trec_order(a: &(&String, f32), b: &(&String, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then_with(|| b.0.cmp(a.0))
}

/// All metrics of one query.
fn evaluate_query(
    judged: &BTreeMap<String, i32>,
    docs: &HashMap<String, f64>,
    k_values: &[usize],
) -> BTreeMap<String, f64> {
    let mut ranked: Vec<(&String, f32)> = docs.iter().map(|(d, &s)| (d, comparable(s))).collect();
    ranked.sort_unstable_by(trec_order);
    // Grade of each retrieved document: 0 when unjudged, and negative grades
    // (explicitly non-relevant) count as 0 too, as in pytrec_eval's nDCG.
    let grades: Vec<i32> = ranked
        .iter()
        .map(|(d, _)| judged.get(*d).copied().unwrap_or(0).max(0))
        .collect();

    let num_relevant = judged.values().filter(|&&g| g >= RELEVANCE_LEVEL).count();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));

    let mut out = BTreeMap::new();
    for &k in k_values {
        out.insert(metric_name("ndcg_at", k), ndcg_at(&grades, &ideal, k));
        out.insert(metric_name("map_at", k), map_at(&grades, num_relevant, k));
        out.insert(
            metric_name("recall_at", k),
            recall_at(&grades, num_relevant, k),
        );
        out.insert(metric_name("precision_at", k), precision_at(&grades, k));
        out.insert(metric_name("mrr_at", k), mrr_at(&grades, k));
    }
    out
}

fn is_relevant(grade: i32) -> bool {
    grade >= RELEVANCE_LEVEL
}

/// Discounted cumulative gain of the first `k` grades (rank `i` is 0-based,
/// so its discount is `log2(i + 2)`). Summed in rank order, as trec_eval does.
fn dcg(grades: &[i32], k: usize) -> f64 {
    grades
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, &g)| g > 0)
        .map(|(i, &g)| f64::from(g) / ((i + 2) as f64).log2())
        .sum()
}

fn ndcg_at(grades: &[i32], ideal: &[i32], k: usize) -> f64 {
    let ideal_dcg = dcg(ideal, k);
    if ideal_dcg > 0.0 {
        dcg(grades, k) / ideal_dcg
    } else {
        0.0
    }
}

fn map_at(grades: &[i32], num_relevant: usize, k: usize) -> f64 {
    if num_relevant == 0 {
        return 0.0;
    }
    let mut found = 0usize;
    let mut sum = 0.0;
    for (i, &g) in grades.iter().take(k).enumerate() {
        if is_relevant(g) {
            found += 1;
            sum += found as f64 / (i + 1) as f64;
        }
    }
    sum / num_relevant as f64
}

fn relevant_in_top(grades: &[i32], k: usize) -> usize {
    grades.iter().take(k).filter(|&&g| is_relevant(g)).count()
}

fn recall_at(grades: &[i32], num_relevant: usize, k: usize) -> f64 {
    if num_relevant == 0 {
        return 0.0;
    }
    relevant_in_top(grades, k) as f64 / num_relevant as f64
}

fn precision_at(grades: &[i32], k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    relevant_in_top(grades, k) as f64 / k as f64
}

fn mrr_at(grades: &[i32], k: usize) -> f64 {
    grades
        .iter()
        .take(k)
        .position(|&g| is_relevant(g))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// MTEB 1.x `ignore_identical_ids`: drops from each query's results the
/// document whose id equals the query id (corpora where queries are also
/// documents, e.g. ArguAna, Quora). Returns how many were removed.
pub fn remove_identical_ids(run: &mut Run) -> usize {
    run.iter_mut()
        .map(|(qid, docs)| usize::from(docs.remove(qid).is_some()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qrels(entries: &[(&str, &str, i32)]) -> Qrels {
        let mut q = Qrels::new();
        for &(qid, did, g) in entries {
            q.entry(qid.to_owned())
                .or_default()
                .insert(did.to_owned(), g);
        }
        q
    }

    fn run(entries: &[(&str, &str, f64)]) -> Run {
        let mut r = Run::new();
        for &(qid, did, s) in entries {
            r.entry(qid.to_owned())
                .or_default()
                .insert(did.to_owned(), s);
        }
        r
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Three retrieved docs, graded qrels: hand-computed values.
    #[test]
    fn three_doc_example() {
        // Ranking: d1 (grade 0), d2 (grade 2), d3 (grade 1); d4 (grade 1) not retrieved.
        let q = qrels(&[
            ("q", "d1", 0),
            ("q", "d2", 2),
            ("q", "d3", 1),
            ("q", "d4", 1),
        ]);
        let r = run(&[("q", "d1", 0.9), ("q", "d2", 0.8), ("q", "d3", 0.7)]);
        let e = evaluate(&q, &r, &[1, 3, 10]);
        let m = &e.per_query["q"];

        let dcg3 = 2.0 / 3f64.log2() + 1.0 / 2.0; // ranks 2 and 3
        let idcg3 = 2.0 + 1.0 / 3f64.log2() + 1.0 / 2.0; // grades 2,1,1
        assert!(close(m["ndcg_at_3"], dcg3 / idcg3));
        assert!(close(m["ndcg_at_10"], dcg3 / idcg3)); // ideal has only 3 gains
        assert!(close(m["ndcg_at_1"], 0.0));

        // 3 relevant (d2, d3, d4): AP@3 = (1/2 + 2/3) / 3.
        assert!(close(m["map_at_3"], (0.5 + 2.0 / 3.0) / 3.0));
        assert!(close(m["map_at_1"], 0.0));
        assert!(close(m["recall_at_3"], 2.0 / 3.0));
        assert!(close(m["precision_at_3"], 2.0 / 3.0));
        assert!(close(m["precision_at_10"], 0.2)); // divides by k, not by retrieved
        assert!(close(m["mrr_at_1"], 0.0));
        assert!(close(m["mrr_at_3"], 0.5));
        assert!(close(e.mean["mrr_at_3"], 0.5));
    }

    /// Equal scores are ranked by descending document id, as trec_eval does.
    #[test]
    fn ties_broken_by_descending_doc_id() {
        let q = qrels(&[("q", "a", 1)]);
        let r = run(&[("q", "a", 1.0), ("q", "b", 1.0)]);
        let m = &evaluate(&q, &r, &[1]).per_query["q"];
        // "b" > "a", so "b" is ranked first and the relevant "a" is second.
        assert!(close(m["precision_at_1"], 0.0));
        assert!(close(
            evaluate(&q, &r, &[2]).per_query["q"]["mrr_at_2"],
            0.5
        ));
    }

    /// `-0.0` ties with `0.0` (C comparison), so the doc id decides.
    #[test]
    fn negative_zero_ties_with_zero() {
        let q = qrels(&[("q", "a", 1)]);
        let r = run(&[("q", "a", 0.0), ("q", "b", -0.0)]);
        assert!(close(
            evaluate(&q, &r, &[1]).per_query["q"]["mrr_at_1"],
            0.0
        ));
        let r = run(&[("q", "a", -0.0), ("q", "0", 0.0)]);
        assert!(close(
            evaluate(&q, &r, &[1]).per_query["q"]["mrr_at_1"],
            1.0
        ));
    }

    /// Scores are compared as f32, like trec_eval's C `float`.
    #[test]
    fn scores_equal_in_f32_tie() {
        let q = qrels(&[("q", "a", 1)]);
        let r = run(&[("q", "a", 0.1 + 0.2), ("q", "b", 0.3)]);
        // Distinct doubles, equal floats: "b" wins the tie on doc id.
        assert!(close(
            evaluate(&q, &r, &[1]).per_query["q"]["mrr_at_1"],
            0.0
        ));
    }

    /// Negative grades are non-relevant and add no (negative) gain.
    #[test]
    fn negative_grades_have_zero_gain() {
        let q = qrels(&[("q", "neg", -2), ("q", "pos", 1)]);
        let r = run(&[("q", "neg", 2.0), ("q", "pos", 1.0)]);
        let m = &evaluate(&q, &r, &[2]).per_query["q"];
        assert!(close(m["ndcg_at_2"], 1.0 / 3f64.log2()));
        assert!(close(m["recall_at_2"], 1.0));
        assert!(close(m["map_at_2"], 0.5));
    }

    #[test]
    fn only_queries_in_both_are_evaluated() {
        let q = qrels(&[("q1", "a", 1), ("q2", "a", 1), ("q3", "x", 0)]);
        let r = run(&[("q1", "a", 1.0), ("q3", "x", 1.0), ("q4", "a", 1.0)]);
        let e = evaluate(&q, &r, &[1]);
        assert_eq!(e.per_query.keys().collect::<Vec<_>>(), vec!["q1", "q3"]);
        // q3 has no relevant document: every metric is 0.
        assert!(e.per_query["q3"].values().all(|&v| v == 0.0));
        assert!(close(e.mean["ndcg_at_1"], 0.5));
        assert!(close(e.mean["recall_at_1"], 0.5));
        assert_eq!(e.mean.len(), FAMILIES.len());
    }

    #[test]
    fn empty_evaluation_has_all_keys() {
        let e = evaluate(&Qrels::new(), &Run::new(), &MTEB_K_VALUES);
        assert!(e.per_query.is_empty());
        assert_eq!(e.mean.len(), FAMILIES.len() * MTEB_K_VALUES.len());
        assert!(e.mean.values().all(|&v| v == 0.0));
    }

    #[test]
    fn identical_ids_removed() {
        let mut r = run(&[("q1", "q1", 1.0), ("q1", "d", 0.5), ("q2", "d", 0.1)]);
        assert_eq!(remove_identical_ids(&mut r), 1);
        assert_eq!(r["q1"].len(), 1);
        assert!(r["q1"].contains_key("d"));
        assert_eq!(remove_identical_ids(&mut r), 0);
    }
}
