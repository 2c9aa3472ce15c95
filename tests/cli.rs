//! End-to-end tests of the `sieve` binary on a tiny BEIR fixture in the repository.

use std::path::{Path, PathBuf};

mod common;
use common::{model_dir, sieve};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-beir")
}

fn scores(path: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["scores"]["test"][0].clone()
}

#[test]
fn bm25_eval_writes_mteb_json_and_markdown() {
    let out = tempfile::tempdir().unwrap();
    let st = sieve()
        .args(["eval", "--retriever", "bm25", "--quiet", "--dataset"])
        .arg(fixture())
        .arg("--output-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let s = scores(&out.path().join("bm25/tiny-beir.json"));
    // Every query's relevant document shares its key terms; BM25 ranks each first.
    assert_eq!(s["ndcg_at_10"], 1.0, "{s}");
    assert_eq!(s["main_score"], s["ndcg_at_10"]);
    for key in ["map_at_1000", "recall_at_100", "precision_at_3", "mrr_at_5"] {
        assert!(s[key].is_number(), "{key} missing");
    }
    assert!(out.path().join("bm25/tiny-beir.md").exists());
    assert!(String::from_utf8_lossy(&st.stdout).contains("| ndcg |"));
}

#[test]
fn dense_eval_drops_identical_ids_and_reuses_the_cache() {
    let out = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let st = sieve()
            .args(["eval", "--quiet", "--dataset"])
            .arg(fixture())
            .arg("--model")
            .arg(model_dir())
            .arg("--output-dir")
            .arg(out.path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        scores(&out.path().join("all-MiniLM-L6-v2/tiny-beir.json"))
    };
    let first = run(&[]);
    assert!(first["ndcg_at_10"].as_f64().unwrap() > 0.9, "{first}");
    let entries = std::fs::read_dir(cache.path().join("embeddings"))
        .unwrap()
        .count();
    assert_eq!(entries, 1, "one model directory in the cache");
    // Same numbers from the cache.
    let again = run(&[]);
    assert_eq!(first, again);
    // Document "q3" (about sleep and mortality, not judged relevant) has the id of
    // query q3 and is dropped by default, as MTEB does; kept, it outranks q3's
    // relevant document and nDCG@1 falls.
    let kept = run(&["--keep-identical-ids"]);
    assert!(
        kept["ndcg_at_1"].as_f64().unwrap() < first["ndcg_at_1"].as_f64().unwrap(),
        "{kept} vs {first}"
    );
}

#[test]
fn bad_input_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("qrels")).unwrap();
    std::fs::write(
        dir.path().join("corpus.jsonl"),
        "{\"_id\": \"d1\", \"text\": \"ok\"}\n{\"title\": \"no id\", \"text\": \"x\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"q\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    )
    .unwrap();
    let st = sieve()
        .args(["eval", "--retriever", "bm25", "--quiet", "--dataset"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains("corpus.jsonl:2") && err.contains("_id"),
        "{err}"
    );
}

#[test]
fn strict_turns_dangling_qrels_into_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("qrels")).unwrap();
    std::fs::write(
        dir.path().join("corpus.jsonl"),
        "{\"_id\": \"d1\", \"text\": \"ok\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"ok\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tmissing\t1\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let lenient = sieve()
        .args(["eval", "--retriever", "bm25", "--quiet", "--dataset"])
        .arg(dir.path())
        .arg("--output-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(lenient.status.success());
    assert!(String::from_utf8_lossy(&lenient.stderr).contains("missing"));
    let strict = sieve()
        .args([
            "eval",
            "--retriever",
            "bm25",
            "--quiet",
            "--strict",
            "--dataset",
        ])
        .arg(dir.path())
        .arg("--output-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn unreachable_hub_fails_clearly() {
    let st = sieve()
        .args(["encode", "--model", "no-such-org/no-such-model", "--input"])
        .arg(fixture().join("queries.jsonl"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains("no-such-org/no-such-model") && err.contains("fetch-model"),
        "{err}"
    );
}
