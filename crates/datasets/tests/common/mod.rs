//! Fixture helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

/// Writes `contents` to `dir/rel`, creating parent directories.
pub fn write(dir: &Path, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, contents).unwrap();
    path
}

pub fn gzip(contents: impl AsRef<[u8]>) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(contents.as_ref()).unwrap();
    enc.finish().unwrap()
}

pub const CORPUS: &str = r#"{"_id": "d1", "title": "Reagan", "text": "Ronald Reagan was a Republican."}
{"_id": "d2", "title": "", "text": "  Cats purr.  "}
{"_id": 3, "text": "Integer id, no title."}
"#;

pub const QUERIES: &str = r#"{"_id": "q1", "text": "was reagan a democrat?"}
{"_id": "q2", "text": "why do cats purr"}
{"_id": "q3", "text": "not in the test split"}
"#;

pub const QRELS: &str = "query-id\tcorpus-id\tscore\nq2\td2\t1\nq1\td1\t2\nq1\t3\t0\n";

/// A BEIR directory with the given files (None: file not written).
pub fn beir_dir(corpus: &str, queries: &str, qrels: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "corpus.jsonl", corpus);
    write(dir.path(), "queries.jsonl", queries);
    write(dir.path(), "qrels/test.tsv", qrels);
    dir
}

pub fn strict() -> sieve_datasets::LoadOptions {
    sieve_datasets::LoadOptions { strict: true }
}

pub fn lenient() -> sieve_datasets::LoadOptions {
    sieve_datasets::LoadOptions { strict: false }
}
