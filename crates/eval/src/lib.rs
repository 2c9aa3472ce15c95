//! Retrieval evaluation the way MTEB does it, with pytrec_eval's metric definitions.
//!
//! [`evaluate_dense`] embeds a BEIR corpus and its queries with an
//! [`sieve_encoder::Encoder`], retrieves the exact top-1000 by cosine similarity in
//! chunks (memory bounded by a chunk, not queries × corpus), drops a document whose id
//! equals the query's (MTEB 1.x `ignore_identical_ids`), and scores the run with
//! [`metrics::evaluate`], which equals pytrec_eval to 1e-6 (`tests/metrics_pytrec.rs`).
//! [`evaluate_bm25`] sends tantivy BM25 through the same harness.
//!
//! ```no_run
//! use sieve_eval::{evaluate_dense, EvalOptions};
//! use sieve_encoder::{Encoder, LoadOptions};
//! let ds = sieve_datasets::load_beir("data/scifact".as_ref(), "test", Default::default())?;
//! let enc = Encoder::load("models/all-MiniLM-L6-v2", &LoadOptions::default())?;
//! let result = evaluate_dense(&enc, &ds, "all-MiniLM-L6-v2", "SciFact", "test", &EvalOptions::default())?;
//! println!("nDCG@10 = {:.5}", result.main_score());
//! # Ok::<(), sieve_eval::Error>(())
//! ```

/// The embedding cache lives with the encoder (the miner uses it too); re-exported here
/// for existing callers.
pub use sieve_encoder::cache;
pub mod ablation;
mod error;
pub mod metrics;
pub mod report;
pub mod settings;
pub mod significance;

use std::path::PathBuf;
use std::time::Instant;

use sieve_datasets::floats::Floats;
use sieve_datasets::{BeirDataset, Progress, SharedProgress};
use sieve_encoder::{Encoder, Role};
use sieve_index::{Bm25Index, Hit, Retriever};

pub use error::{Error, Result};
pub use report::TaskResult;
pub use settings::{evaluate, evaluate_all, EvalRequest, EvalSettings, RetrieverKind};

use metrics::{Run, MTEB_K_VALUES};

/// Results kept per query: MTEB retrieves the top 1000 (its largest cut-off).
pub const DEFAULT_TOP_K: usize = 1000;

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub batch_size: usize,
    pub top_k: usize,
    /// Where embeddings are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Drop a retrieved document whose id equals the query id (MTEB 1.x default).
    pub ignore_identical_ids: bool,
    /// Where embedding progress goes (silent by default).
    pub progress: SharedProgress,
    /// Score only the first D dimensions of every embedding, re-normalised
    /// (sentence-transformers' `truncate_dim`, for Matryoshka-trained models).
    pub truncate_dim: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            top_k: DEFAULT_TOP_K,
            cache_dir: Some(cache::default_cache_dir()),
            ignore_identical_ids: true,
            progress: SharedProgress::default(),
            truncate_dim: None,
        }
    }
}

/// Embeds `texts` as `role` (its prompt in front: [`sieve_encoder::Prompts`]), reading
/// and filling the on-disk cache (keyed by the prompted text).
pub fn embed_cached(
    encoder: &Encoder,
    texts: &[&str],
    role: Role,
    opts: &EvalOptions,
) -> Result<Floats> {
    let cache = opts.cache_dir.as_deref().map(cache::EmbeddingCache::new);
    let what = match role {
        Role::Query => "queries",
        Role::Document => "corpus",
        Role::Plain => "texts",
    };
    opts.progress.start(what, texts.len());
    let prompted = encoder.prompts().apply(role, texts);
    let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
    let emb = cache::encode_cached(encoder, &refs, opts.batch_size, cache.as_ref(), &|n| {
        opts.progress.advance(n)
    })?;
    opts.progress.finish();
    Ok(emb)
}

/// The corpus's `title + " " + text` embeddings, through the cache.
fn embed_corpus(encoder: &Encoder, ds: &BeirDataset, opts: &EvalOptions) -> Result<Floats> {
    let doc_texts: Vec<String> = ds.corpus.iter().map(|d| d.full_text()).collect();
    let doc_refs: Vec<&str> = doc_texts.iter().map(String::as_str).collect();
    embed_cached(encoder, &doc_refs, Role::Document, opts)
}

/// A result skeleton for a model-based retriever; [`finish`] fills the scores.
fn model_result(
    encoder: &Encoder,
    model_name: &str,
    task_name: &str,
    split: &str,
    retriever: &str,
    truncate_dim: Option<usize>,
) -> TaskResult {
    TaskResult {
        task_name: task_name.into(),
        model_name: model_name.into(),
        split: split.into(),
        retriever: retriever.into(),
        scores: Default::default(),
        evaluation_time: 0.0,
        num_queries: 0,
        num_documents: 0,
        model_fingerprint: Some(encoder.fingerprint().to_string()),
        max_seq_length: Some(encoder.max_seq_length()),
        truncate_dim,
        dataset_revision: String::new(),
        per_query: Default::default(),
    }
}

/// The embeddings' dimension after `--truncate-dim`, checked against the model's.
fn scored_dim(encoder: &Encoder, opts: &EvalOptions) -> Result<usize> {
    match opts.truncate_dim {
        None => Ok(encoder.dim()),
        Some(d) if d >= 1 && d <= encoder.dim() => Ok(d),
        Some(d) => Err(Error::Invalid(format!(
            "--truncate-dim {d}: the model's embeddings have {} dimensions",
            encoder.dim()
        ))),
    }
}

/// The first `keep` of every `dim`-wide row, re-normalised to unit length (cosine on
/// the prefix, as sentence-transformers' `truncate_dim` with normalised embeddings).
fn truncated(rows: Floats, dim: usize, keep: usize) -> Floats {
    if keep == dim {
        return rows;
    }
    let mut out = Vec::with_capacity(rows.len() / dim * keep);
    for row in rows.chunks(dim) {
        let head = &row[..keep];
        let norm = head.iter().map(|x| x * x).sum::<f32>().sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        out.extend(head.iter().map(|x| x * scale));
    }
    out.into()
}

/// Turns per-query hits into a [`Run`] keyed by ids, dropping identical ids if asked.
fn to_run(ds: &BeirDataset, hits: Vec<Vec<Hit>>, opts: &EvalOptions) -> Run {
    let mut run = Run::new();
    for (q, hits) in ds.queries.iter().zip(hits) {
        let entry = run.entry(q.id.clone()).or_default();
        for h in hits {
            let doc_id = &ds.corpus[h.doc as usize].id;
            if opts.ignore_identical_ids && doc_id == &q.id {
                continue;
            }
            if entry.len() < opts.top_k {
                entry.insert(doc_id.clone(), f64::from(h.score));
            }
        }
    }
    run
}

/// The data a result was computed on, for its `dataset_revision`: SHA-256 over the
/// corpus ([`sieve_datasets::corpus_hash`]), the queries and the qrels, in order.
pub fn dataset_revision(ds: &BeirDataset) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(sieve_datasets::corpus_hash(&ds.corpus).as_bytes());
    let mut part = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    for q in &ds.queries {
        part(&q.id);
        part(&q.text);
    }
    for (q, docs) in &ds.qrels {
        for (d, score) in docs {
            part(q);
            part(d);
            part(&score.to_string());
        }
    }
    format!("sieve:{}", &format!("{:x}", h.finalize())[..16])
}

fn finish(ds: &BeirDataset, run: &Run, base: TaskResult, start: Instant) -> TaskResult {
    let eval = metrics::evaluate(&ds.qrels, run, &MTEB_K_VALUES);
    TaskResult {
        dataset_revision: dataset_revision(ds),
        scores: eval.mean,
        per_query: eval.per_query,
        evaluation_time: start.elapsed().as_secs_f64(),
        num_queries: ds.queries.len(),
        num_documents: ds.corpus.len(),
        ..base
    }
}

/// Dense retrieval with `encoder`, exact cosine top-k.
pub fn evaluate_dense(
    encoder: &Encoder,
    ds: &BeirDataset,
    model_name: &str,
    task_name: &str,
    split: &str,
    opts: &EvalOptions,
) -> Result<TaskResult> {
    let start = Instant::now();
    let (run, _) = dense_run(encoder, ds, opts)?;
    let base = model_result(
        encoder,
        model_name,
        task_name,
        split,
        "dense",
        opts.truncate_dim,
    );
    Ok(finish(ds, &run, base, start))
}

/// The dense run and the corpus embeddings it came from.
pub fn dense_run(encoder: &Encoder, ds: &BeirDataset, opts: &EvalOptions) -> Result<(Run, Floats)> {
    let query_refs: Vec<&str> = ds.queries.iter().map(|q| q.text.as_str()).collect();
    let dim = scored_dim(encoder, opts)?;
    let corpus = truncated(embed_corpus(encoder, ds, opts)?, encoder.dim(), dim);
    let queries = truncated(
        embed_cached(encoder, &query_refs, Role::Query, opts)?,
        encoder.dim(),
        dim,
    );
    let identical =
        |qi: usize, di: usize| opts.ignore_identical_ids && ds.queries[qi].id == ds.corpus[di].id;
    // On a GPU the scan runs there (blocked products and sorts); on the CPU, the fused
    // heap scan. An identical id drops at most one hit per query.
    let hits = sieve_index::exact_top_k_on(
        encoder.device(),
        &queries,
        &corpus,
        dim,
        opts.top_k,
        &identical,
        1,
    )?;
    Ok((to_run(ds, hits, opts), corpus))
}

/// BM25 (tantivy) through the same harness; `index_dir` persists the index.
pub fn evaluate_bm25(
    ds: &BeirDataset,
    task_name: &str,
    split: &str,
    index_dir: Option<&std::path::Path>,
    opts: &EvalOptions,
) -> Result<TaskResult> {
    let start = Instant::now();
    let index = Bm25Index::build(&ds.corpus, index_dir)?;
    let query_refs: Vec<&str> = ds.queries.iter().map(|q| q.text.as_str()).collect();
    // One extra so that dropping an identical id still leaves top_k.
    let hits = index.retrieve(&query_refs, opts.top_k + 1)?;
    let run = to_run(ds, hits, opts);
    let base = TaskResult {
        task_name: task_name.into(),
        model_name: "bm25".into(),
        split: split.into(),
        retriever: "bm25".into(),
        scores: Default::default(),
        evaluation_time: 0.0,
        num_queries: 0,
        num_documents: 0,
        model_fingerprint: None,
        max_seq_length: None,
        truncate_dim: None,
        dataset_revision: String::new(),
        per_query: Default::default(),
    };
    Ok(finish(ds, &run, base, start))
}

/// BM25 and dense retrieval fused by reciprocal rank (k = 60), each list `top_k`
/// deep: the miner's candidate generator ([`sieve_index::HybridSearch`]), measured on
/// a labelled split.
pub fn evaluate_hybrid(
    encoder: &Encoder,
    ds: &BeirDataset,
    model_name: &str,
    task_name: &str,
    split: &str,
    index_dir: Option<&std::path::Path>,
    opts: &EvalOptions,
) -> Result<TaskResult> {
    let start = Instant::now();
    let dim = scored_dim(encoder, opts)?;
    let corpus = truncated(embed_corpus(encoder, ds, opts)?, encoder.dim(), dim);
    let query_refs: Vec<&str> = ds.queries.iter().map(|q| q.text.as_str()).collect();
    let queries = truncated(
        embed_cached(encoder, &query_refs, Role::Query, opts)?,
        encoder.dim(),
        dim,
    );
    let bm25 = Bm25Index::build(&ds.corpus, index_dir)?;
    // Each list one deeper than top_k, so that dropping an identical id still leaves
    // top_k (to_run drops it, as for the other retrievers).
    let depth = opts.top_k + 1;
    let on_device = match encoder.device() {
        d if d.is_cpu() => None,
        d => Some(sieve_index::DeviceCorpus::upload(d, &corpus, dim)?),
    };
    let search = sieve_index::HybridSearch {
        bm25: &bm25,
        corpus: &corpus,
        dim,
        ann: None,
        device: on_device.as_ref(),
        bm25_k: depth,
        dense_k: depth,
        rrf_k: sieve_index::DEFAULT_RRF_K,
    };
    let hits: Vec<Vec<Hit>> = search
        .search(&query_refs, &queries, &|_, _| false)?
        .into_iter()
        .map(|mut c| {
            c.fused.truncate(depth);
            c.fused
        })
        .collect();
    let run = to_run(ds, hits, opts);
    let base = model_result(
        encoder,
        model_name,
        task_name,
        split,
        "hybrid",
        opts.truncate_dim,
    );
    Ok(finish(ds, &run, base, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefix comes back at unit length, its direction kept; the full width is
    /// returned as it is; a zero prefix stays zero rather than NaN.
    #[test]
    fn truncation_renormalises_each_prefix() {
        let rows: Floats = vec![3.0, 4.0, 12.0, 0.0, 0.0, 1.0].into();
        let t = truncated(rows, 3, 2);
        assert_eq!(&t[..], &[0.6, 0.8, 0.0, 0.0]);
        let same = truncated(vec![1.0, 2.0, 3.0].into(), 3, 3);
        assert_eq!(&same[..], &[1.0, 2.0, 3.0]);
    }
}
