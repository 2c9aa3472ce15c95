//! `sieve pipeline CONFIG.toml`: the config read, [`sieve_pipeline::run`] called, the
//! scores and what each stage did printed.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sieve_pipeline::key::Decision;
use sieve_pipeline::PipelineConfig;

/// Mine, judge, train and evaluate in one command, from a TOML file.
///
/// Each table of the file is one stage's settings, with the keys of its command's
/// flags (`[mine]` takes `sieve mine`'s, `-` written `_`; `[judge]` `sieve judge`'s,
/// `[judge.calibrate]` `sieve judge calibrate`'s, `[train]` `sieve train`'s, `[eval]`
/// `sieve eval`'s) and the same defaults. Every stage writes into `work_dir` with a
/// key beside its output (its settings, its inputs, the keys of the stages before it):
/// a re-run reuses every stage whose key is unchanged, resumes one that was
/// interrupted (the miner's parts, the judge's verdict cache, training's checkpoints),
/// and redoes one whose key changed, and every stage after it, saying what changed.
/// Prints the base model's and the trained model's scores side by side.
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

pub fn run(args: &PipelineArgs) -> Result<()> {
    let cfg = PipelineConfig::load(&args.config)?;
    let bars = crate::progress::Bars::new(args.quiet);
    let report = sieve_pipeline::run(&cfg, &bars)
        .with_context(|| format!("pipeline {}", args.config.display()))?;
    outln!("\n| model | nDCG@10 | Recall@100 |\n| --- | ---: | ---: |");
    for (name, r) in [("base", &report.base), ("trained", &report.trained)] {
        let get = |m: &str| r.scores.get(m).copied().unwrap_or(f64::NAN);
        outln!(
            "| {name} | {:.5} | {:.5} |",
            get("ndcg_at_10"),
            get("recall_at_100")
        );
    }
    match (
        report.threshold,
        report
            .calibration
            .as_ref()
            .and_then(|c| c.threshold_for_precision),
    ) {
        (Some(t), Some(op)) => outln!(
            "judge threshold: {t:.4} (precision {:.3}, recall {:.3} on the calibration pairs)",
            op.precision,
            op.recall
        ),
        (Some(t), None) => outln!("judge threshold: {t:.4} (fixed in the config)"),
        _ => {}
    }
    if let Some(why) = &report.judge_skipped {
        outln!("judge labels not used: {why}");
    }
    outln!("\n| stage | what it did | wall time |\n| --- | --- | ---: |");
    for s in &report.stages {
        let what = match &s.decision {
            Decision::Current => "reused".to_string(),
            Decision::Resume => "resumed".to_string(),
            Decision::New => "ran".to_string(),
            Decision::Changed(why) => format!("redone ({})", why.join("; ")),
        };
        outln!("| {} | {what} | {} |", s.stage, minutes(s.seconds));
    }
    outln!("| whole run | | {} |", minutes(report.seconds));
    outln!("work directory: {}", report.work_dir.display());
    Ok(())
}

fn minutes(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}
