//! The pipeline file: the model, the data, and one table per stage whose keys are the
//! stage's command-line flags (`[mine]` is `sieve mine`'s settings, `[train]` `sieve
//! train`'s, …): the same types, so the same defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sieve_eval::EvalSettings;
use sieve_judge::calibrate::CalibrateSettings;
use sieve_judge::JudgeSettings;
use sieve_miner::MineSettings;
use sieve_trainer::settings::TrainSettings;

use crate::{Error, Result};

/// The TOML file. Paths are relative to the file's directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_split: Option<String>,
    #[serde(default)]
    pub mine: MineSettings,
    /// Absent: no judge; training uses only the qrels and identical-text masks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeStage>,
    #[serde(default)]
    pub train: TrainSettings,
    #[serde(default)]
    pub eval: EvalSettings,
    /// Prepended to every query the pipeline embeds (mining, training, both
    /// evaluations) unless a stage's table sets its own `query_prompt`: one setting, so
    /// that the stages cannot disagree. The trained model carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_prompt: Option<String>,
    /// The same for every document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_prompt: Option<String>,
}

fn train_split() -> String {
    "train".into()
}
fn test_split() -> String {
    "test".into()
}

/// `[judge]`: `sieve judge`'s settings, the threshold, and an optional calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeStage {
    #[serde(flatten)]
    pub settings: JudgeSettings,
    /// A fixed threshold (default: `sieve judge`'s); ignored when `calibrate` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Human-graded pairs to calibrate the judge on first; the pipeline then uses the
    /// threshold reaching `precision_target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrate: Option<CalibrateStage>,
}

/// `[judge.calibrate]`: `sieve judge calibrate`'s settings and what to do when the
/// judge misses the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrateStage {
    pub pairs: PathBuf,
    #[serde(flatten)]
    pub settings: CalibrateSettings,
    /// What to do when no threshold reaches `precision_target`: "stop" (the default),
    /// or "skip-judge": train without judge labels (qrels and identical-text masks
    /// only) and say so in the summary. A judge that misses the target must not mask
    /// either way; "skip-judge" keeps a reduced or scheduled run going to its scores.
    #[serde(default)]
    pub if_unreachable: Unreachable,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unreachable {
    #[default]
    Stop,
    SkipJudge,
}

impl PipelineConfig {
    /// Parses `body` (read from `path`): every key must belong to some stage, and
    /// relative paths are resolved against the file's directory.
    pub fn parse(body: &str, path: &Path) -> Result<Self> {
        let err = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let value: toml::Table = toml::from_str(body).map_err(|e| err(e.to_string()))?;
        let cfg: PipelineConfig = toml::Value::Table(value.clone())
            .try_into()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        // serde cannot refuse unknown keys of a table that flattens another, so
        // compare what was read with what the parsed value holds: a key the parse did
        // not keep is one no stage has.
        let back = toml::Value::try_from(&cfg).map_err(|e| err(e.to_string()))?;
        let mut unknown = Vec::new();
        unknown_keys("", &toml::Value::Table(value), &back, &mut unknown);
        if !unknown.is_empty() {
            return Err(err(format!(
                "unknown key{} {} (each table takes its command's flags, with `_` for `-`)",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", ")
            )));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(cfg.resolved(base))
    }

    /// Checks every stage's settings and that the work directory takes files, before
    /// any stage starts: `[train] batch_size = 0` or an unwritable directory were once
    /// found only after mining, calibration and judging had run.
    pub fn validate(&self) -> Result<()> {
        let stage = |name: &str, e: &dyn std::fmt::Display| Error::Config {
            path: PathBuf::from(format!("[{name}]")),
            message: e.to_string(),
        };
        self.mine
            .options(1, 1, None)
            .map_err(|e| stage("mine", &e))?;
        if let Some(j) = &self.judge {
            j.settings.validate().map_err(|e| stage("judge", &e))?;
            if let Some(t) = j.threshold {
                sieve_judge::settings::check_threshold(t).map_err(|e| stage("judge", &e))?;
            }
            if let Some(c) = &j.calibrate {
                c.settings
                    .validate()
                    .map_err(|e| stage("judge.calibrate", &e))?;
                if !c.pairs.is_file() {
                    return Err(stage(
                        "judge.calibrate",
                        &format!("pairs: {} is not a file", c.pairs.display()),
                    ));
                }
            }
        }
        self.train.validate().map_err(|e| stage("train", &e))?;
        self.eval.validate().map_err(|e| stage("eval", &e))?;
        if !self.dataset.is_dir() {
            return Err(Error::Config {
                path: self.dataset.clone(),
                message: "dataset: not a directory (a BEIR dataset: corpus, queries, qrels/)"
                    .into(),
            });
        }
        std::fs::create_dir_all(&self.work_dir).map_err(|e| Error::io(&self.work_dir, e))?;
        let probe = self
            .work_dir
            .join(format!(".sieve-write-check-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| Error::io(&self.work_dir, e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let body = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&body, path)
    }

    fn resolved(mut self, base: &Path) -> Self {
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.work_dir = rel(&self.work_dir);
        self.dataset = rel(&self.dataset);
        if Path::new(&self.model).is_relative() && base.join(&self.model).is_dir() {
            self.model = base.join(&self.model).display().to_string();
        }
        if let Some(c) = self.judge.as_mut().and_then(|j| j.calibrate.as_mut()) {
            c.pairs = rel(&c.pairs);
        }
        let fill = |slot: &mut Option<String>, top: &Option<String>| {
            if slot.is_none() {
                slot.clone_from(top);
            }
        };
        fill(&mut self.mine.encode.query_prompt, &self.query_prompt);
        fill(&mut self.train.query_prompt, &self.query_prompt);
        fill(&mut self.eval.encode.query_prompt, &self.query_prompt);
        fill(&mut self.mine.encode.document_prompt, &self.document_prompt);
        fill(&mut self.train.document_prompt, &self.document_prompt);
        fill(&mut self.eval.encode.document_prompt, &self.document_prompt);
        self
    }
}

/// Keys of `read` (with their table path) that `kept` lacks.
fn unknown_keys(at: &str, read: &toml::Value, kept: &toml::Value, out: &mut Vec<String>) {
    let (toml::Value::Table(r), toml::Value::Table(k)) = (read, kept) else {
        return;
    };
    for (key, v) in r {
        let name = if at.is_empty() {
            format!("`{key}`")
        } else {
            format!("`{key}` in [{at}]")
        };
        match k.get(key) {
            None => out.push(name),
            Some(kv) => {
                let sub = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                unknown_keys(&sub, v, kv, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example config parses (unknown keys are errors), so a typo in one is caught
    /// here rather than an hour into a user's run.
    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg = PipelineConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(cfg.judge.is_some(), "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 3, "{seen} example configs");
    }

    /// Top-level prompts reach every stage that embeds, and a stage's own wins.
    #[test]
    fn top_level_prompts_reach_every_stage() {
        let p = Path::new("p.toml");
        let cfg = PipelineConfig::parse(
            "model = \"m\"\nwork_dir = \"w\"\ndataset = \"d\"\nquery_prompt = \"query: \"\n\
             document_prompt = \"passage: \"\n[eval]\nquery_prompt = \"q> \"\n",
            p,
        )
        .unwrap();
        assert_eq!(cfg.mine.encode.query_prompt.as_deref(), Some("query: "));
        assert_eq!(cfg.train.query_prompt.as_deref(), Some("query: "));
        assert_eq!(cfg.eval.encode.query_prompt.as_deref(), Some("q> "));
        for d in [
            &cfg.mine.encode.document_prompt,
            &cfg.train.document_prompt,
            &cfg.eval.encode.document_prompt,
        ] {
            assert_eq!(d.as_deref(), Some("passage: "));
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() {
        let p = Path::new("p.toml");
        let head = "model = \"m\"\nwork_dir = \"w\"\ndataset = \"d\"\n";
        let err = PipelineConfig::parse(&format!("{head}bogus = 1\n[train]\nepoch = 2\n"), p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`bogus`") && err.contains("`epoch` in [train]"),
            "{err}"
        );
        let err = PipelineConfig::parse(
            &format!(
                "{head}[judge]\nendpoints = []\n[judge.calibrate]\npairs = \"p\"\nsampel = 3\n"
            ),
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`sampel` in [judge.calibrate]"), "{err}");
        let bad = format!(
            "{head}[judge]\nendpoints = []\n[judge.calibrate]\npairs = \"p\"\nif_unreachable = \"ignore\"\n"
        );
        let err = PipelineConfig::parse(&bad, p).unwrap_err().to_string();
        assert!(err.contains("ignore"), "{err}");
        // Every stage's flags are keys of its table, device and dtype included.
        let ok = PipelineConfig::parse(
            &format!(
                "{head}[mine]\nbm25_k = 3\nrelative_margin = 0.05\nbatch_size = 8\n\
                 [judge]\nconcurrency = 2\ntemplates = [\"default\", \"document-first\"]\n\
                 [train]\ndevice = \"cpu\"\ndtype = \"f32\"\nnum_negatives = 3\nmax_seq_length = 64\n\
                 judge_threshold = 0.3\ntemperature = 0.05\n[eval]\nretriever = \"hybrid\"\n"
            ),
            p,
        )
        .unwrap();
        assert_eq!(ok.mine.bm25_k, 3);
        assert_eq!(ok.mine.rules.relative_margin, Some(0.05));
        assert_eq!(ok.mine.encode.batch_size, 8);
        assert_eq!(ok.train.num_negatives, 3);
        assert_eq!(ok.judge.unwrap().settings.templates.len(), 2);
    }
}
