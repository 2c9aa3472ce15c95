//! A bounded top-k selector shared by the BM25 and dense retrievers, so that both
//! rank and break ties the same way.

use std::cmp::Ordering;

use crate::Hit;

/// Total "better than" order on hits: higher score first, then lower corpus
/// position first. Returns `Less` when `a` ranks before `b`.
///
/// Ties must be broken by position so that results do not depend on thread
/// scheduling, chunking or segment layout.
pub(crate) fn rank_order(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc))
}

/// Keeps the `k` best hits seen so far in O(k) memory.
///
/// Candidates go into a buffer of up to `2k`; when it fills, the best `k` are selected
/// (`select_nth_unstable`, O(k)) and the rest dropped, and the `k`-th best score becomes
/// the threshold below which later candidates are not even stored. Each candidate
/// costs O(1) amortised, where a heap paid a sift-down of log k levels for every
/// insertion (5% of a 100k-document exact search). The threshold only rises at a
/// compaction, so between two it may admit a candidate that turns out not to make the
/// cut; it never turns away one that would: it is the `k`-th best of a subset of what
/// was seen, so never above the final `k`-th best score.
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    k: usize,
    hits: Vec<Hit>,
    threshold: Option<f32>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        // Capacity is capped so that a huge `k` (e.g. "everything") does not
        // allocate up front for hits that may never come.
        const MAX_PREALLOCATED: usize = 1 << 12;
        Self {
            k,
            hits: Vec::with_capacity(k.saturating_mul(2).min(MAX_PREALLOCATED)),
            threshold: None,
        }
    }

    /// Offers a candidate. NaN scores cannot be ranked meaningfully and are
    /// dropped rather than allowed to float to the top under `total_cmp`.
    #[inline]
    pub(crate) fn push(&mut self, doc: u32, score: f32) {
        if self.k == 0 || score.is_nan() || self.threshold.is_some_and(|t| score < t) {
            return;
        }
        self.hits.push(Hit { doc, score });
        if self.hits.len() >= self.k.saturating_mul(2) {
            self.compact();
        }
    }

    /// Keeps the best `k` and raises the threshold to the worst of them.
    fn compact(&mut self) {
        // Called with 2k ≥ k + 1 hits: the selection puts the k-th best at k - 1 and
        // only better ones before it.
        let (_, worst, _) = self.hits.select_nth_unstable_by(self.k - 1, rank_order);
        self.threshold = Some(worst.score);
        self.hits.truncate(self.k);
    }

    /// A score below which a candidate cannot enter; `None` until the first
    /// compaction (2k candidates admitted). Lets hot loops skip the push. Candidates at
    /// or above it may still be turned away later.
    #[inline]
    pub(crate) fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// The kept hits, best first.
    pub(crate) fn into_sorted(mut self) -> Vec<Hit> {
        self.hits.sort_unstable_by(rank_order);
        self.hits.truncate(self.k);
        self.hits
    }
}

/// Merges several best-first lists of hits over disjoint documents into the
/// overall best `k`, best first.
pub(crate) fn merge(lists: Vec<Vec<Hit>>, k: usize) -> Vec<Hit> {
    let mut all: Vec<Hit> = lists.into_iter().flatten().collect();
    all.sort_unstable_by(rank_order);
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_with_position_tie_break() {
        let mut top = TopK::new(3);
        for (doc, score) in [(5, 1.0), (1, 2.0), (3, 1.0), (4, 1.0), (0, 0.5), (2, 2.0)] {
            top.push(doc, score);
        }
        let docs: Vec<u32> = top.into_sorted().iter().map(|h| h.doc).collect();
        assert_eq!(docs, vec![1, 2, 3]);
    }

    /// Against sorting everything: streams with many tied scores (so the position
    /// tie-break decides), in several orders, for k from 1 to past the stream's length,
    /// through many compactions; the threshold never exceeds the final k-th score.
    #[test]
    fn equals_a_full_sort_through_compactions() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for &n in &[0usize, 1, 7, 100, 1000] {
            for &levels in &[3u64, 50, 1 << 20] {
                let mut stream: Vec<Hit> = (0..n as u32)
                    .map(|doc| Hit {
                        doc,
                        score: (next() % levels) as f32 / levels as f32,
                    })
                    .collect();
                for order in 0..3 {
                    match order {
                        0 => {}
                        1 => stream.reverse(),
                        _ => stream.sort_by(|a, b| a.score.total_cmp(&b.score)),
                    }
                    for &k in &[1usize, 2, 10, 99, 100, 1500] {
                        let mut top = TopK::new(k);
                        let mut worst_threshold = f32::NEG_INFINITY;
                        for h in &stream {
                            top.push(h.doc, h.score);
                            if let Some(t) = top.threshold() {
                                worst_threshold = worst_threshold.max(t);
                            }
                        }
                        let mut want = stream.clone();
                        want.sort_by(rank_order);
                        want.truncate(k);
                        if let Some(last) = want.last() {
                            if want.len() == k {
                                assert!(worst_threshold <= last.score, "n {n} k {k}");
                            }
                        }
                        assert_eq!(
                            top.into_sorted(),
                            want,
                            "n {n} levels {levels} order {order} k {k}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn nan_is_dropped_and_zero_k_is_empty() {
        let mut top = TopK::new(2);
        top.push(0, f32::NAN);
        top.push(1, -1.0);
        assert_eq!(
            top.into_sorted(),
            vec![Hit {
                doc: 1,
                score: -1.0
            }]
        );
        let mut none = TopK::new(0);
        none.push(0, 1.0);
        assert!(none.into_sorted().is_empty());
    }
}
