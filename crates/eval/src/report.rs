//! Results as MTEB writes them (`results/<model>/<Task>.json`) and a Markdown summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::metrics::MTEB_K_VALUES;

/// Metric families in the order MTEB lists them.
pub const METRIC_FAMILIES: [&str; 5] = ["ndcg", "map", "recall", "precision", "mrr"];

/// Everything one evaluation produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_name: String,
    pub model_name: String,
    pub split: String,
    pub retriever: String,
    /// Mean over evaluated queries, MTEB names (`ndcg_at_10`, …).
    pub scores: BTreeMap<String, f64>,
    pub evaluation_time: f64,
    pub num_queries: usize,
    pub num_documents: usize,
    pub model_fingerprint: Option<String>,
    pub max_seq_length: Option<usize>,
    /// The embeddings' first dimensions scored (`--truncate-dim`); `None`: all.
    pub truncate_dim: Option<usize>,
    /// What data was scored: `sieve:` and a SHA-256 prefix over the corpus, the
    /// queries and the qrels read (MTEB puts the dataset's hub revision here and its
    /// result reader requires a string; a local BEIR directory has no hub revision).
    pub dataset_revision: String,
    /// query id -> metric -> value, for significance tests between runs.
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
}

impl TaskResult {
    pub fn main_score(&self) -> f64 {
        self.scores.get("ndcg_at_10").copied().unwrap_or(f64::NAN)
    }

    /// The MTEB result object (`scores.<split>[0]` holds every metric and `main_score`).
    pub fn mteb_json(&self) -> Value {
        let mut split_scores: serde_json::Map<String, Value> = self
            .scores
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        split_scores.insert("main_score".into(), json!(self.main_score()));
        split_scores.insert("hf_subset".into(), json!("default"));
        split_scores.insert("languages".into(), json!(["eng-Latn"]));
        json!({
            "dataset_revision": self.dataset_revision,
            "task_name": self.task_name,
            "mteb_version": null,
            "scores": { self.split.clone(): [Value::Object(split_scores)] },
            "evaluation_time": self.evaluation_time,
            "kg_co2_emissions": null,
            "sieve": {
                "version": env!("CARGO_PKG_VERSION"),
                "model_name": self.model_name,
                "retriever": self.retriever,
                "num_queries": self.num_queries,
                "num_documents": self.num_documents,
                "model_fingerprint": self.model_fingerprint,
                "max_seq_length": self.max_seq_length,
                "truncate_dim": self.truncate_dim,
            }
        })
    }

    /// A table with one row per metric family and one column per cut-off.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "## {} — {} ({} split, {} retriever)\n\n{} queries, {} documents, {:.1} s\n\n| metric |",
            self.task_name,
            self.model_name,
            self.split,
            self.retriever,
            self.num_queries,
            self.num_documents,
            self.evaluation_time
        );
        for k in MTEB_K_VALUES {
            s += &format!(" @{k} |");
        }
        s += "\n|---|";
        for _ in MTEB_K_VALUES {
            s += "---:|";
        }
        s += "\n";
        for family in METRIC_FAMILIES {
            s += &format!("| {family} |");
            for k in MTEB_K_VALUES {
                match self.scores.get(&format!("{family}_at_{k}")) {
                    Some(v) => s += &format!(" {v:.5} |"),
                    None => s += " |",
                }
            }
            s += "\n";
        }
        s += &format!("\nmain score (nDCG@10): **{:.5}**\n", self.main_score());
        s
    }

    /// Writes `<dir>/<model>/<Task>.json`, `.md` and, when there are per-query
    /// scores, `<Task>.per-query.jsonl` (one `{"query_id": …, metric: value, …}` per
    /// query, as pytrec_eval reports them); returns the JSON path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let model_dir = dir.join(sanitize(&self.model_name));
        std::fs::create_dir_all(&model_dir).map_err(|e| Error::io(&model_dir, e))?;
        let json_path = model_dir.join(format!("{}.json", self.task_name));
        let body = serde_json::to_string_pretty(&self.mteb_json())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&json_path, body.as_bytes())?;
        write_atomic(
            &model_dir.join(format!("{}.md", self.task_name)),
            self.markdown().as_bytes(),
        )?;
        if !self.per_query.is_empty() {
            let mut body = String::new();
            for (qid, metrics) in &self.per_query {
                let mut row = serde_json::Map::new();
                row.insert("query_id".into(), json!(qid));
                for (k, v) in metrics {
                    row.insert(k.clone(), json!(v));
                }
                body += &Value::Object(row).to_string();
                body.push('\n');
            }
            write_atomic(&per_query_path(&json_path), body.as_bytes())?;
        }
        Ok(json_path)
    }
}

/// Where [`TaskResult::write`] puts the per-query scores of the result at `json_path`.
pub fn per_query_path(json_path: &Path) -> PathBuf {
    json_path.with_extension("per-query.jsonl")
}

/// Reads one metric per query from a `.per-query.jsonl` file.
pub fn read_per_query(path: &Path, metric: &str) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for record in sieve_datasets::JsonLines::open(path)? {
        let (line, v) = record?;
        let bad = |m: &str| Error::Invalid(format!("{}:{line}: {m}", path.display()));
        let qid = v
            .get("query_id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no string field `query_id`"))?;
        let x = v
            .get(metric)
            .and_then(Value::as_f64)
            .ok_or_else(|| bad(&format!("no number field `{metric}`")))?;
        if out.insert(qid.to_string(), x).is_some() {
            return Err(bad(&format!("query {qid} appears twice")));
        }
    }
    Ok(out)
}

/// MTEB spells hub ids `org__name` in result paths.
pub fn sanitize(name: &str) -> String {
    name.replace('/', "__")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(path, e))
}

/// MTEB's task names for the BEIR datasets, so results land where MTEB tooling looks.
pub fn task_name_for(dataset_dir: &Path) -> String {
    let base = dataset_dir
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "Retrieval".into());
    let known = [
        ("scifact", "SciFact"),
        ("nfcorpus", "NFCorpus"),
        ("arguana", "ArguAna"),
        ("fiqa", "FiQA2018"),
        ("scidocs", "SCIDOCS"),
        ("trec-covid", "TRECCOVID"),
        ("quora", "QuoraRetrieval"),
        ("nq", "NQ"),
        ("hotpotqa", "HotpotQA"),
        ("msmarco", "MSMARCO"),
        ("fever", "FEVER"),
        ("climate-fever", "ClimateFEVER"),
        ("dbpedia-entity", "DBPedia"),
        ("touche2020", "Touche2020"),
        ("webis-touche2020", "Touche2020"),
    ];
    known
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&base))
        .map(|(_, v)| v.to_string())
        .unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mteb_layout() {
        let mut scores = BTreeMap::new();
        scores.insert("ndcg_at_10".to_string(), 0.5);
        scores.insert("recall_at_100".to_string(), 0.9);
        let r = TaskResult {
            task_name: "SciFact".into(),
            model_name: "org/model".into(),
            split: "test".into(),
            retriever: "dense".into(),
            scores,
            evaluation_time: 1.5,
            num_queries: 3,
            num_documents: 10,
            model_fingerprint: None,
            max_seq_length: Some(256),
            truncate_dim: None,
            dataset_revision: "sieve:0123456789abcdef".into(),
            per_query: [("q1".to_string(), [("ndcg_at_10".to_string(), 0.25)].into())].into(),
        };
        let v = r.mteb_json();
        assert_eq!(v["scores"]["test"][0]["main_score"], 0.5);
        assert_eq!(v["scores"]["test"][0]["recall_at_100"], 0.9);
        assert_eq!(v["task_name"], "SciFact");
        let tmp = tempfile::tempdir().unwrap();
        let path = r.write(tmp.path()).unwrap();
        assert!(path.ends_with("org__model/SciFact.json"));
        let pq = read_per_query(&per_query_path(&path), "ndcg_at_10").unwrap();
        assert_eq!(pq, [("q1".to_string(), 0.25)].into());
        let err = read_per_query(&per_query_path(&path), "map_at_10").unwrap_err();
        assert!(
            err.to_string().contains("SciFact.per-query.jsonl:1"),
            "{err}"
        );
        assert!(r.markdown().contains("| ndcg | 0.50000 |") || r.markdown().contains("0.50000"));
        assert_eq!(task_name_for(Path::new("/x/scifact")), "SciFact");
        assert_eq!(task_name_for(Path::new("/x/mine")), "mine");
    }
}
