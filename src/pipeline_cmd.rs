//! `sieve pipeline CONFIG.toml`: mine → (calibrate) → judge → train → eval, each stage
//! resuming from its files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Deserialize;
use sieve_trainer::train::TrainConfig;

use crate::{Cli, Command};

/// Mine, judge, train and evaluate in one command, from a TOML file.
///
/// Every stage writes into `work_dir` and is skipped or resumed when its output is
/// there: the mined file is reused, the judge's verdict cache answers every pair
/// already judged, training continues from its last checkpoint, and evaluations are
/// cached. Re-running after a crash (or a change to a later stage) redoes only what
/// is missing. Prints the base model's and the trained model's scores side by side.
///
/// Example configs: examples/*.toml. Example:
///   sieve pipeline examples/scifact-quick.toml
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct PipelineArgs {
    /// The pipeline's TOML file.
    pub config: PathBuf,

    /// Hide progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The TOML file. Paths are relative to the file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Model to start from (directory or hub id).
    pub model: String,
    /// Where every stage writes.
    pub work_dir: PathBuf,
    /// BEIR directory: its train split is mined and trained on, its test split scored.
    pub dataset: PathBuf,
    #[serde(default = "train_split")]
    pub train_split: String,
    #[serde(default = "test_split")]
    pub test_split: String,
    /// A dev split to evaluate on during training (keeps the best model).
    #[serde(default)]
    pub dev_split: Option<String>,
    #[serde(default)]
    pub mine: MineStage,
    /// Absent: no judge; training uses only the qrels and identical-text masks.
    #[serde(default)]
    pub judge: Option<JudgeStage>,
    #[serde(default)]
    pub train: TrainConfig,
}

fn train_split() -> String {
    "train".into()
}
fn test_split() -> String {
    "test".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MineStage {
    pub bm25_k: usize,
    pub dense_k: usize,
    /// Further `sieve mine` arguments, verbatim.
    pub extra_args: Vec<String>,
}

impl Default for MineStage {
    fn default() -> Self {
        Self {
            bm25_k: 10,
            dense_k: 10,
            extra_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeStage {
    /// OpenAI-compatible base URLs (…/v1).
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub judge_model: Option<String>,
    /// A fixed threshold; ignored when `calibrate` is given.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Human-graded pairs to calibrate the judge on first; the pipeline then uses the
    /// threshold reaching `precision_target`.
    #[serde(default)]
    pub calibrate: Option<CalibrateStage>,
    #[serde(default = "max_doc_tokens")]
    pub max_doc_tokens: usize,
    #[serde(default = "concurrency")]
    pub concurrency: usize,
    /// Stop after this many requests (a reduced run); the rest stays unjudged.
    #[serde(default)]
    pub max_requests: Option<u64>,
    /// Further `sieve judge` arguments, verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

fn max_doc_tokens() -> usize {
    256
}
fn concurrency() -> usize {
    4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrateStage {
    pub pairs: PathBuf,
    #[serde(default = "precision_target")]
    pub precision_target: f64,
    /// Judge a seeded sample of this many pairs (all when absent).
    #[serde(default)]
    pub sample: Option<usize>,
    /// What to do when no threshold reaches `precision_target`: "stop" (the default),
    /// or "skip-judge": train without judge labels (qrels and identical-text masks
    /// only) and say so in the summary. A judge that misses the target must not mask
    /// either way; "skip-judge" keeps a reduced or scheduled run going to its scores.
    #[serde(default)]
    pub if_unreachable: Unreachable,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unreachable {
    #[default]
    Stop,
    SkipJudge,
}

fn precision_target() -> f64 {
    0.9
}

/// Runs one `sieve` subcommand from an argument list (so that every stage is exactly
/// what a user would type, with the same validation).
fn run_stage(what: &str, argv: &[String], clock: &mut StageClock) -> Result<()> {
    eprintln!("\n== {what}: sieve {}", argv.join(" "));
    let mut full = vec!["sieve".to_string()];
    full.extend_from_slice(argv);
    let cli = Cli::try_parse_from(&full).with_context(|| format!("{what}: bad arguments"))?;
    let t0 = Instant::now();
    let out = crate::run(cli).with_context(|| format!("pipeline stage `{what}`"));
    clock.record(what, t0);
    out
}

/// Wall time per stage, printed with the scores: where a run's minutes went is the
/// first thing to know when it must fit a budget.
#[derive(Default)]
struct StageClock(Vec<(String, Duration)>);

impl StageClock {
    fn record(&mut self, what: &str, since: Instant) {
        self.0.push((what.to_string(), since.elapsed()));
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn run(args: &PipelineArgs) -> Result<()> {
    let body = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut cfg: PipelineConfig = toml::from_str(&body)
        .with_context(|| format!("{}: invalid pipeline config", args.config.display()))?;
    let base = args.config.parent().unwrap_or(Path::new("."));
    let rel = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    cfg.work_dir = rel(&cfg.work_dir);
    cfg.dataset = rel(&cfg.dataset);
    if Path::new(&cfg.model).is_relative() && base.join(&cfg.model).is_dir() {
        cfg.model = s(&base.join(&cfg.model));
    }
    let work = &cfg.work_dir;
    let started = Instant::now();
    let mut clock = StageClock::default();
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let quiet: Vec<String> = if args.quiet {
        vec!["--quiet".into()]
    } else {
        vec![]
    };

    // 1. Mine.
    let mined = work.join("mined.parquet");
    if mined.exists() {
        eprintln!("\n== mine: {} exists, reusing it", mined.display());
    } else {
        let mut a: Vec<String> = vec![
            "mine".into(),
            "--dataset".into(),
            s(&cfg.dataset),
            "--split".into(),
            cfg.train_split.clone(),
            "--out".into(),
            s(&mined),
            "--model".into(),
            cfg.model.clone(),
            "--bm25-k".into(),
            cfg.mine.bm25_k.to_string(),
            "--dense-k".into(),
            cfg.mine.dense_k.to_string(),
        ];
        a.extend(cfg.mine.extra_args.iter().cloned());
        a.extend(quiet.iter().cloned());
        run_stage("mine", &a, &mut clock)?;
    }

    // 2. Judge (after calibrating it, when asked).
    let mut train_data = mined.clone();
    let mut threshold = None;
    // (precision, recall) of the calibrated threshold on the human-graded pairs.
    let mut operating_point = None;
    // Why the judge's labels were not used, when they were not.
    let mut judge_skipped: Option<String> = None;
    'judge: {
        let Some(j) = &cfg.judge else {
            break 'judge;
        };
        let server: Vec<String> = {
            let mut v = Vec::new();
            for e in &j.endpoints {
                v.push("--endpoint".into());
                v.push(e.clone());
            }
            if let Some(m) = &j.judge_model {
                v.push("--judge-model".into());
                v.push(m.clone());
            }
            v.extend([
                "--max-doc-tokens".into(),
                j.max_doc_tokens.to_string(),
                "--concurrency".into(),
                j.concurrency.to_string(),
                "--cache".into(),
                s(&work.join("verdicts.log")),
            ]);
            v
        };
        threshold = j.threshold;
        if let Some(c) = &j.calibrate {
            let json = work.join("calibration.json");
            let mut a: Vec<String> = vec![
                "judge".into(),
                "calibrate".into(),
                "--pairs".into(),
                s(&rel(&c.pairs)),
                "--precision-target".into(),
                c.precision_target.to_string(),
                "--json".into(),
                s(&json),
            ];
            if let Some(n) = c.sample {
                a.extend(["--sample".into(), n.to_string()]);
            }
            a.extend(server.iter().cloned());
            a.extend(quiet.iter().cloned());
            run_stage("calibrate the judge", &a, &mut clock)?;
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)
                .with_context(|| format!("reading {}", json.display()))?;
            let op = &v["threshold_for_precision"];
            let Some(t) = op["threshold"].as_f64() else {
                let why = format!(
                    "the judge reaches precision {} at no threshold on {} (AUC {:.3})",
                    c.precision_target,
                    c.pairs.display(),
                    v["auc"].as_f64().unwrap_or(f64::NAN)
                );
                if c.if_unreachable == Unreachable::Stop {
                    bail!(
                        "{why}: it cannot be trusted to mask; use a stronger judge, a lower \
                         precision_target, or if_unreachable = \"skip-judge\""
                    );
                }
                eprintln!("{why}: training without judge labels (if_unreachable = \"skip-judge\")");
                judge_skipped = Some(why);
                break 'judge;
            };
            let pr = (
                op["precision"].as_f64().unwrap_or(f64::NAN),
                op["recall"].as_f64().unwrap_or(f64::NAN),
            );
            eprintln!(
                "judge threshold {t:.4} (precision {:.3}, recall {:.3} on the calibration pairs)",
                pr.0, pr.1
            );
            operating_point = Some(pr);
            threshold = Some(t as f32);
        }
        let labeled = work.join("labeled.parquet");
        let mut a: Vec<String> = vec![
            "judge".into(),
            "--mined".into(),
            s(&mined),
            "--out".into(),
            s(&labeled),
        ];
        if let Some(t) = threshold {
            a.extend(["--threshold".into(), t.to_string()]);
        }
        if let Some(n) = j.max_requests {
            a.extend(["--max-requests".into(), n.to_string()]);
        }
        a.extend(server);
        a.extend(j.extra_args.iter().cloned());
        a.extend(quiet.iter().cloned());
        run_stage("judge", &a, &mut clock)?;
        train_data = labeled;
    }

    // 3. Train (resuming from its checkpoints).
    let model_out = work.join("model");
    let finished = model_out.join("model.safetensors").exists();
    if finished {
        eprintln!("\n== train: {} exists, reusing it", model_out.display());
    } else {
        let mut a: Vec<String> = vec![
            "train".into(),
            "--model".into(),
            cfg.model.clone(),
            "--data".into(),
            s(&train_data),
            "--output".into(),
            s(&model_out),
            "--resume".into(),
        ];
        if let Some(dev) = &cfg.dev_split {
            a.extend([
                "--eval-dataset".into(),
                s(&cfg.dataset),
                "--eval-split".into(),
                dev.clone(),
            ]);
        }
        a.extend(quiet.iter().cloned());
        eprintln!("\n== train: sieve {} (settings from [train])", a.join(" "));
        let mut full = vec!["sieve".to_string()];
        full.extend(a);
        let Command::Train(targs) = Cli::try_parse_from(&full)?.command else {
            bail!("internal: train arguments did not parse as `train`");
        };
        let t0 = Instant::now();
        crate::train_cmd::train(&targs, cfg.train.clone()).context("pipeline stage `train`")?;
        clock.record("train", t0);
    }

    // 4. Evaluate base and trained model on the test split.
    let results = work.join("results");
    for (name, model) in [("base", cfg.model.clone()), ("trained", s(&model_out))] {
        let mut a: Vec<String> = vec![
            "eval".into(),
            "--model".into(),
            model,
            "--model-name".into(),
            name.into(),
            "--dataset".into(),
            s(&cfg.dataset),
            "--split".into(),
            cfg.test_split.clone(),
            "--output-dir".into(),
            s(&results),
        ];
        a.extend(quiet.iter().cloned());
        run_stage(&format!("evaluate the {name} model"), &a, &mut clock)?;
    }
    let score = |name: &str| -> Result<serde_json::Value> {
        let dir = results.join(name);
        let file = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
            .with_context(|| format!("no result JSON in {}", dir.display()))?;
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
        Ok(v["scores"][&cfg.test_split][0].clone())
    };
    let (b, t) = (score("base")?, score("trained")?);
    println!("\n| model | nDCG@10 | Recall@100 |\n| --- | ---: | ---: |");
    for (name, v) in [("base", &b), ("trained", &t)] {
        println!(
            "| {name} | {:.5} | {:.5} |",
            v["ndcg_at_10"].as_f64().unwrap_or(f64::NAN),
            v["recall_at_100"].as_f64().unwrap_or(f64::NAN)
        );
    }
    match (threshold, operating_point) {
        (Some(t), Some((p, r))) => println!(
            "judge threshold: {t:.4} (precision {p:.3}, recall {r:.3} on the calibration pairs)"
        ),
        (Some(t), None) => println!("judge threshold: {t:.4} (fixed in the config)"),
        _ => {}
    }
    if let Some(why) = &judge_skipped {
        println!("judge labels not used: {why}");
    }
    println!("\n| stage | wall time |\n| --- | ---: |");
    for (what, d) in &clock.0 {
        println!("| {what} | {} |", minutes(*d));
    }
    println!(
        "| whole run (reused stages not listed) | {} |",
        minutes(started.elapsed())
    );
    println!("work directory: {}", work.display());
    Ok(())
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example config parses (unknown keys are errors), so a typo in one is caught
    /// here rather than an hour into a user's run.
    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let body = std::fs::read_to_string(&path).unwrap();
                let cfg: PipelineConfig =
                    toml::from_str(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(cfg.judge.is_some(), "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 3, "{seen} example configs");
        let bad = "model = \"m\"\nwork_dir = \"w\"\ndataset = \"d\"\n[judge]\nendpoints = []\n\
                   [judge.calibrate]\npairs = \"p\"\nif_unreachable = \"ignore\"\n";
        let err = toml::from_str::<PipelineConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("if_unreachable") || err.contains("ignore"),
            "{err}"
        );
    }
}
