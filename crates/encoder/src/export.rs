//! Writes a model directory in the sentence-transformers layout, so that
//! `SentenceTransformer(dir)`, text-embeddings-inference and sieve itself load it as is:
//!
//! ```text
//! config.json  tokenizer.json (+ the source's other tokenizer files)  model.safetensors
//! modules.json  sentence_bert_config.json  config_sentence_transformers.json
//! 1_Pooling/config.json  (2_Normalize/ when embeddings are normalised)
//! ```
//!
//! `1_Pooling/config.json` carries both the legacy `pooling_mode_*` booleans, which
//! sentence-transformers reads, and `pooling_mode`, which text-embeddings-inference
//! needs. Every file is written to a temporary name and renamed into place, the weights
//! last, so a crash never leaves a file half-written; other files already in the
//! directory (a training run's checkpoints and logs) are left alone.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::config::{ModuleEntry, PoolingConfig, SentenceBertConfig};
use crate::error::{Error, Result};
use crate::Encoder;

/// Files copied from the source model when present: tokenizer and model configuration.
const COPIED_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
];

/// Writes `tensors` to `path` as safetensors with the permissions any other file sieve
/// writes gets (0666 less the umask): the safetensors crate writes through a private
/// temporary file, which left exported weights 0600 beside 0644 configs.
///
/// A failed write (a full disk) removes what it wrote and names the file: candle's own
/// error names neither.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Err(e) = candle_core::safetensors::save(tensors, path) {
        let _ = std::fs::remove_file(path);
        return Err(match e {
            candle_core::Error::Io(source) => Error::Io {
                path: path.into(),
                source,
            },
            other => Error::Write {
                path: path.into(),
                message: other.to_string(),
            },
        });
    }
    as_created(path).map_err(io(path))
}

/// Gives `path` the mode a newly created file in its directory gets.
pub fn as_created(path: &Path) -> std::io::Result<()> {
    let probe = path.with_extension(format!("mode-probe-{}", std::process::id()));
    std::fs::File::create(&probe)?;
    let perms = std::fs::metadata(&probe)?.permissions();
    std::fs::remove_file(&probe)?;
    std::fs::set_permissions(path, perms)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.into(),
        source,
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(&tmp)(e)
    })?;
    rename(&tmp, path)
}

/// Exports `encoder`'s architecture and tokenizer with `weights` (name → tensor, as
/// in the source `model.safetensors`; source tensors missing from `weights`, such as an
/// unused pooler, are copied unchanged) into the directory `out`.
pub fn export(encoder: &Encoder, weights: &HashMap<String, Tensor>, out: &Path) -> Result<()> {
    let result = export_inner(encoder, weights, out);
    if result.is_err() {
        // A failed export (a full disk) leaves no temporary files behind to fill it
        // further; the files already renamed are complete, and without
        // `model.safetensors` (renamed last) no stage takes the directory for a model.
        for file in COPIED_FILES {
            let _ = std::fs::remove_file(out.join(format!(".{file}.tmp")));
        }
        let _ = std::fs::remove_file(out.join(".model.safetensors.tmp"));
    }
    result
}

fn export_inner(encoder: &Encoder, weights: &HashMap<String, Tensor>, out: &Path) -> Result<()> {
    let src = encoder.dir();
    std::fs::create_dir_all(out.join("1_Pooling")).map_err(io(out))?;
    for file in COPIED_FILES {
        let from = src.join(file);
        if from.exists() && from != out.join(file) {
            let tmp = out.join(format!(".{file}.tmp"));
            std::fs::copy(&from, &tmp).map_err(io(&tmp))?;
            rename(&tmp, &out.join(file))?;
        }
    }

    // Weights: the source's tensors, replaced by the trained ones.
    let src_weights = src.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&src_weights, &candle_core::Device::Cpu)?;
    for (name, t) in weights {
        let original = tensors.get(name).map(|o| o.dtype());
        let t = t.to_device(&candle_core::Device::Cpu)?;
        // Keep the source's dtype so that a model trained in f32 from f16 weights
        // stays the size users expect.
        let t = match original {
            Some(dtype) if dtype != t.dtype() => t.to_dtype(dtype)?,
            _ => t,
        };
        tensors.insert(name.clone(), t);
    }
    let weights_tmp = out.join(".model.safetensors.tmp");
    save_tensors(&tensors, &weights_tmp)?;

    let dim = encoder.dim();
    let mut modules = vec![
        ModuleEntry {
            idx: 0,
            name: "0".into(),
            path: String::new(),
            kind: "sentence_transformers.models.Transformer".into(),
        },
        ModuleEntry {
            idx: 1,
            name: "1".into(),
            path: "1_Pooling".into(),
            kind: "sentence_transformers.models.Pooling".into(),
        },
    ];
    if encoder.normalize() {
        std::fs::create_dir_all(out.join("2_Normalize")).map_err(io(out))?;
        modules.push(ModuleEntry {
            idx: 2,
            name: "2".into(),
            path: "2_Normalize".into(),
            kind: "sentence_transformers.models.Normalize".into(),
        });
    }
    write_json(&out.join("modules.json"), &modules)?;
    let do_lower_case = std::fs::read(src.join("sentence_bert_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<SentenceBertConfig>(&b).ok())
        .map(|c| c.do_lower_case)
        .unwrap_or(false);
    write_json(
        &out.join("sentence_bert_config.json"),
        &SentenceBertConfig {
            max_seq_length: Some(encoder.max_seq_length()),
            do_lower_case,
        },
    )?;
    write_json(
        &out.join("1_Pooling/config.json"),
        &PoolingConfig::for_mode(encoder.pooling(), dim),
    )?;
    let (prompts, default_prompt_name) = encoder.prompts().exported();
    write_json(
        &out.join("config_sentence_transformers.json"),
        &serde_json::json!({
            "__version__": {"sieve": env!("CARGO_PKG_VERSION")},
            "prompts": prompts,
            "default_prompt_name": default_prompt_name,
            "similarity_fn_name": "cosine",
        }),
    )?;

    rename(&weights_tmp, &out.join("model.safetensors"))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io(to))
}
