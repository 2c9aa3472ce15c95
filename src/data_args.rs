//! Where `sieve train` and `sieve dose` read their training data: one definition, so
//! that a dose estimate reads exactly the examples a run would train on (how they are
//! read is [`TrainSettings`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use sieve_trainer::data::{LoadStats, TrainData};
use sieve_trainer::settings::TrainSettings;

#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Training data: pair file, BEIR directory, or labeled Parquet.
    #[arg(long, short)]
    pub data: PathBuf,

    /// BEIR data: the qrels split to train on.
    #[arg(long, default_value = "train")]
    pub split: String,

    /// BEIR data: a qrels TSV of the (query, document) pairs a judge labeled relevant
    /// (a judge run elsewhere, or a simulated one): the judge's false negatives.
    #[arg(long)]
    pub judged_qrels: Option<PathBuf>,

    /// Labeled Parquet: the corpus, when not the one named in the file.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
}

impl DataArgs {
    pub fn load(&self, settings: &TrainSettings) -> Result<(TrainData, LoadStats)> {
        let opts =
            settings.data_options(&self.split, self.corpus.clone(), self.judged_qrels.clone());
        TrainData::load(&self.data, &opts)
            .with_context(|| format!("reading training data {}", self.data.display()))
    }
}
