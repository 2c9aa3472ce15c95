//! End-to-end tests of `sieve mine` and `sieve merge`: a real model on the tiny BEIR
//! fixture, and precomputed embeddings on a synthetic set large enough to kill the
//! process in the middle of a run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{assert_out_of_space, leftovers, model_dir, sieve, sieve_with_file_limit};

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mines_tiny_beir_with_the_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-beir");
    let out = dir.path().join("mined.parquet");
    let run = || {
        ok(sieve()
            .args([
                "mine",
                "--quiet",
                "--split",
                "test",
                "--bm25-k",
                "3",
                "--dense-k",
                "3",
            ])
            .arg("--dataset")
            .arg(&fixture)
            .arg("--model")
            .arg(model_dir())
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("--out")
            .arg(&out))
    };
    let stdout = run();
    assert!(stdout.contains("recall of known positives"), "{stdout}");
    let (rows, meta) = sieve_datasets::mined::read_mined(&out).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(meta["sieve.model"], "all-MiniLM-L6-v2");
    assert!(meta["sieve.corpus"].ends_with("corpus.jsonl"));
    for r in &rows {
        assert!(!r.positives.is_empty());
        // Positives found by both retrievers; candidates carry both scores.
        assert!(
            r.positive_hits.iter().all(|p| p.fused_rank.is_some()),
            "{r:?}"
        );
        for c in &r.candidates {
            assert!(c.dense > -1.0 && c.dense < 1.0);
            assert!(!r.positives.contains(&c.doc_id));
        }
    }
    // A second run with the same options has nothing to do and changes nothing.
    let before = std::fs::read(&out).unwrap();
    run();
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // Other options without --overwrite: refused, file kept.
    let st = sieve()
        .args(["mine", "--quiet", "--split", "test", "--bm25-k", "2"])
        .arg("--dataset")
        .arg(&fixture)
        .arg("--model")
        .arg(model_dir())
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("--overwrite"));
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

/// A BEIR directory of `n` documents and `nq` queries with random clustered
/// embeddings in `.npy` files, so no model runs.
fn synthetic(dir: &Path, n: usize, nq: usize) -> (PathBuf, PathBuf, PathBuf) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words = [
        "alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta",
    ];
    let beir = dir.join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    let dim = 8;
    let mut corpus = String::new();
    let mut emb = Vec::new();
    for i in 0..n {
        let text: Vec<&str> = (0..6).map(|_| words[(next() % 8) as usize]).collect();
        corpus.push_str(&format!(
            "{{\"_id\": \"d{i}\", \"title\": \"\", \"text\": \"{} w{i}\"}}\n",
            text.join(" ")
        ));
        emb.extend((0..dim).map(|_| (next() % 1000) as f32 / 1000.0 - 0.5));
    }
    std::fs::write(beir.join("corpus.jsonl"), corpus).unwrap();
    let mut queries = String::new();
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    let mut qemb = Vec::new();
    for q in 0..nq {
        let d = (next() % n as u64) as usize;
        queries.push_str(&format!(
            "{{\"_id\": \"q{q}\", \"text\": \"w{d} alpha\"}}\n"
        ));
        qrels.push_str(&format!("q{q}\td{d}\t1\n"));
        qemb.extend((0..dim).map(|j| emb[d * dim + j] + (next() % 100) as f32 / 1000.0));
    }
    std::fs::write(beir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(beir.join("qrels/train.tsv"), qrels).unwrap();
    let c = dir.join("corpus.npy");
    let qn = dir.join("queries.npy");
    sieve_datasets::npy::write_npy(&c, &emb, n, dim).unwrap();
    sieve_datasets::npy::write_npy(&qn, &qemb, nq, dim).unwrap();
    (beir, c, qn)
}

fn mine_cmd(dir: &Path, beir: &Path, c: &Path, q: &Path, out: &Path) -> Command {
    let mut cmd = sieve();
    cmd.args([
        "mine",
        "--quiet",
        "--bm25-k",
        "20",
        "--dense-k",
        "20",
        "--part-queries",
        "2",
    ])
    .arg("--dataset")
    .arg(beir)
    .arg("--corpus-embeddings")
    .arg(c)
    .arg("--query-embeddings")
    .arg(q)
    .arg("--cache-dir")
    .arg(dir.join("cache"))
    .arg("--out")
    .arg(out);
    cmd
}

fn parts_in(out: &Path) -> usize {
    let mut name = out.file_name().unwrap().to_os_string();
    name.push(".parts");
    std::fs::read_dir(out.with_file_name(name))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("part-"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_then_resume_gives_the_same_bytes_and_shards_merge_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let (beir, c, q) = synthetic(dir.path(), 2000, 600);
    let straight = dir.path().join("straight.parquet");
    ok(&mut mine_cmd(dir.path(), &beir, &c, &q, &straight));

    // Kill at a few different points; each time the next run picks up the parts.
    let out = dir.path().join("killed.parquet");
    let mut kills = 0;
    for threshold in [5, 60, 150] {
        let mut child = mine_cmd(dir.path(), &beir, &c, &q, &out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while parts_in(&out) < threshold && t.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        if out.exists() {
            break;
        }
    }
    assert!(kills > 0, "the run finished before it could be killed");
    assert!(!out.exists() || parts_in(&out) == 0);
    ok(&mut mine_cmd(dir.path(), &beir, &c, &q, &out));
    assert_eq!(
        std::fs::read(&straight).unwrap(),
        std::fs::read(&out).unwrap(),
        "resumed output differs from the uninterrupted run"
    );

    // Two shards merged with `sieve merge`: the same bytes again. The second is a task
    // of a Slurm job array submitted as --array=1-2: `--shard auto` reads its slice
    // from the array's variables and says so.
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            let s = dir.path().join(format!("shard{i}.parquet"));
            if i == 0 {
                ok(mine_cmd(dir.path(), &beir, &c, &q, &s).args(["--shard", "0/2"]));
            } else {
                let out = mine_cmd(dir.path(), &beir, &c, &q, &s)
                    .args(["--shard", "auto"])
                    .env("SLURM_ARRAY_TASK_ID", "2")
                    .env("SLURM_ARRAY_TASK_MIN", "1")
                    .env("SLURM_ARRAY_TASK_COUNT", "2")
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{err}");
                assert!(
                    err.contains("mining shard 1/2 (SLURM_ARRAY_TASK_ID=2"),
                    "the chosen shard is not printed: {err}"
                );
            }
            s
        })
        .collect();
    let merged = dir.path().join("merged.parquet");
    ok(sieve()
        .args(["merge", "--out"])
        .arg(&merged)
        .args(shards.iter().rev()));
    assert_eq!(
        std::fs::read(&straight).unwrap(),
        std::fs::read(&merged).unwrap()
    );
}

/// `sieve train --data` on a directory (or a wildcard) of shards trains exactly as on
/// their merged file: the same examples in the same order, so the same batches, losses
/// and final weights for the same seed. An incomplete set is refused, naming a file.
#[test]
fn training_on_a_set_of_shards_equals_training_on_their_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (beir, c, q) = synthetic(dir.path(), 60, 24);
    let shard_dir = dir.path().join("shards");
    std::fs::create_dir(&shard_dir).unwrap();
    let shards: Vec<PathBuf> = (0..3)
        .map(|i| {
            let s = shard_dir.join(format!("mined-{i}.parquet"));
            ok(mine_cmd(dir.path(), &beir, &c, &q, &s).args(["--shard", &format!("{i}/3")]));
            s
        })
        .collect();
    let merged = dir.path().join("merged.parquet");
    ok(sieve().args(["merge", "--out"]).arg(&merged).args(&shards));
    let train = |data: &Path, name: &str| {
        let out = dir.path().join(name);
        ok(sieve()
            .args(["train", "--quiet", "--batch-size", "4", "--max-steps", "3"])
            .args(["--save-every", "0", "--num-negatives", "1", "--seed", "7"])
            .arg("--model")
            .arg(model_dir())
            .arg("--data")
            .arg(data)
            .arg("--output")
            .arg(&out));
        let losses: Vec<String> = std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(v.get("loss")?.to_string())
            })
            .collect();
        let weights = std::fs::read(out.join("model.safetensors")).unwrap();
        (losses, weights)
    };
    let (l_merged, w_merged) = train(&merged, "from-merged");
    let (l_dir, w_dir) = train(&shard_dir, "from-dir");
    let (l_glob, w_glob) = train(&shard_dir.join("mined-*.parquet"), "from-glob");
    assert_eq!(l_merged.len(), 3, "{l_merged:?}");
    assert_eq!(l_dir, l_merged);
    assert_eq!(l_glob, l_merged);
    assert!(
        w_dir == w_merged && w_glob == w_merged,
        "final weights differ"
    );
    // One shard missing: refused, naming the set's problem.
    std::fs::remove_file(&shards[1]).unwrap();
    let out = sieve()
        .args(["train", "--quiet", "--max-steps", "1"])
        .arg("--model")
        .arg(model_dir())
        .arg("--data")
        .arg(&shard_dir)
        .arg("--output")
        .arg(dir.path().join("refused"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mined-2.parquet") && err.contains("shard 1/3 is missing"),
        "{err}"
    );
    let out = sieve()
        .args(["train", "--quiet", "--max-steps", "1"])
        .arg("--model")
        .arg(model_dir())
        .arg("--data")
        .arg(shard_dir.join("nothing-*.parquet"))
        .arg("--output")
        .arg(dir.path().join("refused2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no file matches this pattern"), "{err}");
}

#[test]
fn bad_shard_and_embedding_shapes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (beir, c, q) = synthetic(dir.path(), 50, 10);
    let st = mine_cmd(dir.path(), &beir, &c, &q, &dir.path().join("o.parquet"))
        .args(["--shard", "2/2"])
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("0 ≤ i < n"));
    // Query embeddings passed as corpus embeddings: wrong row count, named.
    let st = mine_cmd(dir.path(), &beir, &q, &q, &dir.path().join("o.parquet"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(!st.status.success());
    assert!(
        err.contains("queries.npy") && err.contains("10 rows"),
        "{err}"
    );
}

/// The dataset path's spelling (`ds`, `./ds/`, absolute) does not change the run: the
/// second run reuses the output and removes the parts a kill after the final rename
/// left. An `--out` that is a directory or a foreign file is named as such, not as
/// "made with other options".
#[test]
fn path_spelling_reuses_the_output_and_bad_outs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (beir, c, q) = synthetic(dir.path(), 200, 20);
    let out = dir.path().join("mined.parquet");
    ok(&mut mine_cmd(dir.path(), &beir, &c, &q, &out));
    let bytes = std::fs::read(&out).unwrap();
    let orphan = out.with_file_name("mined.parquet.parts");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("part-000000.parquet"), b"left by a kill").unwrap();

    let rel = format!("./{}/", beir.strip_prefix(dir.path()).unwrap().display());
    let st = mine_cmd(dir.path(), Path::new(&rel), &c, &q, &out)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(
        st.status.success() && said.contains("already mined"),
        "{said}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    assert!(
        !orphan.exists(),
        "the orphaned parts directory is still there"
    );

    let as_dir = dir.path().join("a-directory");
    std::fs::create_dir(&as_dir).unwrap();
    let st = mine_cmd(dir.path(), &beir, &c, &q, &as_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        !st.status.success() && err.contains("is a directory"),
        "{err}"
    );

    let foreign = dir.path().join("notes.parquet");
    std::fs::write(&foreign, "not parquet").unwrap();
    let st = mine_cmd(dir.path(), &beir, &c, &q, &foreign)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        !st.status.success() && err.contains("is not a mined Parquet file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        b"not parquet",
        "the foreign file was touched"
    );
}

/// A full disk (here a 1 KiB file-size limit) while mining: the run fails naming the
/// file, leaves no half-written index, cache entry or output, and the same command
/// run again with room finishes with the bytes of a run that never failed.
#[test]
fn a_full_disk_leaves_nothing_half_written_and_the_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-beir");
    let mine = |mut cmd: Command, cache: &str, out: &Path| {
        cmd.args([
            "mine",
            "--quiet",
            "--split",
            "test",
            "--bm25-k",
            "3",
            "--dense-k",
            "3",
        ])
        .arg("--dataset")
        .arg(&fixture)
        .arg("--model")
        .arg(model_dir())
        .arg("--cache-dir")
        .arg(dir.path().join(cache))
        .arg("--out")
        .arg(out);
        cmd.output().unwrap()
    };
    let reference = dir.path().join("reference.parquet");
    let st = mine(sieve(), "cache", &reference);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let want = std::fs::read(&reference).unwrap();

    // An empty cache: the first cache write (an embedding entry) hits the limit.
    let out = dir.path().join("mined.parquet");
    let st = mine(sieve_with_file_limit(1), "fresh-cache", &out);
    let err = assert_out_of_space(&st, dir.path());
    assert!(err.contains("embeddings"), "{err}");
    assert!(!out.exists());
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
    // A warm cache: the output's first part hits it.
    let st = mine(sieve_with_file_limit(1), "cache", &out);
    let err = assert_out_of_space(&st, dir.path());
    assert!(err.contains("mined.parquet"), "{err}");
    assert!(
        err.contains("embeddings/"),
        "the hint sizes the cache: {err}"
    );
    assert!(!out.exists());
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());

    for cache in ["fresh-cache", "cache"] {
        let _ = std::fs::remove_file(&out);
        let st = mine(sieve(), cache, &out);
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            want,
            "after a full disk ({cache})"
        );
    }
}
