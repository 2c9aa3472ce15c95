//! `sieve pipeline` end to end on the tiny BEIR fixture, against the real judge server
//! (as `tests/judge_cli.rs`: skipped without `SIEVE_TEST_LLM_URL` unless
//! `SIEVE_REQUIRE_LLM` is set): every stage runs and writes its file, and a second
//! run reuses them instead of redoing the work.

use std::path::Path;

mod common;
use common::{llm_server, model_dir, sieve};

#[test]
fn every_stage_runs_then_resumes_from_its_files() {
    let Some(url) = llm_server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-beir");
    let config = tmp.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"model = {model:?}
work_dir = "work"
dataset = {fixture:?}
train_split = "test"   # the fixture has one split: this checks the plumbing, not quality
test_split = "test"

[mine]
bm25_k = 2
dense_k = 2

[judge]
endpoints = [{url:?}]
threshold = 0.5
max_doc_tokens = 64

[train]
epochs = 1
batch_size = 2
save_every = 1
objective = "exact"
"#,
            model = model_dir().display().to_string(),
            fixture = fixture.display().to_string(),
        ),
    )
    .unwrap();
    let run = || {
        sieve()
            .args(["pipeline", "--quiet"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let first = run();
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("| base |") && out.contains("| trained |"),
        "{out}"
    );
    for f in [
        "mined.parquet",
        "labeled.parquet",
        "verdicts.log",
        "model/model.safetensors",
        "model/metrics.jsonl",
    ] {
        assert!(work.join(f).exists(), "{f} missing");
    }
    let second = run();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(err.contains("mined.parquet exists, reusing it"), "{err}");
    assert!(err.contains("model exists, reusing it"), "{err}");

    // A config with an unknown key is refused with the file's name.
    std::fs::write(
        &config,
        "model = \"m\"\nwork_dir = \"w\"\ndataset = \"d\"\nbogus = 1\n",
    )
    .unwrap();
    let bad = run();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("pipeline.toml") && err.contains("bogus"),
        "{err}"
    );
}
