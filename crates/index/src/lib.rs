//! Retrieval over a corpus: BM25 (tantivy) and exact dense top-k (on the CPU, or a
//! GPU through candle: [`DeviceCorpus`]) behind one small [`Retriever`] trait.
//!
//! Hits always refer to a document's position in the corpus slice the index
//! was built from, so callers map them back to ids without another lookup, and
//! every retriever ranks the same way: higher score first, ties broken by lower
//! position, so results are reproducible across threads and runs.

mod bm25;
mod candidates;
mod dense;
mod dense_device;
mod fusion;
mod hnsw;
mod retrievers;
mod topk;

use std::path::PathBuf;

pub use bm25::{Bm25Index, Bm25Params, DEFAULT_BM25_PARAMS, ENGLISH_STOP_WORDS};
pub use candidates::{Candidates, HybridSearch};
pub use dense::{exact_top_k, exact_top_k_tiled};
pub use dense_device::{exact_top_k_on, DeviceCorpus};
pub use fusion::{fuse_rrf, DEFAULT_RRF_K};
pub use hnsw::{
    ef_search_for, measured_recall, HnswIndex, HnswParams, MeasuredRecall,
    DEFAULT_HNSW_EF_CONSTRUCTION, DEFAULT_HNSW_EF_SEARCH, DEFAULT_HNSW_M, DEFAULT_HNSW_PARAMS,
    NORM_TOLERANCE,
};
pub use retrievers::{DenseRetriever, QueryEncoder};

/// One retrieved document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Position of the document in the corpus slice the index was built from.
    pub doc: u32,
    /// Retriever-specific relevance score; higher is better.
    pub score: f32,
}

/// Anything that turns query texts into ranked documents.
pub trait Retriever {
    /// Returns, for each query, at most `k` hits, best first.
    fn retrieve(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>, Error>;
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// tantivy failed (I/O, locking, an existing index in the target directory…).
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// Reading posting lists failed.
    #[error("reading the index: {0}")]
    Read(#[from] std::io::Error),
    /// A filesystem operation on a given path failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Positions are `u32`; a larger corpus cannot be indexed.
    #[error("corpus of {0} documents exceeds the u32 position range")]
    TooManyDocuments(usize),
    /// Embedding queries failed, or embeddings do not fit the index.
    #[error("dense retrieval: {0}")]
    Embed(String),
    /// The directory holds an index this crate did not write (or a damaged one).
    #[error("not a sieve BM25 index: {0}")]
    Corrupt(String),
    /// A vector given to the HNSW index is not unit length (hnsw_rs's cosine
    /// distance assumes it and would abort mid-build).
    #[error("row {row} has L2 norm {norm}, expected 1 ± {tol}: normalise the embeddings first", tol = crate::NORM_TOLERANCE)]
    NotNormalized {
        /// Position of the first offending row.
        row: usize,
        /// Its norm (NaN if the row holds NaN).
        norm: f32,
    },
    /// Shapes or parameters that cannot describe an index.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// hnsw_rs failed, or a dumped HNSW index is missing parts, damaged, or
    /// inconsistent with its sidecar.
    #[error("HNSW index: {0}")]
    Hnsw(String),
}
