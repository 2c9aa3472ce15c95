//! How a command runs the model, defined once: the `--batch-size`, `--max-seq-length`
//! and `--device` flags of every command that embeds text, and the same keys in a
//! pipeline table, share this type and its defaults.

use serde::{Deserialize, Serialize};

use crate::{DType, LoadOptions, Result};

/// Texts per forward pass when embedding (sentence-transformers' `encode` default).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Model-running settings of a stage that embeds text (mining, evaluation, encoding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct EncodeSettings {
    /// Texts per forward pass.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_BATCH_SIZE))]
    pub batch_size: usize,

    /// Token limit per text (default: the model's sentence_bert_config.json).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_seq_length: Option<usize>,

    /// cpu, cuda[:N] or metal[:N] (GPU builds need --features cuda/metal).
    #[cfg_attr(feature = "clap", arg(long, default_value = "cpu"))]
    pub device: String,

    /// Prepended to every query before it is embedded, e.g. "query: " (e5) or a task
    /// instruction (bge, gte); replaces the model's own query prompt (the `query` entry
    /// of `prompts` in config_sentence_transformers.json, which applies by default).
    #[cfg_attr(feature = "clap", arg(long))]
    pub query_prompt: Option<String>,

    /// Prepended to every document before it is embedded, e.g. "passage: "; replaces
    /// the model's own (its `document`, `passage` or `corpus` prompt).
    #[cfg_attr(feature = "clap", arg(long))]
    pub document_prompt: Option<String>,
}

impl Default for EncodeSettings {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            max_seq_length: None,
            device: "cpu".into(),
            query_prompt: None,
            document_prompt: None,
        }
    }
}

impl EncodeSettings {
    /// The encoder's load options (f32 weights, normalised embeddings).
    pub fn load_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: crate::device(&self.device)?,
            max_seq_length: self.max_seq_length,
            query_prompt: self.query_prompt.clone(),
            document_prompt: self.document_prompt.clone(),
            ..Default::default()
        })
    }
}

/// The weights dtype named by `spec`: f32, f64, bf16 or f16.
pub fn dtype(spec: &str) -> Result<DType> {
    Ok(match spec {
        "f32" => DType::F32,
        "f64" => DType::F64,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => {
            return Err(candle_core::Error::Msg(format!(
                "dtype {other:?}: expected f32, bf16, f16 or f64"
            ))
            .into())
        }
    })
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: EncodeSettings,
    }

    /// The command line's defaults are the pipeline's (`Default`, what an empty table
    /// reads as).
    #[test]
    fn command_line_and_table_defaults_agree() {
        let cli = Cli::parse_from(["x"]).s;
        assert_eq!(cli, EncodeSettings::default());
        let table: EncodeSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(table, cli);
    }
}
