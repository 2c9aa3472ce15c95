//! One exact-softmax step (loss + backward to the query and fresh embeddings) against a
//! synthetic `N × 384` corpus table; the sieve half of `bench/exact/run.sh`.
//!
//!   target/release/examples/bench_exact N [BATCH=32] [REPEATS=3]
//!
//! Prints one JSON line: median seconds per step; the step's GFLOP/s (its two products
//! over the table, scores and the softmax-weighted row sum: 4 · batch · N · dim) beside
//! the machine's f32 GEMM peak measured in the same process; the process's peak RSS
//! (VmHWM) and the table's size, so that memory beyond the table can be read off.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use sieve_trainer::batch::SplitMix64;
use sieve_trainer::exact::{exact_loss, CorpusTable, DEFAULT_CHUNK};

#[path = "../common.rs"]
mod common;
use common::{gemm_peak, peak_rss_mib, synthetic_exact_batch};

const DIM: usize = 384;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: bench_exact N [BATCH] [REPEATS]"))
        .collect();
    let n = *args
        .first()
        .expect("usage: bench_exact N [BATCH] [REPEATS]");
    let batch = args.get(1).copied().unwrap_or(32);
    let repeats = args.get(2).copied().unwrap_or(3);
    let mut rng = SplitMix64(7);
    let mut uniform = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect()
    };
    let table = CorpusTable::new(uniform(n * DIM), DIM);
    let q = Var::from_tensor(
        &Tensor::from_vec(uniform(batch * DIM), (batch, DIM), &Device::Cpu).unwrap(),
    )
    .unwrap();
    let f = Var::from_tensor(
        &Tensor::from_vec(uniform(batch * DIM), (batch, DIM), &Device::Cpu).unwrap(),
    )
    .unwrap();
    let eb = synthetic_exact_batch(n, batch);
    let peak = gemm_peak();
    let mut times = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let loss = exact_loss(
            q.as_tensor(),
            f.as_tensor(),
            &eb,
            &table,
            20.0,
            DEFAULT_CHUNK,
        )
        .unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(q.as_tensor()).is_some());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let gflops = 4.0 * (batch * n * DIM) as f64 / median / 1e9;
    println!(
        "{}",
        serde_json::json!({
            "n": n, "batch": batch, "dim": DIM, "seconds": median,
            "ns_per_doc": median / n as f64 * 1e9, "all_seconds": times,
            "gflops": gflops, "gemm_peak_gflops": peak, "efficiency": gflops / peak,
            "threads": rayon::current_num_threads(),
            "peak_rss_mib": peak_rss_mib(),
            "table_mib": (n * DIM * 4) as f64 / (1 << 20) as f64,
        })
    );
}
