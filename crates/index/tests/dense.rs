//! `exact_top_k` against a naive O(nq·n) reference.

use sieve_index::{exact_top_k, exact_top_k_tiled, Hit};

/// The workspace's SplitMix64, so tests need no `rand` crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut r = sieve_datasets::rng::SplitMix64(self.0);
        let v = r.next_u64();
        self.0 = r.0;
        v
    }

    /// Multiples of 1/8 in [-0.5, 0.5]: dot products of such vectors are exact
    /// in f32 whatever the summation order, so GEMM and the naive loop must
    /// agree bit for bit, and equal scores (ties) are genuinely equal.
    fn eighth(&mut self) -> f32 {
        (self.next() % 9) as f32 / 8.0 - 0.5
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn naive(
    queries: &[f32],
    corpus: &[f32],
    dim: usize,
    k: usize,
    skip: &dyn Fn(usize, usize) -> bool,
) -> Vec<Vec<Hit>> {
    let n = corpus.len() / dim;
    queries
        .chunks(dim)
        .enumerate()
        .map(|(q, qv)| {
            let mut hits: Vec<Hit> = (0..n)
                .filter(|&d| !skip(q, d))
                .map(|d| Hit {
                    doc: d as u32,
                    score: qv
                        .iter()
                        .zip(&corpus[d * dim..(d + 1) * dim])
                        .map(|(a, b)| a * b)
                        .sum(),
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
            hits.truncate(k);
            hits
        })
        .collect()
}

/// Corpus rows drawn from a small pool of distinct vectors, so many documents
/// have identical scores and the tie rule (lower index first) is exercised.
fn tied_data(rng: &mut Rng, nq: usize, n: usize, dim: usize, pool: usize) -> (Vec<f32>, Vec<f32>) {
    let queries: Vec<f32> = (0..nq * dim).map(|_| rng.eighth()).collect();
    let distinct: Vec<f32> = (0..pool * dim).map(|_| rng.eighth()).collect();
    let mut corpus = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let row = (rng.next() % pool as u64) as usize;
        corpus.extend_from_slice(&distinct[row * dim..(row + 1) * dim]);
    }
    (queries, corpus)
}

#[test]
fn matches_naive_exactly_with_ties_across_chunks_and_blocks() {
    let mut rng = Rng(7);
    let dim = 37;
    // > one query block (256) and > one corpus chunk (4096).
    for &(nq, n, k) in &[(300, 5000, 10), (1, 9000, 25), (3, 100, 7), (17, 4097, 1)] {
        let (queries, corpus) = tied_data(&mut rng, nq, n, dim, 60);
        let got = exact_top_k(&queries, &corpus, dim, k, &|_, _| false);
        let want = naive(&queries, &corpus, dim, k, &|_, _| false);
        assert_eq!(got, want, "nq={nq} n={n} k={k}");
        assert!(got.iter().all(|h| h.len() == k));
    }
}

#[test]
fn every_tile_shape_gives_the_same_ranking() {
    // Odd tiles put block and chunk edges everywhere, a shape larger than the data
    // leaves one tile, and one-query blocks make the task count exceed the threads.
    let mut rng = Rng(13);
    let (nq, n, dim, k) = (45, 1300, 19, 12);
    let (queries, corpus) = tied_data(&mut rng, nq, n, dim, 40);
    let skip = |q: usize, d: usize| (q + d).is_multiple_of(11);
    let want = naive(&queries, &corpus, dim, k, &skip);
    for tile in [
        (1, 1),
        (7, 33),
        (45, 1300),
        (1000, 4096),
        (2, 512),
        (44, 129),
    ] {
        let got = exact_top_k_tiled(&queries, &corpus, dim, k, &skip, tile);
        assert_eq!(got, want, "tile {tile:?}");
    }
}

#[test]
fn k_larger_than_corpus_returns_everything_sorted() {
    let mut rng = Rng(11);
    let (queries, corpus) = tied_data(&mut rng, 4, 9, 8, 3);
    let got = exact_top_k(&queries, &corpus, 8, 50, &|_, _| false);
    assert_eq!(got, naive(&queries, &corpus, 8, 50, &|_, _| false));
    assert!(got.iter().all(|h| h.len() == 9));
}

#[test]
fn skip_rule_excludes_pairs() {
    let mut rng = Rng(3);
    let (nq, n, dim) = (40, 6000, 16);
    let (queries, corpus) = tied_data(&mut rng, nq, n, dim, 500);
    // Like MTEB's identical-id rule: query i is document i; also drop every
    // 7th document for odd queries.
    let skip = |q: usize, d: usize| q == d || (q % 2 == 1 && d.is_multiple_of(7));
    let got = exact_top_k(&queries, &corpus, dim, 20, &skip);
    assert_eq!(got, naive(&queries, &corpus, dim, 20, &skip));
    for (q, hits) in got.iter().enumerate() {
        assert!(hits.iter().all(|h| !skip(q, h.doc as usize)));
    }
    // Skipping everything leaves nothing.
    let none = exact_top_k(&queries, &corpus, dim, 5, &|_, _| true);
    assert!(none.iter().all(Vec::is_empty));
}

#[test]
fn float_data_agrees_within_rounding() {
    let mut rng = Rng(5);
    let (nq, n, dim, k) = (50, 3000, 64, 15);
    let queries: Vec<f32> = (0..nq * dim).map(|_| rng.unit()).collect();
    let corpus: Vec<f32> = (0..n * dim).map(|_| rng.unit()).collect();
    let got = exact_top_k(&queries, &corpus, dim, k, &|_, _| false);
    let want = naive(&queries, &corpus, dim, k, &|_, _| false);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), k);
        for (a, b) in g.iter().zip(w) {
            // Summation order differs between GEMM and the naive loop.
            assert!((a.score - b.score).abs() < 1e-4, "{a:?} vs {b:?}");
        }
        assert!(g.windows(2).all(|p| p[0].score >= p[1].score));
    }
}

#[test]
fn degenerate_shapes() {
    assert!(exact_top_k(&[], &[1.0, 2.0], 2, 3, &|_, _| false).is_empty());
    assert_eq!(
        exact_top_k(&[1.0, 0.0], &[], 2, 3, &|_, _| false),
        vec![Vec::<Hit>::new()]
    );
    assert_eq!(
        exact_top_k(&[1.0, 0.0], &[1.0, 0.0], 2, 0, &|_, _| false),
        vec![Vec::<Hit>::new()]
    );
}
