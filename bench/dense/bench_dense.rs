//! Exact dense top-k: sieve's `exact_top_k` timed on `.npy` embeddings, beside the
//! machine's f32 GEMM peak measured in the same process (the `gemm` crate on all
//! threads, a large square product), so that the efficiency printed is against this
//! machine at this moment, not a datasheet.
//!
//!   target/release/examples/bench_dense --corpus C.npy --queries Q.npy [--k 100] [--repeats 3]
//!
//! Prints one JSON line: seconds (median of the repeats), GFLOP/s of the scoring
//! (2 · queries · documents · dim per search), the GEMM peak, their ratio, peak RSS,
//! and the top-k (ids) of the first query for cross-checking against faiss/numpy.

use std::path::PathBuf;
use std::time::Instant;

#[path = "../common.rs"]
mod common;
use common::{gemm_peak, peak_rss_mib};

fn main() {
    let mut corpus = PathBuf::new();
    let mut queries = PathBuf::new();
    let mut k = 100usize;
    let mut repeats = 3usize;
    let mut dump: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--corpus" => corpus = v().into(),
            "--queries" => queries = v().into(),
            "--k" => k = v().parse().unwrap_or_else(|_| die("--k: a count")),
            "--repeats" => repeats = v().parse().unwrap_or_else(|_| die("--repeats: a count")),
            "--ids-out" => dump = Some(v().into()),
            _ => die(&format!("unknown argument {a}")),
        }
    }
    let (n, dim, c) =
        sieve_datasets::npy::read_npy(&corpus).unwrap_or_else(|e| die(&e.to_string()));
    let (nq, qdim, q) =
        sieve_datasets::npy::read_npy(&queries).unwrap_or_else(|e| die(&e.to_string()));
    if qdim != dim {
        die(&format!("queries are {qdim}-d, corpus {dim}-d"));
    }
    let peak = gemm_peak();
    let mut times = Vec::new();
    let mut hits = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        hits = sieve_index::exact_top_k(&q, &c, dim, k, &|_, _| false);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let secs = times[times.len() / 2];
    let gflops = 2.0 * nq as f64 * n as f64 * dim as f64 / secs / 1e9;
    if let Some(path) = dump {
        // Row-major nq × k int64 ids, for recall against the peers' results.
        let mut body = Vec::with_capacity(nq * k * 8);
        for h in &hits {
            for i in 0..k {
                let id = h.get(i).map_or(-1i64, |x| x.doc as i64);
                body.extend_from_slice(&id.to_le_bytes());
            }
        }
        std::fs::write(&path, body).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    }
    println!(
        "{}",
        serde_json::json!({
            "impl": "sieve exact_top_k", "n": n, "nq": nq, "dim": dim, "k": k,
            "seconds": secs, "all_seconds": times, "gflops": gflops,
            "gemm_peak_gflops": peak, "efficiency": gflops / peak,
            "threads": rayon::current_num_threads(), "peak_rss_mib": peak_rss_mib(),
        })
    );
}

fn die(msg: &str) -> ! {
    eprintln!("bench_dense: {msg}");
    std::process::exit(2);
}
