//! `sieve train`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sieve_encoder::{Encoder, LoadOptions};
use sieve_eval::EvalOptions;
use sieve_trainer::batch::Batching;
use sieve_trainer::loss::{FalseNegativePolicy, LossConfig};
use sieve_trainer::schedule::Decay;
use sieve_trainer::train::{ClusterOn, Hooks, Objective, StepLog, TrainConfig, Trainer};

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
    /// Model to start from: a directory (sentence-transformers layout) or a hub id.
    #[arg(
        long,
        short,
        env = "SIEVE_MODEL",
        default_value = "models/all-MiniLM-L6-v2"
    )]
    pub model: String,

    #[command(flatten)]
    pub input: crate::data_args::DataArgs,

    /// Output directory: the model, checkpoints, metrics.jsonl, loss.svg.
    #[arg(long, short)]
    pub output: PathBuf,

    /// Continue from the latest checkpoint in --output (same settings required).
    #[arg(long)]
    pub resume: bool,

    #[arg(long, default_value_t = 1)]
    pub epochs: u64,

    /// Stop after this many steps (the schedule spans them).
    #[arg(long)]
    pub max_steps: Option<u64>,

    /// Queries per batch: each is contrasted with every document of the batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,

    /// GradCache: embed and back-propagate this many texts at a time, so a batch of
    /// any size needs the memory of one mini-batch (same gradients as the full batch).
    #[arg(long)]
    pub mini_batch_size: Option<usize>,

    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,

    /// Fraction of the steps spent warming the learning rate up from 0.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,

    /// Decay after warmup: linear, cosine or constant.
    #[arg(long, default_value = "linear")]
    pub schedule: Decay,

    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,

    /// Clip the global gradient norm (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,

    /// Cosine-similarity scale (1/temperature); sentence-transformers' default is 20.
    #[arg(long, default_value_t = 20.0, conflicts_with = "temperature")]
    pub scale: f64,

    /// Softmax temperature (the inverse of --scale).
    #[arg(long)]
    pub temperature: Option<f64>,

    /// Add the document→query term (MultipleNegativesSymmetricRankingLoss).
    #[arg(long)]
    pub symmetric: bool,

    /// What to do with batch documents known to answer a query: mask (out of its
    /// softmax), positive (into its numerator) or none (leave them as negatives; a
    /// labeled Parquet's judged-relevant candidates then stay among the hard negatives,
    /// as they would without a judge). Either way metrics.jsonl logs the dose: the
    /// share of each query's softmax mass on them.
    #[arg(long, default_value = "mask")]
    pub false_negatives: FalseNegativePolicy,

    /// Do not treat other qrels positives / answers to the same question as false
    /// negatives (only the judge's, and identical texts).
    #[arg(long)]
    pub ignore_known_positives: bool,

    /// Do not use the judge's labels as false negatives.
    #[arg(long)]
    pub ignore_judge: bool,

    /// in-batch: each query against the batch's documents (sentence-transformers'
    /// MNRL). exact: each query against the whole corpus, from a table of corpus
    /// embeddings refreshed every --refresh-every steps; affordable because the judge
    /// removed the false negatives such a denominator is full of.
    #[arg(long, default_value = "in-batch")]
    pub objective: Objective,

    /// Exact softmax: re-embed the whole corpus every N steps (0: only at the start;
    /// the batch's documents are written back into the table after every step).
    #[arg(long, default_value_t = 0)]
    pub refresh_every: u64,

    /// Exact softmax, alternating coordinate ascent: train only the query side for N
    /// steps (the documents and the corpus table held fixed), then only the document
    /// side for N steps, and so on; AdamW's moments are reset at every switch.
    /// 0: both sides every step.
    #[arg(long, default_value_t = 0)]
    pub alternate_every: u64,

    /// random: a seeded shuffle. clustered: each batch drawn from one k-means cluster
    /// of the base model's query (or positive, --cluster-on) embeddings, so its
    /// negatives, and its false negatives, share a topic (TAS-B, CDE). Works with every
    /// objective and with GradCache; no text repeats in a batch either way.
    #[arg(long, default_value = "random")]
    pub batching: Batching,

    /// Clustered batching: number of k-means clusters (default: examples ÷ batch size).
    #[arg(long)]
    pub clusters: Option<usize>,

    /// Clustered batching: cluster the queries' embeddings or the positives'.
    #[arg(long, default_value = "queries")]
    pub cluster_on: ClusterOn,

    /// Cache of the first corpus table (the base model's embeddings), shared with
    /// `sieve eval` (default: $SIEVE_CACHE_DIR, $XDG_CACHE_HOME/sieve or ~/.cache/sieve).
    #[arg(long, env = "SIEVE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Token limit per text (default: the model's).
    #[arg(long)]
    pub max_seq_length: Option<usize>,

    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 500)]
    pub save_every: u64,

    /// Checkpoints kept.
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,

    /// BEIR directory to evaluate on (nDCG@10) every --eval-every steps and at the
    /// end; the best model is kept in --output/best. Tune on a dev split, never test.
    #[arg(long)]
    pub eval_dataset: Option<PathBuf>,

    #[arg(long, default_value = "dev")]
    pub eval_split: String,

    /// Evaluate every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,

    /// cpu, cuda[:N] or metal[:N] (GPU builds need --features cuda/metal).
    #[arg(long, default_value = "cpu")]
    pub device: String,

    /// Weights dtype: f32, or bf16/f16 on GPUs (slower than f32 on CPUs).
    #[arg(long, default_value = "f32")]
    pub dtype: String,

    /// Hide the progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl TrainArgs {
    pub fn config(&self) -> Result<TrainConfig> {
        let scale = match self.temperature {
            Some(t) if t > 0.0 => 1.0 / t,
            Some(t) => bail!("--temperature must be positive, got {t}"),
            None => self.scale,
        };
        Ok(TrainConfig {
            epochs: self.epochs,
            max_steps: self.max_steps,
            batch_size: self.batch_size,
            mini_batch_size: self.mini_batch_size,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            schedule: self.schedule,
            weight_decay: self.weight_decay,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            loss: LossConfig {
                scale,
                symmetric: self.symmetric,
            },
            false_negatives: self.false_negatives,
            mask_known: !self.ignore_known_positives,
            mask_judged: !self.ignore_judge,
            seed: self.seed,
            save_every: self.save_every,
            keep_checkpoints: self.keep_checkpoints,
            eval_every: self.eval_every,
            objective: self.objective,
            refresh_every: self.refresh_every,
            alternate_every: self.alternate_every,
            batching: self.batching,
            clusters: self.clusters,
            cluster_on: self.cluster_on,
        })
    }
}

fn dtype(spec: &str) -> Result<sieve_encoder::DType> {
    Ok(match spec {
        "f32" => sieve_encoder::DType::F32,
        "f64" => sieve_encoder::DType::F64,
        "bf16" => sieve_encoder::DType::BF16,
        "f16" => sieve_encoder::DType::F16,
        other => bail!("--dtype {other:?}: expected f32, bf16, f16 or f64"),
    })
}

/// Progress bar and dev evaluation.
struct CliHooks {
    pb: ProgressBar,
    dev: Option<(sieve_datasets::BeirDataset, String)>,
}

impl Hooks for CliHooks {
    fn on_step(&mut self, log: &StepLog) {
        self.pb.set_length(log.total_steps);
        self.pb.set_position(log.step);
        self.pb.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.1} pairs/s  FN dose {:.4}",
            log.loss, log.lr, log.pairs_per_s, log.dose.any.mean
        ));
    }

    fn on_message(&mut self, message: &str) {
        self.pb.println(message);
    }

    fn evaluate(&mut self, encoder: &Encoder, step: u64) -> sieve_trainer::Result<Option<f64>> {
        let Some((ds, split)) = &self.dev else {
            return Ok(None);
        };
        let opts = EvalOptions {
            cache_dir: None,
            show_progress: false,
            ..Default::default()
        };
        self.pb
            .set_message(format!("evaluating on {split} at step {step}"));
        let result = sieve_eval::evaluate_dense(encoder, ds, "training", "dev", split, &opts)
            .map_err(|e| sieve_trainer::Error::Data(format!("evaluation: {e}")))?;
        Ok(Some(result.main_score()))
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    train(args, args.config()?)
}

/// Trains with `config` (from the command line or a pipeline file); `args` says where
/// the model, data and output are.
pub fn train(args: &TrainArgs, config: TrainConfig) -> Result<()> {
    crate::ensure_positive("batch-size", config.batch_size)?;
    let model_dir = sieve_encoder::hub::resolve(&args.model)
        .with_context(|| format!("finding model {}", args.model))?;
    // Judge verdicts not acted on stay hard negatives, as they would without a judge.
    let (data, stats) = args
        .input
        .load(config.false_negatives == FalseNegativePolicy::None || !config.mask_judged)?;
    eprintln!("{}", data.summary());
    if stats.judged_relevant + stats.judged_irrelevant + stats.unjudged > 0 {
        eprintln!(
            "judge labels: {} relevant (false negatives), {} irrelevant (hard negatives), {} unjudged or failed (unused)",
            stats.judged_relevant, stats.judged_irrelevant, stats.unjudged
        );
    }
    let dev = match &args.eval_dataset {
        Some(dir) => Some((
            sieve_datasets::load_beir(dir, &args.eval_split, Default::default())
                .with_context(|| format!("loading dev data {}", dir.display()))?,
            args.eval_split.clone(),
        )),
        None => None,
    };
    let load = LoadOptions {
        device: sieve_encoder::device(&args.device)?,
        dtype: dtype(&args.dtype)?,
        max_seq_length: args.max_seq_length,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&model_dir, &load, data, config, &args.output)
        .with_context(|| format!("preparing to train {}", model_dir.display()))?;
    trainer.set_cache_dir(Some(
        args.cache_dir
            .clone()
            .unwrap_or_else(sieve_eval::cache::default_cache_dir),
    ));
    if args.resume {
        if trainer.resume()? {
            eprintln!(
                "resuming from step {} of {} (epoch {}, batch {})",
                trainer.state().step,
                trainer.state().total_steps,
                trainer.state().epoch,
                trainer.state().batch
            );
        } else {
            eprintln!(
                "no checkpoint in {}: starting from the beginning",
                args.output.display()
            );
        }
    } else if !Trainer::checkpoints(&args.output)?.is_empty() {
        bail!(
            "{} already holds checkpoints: pass --resume to continue that run, or choose another --output",
            args.output.display()
        );
    }
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(trainer.state().total_steps);
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}  (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_position(trainer.state().step);
        pb
    };
    let mut hooks = CliHooks { pb, dev };
    let summary = trainer.run(&mut hooks)?;
    hooks.pb.finish_and_clear();
    println!(
        "trained {} steps in {:.1}s ({} pairs{}); loss over the last {} steps {}",
        summary.steps,
        summary.seconds,
        summary.pairs,
        match summary.resumed_from {
            Some(s) => format!(" this run, resumed from step {s}"),
            None => String::new(),
        },
        sieve_trainer::train::RECENT_STEPS.min(summary.steps as usize),
        summary
            .recent_loss
            .map_or("n/a".into(), |l| format!("{l:.4}"))
    );
    println!(
        "false negatives masked or counted as positives: {} (query, document) pairs",
        summary.false_negatives
    );
    let d = |x: &sieve_trainer::dose::Dose| {
        format!(
            "{:.4} (known {:.4}, judged {:.4}; max {:.4})",
            x.any.mean, x.known.mean, x.judged.mean, x.any.max
        )
    };
    println!(
        "false-negative dose (mean share of each query's softmax mass on known/judged positives, before masking): {}; first epoch {}, last epoch {}; the positive's own share {:.4}",
        d(&summary.dose),
        d(&summary.dose_first_epoch),
        d(&summary.dose_last_epoch),
        summary.dose.positive.mean
    );
    if let Some((metric, step)) = summary.best {
        println!(
            "best dev nDCG@10 {metric:.5} at step {step}: {}",
            args.output.join("best").display()
        );
    }
    println!("model: {}", args.output.display());
    Ok(())
}
