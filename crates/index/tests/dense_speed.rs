//! Throughput of `exact_top_k` (ignored by default; run with
//! `cargo test --release -p sieve-index --test dense_speed -- --ignored --nocapture`).

use std::time::Instant;

use sieve_index::exact_top_k;

#[test]
#[ignore = "timing, not correctness"]
fn exact_top_k_throughput() {
    let (nq, n, dim, k) = (1000, 100_000, 384, 100);
    let fill = |len: usize, seed: u32| -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / (1u32 << 24) as f32
                    - 0.5
            })
            .collect()
    };
    let queries = fill(nq * dim, 1);
    let corpus = fill(n * dim, 2);
    let start = Instant::now();
    let hits = exact_top_k(&queries, &corpus, dim, k, &|q, d| q == d);
    let secs = start.elapsed().as_secs_f64();
    let gflops = 2.0 * (nq * n * dim) as f64 / secs / 1e9;
    eprintln!("{nq} queries x {n} docs x {dim} dims, k={k}: {secs:.3} s, {gflops:.1} GFLOP/s");
    assert_eq!(hits.len(), nq);
}
