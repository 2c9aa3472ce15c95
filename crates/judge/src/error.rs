use std::path::PathBuf;

/// Everything that can go wrong while judging. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: prompt template: {message}")]
    Template { path: PathBuf, message: String },
    #[error("{path}: verdict cache: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("judge configuration: {0}")]
    Config(String),
    /// The server refused the credentials (401/403): every request would fail.
    #[error(
        "{endpoint} refused the request ({detail}); check the API key variable and the model name"
    )]
    Unauthorized { endpoint: String, detail: String },
    /// Too many pairs failed every attempt for the labels to be a result.
    #[error(
        "{failed} of {attempted} pairs failed every attempt (more than max_error_share {limit}); \
         {} keeps what was judged and the next run retries the rest; is the server up?",
        out.display()
    )]
    TooManyFailures {
        failed: usize,
        attempted: usize,
        limit: f64,
        out: PathBuf,
    },
    /// Calibration over 0/1 scores: its threshold would rank nothing.
    #[error(
        "{binary} of {judged} calibration verdicts from {endpoint} came without logprobs \
         (P(relevant) 0 or 1), so a calibrated threshold would be meaningless; use a server \
         that returns logprobs, or pass --allow-binary-scores (pipeline: \
         `allow_binary_scores = true` in [judge]) to calibrate on them anyway"
    )]
    BinaryScores {
        binary: usize,
        judged: usize,
        endpoint: String,
    },
    #[error(transparent)]
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
