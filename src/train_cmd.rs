//! `sieve train`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sieve_pipeline::train::{describe, train_model, TrainJob};
use sieve_trainer::settings::TrainSettings;

/// Fine-tune an embedding model with an in-batch, GradCache large-batch or exact
/// whole-corpus softmax whose false negatives are masked.
///
/// The training data is a pair file (JSONL/TSV/Parquet with query/positive and
/// optional negative columns, as sentence-transformers names them), a BEIR directory
/// (its --split qrels are the pairs), or the labeled Parquet `sieve judge` writes
/// (hard negatives = candidates judged irrelevant, false negatives = judged relevant).
///
/// Each batch holds no repeated text. For each query, documents of the batch that
/// answer it — another positive of the same query (qrels, a repeated question) or a
/// candidate the judge labeled relevant — are masked out of its softmax
/// (--false-negatives mask), counted as positives (positive), or left as negatives
/// (none). Documents identical to the query's own positive are always masked.
///
/// Writes the model into --output in the sentence-transformers layout (loadable by
/// SentenceTransformer, text-embeddings-inference and sieve), checkpoints under
/// --output/checkpoints, metrics.jsonl and loss.svg; with --eval-dataset the best model
/// by dev nDCG@10 goes to --output/best. A run killed at any point continues from its
/// last checkpoint with --resume and ends at the same weights.
///
/// Examples:
///   sieve train --model models/all-MiniLM-L6-v2 --data ../shared/data/scifact --split train \
///       --output runs/scifact --epochs 1
///   sieve train --data labeled.parquet --batch-size 256 --mini-batch-size 32 --output runs/big
///   sieve train --data labeled.parquet --objective exact --output runs/exact
///   sieve train --data pairs.jsonl.gz --output runs/x --resume
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct TrainArgs {
    /// The model to start from.
    #[command(flatten)]
    pub model: crate::model_args::ModelName,

    #[command(flatten)]
    pub input: crate::data_args::DataArgs,

    /// Output directory: the model, checkpoints, metrics.jsonl, loss.svg.
    #[arg(long, short)]
    pub output: PathBuf,

    /// Continue from the latest checkpoint in --output (same settings required).
    #[arg(long)]
    pub resume: bool,

    #[command(flatten)]
    pub settings: TrainSettings,

    /// BEIR directory to evaluate on (nDCG@10) every --eval-every steps and at the
    /// end; the best model is kept in --output/best. Tune on a dev split, never test.
    #[arg(long)]
    pub eval_dataset: Option<PathBuf>,

    #[arg(long, default_value = "dev")]
    pub eval_split: String,

    /// Cache of the first corpus table (the base model's embeddings), shared with
    /// `sieve eval`.
    #[command(flatten)]
    pub cache: crate::CacheDir,

    /// Hide the progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let job = TrainJob {
        model: args.model.model.clone(),
        data: args.input.data.clone(),
        split: args.input.split.clone(),
        corpus: args.input.corpus.clone(),
        judged_qrels: args.input.judged_qrels.clone(),
        output: args.output.clone(),
        resume: args.resume,
        dev: args
            .eval_dataset
            .clone()
            .map(|d| (d, args.eval_split.clone())),
        cache_dir: args.cache.resolve(),
    };
    let bars = crate::progress::Bars::new(args.quiet);
    let summary = train_model(&job, &args.settings, &bars)
        .with_context(|| format!("training into {}", args.output.display()))?;
    outln!("{}", describe(&summary, &args.output));
    Ok(())
}
