//! `sieve_eval::metrics` against values computed by pytrec_eval (the fixtures
//! in `tests/fixtures/`, produced by a Python script with pytrec_eval and the
//! MTEB metric names).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use sieve_datasets::Qrels;
use sieve_eval::metrics::{evaluate, remove_identical_ids, Evaluation, Run};

/// Fixture values are printed by Python with full double precision; the
/// remaining slack covers summation-order differences only.
const TOLERANCE: f64 = 1e-6;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_text(name: &str) -> String {
    let path = fixture(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text
    } else {
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// TREC run format: `qid Q0 docid rank score tag` (whitespace separated).
fn parse_run(name: &str) -> Run {
    let mut run = Run::new();
    for (i, line) in read_text(name).lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        assert!(fields.len() >= 5, "{name}:{}: `{line}`", i + 1);
        let score: f64 = fields[4]
            .parse()
            .unwrap_or_else(|e| panic!("{name}:{}: score `{}`: {e}", i + 1, fields[4]));
        run.entry(fields[0].to_owned())
            .or_default()
            .insert(fields[2].to_owned(), score);
    }
    run
}

/// BEIR qrels TSV with the header `query-id corpus-id score`.
fn parse_qrels(name: &str) -> Qrels {
    let mut qrels = Qrels::new();
    for (i, line) in read_text(name).lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if i == 0 && fields.first() == Some(&"query-id") || line.trim().is_empty() {
            continue;
        }
        assert_eq!(fields.len(), 3, "{name}:{}: `{line}`", i + 1);
        let grade: i32 = fields[2]
            .parse()
            .unwrap_or_else(|e| panic!("{name}:{}: grade `{}`: {e}", i + 1, fields[2]));
        qrels
            .entry(fields[0].to_owned())
            .or_default()
            .insert(fields[1].to_owned(), grade);
    }
    qrels
}

/// `{"per_query": {qid: {metric: value}}, "mean": {metric: value}}`.
fn parse_expected(name: &str) -> Evaluation {
    let json: serde_json::Value =
        serde_json::from_str(&read_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let table = |v: &serde_json::Value| -> BTreeMap<String, f64> {
        v.as_object()
            .unwrap_or_else(|| panic!("{name}: expected an object"))
            .iter()
            .map(|(k, v)| {
                let x = v
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name}: {k} is not a number"));
                (k.clone(), x)
            })
            .collect()
    };
    let per_query = json["per_query"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: no per_query"))
        .iter()
        .map(|(q, m)| (q.clone(), table(m)))
        .collect();
    Evaluation {
        per_query,
        mean: table(&json["mean"]),
    }
}

/// The cut-offs the fixture was computed at (its `k_values`).
fn k_values(name: &str) -> Vec<usize> {
    let json: serde_json::Value =
        serde_json::from_str(&read_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ks: Vec<usize> = json["k_values"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no k_values"))
        .iter()
        .map(|k| {
            k.as_u64()
                .and_then(|k| usize::try_from(k).ok())
                .unwrap_or_else(|| panic!("{name}: bad k {k}"))
        })
        .collect();
    assert!(!ks.is_empty(), "{name}: empty k_values");
    ks
}

/// pytrec_eval measures the fixtures also record but MTEB does not report
/// (uncut reciprocal rank); every other fixture metric must be ours.
const NOT_MTEB_METRICS: [&str; 1] = ["recip_rank"];

/// Every fixture value (per query and mean) must be reproduced, and no query
/// may be evaluated that pytrec_eval did not evaluate.
fn assert_matches(got: &Evaluation, want: &Evaluation) {
    assert_eq!(
        got.per_query.keys().collect::<Vec<_>>(),
        want.per_query.keys().collect::<Vec<_>>(),
        "evaluated queries differ"
    );
    let mut checked = 0;
    for (qid, metrics) in &want.per_query {
        for (name, &value) in metrics {
            if NOT_MTEB_METRICS.contains(&name.as_str()) {
                continue;
            }
            let mine = got.per_query[qid]
                .get(name)
                .unwrap_or_else(|| panic!("missing {name} for {qid}"));
            assert!(
                (mine - value).abs() <= TOLERANCE,
                "query {qid} {name}: ours {mine}, pytrec_eval {value}"
            );
            checked += 1;
        }
    }
    for (name, &value) in &want.mean {
        if NOT_MTEB_METRICS.contains(&name.as_str()) {
            continue;
        }
        let mine = got
            .mean
            .get(name)
            .unwrap_or_else(|| panic!("missing mean {name}"));
        assert!(
            (mine - value).abs() <= TOLERANCE,
            "mean {name}: ours {mine}, pytrec_eval {value}"
        );
    }
    assert!(checked > 0, "fixture has no per-query values");
}

#[test]
fn scifact_matches_pytrec_eval() {
    let expected = "scifact_expected.json";
    let got = evaluate(
        &parse_qrels("scifact_qrels.tsv"),
        &parse_run("scifact_run.tsv.gz"),
        &k_values(expected),
    );
    assert_matches(&got, &parse_expected(expected));
}

#[test]
fn synthetic_matches_pytrec_eval() {
    let expected = "synthetic_expected.json";
    let got = evaluate(
        &parse_qrels("synthetic_qrels.tsv"),
        &parse_run("synthetic_run.tsv"),
        &k_values(expected),
    );
    assert_matches(&got, &parse_expected(expected));
}

#[test]
fn synthetic_ignore_identical_matches_pytrec_eval() {
    let expected = "synthetic_expected_ignore_identical.json";
    let mut run = parse_run("synthetic_run.tsv");
    let identical = run
        .iter()
        .filter(|(qid, docs)| docs.contains_key(*qid))
        .count();
    assert!(identical > 0, "fixture has no identical ids to remove");
    assert_eq!(remove_identical_ids(&mut run), identical);
    let got = evaluate(
        &parse_qrels("synthetic_qrels.tsv"),
        &run,
        &k_values(expected),
    );
    assert_matches(&got, &parse_expected(expected));
}
