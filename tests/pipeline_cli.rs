//! `sieve pipeline` end to end on the tiny BEIR fixture, against the real judge server
//! (as `tests/judge_cli.rs`: skipped without `SIEVE_TEST_LLM_URL` unless
//! `SIEVE_REQUIRE_LLM` is set): every stage runs and writes its file, and a second
//! run reuses them instead of redoing the work.

use std::path::Path;

mod common;
use common::{llm_server, model_dir, sieve};

/// What every config here shares: the real model, the tiny fixture (its one split is
/// both train and test: these tests check the plumbing, not quality), shallow mining.
fn config_head() -> String {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-beir");
    format!(
        r#"model = {model:?}
work_dir = "work"
dataset = {fixture:?}
train_split = "test"
test_split = "test"

[mine]
bm25_k = 2
dense_k = 2
"#,
        model = model_dir().display().to_string(),
        fixture = fixture.display().to_string(),
    )
}

#[test]
fn every_stage_runs_then_resumes_from_its_files() {
    let Some(url) = llm_server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let config = tmp.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"{head}
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
            head = config_head(),
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

/// A judge that reaches the precision target at no threshold never masks: by default
/// the pipeline stops and says why; with `if_unreachable = "skip-judge"` it trains
/// without judge labels and says so in the summary.
#[test]
fn an_untrustworthy_judge_stops_the_run_or_is_skipped() {
    let Some(url) = llm_server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Every human grade says "irrelevant": no threshold has any precision.
    let graded = tmp.path().join("graded.jsonl");
    std::fs::write(
        &graded,
        [
            ("What causes scurvy?", "The Eiffel Tower is in Paris."),
            ("Is aspirin an anticoagulant?", "Tides follow the moon."),
            ("How is malaria spread?", "Granite is an igneous rock."),
        ]
        .iter()
        .map(|(q, d)| format!("{{\"question_summary\": {q:?}, \"answer\": {d:?}, \"grade\": 1}}\n"))
        .collect::<String>(),
    )
    .unwrap();
    let config = tmp.path().join("pipeline.toml");
    let write = |policy: &str| {
        std::fs::write(
            &config,
            format!(
                r#"{head}
[judge]
endpoints = [{url:?}]
max_doc_tokens = 64

[judge.calibrate]
pairs = "graded.jsonl"
precision_target = 0.5
{policy}

[train]
epochs = 1
batch_size = 2
"#,
                head = config_head(),
            ),
        )
        .unwrap()
    };
    let run = || {
        sieve()
            .args(["pipeline", "--quiet"])
            .arg(&config)
            .output()
            .unwrap()
    };
    write("");
    let stopped = run();
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert!(!stopped.status.success());
    assert!(
        err.contains("precision 0.5 at no threshold") && err.contains("skip-judge"),
        "{err}"
    );
    assert!(!tmp.path().join("work/model").exists(), "it trained anyway");

    write("if_unreachable = \"skip-judge\"");
    let skipped = run();
    let err = String::from_utf8_lossy(&skipped.stderr);
    assert!(skipped.status.success(), "{err}");
    let out = String::from_utf8_lossy(&skipped.stdout);
    assert!(
        out.contains("judge labels not used") && out.contains("| trained |"),
        "{out}"
    );
    assert!(!tmp.path().join("work/labeled.parquet").exists());
    assert!(tmp.path().join("work/model/model.safetensors").exists());
}
