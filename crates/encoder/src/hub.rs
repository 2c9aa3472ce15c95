//! Resolving a model argument to a local directory: a path is used as is, anything
//! else is treated as a Hugging Face hub id and downloaded into the hub cache.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Files fetched for a hub id; the optional ones may be absent from a repository.
const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
const OPTIONAL_FILES: [&str; 4] = [
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
];

/// Returns a directory holding the model files for `spec`.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists()
        || spec.starts_with('.')
        || spec.starts_with('/')
        || spec.matches('/').count() > 1
    {
        return Err(Error::Hub {
            spec: spec.into(),
            message: "no such directory".into(),
        });
    }
    download(spec)
}

fn download(repo_id: &str) -> Result<PathBuf> {
    let hub_err = |e: &dyn std::fmt::Display| Error::Hub {
        spec: repo_id.into(),
        message: format!(
            "{e}. Without network access, download the model directory yourself and pass \
             its path (for all-MiniLM-L6-v2: scripts/fetch-model.sh)"
        ),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| hub_err(&e))?;
    let repo = api.model(repo_id.to_string());
    let mut dir = None;
    for file in REQUIRED_FILES {
        let local = repo.get(file).map_err(|e| hub_err(&e))?;
        dir.get_or_insert_with(|| local.parent().map(Path::to_path_buf));
    }
    for file in OPTIONAL_FILES {
        // Absent in many repositories; the defaults apply then.
        let _ = repo.get(file);
    }
    dir.flatten()
        .ok_or_else(|| hub_err(&"download returned no directory"))
}

/// The directory's name for a local model (as MTEB names result folders), else the
/// hub id: how results and mined files name a model.
pub fn display_name(model: &str) -> String {
    let p = Path::new(model);
    match p.file_name() {
        Some(name) if p.is_dir() => name.to_string_lossy().to_string(),
        _ => model.to_string(),
    }
}
