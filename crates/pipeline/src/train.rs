//! One training run from paths and settings: the data read, dev data loaded, the run
//! resumed or refused over an existing one, progress and dev evaluation wired, the
//! summary described. `sieve train` and the pipeline both call [`train_model`].

use std::path::{Path, PathBuf};

use sieve_datasets::Progress;
use sieve_encoder::Encoder;
use sieve_eval::EvalOptions;
use sieve_trainer::data::TrainData;
use sieve_trainer::settings::TrainSettings;
use sieve_trainer::train::{Hooks, StepLog, Summary, Trainer};

use crate::{Error, Result};

/// Where a run reads and writes.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// Model to start from: a directory or a hub id.
    pub model: String,
    /// Pair file, BEIR directory or labeled Parquet.
    pub data: PathBuf,
    /// BEIR data: the qrels split trained on.
    pub split: String,
    /// Labeled Parquet: the corpus, when not the one named in the file.
    pub corpus: Option<PathBuf>,
    /// BEIR data: a qrels file of judged false negatives.
    pub judged_qrels: Option<PathBuf>,
    pub output: PathBuf,
    /// Continue from the latest checkpoint (otherwise existing checkpoints are an
    /// error: a run never silently replaces another).
    pub resume: bool,
    /// BEIR directory and split to evaluate on while training (keeps the best model).
    pub dev: Option<(PathBuf, String)>,
    /// The embedding cache (the exact softmax's first corpus table).
    pub cache_dir: PathBuf,
    /// This process's rank in a data-parallel run (`sieve train --distributed`);
    /// `None` trains alone.
    pub world: Option<std::sync::Arc<dyn sieve_trainer::distributed::Collective>>,
    /// The command that started the run, for the model card.
    pub command: Option<String>,
}

/// Step progress and dev evaluation.
struct StageHooks<'a> {
    progress: &'a dyn Progress,
    dev: Option<(sieve_datasets::BeirDataset, String)>,
    started: bool,
}

impl Hooks for StageHooks<'_> {
    fn on_step(&mut self, log: &StepLog) {
        if !self.started {
            self.progress.start("steps", log.total_steps as usize);
            self.progress.advance(log.step.saturating_sub(1) as usize);
            self.started = true;
        }
        self.progress.advance(1);
        self.progress.message(&format!(
            "loss {:.4}  lr {:.2e}  {:.1} pairs/s  FN dose {:.4}",
            log.loss, log.lr, log.pairs_per_s, log.dose.any.mean
        ));
    }

    fn on_message(&mut self, message: &str) {
        self.progress.note(message);
    }

    fn evaluate(&mut self, encoder: &Encoder, step: u64) -> sieve_trainer::Result<Option<f64>> {
        let Some((ds, split)) = &self.dev else {
            return Ok(None);
        };
        let opts = EvalOptions {
            cache_dir: None,
            ..Default::default()
        };
        self.progress
            .message(&format!("evaluating on {split} at step {step}"));
        let result = sieve_eval::evaluate_dense(encoder, ds, "training", "dev", split, &opts)
            .map_err(|e| sieve_trainer::Error::Data(format!("evaluation: {e}")))?;
        Ok(Some(result.main_score()))
    }
}

/// Reads the data `job` names with `settings` (what `sieve dose` reads too).
pub fn load_data(
    job: &TrainJob,
    settings: &TrainSettings,
) -> Result<(TrainData, sieve_trainer::data::LoadStats)> {
    let opts = settings.data_options(&job.split, job.corpus.clone(), job.judged_qrels.clone());
    TrainData::load(&job.data, &opts).map_err(Error::Train)
}

/// Trains `job` with `settings`.
pub fn train_model(
    job: &TrainJob,
    settings: &TrainSettings,
    progress: &dyn Progress,
) -> Result<Summary> {
    let config = settings.config().map_err(Error::Train)?;
    let model_dir = sieve_encoder::hub::resolve(&job.model)?;
    let (data, stats) = load_data(job, settings)?;
    progress.note(&data.summary());
    if stats.judged_relevant + stats.judged_irrelevant + stats.unjudged > 0 {
        progress.note(&format!(
            "judge labels: {} relevant (false negatives), {} irrelevant (hard negatives), {} unjudged or failed (unused)",
            stats.judged_relevant, stats.judged_irrelevant, stats.unjudged
        ));
    }
    let dev = match &job.dev {
        Some((dir, split)) => Some((
            sieve_datasets::load_beir(dir, split, Default::default())?,
            split.clone(),
        )),
        None => None,
    };
    let load = settings.load_options().map_err(Error::Train)?;
    let mut trainer =
        Trainer::new(&model_dir, &load, data, config, &job.output).map_err(Error::Train)?;
    trainer.set_cache_dir(Some(job.cache_dir.clone()));
    if let Some(world) = &job.world {
        trainer.set_world(world.clone());
    }
    trainer.set_card_info(sieve_trainer::train::CardInfo {
        base_model: Some(job.model.clone()),
        command: job.command.clone(),
        dev_data: job.dev.as_ref().map(|(dir, split)| {
            let name = dir.file_name().map_or_else(
                || dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            format!("{name} {split}")
        }),
    });
    if job.resume {
        if trainer.resume().map_err(Error::Train)? {
            let s = trainer.state();
            progress.note(&format!(
                "resuming from step {} of {} (epoch {}, batch {})",
                s.step, s.total_steps, s.epoch, s.batch
            ));
        } else {
            progress.note(&format!(
                "no checkpoint in {}: starting from the beginning",
                job.output.display()
            ));
        }
    } else if !Trainer::checkpoints(&job.output)
        .map_err(Error::Train)?
        .is_empty()
    {
        return Err(Error::Train(sieve_trainer::Error::Config(format!(
            "{} already holds checkpoints: pass --resume to continue that run, or choose another --output",
            job.output.display()
        ))));
    }
    let mut hooks = StageHooks {
        progress,
        dev,
        started: false,
    };
    let summary = trainer.run(&mut hooks).map_err(Error::Train)?;
    progress.finish();
    Ok(summary)
}

/// The run's summary as `sieve train` prints it.
pub fn describe(summary: &Summary, output: &Path) -> String {
    let mut out = format!(
        "trained {} steps in {:.1}s ({} pairs{}); loss over the last {} steps {}\n",
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
    out += &format!(
        "false negatives masked or counted as positives: {} (query, document) pairs\n",
        summary.false_negatives
    );
    let d = |x: &sieve_trainer::dose::Dose| {
        format!(
            "{:.4} (known {:.4}, judged {:.4}; max {:.4})",
            x.any.mean, x.known.mean, x.judged.mean, x.any.max
        )
    };
    out += &format!(
        "false-negative dose (mean share of each query's softmax mass on known/judged positives, before masking): {}; first epoch {}, last epoch {}; the positive's own share {:.4}\n",
        d(&summary.dose),
        d(&summary.dose_first_epoch),
        d(&summary.dose_last_epoch),
        summary.dose.positive.mean
    );
    if let Some((metric, step)) = summary.best {
        out += &format!(
            "best dev nDCG@10 {metric:.5} at step {step}: {}\n",
            output.join("best").display()
        );
    }
    out += &format!("model: {}", output.display());
    out
}
