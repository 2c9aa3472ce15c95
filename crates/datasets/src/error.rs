use std::path::PathBuf;

use crate::ValidationReport;

/// Every failure of this crate.
///
/// Each variant that comes from input carries the file and, where there is
/// one, the 1-based line number (for Parquet files: the 1-based row number),
/// so that a user can open the file at the offending place without rerunning
/// anything under a debugger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening, reading, writing or renaming a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A line is not valid UTF-8; checked before any parsing so the message
    /// points at the encoding rather than at a confusing JSON error.
    #[error("{}:{line}: invalid UTF-8", path.display())]
    InvalidUtf8 { path: PathBuf, line: usize },

    /// A JSONL line does not parse; `message` includes the column.
    #[error("{}:{line}: invalid JSON: {message}", path.display())]
    InvalidJson {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A record parses but is not the shape we need (e.g. a JSON array where
    /// an object was expected).
    #[error("{}:{line}: {problem}", path.display())]
    Record {
        path: PathBuf,
        line: usize,
        problem: String,
    },

    /// One named field (JSON key, TSV or Parquet column) is missing or has an
    /// unusable value.
    #[error("{}:{line}: field \"{field}\": {problem}", path.display())]
    Field {
        path: PathBuf,
        line: usize,
        field: String,
        problem: String,
    },

    /// A TSV row has the wrong number of tab-separated columns.
    #[error("{}:{line}: expected {expected} columns, found {found}", path.display())]
    Columns {
        path: PathBuf,
        line: usize,
        expected: String,
        found: usize,
    },

    /// The file as a whole cannot be used (unknown extension, wrong schema).
    #[error("{}: {problem}", path.display())]
    Format { path: PathBuf, problem: String },

    /// The Parquet layer rejected the file (corrupt footer, unsupported type).
    #[error("{}: parquet: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Arrow rejected data while decoding or assembling record batches.
    #[error("{}: arrow: {source}", path.display())]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow::error::ArrowError,
    },

    /// Strict mode was requested and the input had countable problems; the
    /// report lists every category with examples so one run shows them all.
    #[error("strict mode: the input has problems\n{report}")]
    Strict { report: Box<ValidationReport> },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn field(
        path: impl Into<PathBuf>,
        line: usize,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Error::Field {
            path: path.into(),
            line,
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn arrow(path: impl Into<PathBuf>, source: arrow::error::ArrowError) -> Self {
        Error::Arrow {
            path: path.into(),
            source,
        }
    }
}
