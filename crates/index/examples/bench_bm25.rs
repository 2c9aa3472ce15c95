//! BM25 throughput of [`Bm25Index`]: index build time, then top-K retrieval
//! for a whole query set, timed over several repeats (the Rust half of
//! `bench/bm25/run.sh`; the peer is bm25s, `bench/bm25/bm25s_bench.py`).
//!
//! ```text
//! cargo run --release -p sieve-index --example bench_bm25 -- \
//!     CORPUS_JSONL[.gz] QUERIES_JSONL[.gz] [K=100] [REPEATS=3] \
//!     [--index-dir DIR] [--threads 0,1] [--query-repeat 1,10] [--dump-run FILE] [--prototype]
//! ```
//!
//! * Documents are `(title + " " + text).trim()`, queries their text, both
//!   read with `sieve_datasets` (first of duplicate ids kept), as `sieve eval`
//!   does. File reading is not timed; the build (analysis + tantivy indexing +
//!   opening the searcher) is, and so is query analysis during retrieval.
//! * `--threads`: comma-separated rayon pool sizes to time retrieval with;
//!   `0` means rayon's default (all cores, or `RAYON_NUM_THREADS`).
//! * `--query-repeat R[,R...]`: the query set is repeated R times (for longer,
//!   more stable timings on small query sets); each R is timed separately.
//! * `--dump-run FILE`: writes the top-K of every (distinct) query as TSV,
//!   `query_id \t doc_id \t rank \t score`, rank from 1.
//! * `--index-dir DIR`: builds a persisted index there (DIR must not already
//!   hold one) instead of in RAM.
//! * `--prototype`: also times [`ImpactIndex`], a sketch of bm25s's layout in
//!   Rust (per-(term, doc) scores precomputed into flat arrays at build time,
//!   a query is a sparse row sum into a dense accumulator plus a linear-time
//!   top-k selection), using sieve's analyser, and prints its top-10 agreement
//!   with [`Bm25Index`]. It is a measurement aid for the profile notes, not a
//!   retriever the crate offers.
//!
//! Prints one JSON line per measurement on stdout; progress goes to stderr.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use rayon::prelude::*;
use sieve_datasets::{read_corpus, read_queries, Document, ValidationReport};
use sieve_index::{Bm25Index, Hit, Retriever, DEFAULT_BM25_PARAMS};

const USAGE: &str = "usage: bench_bm25 CORPUS_JSONL[.gz] QUERIES_JSONL[.gz] [K=100] [REPEATS=3] \
[--index-dir DIR] [--threads 0,1] [--query-repeat 1,10] [--dump-run FILE] [--prototype]";

/// Queries retrieved (untimed) before each timed configuration, so that the
/// first timed repeat does not pay for page faults and cold caches alone.
const WARMUP_QUERIES: usize = 256;

struct Args {
    corpus: PathBuf,
    queries: PathBuf,
    k: usize,
    repeats: usize,
    index_dir: Option<PathBuf>,
    threads: Vec<usize>,
    query_repeats: Vec<usize>,
    dump_run: Option<PathBuf>,
    prototype: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut index_dir = None;
    let mut threads = vec![0, 1];
    let mut query_repeats = vec![1];
    let mut dump_run = None;
    let mut prototype = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--index-dir" => index_dir = Some(PathBuf::from(value("--index-dir")?)),
            "--dump-run" => dump_run = Some(PathBuf::from(value("--dump-run")?)),
            "--prototype" => prototype = true,
            "--query-repeat" => {
                query_repeats = value("--query-repeat")?
                    .split(',')
                    .map(|r| parse_count("--query-repeat", r.trim()))
                    .collect::<Result<_, _>>()?;
            }
            "--threads" => {
                threads = value("--threads")?
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--threads: `{t}`: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => positional.push(arg),
        }
    }
    if !(2..=4).contains(&positional.len()) {
        return Err("expected 2 to 4 positional arguments".to_owned());
    }
    let k = match positional.get(2) {
        Some(s) => parse_count("K", s)?,
        None => 100,
    };
    let repeats = match positional.get(3) {
        Some(s) => parse_count("REPEATS", s)?,
        None => 3,
    };
    Ok(Args {
        corpus: PathBuf::from(&positional[0]),
        queries: PathBuf::from(&positional[1]),
        k,
        repeats,
        index_dir,
        threads,
        query_repeats,
        dump_run,
        prototype,
    })
}

/// A positive integer.
fn parse_count(name: &str, s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(format!("{name} must be positive")),
        Err(e) => Err(format!("{name}: `{s}`: {e}")),
    }
}

/// A JSON string literal (paths are the only free text printed).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process in MiB (Linux; 0 elsewhere).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn write_run(
    path: &Path,
    query_ids: &[&str],
    doc_ids: &[&str],
    results: &[Vec<Hit>],
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (qid, hits) in query_ids.iter().zip(results) {
        for (rank, hit) in hits.iter().enumerate() {
            writeln!(
                out,
                "{qid}\t{}\t{}\t{}",
                doc_ids[hit.doc as usize],
                rank + 1,
                hit.score
            )?;
        }
    }
    out.flush()
}

/// Times `args.repeats` retrievals of `texts` in a rayon pool of `threads`
/// threads (0: rayon's default) and prints the median queries/s.
fn time_retrieval(
    tool: &str,
    index: &(dyn Retriever + Sync),
    texts: &[&str],
    repeat: usize,
    threads: usize,
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let used = pool.current_num_threads();
    let warmup = &texts[..texts.len().min(WARMUP_QUERIES)];
    let mut qps = Vec::with_capacity(args.repeats);
    let mut hits_total = 0usize;
    pool.install(|| -> Result<(), sieve_index::Error> {
        index.retrieve(warmup, args.k)?;
        for _ in 0..args.repeats {
            let start = Instant::now();
            let results = index.retrieve(texts, args.k)?;
            let secs = start.elapsed().as_secs_f64();
            hits_total = results.iter().map(Vec::len).sum();
            qps.push(texts.len() as f64 / secs);
        }
        Ok(())
    })?;
    let runs = qps
        .iter()
        .map(|q| format!("{q:.1}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"tool\":\"{tool}\",\"event\":\"retrieve\",\"threads\":{used},\"queries\":{},\
         \"query_repeat\":{repeat},\"k\":{},\"repeats\":{},\"qps_median\":{:.1},\
         \"qps_runs\":[{runs}],\"hits\":{hits_total},\"peak_rss_mib\":{:.1}}}",
        texts.len(),
        args.k,
        args.repeats,
        median(&qps),
        peak_rss_mib(),
    );
    Ok(())
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut report = ValidationReport::default();
    let corpus = read_corpus(&args.corpus, &mut report)?;
    let queries = read_queries(&args.queries, &mut report)?;
    eprintln!(
        "{} documents, {} queries (x{:?}), k={}, {} repeats",
        corpus.len(),
        queries.len(),
        args.query_repeats,
        args.k,
        args.repeats
    );

    let start = Instant::now();
    let index = Bm25Index::build(&corpus, args.index_dir.as_deref())?;
    let build_s = start.elapsed().as_secs_f64();
    eprintln!("{index:?}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{{\"tool\":\"sieve\",\"event\":\"build\",\"docs\":{},\"seconds\":{build_s:.4},\
         \"docs_per_s\":{:.1},\"cores\":{cores},\"persisted\":{},\"corpus\":{}}}",
        corpus.len(),
        corpus.len() as f64 / build_s,
        args.index_dir.is_some(),
        json_str(&args.corpus.display().to_string()),
    );

    let base: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    for &repeat in &args.query_repeats {
        let texts: Vec<&str> = std::iter::repeat_n(base.iter().copied(), repeat)
            .flatten()
            .collect();
        for &threads in &args.threads {
            time_retrieval("sieve", &index, &texts, repeat, threads, args)?;
        }
    }

    if args.prototype {
        let start = Instant::now();
        let proto = ImpactIndex::build(&corpus);
        let build_s = start.elapsed().as_secs_f64();
        println!(
            "{{\"tool\":\"{PROTOTYPE}\",\"event\":\"build\",\"docs\":{},\"seconds\":{build_s:.4},\
             \"postings\":{},\"terms\":{}}}",
            corpus.len(),
            proto.docs.len(),
            proto.vocab.len(),
        );
        for &repeat in &args.query_repeats {
            let texts: Vec<&str> = std::iter::repeat_n(base.iter().copied(), repeat)
                .flatten()
                .collect();
            for &threads in &args.threads {
                time_retrieval(PROTOTYPE, &proto, &texts, repeat, threads, args)?;
            }
        }
        let cutoff = 10;
        let ours = index.retrieve(&base, cutoff)?;
        let theirs = proto.retrieve(&base, cutoff)?;
        let overlap = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| {
                let denom = a.len().max(b.len());
                let common = a
                    .iter()
                    .filter(|h| b.iter().any(|g| g.doc == h.doc))
                    .count();
                if denom == 0 {
                    1.0
                } else {
                    common as f64 / denom as f64
                }
            })
            .sum::<f64>()
            / ours.len().max(1) as f64;
        println!(
            "{{\"tool\":\"{PROTOTYPE}\",\"event\":\"agreement\",\"queries\":{},\
             \"top10_overlap_with_sieve\":{overlap:.5}}}",
            base.len()
        );
    }

    if let Some(path) = &args.dump_run {
        let results = index.retrieve(&base, args.k)?;
        let qids: Vec<&str> = queries.iter().map(|q| q.id.as_str()).collect();
        let dids: Vec<&str> = corpus.iter().map(|d| d.id.as_str()).collect();
        write_run(path, &qids, &dids, &results).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("run written to {}", path.display());
    }
    Ok(())
}

/// Tool name of [`ImpactIndex`] in the JSON lines.
const PROTOTYPE: &str = "sieve-impacts-prototype";

/// bm25s's index layout with sieve's analyser and scoring: for every term, the
/// documents containing it (ascending) and their precomputed contributions
/// `idf(t) · tf / (tf + k1 · (1 - b + b · |d| / avgdl))`, in flat arrays.
struct ImpactIndex {
    vocab: HashMap<String, u32>,
    /// Term id -> start of its postings in `docs` / `scores`; one extra entry.
    offsets: Vec<usize>,
    docs: Vec<u32>,
    scores: Vec<f32>,
    num_docs: usize,
}

impl ImpactIndex {
    fn build(corpus: &[Document]) -> Self {
        let analysed: Vec<Vec<String>> = corpus
            .par_iter()
            .map(|d| Bm25Index::analyze(&d.full_text()))
            .collect();
        let num_docs = analysed.len();
        let total: usize = analysed.iter().map(Vec::len).sum();
        let avg = if num_docs == 0 {
            0.0
        } else {
            (total as f64 / num_docs as f64) as f32
        };
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut df: Vec<u32> = Vec::new();
        // (term, tf) of every document, documents in order.
        let mut per_doc: Vec<Vec<(u32, u32)>> = Vec::with_capacity(num_docs);
        for tokens in &analysed {
            let mut tf: HashMap<&str, u32> = HashMap::new();
            for t in tokens {
                *tf.entry(t.as_str()).or_default() += 1;
            }
            let mut row = Vec::with_capacity(tf.len());
            for (t, c) in tf {
                let id = match vocab.get(t) {
                    Some(&id) => id,
                    None => {
                        let id = vocab.len() as u32;
                        vocab.insert(t.to_owned(), id);
                        df.push(0);
                        id
                    }
                };
                df[id as usize] += 1;
                row.push((id, c));
            }
            per_doc.push(row);
        }
        let mut offsets = Vec::with_capacity(df.len() + 1);
        offsets.push(0usize);
        for &f in &df {
            offsets.push(offsets.last().copied().unwrap_or(0) + f as usize);
        }
        let n = num_docs as f64;
        let idf: Vec<f32> = df
            .iter()
            .map(|&f| ((n - f64::from(f) + 0.5) / (f64::from(f) + 0.5)).ln_1p() as f32)
            .collect();
        let postings = offsets.last().copied().unwrap_or(0);
        let mut fill = offsets.clone();
        let mut docs = vec![0u32; postings];
        let mut scores = vec![0f32; postings];
        let (k1, b) = (DEFAULT_BM25_PARAMS.k1, DEFAULT_BM25_PARAMS.b);
        for (d, (row, tokens)) in per_doc.iter().zip(&analysed).enumerate() {
            let rel = if avg > 0.0 {
                tokens.len() as f32 / avg
            } else {
                0.0
            };
            let norm = k1 * (1.0 - b + b * rel);
            for &(t, c) in row {
                let slot = &mut fill[t as usize];
                let tf = c as f32;
                docs[*slot] = d as u32;
                scores[*slot] = idf[t as usize] * tf / (tf + norm);
                *slot += 1;
            }
        }
        Self {
            vocab,
            offsets,
            docs,
            scores,
            num_docs,
        }
    }

    /// Dense accumulation over the query's postings, then a linear-time top-k.
    fn search(&self, acc: &mut Vec<f32>, cand: &mut Vec<Hit>, query: &str, k: usize) -> Vec<Hit> {
        let mut terms: Vec<u32> = Bm25Index::analyze(query)
            .iter()
            .filter_map(|t| self.vocab.get(t).copied())
            .collect();
        terms.sort_unstable();
        acc.clear();
        acc.resize(self.num_docs, 0.0);
        for group in terms.chunk_by(|a, b| a == b) {
            let t = group[0] as usize;
            let weight = group.len() as f32;
            let range = self.offsets[t]..self.offsets[t + 1];
            for (&d, &s) in self.docs[range.clone()].iter().zip(&self.scores[range]) {
                acc[d as usize] += weight * s;
            }
        }
        cand.clear();
        cand.extend(
            acc.iter()
                .enumerate()
                .filter(|(_, &s)| s > 0.0)
                .map(|(d, &score)| Hit {
                    doc: d as u32,
                    score,
                }),
        );
        let order = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc));
        if k == 0 {
            return Vec::new();
        }
        if cand.len() > k {
            cand.select_nth_unstable_by(k - 1, order);
            cand.truncate(k);
        }
        cand.sort_unstable_by(order);
        cand.clone()
    }
}

impl Retriever for ImpactIndex {
    fn retrieve(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>, sieve_index::Error> {
        Ok(queries
            .par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(acc, cand), q| self.search(acc, cand, q, k),
            )
            .collect())
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
