use std::path::PathBuf;

/// Everything that can go wrong while mining.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Data(#[from] sieve_datasets::Error),
    #[error(transparent)]
    Index(#[from] sieve_index::Error),
    /// Building or storing an index failed (tantivy's errors do not name the directory).
    #[error("building the {what} index in {}: {source}", dir.display())]
    Build {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: sieve_index::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Input that cannot be mined (no queries, embeddings of the wrong shape…).
    #[error("{0}")]
    Input(String),
    /// A mined file or shard that does not fit with the others or with this run.
    #[error("{path}: {problem}")]
    Mismatch { path: PathBuf, problem: String },
    /// A setting out of range (named as the setting is).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Encoder(#[from] sieve_encoder::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn mismatch(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Mismatch {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
