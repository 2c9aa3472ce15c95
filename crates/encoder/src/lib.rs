//! BERT-family sentence-embedding models in candle.
//!
//! A model directory in the sentence-transformers layout (`config.json`,
//! `tokenizer.json`, `model.safetensors`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`) loads into an [`Encoder`], which tokenises in parallel,
//! sorts texts by length, and returns L2-normalised embeddings equal to
//! sentence-transformers' to within float rounding.
//!
//! The forward pass ([`model::BertModel`]) is the one training differentiates: its
//! non-linear pieces live in [`ops`] and are built from ops with gradients.
//!
//! ```no_run
//! use sieve_encoder::{Encoder, LoadOptions};
//! let enc = Encoder::load("models/all-MiniLM-L6-v2", &LoadOptions::default())?;
//! let emb = enc.encode(&["a query", "a document"], 32, &|_| {})?;
//! let cos: f32 = emb.row(0).iter().zip(emb.row(1)).map(|(a, b)| a * b).sum();
//! println!("cosine {cos}");
//! # Ok::<(), sieve_encoder::Error>(())
//! ```

pub mod cache;
pub mod config;
mod encoder;
mod error;
pub mod export;
pub mod fused;
pub mod hub;
pub mod model;
pub mod ops;
pub mod settings;

pub use candle_core::{DType, Device};
pub use config::Pooling;
pub use encoder::{Embeddings, Encoder, LoadOptions};
pub use error::{Error, Result};
pub use settings::EncodeSettings;

/// The device named by `spec`: `cpu`, `cuda[:N]` or `metal[:N]` (the latter two need
/// the crate's `cuda`/`metal` features).
pub fn device(spec: &str) -> Result<Device> {
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => (
            k,
            n.parse::<usize>().map_err(|_| {
                candle_core::Error::Msg(format!("device {spec:?}: ordinal {n:?} is not a number"))
            })?,
        ),
        None => (spec, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(ordinal)?),
        "metal" => Ok(Device::new_metal(ordinal)?),
        other => Err(candle_core::Error::Msg(format!(
            "unknown device {other:?} (cpu, cuda[:N], metal[:N])"
        ))
        .into()),
    }
}
