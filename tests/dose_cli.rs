//! `sieve dose` end to end with the real all-MiniLM-L6-v2, against a dose recomputed
//! here in f64 from `sieve encode`'s embeddings of the same texts.

use std::path::Path;

mod common;
use common::{model_dir, sieve};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-beir")
}

/// Corpus id → `title + " " + text`, as training embeds documents.
fn corpus_texts() -> Vec<(String, String)> {
    std::fs::read_to_string(fixture().join("corpus.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let title = v["title"].as_str().unwrap_or("");
            let text = v["text"].as_str().unwrap();
            let full = if title.is_empty() {
                text.to_string()
            } else {
                format!("{title} {text}")
            };
            (v["_id"].as_str().unwrap().to_string(), full)
        })
        .collect()
}

#[test]
fn dose_matches_a_dense_recomputation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("beir");
    std::fs::create_dir_all(data.join("qrels")).unwrap();
    for f in ["corpus.jsonl", "queries.jsonl"] {
        std::fs::copy(fixture().join(f), data.join(f)).unwrap();
    }
    // q1's labelled positive is d1 (score 2); d3 (q3's positive) is a hidden positive of
    // q1 (score 1): in one batch of all four queries it is in q1's denominator.
    std::fs::write(
        data.join("qrels/train.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t1\nq2\td4\t2\nq3\td3\t2\nq4\td5\t2\n",
    )
    .unwrap();
    let json = tmp.path().join("dose.json");
    let out = sieve()
        .args(["dose", "--batch-size", "4", "--num-negatives", "0"])
        .args(["--min-positive-score", "2", "--scale", "5", "--model"])
        .arg(model_dir())
        .arg("--data")
        .arg(&data)
        .arg("--json")
        .arg(&json)
        .env("SIEVE_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("in-batch 4 (random, 1 batches)"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();

    // Reference: embed q1 and every document with `sieve encode`, then the softmax.
    let docs = corpus_texts();
    let mut lines = vec!["Does aspirin prevent heart attacks?".to_string()];
    lines.extend(docs.iter().map(|(_, t)| t.clone()));
    let txt = tmp.path().join("texts.txt");
    std::fs::write(&txt, lines.join("\n") + "\n").unwrap();
    let npy = tmp.path().join("emb.npy");
    let st = sieve()
        .args(["encode", "--quiet", "--model"])
        .arg(model_dir())
        .arg("--input")
        .arg(&txt)
        .arg("--output")
        .arg(&npy)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (rows, dim, e) = sieve_datasets::npy::read_npy(&npy).unwrap();
    assert_eq!(rows, lines.len());
    let unit = |i: usize| {
        let r = &e[i * dim..(i + 1) * dim];
        let n = r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        r.iter().map(|&x| x as f64 / n).collect::<Vec<f64>>()
    };
    let q = unit(0);
    let s = |id: &str| {
        let k = docs.iter().position(|(d, _)| d == id).unwrap() + 1;
        5.0 * unit(k).iter().zip(&q).map(|(a, b)| a * b).sum::<f64>()
    };
    // In-batch: q1 against the four positives d1, d4, d3, d5; its known dose is d3's share.
    let batch: f64 = ["d1", "d4", "d3", "d5"].iter().map(|d| s(d).exp()).sum();
    let q1_in_batch = s("d3").exp() / batch;
    // Exact: against all six documents. Only q1 has a known false negative, so the
    // mean over the four queries is a quarter of its share.
    let all: f64 = docs.iter().map(|(d, _)| s(d).exp()).sum();
    let q1_exact = s("d3").exp() / all;
    let got_batch = v["in_batch"]["known"]["mean"].as_f64().unwrap();
    let got_exact = v["exact"]["dose"]["known"]["mean"].as_f64().unwrap();
    let got_max = v["exact"]["dose"]["known"]["max"].as_f64().unwrap();
    assert!(
        (got_batch - q1_in_batch / 4.0).abs() < 1e-4,
        "{got_batch} vs {}",
        q1_in_batch / 4.0
    );
    assert!(
        (got_exact - q1_exact / 4.0).abs() < 1e-4,
        "{got_exact} vs {}",
        q1_exact / 4.0
    );
    assert!((got_max - q1_exact).abs() < 1e-4, "{got_max} vs {q1_exact}");
    assert!(q1_exact > 1e-3, "the case must carry a dose: {q1_exact}");
    assert_eq!(v["exact"]["documents"], 6);
}

#[test]
fn dose_names_a_missing_input() {
    let out = sieve()
        .args(["dose", "--data", "/nonexistent/labeled.parquet", "--model"])
        .arg(model_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/labeled.parquet"), "{err}");
}
