//! The exact softmax's pass over the corpus table on the CPU, fused: per tile of table
//! rows, the scores (one matrix product), the online log-sum-exp and the softmax-
//! weighted row sum (a second product) while the tile is still in cache.
//!
//! The generic path in [`crate::exact`] builds each 8,192-row block as a tensor (a copy
//! of 12 MiB out of the table), then runs a dozen candle ops over `batch × block`,
//! each a pass over memory on one thread: at 1M rows it was ~6× from the GEMM limit.
//! Here nothing of the table is copied: the products read it in place, tiles are
//! small enough to stay in L2 between the two products, and fixed row ranges are
//! scanned in parallel, each with its own running maximum, sum and weighted sum, merged
//! in range order at the end. The ranges do not depend on the thread count, so the
//! result is the same on every machine for the same inputs.

use rayon::prelude::*;
use sieve_encoder::fused::Real;

/// Table rows per tile: 128 × 384 f32 = 192 KiB stays in L2 between the two products
/// (2 MiB per core on the Xeon machines, 512 KiB on the EPYC ones, with the 32-query
/// score block beside it). At 1M rows 128 and 256 ran alike (0.30–0.31 s), 512 slower
/// (0.33–0.35 s), on the Xeon.
const TILE: usize = 128;

/// Tiles per parallel range: enough work per rayon task (16k rows, ~0.8 GFLOP at
/// batch 32), and enough ranges at 1M rows (62) to keep every core busy.
const TILES_PER_RANGE: usize = 128;

/// Floor of the running maximum (see `exact::MAX_FLOOR`).
const MAX_FLOOR: f32 = -1e30;

/// Docs scored per matrix-product call when the queries can be read in place. The
/// `gemm` crate copies ("packs") the left-hand side of a call whose output is wider
/// than 8 × its 6-column micro-kernel (`gemm-common`'s single-thread packing
/// threshold): at 128 columns it re-packed the 32 × 384 queries for every tile, 25% of
/// the step. At 48 or fewer the queries, laid out column by column once
/// ([`table_lse`]), are read in place — if their count is a multiple of the vector
/// width (16 covers AVX-512 and AVX2); otherwise the crate packs them on every call
/// whatever its width, so the whole tile goes in one call, packed once.
const COLS_PER_CALL: usize = 48;

/// Docs scored per call for `b` queries (see [`COLS_PER_CALL`]).
fn cols_per_call(b: usize) -> usize {
    if b.is_multiple_of(16) {
        COLS_PER_CALL
    } else {
        TILE
    }
}

/// One range's running state, per query: maximum logit, `Σ exp(s − max)` and
/// `Σ exp(s − max) · t` (`dim × b`, column `i` query `i`'s: the layout the matrix
/// product accumulates into without copies).
struct Running {
    max: Vec<f32>,
    sum: Vec<f64>,
    weighted: Vec<f32>,
}

/// `LSE_n s_in` over table rows `n ∉ skip_i` with `s_in = scale · q_i · t_n`, and its
/// gradient with respect to `q_i` (`scale · Σ_n softmax_in t_n`, `b × dim` row-major).
///
/// `q` is `b × dim`, `table` is `N × dim`, both row-major; `skip[i]` is sorted and
/// deduplicated. A query whose every row is skipped gets `−inf` and a zero gradient.
pub(crate) fn table_lse(
    q: &[f32],
    dim: usize,
    table: &[f32],
    skip: &[Vec<usize>],
    scale: f32,
) -> (Vec<f64>, Vec<f32>) {
    let b = skip.len();
    assert!(dim > 0 && q.len() == b * dim && table.len().is_multiple_of(dim));
    if b == 0 {
        return (Vec::new(), Vec::new());
    }
    let n = table.len() / dim;
    // The queries column by column (`dim × b`): for each feature, the b queries'
    // values side by side, as the products' micro-kernel reads its left-hand side.
    let mut qt = vec![0f32; dim * b];
    for (i, row) in q.chunks(dim).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            qt[k * b + i] = v;
        }
    }
    let range = TILE * TILES_PER_RANGE;
    let parts: Vec<Running> = (0..n.div_ceil(range))
        .into_par_iter()
        .map(|p| {
            scan(
                &qt,
                b,
                dim,
                table,
                skip,
                scale,
                p * range,
                ((p + 1) * range).min(n),
            )
        })
        .collect();
    // Merge in range order: the maximum over ranges, every part rescaled to it.
    let mut max = vec![MAX_FLOOR; b];
    for part in &parts {
        for (m, &pm) in max.iter_mut().zip(&part.max) {
            *m = m.max(pm);
        }
    }
    let mut sum = vec![0f64; b];
    let mut grad = vec![0f32; b * dim];
    for part in &parts {
        for i in 0..b {
            let r = (part.max[i] as f64 - max[i] as f64).exp();
            sum[i] += part.sum[i] * r;
            let r = r as f32;
            for (k, g) in grad[i * dim..(i + 1) * dim].iter_mut().enumerate() {
                *g += part.weighted[k * b + i] * r;
            }
        }
    }
    let lse = (0..b)
        .map(|i| {
            if sum[i] > 0.0 {
                max[i] as f64 + sum[i].ln()
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    for i in 0..b {
        let inv = if sum[i] > 0.0 {
            (scale as f64 / sum[i]) as f32
        } else {
            0.0
        };
        grad[i * dim..(i + 1) * dim]
            .iter_mut()
            .for_each(|g| *g *= inv);
    }
    (lse, grad)
}

/// Scans table rows `from..to` tile by tile; `qt` is the queries column by column
/// (`dim × b`).
#[allow(clippy::too_many_arguments)] // a private kernel; a struct would only rename them
fn scan(
    qt: &[f32],
    b: usize,
    dim: usize,
    table: &[f32],
    skip: &[Vec<usize>],
    scale: f32,
    from: usize,
    to: usize,
) -> Running {
    let mut run = Running {
        max: vec![MAX_FLOOR; b],
        sum: vec![0.0; b],
        weighted: vec![0.0; dim * b],
    };
    // A tile's scores doc by doc (`w × b`): doc j's b scores side by side.
    let mut scores = vec![0f32; TILE * b];
    let mut scratch = vec![0f32; 2 * b];
    let mut start = from;
    while start < to {
        let end = (start + TILE).min(to);
        let w = end - start;
        let tile = &table[start * dim..end * dim];
        let s = &mut scores[..w * b];
        // s (b × w, stored doc by doc) = scale · q · tileᵀ, `per_call` docs a call.
        // The next tile is asked into L2 a slice per call while this one is computed:
        // the table streams from memory (1.5 GB a step at 1M rows) and the products
        // otherwise wait on it (0.288 -> 0.272 s at 1M on the Xeon).
        let next = &table[end * dim..(end + TILE).min(to) * dim];
        let per_call = cols_per_call(b);
        let calls = w.div_ceil(per_call);
        let part = next.len().div_ceil(calls);
        for (call, c0) in (0..w).step_by(per_call).enumerate() {
            let c1 = (c0 + per_call).min(w);
            prefetch(&next[(call * part).min(next.len())..((call + 1) * part).min(next.len())]);
            // SAFETY: qt is dim × b (element (i, k) at k·b + i), the tile's docs
            // c0..c1 are (c1 − c0) × dim row-major (read as tileᵀ, (k, j) at
            // (c0 + j)·dim + k), and s's columns c0..c1 start at c0·b, (i, j) at
            // (c0 + j)·b + i; all inside their buffers, s a unique borrow.
            unsafe {
                gemm::gemm(
                    b,
                    c1 - c0,
                    dim,
                    s.as_mut_ptr().add(c0 * b),
                    b as isize,
                    1,
                    false,
                    qt.as_ptr(),
                    b as isize,
                    1,
                    tile.as_ptr().add(c0 * dim),
                    dim as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        for (i, sk) in skip.iter().enumerate() {
            let lo = sk.partition_point(|&x| x < start);
            for &pos in sk[lo..].iter().take_while(|&&x| x < end) {
                s[(pos - start) * b + i] = f32::NEG_INFINITY;
            }
        }
        sieve_encoder::fused::simd::dispatch(|| exp_docs(s, b, &mut run, &mut scratch));
        // weighted (b × dim, stored dim × b) += s (b × w) · tile (w × dim).
        // SAFETY: s is w × b doc by doc ((i, j) at j·b + i), the tile w × dim
        // row-major ((j, k) at j·dim + k), weighted dim × b ((i, k) at k·b + i); all in
        // bounds, weighted a unique borrow.
        unsafe {
            gemm::gemm(
                b,
                dim,
                w,
                run.weighted.as_mut_ptr(),
                b as isize,
                1,
                true,
                s.as_ptr(),
                b as isize,
                1,
                tile.as_ptr(),
                1,
                dim as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        start = end;
    }
    run
}

/// Asks for `rows`' cache lines to be brought into L2 ahead of their use.
#[inline]
fn prefetch(rows: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in rows.chunks(16) {
        // SAFETY: a prefetch hint of an address inside a live slice; it never faults.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr() as *const i8
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = rows;
}

/// For a tile's scores stored doc by doc (`w × b`): raise each query's running maximum
/// (rescaling what was accumulated), replace the scores by `exp(s − max)` and add them
/// to the running sums. Every loop runs over the b queries side by side, so it
/// vectorises across queries. `scratch` holds 2b floats.
#[inline(always)]
fn exp_docs(s: &mut [f32], b: usize, run: &mut Running, scratch: &mut [f32]) {
    let (tile_max, acc) = scratch.split_at_mut(b);
    tile_max.fill(f32::NEG_INFINITY);
    for doc in s.chunks(b) {
        for (m, &v) in tile_max.iter_mut().zip(doc) {
            *m = m.max(v);
        }
    }
    // The factor each query's accumulated sums are rescaled by (1 where its maximum
    // stands), kept in tile_max once the new maxima are set.
    let mut rescale = false;
    for (i, m) in tile_max.iter_mut().enumerate() {
        let old = run.max[i];
        if *m > old {
            let r = (old - *m).exp_fast();
            run.sum[i] *= r as f64;
            run.max[i] = *m;
            *m = r;
            rescale = true;
        } else {
            *m = 1.0;
        }
    }
    if rescale {
        for row in run.weighted.chunks_mut(b) {
            for (x, &r) in row.iter_mut().zip(tile_max.iter()) {
                *x *= r;
            }
        }
    }
    acc.fill(0.0);
    let max = &run.max;
    for doc in s.chunks_mut(b) {
        for ((x, &m), a) in doc.iter_mut().zip(max).zip(acc.iter_mut()) {
            *x = (*x - m).exp_fast();
            *a += *x;
        }
    }
    for (sum, &a) in run.sum.iter_mut().zip(acc.iter()) {
        *sum += a as f64;
    }
}
