//! Reciprocal-rank fusion (Cormack, Clarke & Büttcher 2009): a document's fused score
//! is `Σ 1 / (k + rank)` over the lists it appears in (ranks from 1). It needs no
//! score calibration between BM25 and cosine, which live on unrelated scales.

use std::collections::HashMap;

use crate::Hit;

/// The `k` of the original paper and of most hybrid-search systems (Elasticsearch,
/// Vespa, Weaviate): it damps the weight of the very first ranks.
pub const DEFAULT_RRF_K: f32 = 60.0;

/// Fuses ranked lists (each best first) into one, best first; a document's `score`
/// is its fused score. Ties are broken by the best rank the document reached in any
/// list, then by lower position, so the result does not depend on list order.
pub fn fuse_rrf(lists: &[&[Hit]], k: f32) -> Vec<Hit> {
    // doc -> (fused score, best rank)
    let mut acc: HashMap<u32, (f64, usize)> = HashMap::new();
    for list in lists {
        for (i, hit) in list.iter().enumerate() {
            let rank = i + 1;
            let e = acc.entry(hit.doc).or_insert((0.0, rank));
            // Summed in f64 in list order; sums of a few terms are exact enough that
            // the order of lists cannot flip a comparison in practice.
            e.0 += 1.0 / (f64::from(k) + rank as f64);
            e.1 = e.1.min(rank);
        }
    }
    let mut fused: Vec<(u32, f64, usize)> = acc.into_iter().map(|(d, (s, r))| (d, s, r)).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    fused
        .into_iter()
        .map(|(doc, score, _)| Hit {
            doc,
            score: score as f32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(docs: &[u32]) -> Vec<Hit> {
        docs.iter().map(|&doc| Hit { doc, score: 0.0 }).collect()
    }

    #[test]
    fn fuses_by_reciprocal_rank() {
        let a = hits(&[1, 2, 3]);
        let b = hits(&[3, 4]);
        let fused = fuse_rrf(&[&a, &b], 60.0);
        let docs: Vec<u32> = fused.iter().map(|h| h.doc).collect();
        // 3: 1/63 + 1/61 beats 1: 1/61; 2 (1/62) ties 4 (1/62): both best rank 2, lower doc first.
        assert_eq!(docs, vec![3, 1, 2, 4]);
        assert!((fused[0].score - (1.0 / 63.0 + 1.0 / 61.0) as f32).abs() < 1e-7);
        // Symmetric in list order.
        let swapped: Vec<u32> = fuse_rrf(&[&b, &a], 60.0).iter().map(|h| h.doc).collect();
        assert_eq!(swapped, docs);
        assert!(fuse_rrf(&[], 60.0).is_empty());
    }
}
