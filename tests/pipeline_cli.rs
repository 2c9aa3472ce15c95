//! `sieve pipeline` end to end on the tiny BEIR fixture, against the real judge server
//! (`scripts/test.sh` starts one; without `SIEVE_TEST_LLM_URL` these tests fail and
//! say so): every stage runs and writes its file, a second run reuses them, and a
//! changed table redoes exactly its stage and the later ones.

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

/// What the summary table says `stage` did ("ran", "reused", "redone (…)").
fn did<'a>(stdout: &'a str, stage: &str) -> &'a str {
    let prefix = format!("| {stage} | ");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row for {stage} in\n{stdout}"));
    line[prefix.len()..].split(" | ").next().unwrap_or("")
}

const STAGES: [&str; 5] = ["mine", "judge", "train", "eval-base", "eval-trained"];

#[test]
fn every_stage_runs_then_only_what_changed_is_redone() {
    let url = llm_server();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let config = tmp.path().join("pipeline.toml");
    // The settings each run changes: [mine] bm25_k, [judge] max_doc_tokens, [train]
    // epochs, [eval] top_k.
    let write = |bm25_k: usize, doc_tokens: usize, epochs: usize, top_k: usize| {
        let head = config_head().replace("bm25_k = 2", &format!("bm25_k = {bm25_k}"));
        std::fs::write(
            &config,
            format!(
                r#"{head}
[judge]
endpoints = [{url:?}]
threshold = 0.5
max_doc_tokens = {doc_tokens}

[train]
epochs = {epochs}
batch_size = 2
save_every = 1
objective = "exact"

[eval]
top_k = {top_k}
"#
            ),
        )
        .unwrap()
    };
    let run = || {
        let out = sieve()
            .args(["pipeline", "--quiet"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    write(2, 64, 1, 1000);
    let first = run();
    assert!(
        first.contains("| base |") && first.contains("| trained |"),
        "{first}"
    );
    for stage in STAGES {
        assert_eq!(did(&first, stage), "ran", "{first}");
    }
    for f in [
        "mined.parquet",
        "labeled.parquet",
        "verdicts.log",
        "model/model.safetensors",
        "model/metrics.jsonl",
        "mine.key.json",
        "train.key.json",
    ] {
        assert!(work.join(f).exists(), "{f} missing");
    }
    let steps = |dir: &str| {
        std::fs::read_to_string(work.join(dir).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"loss\""))
            .count()
    };
    let first_steps = steps("model");

    // Nothing changed: nothing is redone.
    let second = run();
    for stage in STAGES {
        assert_eq!(did(&second, stage), "reused", "{second}");
    }

    // [train] changed: training and the trained model's evaluation are redone, the
    // rest reused; the old model is set aside.
    write(2, 64, 2, 1000);
    let third = run();
    assert_eq!(did(&third, "mine"), "reused", "{third}");
    assert_eq!(did(&third, "judge"), "reused", "{third}");
    assert_eq!(
        did(&third, "train"),
        "redone (settings.epochs: 1 → 2)",
        "{third}"
    );
    assert_eq!(did(&third, "eval-base"), "reused", "{third}");
    assert_eq!(
        did(&third, "eval-trained"),
        "redone (the train stage changed)",
        "{third}"
    );
    assert_eq!(
        steps("model"),
        2 * first_steps,
        "not retrained for 2 epochs"
    );
    assert_eq!(steps("model.previous"), first_steps);

    // [mine] changed: every stage after it is redone too, but the base model's score,
    // which no mined file feeds, is reused.
    // [eval] changed: only the two evaluations are redone.
    write(2, 64, 2, 100);
    let eval_changed = run();
    for stage in ["mine", "judge", "train"] {
        assert_eq!(did(&eval_changed, stage), "reused", "{eval_changed}");
    }
    for stage in ["eval-base", "eval-trained"] {
        assert_eq!(
            did(&eval_changed, stage),
            "redone (settings.top_k: 1000 → 100)",
            "{eval_changed}"
        );
    }

    // [judge] changed: the judge, training and the trained model's evaluation.
    write(2, 48, 2, 100);
    let judge_changed = run();
    assert_eq!(did(&judge_changed, "mine"), "reused", "{judge_changed}");
    assert_eq!(
        did(&judge_changed, "judge"),
        "redone (settings.max_doc_tokens: 64 → 48)",
        "{judge_changed}"
    );
    assert_eq!(
        did(&judge_changed, "train"),
        "redone (the judge stage changed)",
        "{judge_changed}"
    );
    assert_eq!(
        did(&judge_changed, "eval-base"),
        "reused",
        "{judge_changed}"
    );
    assert!(
        did(&judge_changed, "eval-trained").starts_with("redone"),
        "{judge_changed}"
    );

    write(3, 48, 2, 100);
    let fourth = run();
    assert_eq!(
        did(&fourth, "mine"),
        "redone (settings.bm25_k: 2 → 3)",
        "{fourth}"
    );
    assert_eq!(
        did(&fourth, "judge"),
        "redone (the mine stage changed)",
        "{fourth}"
    );
    assert_eq!(
        did(&fourth, "train"),
        "redone (the judge stage changed)",
        "{fourth}"
    );
    assert_eq!(did(&fourth, "eval-base"), "reused", "{fourth}");
    assert!(
        did(&fourth, "eval-trained").starts_with("redone"),
        "{fourth}"
    );

    // A config with an unknown key is refused with the file's name and the key.
    std::fs::write(
        &config,
        "model = \"m\"\nwork_dir = \"w\"\ndataset = \"d\"\nbogus = 1\n",
    )
    .unwrap();
    let bad = sieve()
        .args(["pipeline", "--quiet"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("pipeline.toml") && err.contains("`bogus`"),
        "{err}"
    );
}

/// A judge that reaches the precision target at no threshold never masks: by default
/// the pipeline stops and says why; with `if_unreachable = "skip-judge"` it trains
/// without judge labels and says so in the summary.
#[test]
fn an_untrustworthy_judge_stops_the_run_or_is_skipped() {
    let url = llm_server();
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
    let write_target = |target: f64, policy: &str| {
        std::fs::write(
            &config,
            format!(
                r#"{head}
[judge]
endpoints = [{url:?}]
max_doc_tokens = 64

[judge.calibrate]
pairs = "graded.jsonl"
precision_target = {target}
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
    let write = |policy: &str| write_target(0.5, policy);
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

    // [judge.calibrate] changed: the calibration is redone. The judge is still
    // skipped, so what training reads is unchanged and it is reused.
    write_target(0.6, "if_unreachable = \"skip-judge\"");
    let recalibrated = run();
    let err = String::from_utf8_lossy(&recalibrated.stderr);
    assert!(recalibrated.status.success(), "{err}");
    let out = String::from_utf8_lossy(&recalibrated.stdout);
    assert_eq!(
        did(&out, "calibrate"),
        "redone (calibrate.precision_target: 0.5 → 0.6)",
        "{out}"
    );
    for stage in ["mine", "train", "eval-base", "eval-trained"] {
        assert_eq!(did(&out, stage), "reused", "{out}");
    }
}

/// Bad settings of a later stage stop the run before the first stage starts (a
/// `[train] batch_size = 0` was once found only after mining and judging).
#[test]
fn bad_settings_of_any_stage_stop_the_run_before_mining() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("pipeline.toml");
    for (table, message) in [
        ("[train]\nbatch_size = 0\n", "[train]"),
        ("[train]\nlr = -1.0\n", "lr must be a positive number"),
        ("[eval]\ntop_k = 0\n", "[eval]"),
        (
            "[judge]\nthreshold = 2.0\nendpoints = [\"http://127.0.0.1:9/v1\"]\n",
            "threshold must be a probability",
        ),
        (
            "[judge]\nmax_attempts = 0\nendpoints = [\"http://127.0.0.1:9/v1\"]\n",
            "max_attempts must be at least 1",
        ),
    ] {
        std::fs::write(&config, format!("{}\n{table}", config_head())).unwrap();
        let out = sieve()
            .args(["pipeline", "--quiet"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{table}: ran: {err}");
        assert!(err.contains(message), "{table}: {err}");
        assert!(
            !tmp.path().join("work/mined.parquet").exists(),
            "{table}: mining ran before the settings were checked"
        );
    }
}
