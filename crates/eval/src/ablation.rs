//! The ablation report: one table per setting (nDCG@10, Recall@100, training time,
//! masked pairs, judge tokens) with the command behind every number, and a bar chart
//! of nDCG@10 per recipe.
//!
//! Input is the manifest `bench/ablation/run.sh` appends to: one JSON object per run.

use std::fmt::Write as _;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::significance::PairedTest;

/// One run of the ablation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AblationRow {
    pub setting: String,
    pub config: String,
    pub ndcg_at_10: f64,
    pub recall_at_100: f64,
    #[serde(default)]
    pub train_command: String,
    #[serde(default)]
    pub eval_command: String,
    #[serde(default)]
    pub train_seconds: Option<f64>,
    #[serde(default)]
    pub steps: Option<u64>,
    #[serde(default)]
    pub masked_pairs: Option<u64>,
    #[serde(default)]
    pub identical_pairs: Option<u64>,
    #[serde(default)]
    pub judge: Option<Vec<String>>,
    #[serde(default)]
    pub judge_threshold: Option<serde_json::Value>,
    /// The `sieve eval` result JSON (its `.per-query.jsonl` sits beside it).
    #[serde(default)]
    pub result: Option<String>,
    /// nDCG@10 against the in-batch recipe, per query (filled by the caller).
    #[serde(skip)]
    pub vs_inbatch: Option<PairedTest>,
}

/// The recipe every other one is tested against: what a sentence-transformers user
/// runs today.
pub const REFERENCE_CONFIG: &str = "inbatch";

/// What each recipe is, in the report's words.
fn describe(config: &str) -> &str {
    match config {
        "base" => "base model (no training)",
        "inbatch" => "in-batch softmax (MNRL recipe), batch 32",
        "gradcache" => "GradCache large batch (256, mini-batch 32)",
        "exact-none" => "exact softmax, no masking",
        "exact-known" => "exact softmax, masking qrels / identical-question positives",
        "exact-judge" => "exact softmax, masking the calibrated judge's positives (+ qrels)",
        "exact-judge-positive" => "exact softmax, judge's and qrels positives counted as positives",
        "exact-alternate" => {
            "exact softmax, qrels masks, sides alternating every 10 steps (AdamW reset)"
        }
        other => other,
    }
}

/// Recipes in the order the report lists them (others after, in manifest order).
const RECIPE_ORDER: [&str; 8] = [
    "base",
    "inbatch",
    "gradcache",
    "exact-none",
    "exact-known",
    "exact-judge",
    "exact-judge-positive",
    "exact-alternate",
];

/// The rows of `setting`, base first and the known recipes in [`RECIPE_ORDER`], so a
/// recipe re-run later does not move in the table.
fn in_recipe_order<'a>(rows: &'a [AblationRow], setting: &str) -> Vec<&'a AblationRow> {
    let mut rs: Vec<&AblationRow> = rows.iter().filter(|r| r.setting == setting).collect();
    let rank = |c: &str| {
        RECIPE_ORDER
            .iter()
            .position(|&k| k == c)
            .unwrap_or(RECIPE_ORDER.len())
    };
    // Stable: unknown recipes keep their manifest order.
    rs.sort_by_key(|r| rank(&r.config));
    rs
}

/// Parses manifest lines, keeping the last run of each (setting, config).
pub fn parse_manifest(body: &str) -> Result<Vec<AblationRow>, String> {
    let mut rows: Vec<AblationRow> = Vec::new();
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: AblationRow =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        rows.retain(|r| !(r.setting == row.setting && r.config == row.config));
        rows.push(row);
    }
    Ok(rows)
}

/// Per-query nDCG@10 of one run, or why it could not be read.
type Scores = Result<BTreeMap<String, f64>, String>;

/// Tests every trained recipe's per-query nDCG@10 against the in-batch recipe of its
/// setting (paired randomization, [`crate::significance`]). Rows without per-query
/// scores (older manifests) are skipped; returns a note for each one skipped.
pub fn attach_paired_tests(rows: &mut [AblationRow], trials: usize, seed: u64) -> Vec<String> {
    let mut notes = Vec::new();
    let load = |r: &AblationRow| -> Scores {
        let res = r
            .result
            .as_ref()
            .ok_or_else(|| format!("{}/{}: no result path in the manifest", r.setting, r.config))?;
        let path = crate::report::per_query_path(Path::new(res));
        crate::report::read_per_query(&path, "ndcg_at_10").map_err(|e| e.to_string())
    };
    let references: Vec<(String, Scores)> = rows
        .iter()
        .filter(|r| r.config == REFERENCE_CONFIG)
        .map(|r| (r.setting.clone(), load(r)))
        .collect();
    for r in rows.iter_mut() {
        if r.config == REFERENCE_CONFIG {
            continue;
        }
        let Some((_, reference)) = references.iter().find(|(s, _)| *s == r.setting) else {
            continue;
        };
        let pair = reference.as_ref().map_err(|e| e.clone()).and_then(|b| {
            let a = load(r)?;
            crate::significance::paired_scores(&a, b).map_err(|e| e.to_string())
        });
        match pair {
            Ok((a, b)) => {
                r.vs_inbatch = Some(crate::significance::paired_randomization(
                    &a, &b, trials, seed,
                ))
            }
            Err(e) => notes.push(format!(
                "{}/{}: no significance test: {e}",
                r.setting, r.config
            )),
        }
    }
    notes
}

/// The Markdown body; `chart` names the SVG written beside it for each setting.
pub fn render(rows: &[AblationRow], chart: &dyn Fn(&str) -> String) -> String {
    let mut md = String::new();
    let mut settings: Vec<&str> = rows.iter().map(|r| r.setting.as_str()).collect();
    settings.dedup();
    for setting in settings {
        let rs = in_recipe_order(rows, setting);
        let base = rs.iter().find(|r| r.config == "base").map(|r| r.ndcg_at_10);
        let tested = rs.iter().any(|r| r.vs_inbatch.is_some());
        let _ = writeln!(md, "### {setting}\n");
        let _ = writeln!(
            md,
            "| recipe | nDCG@10 | Δ vs base | Recall@100 | training s | steps | pairs masked / made positive | identical masked |{}\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |{}",
            if tested { " Δ vs in-batch (p) |" } else { "" },
            if tested { " ---: |" } else { "" }
        );
        for r in &rs {
            let delta = base.map_or(String::new(), |b| format!("{:+.4}", r.ndcg_at_10 - b));
            let opt = |v: Option<u64>| v.map_or("—".into(), |x| x.to_string());
            let test = match (&r.vs_inbatch, tested) {
                // The smallest p a randomization test can give is 1/(trials + 1).
                (Some(t), _) if t.p_value < 0.001 => {
                    format!(" {:+.4} (p < 0.001) |", t.mean_difference)
                }
                (Some(t), _) => format!(" {:+.4} (p = {:.3}) |", t.mean_difference, t.p_value),
                (None, true) => " — |".to_string(),
                (None, false) => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | {:.4} | {} | {:.4} | {} | {} | {} | {} |{test}",
                describe(&r.config),
                r.ndcg_at_10,
                if r.config == "base" {
                    "—".into()
                } else {
                    delta
                },
                r.recall_at_100,
                r.train_seconds.map_or("—".into(), |s| format!("{s:.0}")),
                opt(r.steps),
                opt(r.masked_pairs),
                opt(r.identical_pairs),
            );
        }
        let _ = writeln!(
            md,
            "\n![nDCG@10 per recipe, {setting}]({})\n",
            chart(setting)
        );
        let _ = writeln!(md, "Commands:\n");
        for r in &rs {
            let cmd = if r.train_command.is_empty() {
                r.eval_command.clone()
            } else {
                format!("{}\n{}", r.train_command, r.eval_command)
            };
            let _ = writeln!(
                md,
                "- `{}`:\n  ```\n  {}\n  ```",
                r.config,
                cmd.replace('\n', "\n  ")
            );
        }
        if let Some(j) = rs.iter().find_map(|r| r.judge.as_ref()) {
            let _ = writeln!(
                md,
                "\nJudge run (last lines of `sieve judge`):\n\n```\n{}\n```",
                j.join("\n")
            );
        }
        if let Some(t) = rs.iter().find_map(|r| r.judge_threshold.as_ref()) {
            let _ = writeln!(md, "\nCalibrated operating point: `{t}`");
        }
        md.push('\n');
    }
    md
}

/// Horizontal bars of nDCG@10, one per recipe of `setting`.
pub fn bar_svg(rows: &[AblationRow], setting: &str) -> String {
    let rs = in_recipe_order(rows, setting);
    let (w, bar_h, left) = (760.0, 26.0, 430.0);
    let h = 40.0 + bar_h * rs.len() as f64;
    let lo = rs
        .iter()
        .map(|r| r.ndcg_at_10)
        .fold(f64::INFINITY, f64::min);
    let hi = rs
        .iter()
        .map(|r| r.ndcg_at_10)
        .fold(f64::NEG_INFINITY, f64::max);
    let lo = (lo - 0.02).max(0.0);
    let span = (hi - lo).max(1e-6);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="{w}" height="{h}" fill="white"/><text x="{}" y="16" text-anchor="middle" font-size="14">nDCG@10, {setting} (axis from {lo:.3})</text>"#,
        w / 2.0
    );
    for (i, r) in rs.iter().enumerate() {
        let y = 28.0 + bar_h * i as f64;
        let len = (w - left - 70.0) * (r.ndcg_at_10 - lo) / span;
        let colour = if r.config == "base" {
            "#999"
        } else if r.config.contains("judge") {
            "#d95f02"
        } else {
            "#3182bd"
        };
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{left}" y="{y}" width="{len:.1}" height="{}" fill="{colour}"/><text x="{}" y="{}">{:.4}</text>"#,
            left - 6.0,
            y + bar_h * 0.6,
            describe(&r.config)
                .replace('&', "&amp;")
                .replace('<', "&lt;"),
            bar_h - 6.0,
            left + len + 4.0,
            y + bar_h * 0.6,
            r.ndcg_at_10
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_runs_replace_earlier_ones_and_every_row_is_rendered() {
        let body = r#"{"setting":"m","config":"base","ndcg_at_10":0.5,"recall_at_100":0.8,"eval_command":"sieve eval A"}
{"setting":"m","config":"inbatch","ndcg_at_10":0.55,"recall_at_100":0.85,"train_command":"sieve train X","train_seconds":12.0,"steps":3,"masked_pairs":0}
{"setting":"m","config":"inbatch","ndcg_at_10":0.56,"recall_at_100":0.86,"train_command":"sieve train Y","train_seconds":13.0,"steps":3,"masked_pairs":0}
"#;
        let rows = parse_manifest(body).unwrap();
        assert_eq!(rows.len(), 2);
        // A recipe re-run after another keeps its place in the table.
        let reversed: Vec<AblationRow> = rows.iter().rev().cloned().collect();
        let md_rev = render(&reversed, &|s| format!("{s}.svg"));
        assert!(md_rev.find("| base model").unwrap() < md_rev.find("| in-batch").unwrap());
        let md = render(&rows, &|s| format!("{s}.svg"));
        assert!(
            md.contains("| in-batch softmax (MNRL recipe), batch 32 | 0.5600 | +0.0600 |"),
            "{md}"
        );
        assert!(md.contains("sieve train Y") && !md.contains("sieve train X"));
        assert!(md.contains("![nDCG@10 per recipe, m](m.svg)"));
        assert_eq!(bar_svg(&rows, "m").matches("<rect x=").count(), 2);
        let mut rows = rows;
        rows[0].vs_inbatch = Some(PairedTest {
            queries: 3,
            mean_difference: -0.06,
            p_value: 0.25,
        });
        let md = render(&rows, &|s| format!("{s}.svg"));
        assert!(md.contains("| Δ vs in-batch (p) |"), "{md}");
        assert!(md.contains("| -0.0600 (p = 0.250) |"), "{md}");
        assert!(parse_manifest("{\"setting\": 1}")
            .unwrap_err()
            .starts_with("line 1"));
    }
}
