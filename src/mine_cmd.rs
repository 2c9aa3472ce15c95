//! `sieve mine` and `sieve merge`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use sieve_datasets::parquet_io::{read_metadata, Metadata};
use sieve_datasets::LoadOptions;
use sieve_miner::input::MiningInput;
use sieve_miner::rules::{Rules, SamplingStrategy};
use sieve_miner::stats::MineStats;
use sieve_miner::{DenseSearch, MineOptions, QueryEmbeddings, RUN_KEY};

use crate::model_args::ModelArgs;

/// Above this many documents `--dense auto` uses HNSW instead of exact search.
const AUTO_HNSW_MIN_DOCS: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DenseKind {
    /// Exact below 200,000 documents, HNSW above.
    Auto,
    /// Brute-force cosine top-k (exact).
    Exact,
    /// hnsw_rs approximate search, built once and stored (see --hnsw-dir).
    Hnsw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sampling {
    Top,
    Random,
}

/// Mine candidate false negatives for every query: top-k by BM25 and by the
/// embedding model, fused by reciprocal rank.
///
/// Reads a BEIR directory (the queries of --split that have qrels; their relevant
/// documents are the known positives) or a pairs file (JSONL/TSV/Parquet with
/// query/anchor and positive columns; the corpus is every distinct positive and
/// negative text plus --extra-corpus). Known positives are kept apart from the
/// candidates. Writes one Parquet row per query (query_id, query, positives,
/// candidates with doc_id, rank, bm25, dense, source…) with metadata saying how it
/// was made, and prints the recall of the known positives for BM25, dense and
/// hybrid at k = 10, 50, 100.
///
/// A killed run resumes from OUT.parts/ when started again with the same options.
/// --shard i/n mines one slice of the queries; `sieve merge` joins the shards into
/// the file an unsharded run writes.
///
/// The filter options are sentence-transformers' `mine_hard_negatives` options
/// (same names, same meaning). By default nothing is filtered: sieve mines
/// candidates for the judge, and candidates that score close to the positive are
/// the likely false negatives it should see.
///
/// Examples:
///   sieve mine --dataset ../shared/data/scifact --split train --out scifact-mined.parquet
///   sieve mine --pairs pairs.jsonl.gz --out mined.parquet --relative-margin 0.05 --num-negatives 5
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct MineArgs {
    /// BEIR directory to mine (queries of --split with their qrels).
    #[arg(
        long,
        short,
        conflicts_with = "pairs",
        required_unless_present = "pairs"
    )]
    pub dataset: Option<PathBuf>,

    /// Qrels split of --dataset whose queries are mined.
    #[arg(long, default_value = "train")]
    pub split: String,

    /// Pairs file (JSONL, TSV or Parquet; query/anchor + positive [+ negatives]).
    #[arg(long)]
    pub pairs: Option<PathBuf>,

    /// With --pairs: more documents (BEIR corpus.jsonl[.gz]) to mine from.
    #[arg(long, requires = "pairs")]
    pub extra_corpus: Option<PathBuf>,

    /// Output Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Precomputed corpus embeddings (float32 .npy, one row per document in corpus
    /// order, e.g. from `sieve encode`); with --query-embeddings, no model is run.
    #[arg(long, requires = "query_embeddings")]
    pub corpus_embeddings: Option<PathBuf>,

    /// Precomputed query embeddings (float32 .npy, one row per mined query in order).
    #[arg(long, requires = "corpus_embeddings")]
    pub query_embeddings: Option<PathBuf>,

    /// Candidates from BM25 per query.
    #[arg(long, default_value_t = sieve_miner::DEFAULT_K)]
    pub bm25_k: usize,

    /// Candidates from the embedding model per query.
    #[arg(long, default_value_t = sieve_miner::DEFAULT_K)]
    pub dense_k: usize,

    /// k of reciprocal-rank fusion: score = Σ 1/(k + rank).
    #[arg(long, default_value_t = sieve_index::DEFAULT_RRF_K)]
    pub rrf_k: f32,

    #[arg(long, value_enum, default_value_t = DenseKind::Auto)]
    pub dense: DenseKind,

    /// HNSW links per node.
    #[arg(long, default_value_t = sieve_index::DEFAULT_HNSW_M)]
    pub hnsw_m: usize,

    /// HNSW candidates while building.
    #[arg(long, default_value_t = sieve_index::DEFAULT_HNSW_EF_CONSTRUCTION)]
    pub hnsw_ef_construction: usize,

    /// HNSW candidates while searching (raised to the k searched for).
    #[arg(long, default_value_t = sieve_index::DEFAULT_HNSW_EF_SEARCH)]
    pub hnsw_ef_search: usize,

    /// Where the HNSW index is stored and reused (default: in the cache directory,
    /// named by model, corpus and parameters). Shards that must merge into the bytes
    /// of one run need the same index: HNSW construction is not deterministic.
    #[arg(long)]
    pub hnsw_dir: Option<PathBuf>,

    /// Skip the first range_min candidates.
    #[arg(long, alias = "range_min", default_value_t = 0)]
    pub range_min: usize,

    /// Consider only candidates ranked ≤ range_max.
    #[arg(long, alias = "range_max")]
    pub range_max: Option<usize>,

    /// Drop candidates whose cosine exceeds this.
    #[arg(long, alias = "max_score")]
    pub max_score: Option<f32>,

    /// Drop candidates scoring above (positive − absolute_margin).
    #[arg(long, alias = "absolute_margin")]
    pub absolute_margin: Option<f32>,

    /// Drop candidates scoring above positive · (1 − relative_margin)
    /// (NV-Retriever's 95% rule: 0.05). The positive is the query's weakest one.
    #[arg(long, alias = "relative_margin")]
    pub relative_margin: Option<f32>,

    /// Keep at most this many candidates per query.
    #[arg(long, alias = "num_negatives")]
    pub num_negatives: Option<usize>,

    /// Which num_negatives to keep.
    #[arg(long, alias = "sampling_strategy", value_enum, default_value_t = Sampling::Top)]
    pub sampling_strategy: Sampling,

    /// Seed of --sampling-strategy random.
    #[arg(long, default_value_t = 12345)]
    pub seed: u64,

    /// Mine only slice i of n of the queries, e.g. 0/4 (then `sieve merge`).
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,

    /// Queries per resumable part (a kill loses at most one part's work).
    #[arg(long, default_value_t = sieve_miner::DEFAULT_PART_QUERIES)]
    pub part_queries: usize,

    /// Replace an existing output made with other options.
    #[arg(long)]
    pub overwrite: bool,

    /// Embedding cache and BM25/HNSW indexes (default: $SIEVE_CACHE_DIR,
    /// $XDG_CACHE_HOME/sieve or ~/.cache/sieve).
    #[arg(long, env = "SIEVE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Write the printed statistics as JSON here too.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,

    /// Turn data warnings (duplicate ids, dangling qrels, empty texts) into errors.
    #[arg(long)]
    pub strict: bool,

    /// Hide progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected i/n, e.g. 0/4"))?;
    let i: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {i:?} is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {n:?} is not a number"))?;
    if n == 0 || i >= n {
        return Err(format!("{s:?}: need 0 ≤ i < n"));
    }
    Ok((i, n))
}

/// Join shards written by `sieve mine --shard i/n` into one file, the same bytes an
/// unsharded run writes.
///
/// Example:
///   sieve merge --out mined.parquet mined-0.parquet mined-1.parquet
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct MergeArgs {
    /// The merged file.
    #[arg(long, short)]
    pub out: PathBuf,

    /// Shard files, in any order; all n shards of one run.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

fn bar(len: usize, msg: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

fn read_embeddings(path: &Path, rows: usize, what: &str) -> Result<(Vec<f32>, usize)> {
    let (n, dim, mut data) = sieve_datasets::npy::read_npy(path)?;
    if n != rows {
        bail!(
            "{}: {n} rows, but the input has {rows} {what}",
            path.display()
        );
    }
    sieve_miner::normalize_rows(&mut data, dim);
    Ok((data, dim))
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", h.finalize()))
}

pub fn run(args: &MineArgs) -> Result<()> {
    crate::ensure_positive("bm25-k", args.bm25_k)?;
    crate::ensure_positive("dense-k", args.dense_k)?;
    crate::ensure_positive("part-queries", args.part_queries)?;
    let start = Instant::now();
    let load = LoadOptions {
        strict: args.strict,
    };
    let mut meta = Metadata::new();
    meta.insert("sieve.version".into(), env!("CARGO_PKG_VERSION").into());
    let input = match (&args.dataset, &args.pairs) {
        (Some(dir), _) => {
            meta.insert("sieve.input".into(), dir.display().to_string());
            meta.insert("sieve.input_kind".into(), "beir".into());
            meta.insert("sieve.split".into(), args.split.clone());
            MiningInput::from_beir(dir, &args.split, load)
                .with_context(|| format!("loading {}", dir.display()))?
        }
        (None, Some(pairs)) => {
            meta.insert("sieve.input".into(), pairs.display().to_string());
            meta.insert("sieve.input_kind".into(), "pairs".into());
            if let Some(extra) = &args.extra_corpus {
                meta.insert("sieve.extra_corpus".into(), extra.display().to_string());
            }
            MiningInput::from_pairs(pairs, args.extra_corpus.as_deref(), load)
                .with_context(|| format!("loading {}", pairs.display()))?
        }
        (None, None) => bail!("give --dataset or --pairs"),
    };
    if !input.report.is_clean() {
        eprintln!("{}", input.report);
    }
    if input.without_positives > 0 {
        eprintln!(
            "note: {} queries have no relevant document in the corpus (mined without positives)",
            input.without_positives
        );
    }
    eprintln!(
        "mining {} queries against {} documents",
        input.queries.len(),
        input.corpus.len()
    );

    // Where the judge finds the document texts again.
    let out_dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let corpus_ref = match &input.corpus_path {
        Some(p) => p.display().to_string(),
        None => input
            .write_corpus(&out_dir)
            .context("writing the assembled corpus")?,
    };
    meta.insert("sieve.corpus".into(), corpus_ref);

    let cache_root = args
        .cache_dir
        .clone()
        .unwrap_or_else(sieve_encoder::cache::default_cache_dir);
    let (emb, model_key) = match (&args.corpus_embeddings, &args.query_embeddings) {
        (Some(c), Some(q)) => {
            let (corpus, dim) = read_embeddings(c, input.corpus.len(), "documents")?;
            let (queries, qdim) = read_embeddings(q, input.queries.len(), "queries")?;
            if dim != qdim {
                bail!("corpus embeddings have dimension {dim}, query embeddings {qdim}");
            }
            meta.insert("sieve.model".into(), "precomputed".into());
            let key = format!("npy:{}:{}", &sha256_file(c)?[..16], &sha256_file(q)?[..16]);
            meta.insert("sieve.model_fingerprint".into(), key.clone());
            (
                QueryEmbeddings {
                    corpus,
                    queries,
                    dim,
                },
                key,
            )
        }
        _ => {
            let encoder = args.model.load()?;
            meta.insert("sieve.model".into(), args.model.display_name());
            meta.insert(
                "sieve.model_fingerprint".into(),
                encoder.fingerprint().to_string(),
            );
            let cache = sieve_encoder::cache::EmbeddingCache::new(&cache_root);
            let embed = |texts: &[&str], what: &str| -> Result<Vec<f32>> {
                let pb = bar(texts.len(), what, args.quiet);
                let e = sieve_encoder::cache::encode_cached(
                    &encoder,
                    texts,
                    args.model.batch_size,
                    Some(&cache),
                    &|n| pb.inc(n as u64),
                )?;
                pb.finish_and_clear();
                Ok(e)
            };
            let docs: Vec<String> = input.corpus.iter().map(|d| d.full_text()).collect();
            let doc_refs: Vec<&str> = docs.iter().map(String::as_str).collect();
            let corpus = embed(&doc_refs, "corpus")?;
            let q_refs: Vec<&str> = input.queries.iter().map(|q| q.text.as_str()).collect();
            let queries = embed(&q_refs, "queries")?;
            let fp = encoder.fingerprint().to_string();
            (
                QueryEmbeddings {
                    corpus,
                    queries,
                    dim: encoder.dim(),
                },
                fp,
            )
        }
    };

    let use_hnsw = match args.dense {
        DenseKind::Exact => false,
        DenseKind::Hnsw => true,
        DenseKind::Auto => input.corpus.len() >= AUTO_HNSW_MIN_DOCS,
    };
    let hnsw_params = sieve_index::HnswParams {
        m: args.hnsw_m,
        ef_construction: args.hnsw_ef_construction,
        ef_search: args.hnsw_ef_search.max(args.dense_k + 1),
    };
    let opts = MineOptions {
        bm25_k: args.bm25_k,
        dense_k: args.dense_k,
        rrf_k: args.rrf_k,
        dense: if use_hnsw {
            DenseSearch::hnsw(hnsw_params)
        } else {
            DenseSearch::Exact
        },
        rules: Rules {
            range_min: args.range_min,
            range_max: args.range_max,
            max_score: args.max_score,
            absolute_margin: args.absolute_margin,
            relative_margin: args.relative_margin,
            num_negatives: args.num_negatives,
            sampling_strategy: match args.sampling_strategy {
                Sampling::Top => SamplingStrategy::Top,
                Sampling::Random => SamplingStrategy::Random,
            },
            seed: args.seed,
        },
        part_queries: args.part_queries,
        shard: args.shard,
    };
    let meta = sieve_miner::run_metadata(&input, &opts, meta)?;

    if args.out.exists() {
        let existing = read_metadata(&args.out).ok();
        let same = existing
            .as_ref()
            .is_some_and(|m| m.get(RUN_KEY) == meta.get(RUN_KEY));
        if same {
            eprintln!(
                "{} is already mined with these options; nothing to do",
                args.out.display()
            );
            let (rows, _) = sieve_datasets::mined::read_mined(&args.out)?;
            report(&rows, &opts, args)?;
            return Ok(());
        }
        if !args.overwrite {
            bail!(
                "{} exists and was made with other options, model or input (--overwrite replaces it)",
                args.out.display()
            );
        }
    }

    let bm25 = {
        let t = Instant::now();
        let b = sieve_miner::open_or_build_bm25(&input, &cache_root)
            .context("building the BM25 index")?;
        tracing::info!("BM25 index ready in {:.1}s", t.elapsed().as_secs_f64());
        b
    };
    let ann = if use_hnsw {
        let dir = args.hnsw_dir.clone().unwrap_or_else(|| {
            cache_root.join("hnsw").join(format!(
                "{}-{}-m{}-efc{}",
                model_key
                    .replace([':', '/'], "_")
                    .chars()
                    .take(40)
                    .collect::<String>(),
                &input.corpus_hash()[..16],
                hnsw_params.m,
                hnsw_params.ef_construction
            ))
        });
        eprintln!("HNSW index: {}", dir.display());
        let t = Instant::now();
        let index = sieve_miner::open_or_build_hnsw(&emb, hnsw_params, &dir)
            .context("building the HNSW index")?;
        eprintln!("HNSW ready in {:.1}s", t.elapsed().as_secs_f64());
        Some(index)
    } else {
        None
    };

    let range = sieve_miner::shard_range(input.queries.len(), opts.shard);
    let pb = bar(range.len(), "queries", args.quiet);
    let rows = sieve_miner::mine(
        &input,
        &emb,
        &bm25,
        ann.as_ref(),
        &opts,
        &args.out,
        &meta,
        &|n| pb.inc(n as u64),
    )?;
    pb.finish_and_clear();
    eprintln!(
        "wrote {} ({} queries) in {:.1}s",
        args.out.display(),
        rows.len(),
        start.elapsed().as_secs_f64()
    );
    report(&rows, &opts, args)
}

fn report(
    rows: &[sieve_datasets::mined::MinedRow],
    opts: &MineOptions,
    args: &MineArgs,
) -> Result<()> {
    let stats = MineStats::from_rows(rows, opts);
    println!("{stats}");
    if let Some(path) = &args.stats_json {
        let recall: Vec<serde_json::Value> = stats
            .recall
            .iter()
            .map(|r| serde_json::json!({"k": r.k, "bm25": r.bm25, "dense": r.dense, "hybrid": r.hybrid}))
            .collect();
        let json = serde_json::json!({
            "queries": stats.queries,
            "queries_with_positives": stats.queries_with_positives,
            "candidates": stats.candidates,
            "per_query": {"min": stats.min_per_query, "median": stats.median_per_query, "max": stats.max_per_query},
            "by_source": stats.by_source,
            "dropped": stats.dropped,
            "dense_quantiles": stats.dense_quantiles,
            "bm25_quantiles": stats.bm25_quantiles,
            "recall": recall,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn merge(args: &MergeArgs) -> Result<()> {
    let rows = sieve_miner::merge_shards(&args.shards, &args.out)?;
    eprintln!(
        "merged {} shards ({} queries) into {}",
        args.shards.len(),
        rows.len(),
        args.out.display()
    );
    Ok(())
}
