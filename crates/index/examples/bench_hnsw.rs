//! HNSW build time, recall@k against exact search, and queries/s per `ef_search`.
//!
//! ```text
//! cargo run --release -p sieve-index --example bench_hnsw -- \
//!     --corpus corpus.npy --queries queries.npy [--m 16] [--ef-construction 200] \
//!     [--ef 16,32,64,128,256] [--k 10] [--min-seconds 1] [--index-dir DIR] [--label NAME]
//! ```
//!
//! Both files are float32 `.npy` matrices (C order) of unit rows, as written by
//! `sieve encode` or `bench/hnsw/make_data.py`. With `--index-dir`, a graph
//! dumped there by an earlier run with the same corpus size and parameters is
//! loaded instead of rebuilt (and a fresh build is dumped there). Prints one
//! JSON line per measurement, so that `bench/hnsw/run.sh` can compare it with
//! hnswlib line for line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sieve_index::{exact_top_k, HnswIndex, HnswParams};

struct Args {
    corpus: PathBuf,
    queries: PathBuf,
    params: HnswParams,
    efs: Vec<usize>,
    k: usize,
    min_seconds: f64,
    index_dir: Option<PathBuf>,
    label: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        corpus: PathBuf::new(),
        queries: PathBuf::new(),
        params: HnswParams::default(),
        efs: vec![16, 32, 64, 128, 256],
        k: 10,
        min_seconds: 1.0,
        index_dir: None,
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--corpus" => args.corpus = value()?.into(),
            "--queries" => args.queries = value()?.into(),
            "--m" => args.params.m = num(value()?)?,
            "--ef-construction" => args.params.ef_construction = num(value()?)?,
            "--ef" => {
                args.efs = value()?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|e| format!("--ef {s}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--k" => args.k = num(value()?)?,
            "--min-seconds" => {
                let v = value()?;
                args.min_seconds = v.parse().map_err(|e| format!("--min-seconds {v}: {e}"))?;
            }
            "--index-dir" => args.index_dir = Some(value()?.into()),
            "--label" => args.label = value()?,
            "-h" | "--help" => {
                return Err("usage: bench_hnsw --corpus C.npy --queries Q.npy [--m 16] \
                            [--ef-construction 200] [--ef 16,32,64] [--k 10] \
                            [--min-seconds 1] [--index-dir DIR] [--label NAME]"
                    .into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.corpus.as_os_str().is_empty() || args.queries.as_os_str().is_empty() {
        return Err("--corpus and --queries are required".into());
    }
    Ok(args)
}

/// A float32 C-order 2-D `.npy` file: `(rows, cols, data)`.
fn read_npy(path: &Path) -> Result<(usize, usize, Vec<f32>), String> {
    let ctx = |msg: &str| format!("{}: {msg}", path.display());
    let bytes = std::fs::read(path).map_err(|e| ctx(&e.to_string()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(ctx("not a .npy file"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => {
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        v => return Err(ctx(&format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| ctx("truncated header"))?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'descr':'<f4'") {
        return Err(ctx(&format!(
            "dtype is not little-endian float32: {header}"
        )));
    }
    if !compact.contains("'fortran_order':False") {
        return Err(ctx("Fortran-order arrays are not supported"));
    }
    let shape = compact
        .split("'shape':(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| ctx("no shape in header"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|e| ctx(&format!("shape {shape}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(ctx(&format!("expected a 2-D array, shape is ({shape})")));
    };
    let payload = &bytes[start + header_len..];
    if payload.len() != rows * cols * 4 {
        return Err(ctx(&format!(
            "{} data bytes for shape ({rows}, {cols})",
            payload.len()
        )));
    }
    let data = payload
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((rows, cols, data))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_hnsw: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let (n, dim, corpus) = read_npy(&args.corpus)?;
    let (nq, qdim, queries) = read_npy(&args.queries)?;
    if qdim != dim {
        return Err(format!("corpus dim {dim} != query dim {qdim}"));
    }
    let threads = rayon::current_num_threads();
    let k = args.k;

    let t = Instant::now();
    let exact = exact_top_k(&queries, &corpus, dim, k, &|_, _| false);
    let exact_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"lib\":\"exact\",\"label\":\"{}\",\"n\":{n},\"nq\":{nq},\"dim\":{dim},\"threads\":{threads},\"search_s\":{exact_s:.4},\"qps\":{:.1}}}",
        args.label,
        nq as f64 / exact_s
    );

    let cached = args.index_dir.as_deref().and_then(|dir| {
        let index = HnswIndex::load(dir).ok()?;
        let p = index.params();
        let same = index.len() == n
            && index.dim() == dim
            && p.m == args.params.m
            && p.ef_construction == args.params.ef_construction;
        same.then_some(index)
    });
    let (mut index, build_s, loaded) = match cached {
        Some(index) => (index, f64::NAN, true),
        None => {
            let t = Instant::now();
            let index = HnswIndex::build(&corpus, dim, args.params).map_err(|e| e.to_string())?;
            let build_s = t.elapsed().as_secs_f64();
            if let Some(dir) = &args.index_dir {
                index.dump(dir).map_err(|e| e.to_string())?;
            }
            (index, build_s, false)
        }
    };
    drop(corpus);
    let build_json = if loaded {
        "null".to_string()
    } else {
        format!("{build_s:.3}")
    };
    println!(
        "{{\"lib\":\"sieve-hnsw_rs\",\"label\":\"{}\",\"event\":\"build\",\"n\":{n},\"dim\":{dim},\"m\":{},\"ef_construction\":{},\"threads\":{threads},\"build_s\":{build_json},\"loaded\":{loaded}}}",
        args.label, args.params.m, args.params.ef_construction
    );

    for &ef in &args.efs {
        index.set_ef_search(ef);
        let warm = index.search(&queries, k);
        let recall = recall(&warm, &exact);
        // Repeat until the timing is long enough to be stable.
        let mut passes = 0usize;
        let t = Instant::now();
        while passes < 3 || t.elapsed().as_secs_f64() < args.min_seconds {
            std::hint::black_box(index.search(&queries, k));
            passes += 1;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{{\"lib\":\"sieve-hnsw_rs\",\"label\":\"{}\",\"event\":\"search\",\"ef_search\":{ef},\"k\":{k},\"recall\":{recall:.5},\"qps\":{:.1},\"passes\":{passes}}}",
            args.label,
            (passes * nq) as f64 / secs
        );
    }
    Ok(())
}

/// Fraction of the exact top-k found by the approximate top-k.
fn recall(approx: &[Vec<sieve_index::Hit>], exact: &[Vec<sieve_index::Hit>]) -> f64 {
    let (mut found, mut total) = (0usize, 0usize);
    for (a, e) in approx.iter().zip(exact) {
        total += e.len();
        found += e
            .iter()
            .filter(|h| a.iter().any(|x| x.doc == h.doc))
            .count();
    }
    found as f64 / total.max(1) as f64
}
