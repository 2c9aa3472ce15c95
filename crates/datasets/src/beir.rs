//! BEIR directories: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lines::{parse_object, take_id, take_opt_string, Line, LineReader};
use crate::{Error, Issue, LoadOptions, ValidationReport};

/// One corpus entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub text: String,
}

impl Document {
    /// MTEB/BEIR text used for embedding & BM25: `(title + " " + text).trim()`
    /// when the title is non-empty, else `text.trim()`.
    ///
    /// Both BM25 and dense baselines published by MTEB are computed on exactly
    /// this string; using anything else makes scores incomparable.
    pub fn full_text(&self) -> String {
        if self.title.is_empty() {
            self.text.trim().to_owned()
        } else {
            let mut s = String::with_capacity(self.title.len() + 1 + self.text.len());
            s.push_str(&self.title);
            s.push(' ');
            s.push_str(&self.text);
            s.trim().to_owned()
        }
    }
}

/// One query.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Query {
    pub id: String,
    pub text: String,
}

/// query-id -> corpus-id -> graded relevance
pub type Qrels = BTreeMap<String, BTreeMap<String, i32>>;

/// One judged (query, document) row of a qrels file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qrel {
    pub query_id: String,
    pub corpus_id: String,
    pub score: i32,
}

/// Everything in a BEIR directory that one evaluation split needs.
#[derive(Debug, Clone, Default)]
pub struct BeirDataset {
    pub corpus: Vec<Document>,
    pub queries: Vec<Query>,
    pub qrels: Qrels,
    pub report: ValidationReport,
}

/// Streams `corpus.jsonl[.gz]` records without de-duplicating or counting;
/// [`read_corpus`] adds both. Stops after the first error.
pub struct CorpusReader {
    lines: LineReader,
    done: bool,
}

impl CorpusReader {
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(CorpusReader {
            lines: LineReader::open(path)?,
            done: false,
        })
    }

    /// 1-based line of the record last returned.
    pub fn line(&self) -> usize {
        self.lines.line()
    }

    pub fn path(&self) -> &Path {
        self.lines.path()
    }

    fn next_record(&mut self) -> Result<Option<Document>, Error> {
        loop {
            let Some(Line {
                text,
                number: line,
                path,
            }) = self.lines.next_line()?
            else {
                return Ok(None);
            };
            if text.trim().is_empty() {
                continue;
            }
            let mut map = parse_object(path, line, text)?;
            let id = take_id(&mut map, "_id", path, line)?;
            let title = take_opt_string(&mut map, "title", path, line)?.unwrap_or_default();
            let text = take_opt_string(&mut map, "text", path, line)?.unwrap_or_default();
            return Ok(Some(Document { id, title, text }));
        }
    }
}

impl Iterator for CorpusReader {
    type Item = Result<Document, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}

/// Streams `queries.jsonl[.gz]` records without de-duplicating or counting;
/// [`read_queries`] adds both. Stops after the first error.
pub struct QueryReader {
    lines: LineReader,
    done: bool,
}

impl QueryReader {
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(QueryReader {
            lines: LineReader::open(path)?,
            done: false,
        })
    }

    /// 1-based line of the record last returned.
    pub fn line(&self) -> usize {
        self.lines.line()
    }

    pub fn path(&self) -> &Path {
        self.lines.path()
    }

    fn next_record(&mut self) -> Result<Option<Query>, Error> {
        loop {
            let Some(Line {
                text,
                number: line,
                path,
            }) = self.lines.next_line()?
            else {
                return Ok(None);
            };
            if text.trim().is_empty() {
                continue;
            }
            let mut map = parse_object(path, line, text)?;
            let id = take_id(&mut map, "_id", path, line)?;
            let text = take_opt_string(&mut map, "text", path, line)?.unwrap_or_default();
            return Ok(Some(Query { id, text }));
        }
    }
}

impl Iterator for QueryReader {
    type Item = Result<Query, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}

/// Streams a qrels file: BEIR TSV (`query-id\tcorpus-id\tscore`, header
/// optional and allowed to use other names) or the TREC form
/// `qid iteration docid rel` separated by tabs or spaces. Stops after the
/// first error.
pub struct QrelsReader {
    lines: LineReader,
    seen_row: bool,
    done: bool,
}

impl QrelsReader {
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(QrelsReader {
            lines: LineReader::open(path)?,
            seen_row: false,
            done: false,
        })
    }

    /// 1-based line of the row last returned.
    pub fn line(&self) -> usize {
        self.lines.line()
    }

    pub fn path(&self) -> &Path {
        self.lines.path()
    }

    fn next_record(&mut self) -> Result<Option<Qrel>, Error> {
        loop {
            let Some(Line {
                text,
                number: line,
                path,
            }) = self.lines.next_line()?
            else {
                return Ok(None);
            };
            if text.trim().is_empty() {
                continue;
            }
            let mut fields = [""; 4];
            // Tabs are the BEIR separator; a line without any tab is split on
            // whitespace, which is how TREC qrels are usually written.
            let count = if text.contains('\t') {
                split_fields(text.split('\t'), &mut fields)
            } else {
                split_fields(text.split_ascii_whitespace(), &mut fields)
            };
            let (qid, did, score) = match count {
                3 => (fields[0], fields[1], fields[2]),
                4 => (fields[0], fields[2], fields[3]),
                found => {
                    return Err(Error::Columns {
                        path: path.to_path_buf(),
                        line,
                        expected: "3 (query-id, corpus-id, score) or 4 (TREC: query-id, iteration, corpus-id, score)".into(),
                        found,
                    })
                }
            };
            let first = !self.seen_row;
            self.seen_row = true;
            // A header is recognised by content, not position alone, so a
            // headerless file does not silently lose its first judgement, and
            // by "not even a number" so that a first row scored `1.5` is still
            // reported as a bad score.
            if first && score.parse::<f64>().is_err() {
                continue;
            }
            let score = score.parse::<i32>().map_err(|_| {
                Error::field(path, line, "score", format!("{score:?} is not an integer"))
            })?;
            if qid.is_empty() {
                return Err(Error::field(path, line, "query-id", "empty"));
            }
            if did.is_empty() {
                return Err(Error::field(path, line, "corpus-id", "empty"));
            }
            return Ok(Some(Qrel {
                query_id: qid.to_owned(),
                corpus_id: did.to_owned(),
                score,
            }));
        }
    }
}

/// Stores up to `fields.len()` trimmed parts and returns how many there were.
fn split_fields<'a>(parts: impl Iterator<Item = &'a str>, fields: &mut [&'a str]) -> usize {
    let mut count = 0;
    for part in parts {
        if let Some(slot) = fields.get_mut(count) {
            *slot = part.trim();
        }
        count += 1;
    }
    count
}

impl Iterator for QrelsReader {
    type Item = Result<Qrel, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}

/// Reads a whole corpus, keeping the first of duplicate ids and counting
/// duplicates and empty texts (missing `text` counts as empty) in `report`.
/// SHA-256 over the documents (id, title, text) in order: the miner writes it into
/// the mined file (`sieve.corpus_hash`) and the judge checks the corpus it reads
/// against it, so an edited corpus is never judged as the one mined.
pub fn corpus_hash(docs: &[Document]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for d in docs {
        for part in [&d.id, &d.title, &d.text] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    format!("{:x}", h.finalize())
}

pub fn read_corpus(path: &Path, report: &mut ValidationReport) -> Result<Vec<Document>, Error> {
    let mut reader = CorpusReader::open(path)?;
    let mut seen = HashSet::new();
    let mut docs = Vec::new();
    while let Some(doc) = reader.next() {
        let doc = doc?;
        let line = reader.line();
        if !seen.insert(doc.id.clone()) {
            report.record(Issue::DuplicateDocId, &doc.id, path, line);
            continue;
        }
        if doc.text.trim().is_empty() {
            report.record(Issue::EmptyDoc, &doc.id, path, line);
        }
        docs.push(doc);
    }
    Ok(docs)
}

/// Queries with their line numbers, first occurrence of each id only, plus the
/// later duplicates; counting is left to the caller so [`load_beir`] can count
/// only the queries its split uses.
struct ScannedQueries {
    queries: Vec<(Query, usize)>,
    duplicates: Vec<(String, usize)>,
}

fn scan_queries(path: &Path) -> Result<ScannedQueries, Error> {
    let mut reader = QueryReader::open(path)?;
    let mut seen = HashSet::new();
    let mut scanned = ScannedQueries {
        queries: Vec::new(),
        duplicates: Vec::new(),
    };
    while let Some(query) = reader.next() {
        let query = query?;
        let line = reader.line();
        if seen.insert(query.id.clone()) {
            scanned.queries.push((query, line));
        } else {
            scanned.duplicates.push((query.id, line));
        }
    }
    Ok(scanned)
}

/// Reads all queries, keeping the first of duplicate ids and counting
/// duplicates and empty texts in `report`.
pub fn read_queries(path: &Path, report: &mut ValidationReport) -> Result<Vec<Query>, Error> {
    let scanned = scan_queries(path)?;
    for (id, line) in &scanned.duplicates {
        report.record(Issue::DuplicateQueryId, id, path, *line);
    }
    Ok(scanned
        .queries
        .into_iter()
        .map(|(query, line)| {
            if query.text.trim().is_empty() {
                report.record(Issue::EmptyQuery, &query.id, path, line);
            }
            query
        })
        .collect())
}

/// Qrels plus what [`load_beir`] needs beyond the map: the order in which
/// query ids first appear and the line of each distinct pair.
struct ScannedQrels {
    qrels: Qrels,
    query_order: Vec<String>,
    pairs: Vec<(String, String, usize)>,
}

fn scan_qrels(path: &Path, report: &mut ValidationReport) -> Result<ScannedQrels, Error> {
    let mut reader = QrelsReader::open(path)?;
    let mut scanned = ScannedQrels {
        qrels: Qrels::new(),
        query_order: Vec::new(),
        pairs: Vec::new(),
    };
    while let Some(qrel) = reader.next() {
        let Qrel {
            query_id,
            corpus_id,
            score,
        } = qrel?;
        let line = reader.line();
        let docs = match scanned.qrels.get_mut(&query_id) {
            Some(docs) => docs,
            None => {
                scanned.query_order.push(query_id.clone());
                scanned.qrels.entry(query_id.clone()).or_default()
            }
        };
        // Last score wins, as in BEIR's GenericDataLoader and MTEB, so that
        // metrics match theirs even on files with conflicting rows.
        if docs.insert(corpus_id.clone(), score).is_some() {
            report.record(
                Issue::DuplicateQrel,
                &format!("{query_id}\t{corpus_id}"),
                path,
                line,
            );
        } else {
            scanned.pairs.push((query_id, corpus_id, line));
        }
    }
    Ok(scanned)
}

/// Reads a qrels file; a repeated (query-id, corpus-id) pair is counted and
/// its last score kept.
pub fn read_qrels(path: &Path, report: &mut ValidationReport) -> Result<Qrels, Error> {
    Ok(scan_qrels(path, report)?.qrels)
}

/// `dir/name.jsonl`, or `dir/name.jsonl.gz` when only that exists.
fn find_jsonl(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let plain = dir.join(format!("{name}.jsonl"));
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.jsonl.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::io(
        plain,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("not found (nor {name}.jsonl.gz)"),
        ),
    ))
}

fn find_qrels(dir: &Path, split: &str) -> Result<PathBuf, Error> {
    let plain = dir.join("qrels").join(format!("{split}.tsv"));
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join("qrels").join(format!("{split}.tsv.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::io(
        plain,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("not found (nor {split}.tsv.gz): is {split:?} a split of this dataset?"),
        ),
    ))
}

/// Loads `dir/corpus.jsonl[.gz]`, `dir/queries.jsonl[.gz]`,
/// `dir/qrels/<split>.tsv`; keeps only the queries that appear in the split's
/// qrels (as BEIR's GenericDataLoader does), in qrels order of first
/// appearance.
///
/// Query problems (duplicates, empty texts) are counted only for queries the
/// split uses, so a bad training query cannot fail a strict test-split load.
///
/// Qrels rows naming an unknown query or document are counted but kept in
/// `qrels`: such a document is still relevant, it just can never be
/// retrieved, and dropping it would inflate recall and nDCG. A query missing
/// from `queries.jsonl` cannot be run, so it appears in `qrels` only.
pub fn load_beir(dir: &Path, split: &str, opts: LoadOptions) -> Result<BeirDataset, Error> {
    let corpus_path = find_jsonl(dir, "corpus")?;
    let queries_path = find_jsonl(dir, "queries")?;
    let qrels_path = find_qrels(dir, split)?;

    let mut report = ValidationReport::default();
    let corpus = read_corpus(&corpus_path, &mut report)?;
    let scanned_queries = scan_queries(&queries_path)?;
    let scanned_qrels = scan_qrels(&qrels_path, &mut report)?;
    let in_split = |id: &str| scanned_qrels.qrels.contains_key(id);

    for (id, line) in &scanned_queries.duplicates {
        if in_split(id) {
            report.record(Issue::DuplicateQueryId, id, &queries_path, *line);
        }
    }
    let mut by_id: HashMap<String, (Query, usize)> = scanned_queries
        .queries
        .into_iter()
        .filter(|(q, _)| in_split(&q.id))
        .map(|(q, line)| (q.id.clone(), (q, line)))
        .collect();

    let doc_ids: HashSet<&str> = corpus.iter().map(|d| d.id.as_str()).collect();
    for (qid, did, line) in &scanned_qrels.pairs {
        if !by_id.contains_key(qid) {
            report.record(Issue::QrelsUnknownQuery, qid, &qrels_path, *line);
        }
        if !doc_ids.contains(did.as_str()) {
            report.record(Issue::QrelsUnknownDoc, did, &qrels_path, *line);
        }
    }

    let mut queries = Vec::with_capacity(scanned_qrels.query_order.len());
    for qid in &scanned_qrels.query_order {
        if let Some((query, line)) = by_id.remove(qid) {
            if query.text.trim().is_empty() {
                report.record(Issue::EmptyQuery, &query.id, &queries_path, line);
            }
            queries.push(query);
        }
    }

    let report = report.enforce(opts)?;
    Ok(BeirDataset {
        corpus,
        queries,
        qrels: scanned_qrels.qrels,
        report,
    })
}
