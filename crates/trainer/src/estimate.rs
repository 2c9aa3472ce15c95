//! The false-negative dose a run would meet, estimated before it runs (`sieve dose`):
//! the training data embedded once with the base model, the first epoch's batches
//! planned exactly as [`crate::train::Trainer`] plans them, and each query's share of
//! softmax mass on its known and judged positives computed, unmasked, for the in-batch
//! denominator and for the whole corpus.

use std::collections::HashMap;

use serde::Serialize;
use sieve_encoder::cache::{encode_cached, EmbeddingCache};
use sieve_encoder::{Encoder, Role};

use crate::batch::{Batch, Batching, MaskSources};
use crate::data::{TextId, TrainData};
use crate::dose::{self, CorpusQuery, QueryDose, Spread};
use crate::loss::FalseNegativePolicy;
use crate::train::{cluster_embedded, cluster_purity, plan, TrainConfig};
use crate::Result;

/// The spread of one denominator's doses over the queries.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub queries: usize,
    pub known: Spread,
    pub judged: Spread,
    pub any: Spread,
    pub positive: Spread,
}

impl Figures {
    pub fn of(d: &[QueryDose]) -> Self {
        let pick = |f: fn(&QueryDose) -> f64| Spread::of(&d.iter().map(f).collect::<Vec<_>>());
        Self {
            queries: d.len(),
            known: pick(|q| q.known),
            judged: pick(|q| q.judged),
            any: pick(|q| q.any),
            positive: pick(|q| q.positive),
        }
    }
}

/// What `sieve dose` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DoseEstimate {
    pub data: String,
    pub scale: f64,
    pub batch_size: usize,
    pub batching: Batching,
    pub batches: usize,
    pub in_batch: Figures,
    /// Clustered batching: the number of clusters, and the mean share of a batch drawn
    /// from its largest cluster.
    pub clusters: Option<usize>,
    pub batch_purity: Option<f64>,
    /// The whole-corpus denominator: its size and figures (`None` when skipped).
    pub exact: Option<(usize, Figures)>,
    /// Examples with at least one known or judged false negative.
    pub related: usize,
}

/// Estimates the dose of `data` (read unmasked: judged positives where an unfiltered
/// run puts them) under `config`'s batches and scale.
pub fn estimate(
    data: &TrainData,
    encoder: &Encoder,
    config: &TrainConfig,
    cache: Option<&EmbeddingCache>,
    exact: bool,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<DoseEstimate> {
    let related = data
        .examples
        .iter()
        .filter(|e| !e.known.is_empty() || !e.judged.is_empty())
        .count();
    let texts: Vec<&str> = data.texts.iter().map(String::as_str).collect();
    // Every text as a document; as a query too when the prompts differ.
    let prompts = encoder.prompts();
    let embed_as = |role: Role| -> Result<sieve_datasets::floats::Floats> {
        let prompted = prompts.apply(role, &texts);
        let refs: Vec<&str> = prompted.iter().map(String::as_str).collect();
        Ok(encode_cached(encoder, &refs, 64, cache, progress)?)
    };
    let emb = embed_as(Role::Document)?;
    let query_emb = if prompts.prompt(Role::Query) != prompts.prompt(Role::Document) {
        Some(embed_as(Role::Query)?)
    } else {
        None
    };
    let dim = encoder.dim();
    let row = |t: TextId| &emb[t as usize * dim..(t as usize + 1) * dim];
    let q_all = query_emb.as_ref().unwrap_or(&emb);
    let qrow = |t: TextId| &q_all[t as usize * dim..(t as usize + 1) * dim];
    let scale = config.loss.scale;

    // In-batch: the training run's first epoch.
    let clusters = match config.batching {
        Batching::Random => None,
        Batching::Clustered => Some(
            match config.cluster_on {
                crate::train::ClusterOn::Queries => cluster_embedded(data, config, dim, &qrow)?,
                crate::train::ClusterOn::Positives => cluster_embedded(data, config, dim, &row)?,
            }
            .assignment,
        ),
    };
    let batches = plan(data, config, clusters.as_deref(), 0);
    let mut in_batch = Vec::with_capacity(data.examples.len());
    for idx in &batches {
        let batch = Batch::build(data, idx, FalseNegativePolicy::None, MaskSources::default());
        let gather =
            |ids: &[TextId]| -> Vec<f32> { ids.iter().flat_map(|&t| row(t).to_vec()).collect() };
        let q: Vec<f32> = batch
            .queries
            .iter()
            .flat_map(|&t| qrow(t).to_vec())
            .collect();
        let d = gather(&batch.documents);
        in_batch.extend(dose::in_batch(&q, &d, dim, &batch, scale));
    }
    let purity = clusters.as_deref().map(|c| cluster_purity(&batches, c));
    let n_clusters = clusters
        .as_deref()
        .map(|c| c.iter().map(|&a| a as usize + 1).max().unwrap_or(0));

    // Exact: every corpus document.
    let exact = if exact {
        let corpus_at: HashMap<TextId, usize> = data
            .corpus
            .iter()
            .enumerate()
            .map(|(k, &t)| (t, k))
            .collect();
        let corpus: Vec<f32> = data.corpus.iter().flat_map(|&t| row(t).to_vec()).collect();
        let items: Vec<CorpusQuery> = data
            .examples
            .iter()
            .filter_map(|e| {
                Some(CorpusQuery {
                    query: e.query as usize,
                    own_text: corpus_at.get(&e.query).copied(),
                    positive: *corpus_at.get(&e.positive)?,
                    flagged: dose::related_rows(e, |t| corpus_at.get(&t).copied()),
                })
            })
            .collect();
        let d = dose::whole_corpus(q_all, &corpus, dim, &items, scale)?;
        Some((data.corpus.len(), Figures::of(&d)))
    } else {
        None
    };
    Ok(DoseEstimate {
        data: data.source.clone(),
        scale,
        batch_size: config.batch_size,
        batching: config.batching,
        batches: batches.len(),
        in_batch: Figures::of(&in_batch),
        clusters: n_clusters,
        batch_purity: purity,
        exact,
        related,
    })
}

impl std::fmt::Display for DoseEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, x: &Figures| {
            writeln!(
                f,
                "{name:<34} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>7.1}% {:>7.1}% {:>9.4}",
                x.any.mean,
                x.known.mean,
                x.judged.mean,
                x.any.median,
                x.any.p90,
                100.0 * x.any.at_least_1pct,
                100.0 * x.any.at_least_10pct,
                x.positive.mean
            )
        };
        writeln!(
            f,
            "false-negative dose at scale {}: share of each query's softmax mass on known/judged positives, unmasked, base model",
            self.scale
        )?;
        writeln!(
            f,
            "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "denominator", "mean", "known", "judged", "median", "p90", "≥1%", "≥10%", "positive"
        )?;
        let batching = match self.batching {
            Batching::Random => "random",
            Batching::Clustered => "clustered",
        };
        let name = format!(
            "in-batch {} ({batching}, {} batches)",
            self.batch_size, self.batches
        );
        line(f, &name, &self.in_batch)?;
        if let Some((n, x)) = &self.exact {
            line(f, &format!("exact ({n} documents)"), x)?;
        }
        if let (Some(p), Some(c)) = (self.batch_purity, self.clusters) {
            writeln!(
                f,
                "clustered batches: {c} clusters; on average {:.0}% of a batch from its largest cluster",
                100.0 * p
            )?;
        }
        Ok(())
    }
}
