use std::path::PathBuf;

/// Everything that can stop a pipeline run; each stage's own error says where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pipeline file does not parse, or names a key no stage has.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// The calibrated judge cannot be trusted to mask (see `if_unreachable`).
    #[error("{0}")]
    Untrusted(String),
    #[error("stage `mine`")]
    Mine(#[source] sieve_miner::Error),
    #[error("stage `{stage}`")]
    Judge {
        stage: &'static str,
        #[source]
        source: sieve_judge::Error,
    },
    #[error("stage `train`")]
    Train(#[source] sieve_trainer::Error),
    #[error("stage `{stage}`")]
    Eval {
        stage: String,
        #[source]
        source: sieve_eval::Error,
    },
    #[error("{0}")]
    Encoder(#[from] sieve_encoder::Error),
    #[error("{0}")]
    Data(#[from] sieve_datasets::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
