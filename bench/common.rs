//! Measurements the benches share, included by each with
//! `#[path = "../common.rs"] mod common;`: the machine's f32 GEMM peak of the moment
//! (the figure every efficiency is printed against), the process's peak memory, and the
//! synthetic exact-softmax batch.
#![allow(dead_code)]

use std::time::Instant;

/// The best of five runs of a 2048 × 2048 × 2048 f32 product on all threads (the
/// first runs warm the clocks and the pages up).
pub fn gemm_peak() -> f64 {
    let m = 2048;
    let a: Vec<f32> = (0..m * m)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect();
    let b: Vec<f32> = (0..m * m)
        .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
        .collect();
    let mut out = vec![0f32; m * m];
    let threads = rayon::current_num_threads();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        // SAFETY: all three buffers are m × m, row-major, and do not alias.
        unsafe {
            gemm::gemm(
                m,
                m,
                m,
                out.as_mut_ptr(),
                1,
                m as isize,
                false,
                a.as_ptr(),
                1,
                m as isize,
                b.as_ptr(),
                1,
                m as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            );
        }
        let s = t.elapsed().as_secs_f64();
        best = best.max(2.0 * (m * m * m) as f64 / s / 1e9);
    }
    std::hint::black_box(&out);
    best
}

pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The exact-softmax batch bench_exact and bench_gpu time: `batch` queries whose
/// positives (also the fresh rows) are spread over the `n` table rows, each with two
/// excluded rows elsewhere.
pub fn synthetic_exact_batch(n: usize, batch: usize) -> sieve_trainer::exact::ExactBatch {
    sieve_trainer::exact::ExactBatch {
        fresh: (0..batch).map(|i| i * (n / batch).max(1) % n).collect(),
        positives: (0..batch)
            .map(|i| vec![i * (n / batch).max(1) % n])
            .collect(),
        excluded: (0..batch)
            .map(|i| vec![(i * 7919 + 1) % n, (i * 104_729 + 3) % n])
            .collect(),
    }
}
