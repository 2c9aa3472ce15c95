use std::path::PathBuf;

/// Everything that can go wrong loading or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenizing: {0}")]
    Tokenize(String),
    #[error("model {spec:?} is neither a local directory nor downloadable from the Hugging Face hub: {message}")]
    Hub { spec: String, message: String },
    #[error("{path}: missing {file} (a model directory needs config.json, tokenizer.json and model.safetensors)")]
    MissingFile { path: PathBuf, file: &'static str },
    /// Writing a file failed (a full disk, a file-size limit) where the writer gave no
    /// `std::io::Error` to keep.
    #[error("{path}: writing failed: {message}")]
    Write { path: PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
