//! `sieve train`.

use std::path::PathBuf;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use sieve_pipeline::train::{describe, train_model, TrainJob};
use sieve_trainer::distributed::{Collective, World};
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
///   torchrun-style, one process per GPU (a build with --features nccl):
///   RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 \
///       sieve train --distributed --device cuda --data labeled.parquet --output runs/dp
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

    /// Train as one rank of a data-parallel run, one process per GPU: the rank comes
    /// from RANK/WORLD_SIZE/LOCAL_RANK (torchrun) or SLURM_PROCID/SLURM_NTASKS/
    /// SLURM_LOCALID (srun); rank 0 hands out the NCCL id at MASTER_ADDR, port
    /// MASTER_PORT + 1 (or SIEVE_NCCL_PORT).
    /// Every rank embeds its share of each batch and the softmax spans the whole batch,
    /// so the steps are those of one process with the same --batch-size. Rank 0 writes
    /// --output (a shared filesystem for --resume). Needs --device cuda and a build
    /// with the nccl feature.
    #[arg(long)]
    pub distributed: bool,
}

/// How this process was started, shell-quoted where needed, for the model card.
fn command_line() -> String {
    let mut args = std::env::args();
    let _ = args.next();
    std::iter::once("sieve".to_string())
        .chain(args.map(|a| {
            let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c);
            if a.is_empty() || !a.chars().all(plain) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// This process's rank, its device set to `cuda:LOCAL_RANK` when `--device cuda` names
/// no ordinal.
fn join_world(settings: &mut TrainSettings) -> Result<Arc<dyn Collective>> {
    let world = World::from_env()
        .map_err(anyhow::Error::msg)
        .context("--distributed")?
        .context(
            "--distributed: no rank in the environment (set RANK, WORLD_SIZE, LOCAL_RANK, \
             MASTER_ADDR and MASTER_PORT as torchrun does, or launch with srun)",
        )?;
    if !settings.device.starts_with("cuda") {
        bail!(
            "--distributed trains on GPUs over NCCL: pass --device cuda (each rank takes \
             cuda:LOCAL_RANK), not --device {}",
            settings.device
        );
    }
    if settings.device == "cuda" {
        settings.device = format!("cuda:{}", world.local_rank);
    }
    nccl_world(&world)
}

#[cfg(feature = "nccl")]
fn nccl_world(world: &World) -> Result<Arc<dyn Collective>> {
    use sieve_trainer::distributed::{exchange_id, nccl};
    let id = exchange_id(world, nccl::new_id).map_err(anyhow::Error::msg)?;
    eprintln!(
        "rank {} of {} (cuda:{}): NCCL id from {}",
        world.rank,
        world.size,
        world.local_rank,
        world
            .master
            .as_ref()
            .map_or(String::new(), |(a, p)| format!("{a}:{p}"))
    );
    Ok(Arc::new(nccl::Nccl::new(world, &id)?))
}

#[cfg(not(feature = "nccl"))]
fn nccl_world(_: &World) -> Result<Arc<dyn Collective>> {
    bail!(
        "--distributed needs a sieve built with the nccl feature \
         (cargo build --release --features nccl; scripts/build-cuda.sh builds it)"
    )
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let mut settings = args.settings.clone();
    let world = if args.distributed {
        Some(join_world(&mut settings)?)
    } else {
        None
    };
    let primary = world.as_ref().is_none_or(|w| w.rank() == 0);
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
        world,
        command: Some(command_line()),
    };
    // The other ranks stay quiet: rank 0 reports the run.
    let bars = crate::progress::Bars::new(args.quiet || !primary);
    let summary = train_model(&job, &settings, &bars)
        .with_context(|| format!("training into {}", args.output.display()))?;
    if primary {
        outln!("{}", describe(&summary, &args.output));
    }
    Ok(())
}
