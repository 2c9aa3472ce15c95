//! Exact (brute-force) dense top-k by inner product.
//!
//! Exact search is the reference every approximate index is measured against,
//! and at evaluation sizes (up to a few million documents) a blocked matrix
//! product is fast enough: the work is one GEMM per (query block × corpus
//! chunk) tile followed by a bounded heap per query, so memory stays at
//! `O(threads × MAX_QUERY_BLOCK × DOC_CHUNK + nq × k)` and never holds the full
//! `nq × n` score matrix. At 1M × 10k × 384 it runs at the `gemm` crate's
//! square-product peak (bench/dense).

use rayon::prelude::*;

use crate::topk::{merge, TopK};
use crate::Hit;

/// At most this many queries are scored together in one GEMM. The `gemm` crate packs
/// the corpus chunk inside every call, so the packing is paid once per query block:
/// ~1,000 rows make it a few percent of the product (256 rows left 26% of the GEMM
/// peak on the table at 1M × 10k × 384 on a Xeon; bench/dense's tile sweep).
const MAX_QUERY_BLOCK: usize = 1024;

/// Corpus rows scored per GEMM call: a `1024 × 512` f32 score tile is 2 MiB, in L2
/// while the heaps read it (1024 × 4096 lost nothing on a 2 MiB-L2 Xeon but would
/// spill an EPYC's 512 KiB L2 further).
const DOC_CHUNK: usize = 512;

/// Scores tested against a query's threshold at once (two AVX-512 registers; the bits
/// of one `u32`).
const SCAN_GROUP: usize = 32;
// `above` returns a group's compare as the bits of a u32.
const _: () = assert!(SCAN_GROUP <= 32);

/// Corpus shards per worker thread when there are too few query blocks to keep
/// every thread busy; more than one evens out uneven shard run times.
const SHARDS_PER_THREAD: usize = 2;

/// Exact top-k by inner product (cosine when both sides are L2-normalised, as
/// the caller guarantees).
///
/// `queries` is `nq × dim` and `corpus` is `n × dim`, both row-major. Returns,
/// for every query, at most `k` hits best first; ties in score are broken by
/// lower corpus index so results are deterministic regardless of threading.
/// `skip(query_idx, doc_idx)` removes pairs before ranking (MTEB drops the
/// document whose id equals the query id). NaN scores are never returned.
///
/// # Panics
///
/// If `dim == 0` or a slice length is not a multiple of `dim`: those are
/// caller bugs (mis-shaped embedding buffers), not data errors.
pub fn exact_top_k(
    queries: &[f32],
    corpus: &[f32],
    dim: usize,
    k: usize,
    skip: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Vec<Vec<Hit>> {
    let nq = queries.len() / dim.max(1);
    let threads = rayon::current_num_threads().max(1);
    exact_top_k_tiled(
        queries,
        corpus,
        dim,
        k,
        skip,
        (query_block_for(nq, threads), DOC_CHUNK),
    )
}

/// Queries per block: at most [`MAX_QUERY_BLOCK`], with the block count a multiple of
/// the thread count so that no thread idles through the last round (10,000 queries on
/// 2 threads: 10 blocks of 1,000, not 9 of 1,024 and one of 784).
fn query_block_for(nq: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let blocks = threads * nq.div_ceil(threads * MAX_QUERY_BLOCK).max(1);
    nq.div_ceil(blocks).max(1)
}

/// [`exact_top_k`] with the tile (queries per block, corpus rows per chunk) given:
/// for `bench/dense`'s tile sweep, not for callers.
#[doc(hidden)]
pub fn exact_top_k_tiled(
    queries: &[f32],
    corpus: &[f32],
    dim: usize,
    k: usize,
    skip: &(dyn Fn(usize, usize) -> bool + Sync),
    (query_block, doc_chunk): (usize, usize),
) -> Vec<Vec<Hit>> {
    assert!(dim > 0, "exact_top_k: dim must be positive");
    assert!(query_block > 0 && doc_chunk > 0, "exact_top_k: empty tile");
    assert!(
        queries.len().is_multiple_of(dim) && corpus.len().is_multiple_of(dim),
        "exact_top_k: buffer lengths ({}, {}) are not multiples of dim {dim}",
        queries.len(),
        corpus.len()
    );
    let nq = queries.len() / dim;
    let n = corpus.len() / dim;
    assert!(
        u32::try_from(n).is_ok(),
        "exact_top_k: corpus of {n} rows exceeds u32 positions"
    );
    if nq == 0 {
        return Vec::new();
    }
    if n == 0 || k == 0 {
        return vec![Vec::new(); nq];
    }

    let query_blocks = nq.div_ceil(query_block);
    let doc_chunks = n.div_ceil(doc_chunk);
    // Few queries (e.g. one interactive query): split the corpus instead so
    // that every thread still has work; results are merged per query below.
    let threads = rayon::current_num_threads().max(1);
    let shards = if query_blocks >= threads {
        1
    } else {
        (threads * SHARDS_PER_THREAD)
            .div_ceil(query_blocks)
            .clamp(1, doc_chunks)
    };
    let chunks_per_shard = doc_chunks.div_ceil(shards);

    // Task (block, shard) -> per-query best-first lists for that block.
    let partial: Vec<Vec<Vec<Hit>>> = (0..query_blocks * shards)
        .into_par_iter()
        .map(|task| {
            let block = task / shards;
            let shard = task % shards;
            let q0 = block * query_block;
            let q1 = (q0 + query_block).min(nq);
            let d0 = (shard * chunks_per_shard * doc_chunk).min(n);
            let d1 = ((shard + 1) * chunks_per_shard * doc_chunk).min(n);
            score_tile(
                &queries[q0 * dim..q1 * dim],
                q0,
                corpus,
                d0,
                d1,
                dim,
                k,
                skip,
                doc_chunk,
            )
        })
        .collect();

    let mut per_query: Vec<Vec<Vec<Hit>>> = (0..nq).map(|_| Vec::with_capacity(shards)).collect();
    for (task, lists) in partial.into_iter().enumerate() {
        let q0 = (task / shards) * query_block;
        for (offset, list) in lists.into_iter().enumerate() {
            per_query[q0 + offset].push(list);
        }
    }
    per_query
        .into_par_iter()
        .map(|lists| {
            if lists.len() == 1 {
                lists.into_iter().flatten().collect()
            } else {
                merge(lists, k)
            }
        })
        .collect()
}

/// Scores one block of queries against corpus rows `d0..d1`, chunk by chunk,
/// and returns the best `k` of that range for every query of the block.
#[allow(clippy::too_many_arguments)] // a private kernel; a struct would only rename them
fn score_tile(
    block: &[f32],
    q0: usize,
    corpus: &[f32],
    d0: usize,
    d1: usize,
    dim: usize,
    k: usize,
    skip: &(dyn Fn(usize, usize) -> bool + Sync),
    doc_chunk: usize,
) -> Vec<Vec<Hit>> {
    let rows = block.len() / dim;
    let mut tops: Vec<TopK> = (0..rows).map(|_| TopK::new(k)).collect();
    let mut scores = vec![0f32; rows * doc_chunk.min(d1.saturating_sub(d0))];
    let mut start = d0;
    while start < d1 {
        let end = (start + doc_chunk).min(d1);
        let cols = end - start;
        let tile = &mut scores[..rows * cols];
        matmul_transposed(
            block,
            &corpus[start * dim..end * dim],
            dim,
            rows,
            cols,
            tile,
        );
        for (r, top) in tops.iter_mut().enumerate() {
            let q = q0 + r;
            let row = &tile[r * cols..(r + 1) * cols];
            for (g, group) in row.chunks(SCAN_GROUP).enumerate() {
                // Once the selector has a threshold almost every score is below it: a
                // branch-free test of the whole group (it vectorises well, even at SSE2)
                // skips it; a group that passes is offered by the set bits of its
                // compare, not score by score.
                let mut offer = match top.threshold() {
                    Some(t) if !group.iter().fold(false, |any, &s| any | (s >= t)) => continue,
                    Some(t) => above(group, t),
                    None => u32::MAX >> (SCAN_GROUP - group.len()),
                };
                while offer != 0 {
                    let i = offer.trailing_zeros() as usize;
                    offer &= offer - 1;
                    let doc = start + g * SCAN_GROUP + i;
                    if skip(q, doc) {
                        continue;
                    }
                    // `doc < n <= u32::MAX`, checked by the caller.
                    top.push(doc as u32, group[i]);
                }
            }
        }
        start = end;
    }
    tops.into_iter().map(TopK::into_sorted).collect()
}

/// Bit `i` set where `group[i] >= t` (NaN never is); `group` holds at most 32 scores.
#[inline(always)]
fn above(group: &[f32], t: f32) -> u32 {
    group
        .iter()
        .enumerate()
        .fold(0u32, |bits, (i, &s)| bits | (u32::from(s >= t) << i))
}

/// `out (rows × cols) = a (rows × dim) · bᵀ`, with `b` given as `cols × dim`,
/// all row-major. Single-threaded: parallelism is across tiles.
fn matmul_transposed(a: &[f32], b: &[f32], dim: usize, rows: usize, cols: usize, out: &mut [f32]) {
    assert!(a.len() == rows * dim && b.len() == cols * dim && out.len() == rows * cols);
    let (Ok(dim_s), Ok(cols_s)) = (isize::try_from(dim), isize::try_from(cols)) else {
        unreachable!("slice lengths always fit in isize");
    };
    // SAFETY: the assert above guarantees every index gemm touches is in
    // bounds: dst[i*cols + j] for i < rows, j < cols; lhs[i*dim + l];
    // rhs (= bᵀ, dim × cols) element (l, j) at b[j*dim + l]. `read_dst = false`
    // so `out` need not be initialised meaningfully, and the three buffers
    // don't alias (`out` is a unique &mut).
    unsafe {
        gemm::gemm(
            rows,
            cols,
            dim,
            out.as_mut_ptr(),
            1,      // dst column stride
            cols_s, // dst row stride
            false,  // read_dst: overwrite
            a.as_ptr(),
            1,     // lhs column stride
            dim_s, // lhs row stride
            b.as_ptr(),
            dim_s, // rhs column stride: next doc
            1,     // rhs row stride: next feature
            0.0,   // alpha (ignored, dst not read)
            1.0,   // beta: out = a·bᵀ
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_blocks_come_in_multiples_of_the_threads() {
        assert_eq!(query_block_for(10_000, 2), 1000);
        assert_eq!(query_block_for(3000, 2), 750);
        assert_eq!(query_block_for(2048, 2), 1024);
        assert_eq!(query_block_for(1, 8), 1);
        assert_eq!(query_block_for(0, 2), 1);
        for (nq, threads) in [(10_000, 2), (12_345, 16), (700, 3), (5_000, 1)] {
            let qb = query_block_for(nq, threads);
            assert!(qb <= MAX_QUERY_BLOCK);
            let blocks = nq.div_ceil(qb);
            // Every round but possibly a short last block keeps all threads busy.
            assert!(
                blocks % threads == 0 || blocks < threads,
                "{nq} on {threads}: {blocks}"
            );
        }
    }

    #[test]
    fn matmul_matches_naive() {
        let (rows, cols, dim) = (5, 7, 3);
        let a: Vec<f32> = (0..rows * dim).map(|i| i as f32 - 4.0).collect();
        let b: Vec<f32> = (0..cols * dim).map(|i| (i % 5) as f32).collect();
        let mut out = vec![f32::NAN; rows * cols];
        matmul_transposed(&a, &b, dim, rows, cols, &mut out);
        for i in 0..rows {
            for j in 0..cols {
                let want: f32 = (0..dim).map(|l| a[i * dim + l] * b[j * dim + l]).sum();
                assert_eq!(out[i * cols + j], want);
            }
        }
    }
}
