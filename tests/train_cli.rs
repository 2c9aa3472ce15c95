//! `sieve train` end to end with the real all-MiniLM-L6-v2: killed with -9 after a
//! checkpoint and resumed, it ends at the weights of an uninterrupted run; the
//! exported directory is a sentence-transformers model that `sieve eval` loads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{assert_out_of_space, leftovers, model_dir, sieve, sieve_with_file_limit};

fn pairs(dir: &Path) -> PathBuf {
    let topics = [
        "insulin",
        "vitamin d",
        "aspirin",
        "malaria",
        "asthma",
        "statins",
        "melanoma",
        "zinc",
        "sleep",
        "caffeine",
        "obesity",
        "measles",
    ];
    let mut body = String::new();
    for (i, t) in topics.iter().enumerate() {
        for (k, (q, p)) in [
            (
                format!("does {t} help?"),
                format!("A trial found that {t} helps in most patients."),
            ),
            (
                format!("side effects of {t}"),
                format!("Reported side effects of {t} include nausea."),
            ),
            (
                format!("what is {t}"),
                format!("{t} is studied in medicine; see review {i}."),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let neg = format!(
                "An unrelated note {k} on {}.",
                topics[(i + 5) % topics.len()]
            );
            body.push_str(
                &serde_json::json!({"query": q, "positive": p, "negative": neg}).to_string(),
            );
            body.push('\n');
        }
    }
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, body).unwrap();
    path
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = sieve();
    cmd.args(["train", "--quiet", "--model"])
        .arg(model_dir())
        .arg("--data")
        .arg(data)
        .arg("--output")
        .arg(out)
        .args([
            "--batch-size",
            "4",
            "--max-steps",
            "8",
            "--save-every",
            "2",
            "--lr",
            "1e-4",
        ])
        .args(["--keep-checkpoints", "10"])
        .args(extra);
    cmd
}

/// Tensor name → raw little-endian f32 values.
fn tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let v = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, v)
        })
        .collect()
}

#[test]
fn kill_9_and_resume_reach_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path());

    let straight = tmp.path().join("straight");
    let st = train(&data, &straight, &[]).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let stdout = String::from_utf8_lossy(&st.stdout);
    assert!(stdout.contains("trained 8 steps"), "{stdout}");

    // Killed with -9 as soon as the step-2 checkpoint exists.
    let crashed = tmp.path().join("crashed");
    let mut child = train(&data, &crashed, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !crashed
        .join("checkpoints/step-2/trainer_state.json")
        .exists()
    {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !crashed.join("checkpoints/step-8").exists(),
        "the run finished before it was killed: the test proves nothing"
    );

    // Without --resume the directory is refused rather than overwritten.
    let st = train(&data, &crashed, &[]).output().unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("--resume"), "{err}");

    let st = train(&data, &crashed, &["--resume"]).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("resuming from step"), "{err}");

    let a = tensors(&straight.join("model.safetensors"));
    let b = tensors(&crashed.join("model.safetensors"));
    let base = tensors(&model_dir().join("model.safetensors"));
    assert_eq!(a.len(), b.len());
    let (mut worst, mut moved) = (0f32, 0f32);
    for (name, va) in &a {
        for ((x, y), z) in va.iter().zip(&b[name]).zip(&base[name]) {
            worst = worst.max((x - y).abs());
            moved = moved.max((x - z).abs());
        }
    }
    assert!(worst <= 1e-6, "resumed weights differ by {worst}");
    assert!(moved > 1e-5, "training did not move the weights ({moved})");

    // The export is a sentence-transformers directory sieve evaluates.
    for f in [
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "tokenizer.json",
    ] {
        assert!(straight.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().filter(|l| l.contains("\"loss\"")).count(),
        8
    );
    assert!(straight.join("loss.svg").exists());
    let res = tmp.path().join("results");
    let st = sieve()
        .args(["eval", "--quiet", "--no-cache", "--model"])
        .arg(&straight)
        .arg("--dataset")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-beir"))
        .arg("--output-dir")
        .arg(&res)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// A resume refuses whatever would change the result, naming it: another token limit,
/// or data with the same counts but other texts (the guard once compared only the
/// counts). The same inputs still resume.
#[test]
fn resume_refuses_changed_inputs_and_names_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path());
    let out = tmp.path().join("out");
    let st = train(&data, &out, &[]).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // The exported weights get the mode of every other file written (they were 0600).
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode();
    assert_eq!(mode("model.safetensors"), mode("modules.json"));

    let st = train(&data, &out, &["--resume", "--max-seq-length", "32"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        !st.status.success(),
        "resumed with another max_seq_length: {err}"
    );
    assert!(err.contains("max_seq_length: 256 then, 32 now"), "{err}");

    let edited = tmp.path().join("edited.jsonl");
    let body = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&edited, body.replacen("helps in most", "fails in most", 1)).unwrap();
    let st = train(&edited, &out, &["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(!st.status.success(), "resumed on edited data: {err}");
    assert!(
        err.contains("the same counts") && err.contains("other texts"),
        "{err}"
    );

    let st = train(&data, &out, &["--resume"]).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn bad_data_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"query\": \"q\", \"positive\": \"p\"}\n{\"query\": 3}\n",
    )
    .unwrap();
    let st = train(&data, &tmp.path().join("out"), &[]).output().unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("bad.jsonl") && err.contains('2'), "{err}");
}

/// `--distributed` names what is missing before touching the data: a rank in the
/// environment, a GPU device, a build with NCCL; nothing is written.
#[test]
fn distributed_says_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path());
    let out = tmp.path().join("out");
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut c = train(&data, &out, extra);
        c.arg("--distributed");
        for k in [
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "SLURM_PROCID",
            "SLURM_NTASKS",
            "MASTER_ADDR",
            "MASTER_PORT",
        ] {
            c.env_remove(k);
        }
        c.envs(env.iter().copied());
        let o = c.output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&[], &[]);
    assert!(err.contains("RANK") && err.contains("srun"), "{err}");
    let ranked = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29511"),
    ];
    let err = run(&ranked, &[]);
    assert!(err.contains("--device cuda"), "{err}");
    let err = run(&[("RANK", "2"), ("WORLD_SIZE", "2")], &["--device", "cuda"]);
    assert!(err.contains("rank 2 is outside a world of 2"), "{err}");
    if !cfg!(feature = "nccl") {
        let err = run(&ranked, &["--device", "cuda"]);
        assert!(err.contains("nccl feature"), "{err}");
    }
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

#[test]
fn help_explains_the_false_negative_policy() {
    let st = sieve().args(["train", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&st.stdout);
    for word in [
        "--false-negatives",
        "--mini-batch-size",
        "--resume",
        "GradCache",
        "sentence-transformers",
    ] {
        assert!(help.contains(word), "{word} missing from --help");
    }
}

/// A full disk while training (a 50 MB file-size limit, under the 90 MB weights): at a
/// checkpoint and at the final export, the run fails naming the file, leaves no
/// half-written checkpoint or weights a resume or `sieve eval` would take, and the
/// same command run again with room finishes.
#[test]
fn a_full_disk_while_training_leaves_no_half_checkpoint_or_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pairs(tmp.path());
    for (case, save_every) in [("checkpoint", "2"), ("export", "100")] {
        let out = tmp.path().join(case);
        let run = |mut cmd: Command| {
            cmd.args(["train", "--quiet", "--model"])
                .arg(model_dir())
                .arg("--data")
                .arg(&data)
                .arg("--output")
                .arg(&out)
                .args([
                    "--batch-size",
                    "4",
                    "--max-steps",
                    "4",
                    "--save-every",
                    save_every,
                ])
                .arg("--resume")
                .output()
                .unwrap()
        };
        let st = run(sieve_with_file_limit(50_000));
        let err = assert_out_of_space(&st, &out);
        assert!(err.contains("model.safetensors"), "{case}: {err}");
        assert!(!out.join("model.safetensors").exists(), "{case}");
        assert_eq!(leftovers(&out), Vec::<PathBuf>::new(), "{case}");
        let finished: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if case == "checkpoint" {
            assert!(finished.is_empty(), "{finished:?}");
        }
        let st = run(sieve());
        assert!(
            st.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        assert!(out.join("model.safetensors").exists());
    }
}
