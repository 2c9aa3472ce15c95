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

/// `--truncate-dim` scores prefixes of the embeddings: at the model's full width it is
/// the untruncated score, a list writes one result per width (named -dimD, the width
/// in the JSON) and prints nDCG@10 against dimension; widths past the model's, 0, and
/// BM25 are refused.
#[test]
fn truncate_dim_scores_prefixes_and_tabulates_them() {
    let out = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        sieve()
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
            .unwrap()
    };
    let ok = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&run(&[]));
    let full = scores(&out.path().join("all-MiniLM-L6-v2/tiny-beir.json"));
    let table = ok(&run(&["--truncate-dim", "384,32,8"]));
    let at = |d: usize| {
        let path = out
            .path()
            .join(format!("all-MiniLM-L6-v2-dim{d}/tiny-beir.json"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["sieve"]["truncate_dim"], d, "{path:?}");
        v["scores"]["test"][0].clone()
    };
    assert_eq!(at(384), full, "the full width is the untruncated score");
    assert!(at(8)["ndcg_at_10"].as_f64().unwrap() < full["ndcg_at_10"].as_f64().unwrap());
    assert!(table.contains("| dimension | nDCG@10 |"), "{table}");
    for d in ["384", "32", "8"] {
        assert!(table.contains(&format!("\n| {d} | ")), "{table}");
    }
    for (bad, word) in [
        (&["--truncate-dim", "385"][..], "384 dimensions"),
        (&["--truncate-dim", "0"][..], "at least 1"),
        (
            &["--truncate-dim", "8", "--retriever", "bm25"][..],
            "dense or hybrid",
        ),
    ] {
        let o = run(bad);
        assert!(!o.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(word), "{bad:?}: {err}");
    }
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

/// `sieve eval … | head`: a closed stdout ends the run quietly with exit 0 (it once
/// panicked on the broken pipe with exit 101).
#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let out = tempfile::tempdir().unwrap();
    let mut child = sieve()
        .args(["eval", "--retriever", "bm25", "--quiet", "--dataset"])
        .arg(fixture())
        .arg("--output-dir")
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let st = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// An empty corpus is an error, not a score (it once scored main_score -0.0, exit 0);
/// a task name cannot leave the output directory.
#[test]
fn an_empty_corpus_and_an_escaping_task_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    std::fs::create_dir_all(ds.join("qrels")).unwrap();
    std::fs::write(ds.join("corpus.jsonl"), "").unwrap();
    std::fs::write(
        ds.join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"q\"}\n",
    )
    .unwrap();
    std::fs::write(
        ds.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    )
    .unwrap();
    let eval = |dataset: &Path, extra: &[&str]| {
        sieve()
            .args(["eval", "--retriever", "bm25", "--quiet", "--dataset"])
            .arg(dataset)
            .arg("--output-dir")
            .arg(dir.path().join("out/results"))
            .args(extra)
            .output()
            .unwrap()
    };
    let st = eval(&ds, &[]);
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(!st.status.success(), "{err}");
    assert!(err.contains("the corpus has no documents"), "{err}");

    let st = eval(&fixture(), &["--task-name", "../../Escaped"]);
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(!st.status.success(), "{err}");
    assert!(err.contains("must be one file name"), "{err}");
    let escaped: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("Escaped"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Out-of-range values are errors naming the value, never quietly another value
/// (`--threshold 2`, `--max-attempts 0`, `--lr -1`, `--epochs 0`, … were accepted).
#[test]
fn out_of_range_values_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("v.log");
    let judge = |extra: &[&str]| {
        let mut c = sieve();
        c.args(["judge", "--quiet", "--mined"])
            .arg(tmp.path().join("m.parquet"))
            .arg("--out")
            .arg(tmp.path().join("l.parquet"))
            .arg("--cache")
            .arg(&cache)
            .args(["--judge-model", "x", "--endpoint", "http://127.0.0.1:9/v1"])
            .args(extra);
        c
    };
    for (args, message) in [
        (vec!["--threshold", "2"], "threshold must be a probability"),
        (vec!["--threshold=-1"], "threshold must be a probability"),
        (
            vec!["--threshold", "NaN"],
            "threshold must be a probability",
        ),
        (
            vec!["--max-attempts", "0"],
            "max_attempts must be at least 1",
        ),
        (vec!["--max-error-share", "1.5"], "max_error_share"),
    ] {
        let st = judge(&args).output().unwrap();
        let err = String::from_utf8_lossy(&st.stderr);
        assert!(!st.status.success(), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let data = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &data,
        "{\"query\": \"a\", \"positive\": \"b\"}\n{\"query\": \"c\", \"positive\": \"d\"}\n",
    )
    .unwrap();
    let train = |extra: &[&str]| {
        let mut c = sieve();
        c.args(["train", "--quiet", "--model"])
            .arg(model_dir())
            .arg("--data")
            .arg(&data)
            .arg("--output")
            .arg(tmp.path().join("out"))
            .args(extra);
        c
    };
    for (args, message) in [
        (vec!["--lr=-1"], "lr must be a positive number"),
        (vec!["--scale", "0"], "scale must be positive"),
        (
            vec!["--warmup-ratio", "2"],
            "warmup_ratio must be between 0 and 1",
        ),
        (vec!["--epochs", "0"], "epochs must be at least 1"),
        (vec!["--max-steps", "0"], "max_steps must be at least 1"),
        (
            vec!["--batch-size", "1"],
            "batch_size 1 without hard negatives",
        ),
    ] {
        let st = train(&args).output().unwrap();
        let err = String::from_utf8_lossy(&st.stderr);
        assert!(!st.status.success(), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(
            !tmp.path().join("out/model.safetensors").exists(),
            "{args:?}: a model was exported"
        );
    }
}

/// Each cause is printed once: a message that already quotes its source
/// (`{path}: {source}`) is not followed by the source again.
#[test]
fn each_cause_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let st = sieve()
        .args([
            "judge",
            "calibrate",
            "--quiet",
            "--judge-model",
            "x",
            "--pairs",
        ])
        .arg(tmp.path().join("missing.jsonl"))
        .arg("--cache")
        .arg(tmp.path().join("v.log"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(!st.status.success());
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(cause) = l.trim().strip_prefix("caused by: ") {
            assert!(
                !lines[..i].iter().any(|p| p.contains(cause)),
                "printed twice: {cause}\n{err}"
            );
        }
    }
}
