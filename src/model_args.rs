//! The `--model` flag every command that embeds text shares.

use anyhow::{Context, Result};
use sieve_encoder::{EncodeSettings, Encoder};

#[derive(Debug, Clone, clap::Args)]
pub struct ModelName {
    /// Model directory (sentence-transformers layout) or Hugging Face hub id.
    #[arg(
        long,
        short,
        env = "SIEVE_MODEL",
        default_value = "models/all-MiniLM-L6-v2"
    )]
    pub model: String,
}

/// A model and how it runs (for commands without a stage's settings of their own).
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub name: ModelName,

    #[command(flatten)]
    pub encode: EncodeSettings,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Encoder> {
        crate::ensure_positive("batch-size", self.encode.batch_size)?;
        Encoder::load(&self.name.model, &self.encode.load_options()?)
            .with_context(|| format!("loading model {}", self.name.model))
    }
}
