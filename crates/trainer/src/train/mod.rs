//! The training loop: batches, gradients, clipping, AdamW, the schedule, metrics,
//! evaluation and checkpoints.
//!
//! A run writes into one output directory:
//!
//! ```text
//! OUT/                      the final model, sentence-transformers layout
//! OUT/best/                 the best model by the dev metric (when evaluating)
//! OUT/checkpoints/step-N/   model.safetensors, optimizer.safetensors, trainer_state.json
//! OUT/metrics.jsonl         one line per step (loss, lr, grad norm, pairs/s) and per eval
//! OUT/loss.svg              the loss curve (and dev metric), redrawn at every checkpoint
//! OUT/train_config.json     the configuration the run was started with
//! ```
//!
//! A checkpoint holds everything the run depends on: weights, AdamW moments and step,
//! the position in the data (epoch, batch) and the seed. Batches are a pure function
//! of `(seed, epoch)` and the forward has no dropout, so a run resumed from a
//! checkpoint after `kill -9` takes exactly the steps the uninterrupted run took and
//! ends at the same weights.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use sieve_encoder::{Encoder, LoadOptions, Role};

use crate::batch::{clustered_batches, epoch_batches, Batch, Batching, MaskSources};
use crate::data::{TextId, TrainData};
use crate::distributed::{Collective, Single};
use crate::dose::{Dose, QueryDose, Term};
use crate::exact::{exact_matryoshka_loss_parts, CorpusTable, ExactBatch};
use crate::loss::contrastive_loss;
use crate::loss::{FalseNegativePolicy, LossConfig, Matryoshka};
use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::{Decay, Schedule};
use crate::step::{gradients_across, Embed, Side, StepConfig};
use crate::{Error, Result};

mod card;
mod checkpoint;
mod metrics;

pub use card::CardInfo;

/// Most texts embedded in one forward when GradCache is off (chunks also break where
/// lengths drop, see `step`): large enough for efficient matrix products.
pub const DEFAULT_FORWARD_CHUNK: usize = 64;

/// Which softmax the queries are trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Every document of the batch (sentence-transformers' MNRL).
    #[default]
    InBatch,
    /// Every document of the corpus, from a table of embeddings (see [`crate::exact`]).
    Exact,
}

/// Training hyper-parameters; the `[train]` table of a pipeline config mirrors it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: u64,
    /// Stop after this many optimiser steps (the schedule spans them).
    pub max_steps: Option<u64>,
    /// Queries per batch.
    pub batch_size: usize,
    /// GradCache: texts per graph. `None` puts the whole batch in one graph.
    pub mini_batch_size: Option<usize>,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub schedule: Decay,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    pub loss: LossConfig,
    pub false_negatives: FalseNegativePolicy,
    /// Mask (or count as positive) other qrels positives / answers to the same question.
    pub mask_known: bool,
    /// Mask (or count as positive) candidates the judge labeled relevant.
    pub mask_judged: bool,
    pub seed: u64,
    /// Checkpoint every N steps (0: only at the end).
    pub save_every: u64,
    /// Complete checkpoints kept (older ones are deleted).
    pub keep_checkpoints: usize,
    /// Evaluate every N steps (0: only at the end, when an evaluator is given).
    pub eval_every: u64,
    pub objective: Objective,
    /// Exact softmax: re-embed the whole corpus every N steps (0: only at the start;
    /// between refreshes each batch's documents are written back).
    pub refresh_every: u64,
    /// Exact softmax, alternating coordinate ascent: move only the query side for N
    /// steps (documents and table fixed), then only the document side for N, and so
    /// on, resetting AdamW's moments at every switch (0: both sides every step).
    pub alternate_every: u64,
    /// Random batches, or batches drawn from k-means clusters of the base model's
    /// embeddings (topic-clustered: hard, and dense in false negatives).
    pub batching: Batching,
    /// Clustered batching: the number of k-means clusters (`None`: one per batch,
    /// examples ÷ batch size, as CDE sizes its clusters).
    pub clusters: Option<usize>,
    /// Clustered batching: cluster the queries' embeddings, or the positives'.
    pub cluster_on: ClusterOn,
    /// The loss summed over nested prefixes of the embedding (empty: the full one
    /// only). Left out of the saved configuration when empty, so runs from before it
    /// existed resume.
    #[serde(skip_serializing_if = "Matryoshka::is_empty")]
    pub matryoshka: Matryoshka,
    /// Listwise distillation from the judge's scores (left out of the saved
    /// configuration when off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill: Option<crate::distill::DistillConfig>,
}

/// What clustered batching clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ClusterOn {
    #[default]
    Queries,
    Positives,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            max_steps: None,
            batch_size: 32,
            mini_batch_size: None,
            lr: 2e-5,
            warmup_ratio: 0.1,
            schedule: Decay::Linear,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            loss: LossConfig::default(),
            false_negatives: FalseNegativePolicy::Mask,
            mask_known: true,
            mask_judged: true,
            seed: 42,
            save_every: 500,
            keep_checkpoints: 2,
            eval_every: 0,
            objective: Objective::InBatch,
            refresh_every: 0,
            alternate_every: 0,
            batching: Batching::Random,
            clusters: None,
            cluster_on: ClusterOn::Queries,
            matryoshka: Matryoshka::default(),
            distill: None,
        }
    }
}

impl TrainConfig {
    /// The side step `step` (0-based) trains.
    pub fn side_at(&self, step: u64) -> Side {
        match self.alternate_every {
            0 => Side::Both,
            n if (step / n).is_multiple_of(2) => Side::Queries,
            _ => Side::Documents,
        }
    }

    /// The settings a resumed run must share with the run it resumes: anything that
    /// changes which batches are seen or what a step computes.
    fn trajectory_key(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            for k in ["save_every", "keep_checkpoints", "eval_every"] {
                o.remove(k);
            }
        }
        v
    }
}

/// What a checkpoint records besides weights and optimiser state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps taken.
    pub step: u64,
    /// Epoch of the next batch.
    pub epoch: u64,
    /// Index of the next batch within its epoch.
    pub batch: usize,
    pub total_steps: u64,
    /// Best dev metric so far and its step.
    pub best: Option<(f64, u64)>,
    pub config: TrainConfig,
    /// Examples and texts in the data, to refuse resuming on other data.
    pub data_examples: usize,
    pub data_texts: usize,
    /// [`TrainData::fingerprint`] of the data (absent in checkpoints from before it).
    #[serde(default)]
    pub data_fingerprint: Option<String>,
    /// What loading the model decided and the trajectory depends on: the token limit
    /// per text and the compute dtype (absent in older checkpoints).
    #[serde(default)]
    pub max_seq_length: Option<usize>,
    #[serde(default)]
    pub dtype: Option<String>,
    /// The query and document prompts, when there are any (left out otherwise, so that
    /// checkpoints from before prompts resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<(String, String)>,
}

/// One step's numbers, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: u64,
    /// The side this step trained, when sides alternate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    pub total_steps: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub pairs: usize,
    pub pairs_per_s: f64,
    pub seconds: f64,
    /// (query, document) pairs masked or made positive by the judge / qrels.
    pub false_negatives: usize,
    /// Pairs excluded as identical texts.
    pub identical: usize,
    /// The false-negative dose of this batch's queries: the share of their softmax mass
    /// on documents known or judged to answer them, as if unmasked (see [`crate::dose`]).
    pub dose: Dose,
}

/// Callbacks from the loop: progress display and evaluation live with the caller.
pub trait Hooks {
    fn on_step(&mut self, _log: &StepLog) {}
    /// A line for the user (checkpoint written, evaluation result, …).
    fn on_message(&mut self, _message: &str) {}
    /// Scores a snapshot of the model on dev data (higher is better); `None` when the
    /// run has no dev data.
    fn evaluate(&mut self, _encoder: &Encoder, _step: u64) -> Result<Option<f64>> {
        Ok(None)
    }
    /// The metric's name, for logs and the plot.
    fn metric_name(&self) -> &str {
        "ndcg_at_10"
    }
}

/// Hooks that do nothing.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Steps averaged into [`Summary::recent_loss`].
pub const RECENT_STEPS: usize = 10;

/// The summary of a finished run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub final_loss: Option<f64>,
    /// Mean loss of the last [`RECENT_STEPS`] steps (fewer in a short run): the last
    /// step alone can be a tail batch of one pair, whose in-batch loss is 0.
    pub recent_loss: Option<f64>,
    pub best: Option<(f64, u64)>,
    pub seconds: f64,
    pub pairs: usize,
    pub false_negatives: usize,
    pub resumed_from: Option<u64>,
    /// The dose averaged over this run's steps (each step's batch mean), and its
    /// largest single-query value.
    pub dose: Dose,
    /// The same over the first epoch's steps and the last epoch's, to show how training
    /// moved it.
    pub dose_first_epoch: Dose,
    pub dose_last_epoch: Dose,
}

/// A training run over one model and one dataset.
pub struct Trainer {
    encoder: Encoder,
    opt: AdamW,
    params: Vec<Var>,
    data: TrainData,
    /// Every text's tokens as a document (its prompt in front).
    tokens: Vec<Vec<u32>>,
    /// As a query, when the query prompt differs from the document prompt.
    query_tokens: Option<Vec<Vec<u32>>>,
    config: TrainConfig,
    out: PathBuf,
    state: TrainState,
    schedule: Schedule,
    losses: Vec<(u64, f64)>,
    evals: Vec<(u64, f64)>,
    resumed_from: Option<u64>,
    /// Exact softmax: the corpus table, the step it was last fully refreshed at, and
    /// each corpus text's row.
    table: Option<CorpusTable>,
    /// Matryoshka with the exact softmax: one table per prefix narrower than the model,
    /// derived from `table` ([`CorpusTable::prefix`]) whenever it is set and kept equal to
    /// it on every write-back.
    prefix_tables: Vec<CorpusTable>,
    table_refreshed: u64,
    corpus_pos: HashMap<TextId, usize>,
    cache_dir: Option<PathBuf>,
    /// Clustered batching: each example's cluster.
    clusters: Option<Vec<u32>>,
    /// Per step: (step, epoch, batch dose), for the summary and the plot.
    doses: Vec<(u64, u64, Dose)>,
    /// The ranks of a data-parallel run ([`crate::distributed`]); [`Single`] alone.
    /// Rank 0 writes the run's files, the others only compute.
    world: std::sync::Arc<dyn Collective>,
    /// What the model card says about the run's origin.
    card: CardInfo,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.into(),
        source,
    }
}

fn ckpt_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.into(),
        message: message.to_string(),
    }
}

impl Trainer {
    /// Loads `model_dir` with trainable weights and tokenises every text of `data`.
    pub fn new(
        model_dir: &Path,
        load: &LoadOptions,
        data: TrainData,
        config: TrainConfig,
        out: &Path,
    ) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        if config.mini_batch_size == Some(0) {
            return Err(Error::Config("mini_batch_size must be at least 1".into()));
        }
        // One example and no hard negative: the softmax has only the positive, the
        // loss is 0 and nothing is learned (it once "trained" with loss 0, exit 0).
        if config.batch_size == 1
            && config.objective != Objective::Exact
            && data.examples.iter().all(|e| e.negatives.is_empty())
        {
            return Err(Error::Config(
                "batch_size 1 without hard negatives leaves the positive alone in the softmax \
                 (loss 0, nothing learned): use a larger batch, hard negatives, or the exact objective"
                    .into(),
            ));
        }
        if config.alternate_every > 0 && config.objective != Objective::Exact {
            return Err(Error::Config(
                "alternate_every (alternating sides) needs the exact objective".into(),
            ));
        }
        if config.objective == Objective::Exact && config.loss.symmetric {
            return Err(Error::Config(
                "the exact softmax has no symmetric (document→query) term".into(),
            ));
        }
        if let Some(d) = &config.distill {
            if config.objective == Objective::Exact {
                return Err(Error::Config(
                    "distillation works with the in-batch objective, not yet the exact softmax"
                        .into(),
                ));
            }
            if data.teacher.is_empty() {
                return Err(Error::Config(format!(
                    "distillation needs the judge's P(relevant) per candidate: train on the \
                     labeled Parquet `sieve judge` writes ({} has none)",
                    data.source
                )));
            }
            if !(d.temperature > 0.0 && d.temperature.is_finite() && d.weight >= 0.0) {
                return Err(Error::Config(
                    "distillation: the temperature must be positive and the weight ≥ 0".into(),
                ));
            }
        }
        let (encoder, varmap) = Encoder::load_trainable(model_dir, load)?;
        config
            .matryoshka
            .check(Some(encoder.dim()))
            .map_err(Error::Config)?;
        // The optimiser holds every variable; the map itself is no longer needed.
        let opt = AdamW::from_varmap(
            &varmap,
            AdamWConfig {
                lr: config.lr,
                weight_decay: config.weight_decay,
                ..Default::default()
            },
        )?;
        let params = opt.vars();
        let refs: Vec<&str> = data.texts.iter().map(String::as_str).collect();
        let tokens = encoder.tokenize_as(Role::Document, &refs)?;
        let prompts = encoder.prompts();
        let query_tokens = (prompts.prompt(Role::Query) != prompts.prompt(Role::Document))
            .then(|| encoder.tokenize_as(Role::Query, &refs))
            .transpose()?;
        let clusters = match config.batching {
            Batching::Random => None,
            Batching::Clustered => Some(cluster_examples(&encoder, &data, &config)?.assignment),
        };
        let total_steps = total_steps_with(&data, &config, clusters.as_deref());
        let corpus_pos: HashMap<TextId, usize> = data
            .corpus
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i))
            .collect();
        let schedule = Schedule {
            lr: config.lr,
            warmup_steps: (config.warmup_ratio * total_steps as f64).ceil() as u64,
            total_steps,
            decay: config.schedule,
        };
        let state = TrainState {
            step: 0,
            epoch: 0,
            batch: 0,
            total_steps,
            best: None,
            config: config.clone(),
            data_examples: data.examples.len(),
            data_texts: data.texts.len(),
            data_fingerprint: Some(data.fingerprint()),
            max_seq_length: Some(encoder.max_seq_length()),
            dtype: Some(format!("{:?}", encoder.dtype())),
            prompts: {
                let p = encoder.prompts();
                let (q, d) = (p.prompt(Role::Query), p.prompt(Role::Document));
                (!q.is_empty() || !d.is_empty()).then(|| (q.to_string(), d.to_string()))
            },
        };
        Ok(Self {
            encoder,
            opt,
            params,
            data,
            tokens,
            query_tokens,
            config,
            out: out.to_path_buf(),
            state,
            schedule,
            losses: Vec::new(),
            evals: Vec::new(),
            resumed_from: None,
            table: None,
            prefix_tables: Vec::new(),
            table_refreshed: 0,
            corpus_pos,
            cache_dir: None,
            clusters,
            doses: Vec::new(),
            world: std::sync::Arc::new(Single),
            card: CardInfo::default(),
        })
    }

    /// Makes this trainer one rank of a data-parallel run: every rank loads the same
    /// model and data with the same settings, embeds its share of each batch and
    /// applies the same summed gradients; rank 0 alone writes metrics, evaluations,
    /// checkpoints and the model.
    pub fn set_world(&mut self, world: std::sync::Arc<dyn Collective>) {
        self.world = world;
    }

    /// Whether this process writes the run's files (rank 0, or the only process).
    pub(super) fn primary(&self) -> bool {
        self.world.rank() == 0
    }

    /// Clustered batching: each example's cluster (`None` for random batches).
    pub fn clusters(&self) -> Option<&[u32]> {
        self.clusters.as_deref()
    }

    /// The batches of `epoch`, as the configured batcher makes them.
    pub fn epoch_plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        plan(&self.data, &self.config, self.clusters.as_deref(), epoch)
    }

    /// Where the first corpus table (the base model's embeddings) is cached between runs.
    pub fn set_cache_dir(&mut self, dir: Option<PathBuf>) {
        self.cache_dir = dir;
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }
    pub fn data(&self) -> &TrainData {
        &self.data
    }

    /// Embeds the whole corpus with the current weights when the table is missing or
    /// due for its refresh.
    fn ensure_table(&mut self, hooks: &mut dyn Hooks) -> Result<()> {
        let due = match &self.table {
            None => true,
            Some(_) => {
                self.config.refresh_every > 0
                    && self.state.step >= self.table_refreshed + self.config.refresh_every
            }
        };
        if !due {
            return Ok(());
        }
        hooks.on_message(&format!(
            "embedding the corpus ({} documents) for the exact softmax at step {}",
            self.data.corpus.len(),
            self.state.step
        ));
        let t0 = Instant::now();
        let snapshot = self.snapshot()?;
        let texts: Vec<&str> = self
            .data
            .corpus
            .iter()
            .map(|&t| self.data.text(t))
            .collect();
        // Rank 0 alone writes the shared cache; the other ranks embed for themselves.
        let cache = self
            .cache_dir
            .as_deref()
            .filter(|_| self.primary())
            .map(sieve_encoder::cache::EmbeddingCache::new);
        let prompted = snapshot.prompts().apply(Role::Document, &texts);
        let texts: Vec<&str> = prompted.iter().map(String::as_str).collect();
        let emb =
            sieve_encoder::cache::encode_cached(&snapshot, &texts, 64, cache.as_ref(), &|_| {})?;
        self.set_table(CorpusTable::new(emb.into_vec(), snapshot.dim()))?;
        self.table_refreshed = self.state.step;
        hooks.on_message(&format!(
            "corpus embedded in {:.1}s",
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Installs the exact softmax's corpus table, and derives the Matryoshka prefix
    /// tables from it (a checkpoint stores the full table alone).
    pub(crate) fn set_table(&mut self, table: CorpusTable) -> Result<()> {
        self.prefix_tables = self
            .config
            .matryoshka
            .dims
            .iter()
            .filter(|&&d| d != table.dim)
            .map(|&d| table.prefix(d))
            .collect::<candle_core::Result<_>>()?;
        self.table = Some(table);
        Ok(())
    }

    /// The exact softmax's view of a batch: fresh rows (positives, then negatives),
    /// numerator and excluded corpus rows per query, and how many (query, document)
    /// pairs the false-negative policy touched across the whole corpus.
    fn exact_batch(
        &self,
        batch: &Batch,
        indices: &[usize],
    ) -> Result<(ExactBatch, usize, ExactDoseRows)> {
        let pos = |t: TextId| {
            self.corpus_pos.get(&t).copied().ok_or_else(|| {
                Error::Data(format!(
                    "document {:?} is not in the corpus",
                    self.data.text(t)
                ))
            })
        };
        let fresh = batch
            .documents
            .iter()
            .map(|&t| pos(t))
            .collect::<Result<Vec<_>>>()?;
        let (mut positives, mut excluded, mut touched) = (Vec::new(), Vec::new(), 0);
        let mut dose_rows = ExactDoseRows::default();
        for &i in indices {
            let e = &self.data.examples[i];
            let mut p = vec![pos(e.positive)?];
            let mut x = Vec::new();
            if let Some(&q) = self.corpus_pos.get(&e.query) {
                x.push(q); // the query's own text as a document: identical, never a negative
            }
            // Every related row with its flags (the dose), whatever the policy masks.
            let flagged = crate::dose::related_rows(e, |t| self.corpus_pos.get(&t).copied());
            let masked_before = x.len();
            let mut related: Vec<TextId> = Vec::new();
            if self.config.mask_known {
                related.extend(&e.known);
            }
            if self.config.mask_judged {
                related.extend(&e.judged);
            }
            related.sort_unstable();
            related.dedup();
            for t in related {
                let Some(&r) = self.corpus_pos.get(&t) else {
                    continue;
                };
                match self.config.false_negatives {
                    FalseNegativePolicy::Mask => x.push(r),
                    FalseNegativePolicy::Positive => p.push(r),
                    FalseNegativePolicy::None => continue,
                }
                touched += 1;
            }
            dose_rows.positive.push(p[0]);
            dose_rows.masked.push(
                x[masked_before..]
                    .iter()
                    .copied()
                    .filter(|&r| r != p[0])
                    .collect(),
            );
            dose_rows.flagged.push(flagged);
            positives.push(p);
            excluded.push(x);
        }
        Ok((
            ExactBatch {
                fresh,
                positives,
                excluded,
            },
            touched,
            dose_rows,
        ))
    }

    /// The exact step's dose, from the loss's denominators (`lse`), the queries'
    /// embeddings and each related row's current embedding (fresh or from the table).
    fn exact_dose(
        &self,
        queries: &[f32],
        fresh: &[f32],
        eb: &ExactBatch,
        rows: &ExactDoseRows,
        lse: &[f64],
    ) -> Vec<QueryDose> {
        let Some(table) = self.table.as_ref() else {
            return Vec::new();
        };
        let dim = table.dim;
        let fresh_at: HashMap<usize, usize> =
            eb.fresh.iter().enumerate().map(|(k, &r)| (r, k)).collect();
        let unit = |v: &[f32]| -> Vec<f64> {
            let n = v
                .iter()
                .map(|&x| x as f64 * x as f64)
                .sum::<f64>()
                .sqrt()
                .max(1e-30);
            v.iter().map(|&x| x as f64 / n).collect()
        };
        let row = |r: usize| -> Vec<f64> {
            match fresh_at.get(&r) {
                Some(&k) => unit(&fresh[k * dim..(k + 1) * dim]),
                None => unit(&table.data[r * dim..(r + 1) * dim]),
            }
        };
        let scale = self.config.loss.scale;
        (0..lse.len())
            .map(|i| {
                let q = unit(&queries[i * dim..(i + 1) * dim]);
                let logit =
                    |r: usize| scale * row(r).iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
                let missing: Vec<f64> = rows.masked[i].iter().map(|&r| logit(r)).collect();
                let mut flagged: Vec<Term> = rows.flagged[i]
                    .iter()
                    .map(|&(r, flags)| Term {
                        logit: logit(r),
                        flags,
                        positive: false,
                    })
                    .collect();
                flagged.push(Term {
                    logit: logit(rows.positive[i]),
                    flags: 0,
                    positive: true,
                });
                QueryDose::from_lse(lse[i], &missing, &flagged)
            })
            .collect()
    }

    fn evaluate(&mut self, hooks: &mut dyn Hooks) -> Result<()> {
        let snapshot = self.snapshot()?;
        let Some(metric) = hooks.evaluate(&snapshot, self.state.step)? else {
            return Ok(());
        };
        drop(snapshot);
        let step = self.state.step;
        self.evals.push((step, metric));
        self.append_metrics(&serde_json::json!({
            "step": step, "eval": metric, "metric": hooks.metric_name(),
        }))?;
        let better = self.state.best.is_none_or(|(b, _)| metric > b);
        if better {
            self.state.best = Some((metric, step));
            self.export(&self.out.join("best"))?;
        }
        hooks.on_message(&format!(
            "step {step}: dev {} {metric:.5}{}",
            hooks.metric_name(),
            if better {
                " (best so far; saved to best/)"
            } else {
                ""
            }
        ));
        Ok(())
    }

    /// Trains to the end (or resumes to it), writing checkpoints, metrics and the
    /// final model into the output directory: a loop over [`Self::step`].
    pub fn run(&mut self, hooks: &mut dyn Hooks) -> Result<Summary> {
        self.begin(hooks)?;
        let start = Instant::now();
        let sources = MaskSources {
            known: self.config.mask_known,
            judged: self.config.mask_judged,
        };
        let step_config = StepConfig {
            loss: self.config.loss,
            mini_batch_size: self.config.mini_batch_size.unwrap_or(DEFAULT_FORWARD_CHUNK),
            grad_cache: self.config.mini_batch_size.is_some(),
        };
        let (mut pairs, mut false_negatives) = (0usize, 0usize);
        let mut last_loss = None;
        'epochs: while self.state.epoch < self.config.epochs {
            let batches = self.epoch_plan(self.state.epoch);
            while self.state.batch < batches.len() {
                if self.state.step >= self.state.total_steps {
                    break 'epochs;
                }
                let log = self.step(&batches[self.state.batch], sources, &step_config, hooks)?;
                pairs += log.pairs;
                false_negatives += log.false_negatives;
                last_loss = Some(log.loss);
                self.between_steps(hooks)?;
            }
            self.state.epoch += 1;
            self.state.batch = 0;
        }
        if self.primary() {
            self.evaluate(hooks)?;
            let dir = self.save_checkpoint()?;
            hooks.on_message(&format!("checkpoint {}", dir.display()));
            self.export(&self.out)?;
        }
        Ok(self.summary(start, pairs, false_negatives, last_loss))
    }

    /// Before the first step: the run's configuration and clusters written (a fresh
    /// run), the clustering described.
    fn begin(&mut self, hooks: &mut dyn Hooks) -> Result<()> {
        if self.world.world_size() > 1 {
            // Every rank must stand at the same step of the same data: a rank that
            // resumed from another checkpoint (an --output not shared) would sum
            // gradients of other batches, silently.
            let fp = u32::from_str_radix(&self.data.fingerprint()[..8], 16).unwrap_or(0);
            let mine = Tensor::new(
                &[[
                    self.state.step as f64,
                    self.state.epoch as f64,
                    self.state.batch as f64,
                    fp as f64,
                ]],
                self.encoder.device(),
            )?;
            let all = self.world.all_gather(&mine)?.to_vec2::<f64>()?;
            if all.iter().any(|r| r != &all[0]) {
                return Err(Error::Config(format!(
                    "the ranks disagree on where the run stands ([step, epoch, batch, data] per \
                     rank: {all:?}): give every rank the same data and the same --output, on a \
                     filesystem they all see"
                )));
            }
        }
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))?;
        if self.resumed_from.is_none() && self.primary() {
            let cfg = self.out.join("train_config.json");
            let body = serde_json::to_vec_pretty(&self.config).map_err(|e| ckpt_err(&cfg, e))?;
            std::fs::write(&cfg, body).map_err(io(&cfg))?;
            // A fresh run starts a fresh log.
            let _ = std::fs::remove_file(self.metrics_path());
            if let Some(c) = &self.clusters {
                let path = self.out.join("clusters.json");
                let body = serde_json::json!({
                    "cluster_on": self.config.cluster_on,
                    "clusters": c.iter().map(|&a| a as usize + 1).max().unwrap_or(0),
                    "assignment": c,
                });
                std::fs::write(&path, body.to_string()).map_err(io(&path))?;
            }
        }
        if let Some(c) = &self.clusters {
            let k = c.iter().map(|&a| a as usize + 1).max().unwrap_or(0);
            let batches = self.epoch_plan(self.state.epoch);
            let purity = cluster_purity(&batches, c);
            hooks.on_message(&format!(
                "clustered batches: {k} k-means clusters of the base model's {} embeddings ({} examples); {} batches this epoch, on average {:.0}% of a batch from its largest cluster",
                match self.config.cluster_on {
                    ClusterOn::Queries => "query",
                    ClusterOn::Positives => "positive",
                },
                c.len(),
                batches.len(),
                100.0 * purity
            ));
        }
        Ok(())
    }

    /// One optimiser step on the batch of examples `indices`: gradients (in-batch or
    /// exact), clipping, AdamW, and the step's log line (metrics.jsonl, the hooks).
    fn step(
        &mut self,
        indices: &[usize],
        sources: MaskSources,
        step_config: &StepConfig,
        hooks: &mut dyn Hooks,
    ) -> Result<StepLog> {
        if self.config.objective == Objective::Exact {
            self.ensure_table(hooks)?;
        }
        let t0 = Instant::now();
        let batch = Batch::build(&self.data, indices, self.config.false_negatives, sources);
        let query_tokens = self.query_tokens.as_ref().unwrap_or(&self.tokens);
        let q: Vec<&[u32]> = batch
            .queries
            .iter()
            .map(|&t| query_tokens[t as usize].as_slice())
            .collect();
        let d: Vec<&[u32]> = batch
            .documents
            .iter()
            .map(|&t| self.tokens[t as usize].as_slice())
            .collect();
        let side = self.config.side_at(self.state.step);
        if self.state.step > 0 && side != self.config.side_at(self.state.step - 1) {
            self.opt.reset()?;
            hooks.on_message(&format!(
                "step {}: training the {} side now; optimizer moments reset",
                self.state.step + 1,
                side.name()
            ));
        }
        let lr = self.schedule.lr_at(self.state.step);
        self.opt.set_lr(lr);
        let (mut out, touched, dose) = match self.config.objective {
            Objective::InBatch => {
                let model: &dyn Embed = &self.encoder;
                let table = &batch.table;
                let loss_config = &step_config.loss;
                let matryoshka = &self.config.matryoshka;
                let base = |qe: &Tensor, de: &Tensor| contrastive_loss(qe, de, table, loss_config);
                // Distillation: each query's scored candidates, those not in the batch
                // embedded after its documents (the contrastive loss sees the batch's).
                let m = d.len();
                let (groups, extra) = match &self.config.distill {
                    Some(c) => crate::distill::groups(
                        &batch.queries,
                        &batch.documents,
                        &self.data.teacher,
                        c.candidates,
                    ),
                    None => (Vec::new(), Vec::new()),
                };
                let mut d = d;
                d.extend(extra.iter().map(|&t| self.tokens[t as usize].as_slice()));
                let distill = self.config.distill;
                let scale = loss_config.scale;
                let loss = |qe: &Tensor, de: &Tensor| -> candle_core::Result<Tensor> {
                    let batch_docs = de.narrow(0, 0, m)?;
                    let Some(c) = distill else {
                        return matryoshka.loss(qe, &batch_docs, &base);
                    };
                    let kl =
                        (crate::loss::distillation_loss(qe, de, &groups, scale, c.temperature)?
                            * c.weight)?;
                    if c.only {
                        Ok(kl)
                    } else {
                        matryoshka.loss(qe, &batch_docs, &base)? + kl
                    }
                };
                let out = gradients_across(
                    model,
                    &self.params,
                    &q,
                    &d,
                    &loss,
                    step_config,
                    self.world.as_ref(),
                )?;
                let mut out = out;
                if !extra.is_empty() {
                    out.documents = out.documents.narrow(0, 0, m)?;
                }
                let qv = host_rows(&out.queries)?;
                let dv = host_rows(&out.documents)?;
                let dim = out.queries.dim(1)?;
                let dose = crate::dose::in_batch(&qv, &dv, dim, &batch, self.config.loss.scale);
                (out, batch.false_negatives, dose)
            }
            Objective::Exact => {
                let (eb, touched, dose_rows) = self.exact_batch(&batch, indices)?;
                let table = self
                    .table
                    .as_ref()
                    .ok_or_else(|| Error::Config("no corpus table".into()))?;
                let scale = self.config.loss.scale;
                let lse = std::cell::RefCell::new(Vec::new());
                let weighted: Vec<(usize, f64)> = self.config.matryoshka.weighted().collect();
                let prefixes = &self.prefix_tables;
                let loss = |qe: &Tensor, de: &Tensor| {
                    let (qe, de) = side.apply(qe, de);
                    let (l, den) = exact_matryoshka_loss_parts(
                        &qe,
                        &de,
                        &eb,
                        table,
                        prefixes,
                        &weighted,
                        scale,
                        crate::exact::DEFAULT_CHUNK,
                    )?;
                    *lse.borrow_mut() = den;
                    Ok(l)
                };
                let model: &dyn Embed = &self.encoder;
                let out = gradients_across(
                    model,
                    &self.params,
                    &q,
                    &d,
                    &loss,
                    step_config,
                    self.world.as_ref(),
                )?;
                let rows = host_rows(&out.documents)?;
                let qv = host_rows(&out.queries)?;
                let dose = self.exact_dose(&qv, &rows, &eb, &dose_rows, &lse.borrow());
                if let Some(table) = self.table.as_mut() {
                    table.write_back(&eb.fresh, &rows)?;
                    for p in &mut self.prefix_tables {
                        p.refresh_prefix_rows(table, &eb.fresh)?;
                    }
                }
                (out, touched, dose)
            }
        };
        let dose = Dose::of(&dose);
        if !out.loss.is_finite() {
            return Err(Error::Diverged {
                step: self.state.step + 1,
                loss: out.loss,
            });
        }
        let grad_norm = match self.config.max_grad_norm {
            Some(max) => out.grads.clip(max)?,
            None => out.grads.norm()?,
        };
        self.opt.step(&out.grads)?;
        drop(out.grads);
        self.state.step += 1;
        self.state.batch += 1;
        let seconds = t0.elapsed().as_secs_f64();
        let log = StepLog {
            step: self.state.step,
            side: (self.config.alternate_every > 0).then_some(side),
            total_steps: self.state.total_steps,
            epoch: self.state.epoch,
            loss: out.loss,
            lr,
            grad_norm,
            pairs: q.len(),
            pairs_per_s: q.len() as f64 / seconds,
            seconds,
            false_negatives: touched,
            identical: batch.identical,
            dose,
        };
        self.doses.push((log.step, log.epoch, dose));
        self.losses.push((log.step, log.loss));
        self.append_metrics(
            &serde_json::to_value(&log).map_err(|e| Error::Config(e.to_string()))?,
        )?;
        hooks.on_step(&log);
        Ok(log)
    }

    /// After a step: a dev evaluation and a checkpoint when they are due (the last
    /// step's come after the loop).
    fn between_steps(&mut self, hooks: &mut dyn Hooks) -> Result<()> {
        let step = self.state.step;
        let last = step >= self.state.total_steps;
        if !self.primary() {
            return Ok(());
        }
        if self.config.eval_every > 0 && step.is_multiple_of(self.config.eval_every) && !last {
            self.evaluate(hooks)?;
        }
        if self.config.save_every > 0 && step.is_multiple_of(self.config.save_every) && !last {
            let dir = self.save_checkpoint()?;
            hooks.on_message(&format!("checkpoint {}", dir.display()));
        }
        Ok(())
    }

    fn summary(
        &self,
        start: Instant,
        pairs: usize,
        false_negatives: usize,
        last_loss: Option<f64>,
    ) -> Summary {
        Summary {
            steps: self.state.step,
            final_loss: last_loss,
            recent_loss: {
                let tail = &self.losses[self.losses.len().saturating_sub(RECENT_STEPS)..];
                (!tail.is_empty())
                    .then(|| tail.iter().map(|(_, l)| l).sum::<f64>() / tail.len() as f64)
            },
            best: self.state.best,
            seconds: start.elapsed().as_secs_f64(),
            pairs,
            false_negatives,
            resumed_from: self.resumed_from,
            dose: mean_dose(self.doses.iter().map(|d| &d.2)),
            dose_first_epoch: mean_dose(self.doses.iter().filter(|d| d.1 == 0).map(|d| &d.2)),
            dose_last_epoch: {
                // The last epoch that ran (a --max-steps run can stop inside an earlier one).
                let last = self.doses.iter().map(|d| d.1).max().unwrap_or(0);
                mean_dose(self.doses.iter().filter(|d| d.1 == last).map(|d| &d.2))
            },
        }
    }
}

/// Mean over batches of the share of a batch's examples in its largest cluster.
pub fn cluster_purity(batches: &[Vec<usize>], clusters: &[u32]) -> f64 {
    let mut total = 0.0;
    for b in batches {
        let mut count: HashMap<u32, usize> = HashMap::new();
        for &i in b {
            *count.entry(clusters[i]).or_default() += 1;
        }
        total += count.values().copied().max().unwrap_or(0) as f64 / b.len().max(1) as f64;
    }
    total / batches.len().max(1) as f64
}

/// Rows of a `(n, dim)` tensor on the host, in f32.
fn host_rows(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Per query of an exact step: its positive's row, the related rows the policy masked
/// out of the loss, and every related row with its flags.
#[derive(Debug, Default)]
struct ExactDoseRows {
    positive: Vec<usize>,
    masked: Vec<Vec<usize>>,
    flagged: Vec<Vec<(usize, u8)>>,
}

/// Step doses averaged: means of the batch means, maxima of the batch maxima.
pub fn mean_dose<'a>(doses: impl Iterator<Item = &'a Dose>) -> Dose {
    let all: Vec<&Dose> = doses.collect();
    let n = all.len().max(1) as f64;
    // `+ 0.0`: an empty f64 sum is −0.0, which would print as "-0.0000".
    let share = |f: &dyn Fn(&Dose) -> crate::dose::Share| crate::dose::Share {
        mean: all.iter().map(|d| f(d).mean).sum::<f64>() / n + 0.0,
        max: all.iter().map(|d| f(d).max).fold(0.0, f64::max),
    };
    Dose {
        known: share(&|d| d.known),
        judged: share(&|d| d.judged),
        any: share(&|d| d.any),
        positive: share(&|d| d.positive),
    }
}

/// The batches of `epoch` for `config`'s batcher (`clusters` for clustered batching).
pub fn plan(
    data: &TrainData,
    config: &TrainConfig,
    clusters: Option<&[u32]>,
    epoch: u64,
) -> Vec<Vec<usize>> {
    match (config.batching, clusters) {
        (Batching::Clustered, Some(c)) => {
            clustered_batches(data, config.batch_size, config.seed, epoch, c)
        }
        _ => epoch_batches(data, config.batch_size, config.seed, epoch),
    }
}

/// Clusters the examples for clustered batching with `encoder` (the base model): each
/// example's query (or positive) embedding, spherical k-means, seeded by the run's seed.
pub fn cluster_examples(
    encoder: &Encoder,
    data: &TrainData,
    config: &TrainConfig,
) -> Result<crate::cluster::Clustering> {
    let ids: Vec<TextId> = data
        .examples
        .iter()
        .map(|e| match config.cluster_on {
            ClusterOn::Queries => e.query,
            ClusterOn::Positives => e.positive,
        })
        .collect();
    let mut distinct: Vec<TextId> = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let texts: Vec<&str> = distinct.iter().map(|&t| data.text(t)).collect();
    let role = match config.cluster_on {
        ClusterOn::Queries => Role::Query,
        ClusterOn::Positives => Role::Document,
    };
    let emb = encoder.encode_as(role, &texts, 64, &|_| {})?.data;
    let dim = encoder.dim();
    let at: HashMap<TextId, usize> = distinct.iter().enumerate().map(|(k, &t)| (t, k)).collect();
    cluster_embedded(data, config, dim, &|t| {
        let k = at[&t];
        &emb[k * dim..(k + 1) * dim]
    })
}

/// [`cluster_examples`] from embeddings already at hand: `row(text)` is a text's
/// `dim`-wide embedding (`sieve dose` has every text embedded and need not encode the
/// queries again).
pub fn cluster_embedded<'a>(
    data: &TrainData,
    config: &TrainConfig,
    dim: usize,
    row: &dyn Fn(TextId) -> &'a [f32],
) -> Result<crate::cluster::Clustering> {
    let mut rows = Vec::with_capacity(data.examples.len() * dim);
    for e in &data.examples {
        rows.extend_from_slice(row(match config.cluster_on {
            ClusterOn::Queries => e.query,
            ClusterOn::Positives => e.positive,
        }));
    }
    let k = config
        .clusters
        .unwrap_or_else(|| data.examples.len().div_ceil(config.batch_size.max(1)));
    crate::cluster::kmeans(&rows, dim, k, 30, config.seed)
}

/// Steps the whole run takes with random batches: batches over every epoch, capped by
/// `max_steps`.
pub fn total_steps(data: &TrainData, config: &TrainConfig) -> u64 {
    total_steps_with(data, config, None)
}

/// [`total_steps`] for `config`'s batcher.
pub fn total_steps_with(data: &TrainData, config: &TrainConfig, clusters: Option<&[u32]>) -> u64 {
    let per_epoch: u64 = (0..config.epochs)
        .map(|e| plan(data, config, clusters, e).len() as u64)
        .sum();
    config.max_steps.map_or(per_epoch, |m| m.min(per_epoch))
}

/// Makes a rename durable (best effort: not every filesystem supports it).
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
