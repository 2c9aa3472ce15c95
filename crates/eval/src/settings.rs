//! The evaluation stage's settings, defined once: `sieve eval`'s flags and a
//! pipeline's `[eval]` table are this type, with these defaults; [`evaluate`] is the
//! entry point both call.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sieve_encoder::{EncodeSettings, Encoder};

use crate::{report, EvalOptions, Result, TaskResult, DEFAULT_TOP_K};

/// What retrieves the documents that are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RetrieverKind {
    /// Embed corpus and queries with --model; exact cosine top-k.
    #[default]
    Dense,
    /// tantivy BM25 over title + text (English stemming and stop words); no model.
    Bm25,
    /// BM25 and dense fused by reciprocal rank (k = 60): what `sieve mine` retrieves.
    Hybrid,
}

/// How a model is scored on a BEIR split (which model and dataset is the caller's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct EvalSettings {
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, default_value_t = RetrieverKind::Dense)
    )]
    pub retriever: RetrieverKind,

    /// Documents retrieved per query (MTEB: 1000, its largest cut-off).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_TOP_K))]
    pub top_k: usize,

    /// Always re-encode; neither read nor write the embedding cache.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_cache: bool,

    /// Keep a retrieved document whose id equals the query id (MTEB drops it).
    #[cfg_attr(feature = "clap", arg(long))]
    pub keep_identical_ids: bool,

    /// Turn data warnings (duplicate ids, dangling qrels, empty texts) into errors.
    #[cfg_attr(feature = "clap", arg(long))]
    pub strict: bool,

    /// Score only the first D dimensions of each embedding, re-normalised
    /// (sentence-transformers' truncate_dim; for models trained with
    /// --matryoshka-dims). A list (384,256,128,64) scores each dimension, writes each
    /// result under the model's name with -dimD and prints nDCG@10 against dimension.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    pub truncate_dim: Vec<usize>,

    /// How the embedding model runs.
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(flatten)]
    pub encode: EncodeSettings,
}

impl Default for EvalSettings {
    fn default() -> Self {
        Self {
            retriever: RetrieverKind::Dense,
            top_k: DEFAULT_TOP_K,
            no_cache: false,
            keep_identical_ids: false,
            strict: false,
            truncate_dim: Vec::new(),
            encode: EncodeSettings::default(),
        }
    }
}

/// One evaluation: what is scored on which data, and where the caches are.
#[derive(Debug, Clone)]
pub struct EvalRequest<'a> {
    /// Model directory or hub id (unused by BM25).
    pub model: &'a str,
    /// Name in the results path (default: the model directory's name).
    pub model_name: Option<String>,
    pub dataset: &'a Path,
    pub split: &'a str,
    /// Task name in the results (default: MTEB's name for known BEIR datasets).
    pub task_name: Option<String>,
    /// Embedding cache directory (`None`: the default one).
    pub cache_dir: Option<PathBuf>,
    /// Persisted BM25 index (reused when present).
    pub bm25_index: Option<&'a Path>,
    /// Where embedding progress goes.
    pub progress: sieve_datasets::SharedProgress,
}

/// Loads the split and scores the retriever on it, as MTEB does; data warnings go to
/// `warn` (they are errors with `strict`).
impl EvalSettings {
    /// Every value in range (a pipeline checks them before its first stage).
    pub fn validate(&self) -> Result<()> {
        if self.top_k == 0 || self.encode.batch_size == 0 {
            return Err(crate::Error::Invalid(
                "top_k and batch_size must be at least 1".into(),
            ));
        }
        if self.truncate_dim.contains(&0) {
            return Err(crate::Error::Invalid(
                "truncate_dim must be at least 1".into(),
            ));
        }
        if !self.truncate_dim.is_empty() && self.retriever == RetrieverKind::Bm25 {
            return Err(crate::Error::Invalid(
                "truncate_dim truncates embeddings: it needs the dense or hybrid retriever".into(),
            ));
        }
        Ok(())
    }
}

/// A task name becomes a file name under the output directory: one path component,
/// never `.` or `..` (`--task-name ../../X` once wrote outside it).
pub fn check_task_name(task: &str) -> Result<()> {
    let ok = !matches!(task, "" | "." | "..")
        && task
            .chars()
            .all(|c| !c.is_control() && !matches!(c, '/' | '\\' | ':'));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Invalid(format!(
            "task name {task:?} must be one file name (not . or .., no '/', '\\', ':' or control characters)"
        )))
    }
}

pub fn evaluate(
    settings: &EvalSettings,
    req: &EvalRequest<'_>,
    warn: &dyn Fn(&str),
) -> Result<TaskResult> {
    match settings.truncate_dim.as_slice() {
        [] => evaluate_at(settings, req, warn, None),
        [d] => evaluate_at(settings, req, warn, Some(*d)),
        dims => Err(crate::Error::Invalid(format!(
            "one evaluation scores one dimension, not {dims:?}: use evaluate_all"
        ))),
    }
}

/// [`evaluate`] at every `truncate_dim` (at the full dimension when there is none), in
/// order. With the embedding cache (the default) the texts are embedded once; with
/// `no_cache`, once per dimension.
pub fn evaluate_all(
    settings: &EvalSettings,
    req: &EvalRequest<'_>,
    warn: &dyn Fn(&str),
) -> Result<Vec<TaskResult>> {
    if settings.truncate_dim.is_empty() {
        return Ok(vec![evaluate_at(settings, req, warn, None)?]);
    }
    settings
        .truncate_dim
        .iter()
        .map(|&d| evaluate_at(settings, req, warn, Some(d)))
        .collect()
}

fn evaluate_at(
    settings: &EvalSettings,
    req: &EvalRequest<'_>,
    warn: &dyn Fn(&str),
    truncate_dim: Option<usize>,
) -> Result<TaskResult> {
    settings.validate()?;
    let ds = sieve_datasets::load_beir(
        req.dataset,
        req.split,
        sieve_datasets::LoadOptions {
            strict: settings.strict,
        },
    )?;
    if !ds.report.is_clean() {
        warn(&ds.report.to_string());
    }
    // Nothing to rank or nothing to ask: a score would be a number about nothing (an
    // empty corpus once scored main_score -0.0 with exit 0).
    if ds.corpus.is_empty() {
        return Err(crate::Error::Invalid(format!(
            "{}: the corpus has no documents",
            req.dataset.display()
        )));
    }
    if ds.queries.is_empty() {
        return Err(crate::Error::Invalid(format!(
            "{}: no query of split {:?} has relevance judgements",
            req.dataset.display(),
            req.split
        )));
    }
    let task = req
        .task_name
        .clone()
        .unwrap_or_else(|| report::task_name_for(req.dataset));
    check_task_name(&task)?;
    let opts = EvalOptions {
        batch_size: settings.encode.batch_size,
        top_k: settings.top_k,
        cache_dir: if settings.no_cache {
            None
        } else {
            Some(
                req.cache_dir
                    .clone()
                    .unwrap_or_else(crate::cache::default_cache_dir),
            )
        },
        ignore_identical_ids: !settings.keep_identical_ids,
        progress: req.progress.clone(),
        truncate_dim,
    };
    let load =
        || -> Result<Encoder> { Ok(Encoder::load(req.model, &settings.encode.load_options()?)?) };
    let name = |suffix: &str| {
        let name = req
            .model_name
            .clone()
            .unwrap_or_else(|| format!("{}{suffix}", sieve_encoder::hub::display_name(req.model)));
        match truncate_dim {
            Some(d) => format!("{name}-dim{d}"),
            None => name,
        }
    };
    match settings.retriever {
        RetrieverKind::Bm25 => crate::evaluate_bm25(&ds, &task, req.split, req.bm25_index, &opts),
        RetrieverKind::Dense => {
            crate::evaluate_dense(&load()?, &ds, &name(""), &task, req.split, &opts)
        }
        RetrieverKind::Hybrid => crate::evaluate_hybrid(
            &load()?,
            &ds,
            &name("+bm25"),
            &task,
            req.split,
            req.bm25_index,
            &opts,
        ),
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: EvalSettings,
    }

    #[test]
    fn command_line_and_table_defaults_agree() {
        let cli = Cli::parse_from(["x"]).s;
        assert_eq!(cli, EvalSettings::default());
        let table: EvalSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(table, cli);
        let cli = Cli::parse_from(["x", "--retriever", "hybrid", "--batch-size", "8"]).s;
        let table: EvalSettings =
            serde_json::from_str(r#"{"retriever": "hybrid", "batch_size": 8}"#).unwrap();
        assert_eq!(table, cli);
    }
}
