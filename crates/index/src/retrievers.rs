//! The dense retriever behind the same [`Retriever`] trait as BM25 (hybrid search is
//! [`crate::HybridSearch`], the miner's candidate generator).

use crate::{exact_top_k, Error, Hit, HnswIndex, Retriever};

/// Embeds query texts for dense retrieval. This crate knows nothing of models: the
/// caller adapts its encoder (rows L2-normalised, `dim` wide).
pub trait QueryEncoder: Sync {
    fn dim(&self) -> usize;
    fn encode_queries(&self, queries: &[&str]) -> Result<Vec<f32>, Error>;
}

/// Cosine top-k over a precomputed, L2-normalised corpus matrix: exact by default,
/// or through an HNSW index built over the same matrix.
pub struct DenseRetriever<E> {
    encoder: E,
    corpus: Vec<f32>,
    ann: Option<HnswIndex>,
}

impl<E: QueryEncoder> DenseRetriever<E> {
    /// `corpus` is `n × encoder.dim()`, row-major, rows L2-normalised.
    pub fn new(encoder: E, corpus: Vec<f32>) -> Result<Self, Error> {
        let dim = encoder.dim();
        if dim == 0 || !corpus.len().is_multiple_of(dim) {
            return Err(Error::Embed(format!(
                "corpus matrix of {} values is not a whole number of {dim}-wide rows",
                corpus.len()
            )));
        }
        Ok(Self {
            encoder,
            corpus,
            ann: None,
        })
    }

    /// Searches `ann` instead of scanning every document.
    pub fn with_hnsw(mut self, ann: HnswIndex) -> Result<Self, Error> {
        let n = self.corpus.len() / self.encoder.dim();
        if ann.len() != n || ann.dim() != self.encoder.dim() {
            return Err(Error::Embed(format!(
                "HNSW index of {} × {} does not match the corpus of {n} × {}",
                ann.len(),
                ann.dim(),
                self.encoder.dim()
            )));
        }
        self.ann = Some(ann);
        Ok(self)
    }
}

impl<E: QueryEncoder> Retriever for DenseRetriever<E> {
    fn retrieve(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>, Error> {
        let q = self.encoder.encode_queries(queries)?;
        let dim = self.encoder.dim();
        if q.len() != queries.len() * dim {
            return Err(Error::Embed(format!(
                "the encoder returned {} values for {} queries of dimension {dim}",
                q.len(),
                queries.len()
            )));
        }
        Ok(match &self.ann {
            Some(ann) => ann.search(&q, k),
            None => exact_top_k(&q, &self.corpus, dim, k, &|_, _| false),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Embeds a text as the normalised counts of four marker words.
    struct Counts;
    impl QueryEncoder for Counts {
        fn dim(&self) -> usize {
            4
        }
        fn encode_queries(&self, queries: &[&str]) -> Result<Vec<f32>, Error> {
            Ok(queries.iter().flat_map(|q| embed(q)).collect())
        }
    }
    /// A text as the normalised counts of four marker words (shared with the
    /// candidate generator's tests).
    pub(crate) fn embed(text: &str) -> Vec<f32> {
        let mut v: Vec<f32> = ["red", "green", "blue", "gold"]
            .iter()
            .map(|w| text.matches(w).count() as f32 + 0.01)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    #[test]
    fn dense_retrieves_through_the_trait() {
        let texts = [
            "red red apple",
            "green leaf",
            "blue sea blue",
            "gold coin red",
            "plain",
        ];
        let corpus: Vec<f32> = texts.iter().flat_map(|t| embed(t)).collect();
        let dense = DenseRetriever::new(Counts, corpus.clone()).unwrap();
        let hits = dense.retrieve(&["blue"], 2).unwrap();
        assert_eq!(hits[0][0].doc, 2);

        let hnsw = HnswIndex::build(&corpus, 4, crate::HnswParams::default()).unwrap();
        let approx = DenseRetriever::new(Counts, corpus)
            .unwrap()
            .with_hnsw(hnsw)
            .unwrap();
        assert_eq!(approx.retrieve(&["blue"], 1).unwrap()[0][0].doc, 2);
    }
}
