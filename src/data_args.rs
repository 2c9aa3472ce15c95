//! The training-data options `sieve train` and `sieve dose` share: one definition, so
//! that a dose estimate reads exactly the examples a run would train on.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sieve_trainer::data::{DataOptions, LoadStats, TrainData};

#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Training data: pair file, BEIR directory, or labeled Parquet.
    #[arg(long, short)]
    pub data: PathBuf,

    /// BEIR data: the qrels split to train on.
    #[arg(long, default_value = "train")]
    pub split: String,

    /// BEIR data: qrels pairs scored at least this are training positives; pairs
    /// scored above 0 but below it are known to answer their query without being
    /// trained on (graded qrels; a benchmark's hidden positives): masked like other
    /// known positives and measured in the false-negative dose.
    #[arg(long, default_value_t = 1)]
    pub min_positive_score: i32,

    /// BEIR data: a qrels TSV of the (query, document) pairs a judge labeled relevant
    /// (a judge run elsewhere, or a simulated one): the judge's false negatives.
    #[arg(long)]
    pub judged_qrels: Option<PathBuf>,

    /// Labeled Parquet: the corpus, when not the one named in the file.
    #[arg(long)]
    pub corpus: Option<PathBuf>,

    /// Labeled Parquet: P(relevant) at or above which a candidate is a false negative
    /// (default: the label the judge wrote).
    #[arg(long)]
    pub judge_threshold: Option<f32>,

    /// Hard negatives per example (the best-ranked), from the pair file's negative
    /// columns or the judge's irrelevant candidates.
    #[arg(long, default_value_t = 1)]
    pub num_negatives: usize,
}

impl DataArgs {
    /// `judged_as_negatives`: keep the judge's positives among the hard negatives, as a
    /// run that does not act on the judge would (see [`DataOptions`]).
    pub fn options(&self, judged_as_negatives: bool) -> DataOptions {
        DataOptions {
            num_negatives: self.num_negatives,
            judge_threshold: self.judge_threshold,
            corpus: self.corpus.clone(),
            split: self.split.clone(),
            min_positive_score: self.min_positive_score,
            judged_qrels: self.judged_qrels.clone(),
            judged_as_negatives,
        }
    }

    pub fn load(&self, judged_as_negatives: bool) -> Result<(TrainData, LoadStats)> {
        TrainData::load(&self.data, &self.options(judged_as_negatives))
            .with_context(|| format!("reading training data {}", self.data.display()))
    }
}
