//! Records and streaming readers/writers for BEIR directories, training-pair
//! files and Parquet, with errors that name the file, line and field.
//!
//! Every later stage of sieve (mining, judging, training, evaluation) trusts
//! what this crate hands it, so malformed input fails here, loudly and
//! precisely, and merely suspicious input (duplicate ids, empty texts, qrels
//! pointing nowhere) is loaded, counted in a [`ValidationReport`] and turned
//! into an error only when [`LoadOptions::strict`] asks for it.
//!
//! ```
//! use sieve_datasets::{load_beir, LoadOptions};
//!
//! let dir = std::env::temp_dir().join(format!("sieve-doc-{}", std::process::id()));
//! std::fs::create_dir_all(dir.join("qrels"))?;
//! std::fs::write(
//!     dir.join("corpus.jsonl"),
//!     "{\"_id\": \"d1\", \"title\": \"Reagan\", \"text\": \"was a Republican.\"}\n\
//!      {\"_id\": 2, \"text\": \"Unrelated.\"}\n",
//! )?;
//! std::fs::write(dir.join("queries.jsonl"), "{\"_id\": \"q1\", \"text\": \"reagan party\"}\n")?;
//! std::fs::write(dir.join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\nq1\td1\t1\n")?;
//!
//! let data = load_beir(&dir, "test", LoadOptions { strict: true })?;
//! assert_eq!(data.corpus[0].full_text(), "Reagan was a Republican.");
//! assert_eq!(data.corpus[1].id, "2");
//! assert_eq!(data.qrels["q1"]["d1"], 1);
//! assert!(data.report.is_clean());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod beir;
mod error;
pub mod floats;
mod lines;
pub mod mined;
pub mod npy;
mod pairs;
pub mod parquet_io;
pub mod progress;
mod report;
pub mod rng;
pub mod shard;

pub use beir::{
    corpus_hash, load_beir, read_corpus, read_qrels, read_queries, BeirDataset, CorpusReader,
    Document, Qrel, Qrels, QrelsReader, Query, QueryReader,
};
pub use error::Error;
pub use lines::JsonLines;
pub use pairs::{pairs_schema, read_pairs, write_pairs_parquet, Pair, PairFormat, PairReader};
pub use progress::{Progress, SharedProgress, Silent};
pub use report::{Example, Issue, ValidationReport, MAX_EXAMPLES};

/// How to treat suspicious-but-loadable input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Turn any non-zero [`ValidationReport`] count into [`Error::Strict`],
    /// for pipelines that must not silently train or evaluate on odd data.
    pub strict: bool,
}
