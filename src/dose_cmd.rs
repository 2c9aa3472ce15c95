//! `sieve dose`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sieve_encoder::LoadOptions;
use sieve_trainer::loss::FalseNegativePolicy;
use sieve_trainer::settings::TrainSettings;

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
    /// The model to start from (its embeddings score the denominators).
    #[command(flatten)]
    pub model: crate::model_args::ModelName,

    /// The training data, read exactly as `sieve train` reads it.
    #[command(flatten)]
    pub input: crate::data_args::DataArgs,

    /// The training run's settings: the batches (--batch-size, --batching, --seed, …),
    /// the scale and how the data is read are those of `sieve train` with the same
    /// flags (settings that only matter to optimisation are accepted and unused).
    #[command(flatten)]
    pub settings: TrainSettings,

    /// Skip the whole-corpus (exact softmax) estimate.
    #[arg(long)]
    pub no_exact: bool,

    /// Embedding cache shared with `sieve eval` and `sieve train`.
    #[command(flatten)]
    pub cache: crate::CacheDir,

    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: &DoseArgs) -> Result<()> {
    let config = args.settings.config()?;
    // The dose is measured unmasked: the judge's positives stay wherever an unfiltered
    // run would put them, hard negatives included.
    let unmasked = TrainSettings {
        false_negatives: FalseNegativePolicy::None,
        ..args.settings.clone()
    };
    let (data, _) = args.input.load(&unmasked)?;
    let model_dir = sieve_encoder::hub::resolve(&args.model.model)
        .with_context(|| format!("finding model {}", args.model.model))?;
    let load = LoadOptions {
        dtype: sieve_encoder::DType::F32,
        ..args.settings.load_options()?
    };
    let encoder = sieve_encoder::Encoder::load_dir(&model_dir, &load)
        .with_context(|| format!("loading model {}", model_dir.display()))?;
    eprintln!("{}", data.summary());
    let cache = sieve_encoder::cache::EmbeddingCache::new(&args.cache.resolve());
    let pb = crate::progress::bar(data.texts.len(), "texts", false);
    let estimate = sieve_trainer::estimate::estimate(
        &data,
        &encoder,
        &config,
        Some(&cache),
        !args.no_exact,
        &|n| pb.inc(n as u64),
    )
    .context("estimating the dose")?;
    pb.finish_and_clear();
    if estimate.related == 0 {
        eprintln!("note: no example has a known or judged false negative, so every dose is 0");
    }
    print!("{estimate}");
    if let Some(path) = &args.json {
        let mut body = serde_json::to_value(&estimate)?;
        body["model"] = args.model.model.clone().into();
        body["exact"] = estimate
            .exact
            .as_ref()
            .map(|(n, f)| serde_json::json!({"documents": n, "dose": f}))
            .into();
        std::fs::write(path, serde_json::to_vec_pretty(&body)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
