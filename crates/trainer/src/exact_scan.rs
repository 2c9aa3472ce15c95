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

/// One range's running state, per query: maximum logit, `Σ exp(s − max)` and
/// `Σ exp(s − max) · t`.
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
    let n = table.len() / dim;
    let range = TILE * TILES_PER_RANGE;
    let parts: Vec<Running> = (0..n.div_ceil(range))
        .into_par_iter()
        .map(|p| {
            scan(
                q,
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
            for (g, &w) in grad[i * dim..(i + 1) * dim]
                .iter_mut()
                .zip(&part.weighted[i * dim..(i + 1) * dim])
            {
                *g += w * r;
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

/// Scans table rows `from..to` tile by tile.
fn scan(
    q: &[f32],
    dim: usize,
    table: &[f32],
    skip: &[Vec<usize>],
    scale: f32,
    from: usize,
    to: usize,
) -> Running {
    let b = skip.len();
    let mut run = Running {
        max: vec![MAX_FLOOR; b],
        sum: vec![0.0; b],
        weighted: vec![0.0; b * dim],
    };
    let mut scores = vec![0f32; b * TILE];
    let mut start = from;
    while start < to {
        let end = (start + TILE).min(to);
        let w = end - start;
        let tile = &table[start * dim..end * dim];
        let s = &mut scores[..b * w];
        // s (b × w) = scale · q · tileᵀ.
        // SAFETY: q is b × dim, tile is w × dim (read as its transpose, dim × w), s is
        // b × w, all row-major and in bounds; s is a unique borrow, so nothing aliases.
        unsafe {
            gemm::gemm(
                b,
                w,
                dim,
                s.as_mut_ptr(),
                1,
                w as isize,
                false,
                q.as_ptr(),
                1,
                dim as isize,
                tile.as_ptr(),
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
        for (i, sk) in skip.iter().enumerate() {
            let lo = sk.partition_point(|&x| x < start);
            for &pos in sk[lo..].iter().take_while(|&&x| x < end) {
                s[i * w + pos - start] = f32::NEG_INFINITY;
            }
        }
        sieve_encoder::fused::simd::dispatch(|| exp_rows(s, w, &mut run));
        // weighted (b × dim) += s (b × w) · tile (w × dim).
        // SAFETY: as above; weighted is b × dim and a unique borrow.
        unsafe {
            gemm::gemm(
                b,
                dim,
                w,
                run.weighted.as_mut_ptr(),
                1,
                dim as isize,
                true,
                s.as_ptr(),
                1,
                w as isize,
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

/// Per query row of `s` (`w` wide): raise the running maximum (rescaling what was
/// accumulated), replace the scores by `exp(s − max)` and add them to the running sum.
#[inline(always)]
fn exp_rows(s: &mut [f32], w: usize, run: &mut Running) {
    let dim = run.weighted.len() / run.max.len().max(1);
    for (i, row) in s.chunks_mut(w).enumerate() {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for k in 0..16 {
                lanes[k] = lanes[k].max(c[k]);
            }
        }
        let row_max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let old = run.max[i];
        if row_max > old {
            let r = (old - row_max).exp_fast();
            run.sum[i] *= r as f64;
            run.weighted[i * dim..(i + 1) * dim]
                .iter_mut()
                .for_each(|x| *x *= r);
            run.max[i] = row_max;
        }
        let m = run.max[i];
        let mut acc = [0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for k in 0..16 {
                c[k] = (c[k] - m).exp_fast();
                acc[k] += c[k];
            }
        }
        let mut total: f32 = acc.iter().sum();
        for x in chunks.into_remainder() {
            *x = (*x - m).exp_fast();
            total += *x;
        }
        run.sum[i] += total as f64;
    }
}
