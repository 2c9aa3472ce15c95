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
pub mod prompts;
pub mod settings;

pub use candle_core::{DType, Device};
pub use config::Pooling;
pub use encoder::{Embeddings, Encoder, LoadOptions};
pub use error::{Error, Result};
pub use prompts::{Prompts, Role};
pub use settings::EncodeSettings;

/// Opens CUDA device `ordinal`. cudarc loads libcuda, libcublas, ... when the first
/// device is opened and panics if one is missing; that becomes an error naming it.
fn cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Ok(Device::new_cuda(ordinal)?);
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    std::panic::set_hook(hook);
    match opened {
        Ok(device) => Ok(device?),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            // cudarc's message lists every file name it tried; the first clause says which.
            let short = message.split(" - searched").next().unwrap_or(&message);
            Err(candle_core::Error::Msg(format!(
                "cuda:{ordinal}: {short} (the CUDA driver and the CUDA 13 libraries must be on \
                 the loader's path, e.g. LD_LIBRARY_PATH; see bench/gpu/README.md)"
            ))
            .into())
        }
    }
}

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
        "cuda" => cuda(ordinal),
        "metal" => Ok(Device::new_metal(ordinal)?),
        other => Err(candle_core::Error::Msg(format!(
            "unknown device {other:?} (cpu, cuda[:N], metal[:N])"
        ))
        .into()),
    }
}
