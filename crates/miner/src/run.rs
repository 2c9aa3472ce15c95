//! One mining run from inputs to a written file: the input and its metadata assembled,
//! the embeddings computed (cached) or read, the `auto` search policy resolved, the
//! indexes opened or built, the queries mined resumably. `sieve mine` and the pipeline
//! both call [`mine_to_file`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use sieve_datasets::floats::Floats;
use sieve_datasets::mined::MinedRow;
use sieve_datasets::parquet_io::{read_metadata, Metadata};
use sieve_datasets::{LoadOptions, Progress};

use crate::input::MiningInput;
use crate::settings::MineSettings;
use crate::stats::MineStats;
use crate::{DenseSearch, Error, MineOptions, QueryEmbeddings, Result, RUN_KEY};

/// What is mined: a BEIR split, or a pairs file with optional extra documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Beir {
        dir: PathBuf,
        split: String,
    },
    Pairs {
        pairs: PathBuf,
        extra_corpus: Option<PathBuf>,
    },
}

/// Where the embeddings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Embedder {
    /// A model directory or hub id, run with the settings' `encode` part.
    Model(String),
    /// Precomputed float32 `.npy` matrices, one row per document / mined query.
    Precomputed { corpus: PathBuf, queries: PathBuf },
}

/// One run's inputs and outputs.
#[derive(Debug, Clone)]
pub struct MineRequest {
    pub source: Source,
    pub embedder: Embedder,
    pub out: PathBuf,
    /// `(i, n)`: mine only the i-th of n slices of the queries.
    pub shard: Option<(usize, usize)>,
    /// Embedding cache and BM25/HNSW indexes.
    pub cache_root: PathBuf,
    /// Where the HNSW index is kept (default: in `cache_root`, named by model, corpus
    /// and parameters).
    pub hnsw_dir: Option<PathBuf>,
    /// Replace an existing output made with other options.
    pub overwrite: bool,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Mined {
    pub rows: Vec<MinedRow>,
    pub stats: MineStats,
    /// The output was already mined with these options and was reused.
    pub reused: bool,
    pub options: MineOptions,
}

/// The rows of a precomputed `.npy`, mapped in place (normalised rows stay shared with
/// the file; see [`crate::normalize_rows`]).
fn read_embeddings(path: &Path, rows: usize, what: &str) -> Result<(Floats, usize)> {
    let (n, dim, mut data) = sieve_datasets::npy::read_npy_mapped(path)?;
    if n != rows {
        return Err(Error::mismatch(
            path,
            format!("{n} rows, but the input has {rows} {what}"),
        ));
    }
    crate::normalize_rows(&mut data, dim);
    Ok((data, dim))
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Loads the input named by `source` and starts its metadata.
fn load_input(source: &Source, strict: bool, meta: &mut Metadata) -> Result<MiningInput> {
    let load = LoadOptions { strict };
    match source {
        Source::Beir { dir, split } => {
            meta.insert("sieve.input".into(), dir.display().to_string());
            meta.insert("sieve.input_kind".into(), "beir".into());
            meta.insert("sieve.split".into(), split.clone());
            MiningInput::from_beir(dir, split, load)
        }
        Source::Pairs {
            pairs,
            extra_corpus,
        } => {
            meta.insert("sieve.input".into(), pairs.display().to_string());
            meta.insert("sieve.input_kind".into(), "pairs".into());
            if let Some(extra) = extra_corpus {
                meta.insert("sieve.extra_corpus".into(), extra.display().to_string());
            }
            MiningInput::from_pairs(pairs, extra_corpus.as_deref(), load)
        }
    }
}

/// Embeds (or reads) the corpus and the queries; returns them with the model's key.
fn embeddings(
    input: &MiningInput,
    embedder: &Embedder,
    settings: &MineSettings,
    cache_root: &Path,
    meta: &mut Metadata,
    progress: &dyn Progress,
) -> Result<(QueryEmbeddings, String)> {
    match embedder {
        Embedder::Precomputed { corpus, queries } => {
            let (c, dim) = read_embeddings(corpus, input.corpus.len(), "documents")?;
            let (q, qdim) = read_embeddings(queries, input.queries.len(), "queries")?;
            if dim != qdim {
                return Err(Error::Input(format!(
                    "corpus embeddings have dimension {dim}, query embeddings {qdim}"
                )));
            }
            meta.insert("sieve.model".into(), "precomputed".into());
            let key = format!(
                "npy:{}:{}",
                &sha256_file(corpus)?[..16],
                &sha256_file(queries)?[..16]
            );
            meta.insert("sieve.model_fingerprint".into(), key.clone());
            let emb = QueryEmbeddings {
                corpus: c,
                queries: q,
                dim,
                device: None,
            };
            Ok((emb, key))
        }
        Embedder::Model(model) => {
            let encoder = sieve_encoder::Encoder::load(model, &settings.encode.load_options()?)?;
            meta.insert(
                "sieve.model".into(),
                sieve_encoder::hub::display_name(model),
            );
            // Prompts change every embedding: they are part of the model's key (left out
            // when there are none, so that earlier runs keep theirs).
            let (qp, dp) = (
                encoder.prompts().prompt(sieve_encoder::Role::Query),
                encoder.prompts().prompt(sieve_encoder::Role::Document),
            );
            let mut fp = encoder.fingerprint().to_string();
            if !qp.is_empty() || !dp.is_empty() {
                meta.insert("sieve.query_prompt".into(), qp.to_string());
                meta.insert("sieve.document_prompt".into(), dp.to_string());
                fp = format!("{fp}|query_prompt={qp:?}|document_prompt={dp:?}");
            }
            meta.insert("sieve.model_fingerprint".into(), fp.clone());
            let cache = sieve_encoder::cache::EmbeddingCache::new(cache_root);
            let embed = |texts: &[&str], role: sieve_encoder::Role| -> Result<Floats> {
                let what = match role {
                    sieve_encoder::Role::Query => "queries",
                    _ => "corpus",
                };
                progress.start(what, texts.len());
                let prompted = encoder.prompts().apply(role, texts);
                let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
                let e = sieve_encoder::cache::encode_cached(
                    &encoder,
                    &refs,
                    settings.encode.batch_size,
                    Some(&cache),
                    &|n| progress.advance(n),
                )?;
                progress.finish();
                Ok(e)
            };
            let docs: Vec<String> = input.corpus.iter().map(|d| d.full_text()).collect();
            let doc_refs: Vec<&str> = docs.iter().map(String::as_str).collect();
            let corpus = embed(&doc_refs, sieve_encoder::Role::Document)?;
            let q_refs: Vec<&str> = input.queries.iter().map(|q| q.text.as_str()).collect();
            let queries = embed(&q_refs, sieve_encoder::Role::Query)?;
            let emb = QueryEmbeddings {
                corpus,
                queries,
                dim: encoder.dim(),
                device: (!encoder.device().is_cpu()).then(|| encoder.device().clone()),
            };
            Ok((emb, fp))
        }
    }
}

/// Queries whose HNSW results are checked against exact search, and at what depth:
/// a second of exact search at 1M documents, recall known to about ±0.01.
const RECALL_SAMPLE: usize = 200;
const RECALL_K: usize = 10;
/// Below this measured recall the log says how to raise it.
const LOW_RECALL: f64 = 0.95;

/// Opens the HNSW index of these embeddings, or builds and stores it, and prints its
/// parameters and the recall@10 it reaches on a sample of the queries.
fn hnsw_index(
    req: &MineRequest,
    settings: &MineSettings,
    input: &MiningInput,
    emb: &QueryEmbeddings,
    model_key: &str,
    progress: &dyn Progress,
) -> Result<sieve_index::HnswIndex> {
    let params = settings.hnsw_params(input.corpus.len());
    let dir = req.hnsw_dir.clone().unwrap_or_else(|| {
        // The key's head for a readable name, and a hash of all of it: keys share their
        // first 40 characters when only the prompts differ.
        let head: String = model_key
            .replace([':', '/', '|', '"'], "_")
            .chars()
            .take(40)
            .collect();
        let whole = {
            use sha2::{Digest, Sha256};
            format!("{:x}", Sha256::digest(model_key.as_bytes()))
        };
        req.cache_root.join("hnsw").join(format!(
            "{head}-{}-{}-m{}-efc{}",
            &whole[..12],
            &input.corpus_hash()[..16],
            params.m,
            params.ef_construction
        ))
    });
    progress.note(&format!("HNSW index: {}", dir.display()));
    let t = Instant::now();
    let index = crate::open_or_build_hnsw(emb, params, &dir)?;
    progress.note(&format!(
        "HNSW ready in {:.1}s (M {}, ef_construction {}, ef_search {}{})",
        t.elapsed().as_secs_f64(),
        params.m,
        params.ef_construction,
        params.ef_search,
        if settings.hnsw_ef_search.is_none() {
            ", scaled with the corpus"
        } else {
            ""
        }
    ));
    let t = Instant::now();
    let r =
        sieve_index::measured_recall(&index, &emb.corpus, &emb.queries, RECALL_K, RECALL_SAMPLE);
    progress.note(&format!(
        "HNSW recall@{} against exact search on {} sampled queries: {:.4} ({:.1}s){}",
        r.k,
        r.queries,
        r.recall,
        t.elapsed().as_secs_f64(),
        if r.recall < LOW_RECALL {
            "; low: raise --hnsw-ef-search or use --dense exact"
        } else {
            ""
        }
    ));
    Ok(index)
}

/// Which keyed footer entries differ between an existing output and this run, e.g.
/// `sieve.options, sieve.corpus_hash differ`.
fn changed_keys(old: &Metadata, new: &Metadata) -> String {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let changed: Vec<&str> = keys
        .into_iter()
        .filter(|k| crate::is_keyed(k) && old.get(*k) != new.get(*k))
        .map(|k| k.as_str())
        .collect();
    match changed.as_slice() {
        [] => "the run key differs".into(),
        [one] => format!("{one} differs"),
        many => format!("{} differ", many.join(", ")),
    }
}

/// Mines `req` with `settings`: reuses an output already mined with the same options
/// (and refuses to replace one made otherwise unless `overwrite`), resumes from the
/// output's parts directory after a kill.
pub fn mine_to_file(
    req: &MineRequest,
    settings: &MineSettings,
    progress: &dyn Progress,
) -> Result<Mined> {
    let start = Instant::now();
    if req.out.is_dir() {
        return Err(Error::mismatch(
            &req.out,
            "is a directory; --out takes the Parquet file to write (e.g. mined.parquet)",
        ));
    }
    let mut meta = Metadata::new();
    meta.insert("sieve.version".into(), env!("CARGO_PKG_VERSION").into());
    let input = load_input(&req.source, settings.strict, &mut meta)?;
    if !input.report.is_clean() {
        progress.note(&input.report.to_string());
    }
    if input.without_positives > 0 {
        progress.note(&format!(
            "note: {} queries have no relevant document in the corpus (mined without positives)",
            input.without_positives
        ));
    }
    progress.note(&format!(
        "mining {} queries against {} documents",
        input.queries.len(),
        input.corpus.len()
    ));
    let opts = settings.options(input.corpus.len(), input.queries.len(), req.shard)?;
    progress.note(
        &settings
            .dense_choice(input.corpus.len(), input.queries.len())
            .1,
    );

    // Where the judge finds the document texts again.
    let out_dir = match req.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let corpus_ref = match &input.corpus_path {
        Some(p) => p.display().to_string(),
        None => input.write_corpus(&out_dir)?,
    };
    meta.insert("sieve.corpus".into(), corpus_ref);

    let (emb, model_key) = embeddings(
        &input,
        &req.embedder,
        settings,
        &req.cache_root,
        &mut meta,
        progress,
    )?;
    let meta = crate::run_metadata(&input, &opts, meta)?;

    if req.out.exists() {
        let existing = match read_metadata(&req.out) {
            Ok(m) if m.contains_key(RUN_KEY) => Some(m),
            Ok(_) if !req.overwrite => {
                return Err(Error::mismatch(
                    &req.out,
                    "exists and is a Parquet file sieve did not mine (--overwrite replaces it)",
                ))
            }
            Err(e) if !req.overwrite => {
                return Err(Error::mismatch(
                    &req.out,
                    format!(
                        "exists and is not a mined Parquet file ({e}); --overwrite replaces it"
                    ),
                ))
            }
            _ => None,
        };
        if existing
            .as_ref()
            .is_some_and(|m| m.get(RUN_KEY) == meta.get(RUN_KEY))
        {
            progress.note(&format!(
                "{} is already mined with these options; nothing to do",
                req.out.display()
            ));
            // A kill between the output's rename and the parts' cleanup leaves them:
            // they belong to this finished run.
            let parts = crate::parts_dir(&req.out);
            if parts.is_dir() {
                std::fs::remove_dir_all(&parts).map_err(|e| Error::io(&parts, e))?;
            }
            let (rows, _) = sieve_datasets::mined::read_mined(&req.out)?;
            let stats = MineStats::from_rows(&rows, &opts);
            return Ok(Mined {
                rows,
                stats,
                reused: true,
                options: opts,
            });
        }
        if !req.overwrite {
            let changed = existing
                .as_ref()
                .map(|m| changed_keys(m, &meta))
                .unwrap_or_default();
            return Err(Error::mismatch(
                &req.out,
                format!(
                    "exists and was made with other options, model or input ({}); \
                     --overwrite replaces it",
                    changed
                ),
            ));
        }
    }

    let t = Instant::now();
    let bm25 = crate::open_or_build_bm25(&input, &req.cache_root)?;
    tracing::info!("BM25 index ready in {:.1}s", t.elapsed().as_secs_f64());
    let ann = match opts.dense {
        DenseSearch::Hnsw { .. } => Some(hnsw_index(
            req, settings, &input, &emb, &model_key, progress,
        )?),
        DenseSearch::Exact => None,
    };

    let range = crate::shard_range(input.queries.len(), opts.shard);
    progress.start("queries", range.len());
    let rows = crate::mine(
        &input,
        &emb,
        &bm25,
        ann.as_ref(),
        &opts,
        &req.out,
        &meta,
        &|n| progress.advance(n),
    )?;
    progress.finish();
    progress.note(&format!(
        "wrote {} ({} queries) in {:.1}s",
        req.out.display(),
        rows.len(),
        start.elapsed().as_secs_f64()
    ));
    let stats = MineStats::from_rows(&rows, &opts);
    Ok(Mined {
        rows,
        stats,
        reused: false,
        options: opts,
    })
}
