//! What the miner mines: a corpus and queries with their known positives, from a BEIR
//! directory or from a pairs file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sieve_datasets::{Document, LoadOptions, ValidationReport};

use crate::{Error, Result};

/// One query to mine for.
#[derive(Debug, Clone, PartialEq)]
pub struct MineQuery {
    pub id: String,
    pub text: String,
    /// Corpus positions of the known positives (qrels score > 0, or the pairs'
    /// positives), ascending. Kept apart from the candidates.
    pub positives: Vec<u32>,
}

/// A corpus and the queries to mine candidates for.
#[derive(Debug, Clone, Default)]
pub struct MiningInput {
    pub corpus: Vec<Document>,
    pub queries: Vec<MineQuery>,
    /// Where the corpus can be read again by a later stage (the judge): the BEIR
    /// corpus file, or `None` for a corpus assembled from pairs that still has to be
    /// written (see [`MiningInput::write_corpus`]).
    pub corpus_path: Option<PathBuf>,
    /// Problems found while loading (duplicates, empty texts…), to be printed.
    pub report: ValidationReport,
    /// Queries dropped because none of their positives is in the corpus, or that
    /// have no positives at all (BEIR queries without qrels in the split).
    pub without_positives: usize,
}

impl MiningInput {
    /// The queries of `split` that have qrels, with their positives (score > 0).
    /// Queries without any qrels in the split are not mined (they belong to another
    /// split); a qrels document missing from the corpus is reported and skipped.
    pub fn from_beir(dir: &Path, split: &str, opts: LoadOptions) -> Result<Self> {
        let ds = sieve_datasets::load_beir(dir, split, opts)?;
        let position: HashMap<&str, u32> = ds
            .corpus
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.as_str(), i as u32))
            .collect();
        let mut queries = Vec::new();
        let mut without = 0;
        for q in &ds.queries {
            let Some(rels) = ds.qrels.get(&q.id) else {
                continue;
            };
            let mut positives: Vec<u32> = rels
                .iter()
                .filter(|(_, &score)| score > 0)
                .filter_map(|(doc, _)| position.get(doc.as_str()).copied())
                .collect();
            positives.sort_unstable();
            if positives.is_empty() {
                without += 1;
            }
            queries.push(MineQuery {
                id: q.id.clone(),
                text: q.text.clone(),
                positives,
            });
        }
        if queries.is_empty() {
            return Err(Error::Input(format!(
                "{}: no query of split {split:?} has qrels",
                dir.display()
            )));
        }
        let corpus_path = ["corpus.jsonl", "corpus.jsonl.gz"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p));
        Ok(Self {
            corpus: ds.corpus,
            queries,
            corpus_path,
            report: ds.report,
            without_positives: without,
        })
    }

    /// Queries and corpus from a pairs file (JSONL, TSV or Parquet with
    /// `query`/`anchor`, `positive`, optional negatives). The corpus is every
    /// distinct positive and negative text, then every document of `extra_corpus`
    /// (a BEIR `corpus.jsonl[.gz]`) whose text is new; identical texts share one
    /// document. A query repeated across rows is one query with several positives.
    /// Ids are `q{n}` and `d{n}` in order of first appearance, so the same file
    /// always gives the same ids.
    pub fn from_pairs(path: &Path, extra_corpus: Option<&Path>, opts: LoadOptions) -> Result<Self> {
        let (pairs, mut report) = sieve_datasets::read_pairs(path, opts)?;
        let mut corpus: Vec<Document> = Vec::new();
        let mut doc_of: HashMap<String, u32> = HashMap::new();
        let mut add_doc = |text: &str, corpus: &mut Vec<Document>| -> u32 {
            if let Some(&i) = doc_of.get(text) {
                return i;
            }
            let i = corpus.len() as u32;
            corpus.push(Document {
                id: format!("d{i}"),
                title: String::new(),
                text: text.to_string(),
            });
            doc_of.insert(text.to_string(), i);
            i
        };
        let mut queries: Vec<MineQuery> = Vec::new();
        let mut query_of: HashMap<String, usize> = HashMap::new();
        for pair in &pairs {
            let pos = add_doc(&pair.positive, &mut corpus);
            for n in &pair.negatives {
                add_doc(n, &mut corpus);
            }
            let qi = *query_of.entry(pair.query.clone()).or_insert_with(|| {
                queries.push(MineQuery {
                    id: format!("q{}", queries.len()),
                    text: pair.query.clone(),
                    positives: Vec::new(),
                });
                queries.len() - 1
            });
            let q = &mut queries[qi];
            if !q.positives.contains(&pos) {
                q.positives.push(pos);
            }
        }
        if let Some(extra) = extra_corpus {
            for d in sieve_datasets::read_corpus(extra, &mut report)? {
                add_doc(&d.full_text(), &mut corpus);
            }
        }
        for q in &mut queries {
            q.positives.sort_unstable();
        }
        if queries.is_empty() {
            return Err(Error::Input(format!("{}: no pairs", path.display())));
        }
        Ok(Self {
            corpus,
            queries,
            corpus_path: None,
            report,
            without_positives: 0,
        })
    }

    /// SHA-256 over the corpus ids and texts in order: names the BM25 index and the
    /// assembled corpus file, and ties a mined file to the corpus it refers to.
    pub fn corpus_hash(&self) -> String {
        sieve_datasets::corpus_hash(&self.corpus)
    }

    /// SHA-256 over the queries (id, text, positives) in order: with the corpus hash,
    /// what the output depends on, however the input's path was spelled.
    pub fn queries_hash(&self) -> String {
        let mut h = Sha256::new();
        for q in &self.queries {
            for part in [&q.id, &q.text] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            h.update((q.positives.len() as u64).to_le_bytes());
            for p in &q.positives {
                h.update(p.to_le_bytes());
            }
        }
        format!("{:x}", h.finalize())
    }

    /// Writes the corpus as BEIR `corpus.jsonl.gz` into `dir` under a name derived
    /// from its hash (so shards of one run, and re-runs, share one file), unless it
    /// is already there; returns the file name.
    pub fn write_corpus(&self, dir: &Path) -> Result<String> {
        let name = format!("corpus-{}.jsonl.gz", &self.corpus_hash()[..16]);
        let path = dir.join(&name);
        if path.exists() {
            return Ok(name);
        }
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let file = std::fs::File::create(&tmp)?;
            let mut gz = flate2::write::GzEncoder::new(
                std::io::BufWriter::new(file),
                flate2::Compression::default(),
            );
            for d in &self.corpus {
                let line = serde_json::json!({"_id": d.id, "title": d.title, "text": d.text});
                serde_json::to_writer(&mut gz, &line)?;
                gz.write_all(b"\n")?;
            }
            gz.finish()?.flush()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&path, e)
        })?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_share_documents_and_merge_repeated_queries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pairs.jsonl");
        std::fs::write(
            &p,
            concat!(
                r#"{"query": "q a", "positive": "doc 1", "negative": "doc 2"}"#,
                "\n",
                r#"{"query": "q b", "positive": "doc 2"}"#,
                "\n",
                r#"{"query": "q a", "positive": "doc 3"}"#,
                "\n",
            ),
        )
        .unwrap();
        let extra = dir.path().join("corpus.jsonl");
        std::fs::write(
            &extra,
            concat!(
                r#"{"_id": "x", "title": "", "text": "doc 3"}"#,
                "\n",
                r#"{"_id": "y", "title": "", "text": "doc 4"}"#,
                "\n",
            ),
        )
        .unwrap();
        let input = MiningInput::from_pairs(&p, Some(&extra), LoadOptions::default()).unwrap();
        let texts: Vec<&str> = input.corpus.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["doc 1", "doc 2", "doc 3", "doc 4"]);
        assert_eq!(input.queries.len(), 2);
        assert_eq!(input.queries[0].text, "q a");
        assert_eq!(input.queries[0].positives, vec![0, 2]);
        assert_eq!(input.queries[1].positives, vec![1]);
        // The written corpus reads back as BEIR, and a second write reuses it.
        let name = input.write_corpus(dir.path()).unwrap();
        assert_eq!(input.write_corpus(dir.path()).unwrap(), name);
        let mut report = ValidationReport::default();
        let back = sieve_datasets::read_corpus(&dir.path().join(&name), &mut report).unwrap();
        assert_eq!(back, input.corpus);
    }
}
