//! Training examples from the three inputs sieve trains on: pair files, BEIR train
//! splits and the judge's labeled Parquet.
//!
//! Every text is interned once ([`TrainData::texts`]); examples hold text ids, so that
//! "is this batch document the same text as, or known to answer, this query?" is an
//! integer comparison in the batch builder and the loss masks.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sieve_datasets::mined::{LABEL_IRRELEVANT, LABEL_RELEVANT};
use sieve_datasets::{LoadOptions, ValidationReport};

use crate::{Error, Result};

/// Index into [`TrainData::texts`].
pub type TextId = u32;

/// One training example: a query, its positive, optional hard negatives, and the other
/// texts known to answer the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub query: TextId,
    pub positive: TextId,
    pub negatives: Vec<TextId>,
    /// Other positives of the same query (qrels, or another answer to the same question
    /// text): never a negative for it.
    pub known: Vec<TextId>,
    /// Candidates the judge labeled relevant: the false negatives it found.
    pub judged: Vec<TextId>,
}

/// Interned texts and the examples over them.
#[derive(Debug, Clone, Default)]
pub struct TrainData {
    pub texts: Vec<String>,
    pub examples: Vec<Example>,
    /// The documents of the exact softmax's denominator, each text once: the whole
    /// corpus for BEIR and labeled input, every positive and negative for pair files.
    pub corpus: Vec<TextId>,
    /// Where the data came from, for logs and checkpoints.
    pub source: String,
    /// Labeled Parquet: per query text, the candidates the judge scored, best-ranked
    /// first, with their P(relevant): the teacher of listwise distillation
    /// ([`crate::loss::distillation_loss`]). Errors and pairs flagged suspicious are left
    /// out.
    pub teacher: HashMap<TextId, Vec<(TextId, f32)>>,
    index: HashMap<String, TextId>,
}

/// How to read the inputs.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Hard negatives kept per example (the best-ranked first); 0 keeps none.
    pub num_negatives: usize,
    /// Labeled Parquet only: re-threshold the judge's `p_relevant` (otherwise its
    /// `label` is used as written).
    pub judge_threshold: Option<f32>,
    /// Labeled Parquet only: the corpus, when the file's `sieve.corpus` is not it.
    pub corpus: Option<PathBuf>,
    /// BEIR only: the split whose qrels are the training pairs.
    pub split: String,
    /// BEIR only: qrels pairs with at least this score are training positives; pairs
    /// scored above 0 but below it are known to answer the query without being trained
    /// on (graded qrels, or a benchmark's hidden positives): masked with
    /// `mask_known` and counted in the known false-negative dose.
    pub min_positive_score: i32,
    /// BEIR only: a qrels file (`query-id\tcorpus-id\tscore`, score > 0) of the
    /// (query, document) pairs a judge labeled relevant: the judge's false negatives,
    /// for judges run outside `sieve judge` (or simulated ones).
    pub judged_qrels: Option<PathBuf>,
    /// Labeled Parquet only: keep candidates the judge labeled relevant among the hard
    /// negatives (in rank order), as a run without a judge would use them; they are
    /// still flagged as judged, so the dose measures them. Set when the judge's
    /// verdicts are not acted on (`--false-negatives none` or `--ignore-judge`): the
    /// unfiltered baseline of mined hard negatives (RocketQA's setting).
    pub judged_as_negatives: bool,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            num_negatives: 1,
            judge_threshold: None,
            corpus: None,
            split: "train".into(),
            min_positive_score: 1,
            judged_qrels: None,
            judged_as_negatives: false,
        }
    }
}

/// What [`TrainData::load`] found besides the examples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadStats {
    /// Candidates labeled relevant by the judge (false negatives found).
    pub judged_relevant: usize,
    /// Candidates labeled irrelevant (usable hard negatives).
    pub judged_irrelevant: usize,
    /// Candidates with no verdict or a failed one: neither negative nor masked.
    pub unjudged: usize,
}

impl TrainData {
    /// SHA-256 over every text and every example's roles (query, positive, negatives,
    /// known and judged positives) and the corpus: a resume compares it, so data with
    /// the same counts but other texts or pairings is refused rather than continued.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let ids = |h: &mut Sha256, tag: u8, v: &[TextId]| {
            h.update([tag]);
            h.update((v.len() as u64).to_le_bytes());
            for t in v {
                h.update(t.to_le_bytes());
            }
        };
        h.update((self.texts.len() as u64).to_le_bytes());
        for t in &self.texts {
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        h.update((self.examples.len() as u64).to_le_bytes());
        for e in &self.examples {
            ids(&mut h, b'q', &[e.query, e.positive]);
            ids(&mut h, b'n', &e.negatives);
            ids(&mut h, b'k', &e.known);
            ids(&mut h, b'j', &e.judged);
        }
        ids(&mut h, b'c', &self.corpus);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn intern(&mut self, text: &str) -> TextId {
        if let Some(&id) = self.index.get(text) {
            return id;
        }
        let id = self.texts.len() as TextId;
        self.texts.push(text.to_string());
        self.index.insert(text.to_string(), id);
        id
    }

    /// Data built elsewhere (tests, other loaders).
    pub fn from_parts(texts: Vec<String>, examples: Vec<Example>, source: String) -> Self {
        let index = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as TextId))
            .collect();
        let mut data = Self {
            texts,
            examples,
            source,
            index,
            corpus: Vec::new(),
            teacher: HashMap::new(),
        };
        data.corpus_from_examples();
        data
    }

    /// Every positive and negative, once, in order of first appearance.
    fn corpus_from_examples(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.corpus = self
            .examples
            .iter()
            .flat_map(|e| std::iter::once(e.positive).chain(e.negatives.iter().copied()))
            .filter(|t| seen.insert(*t))
            .collect();
    }

    /// One line for logs: sizes, and how many examples have hard negatives, other known
    /// positives and judge-found false negatives.
    pub fn summary(&self) -> String {
        let count = |f: fn(&Example) -> bool| self.examples.iter().filter(|e| f(e)).count();
        format!(
            "{}: {} examples, {} distinct texts; {} with hard negatives, {} with other known positives, {} with judge-found false negatives",
            self.source,
            self.examples.len(),
            self.texts.len(),
            count(|e| !e.negatives.is_empty()),
            count(|e| !e.known.is_empty()),
            count(|e| !e.judged.is_empty()),
        )
    }

    pub fn text(&self, id: TextId) -> &str {
        &self.texts[id as usize]
    }

    /// Reads `path`: a BEIR directory, a `.parquet` labeled/mined file (recognised by
    /// its `candidates` column) or pair file, or a `.jsonl`/`.tsv` pair file.
    pub fn load(path: &Path, opts: &DataOptions) -> Result<(Self, LoadStats)> {
        if let Some(shards) = sieve_datasets::mined::shard_files(path)? {
            return Self::from_mined_shards(path, &shards, opts);
        }
        if path.is_dir() {
            return Ok((Self::from_beir(path, opts)?, LoadStats::default()));
        }
        let is_parquet = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        if is_parquet {
            let meta = sieve_datasets::parquet_io::read_metadata(path)?;
            if meta.keys().any(|k| k.starts_with("sieve.")) && is_mined(path)? {
                return Self::from_mined(path, opts);
            }
        }
        Ok((Self::from_pairs(path, opts)?, LoadStats::default()))
    }

    /// Pair files: a query text seen with several positives (MedQuAD asks the same
    /// question of several sources) makes each of them a known positive of the others.
    pub fn from_pairs(path: &Path, opts: &DataOptions) -> Result<Self> {
        let (pairs, report) = sieve_datasets::read_pairs(path, LoadOptions::default())?;
        warn_report(path, &report);
        if pairs.is_empty() {
            return Err(Error::Data(format!("{}: no pairs", path.display())));
        }
        let mut data = TrainData {
            source: path.display().to_string(),
            ..Default::default()
        };
        let mut by_query: BTreeMap<TextId, Vec<TextId>> = BTreeMap::new();
        let mut examples = Vec::with_capacity(pairs.len());
        for p in &pairs {
            let query = data.intern(&p.query);
            let positive = data.intern(&p.positive);
            let negatives = p
                .negatives
                .iter()
                .take(opts.num_negatives)
                .map(|n| data.intern(n))
                .collect();
            by_query.entry(query).or_default().push(positive);
            examples.push(Example {
                query,
                positive,
                negatives,
                known: Vec::new(),
                judged: Vec::new(),
            });
        }
        for e in &mut examples {
            e.known = others(&by_query[&e.query], e.positive);
        }
        data.examples = examples;
        data.corpus_from_examples();
        Ok(data)
    }

    /// A BEIR split: one example per (query, relevant document) in its qrels, the
    /// document as `title + " " + text` (the text evaluation embeds).
    pub fn from_beir(dir: &Path, opts: &DataOptions) -> Result<Self> {
        let ds = sieve_datasets::load_beir(dir, &opts.split, LoadOptions::default())?;
        warn_report(dir, &ds.report);
        let docs: HashMap<&str, String> = ds
            .corpus
            .iter()
            .map(|d| (d.id.as_str(), d.full_text()))
            .collect();
        let mut data = TrainData {
            source: format!("{} ({})", dir.display(), opts.split),
            ..Default::default()
        };
        let mut seen = std::collections::HashSet::new();
        for d in &ds.corpus {
            let t = data.intern(&d.full_text());
            if seen.insert(t) {
                data.corpus.push(t);
            }
        }
        let judged_qrels = match &opts.judged_qrels {
            Some(path) => {
                let mut report = ValidationReport::default();
                let q = sieve_datasets::read_qrels(path, &mut report)?;
                warn_report(path, &report);
                Some((path, q))
            }
            None => None,
        };
        let min_score = opts.min_positive_score.max(1);
        let lookup = |data: &mut TrainData, doc_id: &str, qid: &str, file: &Path| {
            docs.get(doc_id).map(|t| data.intern(t)).ok_or_else(|| {
                Error::Data(format!(
                    "{}: qrels of {qid:?} name document {doc_id:?}, which is not in the corpus",
                    file.display(),
                ))
            })
        };
        for q in &ds.queries {
            let Some(rels) = ds.qrels.get(&q.id) else {
                continue;
            };
            let query = data.intern(&q.text);
            let (mut positives, mut relevant) = (Vec::new(), Vec::new());
            for (doc_id, &score) in rels {
                if score <= 0 {
                    continue;
                }
                let t = lookup(&mut data, doc_id, &q.id, dir)?;
                relevant.push(t);
                if score >= min_score {
                    positives.push(t);
                }
            }
            let mut judged = Vec::new();
            if let Some((path, jq)) = &judged_qrels {
                for (doc_id, &score) in jq.get(&q.id).into_iter().flatten() {
                    if score > 0 {
                        judged.push(lookup(&mut data, doc_id, &q.id, path)?);
                    }
                }
            }
            judged.sort_unstable();
            judged.dedup();
            for &positive in &positives {
                data.examples.push(Example {
                    query,
                    positive,
                    negatives: Vec::new(),
                    known: others(&relevant, positive),
                    judged: judged.iter().copied().filter(|&t| t != positive).collect(),
                });
            }
        }
        if data.examples.is_empty() {
            return Err(Error::Data(format!(
                "{}: split {:?} has no relevant (query, document) pairs",
                dir.display(),
                opts.split
            )));
        }
        Ok(data)
    }

    /// The judge's labeled Parquet: one example per known positive; hard negatives are
    /// candidates labeled irrelevant (best fused rank first), false negatives those
    /// labeled relevant. Unjudged or failed candidates are neither.
    pub fn from_mined(path: &Path, opts: &DataOptions) -> Result<(Self, LoadStats)> {
        let (rows, meta) = sieve_datasets::mined::read_mined(path)?;
        Self::from_mined_rows(path, path, rows, &meta, opts)
    }

    /// The shards of one mining (or judging) run as one file: `spec` is their
    /// directory or wildcard pattern, `shards` the files it names. The rows come in
    /// shard order, so training on the set is training on the merged file: the same
    /// examples, the same batches for the same seed. A set that is not complete, or
    /// mixes runs, is refused like `sieve merge` refuses it.
    pub fn from_mined_shards(
        spec: &Path,
        shards: &[std::path::PathBuf],
        opts: &DataOptions,
    ) -> Result<(Self, LoadStats)> {
        let own = [
            sieve_datasets::mined::RUN_KEY,
            sieve_datasets::mined::SCORE_METHODS_KEY,
        ];
        let (rows, meta, _) = sieve_datasets::mined::read_shard_set(shards, &own)?;
        // The corpus is named relative to a shard's own directory.
        Self::from_mined_rows(spec, &shards[0], rows, &meta, opts)
    }

    /// `rows` of a mined or labeled file (or shard set) `source`, whose corpus is
    /// named relative to `located`.
    fn from_mined_rows(
        source: &Path,
        located: &Path,
        rows: Vec<sieve_datasets::mined::MinedRow>,
        meta: &sieve_datasets::parquet_io::Metadata,
        opts: &DataOptions,
    ) -> Result<(Self, LoadStats)> {
        let path = source;
        let corpus_path = match &opts.corpus {
            Some(p) => p.clone(),
            None => sieve_datasets::mined::named_corpus(located, meta).ok_or_else(|| {
                Error::Data(format!(
                    "{}: no `sieve.corpus` in its metadata; pass the corpus",
                    path.display()
                ))
            })?,
        };
        let mut report = ValidationReport::default();
        let corpus = sieve_datasets::read_corpus(&corpus_path, &mut report)?;
        warn_report(&corpus_path, &report);
        let docs: HashMap<&str, String> = corpus
            .iter()
            .map(|d| (d.id.as_str(), d.full_text()))
            .collect();
        let lookup = |id: &str, query_id: &str| {
            docs.get(id).ok_or_else(|| {
                Error::Data(format!(
                    "{}: document {id:?} of query {query_id:?} is not in the corpus {}",
                    path.display(),
                    corpus_path.display()
                ))
            })
        };
        let mut data = TrainData {
            source: path.display().to_string(),
            ..Default::default()
        };
        let mut seen = std::collections::HashSet::new();
        for d in &corpus {
            let t = data.intern(&docs[d.id.as_str()]);
            if seen.insert(t) {
                data.corpus.push(t);
            }
        }
        let mut stats = LoadStats::default();
        for row in &rows {
            let query = data.intern(&row.query);
            let positives: Vec<TextId> = row
                .positives
                .iter()
                .map(|id| Ok(data.intern(lookup(id, &row.query_id)?)))
                .collect::<Result<_>>()?;
            let mut candidates: Vec<_> = row.candidates.iter().collect();
            candidates.sort_by_key(|c| c.rank);
            let (mut negatives, mut judged) = (Vec::new(), Vec::new());
            for c in candidates {
                let relevant = match (opts.judge_threshold, c.p_relevant, c.label.as_deref()) {
                    (_, _, None)
                    | (_, _, Some(sieve_datasets::mined::LABEL_ERROR))
                    | (_, _, Some(sieve_datasets::mined::LABEL_SUSPICIOUS)) => None,
                    (Some(t), Some(p), _) => Some(p >= t),
                    (_, _, Some(LABEL_RELEVANT)) => Some(true),
                    (_, _, Some(LABEL_IRRELEVANT)) => Some(false),
                    (_, _, Some(other)) => {
                        return Err(Error::Data(format!(
                            "{}: candidate {:?} of query {:?} has unknown label {other:?}",
                            path.display(),
                            c.doc_id,
                            row.query_id
                        )))
                    }
                };
                let text = lookup(&c.doc_id, &row.query_id)?;
                if let (Some(_), Some(p)) = (relevant, c.p_relevant) {
                    let t = data.intern(text);
                    let scored = data.teacher.entry(query).or_default();
                    if !scored.iter().any(|&(d, _)| d == t) {
                        scored.push((t, p));
                    }
                }
                match relevant {
                    None => stats.unjudged += 1,
                    Some(true) => {
                        stats.judged_relevant += 1;
                        let t = data.intern(text);
                        judged.push(t);
                        if opts.judged_as_negatives {
                            negatives.push(t);
                        }
                    }
                    Some(false) => {
                        stats.judged_irrelevant += 1;
                        negatives.push(data.intern(text));
                    }
                }
            }
            negatives.truncate(opts.num_negatives);
            for &positive in &positives {
                data.examples.push(Example {
                    query,
                    positive,
                    negatives: negatives.clone(),
                    known: others(&positives, positive),
                    judged: judged.clone(),
                });
            }
        }
        if data.examples.is_empty() {
            return Err(Error::Data(format!(
                "{}: no query has a positive",
                path.display()
            )));
        }
        Ok((data, stats))
    }
}

fn is_mined(path: &Path) -> Result<bool> {
    let reader = sieve_datasets::parquet_io::BatchReader::open(path)?;
    Ok(reader.schema().field_with_name("candidates").is_ok())
}

fn others(all: &[TextId], me: TextId) -> Vec<TextId> {
    let mut v: Vec<TextId> = all.iter().copied().filter(|&t| t != me).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn warn_report(path: &Path, report: &ValidationReport) {
    if !report.is_clean() {
        tracing::warn!("{}: {report}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn repeated_questions_know_each_others_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        for (q, p) in [("what is x", "a1"), ("what is y", "b"), ("what is x", "a2")] {
            writeln!(f, "{}", serde_json::json!({"query": q, "positive": p})).unwrap();
        }
        drop(f);
        let data = TrainData::from_pairs(&path, &DataOptions::default()).unwrap();
        assert_eq!(data.examples.len(), 3);
        let e0 = &data.examples[0];
        let e2 = &data.examples[2];
        assert_eq!(e0.query, e2.query);
        assert_eq!(e0.known, vec![e2.positive]);
        assert_eq!(e2.known, vec![e0.positive]);
        assert!(data.examples[1].known.is_empty());
        assert_eq!(data.text(e2.positive), "a2");
    }

    #[test]
    fn graded_qrels_split_positives_from_known_and_read_judged_qrels() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("qrels")).unwrap();
        let mut corpus = String::new();
        for (id, text) in [
            ("d1", "kept"),
            ("d2", "hidden"),
            ("d3", "other"),
            ("d4", "judged"),
        ] {
            corpus.push_str(&serde_json::json!({"_id": id, "title": "", "text": text}).to_string());
            corpus.push('\n');
        }
        std::fs::write(root.join("corpus.jsonl"), corpus).unwrap();
        std::fs::write(
            root.join("queries.jsonl"),
            "{\"_id\": \"q1\", \"text\": \"the query\"}\n{\"_id\": \"q2\", \"text\": \"another\"}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("qrels/train.tsv"),
            "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t2\n",
        )
        .unwrap();
        let judged = root.join("judged.tsv");
        std::fs::write(
            &judged,
            "query-id\tcorpus-id\tscore\nq1\td4\t1\nq1\td1\t1\n",
        )
        .unwrap();
        let opts = DataOptions {
            min_positive_score: 2,
            judged_qrels: Some(judged.clone()),
            ..Default::default()
        };
        let d = TrainData::from_beir(root, &opts).unwrap();
        assert_eq!(d.examples.len(), 2, "score-1 pairs are not trained on");
        let e = &d.examples[0];
        assert_eq!(d.text(e.positive), "kept");
        let names = |v: &[TextId]| v.iter().map(|&t| d.text(t).to_string()).collect::<Vec<_>>();
        assert_eq!(names(&e.known), vec!["hidden"]);
        assert_eq!(
            names(&e.judged),
            vec!["judged"],
            "the positive itself is not a false negative"
        );
        assert!(d.examples[1].known.is_empty() && d.examples[1].judged.is_empty());
        assert_eq!(d.corpus.len(), 4);
        // The default trains on every relevant pair.
        let all = TrainData::from_beir(root, &DataOptions::default()).unwrap();
        assert_eq!(all.examples.len(), 3);
        // A judged pair naming an unknown document is an error that names the file.
        std::fs::write(&judged, "query-id\tcorpus-id\tscore\nq1\tnope\t1\n").unwrap();
        let err = TrainData::from_beir(root, &opts).unwrap_err().to_string();
        assert!(err.contains("judged.tsv") && err.contains("nope"), "{err}");
    }

    #[test]
    fn labeled_parquet_gives_negatives_and_false_negatives() {
        use sieve_datasets::mined::{write_mined, Candidate, MinedRow};
        let dir = tempfile::tempdir().unwrap();
        let mut corpus = String::new();
        for (id, text) in [
            ("d1", "pos"),
            ("d2", "fn"),
            ("d3", "neg a"),
            ("d4", "neg b"),
            ("d5", "err"),
            ("d6", "sus"),
        ] {
            corpus.push_str(&serde_json::json!({"_id": id, "title": "", "text": text}).to_string());
            corpus.push('\n');
        }
        std::fs::write(dir.path().join("corpus.jsonl"), corpus).unwrap();
        let cand = |id: &str, rank: u32, label: Option<&str>, p: Option<f32>| Candidate {
            doc_id: id.into(),
            rank,
            bm25: 1.0,
            dense: 0.5,
            source: "both".into(),
            bm25_rank: Some(rank),
            dense_rank: None,
            label: label.map(Into::into),
            p_relevant: p,
        };
        let row = MinedRow {
            query_id: "q1".into(),
            query: "the query".into(),
            positives: vec!["d1".into()],
            candidates: vec![
                cand("d4", 3, Some("irrelevant"), Some(0.1)),
                cand("d2", 1, Some("relevant"), Some(0.9)),
                cand("d3", 2, Some("irrelevant"), Some(0.4)),
                cand("d5", 4, Some("error"), None),
                // Flagged by the instruction check: never acted on, even re-thresholded.
                cand("d6", 5, Some("suspicious"), Some(0.95)),
            ],
            ..Default::default()
        };
        let path = dir.path().join("labeled.parquet");
        let meta = [("sieve.corpus".to_string(), "corpus.jsonl".to_string())].into();
        write_mined(&path, &[row], &meta).unwrap();
        let opts = DataOptions {
            num_negatives: 5,
            ..Default::default()
        };
        let (data, stats) = TrainData::load(&path, &opts).unwrap();
        assert_eq!(
            stats,
            LoadStats {
                judged_relevant: 1,
                judged_irrelevant: 2,
                unjudged: 2
            }
        );
        let e = &data.examples[0];
        assert_eq!(data.text(e.positive), "pos");
        let negs: Vec<&str> = e.negatives.iter().map(|&t| data.text(t)).collect();
        assert_eq!(
            negs,
            vec!["neg a", "neg b"],
            "best rank first; errors and suspicious pairs are not negatives"
        );
        let judged: Vec<&str> = e.judged.iter().map(|&t| data.text(t)).collect();
        assert_eq!(judged, vec!["fn"]);
        // The teacher scores: every judged candidate's P(relevant), no error or
        // suspicious one.
        assert_eq!(data.teacher.len(), 1);
        let teacher: Vec<(&str, f32)> = data.teacher[&e.query]
            .iter()
            .map(|&(d, p)| (data.text(d), p))
            .collect();
        assert_eq!(
            teacher,
            vec![("fn", 0.9), ("neg a", 0.4), ("neg b", 0.1)],
            "rank order"
        );
        // Re-thresholding on p_relevant turns the 0.4 candidate into a false negative.
        let opts = DataOptions {
            num_negatives: 5,
            judge_threshold: Some(0.35),
            ..Default::default()
        };
        let (data, _) = TrainData::load(&path, &opts).unwrap();
        assert_eq!(data.examples[0].judged.len(), 2);
        assert_eq!(data.examples[0].negatives.len(), 1);
        // Unfiltered: the judge's positives stay hard negatives, in rank order.
        let opts = DataOptions {
            num_negatives: 5,
            judged_as_negatives: true,
            ..Default::default()
        };
        let (data, _) = TrainData::load(&path, &opts).unwrap();
        let negs: Vec<&str> = data.examples[0]
            .negatives
            .iter()
            .map(|&t| data.text(t))
            .collect();
        assert_eq!(negs, vec!["fn", "neg a", "neg b"]);
        assert_eq!(data.examples[0].judged.len(), 1);
    }
}
