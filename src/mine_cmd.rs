//! `sieve mine` and `sieve merge`: flags in, [`sieve_miner::mine_to_file`] called,
//! statistics out.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sieve_datasets::shard::ShardSpec;
use sieve_miner::stats::MineStats;
use sieve_miner::{Embedder, MineRequest, MineSettings, Source};

use crate::model_args::ModelName;

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
/// --shard i/n mines one slice of the queries (--shard auto: the slice of this Slurm
/// array task); `sieve merge` joins the shards into the file an unsharded run writes.
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
    pub model: ModelName,

    /// Precomputed corpus embeddings (float32 .npy, one row per document in corpus
    /// order, e.g. from `sieve encode`); with --query-embeddings, no model is run.
    #[arg(long, requires = "query_embeddings")]
    pub corpus_embeddings: Option<PathBuf>,

    /// Precomputed query embeddings (float32 .npy, one row per mined query in order).
    #[arg(long, requires = "corpus_embeddings")]
    pub query_embeddings: Option<PathBuf>,

    #[command(flatten)]
    pub settings: MineSettings,

    /// Where the HNSW index is stored and reused (default: in the cache directory,
    /// named by model, corpus and parameters). Shards that must merge into the bytes
    /// of one run need the same index: HNSW construction is not deterministic.
    #[arg(long)]
    pub hnsw_dir: Option<PathBuf>,

    /// Mine only slice i of n of the queries, e.g. 0/4 (then `sieve merge`). `auto`
    /// reads this task's slice from a Slurm job array (SLURM_ARRAY_TASK_ID, _MIN,
    /// _COUNT: submit with --array=0-(n-1)); `auto/N` also from a Kubernetes Indexed
    /// Job of N completions (JOB_COMPLETION_INDEX). The chosen slice is printed.
    #[arg(long, value_name = "i/n|auto|auto/N", value_parser = |s: &str| s.parse::<ShardSpec>())]
    pub shard: Option<ShardSpec>,

    /// Replace an existing output made with other options.
    #[arg(long)]
    pub overwrite: bool,

    #[command(flatten)]
    pub cache: crate::CacheDir,

    /// Write the printed statistics as JSON here too.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,

    /// Hide progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Join shards written by `sieve mine --shard i/n` (or `sieve judge --shard i/n`) into
/// one file, the same bytes an unsharded run writes.
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

impl MineArgs {
    /// The library's request for these flags; `--shard auto` is resolved here, from
    /// the scheduler's environment.
    pub fn request(&self) -> Result<MineRequest> {
        let source = match (&self.dataset, &self.pairs) {
            (Some(dir), _) => Source::Beir {
                dir: dir.clone(),
                split: self.split.clone(),
            },
            // clap requires one of --dataset and --pairs.
            (None, pairs) => Source::Pairs {
                pairs: pairs.clone().unwrap_or_default(),
                extra_corpus: self.extra_corpus.clone(),
            },
        };
        let embedder = match (&self.corpus_embeddings, &self.query_embeddings) {
            (Some(c), Some(q)) => Embedder::Precomputed {
                corpus: c.clone(),
                queries: q.clone(),
            },
            _ => Embedder::Model(self.model.model.clone()),
        };
        let shard = match &self.shard {
            Some(spec) => {
                let shard = spec.resolve().map_err(anyhow::Error::msg)?;
                eprintln!("mining {shard}");
                Some((shard.index, shard.count))
            }
            None => None,
        };
        Ok(MineRequest {
            source,
            embedder,
            out: self.out.clone(),
            shard,
            cache_root: self.cache.resolve(),
            hnsw_dir: self.hnsw_dir.clone(),
            overwrite: self.overwrite,
        })
    }
}

pub fn run(args: &MineArgs) -> Result<()> {
    let bars = crate::progress::Bars::new(args.quiet);
    let req = args.request()?;
    let mined = sieve_miner::mine_to_file(&req, &args.settings, &bars)
        .with_context(|| format!("mining into {}", args.out.display()))?;
    report(&mined.stats, args.stats_json.as_ref())
}

/// Prints the statistics (and writes them as JSON when asked).
pub fn report(stats: &MineStats, json: Option<&PathBuf>) -> Result<()> {
    outln!("{stats}");
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&stats.to_json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn merge(args: &MergeArgs) -> Result<()> {
    // Labeled shards (`sieve judge --shard`) carry per-shard verdict counts that are
    // summed; mined shards carry per-shard run keys that are recomputed.
    let first = args.shards.first().context("no shards given")?;
    let labeled = sieve_datasets::parquet_io::read_metadata(first)?
        .get("sieve.stage")
        .is_some_and(|s| s == "labeled");
    let queries = if labeled {
        sieve_judge::label::merge_labeled(&args.shards, &args.out, &sieve_miner::run_key)?
    } else {
        sieve_miner::merge_shards(&args.shards, &args.out)?.len()
    };
    eprintln!(
        "merged {} {}shards ({queries} queries) into {}",
        args.shards.len(),
        if labeled { "labeled " } else { "" },
        args.out.display()
    );
    Ok(())
}
