//! Options every command that embeds text shares.

use anyhow::{Context, Result};
use sieve_encoder::{Encoder, LoadOptions};

use crate::ensure_positive;

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model directory (sentence-transformers layout) or Hugging Face hub id.
    #[arg(
        long,
        short,
        env = "SIEVE_MODEL",
        default_value = "models/all-MiniLM-L6-v2"
    )]
    pub model: String,

    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,

    /// Token limit per text (default: the model's sentence_bert_config.json).
    #[arg(long)]
    pub max_seq_length: Option<usize>,

    /// cpu, cuda[:N] or metal[:N] (GPU builds need --features cuda/metal).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Encoder> {
        ensure_positive("batch-size", self.batch_size)?;
        let device = sieve_encoder::device(&self.device)?;
        Encoder::load(
            &self.model,
            &LoadOptions {
                device,
                max_seq_length: self.max_seq_length,
                ..Default::default()
            },
        )
        .with_context(|| format!("loading model {}", self.model))
    }

    /// The directory's name for a local model (as MTEB names result folders), else the
    /// hub id.
    pub fn display_name(&self) -> String {
        let p = std::path::Path::new(&self.model);
        match p.file_name() {
            Some(name) if p.is_dir() => name.to_string_lossy().to_string(),
            _ => self.model.clone(),
        }
    }
}
