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
    let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
    assert!(dst.len() >= rows * n);
    // SAFETY: every index the sizes and strides address lies inside a, b and dst.
    unsafe {
        mm_raw(
            (rows, n, k),
            dst.as_mut_ptr(),
            n,
            a.as_ptr().add(r0 * a_rs),
            (a_rs, a_cs),
            b.as_ptr(),
            (b_rs, b_cs),
            par,
        )
    }
}

/// `dst (m×n)` = `a (m×k, strides a_rs, a_cs)` · `b (k×n, strides b_rs, b_cs)`, one
/// thread or gemm's own split.
#[allow(clippy::too_many_arguments)]
unsafe fn mm_raw(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    b: *const f32,
    (b_rs, b_cs): (usize, usize),
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

/// Raw pointer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each task writes only its own rows (see the users).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}
impl Out {
    /// Through a method, so that closures capture the Send wrapper, not its field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// One linear layer's backward (dx = dy W, dW = dyᵀ x, for x rows×inp, W out×inp),
/// the ways it can use the cores; fresh activations each repeat, as in a training step
/// (the products never find their inputs in cache from the previous repeat).
/// `joined`: dx and dW at once, each cut in one block per thread (`fused::LinearGradOp`'s
/// way until this bench measured it); `sequential`: dx then dW, each cut per thread (its
/// way now); `gemm-split`: dx then dW, each with gemm's own parallelism; `ksplit`: dx
/// cut per thread, then dW as per-thread partial sums over row blocks, added after.
fn layer_backward(repeats: usize, threads: usize) {
    let rows = 4096;
    for (name, inp, out) in [
        ("qkv", 384, 1152),
        ("out", 384, 384),
        ("ff1", 384, 1536),
        ("ff2", 1536, 384),
    ] {
        let flop = 2.0 * 2.0 * (rows * inp * out) as f64;
        let sets: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..4)
            .map(|s| {
                let f = |n: usize, p: usize| -> Vec<f32> {
                    (0..n)
                        .map(|i| (((i + s * 7) % p) as f32 - p as f32 / 2.0) / p as f32)
                        .collect()
                };
                (f(rows * inp, 97), f(out * inp, 89), f(rows * out, 83))
            })
            .collect();
        let mut dx = vec![0f32; rows * inp];
        let mut dw = vec![0f32; out * inp];
        let mut partial: Vec<Vec<f32>> = (0..threads).map(|_| vec![0f32; out * inp]).collect();
        let mut run = |how: &str| -> f64 {
            let mut s: Vec<f64> = (0..repeats + 1)
                .map(|r| {
                    let (x, w, dy) = &sets[r % sets.len()];
                    let t = Instant::now();
                    let (pdx, pdw) = (Out(dx.as_mut_ptr()), Out(dw.as_mut_ptr()));
                    let row_block = rows.div_ceil(threads);
                    // Block i of n of dx (by rows) and of dW (by output features).
                    let dx_part = |i: usize, n: usize, par: gemm::Parallelism| {
                        let block = rows.div_ceil(n);
                        let r0 = i * block;
                        let r = block.min(rows - r0);
                        // SAFETY: rows r0..r0+r of dx and dy; W whole.
                        unsafe {
                            mm_raw(
                                (r, inp, out),
                                pdx.at(r0 * inp),
                                inp,
                                dy.as_ptr().add(r0 * out),
                                (out, 1),
                                w.as_ptr(),
                                (inp, 1),
                                par,
                            )
                        }
                    };
                    let dw_part = |i: usize, n: usize, par: gemm::Parallelism| {
                        let block = out.div_ceil(n);
                        let o0 = i * block;
                        let r = block.min(out - o0);
                        // SAFETY: rows o0..o0+r of dW are dy's columns o0..o0+r.
                        unsafe {
                            mm_raw(
                                (r, inp, rows),
                                pdw.at(o0 * inp),
                                inp,
                                dy.as_ptr().add(o0),
                                (1, out),
                                x.as_ptr(),
                                (inp, 1),
                                par,
                            )
                        }
                    };
                    let one = gemm::Parallelism::None;
                    let per_thread = |part: &(dyn Fn(usize, usize, gemm::Parallelism) + Sync)| {
                        (0..threads)
                            .into_par_iter()
                            .for_each(|i| part(i, threads, one))
                    };
                    // dW = Σ_t dy[rows_t]ᵀ x[rows_t]: each thread its own rows (contiguous
                    // operands, half the reads), partial sums added after.
                    let dw_ksplit = |partial: &mut Vec<Vec<f32>>| {
                        partial.par_iter_mut().enumerate().for_each(|(i, pw)| {
                            let r0 = i * row_block;
                            let r = row_block.min(rows - r0);
                            // SAFETY: rows r0..r0+r of dy and x; pw is out×inp.
                            unsafe {
                                mm_raw(
                                    (out, inp, r),
                                    pw.as_mut_ptr(),
                                    inp,
                                    dy.as_ptr().add(r0 * out),
                                    (1, out),
                                    x.as_ptr().add(r0 * inp),
                                    (inp, 1),
                                    gemm::Parallelism::None,
                                )
                            }
                        });
                        let (first, rest) = partial.split_at_mut(1);
                        first[0]
                            .par_chunks_mut(4096)
                            .enumerate()
                            .for_each(|(c, d)| {
                                for p in rest.iter() {
                                    for (a, b) in d.iter_mut().zip(&p[c * 4096..]) {
                                        *a += b;
                                    }
                                }
                            });
                    };
                    match how {
                        "ksplit" => {
                            per_thread(&dx_part);
                            dw_ksplit(&mut partial);
                        }
                        "joined" => {
                            rayon::join(|| per_thread(&dx_part), || per_thread(&dw_part));
                        }
                        "sequential" => {
                            per_thread(&dx_part);
                            per_thread(&dw_part);
                        }
                        _ => {
                            let par = gemm::Parallelism::Rayon(threads);
                            dx_part(0, 1, par);
                            dw_part(0, 1, par);
                        }
                    }
                    t.elapsed().as_secs_f64()
                })
                .skip(1)
                .collect();
            s.sort_by(f64::total_cmp);
            flop / s[s.len() / 2] / 1e9
        };
        let joined = run("joined");
        let sequential = run("sequential");
        let gemm_split = run("gemm-split");
        let ksplit = run("ksplit");
        println!(
            "{}",
            serde_json::json!({
                "impl": "sieve layer backward", "layer": name, "rows": rows, "inp": inp, "out": out,
                "joined_gflops": joined, "sequential_gflops": sequential,
                "gemm_split_gflops": gemm_split, "ksplit_gflops": ksplit, "threads": threads,
            })
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
    if std::env::var_os("BENCH_GEMM_LAYERS").is_some() {
        layer_backward(repeats, threads);
        return;
    }
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
