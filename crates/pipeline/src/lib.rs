//! The whole recipe in one call: mine → (calibrate) → judge → train → evaluate.
//!
//! Each stage is the library entry point its command calls, with the same settings
//! type (the pipeline file's `[mine]`, `[judge]`, `[train]` and `[eval]` tables), and
//! hands the next stage typed results. Each stage's output carries a key
//! ([`key`]): a re-run redoes a stage whose settings or inputs changed, and every
//! stage after it, resumes one that was interrupted, reuses the rest, and says which
//! it did and why.
//!
//! ```no_run
//! use sieve_pipeline::{run, PipelineConfig};
//! let cfg = PipelineConfig::load("examples/scifact-quick.toml".as_ref())?;
//! let report = run(&cfg, &sieve_datasets::Silent)?;
//! println!("trained nDCG@10 {:.5}", report.trained.main_score());
//! # Ok::<(), sieve_pipeline::Error>(())
//! ```

pub mod config;
mod error;
pub mod key;
pub mod train;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use sieve_datasets::Progress;
use sieve_eval::{EvalRequest, TaskResult};
use sieve_judge::cache::VerdictCache;
use sieve_judge::calibrate::CalibrationReport;
use sieve_miner::{Embedder, MineRequest, Source};

pub use config::{CalibrateStage, JudgeStage, PipelineConfig, Unreachable};
pub use error::{Error, Result};
use key::{Decision, StageKey};

/// What one stage did in a run.
#[derive(Debug, Clone)]
pub struct StageRun {
    pub stage: String,
    pub decision: Decision,
    /// Wall seconds (0 for a reused stage).
    pub seconds: f64,
}

/// A pipeline run's outcome: both models' scores, the judge's operating point, and
/// what each stage did.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    pub base: TaskResult,
    pub trained: TaskResult,
    /// The threshold the judge's labels used (calibrated or fixed).
    pub threshold: Option<f32>,
    /// The calibration, when the judge was calibrated.
    pub calibration: Option<CalibrationReport>,
    /// Why the judge's labels were not used, when they were not.
    pub judge_skipped: Option<String>,
    pub stages: Vec<StageRun>,
    pub seconds: f64,
    pub work_dir: PathBuf,
}

/// Runs the stages in order; see the crate docs.
pub fn run(cfg: &PipelineConfig, progress: &dyn Progress) -> Result<PipelineReport> {
    let started = Instant::now();
    cfg.validate()?;
    let mut run = Run {
        cfg,
        work: &cfg.work_dir,
        progress,
        stages: Vec::new(),
        model_id: model_identity(&cfg.model)?,
        dataset_id: key::fingerprint(&cfg.dataset)?,
    };
    let mine_key = run.mine()?;
    let mined = run.work.join("mined.parquet");
    let (train_data, upstream, judge) = match &cfg.judge {
        Some(j) => run.judge(j, &mined, &mine_key)?,
        None => (mined, ("mine", mine_key), JudgeOutcome::default()),
    };
    let (model_out, train_key) = run.train(&train_data, upstream)?;
    let base = run.evaluate("base", &cfg.model, json!({ "model": run.model_id }))?;
    let trained = run.evaluate(
        "trained",
        &model_out.display().to_string(),
        json!({ "after_train": train_key }),
    )?;
    Ok(PipelineReport {
        base,
        trained,
        threshold: judge.threshold,
        calibration: judge.calibration,
        judge_skipped: judge.skipped,
        stages: run.stages,
        seconds: started.elapsed().as_secs_f64(),
        work_dir: cfg.work_dir.clone(),
    })
}

/// What the judge stages decided.
#[derive(Default)]
struct JudgeOutcome {
    threshold: Option<f32>,
    calibration: Option<CalibrationReport>,
    skipped: Option<String>,
}

/// One pipeline run in progress: the config, and what each stage did so far.
struct Run<'a> {
    cfg: &'a PipelineConfig,
    work: &'a Path,
    progress: &'a dyn Progress,
    stages: Vec<StageRun>,
    model_id: String,
    /// The dataset's fingerprint, taken once: mining and both evaluations key on it.
    dataset_id: String,
}

impl Run<'_> {
    /// Mines the train split into `mined.parquet`; returns the stage's key.
    fn mine(&mut self) -> Result<String> {
        let (cfg, progress) = (self.cfg, self.progress);
        let mined = self.work.join("mined.parquet");
        let key = StageKey::new(json!({
            "settings": cfg.mine,
            "dataset": self.dataset_id,
            "split": cfg.train_split,
            "model": self.model_id,
        }));
        self.stage("mine", &key, mined.exists(), |_| {
            let req = MineRequest {
                source: Source::Beir {
                    dir: cfg.dataset.clone(),
                    split: cfg.train_split.clone(),
                },
                embedder: Embedder::Model(cfg.model.clone()),
                out: mined.clone(),
                shard: None,
                cache_root: sieve_encoder::cache::default_cache_dir(),
                hnsw_dir: None,
                // The key decided the file is stale; the miner's own run key agrees or
                // reuses it.
                overwrite: true,
            };
            let m = sieve_miner::mine_to_file(&req, &cfg.mine, progress).map_err(Error::Mine)?;
            progress.note(&m.stats.to_string());
            Ok(())
        })?;
        Ok(key.key)
    }

    /// Calibrates the judge when asked, then labels the mined file; returns the
    /// training data, the stage it came from (with its key) and the judge's outcome.
    fn judge(
        &mut self,
        j: &JudgeStage,
        mined: &Path,
        mine_key: &str,
    ) -> Result<(PathBuf, (&'static str, String), JudgeOutcome)> {
        let mut outcome = JudgeOutcome {
            threshold: Some(
                j.threshold
                    .unwrap_or(sieve_judge::settings::DEFAULT_THRESHOLD),
            ),
            ..Default::default()
        };
        if let Some(c) = &j.calibrate {
            let report = self.calibrate(j, c)?;
            match &report.threshold_for_precision {
                Some(op) => {
                    self.progress.note(&format!(
                        "judge threshold {:.4} (precision {:.3}, recall {:.3} on the calibration pairs)",
                        op.threshold, op.precision, op.recall
                    ));
                    outcome.threshold = Some(op.threshold);
                }
                None => {
                    let why = format!(
                        "the judge reaches precision {} at no threshold on {} (AUC {})",
                        c.settings.precision_target,
                        c.pairs.display(),
                        report.auc.map_or("n/a".into(), |a| format!("{a:.3}"))
                    );
                    if c.if_unreachable == Unreachable::Stop {
                        return Err(Error::Untrusted(format!(
                            "{why}: it cannot be trusted to mask; use a stronger judge, a lower \
                             precision_target, or if_unreachable = \"skip-judge\""
                        )));
                    }
                    self.progress.note(&format!(
                        "{why}: training without judge labels (if_unreachable = \"skip-judge\")"
                    ));
                    outcome.skipped = Some(why);
                    outcome.threshold = None;
                }
            }
            outcome.calibration = Some(report);
        }
        let Some(threshold) = outcome.threshold else {
            return Ok((mined.to_path_buf(), ("mine", mine_key.to_string()), outcome));
        };
        let labeled = self.work.join("labeled.parquet");
        let verdicts = self.work.join("verdicts.log");
        let key = StageKey::new(json!({
            "settings": j.settings,
            "threshold": threshold,
            "after_mine": mine_key,
        }));
        let progress = self.progress;
        self.stage("judge", &key, labeled.exists(), |_| {
            let mut cache = open_cache(&verdicts, progress)?;
            let stats = sieve_judge::label::label_with(
                &j.settings,
                mined,
                &labeled,
                threshold,
                None,
                None,
                &mut cache,
                progress,
            )
            .map_err(|source| Error::Judge {
                stage: "judge",
                source,
            })?;
            progress.note(&stats.to_string());
            Ok(())
        })?;
        Ok((labeled, ("judge", key.key), outcome))
    }

    /// Calibrates the judge on the human-graded pairs (`calibration.json`).
    fn calibrate(&mut self, j: &JudgeStage, c: &CalibrateStage) -> Result<CalibrationReport> {
        let json_path = self.work.join("calibration.json");
        let verdicts = self.work.join("verdicts.log");
        let key = StageKey::new(json!({
            "judge": j.settings,
            "calibrate": c.settings,
            "pairs": c.pairs,
            "pairs_file": key::fingerprint(&c.pairs)?,
        }));
        let progress = self.progress;
        self.stage("calibrate", &key, json_path.exists(), |_| {
            let mut cache = open_cache(&verdicts, progress)?;
            let report =
                sieve_judge::calibrate_file(&j.settings, &c.settings, &c.pairs, &mut cache, &|n| {
                    progress.advance(n)
                })
                .map_err(|source| Error::Judge {
                    stage: "calibrate",
                    source,
                })?;
            progress.note(&report.to_string());
            write_json(&json_path, &report)
        })?;
        read_json(&json_path)
    }

    /// Trains on `data` into `model/`, resuming from its checkpoints; a model trained
    /// with other settings or inputs is moved to `model.previous/` first.
    fn train(&mut self, data: &Path, upstream: (&str, String)) -> Result<(PathBuf, String)> {
        let (cfg, work, progress) = (self.cfg, self.work, self.progress);
        let model_out = work.join("model");
        let key = StageKey::new(json!({
            "settings": cfg.train,
            "model": self.model_id,
            "dev_split": cfg.dev_split,
            format!("after_{}", upstream.0): upstream.1,
        }));
        let finished = model_out.join("model.safetensors").exists();
        self.stage("train", &key, finished, |decision| {
            if matches!(decision, Decision::Changed(_)) && model_out.exists() {
                // A stale model is set aside, not deleted: it may be the only copy of
                // hours of training.
                let aside = work.join("model.previous");
                if aside.exists() {
                    std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
                }
                std::fs::rename(&model_out, &aside).map_err(|e| Error::io(&model_out, e))?;
                progress.note(&format!("the previous model is in {}", aside.display()));
            }
            let job = train::TrainJob {
                model: cfg.model.clone(),
                data: data.to_path_buf(),
                split: cfg.train_split.clone(),
                corpus: None,
                judged_qrels: None,
                output: model_out.clone(),
                resume: true,
                dev: cfg
                    .dev_split
                    .as_ref()
                    .map(|s| (cfg.dataset.clone(), s.clone())),
                cache_dir: sieve_encoder::cache::default_cache_dir(),
                world: None,
                command: Some("sieve pipeline (the [train] table of its config)".into()),
            };
            let summary = train::train_model(&job, &cfg.train, progress)?;
            progress.note(&train::describe(&summary, &model_out));
            Ok(())
        })?;
        Ok((model_out, key.key))
    }

    /// Scores `model` on the test split as `name` (`results/<name>/`); `upstream` is
    /// what identifies the model in the stage's key.
    fn evaluate(
        &mut self,
        name: &str,
        model: &str,
        upstream: serde_json::Value,
    ) -> Result<TaskResult> {
        let (cfg, progress) = (self.cfg, self.progress);
        let results = self.work.join("results");
        let result_path = self.work.join(format!("eval-{name}.result.json"));
        let mut inputs = json!({
            "settings": cfg.eval,
            "dataset": self.dataset_id,
            "split": cfg.test_split,
        });
        if let (Some(o), Some(u)) = (inputs.as_object_mut(), upstream.as_object()) {
            o.extend(u.clone());
        }
        let key = StageKey::new(inputs);
        self.stage(&format!("eval-{name}"), &key, result_path.exists(), |_| {
            let req = EvalRequest {
                model,
                model_name: Some(name.into()),
                dataset: &cfg.dataset,
                split: &cfg.test_split,
                task_name: None,
                cache_dir: None,
                bm25_index: None,
                progress: Default::default(),
            };
            let result = sieve_eval::evaluate(&cfg.eval, &req, &|w| progress.note(w))
                .and_then(|r| r.write(&results).map(|_| r))
                .map_err(|source| Error::Eval {
                    stage: format!("evaluate the {name} model"),
                    source,
                })?;
            write_json(&result_path, &result)
        })?;
        read_json(&result_path)
    }

    /// Decides, runs (or reuses) and records one stage.
    fn stage(
        &mut self,
        name: &str,
        key: &StageKey,
        output_present: bool,
        body: impl FnOnce(&Decision) -> Result<()>,
    ) -> Result<()> {
        let path = key::key_path(self.work, name);
        let decision = key::decide(&path, key, output_present)?;
        // A stage after a redone one is redone too: its key holds the earlier one's.
        self.progress
            .note(&format!("== {name}: {}", decision.describe()));
        let t0 = Instant::now();
        if !decision.reuses() {
            key::store(&path, key, false)?;
            body(&decision)?;
            key::store(&path, key, true)?;
        }
        self.stages.push(StageRun {
            stage: name.to_string(),
            seconds: if decision.reuses() {
                0.0
            } else {
                t0.elapsed().as_secs_f64()
            },
            decision,
        });
        Ok(())
    }
}

/// A local model's identity is its files; a hub id is its name.
fn model_identity(model: &str) -> Result<String> {
    let p = Path::new(model);
    if p.exists() {
        key::fingerprint(p)
    } else {
        Ok(model.to_string())
    }
}

fn open_cache(path: &Path, progress: &dyn Progress) -> Result<VerdictCache> {
    VerdictCache::open_noting(path, false, progress).map_err(|source| Error::Judge {
        stage: "judge",
        source,
    })
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, body).map_err(|e| Error::io(path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let body = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&body).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
