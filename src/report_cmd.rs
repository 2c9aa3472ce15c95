//! `sieve report`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sieve_eval::ablation;

/// Render the ablation report (Markdown with one bar chart per setting) from the
/// manifests `bench/ablation/run.sh` writes: every number in it carries the command
/// that produced it.
///
/// Example:
///   sieve report runs/ablation/medquad/manifest.jsonl runs/ablation/scifact/manifest.jsonl \
///       --out docs/ablation-results.md
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ReportArgs {
    /// Manifest files (JSON lines, one run each; a later run of the same recipe wins).
    #[arg(required = true)]
    pub manifests: Vec<PathBuf>,

    /// The Markdown file; charts are written beside it as <stem>-<setting>.svg.
    #[arg(long, short)]
    pub out: PathBuf,

    /// Seed of the paired randomization test (nDCG@10 per query of each recipe
    /// against the in-batch recipe, 10,000 sign assignments): same seed, same p.
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let mut rows = Vec::new();
    for m in &args.manifests {
        let body =
            std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?;
        rows.extend(
            ablation::parse_manifest(&body).map_err(|e| anyhow::anyhow!("{}: {e}", m.display()))?,
        );
    }
    for note in ablation::attach_paired_tests(
        &mut rows,
        sieve_eval::significance::DEFAULT_TRIALS,
        args.seed,
    ) {
        eprintln!("{note}");
    }
    let dir = args.out.parent().map(PathBuf::from).unwrap_or_default();
    let stem = args
        .out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let chart_name = |setting: &str| format!("{stem}-{setting}.svg");
    let mut settings: Vec<String> = rows.iter().map(|r| r.setting.clone()).collect();
    settings.dedup();
    for s in &settings {
        let path = dir.join(chart_name(s));
        std::fs::write(&path, ablation::bar_svg(&rows, s))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let md = ablation::render(&rows, &chart_name);
    std::fs::write(&args.out, &md).with_context(|| format!("writing {}", args.out.display()))?;
    outln!("{md}");
    eprintln!("wrote {} ({} runs)", args.out.display(), rows.len());
    Ok(())
}
