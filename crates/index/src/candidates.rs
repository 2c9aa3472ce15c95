//! The one candidate generator: per query, the top k by BM25 and by dense cosine
//! (exact, or through an HNSW index), fused by reciprocal rank. `sieve mine` builds
//! its candidates with it and `sieve eval --retriever hybrid` scores exactly these
//! lists, so the evaluation measures what the miner hands the judge.

use rayon::prelude::*;

use crate::{exact_top_k, fuse_rrf, Bm25Index, DeviceCorpus, Error, Hit, HnswIndex};

/// One query's lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// BM25's top `bm25_k`, best first.
    pub bm25: Vec<Hit>,
    /// The dense top `dense_k`, best first (cosine scores).
    pub dense: Vec<Hit>,
    /// The BM25 score of each `dense` hit (0 where it shares no term), from the same
    /// pass, so a candidate only the dense side found still has one.
    pub dense_bm25: Vec<f32>,
    /// Both lists fused by reciprocal rank (fused scores).
    pub fused: Vec<Hit>,
}

/// A hybrid search over one corpus: its BM25 index and its L2-normalised embeddings.
pub struct HybridSearch<'a> {
    pub bm25: &'a Bm25Index,
    /// `documents × dim`, row-major, rows L2-normalised.
    pub corpus: &'a [f32],
    pub dim: usize,
    /// Search this instead of scanning every document.
    pub ann: Option<&'a HnswIndex>,
    /// Scan the corpus exactly on this device (a GPU) rather than on the CPU.
    pub device: Option<&'a DeviceCorpus>,
    pub bm25_k: usize,
    pub dense_k: usize,
    pub rrf_k: f32,
}

impl HybridSearch<'_> {
    /// The lists of each query (`texts[i]` embedded as row `i` of `queries`), leaving
    /// out documents `exclude(query, document)` names (a query's own id in the
    /// corpus): each list is searched one deeper so that dropping one still leaves k.
    pub fn search(
        &self,
        texts: &[&str],
        queries: &[f32],
        exclude: &(dyn Fn(usize, usize) -> bool + Sync),
    ) -> Result<Vec<Candidates>, Error> {
        if queries.len() != texts.len() * self.dim {
            return Err(Error::Embed(format!(
                "{} query values for {} queries of dimension {}",
                queries.len(),
                texts.len(),
                self.dim
            )));
        }
        let dense: Vec<Vec<Hit>> = match self.ann {
            Some(ann) => ann
                .search(queries, self.dense_k + 1)
                .into_iter()
                .enumerate()
                .map(|(qi, hits)| {
                    hits.into_iter()
                        .filter(|h| !exclude(qi, h.doc as usize))
                        .take(self.dense_k)
                        .collect()
                })
                .collect(),
            None => match self.device {
                Some(d) if DeviceCorpus::fits(self.dense_k, 1) => {
                    d.top_k(queries, self.dense_k, exclude, 1)?
                }
                _ => exact_top_k(queries, self.corpus, self.dim, self.dense_k, exclude),
            },
        };
        let extra: Vec<Vec<u32>> = dense
            .iter()
            .map(|hits| hits.iter().map(|h| h.doc).collect())
            .collect();
        let bm25 = self
            .bm25
            .search_with_scores(texts, self.bm25_k + 1, &extra)?;
        Ok(bm25
            .into_par_iter()
            .zip(dense)
            .enumerate()
            .map(|(qi, ((all, dense_bm25), dense))| {
                let bm25: Vec<Hit> = all
                    .into_iter()
                    .filter(|h| !exclude(qi, h.doc as usize))
                    .take(self.bm25_k)
                    .collect();
                let fused = fuse_rrf(&[&bm25, &dense], self.rrf_k);
                Candidates {
                    bm25,
                    dense,
                    dense_bm25,
                    fused,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrievers::tests::embed;
    use crate::Retriever;

    /// The lists equal BM25's and the exact dense search's own, fused by
    /// `fuse_rrf`; an excluded document is in none of them.
    #[test]
    fn lists_match_their_parts_and_exclusions_hold() {
        let texts = [
            "red red apple",
            "green leaf",
            "blue sea blue",
            "gold coin red",
            "plain",
        ];
        let corpus: Vec<f32> = texts.iter().flat_map(|t| embed(t)).collect();
        let bm25 = Bm25Index::build_from_texts(&texts, None).unwrap();
        let queries = ["gold coin", "leaf blue"];
        let q: Vec<f32> = queries.iter().flat_map(|t| embed(t)).collect();
        let search = HybridSearch {
            bm25: &bm25,
            corpus: &corpus,
            dim: 4,
            ann: None,
            device: None,
            bm25_k: 3,
            dense_k: 3,
            rrf_k: 60.0,
        };
        let got = search.search(&queries, &q, &|_, _| false).unwrap();
        let b = bm25.retrieve(&queries, 3).unwrap();
        let d = exact_top_k(&q, &corpus, 4, 3, &|_, _| false);
        for i in 0..2 {
            assert_eq!(got[i].bm25, b[i]);
            assert_eq!(got[i].dense, d[i]);
            assert_eq!(got[i].fused, fuse_rrf(&[&b[i], &d[i]], 60.0));
        }
        assert_eq!(got[0].fused[0].doc, 3, "both lists rank doc 3 first");
        assert!((got[0].fused[0].score - 2.0 / 61.0).abs() < 1e-6);
        // The dense hits' BM25 scores come from the same pass.
        let doc3 = got[0].dense.iter().position(|h| h.doc == 3).unwrap();
        assert!(got[0].dense_bm25[doc3] > 0.0);

        let excluded = search
            .search(&queries, &q, &|qi, d| qi == 0 && d == 3)
            .unwrap();
        let e = &excluded[0];
        assert!(e
            .fused
            .iter()
            .chain(&e.bm25)
            .chain(&e.dense)
            .all(|h| h.doc != 3));
        assert_eq!(e.dense.len(), 3, "the dense list is still 3 deep");
        assert_eq!(excluded[1], got[1]);
    }
}
