//! `sieve dose`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sieve_encoder::LoadOptions;
use sieve_trainer::batch::{Batch, Batching, MaskSources};
use sieve_trainer::data::TextId;
use sieve_trainer::dose::{self, CorpusQuery, QueryDose, Spread};
use sieve_trainer::loss::FalseNegativePolicy;
use sieve_trainer::train::{cluster_embedded, cluster_purity, plan, ClusterOn, TrainConfig};

/// Estimate, before any judge or training run, how much of each query's softmax mass
/// sits on its false negatives: the share filtering can remove.
///
/// A false negative costs a query its softmax weight p = exp(s·cos)/Σ exp(s·cos): the
/// gradient pushes the query away from it in that proportion. This command embeds the
/// training data with the base model and reports, per query, the share of the
/// denominator's mass on documents known to answer it (other qrels positives, graded
/// qrels below --min-positive-score, answers to the same question) and on the judge's
/// positives (a labeled Parquet's `relevant` candidates, or --judged-qrels), for the
/// in-batch softmax (the training run's batches: --batch-size, --batching) and for the
/// exact softmax over the whole corpus. Nothing is masked: this is what an unfiltered
/// run spends on them at step 0. `sieve train` logs the same numbers at every step
/// (metrics.jsonl `dose`).
///
/// Reading it: a mean dose near 0 means masking cannot change the gradient much, so a
/// judge will not pay on this data and denominator; a share comparable to the
/// positive's own share means every step pushes the query from its answers about as
/// hard as it pulls it to the labelled one.
///
/// Examples:
///   sieve dose --data labeled.parquet --model models/all-MiniLM-L6-v2
///   sieve dose --data bench/filtering/data/climate-fever --min-positive-score 2 \
///       --batching clustered --json dose.json
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DoseArgs {
    /// Model whose embeddings score the denominators: a directory or a hub id.
    #[arg(
        long,
        short,
        env = "SIEVE_MODEL",
        default_value = "models/all-MiniLM-L6-v2"
    )]
    pub model: String,

    /// The training data, read exactly as `sieve train` reads it.
    #[command(flatten)]
    pub input: crate::data_args::DataArgs,

    /// Queries per in-batch denominator, as in `sieve train`.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,

    /// random or clustered, as in `sieve train`.
    #[arg(long, default_value = "random")]
    pub batching: Batching,

    /// Clustered batching: number of k-means clusters (default: examples ÷ batch size).
    #[arg(long)]
    pub clusters: Option<usize>,

    /// Clustered batching: cluster the queries' embeddings or the positives'.
    #[arg(long, default_value = "queries")]
    pub cluster_on: ClusterOn,

    /// Cosine-similarity scale (1/temperature), as in `sieve train`.
    #[arg(long, default_value_t = 20.0)]
    pub scale: f64,

    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Token limit per text (default: the model's).
    #[arg(long)]
    pub max_seq_length: Option<usize>,

    /// Skip the whole-corpus (exact softmax) estimate.
    #[arg(long)]
    pub no_exact: bool,

    /// Embedding cache shared with `sieve eval` and `sieve train`.
    #[arg(long, env = "SIEVE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, serde::Serialize)]
struct Figures {
    queries: usize,
    known: Spread,
    judged: Spread,
    any: Spread,
    positive: Spread,
}

fn figures(d: &[QueryDose]) -> Figures {
    let pick = |f: fn(&QueryDose) -> f64| Spread::of(&d.iter().map(f).collect::<Vec<_>>());
    Figures {
        queries: d.len(),
        known: pick(|q| q.known),
        judged: pick(|q| q.judged),
        any: pick(|q| q.any),
        positive: pick(|q| q.positive),
    }
}

pub fn run(args: &DoseArgs) -> Result<()> {
    crate::ensure_positive("batch-size", args.batch_size)?;
    if args.scale <= 0.0 {
        bail!("--scale must be positive, got {}", args.scale);
    }
    // The dose is measured unmasked: the judge's positives stay wherever an unfiltered
    // run would put them, hard negatives included.
    let (data, _) = args.input.load(true)?;
    let model_dir = sieve_encoder::hub::resolve(&args.model)
        .with_context(|| format!("finding model {}", args.model))?;
    let load = LoadOptions {
        device: sieve_encoder::device(&args.device)?,
        max_seq_length: args.max_seq_length,
        ..Default::default()
    };
    let encoder = sieve_encoder::Encoder::load_dir(&model_dir, &load)
        .with_context(|| format!("loading model {}", model_dir.display()))?;
    eprintln!("{}", data.summary());
    let related = data
        .examples
        .iter()
        .filter(|e| !e.known.is_empty() || !e.judged.is_empty())
        .count();
    if related == 0 {
        eprintln!("note: no example has a known or judged false negative, so every dose is 0");
    }
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(sieve_eval::cache::default_cache_dir);
    let cache = sieve_encoder::cache::EmbeddingCache::new(&cache_dir);
    let texts: Vec<&str> = data.texts.iter().map(String::as_str).collect();
    let pb = indicatif::ProgressBar::new(texts.len() as u64);
    let emb = sieve_encoder::cache::encode_cached(&encoder, &texts, 64, Some(&cache), &|n| {
        pb.inc(n as u64)
    })
    .context("embedding the data")?;
    pb.finish_and_clear();
    let dim = encoder.dim();
    let row = |t: TextId| &emb[t as usize * dim..(t as usize + 1) * dim];

    // In-batch: the training run's first epoch.
    let config = TrainConfig {
        batch_size: args.batch_size,
        batching: args.batching,
        clusters: args.clusters,
        cluster_on: args.cluster_on,
        seed: args.seed,
        ..Default::default()
    };
    let clusters = match args.batching {
        Batching::Random => None,
        Batching::Clustered => Some(
            cluster_embedded(&data, &config, dim, &row)
                .context("clustering the examples")?
                .assignment,
        ),
    };
    let batches = plan(&data, &config, clusters.as_deref(), 0);
    let mut in_batch = Vec::with_capacity(data.examples.len());
    for idx in &batches {
        let batch = Batch::build(
            &data,
            idx,
            FalseNegativePolicy::None,
            MaskSources::default(),
        );
        let q: Vec<f32> = batch
            .queries
            .iter()
            .flat_map(|&t| row(t).to_vec())
            .collect();
        let d: Vec<f32> = batch
            .documents
            .iter()
            .flat_map(|&t| row(t).to_vec())
            .collect();
        in_batch.extend(dose::in_batch(&q, &d, dim, &batch, args.scale));
    }
    let in_batch = figures(&in_batch);
    let purity = clusters.as_deref().map(|c| cluster_purity(&batches, c));

    // Exact: every corpus document.
    let exact = if args.no_exact {
        None
    } else {
        let corpus_at: HashMap<TextId, usize> = data
            .corpus
            .iter()
            .enumerate()
            .map(|(k, &t)| (t, k))
            .collect();
        let corpus: Vec<f32> = data.corpus.iter().flat_map(|&t| row(t).to_vec()).collect();
        let mut items = Vec::with_capacity(data.examples.len());
        for e in &data.examples {
            let Some(&positive) = corpus_at.get(&e.positive) else {
                continue;
            };
            items.push(CorpusQuery {
                query: e.query as usize,
                own_text: corpus_at.get(&e.query).copied(),
                positive,
                flagged: dose::related_rows(e, |t| corpus_at.get(&t).copied()),
            });
        }
        let d = dose::whole_corpus(&emb, &corpus, dim, &items, args.scale)
            .context("scoring the corpus")?;
        Some((data.corpus.len(), figures(&d)))
    };

    let line = |name: &str, f: &Figures| {
        println!(
            "{name:<34} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>7.1}% {:>7.1}% {:>9.4}",
            f.any.mean,
            f.known.mean,
            f.judged.mean,
            f.any.median,
            f.any.p90,
            100.0 * f.any.at_least_1pct,
            100.0 * f.any.at_least_10pct,
            f.positive.mean
        );
    };
    println!(
        "false-negative dose at scale {}: share of each query's softmax mass on known/judged positives, unmasked, base model",
        args.scale
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "denominator", "mean", "known", "judged", "median", "p90", "≥1%", "≥10%", "positive"
    );
    let batch_name = format!(
        "in-batch {} ({}, {} batches)",
        args.batch_size,
        match args.batching {
            Batching::Random => "random",
            Batching::Clustered => "clustered",
        },
        batches.len()
    );
    line(&batch_name, &in_batch);
    if let Some((n, f)) = &exact {
        line(&format!("exact ({n} documents)"), f);
    }
    if let Some(p) = purity {
        println!(
            "clustered batches: {} clusters; on average {:.0}% of a batch from its largest cluster",
            clusters
                .as_deref()
                .map_or(0, |c| c.iter().map(|&a| a as usize + 1).max().unwrap_or(0)),
            100.0 * p
        );
    }
    if let Some(path) = &args.json {
        let body = serde_json::json!({
            "data": data.source,
            "model": args.model,
            "scale": args.scale,
            "batch_size": args.batch_size,
            "batching": args.batching,
            "in_batch": in_batch,
            "batch_purity": purity,
            "exact": exact.as_ref().map(|(n, f)| serde_json::json!({"documents": n, "dose": f})),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&body)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
