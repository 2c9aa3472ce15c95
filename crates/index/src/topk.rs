//! A bounded top-k selector shared by the BM25 and dense retrievers, so that both
//! rank and break ties the same way.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::Hit;

/// Total "better than" order on hits: higher score first, then lower corpus
/// position first. Returns `Less` when `a` ranks before `b`.
///
/// Ties must be broken by position so that results do not depend on thread
/// scheduling, chunking or segment layout.
pub(crate) fn rank_order(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc))
}

/// Heap entry ordered so that the *worst* kept hit sits on top of the max-heap,
/// where it can be compared with (and replaced by) each new candidate in O(1).
#[derive(Debug, Clone, Copy)]
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        rank_order(&self.0, &other.0)
    }
}

/// Keeps the `k` best hits seen so far in O(k) memory.
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        // Capacity is capped so that a huge `k` (e.g. "everything") does not
        // allocate up front for hits that may never come.
        const MAX_PREALLOCATED: usize = 1 << 12;
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.min(MAX_PREALLOCATED)),
        }
    }

    /// Offers a candidate. NaN scores cannot be ranked meaningfully and are
    /// dropped rather than allowed to float to the top under `total_cmp`.
    #[inline]
    pub(crate) fn push(&mut self, doc: u32, score: f32) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        let hit = Hit { doc, score };
        if self.heap.len() < self.k {
            self.heap.push(Worst(hit));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if rank_order(&hit, &worst.0) == Ordering::Less {
                *worst = Worst(hit);
            }
        }
    }

    /// Score a candidate must beat (or tie with a lower position) to enter;
    /// `None` while fewer than `k` hits are held. Lets hot loops skip the heap.
    #[inline]
    pub(crate) fn threshold(&self) -> Option<f32> {
        if self.heap.len() < self.k {
            None
        } else {
            self.heap.peek().map(|w| w.0.score)
        }
    }

    /// The kept hits, best first.
    pub(crate) fn into_sorted(self) -> Vec<Hit> {
        // `into_sorted_vec` is ascending in `Worst` order, i.e. best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|w| w.0)
            .collect()
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
