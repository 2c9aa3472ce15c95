//! Mutation fuzzing of every reader of user input, on stable Rust.
//!
//! Shared by `bench/fuzz/fuzz_readers.rs` (a million cases per reader, `bench/fuzz/run.sh`)
//! and `tests/fuzz_readers.rs` (a few thousand per reader in the suite, so that a reader
//! that starts panicking fails CI). cargo-fuzz needs a nightly toolchain this project does
//! not use; this harness instead mutates valid seed files (bit flips, interesting bytes,
//! each format's tokens, splices, truncations, repeated ranges), keeps any mutant whose
//! error reads differently from all earlier ones as a parent of later mutants (a cheap
//! stand-in for coverage feedback), writes each case to the file name the real reader
//! expects and calls that reader exactly as sieve does.
//!
//! What each case must satisfy: no panic; an error that names the file it is about
//! (where the reader has a file); and each target's own invariant on success (a `.npy`
//! whose data fills rows × dim, a judge score in [0, 1], a cache entry that is exactly
//! the one stored, a retry wait that stays bounded …).

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sieve_datasets::rng::SplitMix64;

/// What one reader is fed and how it is called.
pub struct Target {
    pub name: &'static str,
    /// Where the case is written, relative to the worker's directory (its name picks the
    /// format, as it does for users). Empty: the reader takes the bytes in memory.
    pub file: String,
    /// Written with gzip around the mutated bytes (90% of cases, so that mutations
    /// reach the parser; the rest are raw bytes the decompressor must refuse).
    pub gzip: bool,
    /// Whether every error must name the file.
    pub names_file: bool,
    pub seeds: Vec<Vec<u8>>,
    /// The format's tokens, spliced into mutants.
    pub dict: Vec<Vec<u8>>,
    /// Prepares a worker's directory (a model directory, a cache entry) once.
    pub setup: Option<SetupFn>,
    /// Calls the reader on the case at `dir/file` (or on `bytes`); `Err` is the reader's
    /// error message; a broken invariant is reported with `Violation`.
    pub run: RunFn,
}

pub type SetupFn = Arc<dyn Fn(&Path) + Send + Sync>;
pub type RunFn = Arc<dyn Fn(&Path, &[u8]) -> Outcome + Send + Sync>;

/// The result of one case.
pub enum Outcome {
    Ok,
    Err(String),
    /// The reader returned, but broke the target's invariant.
    Violation(String),
}

impl<E: std::fmt::Display> From<Result<(), E>> for Outcome {
    fn from(r: Result<(), E>) -> Self {
        match r {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Err(error_chain(&e)),
        }
    }
}

/// A reader's error as the harness records it: its message (sieve's errors quote
/// their cause in it, `{path}: {source}`).
pub fn error_chain(e: &dyn std::fmt::Display) -> String {
    e.to_string()
}

/// A failing case, saved for replay.
#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: &'static str,
    pub message: String,
    pub saved: PathBuf,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub name: String,
    pub cases: u64,
    pub ok: u64,
    pub errors: u64,
    /// Distinct error messages (digits and quoted text folded).
    pub distinct_errors: usize,
    pub findings: Vec<Finding>,
    pub seconds: f64,
    pub slowest_ms: f64,
}

impl Report {
    pub fn panics(&self) -> usize {
        self.findings.iter().filter(|f| f.kind == "panic").count()
    }
}

thread_local! {
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Set while this thread runs a case: only those panics are caught quietly.
    static IN_CASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Routes panic messages of fuzz cases into the case that raised them instead of
/// stderr; any other panic (a failing assertion) is printed as usual.
pub fn quiet_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_CASE.with(|c| c.get()) {
            return default(info);
        }
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".into()
        };
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
    }));
}

/// Folds what varies between otherwise identical errors, so that the count of distinct
/// messages tracks which checks fired, not which byte did.
fn signature(msg: &str, file: &str) -> String {
    let mut out = String::new();
    let msg = if file.is_empty() {
        msg.to_string()
    } else {
        msg.replace(file, "F")
    };
    let mut quoted = false;
    let mut last_digit = false;
    for c in msg.chars() {
        if c == '"' || c == '`' {
            quoted = !quoted;
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
            continue;
        }
        last_digit = false;
        out.push(c);
        if out.len() > 90 {
            break;
        }
    }
    out
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'\n', b'\r', b'\t',
    b' ', b'0', b'9', b'-', b'.', b'e', b'=', b'#', b'\'', b'(', b')',
];

/// Tokens every text format shares.
pub const COMMON_DICT: &[&[u8]] = &[
    b"null",
    b"true",
    b"false",
    b"NaN",
    b"inf",
    b"-inf",
    b"1e999",
    b"-1",
    b"-0",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"0.5",
    b"\"\"",
    b"\\u0000",
    b"\\ud800",
    b"\\uDFFF",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc3",
    b"\xf0\x9f\x98\x80",
    b"\r\n",
    b"\n\n",
    b"{}",
    b"[]",
];

fn pick<'a>(rng: &mut SplitMix64, v: &'a [Vec<u8>]) -> &'a [u8] {
    &v[rng.below(v.len())]
}

/// One to eight stacked mutations of `parent` (fewer more often).
pub fn mutate(rng: &mut SplitMix64, parent: &[u8], seeds: &[Vec<u8>], dict: &[Vec<u8>]) -> Vec<u8> {
    let mut b = parent.to_vec();
    let rounds = 1 + (rng.below(8) * rng.below(8)) / 8;
    for _ in 0..rounds {
        let len = b.len();
        let at = |rng: &mut SplitMix64| rng.below(len + 1);
        match rng.below(12) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = at(rng);
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    b.insert(i.min(b.len()), rng.next_u64() as u8);
                }
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                b.drain(i..i + n);
            }
            4 if len > 0 => {
                // Repeat a range: long lines, many rows, nested depth.
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let chunk = b[i..i + n].to_vec();
                let times = 1 + rng.below(16);
                let j = at(rng);
                for _ in 0..times {
                    b.splice(j..j, chunk.iter().copied());
                }
            }
            5 | 6 if !dict.is_empty() => {
                let tok = pick(rng, dict).to_vec();
                let i = at(rng);
                if rng.below(2) == 0 || len == 0 {
                    b.splice(i..i, tok);
                } else {
                    let end = (i + tok.len()).min(len);
                    b.splice(i..end, tok);
                }
            }
            7 if len > 0 => {
                b.truncate(rng.below(len));
            }
            8 if !seeds.is_empty() => {
                // Splice: a prefix of this input and a suffix of a seed.
                let other = pick(rng, seeds);
                let i = at(rng);
                let j = rng.below(other.len() + 1);
                b.truncate(i);
                b.extend_from_slice(&other[j..]);
            }
            9 if len > 0 => {
                // Replace a run of digits with an extreme number.
                let i = rng.below(len);
                if let Some(s) = (i..len).find(|&k| b[k].is_ascii_digit()) {
                    let e = (s..len).find(|&k| !b[k].is_ascii_digit()).unwrap_or(len);
                    let nums: [&[u8]; 6] = [
                        b"0",
                        b"4294967295",
                        b"4294967296",
                        b"18446744073709551615",
                        b"99999999999999999999",
                        b"9223372036854775808",
                    ];
                    b.splice(s..e, nums[rng.below(nums.len())].iter().copied());
                }
            }
            10 if len > 1 => {
                // Swap two lines (or two halves when there are none).
                let lines: Vec<usize> = (0..len).filter(|&k| b[k] == b'\n').collect();
                if lines.len() >= 2 {
                    let x = lines[rng.below(lines.len())];
                    let y = lines[rng.below(lines.len())];
                    let (x, y) = (x.min(y), x.max(y));
                    b[x + 1..=y].rotate_left((y - x) / 2);
                }
            }
            11 if len > 0 => {
                // Overwrite 4 or 8 bytes with a little-endian extreme (binary lengths).
                let vals: [u64; 5] = [0, 1, u32::MAX as u64, u64::MAX, 1 << 40];
                let v = vals[rng.below(vals.len())].to_le_bytes();
                let w = if rng.below(2) == 0 { 4 } else { 8 };
                let i = rng.below(len);
                for (k, byte) in v.iter().take(w).enumerate() {
                    if i + k < b.len() {
                        b[i + k] = *byte;
                    }
                }
            }
            _ => {}
        }
        if b.len() > 1 << 20 {
            b.truncate(1 << 20);
        }
    }
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

struct Worker {
    cases: u64,
    ok: u64,
    errors: u64,
    sigs: HashSet<String>,
    findings: Vec<Finding>,
    slowest: Duration,
}

/// Runs `cases` mutants of `target`'s seeds on `threads` threads, each in its own
/// directory under `work`. Failing cases are copied to `work/findings/`.
pub fn run(target: &Target, cases: u64, seed: u64, threads: usize, work: &Path) -> Report {
    let start = Instant::now();
    let findings_dir = work.join("findings");
    let threads = threads.max(1);
    let workers: Vec<Worker> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let findings_dir = findings_dir.clone();
                let n = cases / threads as u64 + u64::from((t as u64) < cases % threads as u64);
                s.spawn(move || {
                    let dir = work.join(format!("{}-{t}", target.name));
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir_all(&dir).expect("worker directory");
                    if let Some(setup) = &target.setup {
                        setup(&dir);
                    }
                    worker(
                        target,
                        n,
                        seed ^ (t as u64).wrapping_mul(0x9E37_79B9),
                        &dir,
                        &findings_dir,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fuzz worker"))
            .collect()
    });
    let mut report = Report {
        name: target.name.to_string(),
        ..Default::default()
    };
    let mut sigs = HashSet::new();
    let mut slowest = Duration::ZERO;
    for w in workers {
        report.cases += w.cases;
        report.ok += w.ok;
        report.errors += w.errors;
        sigs.extend(w.sigs);
        report.findings.extend(w.findings);
        slowest = slowest.max(w.slowest);
    }
    report.distinct_errors = sigs.len();
    report.seconds = start.elapsed().as_secs_f64();
    report.slowest_ms = slowest.as_secs_f64() * 1e3;
    report
}

fn worker(target: &Target, n: u64, seed: u64, dir: &Path, findings_dir: &Path) -> Worker {
    let mut rng = SplitMix64(seed);
    let path = dir.join(&target.file);
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut w = Worker {
        cases: 0,
        ok: 0,
        errors: 0,
        sigs: HashSet::new(),
        findings: Vec::new(),
        slowest: Duration::ZERO,
    };
    for i in 0..n {
        // The seeds themselves first, then mutants of a seed or of a kept mutant.
        let case = if (i as usize) < target.seeds.len() {
            target.seeds[i as usize].clone()
        } else {
            let parent = if pool.is_empty() || rng.below(2) == 0 {
                pick(&mut rng, &target.seeds).to_vec()
            } else {
                pick(&mut rng, &pool).to_vec()
            };
            mutate(&mut rng, &parent, &target.seeds, &target.dict)
        };
        let on_disk = if target.gzip && rng.below(10) != 0 {
            gzip(&case)
        } else {
            case.clone()
        };
        if !target.file.is_empty() {
            std::fs::write(&path, &on_disk).expect("write a fuzz case");
        }
        let t0 = Instant::now();
        IN_CASE.with(|c| c.set(true));
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&path, &case)));
        IN_CASE.with(|c| c.set(false));
        let took = t0.elapsed();
        w.slowest = w.slowest.max(took);
        w.cases += 1;
        let finding = |kind: &'static str, message: String, w: &mut Worker| {
            if w.findings.len() >= 20 {
                return;
            }
            let _ = std::fs::create_dir_all(findings_dir);
            let saved = findings_dir.join(format!(
                "{}-{kind}-{}-{}",
                target.name,
                seed,
                w.findings.len()
            ));
            let _ = std::fs::write(&saved, &on_disk);
            w.findings.push(Finding {
                kind,
                message,
                saved,
            });
        };
        match result {
            Err(_) => {
                let msg = PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| "panic".into());
                finding("panic", msg, &mut w);
            }
            Ok(Outcome::Violation(msg)) => finding("violation", msg, &mut w),
            Ok(Outcome::Ok) => {
                w.ok += 1;
                if w.sigs.insert("<ok>".into()) && pool.len() < 512 {
                    pool.push(case.clone());
                }
            }
            Ok(Outcome::Err(msg)) => {
                w.errors += 1;
                if msg.trim().is_empty() {
                    finding("empty error", msg, &mut w);
                } else if target.names_file && !msg.contains(&file_name) {
                    finding("error without the file", msg, &mut w);
                } else if w.sigs.insert(signature(&msg, &file_name)) && pool.len() < 512 {
                    pool.push(case.clone());
                }
            }
        }
    }
    w
}

// ---------------------------------------------------------------------------------
// The targets.

fn lines(v: &[&str]) -> Vec<u8> {
    let mut s = v.join("\n");
    s.push('\n');
    s.into_bytes()
}

fn dict(extra: &[&[u8]]) -> Vec<Vec<u8>> {
    COMMON_DICT
        .iter()
        .chain(extra.iter())
        .map(|t| t.to_vec())
        .collect()
}

fn file_target(
    name: &'static str,
    file: &str,
    seeds: Vec<Vec<u8>>,
    extra: &[&[u8]],
    run: impl Fn(&Path, &[u8]) -> Outcome + Send + Sync + 'static,
) -> Target {
    Target {
        name,
        file: file.into(),
        gzip: false,
        names_file: true,
        seeds,
        dict: dict(extra),
        setup: None,
        run: Arc::new(run),
    }
}

fn corpus_seeds() -> Vec<Vec<u8>> {
    vec![
        lines(&[
            r#"{"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of heart attack."}"#,
            r#"{"_id": "d2", "title": "", "text": "Vitamin D did not prevent fractures."}"#,
            r#"{"_id": 3, "text": "Numeric ids are read as text.", "metadata": {"url": "x"}}"#,
        ]),
        lines(&[
            r#"{"_id":"a","text":"x"}"#,
            "",
            r#"{"_id":"a","text":"duplicate id"}"#,
        ]),
        br#"{"_id": "\u00e9\ud83d\ude00", "title": null, "text": "unicode \n escapes \t"}"#
            .to_vec(),
    ]
}

fn pair_jsonl_seeds() -> Vec<Vec<u8>> {
    vec![
        lines(&[
            r#"{"query": "what is aspirin", "positive": "a drug", "negative": "a fruit"}"#,
            r#"{"query": "q2", "positive": "p2", "negatives": ["n1", "n2"]}"#,
            r#"{"anchor": "q3", "positive": "p3", "negative_1": "n1", "negative_2": "n2"}"#,
        ]),
        lines(&[r#"{"query":"q","pos":["p1","p2"],"neg":[]}"#]),
        lines(&[
            r#"{"question": "q", "answer": "a"}"#,
            r#"{"question": "q", "answer": "b"}"#,
        ]),
    ]
}

fn pair_parquet_seeds(dir: &Path) -> Vec<Vec<u8>> {
    use arrow::array::{ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    let mut seeds = Vec::new();
    let p = dir.join("seed.parquet");
    let pairs: Vec<sieve_datasets::Pair> = (0..4)
        .map(|i| sieve_datasets::Pair {
            query: format!("query {i}"),
            positive: format!("positive {i}"),
            negatives: (0..i).map(|k| format!("negative {k}")).collect(),
        })
        .collect();
    sieve_datasets::write_pairs_parquet(&p, &pairs).expect("seed pairs");
    seeds.push(std::fs::read(&p).expect("seed"));
    // Columns the reader must refuse or adapt to: an integer query, a list of negatives.
    let mut negs = ListBuilder::new(StringBuilder::new());
    negs.values().append_value("n1");
    negs.append(true);
    negs.append(false);
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("query", Arc::new(StringArray::from(vec![Some("q1"), None]))),
        ("positive", Arc::new(StringArray::from(vec!["p1", "p2"]))),
        ("negatives", Arc::new(negs.finish())),
    ];
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), cols.into_iter().map(|c| c.1).collect())
        .expect("batch");
    write_batch(&p, &batch);
    seeds.push(std::fs::read(&p).expect("seed"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("query", DataType::Int64, false),
        Field::new("positive", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
    )
    .expect("batch");
    write_batch(&p, &batch);
    seeds.push(std::fs::read(&p).expect("seed"));
    let _ = std::fs::remove_file(&p);
    seeds
}

fn write_batch(p: &Path, batch: &arrow::record_batch::RecordBatch) {
    let f = std::fs::File::create(p).expect("seed file");
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

fn mined_seeds(dir: &Path) -> Vec<Vec<u8>> {
    use sieve_datasets::mined::{write_mined, Candidate, Dropped, MinedRow, PositiveHit};
    let p = dir.join("seed.parquet");
    let cand = |i: u32, label: Option<&str>| Candidate {
        doc_id: format!("d{i}"),
        rank: i,
        bm25: 3.5 - i as f32,
        dense: 0.8 - 0.1 * i as f32,
        source: ["bm25", "dense", "both"][i as usize % 3].into(),
        bm25_rank: Some(i),
        dense_rank: i.is_multiple_of(2).then_some(i),
        label: label.map(str::to_string),
        p_relevant: label.map(|_| 0.25 * i as f32),
    };
    let rows = |labeled: bool| -> Vec<MinedRow> {
        (0..3)
            .map(|q| MinedRow {
                query_id: format!("q{q}"),
                query: format!("query text {q}"),
                positives: vec![format!("d{}", q + 10)],
                candidates: (0..3)
                    .map(|i| {
                        cand(
                            i,
                            labeled.then_some(
                                ["positive", "negative", "error", "suspicious"][i as usize],
                            ),
                        )
                    })
                    .collect(),
                positive_hits: vec![PositiveHit {
                    doc_id: format!("d{}", q + 10),
                    dense: 0.9,
                    bm25_rank: Some(1),
                    dense_rank: None,
                    fused_rank: Some(2),
                }],
                dropped: vec![Dropped {
                    doc_id: "d9".into(),
                    rank: 4,
                    dense: 0.99,
                    rule: "margin".into(),
                }],
            })
            .collect()
    };
    let mut seeds = Vec::new();
    for labeled in [false, true] {
        let mut meta = sieve_datasets::parquet_io::Metadata::new();
        meta.insert("sieve.corpus".into(), "corpus.jsonl".into());
        meta.insert("sieve.corpus_hash".into(), "abc".into());
        meta.insert("sieve.bm25_k".into(), "3".into());
        if labeled {
            meta.insert("sieve.judge_model".into(), "qwen".into());
        }
        write_mined(&p, &rows(labeled), &meta).expect("seed mined");
        seeds.push(std::fs::read(&p).expect("seed"));
    }
    let _ = std::fs::remove_file(&p);
    seeds
}

fn npy_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let p = dir.join("seed.npy");
    let mut seeds = Vec::new();
    for (rows, dim) in [(3usize, 4usize), (1, 1), (0, 8), (2, 3)] {
        let data: Vec<f32> = (0..rows * dim).map(|i| i as f32 * 0.5 - 1.0).collect();
        sieve_datasets::npy::write_npy(&p, &data, rows, dim).expect("seed npy");
        seeds.push(std::fs::read(&p).expect("seed"));
    }
    // Headers numpy writes that sieve refuses: 1-D, float64, Fortran order, version 2.
    let header = |ver: u8, dict: &str, payload: usize| -> Vec<u8> {
        let mut h = dict.to_string();
        let pre = if ver == 1 { 10 } else { 12 };
        while !(pre + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY".to_vec();
        b.push(ver);
        b.push(0);
        if ver == 1 {
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            b.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        b.extend_from_slice(h.as_bytes());
        b.extend(std::iter::repeat_n(0u8, payload));
        b
    };
    seeds.push(header(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
        20,
    ));
    seeds.push(header(
        1,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
        32,
    ));
    seeds.push(header(
        1,
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
        16,
    ));
    seeds.push(header(
        2,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
        16,
    ));
    seeds.push(header(
        3,
        "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2, 2), }",
        16,
    ));
    let _ = std::fs::remove_file(&p);
    seeds
}

/// A model directory as small as a BERT gets (vocabulary 16, width 8, 2 layers), so
/// that a million loads take minutes: every config file is read as for a real model.
pub fn tiny_model(dir: &Path) {
    use candle_core::{DType, Device, Tensor};
    use sieve_encoder::config::BertConfig;
    let cfg = BertConfig {
        vocab_size: 16,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 12,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        ..Default::default()
    };
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("model dir");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&cfg).expect("config"),
    )
    .expect("config.json");
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    sieve_encoder::model::BertModel::load(vb, &cfg).expect("tiny model");
    {
        let data = varmap.data().lock().expect("varmap");
        for var in data.values() {
            let r = Tensor::randn(0f32, 0.2, var.shape(), &Device::Cpu).expect("randn");
            var.set(&r).expect("set");
        }
    }
    varmap
        .save(dir.join("model.safetensors"))
        .expect("model.safetensors");
    let vocab: Vec<&str> = vec![
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog",
        "##s", "is", "what", "?",
    ];
    let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), serde_json::Value::from(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                        "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab_json}
    });
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec(&tokenizer).expect("tokenizer"),
    )
    .expect("tokenizer.json");
    std::fs::write(
        dir.join("modules.json"),
        br#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
    )
    .expect("modules.json");
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        br#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": false,
 "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false}"#,
    )
    .expect("pooling");
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        br#"{"max_seq_length": 12, "do_lower_case": false}"#,
    )
    .expect("sentence_bert_config.json");
}

fn model_target(name: &'static str, file: &'static str) -> Target {
    let base = std::env::temp_dir().join(format!("sieve-fuzz-model-seed-{}", std::process::id()));
    tiny_model(&base);
    let seed = std::fs::read(base.join(file)).expect("model seed");
    let _ = std::fs::remove_dir_all(&base);
    let mut t = file_target(
        name,
        &format!("model/{file}"),
        vec![seed],
        &[
            b"\"hidden_size\"",
            b"\"num_hidden_layers\"",
            b"\"num_attention_heads\"",
            b"\"max_position_embeddings\"",
            b"\"layer_norm_eps\"",
            b"\"hidden_act\"",
            b"\"vocab_size\"",
            b"\"pooling_mode\"",
            b"\"lasttoken\"",
            b"\"max_seq_length\"",
            b"\"path\"",
            b"\"../../\"",
            b"\"/\"",
            b"1e-300",
        ],
        |path, _| {
            let dir = path.parent().and_then(|p| {
                if p.ends_with("1_Pooling") {
                    p.parent()
                } else {
                    Some(p)
                }
            });
            let Some(dir) = dir else {
                return Outcome::Violation("no model directory".into());
            };
            let enc = match sieve_encoder::Encoder::load_dir(dir, &Default::default()) {
                Ok(e) => e,
                Err(e) => return Outcome::Err(error_chain(&e)),
            };
            match enc.encode(&["the cat sat on the mat", "what ?"], 2, &|_| {}) {
                Ok(emb) => {
                    if emb.data.iter().any(|v| !v.is_finite()) {
                        Outcome::Violation(format!(
                            "the model loaded but embeds to non-finite values (dim {})",
                            emb.dim
                        ))
                    } else {
                        Outcome::Ok
                    }
                }
                Err(e) => Outcome::Err(error_chain(&e)),
            }
        },
    );
    t.setup = Some(Arc::new(|dir: &Path| tiny_model(&dir.join("model"))));
    // A config error may name the directory or the file: either tells the user where.
    t.names_file = false;
    t
}

fn chat_body(content: &str, logprobs: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"c1","object":"chat.completion","model":"qwen","choices":[{{"index":0,"finish_reason":"length","message":{{"role":"assistant","content":{content}}},"logprobs":{logprobs}}}],"usage":{{"prompt_tokens":312,"completion_tokens":1,"total_tokens":313}}}}"#
    )
    .into_bytes()
}

/// Every reader of user input, as `sieve` calls it.
pub fn targets(seed_dir: &Path) -> Vec<Target> {
    use sieve_datasets::{read_corpus, read_pairs, read_qrels, read_queries, ValidationReport};
    std::fs::create_dir_all(seed_dir).expect("seed dir");
    let mut t = Vec::new();
    let beir_dict: &[&[u8]] = &[
        b"\"_id\"",
        b"\"title\"",
        b"\"text\"",
        b"\"metadata\"",
        b"{\"_id\":\"x\",\"text\":\"y\"}\n",
    ];
    // The same reader plain and gzipped (the gzip target compresses the mutants).
    for (name, file, gzip) in [
        ("beir-corpus", "corpus.jsonl", false),
        ("beir-corpus-gz", "corpus.jsonl.gz", true),
    ] {
        let mut corpus = file_target(name, file, corpus_seeds(), beir_dict, |p, _| {
            read_corpus(p, &mut ValidationReport::default())
                .map(drop)
                .into()
        });
        corpus.gzip = gzip;
        t.push(corpus);
    }
    t.push(file_target(
        "beir-queries",
        "queries.jsonl",
        vec![
            lines(&[
                r#"{"_id": "q1", "text": "Does aspirin prevent heart attacks?"}"#,
                r#"{"_id": "q2", "text": "", "metadata": {}}"#,
            ]),
            lines(&[
                r#"{"_id": 7, "text": "numeric id"}"#,
                r#"{"_id": "q1", "text": "duplicate"}"#,
            ]),
        ],
        beir_dict,
        |p, _| {
            read_queries(p, &mut ValidationReport::default())
                .map(drop)
                .into()
        },
    ));
    t.push(file_target(
        "beir-qrels",
        "test.tsv",
        vec![
            b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t2\nq2\td5\t0\n".to_vec(),
            b"q1\td1\t1\nq1\td1\t1\r\n".to_vec(),
            b"query-id\tcorpus-id\tscore\n".to_vec(),
        ],
        &[
            b"\t",
            b"query-id",
            b"corpus-id",
            b"score",
            b"1.5",
            b"-1",
            b"\tQ0\t",
        ],
        |p, _| {
            read_qrels(p, &mut ValidationReport::default())
                .map(drop)
                .into()
        },
    ));
    let pair_dict: &[&[u8]] = &[
        b"\"query\"",
        b"\"positive\"",
        b"\"negative\"",
        b"\"negatives\"",
        b"\"negative_1\"",
        b"\"anchor\"",
        b"\"pos\"",
        b"\"neg\"",
        b"[\"a\", \"b\"]",
        b"[[]]",
    ];
    t.push(file_target(
        "pairs-jsonl",
        "pairs.jsonl",
        pair_jsonl_seeds(),
        pair_dict,
        |p, _| read_pairs(p, Default::default()).map(drop).into(),
    ));
    t.push(file_target(
        "pairs-tsv",
        "pairs.tsv",
        vec![
            b"query\tpositive\tnegative\nwhat is aspirin\ta drug\ta fruit\nq2\tp2\t\n".to_vec(),
            b"anchor\tpositive\tnegative_1\tnegative_2\nq\tp\tn1\tn2\n".to_vec(),
            b"query\tpositive\n".to_vec(),
        ],
        &[
            b"\t",
            b"query",
            b"positive",
            b"negative",
            b"negative_10",
            b"anchor",
        ],
        |p, _| read_pairs(p, Default::default()).map(drop).into(),
    ));
    let parquet_dict: &[&[u8]] = &[
        b"PAR1",
        b"query",
        b"positive",
        b"candidates",
        b"sieve.",
        b"label",
        b"doc_id",
    ];
    t.push(file_target(
        "pairs-parquet",
        "pairs.parquet",
        pair_parquet_seeds(seed_dir),
        parquet_dict,
        |p, _| read_pairs(p, Default::default()).map(drop).into(),
    ));
    t.push(file_target(
        "mined-parquet",
        "mined.parquet",
        mined_seeds(seed_dir),
        parquet_dict,
        // Scores are passed through as read: the trainer's mask, not the reader, is what
        // must not trust a NaN, so a read file has no invariant beyond being read.
        |p, _| sieve_datasets::mined::read_mined(p).map(drop).into(),
    ));
    t.push(file_target(
        "npy",
        "emb.npy",
        npy_seeds(seed_dir),
        &[
            b"\x93NUMPY",
            b"'descr'",
            b"'<f4'",
            b"'<f8'",
            b"'|u1'",
            b"'fortran_order'",
            b"True",
            b"'shape'",
            b"(1, 2, 3)",
            b"(0,)",
            b"()",
        ],
        |p, _| match sieve_datasets::npy::read_npy(p) {
            Ok((rows, dim, data)) => {
                if rows.checked_mul(dim) != Some(data.len()) {
                    Outcome::Violation(format!("{rows} × {dim} rows but {} values", data.len()))
                } else {
                    Outcome::Ok
                }
            }
            Err(e) => Outcome::Err(error_chain(&e)),
        },
    ));
    let toml_seeds: Vec<Vec<u8>> = [
        "scifact-quick.toml",
        "scifact-exact.toml",
        "medquad-exact.toml",
    ]
    .iter()
    .filter_map(|f| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(f),
        )
        .ok()
    })
    .collect();
    assert_eq!(
        toml_seeds.len(),
        3,
        "examples/*.toml: the pipeline seeds are missing"
    );
    let mut toml_target = file_target(
        "pipeline-toml",
        "sieve.toml",
        toml_seeds,
        &[
            b"[mine]\n",
            b"[judge]\n",
            b"[train]\n",
            b"[eval]\n",
            b"[judge.calibrate]\n",
            b" = ",
            b"\"\"\"",
            b"'''",
            b"[[x]]",
            b"inf",
            b"nan",
            b"batch_size = 0\n",
            b"lr = -1\n",
        ],
        |p, _| {
            let cfg = match sieve_pipeline::config::PipelineConfig::load(p) {
                Ok(c) => c,
                Err(e) if !e.to_string().contains("sieve.toml") => {
                    return Outcome::Violation(format!("an error without the file: {e}"))
                }
                Err(e) => return Outcome::Err(error_chain(&e)),
            };
            // The checks `validate` makes before any stage, except the ones that touch
            // the file system (a fuzzed work_dir could name any directory).
            let stage = || -> Result<(), String> {
                cfg.mine.options(1, 1, None).map_err(|e| e.to_string())?;
                if let Some(j) = &cfg.judge {
                    j.settings.validate().map_err(|e| e.to_string())?;
                    if let Some(th) = j.threshold {
                        sieve_judge::settings::check_threshold(th).map_err(|e| e.to_string())?;
                    }
                    if let Some(c) = &j.calibrate {
                        c.settings.validate().map_err(|e| e.to_string())?;
                    }
                }
                cfg.train.validate().map_err(|e| e.to_string())?;
                cfg.eval.validate().map_err(|e| e.to_string())?;
                Ok(())
            };
            match stage() {
                Ok(()) => Outcome::Ok,
                Err(e) => Outcome::Err(e),
            }
        },
    );
    // Parse errors name the file; a stage's value errors name its setting.
    toml_target.names_file = false;
    t.push(toml_target);
    t.push(file_target(
        "judge-template",
        "template.toml",
        sieve_judge::prompt::BUILT_IN_TEMPLATES
            .iter()
            .map(|(_, text)| text.as_bytes().to_vec())
            .collect(),
        &[
            b"[system]\n",
            b"[user]\n",
            b"[options]\n",
            b"{query}",
            b"{document}",
            b"{",
            b"}",
            b"datamark = true\n",
        ],
        |p, _| sieve_judge::prompt::Template::load(p).map(drop).into(),
    ));
    t.push(model_target("model-config", "config.json"));
    t.push(model_target("model-pooling", "1_Pooling/config.json"));
    t.push(model_target("model-modules", "modules.json"));
    t.push(model_target("model-st-config", "sentence_bert_config.json"));
    let logprobs = r#"{"content":[{"token":"Yes","logprob":-0.3,"top_logprobs":[{"token":"Yes","logprob":-0.3},{"token":"No","logprob":-1.4},{"token":" yes","logprob":-5.0}]}]}"#;
    t.push(Target {
        name: "server-response",
        file: String::new(),
        gzip: false,
        names_file: false,
        seeds: vec![
            chat_body("\"Yes\"", logprobs),
            chat_body("\"No\"", "null"),
            chat_body("\"{\\\"relevant\\\": true}\"", "null"),
            chat_body("null", r#"{"content":[]}"#),
            br#"{"choices":[]}"#.to_vec(),
        ],
        dict: dict(&[
            b"\"logprob\"",
            b"\"top_logprobs\"",
            b"\"token\"",
            b"\"content\"",
            b"\"choices\"",
            b"-1e999",
            b"1e999",
            b"\"Yes\"",
            b"\"no\"",
            b"\"relevant\"",
        ]),
        setup: None,
        run: Arc::new(|_, bytes| {
            let body = String::from_utf8_lossy(bytes);
            // Refused: neither the logprob/text reading nor the JSON-schema one took it.
            let mut refused = None;
            let mut read = false;
            for json in [false, true] {
                match sieve_judge::score::parse_response(&body, json) {
                    Ok(v) => {
                        if !(0.0..=1.0).contains(&v.p_relevant) {
                            return Outcome::Violation(format!(
                                "p_relevant {} outside [0, 1]",
                                v.p_relevant
                            ));
                        }
                        read = true;
                    }
                    Err(e) => refused = Some(e.0),
                }
            }
            match refused {
                Some(e) if !read => Outcome::Err(e),
                _ => Outcome::Ok,
            }
        }),
    });
    t.push(Target {
        name: "retry-after",
        file: String::new(),
        gzip: false,
        names_file: false,
        seeds: vec![
            b"120".to_vec(),
            b"Wed, 21 Oct 2026 07:28:00 GMT".to_vec(),
            b"0".to_vec(),
            b"Sun, 06 Nov 1994 08:49:37 GMT".to_vec(),
        ],
        dict: dict(&[b"GMT", b"Mon, ", b"Dec", b"9999"]),
        setup: None,
        run: Arc::new(|_, bytes| {
            let value = String::from_utf8_lossy(bytes);
            let policy = sieve_judge::retry::RetryPolicy::default();
            let ra = sieve_judge::retry::parse_retry_after(&value, SystemTime::now());
            let wait = policy.delay(3, ra, 0.5);
            let bound = sieve_judge::retry::MAX_RETRY_AFTER.max(policy.cap);
            if wait > bound {
                return Outcome::Violation(format!(
                    "a Retry-After of {value:?} waits {wait:?}, over {bound:?}"
                ));
            }
            match ra {
                Some(_) => Outcome::Ok,
                // Not seconds and not a date: ignored, the backoff alone applies.
                None => Outcome::Err("not a Retry-After value".into()),
            }
        }),
    });
    let entry = |k: &str, p: f32| sieve_judge::cache::Entry {
        key: k.into(),
        p_relevant: p,
        method: "logprobs".into(),
        prompt_tokens: 300,
        completion_tokens: 1,
        truncated: false,
    };
    let cache_seed = {
        let p = seed_dir.join("verdicts.log");
        let _ = std::fs::remove_file(&p);
        let mut c = sieve_judge::cache::VerdictCache::open(&p).expect("seed cache");
        c.put(entry("k1", 0.25)).expect("put");
        c.put(entry("k2", 0.75)).expect("put");
        c.put(entry("k1", 0.5)).expect("put");
        c.sync().expect("sync");
        drop(c);
        let b = std::fs::read(&p).expect("seed cache");
        let _ = std::fs::remove_file(&p);
        b
    };
    let mut verdicts = file_target(
        "verdict-cache",
        "verdicts.log",
        vec![cache_seed],
        &[
            b"\"k\"",
            b"\"p\"",
            b"\"m\"",
            b"\"logprobs\"",
            b"\"text\"",
            b"\t",
        ],
        |p, _| match sieve_judge::cache::VerdictCache::open(p) {
            Ok(c) => {
                for k in ["k1", "k2"] {
                    if let Some(e) = c.get(k) {
                        if !(0.0..=1.0).contains(&e.p_relevant) {
                            return Outcome::Violation(format!(
                                "cached p_relevant {}",
                                e.p_relevant
                            ));
                        }
                    }
                }
                // Damaged lines are skipped, not errors: count a file that lost a
                // verdict as refused so that the report shows how often that happens.
                match c.len() {
                    2 => Outcome::Ok,
                    n => Outcome::Err(format!("{n} of 2 verdicts kept")),
                }
            }
            Err(e) => Outcome::Err(error_chain(&e)),
        },
    );
    // Damaged lines are skipped with a warning, not refused: the outcomes above are
    // this harness's own words.
    verdicts.names_file = false;
    t.push(verdicts);
    // The embedding cache: a damaged entry must read as a miss, never as other numbers.
    const FP: &str = "0123456789abcdef0123456789abcdef";
    const TEXTS: [&str; 3] = ["a", "b", "c"];
    let stored: Vec<f32> = (0..6).map(|i| i as f32 / 7.0).collect();
    let emb_seed = {
        let cache = sieve_encoder::cache::EmbeddingCache::new(seed_dir);
        cache.put(FP, &TEXTS, 2, &stored).expect("seed entry");
        let file = seed_dir
            .join("embeddings")
            .join(&FP[..16])
            .join(format!("{}.emb", sieve_encoder::cache::texts_hash(&TEXTS)));
        std::fs::read(&file).expect("seed entry")
    };
    let rel = format!(
        "embeddings/{}/{}.emb",
        &FP[..16],
        sieve_encoder::cache::texts_hash(&TEXTS)
    );
    let stored2 = stored.clone();
    let mut emb = file_target(
        "embedding-cache",
        &rel,
        vec![emb_seed.clone()],
        &[b"SIEVEEM2", b"SIEVEEM1"],
        move |p, bytes| {
            let root = p.ancestors().nth(3).unwrap_or(Path::new("."));
            let cache = sieve_encoder::cache::EmbeddingCache::new(root);
            match cache.get(FP, &TEXTS, 2) {
                Some(v) if v[..] != stored2[..] && bytes != emb_seed.as_slice() => {
                    Outcome::Violation("a damaged entry was read as embeddings".into())
                }
                Some(_) => Outcome::Ok,
                None => Outcome::Err("a miss".into()),
            }
        },
    );
    emb.names_file = false;
    emb.setup = Some(Arc::new({
        let rel = rel.clone();
        move |dir: &Path| {
            if let Some(parent) = dir.join(&rel).parent() {
                std::fs::create_dir_all(parent).expect("cache dir");
            }
        }
    }));
    t.push(emb);
    t.push(file_target(
        "calibration-pairs",
        "judged_pairs.jsonl",
        vec![lines(&[
            r#"{"query": "what causes gout", "document": "Gout is caused by uric acid.", "grade": 3}"#,
            r#"{"query": "q", "document": "d", "grade": 0}"#,
        ])],
        &[b"\"query\"", b"\"document\"", b"\"grade\"", b"-9223372036854775809", b"2.5"],
        |p, _| sieve_judge::calibrate::read_graded(p, "query", "document", "grade").map(drop).into(),
    ));
    t
}
