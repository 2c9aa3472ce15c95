//! Exact dense top-k: sieve's `exact_top_k` timed on `.npy` embeddings, beside the
//! machine's f32 GEMM peak measured in the same process (the `gemm` crate on all
//! threads, a large square product), so that the efficiency printed is against this
//! machine at this moment, not a datasheet.
//!
//!   target/release/examples/bench_dense --corpus C.npy --queries Q.npy [--k 100] [--repeats 3]
//!
//! Prints one JSON line: seconds (median of the repeats), GFLOP/s of the scoring
//! (2 · queries · documents · dim per search), the GEMM peak, their ratio, peak RSS,
//! what `--dense auto` would choose for this size and why, and (`--ids-out`) every
//! query's top-k ids for cross-checking against faiss/numpy. `--tiles QxD,...` times
//! the given tiles instead of the default one (the tile sweep behind its constants).

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
    // `--tiles 256x4096,1024x1024`: time each (queries per block × corpus rows per
    // chunk) instead of the default tile, one JSON line each (the tile sweep).
    let mut tiles: Vec<(usize, usize)> = Vec::new();
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
            "--tiles" => {
                tiles = v()
                    .split(',')
                    .map(|t| {
                        t.split_once('x')
                            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                            .unwrap_or_else(|| die("--tiles: QxD[,QxD...]"))
                    })
                    .collect()
            }
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
    // What `sieve mine --dense auto` would choose for this corpus and query count, so
    // that run.sh can check the choice against both paths' measured times.
    let (auto_hnsw, auto_why) = sieve_miner::MineSettings::default().dense_choice(n, nq);
    let sweep = !tiles.is_empty();
    let tile_list: Vec<Option<(usize, usize)>> = if sweep {
        tiles.into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    for tile in tile_list {
        let mut times = Vec::new();
        let mut hits = Vec::new();
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            hits = match tile {
                Some(tile) => sieve_index::exact_top_k_tiled(&q, &c, dim, k, &|_, _| false, tile),
                None => sieve_index::exact_top_k(&q, &c, dim, k, &|_, _| false),
            };
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let secs = times[times.len() / 2];
        let gflops = 2.0 * nq as f64 * n as f64 * dim as f64 / secs / 1e9;
        if let (Some(path), false) = (&dump, sweep) {
            // Row-major nq × k int64 ids, for recall against the peers' results.
            let mut body = Vec::with_capacity(nq * k * 8);
            for h in &hits {
                for i in 0..k {
                    let id = h.get(i).map_or(-1i64, |x| x.doc as i64);
                    body.extend_from_slice(&id.to_le_bytes());
                }
            }
            std::fs::write(path, body).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
        }
        println!(
            "{}",
            serde_json::json!({
                "impl": "sieve exact_top_k", "n": n, "nq": nq, "dim": dim, "k": k,
                "tile": tile.map(|(a, b)| format!("{a}x{b}")),
                "seconds": secs, "all_seconds": times, "gflops": gflops,
                "gemm_peak_gflops": peak, "efficiency": gflops / peak,
                "threads": rayon::current_num_threads(), "peak_rss_mib": peak_rss_mib(),
                "auto": if auto_hnsw { "hnsw" } else { "exact" }, "auto_why": auto_why,
            })
        );
    }
}

fn die(msg: &str) -> ! {
    eprintln!("bench_dense: {msg}");
    std::process::exit(2);
}
