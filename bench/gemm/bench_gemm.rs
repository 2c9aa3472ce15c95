//! The encoder's matrix products, alone: the shapes of one all-MiniLM-L6-v2 training
//! step on a 32 × 128 batch (4,096 token rows, hidden 384, feed-forward 1,536), timed
//! with the `gemm` crate the way sieve calls it, so that `bench/gemm/run.sh` can put a
//! BLAS (PyTorch's, numpy's OpenBLAS) beside it on exactly these shapes before anyone
//! links one (issue 16: "measure before choosing").
//!
//! Per shape, two ways of using both cores: `split` (the rows cut into one block per
//! thread, each a single-threaded product: `fused::LinearOp`'s way) and `rayon`
//! (gemm's own parallelism). Prints one JSON line per shape with the median GFLOP/s.
//!
//!   bench_gemm [--repeats 7]

#[path = "../common.rs"]
mod common;

use std::time::Instant;

use rayon::prelude::*;

/// (name, m, n, k, a transposed (read as kᵀ×m by strides), b transposed).
const SHAPES: [(&str, usize, usize, usize, bool, bool); 12] = [
    ("fwd qkv 4096x384 . 384x1152", 4096, 1152, 384, false, true),
    ("fwd out 4096x384 . 384x384", 4096, 384, 384, false, true),
    ("fwd ff1 4096x384 . 384x1536", 4096, 1536, 384, false, true),
    ("fwd ff2 4096x1536 . 1536x384", 4096, 384, 1536, false, true),
    ("dx qkv 4096x1152 . 1152x384", 4096, 384, 1152, false, false),
    ("dx out 4096x384 . 384x384", 4096, 384, 384, false, false),
    ("dx ff1 4096x1536 . 1536x384", 4096, 384, 1536, false, false),
    ("dx ff2 4096x384 . 384x1536", 4096, 1536, 384, false, false),
    ("dW qkv 1152x4096 . 4096x384", 1152, 384, 4096, true, false),
    ("dW out 384x4096 . 4096x384", 384, 384, 4096, true, false),
    ("dW ff1 1536x4096 . 4096x384", 1536, 384, 4096, true, false),
    ("dW ff2 384x4096 . 4096x1536", 384, 1536, 4096, true, false),
];

/// `dst (m×n) = a · b` on `rows` rows starting at `r0`, single-threaded or with gemm's
/// rayon split. `a` is m×k (or k×m read transposed), `b` k×n (or n×k read transposed).
#[allow(clippy::too_many_arguments)]
fn product(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    (ta, tb): (bool, bool),
    r0: usize,
    rows: usize,
    par: gemm::Parallelism,
) {
    // Strides (row, column) of a and b as read.
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let a_off = r0 as isize * a_rs;
    assert!(dst.len() >= rows * n);
    // SAFETY: every index the sizes and strides address lies inside a, b and dst.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr().offset(a_off),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn main() {
    let mut repeats = 7usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--repeats" => {
                repeats = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("--repeats N"));
                i += 2;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let threads = rayon::current_num_threads();
    let peak = common::gemm_peak();
    for (name, m, n, k, ta, tb) in SHAPES {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
            .collect();
        let mut out = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let mut time = |f: &mut dyn FnMut(&mut [f32])| -> f64 {
            let mut s: Vec<f64> = (0..repeats + 1)
                .map(|_| {
                    let t = Instant::now();
                    f(&mut out);
                    t.elapsed().as_secs_f64()
                })
                .skip(1)
                .collect();
            s.sort_by(f64::total_cmp);
            flop / s[s.len() / 2] / 1e9
        };
        let block = m.div_ceil(threads);
        let split = time(&mut |out: &mut [f32]| {
            out.par_chunks_mut(block * n)
                .enumerate()
                .for_each(|(bi, dst)| {
                    let rows = dst.len() / n;
                    product(
                        dst,
                        &a,
                        &b,
                        (m, n, k),
                        (ta, tb),
                        bi * block,
                        rows,
                        gemm::Parallelism::None,
                    )
                })
        });
        let par = time(&mut |out: &mut [f32]| {
            product(
                out,
                &a,
                &b,
                (m, n, k),
                (ta, tb),
                0,
                m,
                gemm::Parallelism::Rayon(threads),
            )
        });
        println!(
            "{}",
            serde_json::json!({
                "impl": "sieve gemm", "shape": name, "m": m, "n": n, "k": k,
                "split_gflops": split, "rayon_gflops": par, "gflops": split.max(par),
                "threads": threads, "gemm_peak_gflops": peak,
            })
        );
    }
}
