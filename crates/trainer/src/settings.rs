//! The training stage's settings, defined once: `sieve train`'s flags (and `sieve
//! dose`'s, which estimates the same run) and a pipeline's `[train]` table are this
//! type, with these defaults.
//!
//! [`TrainConfig`] stays the engine's resolved configuration (the scale rather than
//! a temperature, clipping as an `Option`): it is what a checkpoint stores and a resume
//! compares. [`TrainSettings::config`] is the one place the two meet.

use std::path::PathBuf;

use candle_core::DType;
use serde::{Deserialize, Serialize};
use sieve_encoder::LoadOptions;

use crate::batch::Batching;
use crate::data::DataOptions;
use crate::loss::{FalseNegativePolicy, LossConfig, Matryoshka};
use crate::schedule::Decay;
use crate::train::{ClusterOn, Objective, TrainConfig};
use crate::{Error, Result};

/// What decides a training run's result (the model, data and output paths are the
/// caller's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct TrainSettings {
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1))]
    pub epochs: u64,

    /// Stop after this many steps (the schedule spans them).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_steps: Option<u64>,

    /// Queries per batch: each is contrasted with every document of the batch.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 32))]
    pub batch_size: usize,

    /// GradCache: embed and back-propagate this many texts at a time, so a batch of
    /// any size needs the memory of one mini-batch (same gradients as the full batch).
    #[cfg_attr(feature = "clap", arg(long))]
    pub mini_batch_size: Option<usize>,

    /// Peak learning rate (AdamW).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2e-5))]
    pub lr: f64,

    /// Fraction of the steps spent warming the learning rate up from 0.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.1))]
    pub warmup_ratio: f64,

    /// Decay after warmup.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Decay::Linear))]
    pub schedule: Decay,

    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.01))]
    pub weight_decay: f64,

    /// Clip the global gradient norm (0: no clipping).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1.0))]
    pub max_grad_norm: f64,

    /// Cosine-similarity scale (1/temperature); sentence-transformers' default is 20.
    #[cfg_attr(
        feature = "clap",
        arg(long, default_value_t = 20.0, conflicts_with = "temperature")
    )]
    pub scale: f64,

    /// Softmax temperature (the inverse of --scale; overrides it).
    #[cfg_attr(feature = "clap", arg(long))]
    pub temperature: Option<f64>,

    /// Add the document→query term (MultipleNegativesSymmetricRankingLoss).
    #[cfg_attr(feature = "clap", arg(long))]
    pub symmetric: bool,

    /// Matryoshka: also train nested prefixes of the embedding, e.g. 384,256,128,64
    /// (sentence-transformers' MatryoshkaLoss: the loss summed over the prefixes, each
    /// re-normalised), so that the first D dimensions alone retrieve well (`sieve eval
    /// --truncate-dim D` scores them). In-batch (with or without GradCache) or exact;
    /// the exact softmax keeps one corpus table per narrower prefix (N × D floats each).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    pub matryoshka_dims: Vec<usize>,

    /// Listwise distillation from the judge (labeled Parquet input): add W times the KL
    /// divergence between the judge's distribution over each query's positive and
    /// scored candidates, softmax(P(relevant) / --distill-temperature), and the model's
    /// softmax over the same documents (FlagEmbedding's knowledge distillation with
    /// the judge as teacher). 0: off.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub distill_weight: f64,

    /// The teacher's temperature: lower sharpens the judge's distribution.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.1))]
    pub distill_temperature: f64,

    /// Scored candidates per query distilled over, best-ranked first (each one not in
    /// the batch is embedded too: this many more documents per query at most).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 8))]
    pub distill_candidates: usize,

    /// Distillation alone, without the contrastive loss (needs --distill-weight > 0).
    #[cfg_attr(feature = "clap", arg(long))]
    pub distill_only: bool,

    /// Matryoshka: one weight per --matryoshka-dims entry (default: all 1).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_delimiter = ',', requires = "matryoshka_dims")
    )]
    pub matryoshka_weights: Vec<f64>,

    /// What to do with batch documents known to answer a query: mask (out of its
    /// softmax), positive (into its numerator) or none (leave them as negatives; a
    /// labeled Parquet's judged-relevant candidates then stay among the hard negatives,
    /// as they would without a judge). Either way metrics.jsonl logs the dose: the
    /// share of each query's softmax mass on them.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, default_value_t = FalseNegativePolicy::Mask)
    )]
    pub false_negatives: FalseNegativePolicy,

    /// Do not treat other qrels positives / answers to the same question as false
    /// negatives (only the judge's, and identical texts).
    #[cfg_attr(feature = "clap", arg(long))]
    pub ignore_known_positives: bool,

    /// Do not use the judge's labels as false negatives.
    #[cfg_attr(feature = "clap", arg(long))]
    pub ignore_judge: bool,

    /// in-batch: each query against the batch's documents (sentence-transformers'
    /// MNRL). exact: each query against the whole corpus, from a table of corpus
    /// embeddings refreshed every --refresh-every steps; affordable because the judge
    /// removed the false negatives such a denominator is full of.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Objective::InBatch))]
    pub objective: Objective,

    /// Exact softmax: re-embed the whole corpus every N steps (0: only at the start;
    /// the batch's documents are written back into the table after every step).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub refresh_every: u64,

    /// Exact softmax, alternating coordinate ascent: train only the query side for N
    /// steps (the documents and the corpus table held fixed), then only the document
    /// side for N steps, and so on; AdamW's moments are reset at every switch.
    /// 0: both sides every step.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub alternate_every: u64,

    /// random: a seeded shuffle. clustered: each batch drawn from one k-means cluster
    /// of the base model's query (or positive, --cluster-on) embeddings, so its
    /// negatives, and its false negatives, share a topic (TAS-B, CDE). Works with every
    /// objective and with GradCache; no text repeats in a batch either way.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = Batching::Random))]
    pub batching: Batching,

    /// Clustered batching: number of k-means clusters (default: examples ÷ batch size).
    #[cfg_attr(feature = "clap", arg(long))]
    pub clusters: Option<usize>,

    /// Clustered batching: cluster the queries' embeddings or the positives'.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = ClusterOn::Queries))]
    pub cluster_on: ClusterOn,

    /// Hard negatives per example (the best-ranked), from the pair file's negative
    /// columns or the judge's irrelevant candidates.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1))]
    pub num_negatives: usize,

    /// Labeled Parquet: P(relevant) at or above which a candidate is a false negative
    /// (default: the label the judge wrote).
    #[cfg_attr(feature = "clap", arg(long))]
    pub judge_threshold: Option<f32>,

    /// BEIR data: qrels pairs scored at least this are training positives; pairs
    /// scored above 0 but below it are known to answer their query without being
    /// trained on (graded qrels; a benchmark's hidden positives): masked like other
    /// known positives and measured in the false-negative dose.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1))]
    pub min_positive_score: i32,

    /// Token limit per text (default: the model's).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_seq_length: Option<usize>,

    #[cfg_attr(feature = "clap", arg(long, default_value_t = 42))]
    pub seed: u64,

    /// Checkpoint every N steps (and at the end).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 500))]
    pub save_every: u64,

    /// Checkpoints kept.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2))]
    pub keep_checkpoints: usize,

    /// Evaluate on the dev data every N steps (0: only at the end).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub eval_every: u64,

    /// cpu, cuda[:N] or metal[:N] (GPU builds need --features cuda/metal).
    #[cfg_attr(feature = "clap", arg(long, default_value = "cpu"))]
    pub device: String,

    /// Compute dtype: f32, or bf16/f16 mixed precision for GPUs (the layers compute in
    /// half precision; the master weights, AdamW state, pooling, loss and softmax stay
    /// f32). Slower than f32 on CPUs, which have no fast half-precision products.
    #[cfg_attr(feature = "clap", arg(long, default_value = "f32"))]
    pub dtype: String,

    /// Prepended to every query before it is embedded, e.g. "query: " (e5) or a task
    /// instruction (bge, gte); replaces the model's own query prompt, and the exported model carries it (the `query` entry
    /// of `prompts` in config_sentence_transformers.json, which applies by default).
    #[cfg_attr(feature = "clap", arg(long))]
    pub query_prompt: Option<String>,

    /// Prepended to every document before it is embedded, e.g. "passage: "; replaces
    /// the model's own (its `document`, `passage` or `corpus` prompt). The corpus table
    /// of the exact softmax is embedded with it too.
    #[cfg_attr(feature = "clap", arg(long))]
    pub document_prompt: Option<String>,
}

impl Default for TrainSettings {
    fn default() -> Self {
        let c = TrainConfig::default();
        let d = DataOptions::default();
        Self {
            epochs: c.epochs,
            max_steps: c.max_steps,
            batch_size: c.batch_size,
            mini_batch_size: c.mini_batch_size,
            lr: c.lr,
            warmup_ratio: c.warmup_ratio,
            schedule: c.schedule,
            weight_decay: c.weight_decay,
            max_grad_norm: c.max_grad_norm.unwrap_or(0.0),
            scale: c.loss.scale,
            temperature: None,
            symmetric: c.loss.symmetric,
            matryoshka_dims: c.matryoshka.dims.clone(),
            matryoshka_weights: c.matryoshka.weights.clone(),
            distill_weight: 0.0,
            distill_temperature: 0.1,
            distill_candidates: 8,
            distill_only: false,
            false_negatives: c.false_negatives,
            ignore_known_positives: !c.mask_known,
            ignore_judge: !c.mask_judged,
            objective: c.objective,
            refresh_every: c.refresh_every,
            alternate_every: c.alternate_every,
            batching: c.batching,
            clusters: c.clusters,
            cluster_on: c.cluster_on,
            num_negatives: d.num_negatives,
            judge_threshold: d.judge_threshold,
            min_positive_score: d.min_positive_score,
            max_seq_length: None,
            seed: c.seed,
            save_every: c.save_every,
            keep_checkpoints: c.keep_checkpoints,
            eval_every: c.eval_every,
            device: "cpu".into(),
            dtype: "f32".into(),
            query_prompt: None,
            document_prompt: None,
        }
    }
}

impl TrainSettings {
    /// The softmax scale: 1/temperature when a temperature is given.
    pub fn scale(&self) -> Result<f64> {
        let scale = match self.temperature {
            Some(t) if t > 0.0 && t.is_finite() => 1.0 / t,
            Some(t) => {
                return Err(Error::Config(format!(
                    "temperature must be positive, got {t}"
                )))
            }
            None => self.scale,
        };
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(Error::Config(format!(
                "scale must be positive, got {scale}"
            )));
        }
        Ok(scale)
    }

    /// Every value in range, before any model or data is loaded (a pipeline checks them
    /// before its first stage): `--lr -1`, `--warmup-ratio 2` or `--epochs 0` once
    /// trained, or exported an untrained copy, with exit 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.mini_batch_size == Some(0) {
            return bad("mini_batch_size must be at least 1".into());
        }
        match self.max_steps {
            Some(0) => return bad("max_steps must be at least 1".into()),
            None if self.epochs == 0 => {
                return bad("epochs must be at least 1 (or give max_steps)".into())
            }
            _ => {}
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "warmup_ratio must be between 0 and 1, got {}",
                self.warmup_ratio
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!(
                "weight_decay must be zero or more, got {}",
                self.weight_decay
            ));
        }
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return bad(format!(
                "max_grad_norm must be zero (no clipping) or more, got {}",
                self.max_grad_norm
            ));
        }
        if self.max_seq_length == Some(0) {
            return bad("max_seq_length must be at least 1".into());
        }
        if self.clusters == Some(0) {
            return bad("clusters must be at least 1".into());
        }
        if let Some(t) = self.judge_threshold.filter(|t| !(*t > 0.0 && *t <= 1.0)) {
            return bad(format!("judge_threshold must be in (0, 1], got {t}"));
        }
        if let Err(e) = self.matryoshka().check(None) {
            return bad(e);
        }
        if !(self.distill_weight >= 0.0 && self.distill_weight.is_finite()) {
            return bad(format!(
                "distill_weight must be ≥ 0, got {}",
                self.distill_weight
            ));
        }
        if !(self.distill_temperature > 0.0 && self.distill_temperature.is_finite()) {
            return bad(format!(
                "distill_temperature must be positive, got {}",
                self.distill_temperature
            ));
        }
        if self.distill_only && self.distill_weight == 0.0 {
            return bad("distill_only needs a distill_weight above 0".into());
        }
        self.scale().map(|_| ())
    }

    /// The engine's configuration for these settings.
    pub fn config(&self) -> Result<TrainConfig> {
        self.validate()?;
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
                scale: self.scale()?,
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
            matryoshka: self.matryoshka(),
            distill: (self.distill_weight > 0.0).then_some(crate::distill::DistillConfig {
                weight: self.distill_weight,
                temperature: self.distill_temperature,
                candidates: self.distill_candidates,
                only: self.distill_only,
            }),
        })
    }

    /// The Matryoshka prefixes and their weights.
    pub fn matryoshka(&self) -> Matryoshka {
        Matryoshka {
            dims: self.matryoshka_dims.clone(),
            weights: self.matryoshka_weights.clone(),
        }
    }

    /// How the model is loaded for training.
    pub fn load_options(&self) -> Result<LoadOptions> {
        // Half precision is mixed precision: f32 master weights (AdamW's updates are far
        // below bf16's resolution of a weight), half-precision layers.
        let dtype = sieve_encoder::settings::dtype(&self.dtype)?;
        let (dtype, compute_dtype) = match dtype {
            DType::BF16 | DType::F16 => (DType::F32, Some(dtype)),
            d => (d, None),
        };
        Ok(LoadOptions {
            device: sieve_encoder::device(&self.device)?,
            dtype,
            compute_dtype,
            max_seq_length: self.max_seq_length,
            query_prompt: self.query_prompt.clone(),
            document_prompt: self.document_prompt.clone(),
            ..Default::default()
        })
    }

    /// Judge verdicts not acted on stay hard negatives, as they would without a judge.
    pub fn judged_as_negatives(&self) -> bool {
        self.false_negatives == FalseNegativePolicy::None || self.ignore_judge
    }

    /// How the training data is read with these settings; the paths are the caller's
    /// (`split`, `corpus` and `judged_qrels` only matter for BEIR / labeled inputs).
    pub fn data_options(
        &self,
        split: &str,
        corpus: Option<PathBuf>,
        judged_qrels: Option<PathBuf>,
    ) -> DataOptions {
        DataOptions {
            num_negatives: self.num_negatives,
            judge_threshold: self.judge_threshold,
            corpus,
            split: split.to_string(),
            min_positive_score: self.min_positive_score,
            judged_qrels,
            judged_as_negatives: self.judged_as_negatives(),
        }
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: TrainSettings,
    }

    /// `sieve train` with no option and an empty `[train]` table train the same run,
    /// and both resolve to the engine's own defaults.
    #[test]
    fn command_line_and_table_defaults_agree() {
        let cli = Cli::parse_from(["x"]).s;
        assert_eq!(cli, TrainSettings::default());
        let table: TrainSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(table, cli);
        assert_eq!(cli.config().unwrap(), TrainConfig::default());
        let cli = Cli::parse_from(["x", "--temperature", "0.05", "--objective", "exact"]).s;
        let table: TrainSettings =
            serde_json::from_str(r#"{"temperature": 0.05, "objective": "exact"}"#).unwrap();
        assert_eq!(table, cli);
        assert!((cli.config().unwrap().loss.scale - 20.0).abs() < 1e-9);
        let bad = TrainSettings {
            temperature: Some(0.0),
            ..Default::default()
        };
        assert!(bad
            .config()
            .unwrap_err()
            .to_string()
            .contains("temperature"));
    }
}
