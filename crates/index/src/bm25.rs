//! BM25 over a tantivy inverted index.
//!
//! tantivy is used for what it is good at (analysis, a compact multithreaded
//! inverted index, persistence); the scoring loop is ours because tantivy 0.27
//! hard-codes BM25's `k1 = 1.2`, while the reference we must match (bm25s,
//! as used in MTEB/BEIR baselines) uses `k1 = 1.5`, exact document lengths
//! (tantivy's field norms are quantised to one byte) and Lucene's idf.
//!
//! Score of document `d` for query terms `t` (a term repeated in the query
//! counts once per repetition, as in bm25s and a Lucene `BooleanQuery`):
//!
//! ```text
//! idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
//! s(d)     = Σ_t idf(t) · tf(t,d) / (tf(t,d) + k1 · (1 - b + b · |d| / avgdl))
//! ```
//!
//! Scoring is exhaustive term-at-a-time over the posting lists of the query's
//! terms, so its cost is the total length of those lists; only documents that
//! contain at least one query term are returned.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use sieve_datasets::Document;
use tantivy::index::InvertedIndexReader;
use tantivy::postings::Postings;
use tantivy::schema::{
    Field, FieldType, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::Language;
use tantivy::tokenizer::{
    LowerCaser, PreTokenizedString, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter,
    TextAnalyzer, Token,
};
use tantivy::{DocSet, Index, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::topk::TopK;
use crate::{Error, Hit, Retriever};

/// Name under which the analyser is registered with the index; it is part of
/// the persisted schema, so changing it breaks reopening old indexes.
const ANALYZER_NAME: &str = "sieve_en";
/// Analysed text of `title + " " + text`.
const FIELD_TEXT: &str = "text";
/// Position of the document in the corpus slice given to `build` (fast field),
/// because tantivy's doc ids are reordered by multithreaded indexing and merges.
const FIELD_POS: &str = "pos";
/// Exact number of indexed tokens (fast field); tantivy's field norms round
/// lengths above ~40 tokens, which would shift BM25 scores off the reference.
const FIELD_LEN: &str = "len";

/// English stop words removed at index and query time: Lucene's English list,
/// which is also bm25s's `"en"` list, the reference this index is matched to.
pub const ENGLISH_STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// Tokens shorter than this many characters are dropped, as bm25s's (and
/// scikit-learn's) default token pattern `\b\w\w+\b` does; single letters and
/// digits are noise for BM25.
const MIN_TOKEN_CHARS: usize = 2;

/// Tokens of this many bytes or more are dropped (base64 blobs, URLs glued
/// together); far above any real word, and far below tantivy's hard limit.
const MAX_TOKEN_BYTES: usize = 255;

/// Upper bound on tantivy indexing threads (tantivy's own maximum).
const MAX_WRITER_THREADS: usize = 8;

/// Indexing memory per writer thread. tantivy flushes a segment when a
/// thread's arena fills, so this bounds memory at `threads × budget` (≤ 1 GiB)
/// while keeping segments large enough that few merges are needed.
const WRITER_MEMORY_PER_THREAD: usize = 128 << 20;

/// Documents analysed in parallel before being handed to the writer; bounds
/// the memory held by pre-tokenised documents in flight.
const ANALYSIS_BATCH: usize = 8192;

/// BM25 free parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bm25Params {
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalisation strength (0 = none, 1 = full).
    pub b: f32,
}

/// bm25s's defaults, the reference implementation MTEB-style BM25 baselines use.
pub const DEFAULT_BM25_PARAMS: Bm25Params = Bm25Params { k1: 1.5, b: 0.75 };

impl Default for Bm25Params {
    fn default() -> Self {
        DEFAULT_BM25_PARAMS
    }
}

/// The English analyser: split on non-alphanumerics, drop over-long tokens,
/// lower-case, remove stop words, Snowball (Porter2) English stemmer. Tokens
/// shorter than [`MIN_TOKEN_CHARS`] are removed by [`analyze`].
fn english_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            ENGLISH_STOP_WORDS.iter().map(|w| (*w).to_owned()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Runs the analyser and drops tokens whose source text is shorter than
/// [`MIN_TOKEN_CHARS`] characters; positions are renumbered densely.
fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let token = stream.token();
        let source = text.get(token.offset_from..token.offset_to).unwrap_or("");
        if source.chars().nth(MIN_TOKEN_CHARS - 1).is_none() {
            continue;
        }
        let mut token = token.clone();
        token.position = tokens.len();
        tokens.push(token);
    }
    tokens
}

/// Per-segment data needed by the scoring loop, loaded once at open.
struct SegmentData {
    postings: std::sync::Arc<InvertedIndexReader>,
    /// tantivy doc id -> corpus position.
    positions: Vec<u32>,
    /// tantivy doc id -> `k1 · (1 - b + b · |d| / avgdl)`.
    norms: Vec<f32>,
    /// Exact token counts, kept to recompute `norms` when params change.
    lengths: Vec<u32>,
}

/// A BM25 index over a corpus (see the module docs for the exact formula).
pub struct Bm25Index {
    /// Held so that a RAM directory outlives the searcher's segment readers.
    _index: Index,
    searcher: Searcher,
    text: Field,
    segments: Vec<SegmentData>,
    /// Corpus position -> (segment, tantivy doc id), to score given documents.
    locate: Vec<(u32, u32)>,
    num_docs: usize,
    avg_len: f32,
    params: Bm25Params,
}

impl std::fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Index")
            .field("num_docs", &self.num_docs)
            .field("segments", &self.segments.len())
            .field("avg_len", &self.avg_len)
            .field("params", &self.params)
            .finish()
    }
}

fn schema() -> (Schema, Field) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER_NAME)
        .set_index_option(IndexRecordOption::WithFreqs)
        // Exact lengths live in FIELD_LEN; quantised norms would be dead weight.
        .set_fieldnorms(false);
    let text = builder.add_text_field(
        FIELD_TEXT,
        TextOptions::default().set_indexing_options(indexing),
    );
    builder.add_u64_field(FIELD_POS, NumericOptions::default().set_fast());
    builder.add_u64_field(FIELD_LEN, NumericOptions::default().set_fast());
    (builder.build(), text)
}

impl Bm25Index {
    /// Indexes `title + " " + text` of every document, in RAM (`dir = None`)
    /// or persisted in `dir` (created if missing; it must not already hold an
    /// index) so that [`Bm25Index::open`] can reuse it without re-indexing.
    /// Hits refer to positions in `docs`.
    pub fn build(docs: &[Document], dir: Option<&Path>) -> Result<Self, Error> {
        Self::build_with(docs.len(), |i| docs[i].full_text(), dir)
    }

    /// Like [`Bm25Index::build`] for plain texts (one per document).
    pub fn build_from_texts<S: AsRef<str> + Sync>(
        texts: &[S],
        dir: Option<&Path>,
    ) -> Result<Self, Error> {
        Self::build_with(texts.len(), |i| texts[i].as_ref().to_owned(), dir)
    }

    /// Shared builder: `text(i)` yields the text of document `i < n`.
    fn build_with(
        n: usize,
        text: impl Fn(usize) -> String + Sync,
        dir: Option<&Path>,
    ) -> Result<Self, Error> {
        if u32::try_from(n).is_err() {
            return Err(Error::TooManyDocuments(n));
        }
        let (schema, text_field) = schema();
        let index = match dir {
            None => Index::create_in_ram(schema.clone()),
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
                Index::create_in_dir(dir, schema.clone())?
            }
        };
        index
            .tokenizers()
            .register(ANALYZER_NAME, english_analyzer());
        let pos_field = schema.get_field(FIELD_POS)?;
        let len_field = schema.get_field(FIELD_LEN)?;

        let threads = std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .min(MAX_WRITER_THREADS);
        let mut writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(threads, threads * WRITER_MEMORY_PER_THREAD)?;

        let mut start = 0;
        while start < n {
            let end = (start + ANALYSIS_BATCH).min(n);
            let batch: Vec<TantivyDocument> = (start..end)
                .into_par_iter()
                .map_init(english_analyzer, |analyzer, i| {
                    let tokens = analyze(analyzer, &text(i));
                    let mut doc = TantivyDocument::new();
                    doc.add_u64(pos_field, i as u64);
                    doc.add_u64(len_field, tokens.len() as u64);
                    doc.add_pre_tokenized_text(
                        text_field,
                        PreTokenizedString {
                            text: String::new(),
                            tokens,
                        },
                    );
                    doc
                })
                .collect();
            for doc in batch {
                writer.add_document(doc)?;
            }
            start = end;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        Self::from_index(index)
    }

    /// Opens an index persisted by [`Bm25Index::build`].
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let index = Index::open_in_dir(dir)?;
        index
            .tokenizers()
            .register(ANALYZER_NAME, english_analyzer());
        Self::from_index(index)
    }

    fn from_index(index: Index) -> Result<Self, Error> {
        let schema = index.schema();
        let text = schema.get_field(FIELD_TEXT)?;
        check_schema(&schema)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();

        let num_docs = usize::try_from(searcher.num_docs())
            .map_err(|_| Error::Corrupt("document count exceeds usize".to_owned()))?;
        let mut segments = Vec::with_capacity(searcher.segment_readers().len());
        let mut total_len: u64 = 0;
        for segment in searcher.segment_readers() {
            let fast = segment.fast_fields();
            let pos_col = fast.u64(FIELD_POS)?;
            let len_col = fast.u64(FIELD_LEN)?;
            let max_doc = segment.max_doc();
            let mut positions = Vec::with_capacity(max_doc as usize);
            let mut lengths = Vec::with_capacity(max_doc as usize);
            for doc in 0..max_doc {
                let pos = pos_col
                    .first(doc)
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|&p| (p as usize) < num_docs)
                    .ok_or_else(|| {
                        Error::Corrupt(format!("document {doc} has no valid corpus position"))
                    })?;
                let len = len_col
                    .first(doc)
                    .and_then(|l| u32::try_from(l).ok())
                    .ok_or_else(|| Error::Corrupt(format!("document {doc} has no length")))?;
                total_len += u64::from(len);
                positions.push(pos);
                lengths.push(len);
            }
            segments.push(SegmentData {
                postings: segment.inverted_index(text)?,
                positions,
                norms: Vec::new(),
                lengths,
            });
        }
        let mut locate = vec![(u32::MAX, 0u32); num_docs];
        for (si, segment) in segments.iter().enumerate() {
            for (doc, &pos) in segment.positions.iter().enumerate() {
                // si < number of segments and doc < max_doc, both far below u32::MAX.
                locate[pos as usize] = (si as u32, doc as u32);
            }
        }
        let avg_len = if num_docs == 0 {
            0.0
        } else {
            (total_len as f64 / num_docs as f64) as f32
        };
        let mut index = Self {
            _index: index,
            searcher,
            text,
            segments,
            locate,
            num_docs,
            avg_len,
            params: DEFAULT_BM25_PARAMS,
        };
        index.recompute_norms();
        Ok(index)
    }

    /// Uses other BM25 parameters; no re-indexing needed, since lengths are
    /// stored exactly and scores are computed at query time.
    pub fn with_params(mut self, params: Bm25Params) -> Self {
        self.params = params;
        self.recompute_norms();
        self
    }

    /// The BM25 parameters in use.
    pub fn params(&self) -> Bm25Params {
        self.params
    }

    fn recompute_norms(&mut self) {
        let Bm25Params { k1, b } = self.params;
        let avg = self.avg_len;
        for segment in &mut self.segments {
            segment.norms = segment
                .lengths
                .iter()
                .map(|&len| {
                    // All-empty corpus: no postings exist, any finite value will do.
                    let rel = if avg > 0.0 { len as f32 / avg } else { 0.0 };
                    k1 * (1.0 - b + b * rel)
                })
                .collect();
        }
    }

    /// Number of indexed documents.
    pub fn len(&self) -> usize {
        self.num_docs
    }

    /// Whether the corpus is empty.
    pub fn is_empty(&self) -> bool {
        self.num_docs == 0
    }

    /// The analysed terms of `text`, as they are indexed and searched.
    pub fn analyze(text: &str) -> Vec<String> {
        analyze(&mut english_analyzer(), text)
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    /// Scores one query. `scratch` is a per-thread accumulator reused across
    /// queries so that no O(corpus) buffer is allocated per query.
    /// Also returns the scores of the `extra` corpus positions (0 for a document that
    /// shares no term with the query), read from the same accumulators.
    fn search_one(
        &self,
        analyzer: &mut TextAnalyzer,
        scratch: &mut Scratch,
        query: &str,
        k: usize,
        extra: &[u32],
    ) -> Result<(Vec<Hit>, Vec<f32>), Error> {
        let mut terms: BTreeMap<String, u32> = BTreeMap::new();
        for token in analyze(analyzer, query) {
            *terms.entry(token.text).or_default() += 1;
        }
        let mut extra_scores = vec![0f32; extra.len()];
        if terms.is_empty() || self.num_docs == 0 || (k == 0 && extra.is_empty()) {
            return Ok((Vec::new(), extra_scores));
        }
        let n = self.num_docs as f64;
        let mut weighted: Vec<(Term, f32)> = Vec::with_capacity(terms.len());
        for (text, count) in terms {
            let term = Term::from_field_text(self.text, &text);
            let df = self.searcher.doc_freq(&term)?;
            if df == 0 {
                continue;
            }
            // In f64 with ln_1p: for a term in (nearly) every document of a
            // large corpus, `1 + x` would round to 1 in f32 and the idf to 0.
            let df = df as f64;
            let idf = ((n - df + 0.5) / (df + 0.5)).ln_1p();
            weighted.push((term, (idf * f64::from(count)) as f32));
        }

        let mut top = TopK::new(k);
        for (si, segment) in self.segments.iter().enumerate() {
            scratch.reset(segment.positions.len());
            for (term, weight) in &weighted {
                let Some(mut postings) = segment
                    .postings
                    .read_postings(term, IndexRecordOption::WithFreqs)?
                else {
                    continue;
                };
                let mut doc = postings.doc();
                while doc != tantivy::TERMINATED {
                    let d = doc as usize;
                    let tf = postings.term_freq() as f32;
                    let norm = segment.norms.get(d).copied().unwrap_or(0.0);
                    scratch.add(d, weight * tf / (tf + norm));
                    doc = postings.advance();
                }
            }
            for &d in &scratch.touched {
                if let Some(&pos) = segment.positions.get(d as usize) {
                    top.push(pos, scratch.acc[d as usize]);
                }
            }
            for (score, &pos) in extra_scores.iter_mut().zip(extra) {
                if let Some(&(seg, doc)) = self.locate.get(pos as usize) {
                    if seg as usize == si {
                        let v = scratch.acc.get(doc as usize).copied().unwrap_or(UNSEEN);
                        if v != UNSEEN {
                            *score = v;
                        }
                    }
                }
            }
        }
        Ok((top.into_sorted(), extra_scores))
    }

    /// Top-`k` hits of each query and, from the same pass, the BM25 scores of the
    /// documents in `extra[i]` for query `i` (a missing `extra` entry means none):
    /// the miner reports a BM25 score for candidates only the dense side found.
    pub fn search_with_scores(
        &self,
        queries: &[&str],
        k: usize,
        extra: &[Vec<u32>],
    ) -> Result<Vec<ScoredHits>, Error> {
        queries
            .par_iter()
            .enumerate()
            .map_init(
                || (english_analyzer(), Scratch::default()),
                |(analyzer, scratch), (i, query)| {
                    let ex = extra.get(i).map(Vec::as_slice).unwrap_or(&[]);
                    self.search_one(analyzer, scratch, query, k, ex)
                },
            )
            .collect()
    }
}

/// A query's top hits and the scores of the extra documents asked for.
pub type ScoredHits = (Vec<Hit>, Vec<f32>);

/// Sparse-reset score accumulator for one segment.
#[derive(Default)]
struct Scratch {
    acc: Vec<f32>,
    touched: Vec<u32>,
}

/// Marks an accumulator slot that no posting has reached for this query, so
/// that "touched" does not depend on contributions being non-zero.
const UNSEEN: f32 = f32::NEG_INFINITY;

impl Scratch {
    /// Clears the previous segment's scores in O(touched) and sizes for `max_doc`.
    fn reset(&mut self, max_doc: usize) {
        for &d in &self.touched {
            self.acc[d as usize] = UNSEEN;
        }
        self.touched.clear();
        if self.acc.len() < max_doc {
            self.acc.resize(max_doc, UNSEEN);
        }
    }

    #[inline]
    fn add(&mut self, doc: usize, score: f32) {
        if let Some(slot) = self.acc.get_mut(doc) {
            if *slot == UNSEEN {
                // doc < max_doc <= u32::MAX
                self.touched.push(doc as u32);
                *slot = score;
            } else {
                *slot += score;
            }
        }
    }
}

/// Rejects indexes not written by [`Bm25Index::build`].
fn check_schema(schema: &Schema) -> Result<(), Error> {
    let entry = |name: &str| -> Result<&FieldType, Error> {
        let field = schema.get_field(name)?;
        Ok(schema.get_field_entry(field).field_type())
    };
    match entry(FIELD_TEXT)? {
        FieldType::Str(options)
            if options
                .get_indexing_options()
                .is_some_and(|i| i.tokenizer() == ANALYZER_NAME) => {}
        _ => {
            return Err(Error::Corrupt(format!(
                "field `{FIELD_TEXT}` is not text analysed by `{ANALYZER_NAME}`"
            )))
        }
    }
    for name in [FIELD_POS, FIELD_LEN] {
        match entry(name)? {
            FieldType::U64(options) if options.is_fast() => {}
            _ => return Err(Error::Corrupt(format!("field `{name}` is not a fast u64"))),
        }
    }
    Ok(())
}

impl Retriever for Bm25Index {
    /// Each query is the OR of its analysed terms (no query syntax, so any
    /// text is a valid query; one without indexable terms gets no hits).
    /// Queries run in parallel.
    fn retrieve(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<Hit>>, Error> {
        queries
            .par_iter()
            .map_init(
                || (english_analyzer(), Scratch::default()),
                |(analyzer, scratch), query| {
                    Ok(self.search_one(analyzer, scratch, query, k, &[])?.0)
                },
            )
            .collect()
    }
}
