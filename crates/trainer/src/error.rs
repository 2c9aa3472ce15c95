use std::path::PathBuf;

/// Everything that can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("training data: {0}")]
    Data(String),
    #[error("training settings: {0}")]
    Config(String),
    #[error(
        "the loss became {loss} at step {step}: lower the learning rate or raise the temperature"
    )]
    Diverged { step: u64, loss: f64 },
    #[error(transparent)]
    Datasets(#[from] sieve_datasets::Error),
    #[error(transparent)]
    Encoder(#[from] sieve_encoder::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
