//! Training pairs: (query, positive, hard negatives) in JSONL, TSV or Parquet.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, ListBuilder, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lines::{parse_object, type_name, Line, LineReader};
use crate::parquet_io::{Metadata, ParquetWriter};
use crate::{Error, Issue, LoadOptions, ValidationReport};

/// One training example.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pair {
    pub query: String,
    pub positive: String,
    pub negatives: Vec<String>,
}

/// How a pair file is encoded, decided by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairFormat {
    /// `.jsonl`, `.ndjson`, optionally `.gz`.
    Jsonl,
    /// `.tsv`, optionally `.gz`: a header row naming the columns, then one
    /// pair per line. No quoting: values cannot contain tabs or newlines.
    Tsv,
    /// `.parquet`.
    Parquet,
}

impl PairFormat {
    pub fn from_path(path: &Path) -> Result<Self, Error> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let stem = name.strip_suffix(".gz").unwrap_or(&name);
        if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
            Ok(PairFormat::Jsonl)
        } else if stem.ends_with(".tsv") {
            Ok(PairFormat::Tsv)
        } else if name.ends_with(".parquet") {
            Ok(PairFormat::Parquet)
        } else {
            Err(Error::Format {
                path: path.to_path_buf(),
                problem: "unknown pair file type: expected .jsonl[.gz], .tsv[.gz] or .parquet"
                    .into(),
            })
        }
    }
}

/// Which role a column (or JSON key) plays. Negatives are ordered `negative`,
/// `negative_1`, `negative_2`, …, `negatives`, so that numbered columns keep
/// their numeric order (`negative_10` after `negative_9`).
fn negative_rank(name: &str) -> Option<(u8, u64)> {
    match name {
        "negative" => Some((0, 0)),
        "negatives" => Some((2, 0)),
        _ => name
            .strip_prefix("negative_")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| (1, n)),
    }
}

/// The column (or key) names a file uses for each role.
#[derive(Debug, Clone)]
struct Roles {
    query: String,
    positive: String,
    negatives: Vec<String>,
}

impl Roles {
    /// `None` for a missing role names the role, so the caller can say which.
    fn from_names<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Result<Self, &'static str> {
        let has = |wanted: &str| names.clone().any(|n| n == wanted);
        let query = if has("query") {
            "query"
        } else if has("anchor") {
            "anchor"
        } else {
            return Err("query");
        };
        if !has("positive") {
            return Err("positive");
        }
        let mut negatives: Vec<&str> = names.filter(|n| negative_rank(n).is_some()).collect();
        negatives.sort_by_key(|n| negative_rank(n));
        negatives.dedup();
        Ok(Roles {
            query: query.to_owned(),
            positive: "positive".to_owned(),
            negatives: negatives.into_iter().map(str::to_owned).collect(),
        })
    }
}

fn missing_role_problem(role: &str) -> String {
    if role == "query" {
        "missing (nor \"anchor\")".to_owned()
    } else {
        "missing".to_owned()
    }
}

fn required_json_string(
    map: &mut Map<String, Value>,
    key: &str,
    path: &Path,
    line: usize,
) -> Result<String, Error> {
    match map.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None => Err(Error::field(path, line, key, missing_role_problem(key))),
        Some(other) => Err(Error::field(
            path,
            line,
            key,
            format!("expected a string, found {}", type_name(&other)),
        )),
    }
}

/// Appends a negative given as a string, a list of strings, or null (no
/// negative: exporters pad ragged negative columns with nulls).
fn push_json_negatives(
    value: Value,
    key: &str,
    path: &Path,
    line: usize,
    out: &mut Vec<String>,
) -> Result<(), Error> {
    match value {
        Value::Null => Ok(()),
        Value::String(s) => {
            out.push(s);
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s),
                    Value::Null => {}
                    other => {
                        return Err(Error::field(
                            path,
                            line,
                            key,
                            format!(
                                "item {}: expected a string, found {}",
                                i + 1,
                                type_name(&other)
                            ),
                        ))
                    }
                }
            }
            Ok(())
        }
        other => Err(Error::field(
            path,
            line,
            key,
            format!(
                "expected a string or a list of strings, found {}",
                type_name(&other)
            ),
        )),
    }
}

fn pair_from_json(mut map: Map<String, Value>, path: &Path, line: usize) -> Result<Pair, Error> {
    let roles = Roles::from_names(map.keys().map(String::as_str))
        .map_err(|role| Error::field(path, line, role, missing_role_problem(role)))?;
    let query = required_json_string(&mut map, &roles.query, path, line)?;
    let positive = required_json_string(&mut map, &roles.positive, path, line)?;
    let mut negatives = Vec::new();
    for key in &roles.negatives {
        if let Some(value) = map.remove(key) {
            push_json_negatives(value, key, path, line, &mut negatives)?;
        }
    }
    Ok(Pair {
        query,
        positive,
        negatives,
    })
}

/// Column positions of a TSV file, fixed by its header.
struct TsvLayout {
    width: usize,
    query: usize,
    positive: usize,
    negatives: Vec<usize>,
}

impl TsvLayout {
    fn from_header(header: &str, path: &Path, line: usize) -> Result<Self, Error> {
        let names: Vec<&str> = header.split('\t').map(str::trim).collect();
        let roles = Roles::from_names(names.iter().copied()).map_err(|role| {
            Error::field(
                path,
                line,
                role,
                format!(
                    "{} from the header (columns: {})",
                    missing_role_problem(role),
                    names.join(", ")
                ),
            )
        })?;
        let index = |name: &str| names.iter().position(|n| *n == name).unwrap_or(0);
        Ok(TsvLayout {
            width: names.len(),
            query: index(&roles.query),
            positive: index(&roles.positive),
            negatives: roles.negatives.iter().map(|n| index(n)).collect(),
        })
    }

    fn parse(&self, text: &str, path: &Path, line: usize) -> Result<Pair, Error> {
        let cells: Vec<&str> = text.split('\t').collect();
        if cells.len() != self.width {
            return Err(Error::Columns {
                path: path.to_path_buf(),
                line,
                expected: format!("{} (as in the header)", self.width),
                found: cells.len(),
            });
        }
        Ok(Pair {
            query: cells[self.query].to_owned(),
            positive: cells[self.positive].to_owned(),
            // TSV cannot say null; an empty negative cell means "no negative".
            negatives: self
                .negatives
                .iter()
                .map(|&i| cells[i])
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// A string column cast to `Utf8`, or a list-of-strings column cast to
/// `List<Utf8>`, so one code path serves `LargeUtf8`, `Utf8View`, `LargeList`…
enum Column {
    Single(StringArray),
    List(ListArray),
}

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn is_string_list(dt: &DataType) -> bool {
    match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            is_string(f.data_type())
        }
        _ => false,
    }
}

fn utf8_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn column(batch: &RecordBatch, name: &str, path: &Path) -> Result<Column, Error> {
    let array: &ArrayRef = batch.column_by_name(name).ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        problem: format!("column {name:?} disappeared from a record batch"),
    })?;
    let cast = |to: &DataType| arrow::compute::cast(array, to).map_err(|e| Error::arrow(path, e));
    let unexpected = || Error::Format {
        path: path.to_path_buf(),
        problem: format!(
            "column {name:?}: expected strings or lists of strings, found {}",
            array.data_type()
        ),
    };
    if is_string(array.data_type()) {
        let utf8 = cast(&DataType::Utf8)?;
        let strings = utf8.as_string_opt::<i32>().ok_or_else(unexpected)?;
        Ok(Column::Single(strings.clone()))
    } else {
        let lists = cast(&utf8_list_type())?;
        let lists = lists.as_list_opt::<i32>().ok_or_else(unexpected)?;
        if lists.values().as_string_opt::<i32>().is_none() {
            return Err(unexpected());
        }
        Ok(Column::List(lists.clone()))
    }
}

fn string_column(batch: &RecordBatch, name: &str, path: &Path) -> Result<StringArray, Error> {
    match column(batch, name, path)? {
        Column::Single(array) => Ok(array),
        Column::List(_) => Err(Error::Format {
            path: path.to_path_buf(),
            problem: format!("column {name:?}: expected strings, found a list"),
        }),
    }
}

/// Reads a Parquet pair file one record batch at a time, only the columns
/// that hold pairs.
struct ParquetPairs {
    batches: ParquetRecordBatchReader,
    roles: Roles,
    /// Decoded pairs with their 1-based row numbers.
    pending: VecDeque<(Pair, usize)>,
    /// An error in the middle of a batch, delivered after the rows before it
    /// so a streaming consumer sees exactly the rows that are valid.
    deferred: Option<Error>,
    rows_seen: usize,
}

impl ParquetPairs {
    fn open(path: &Path) -> Result<Self, Error> {
        crate::parquet_io::guarded(path, || Self::open_unguarded(path))
    }

    fn open_unguarded(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
        let schema = builder.schema().clone();
        let names = schema.fields().iter().map(|f| f.name().as_str());
        let roles = Roles::from_names(names.clone()).map_err(|role| Error::Format {
            path: path.to_path_buf(),
            problem: format!(
                "column \"{role}\": {} (columns: {})",
                missing_role_problem(role),
                names.collect::<Vec<_>>().join(", ")
            ),
        })?;
        let mut roots = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let name = field.name().as_str();
            let dt = field.data_type();
            let ok = if name == roles.query || name == roles.positive {
                is_string(dt)
            } else if roles.negatives.iter().any(|n| n == name) {
                is_string(dt) || is_string_list(dt)
            } else {
                continue;
            };
            if !ok {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    problem: format!("column {name:?}: expected strings, found {dt}"),
                });
            }
            roots.push(i);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let batches = builder
            .with_projection(mask)
            .build()
            .map_err(|e| Error::parquet(path, e))?;
        Ok(ParquetPairs {
            batches,
            roles,
            pending: VecDeque::new(),
            deferred: None,
            rows_seen: 0,
        })
    }

    /// Queues the batch's pairs; an error is kept for after the queued rows.
    fn decode(&mut self, batch: &RecordBatch, path: &Path) {
        if let Err(e) = self.decode_rows(batch, path) {
            self.deferred = Some(e);
        }
        self.rows_seen += batch.num_rows();
    }

    fn decode_rows(&mut self, batch: &RecordBatch, path: &Path) -> Result<(), Error> {
        let query = string_column(batch, &self.roles.query, path)?;
        let positive = string_column(batch, &self.roles.positive, path)?;
        let negatives = self
            .roles
            .negatives
            .iter()
            .map(|n| column(batch, n, path))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let line = self.rows_seen + row + 1;
            let required = |array: &StringArray, name: &str| {
                if array.is_null(row) {
                    Err(Error::field(path, line, name, "null"))
                } else {
                    Ok(array.value(row).to_owned())
                }
            };
            let mut pair = Pair {
                query: required(&query, &self.roles.query)?,
                positive: required(&positive, &self.roles.positive)?,
                negatives: Vec::new(),
            };
            for col in &negatives {
                match col {
                    Column::Single(a) => {
                        if a.is_valid(row) {
                            pair.negatives.push(a.value(row).to_owned());
                        }
                    }
                    Column::List(l) => {
                        // Checked to be strings in `column`.
                        if let (true, Some(values)) =
                            (l.is_valid(row), l.values().as_string_opt::<i32>())
                        {
                            let offsets = l.value_offsets();
                            for i in offsets[row] as usize..offsets[row + 1] as usize {
                                if values.is_valid(i) {
                                    pair.negatives.push(values.value(i).to_owned());
                                }
                            }
                        }
                    }
                }
            }
            self.pending.push_back((pair, line));
        }
        Ok(())
    }
}

enum Source {
    Jsonl(LineReader),
    Tsv {
        lines: LineReader,
        layout: Option<TsvLayout>,
    },
    Parquet(Box<ParquetPairs>),
}

/// Streams pairs from a JSONL(.gz), TSV(.gz) or Parquet file, counting empty
/// queries and empty positives/negatives (as empty docs) in
/// [`PairReader::report`]. Stops after the first error.
pub struct PairReader {
    source: Source,
    path: PathBuf,
    line: usize,
    report: ValidationReport,
    done: bool,
}

impl PairReader {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let source = match PairFormat::from_path(path)? {
            PairFormat::Jsonl => Source::Jsonl(LineReader::open(path)?),
            PairFormat::Tsv => Source::Tsv {
                lines: LineReader::open(path)?,
                layout: None,
            },
            PairFormat::Parquet => Source::Parquet(Box::new(ParquetPairs::open(path)?)),
        };
        Ok(PairReader {
            source,
            path: path.to_path_buf(),
            line: 0,
            report: ValidationReport::default(),
            done: false,
        })
    }

    /// 1-based line (Parquet: row) of the pair last returned.
    pub fn line(&self) -> usize {
        self.line
    }

    pub fn report(&self) -> &ValidationReport {
        &self.report
    }

    pub fn into_report(self) -> ValidationReport {
        self.report
    }

    fn next_pair(&mut self) -> Result<Option<Pair>, Error> {
        let path = self.path.as_path();
        match &mut self.source {
            Source::Jsonl(lines) => loop {
                let Some(Line {
                    text, number: line, ..
                }) = lines.next_line()?
                else {
                    return Ok(None);
                };
                if text.trim().is_empty() {
                    continue;
                }
                let map = parse_object(path, line, text)?;
                self.line = line;
                return pair_from_json(map, path, line).map(Some);
            },
            Source::Tsv { lines, layout } => loop {
                let Some(Line {
                    text, number: line, ..
                }) = lines.next_line()?
                else {
                    if layout.is_none() {
                        return Err(Error::Format {
                            path: path.to_path_buf(),
                            problem: "empty file: expected a header row naming the columns".into(),
                        });
                    }
                    return Ok(None);
                };
                if text.trim().is_empty() {
                    continue;
                }
                match layout {
                    None => *layout = Some(TsvLayout::from_header(text, path, line)?),
                    Some(layout) => {
                        self.line = line;
                        return layout.parse(text, path, line).map(Some);
                    }
                }
            },
            Source::Parquet(pq) => loop {
                if let Some((pair, row)) = pq.pending.pop_front() {
                    self.line = row;
                    return Ok(Some(pair));
                }
                if let Some(e) = pq.deferred.take() {
                    return Err(e);
                }
                let next = crate::parquet_io::guarded(path, || {
                    let Some(batch) = pq.batches.next() else {
                        return Ok(false);
                    };
                    let batch = batch.map_err(|e| Error::arrow(path, e))?;
                    pq.decode(&batch, path);
                    Ok(true)
                })?;
                if !next {
                    return Ok(None);
                }
            },
        }
    }

    fn check(&mut self, pair: &Pair) {
        let (path, line) = (self.path.as_path(), self.line);
        let id = snippet(&pair.query);
        if pair.query.trim().is_empty() {
            self.report.record(Issue::EmptyQuery, id, path, line);
        }
        if pair.positive.trim().is_empty() {
            self.report.record(Issue::EmptyDoc, id, path, line);
        }
        for negative in &pair.negatives {
            if negative.trim().is_empty() {
                self.report.record(Issue::EmptyDoc, id, path, line);
            }
        }
    }
}

/// The start of a query, to name a pair in a report without printing a whole
/// paragraph.
fn snippet(text: &str) -> &str {
    const MAX_CHARS: usize = 60;
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

impl Iterator for PairReader {
    type Item = Result<Pair, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_pair().transpose();
        match &item {
            Some(Ok(pair)) => self.check(pair),
            _ => self.done = true,
        }
        item
    }
}

/// JSONL(.gz), TSV (header row naming the columns) or Parquet, by extension.
/// Columns `query`/`positive` or the sentence-transformers names
/// `anchor`/`positive`; optional negatives: `negative`, `negative_1`,
/// `negative_2`, …, or a list column `negatives`. Streams.
///
/// Null or empty (TSV) negatives are dropped, since ragged negative lists are
/// padded that way; empty strings elsewhere are kept and counted.
pub fn read_pairs(path: &Path, opts: LoadOptions) -> Result<(Vec<Pair>, ValidationReport), Error> {
    let mut reader = PairReader::open(path)?;
    let pairs = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    let report = reader.into_report().enforce(opts)?;
    Ok((pairs, report))
}

/// The schema [`write_pairs_parquet`] writes: `query: utf8`, `positive:
/// utf8`, `negatives: list<utf8>`.
pub fn pairs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query", DataType::Utf8, false),
        Field::new("positive", DataType::Utf8, false),
        Field::new("negatives", utf8_list_type(), false),
    ]))
}

/// Rows per record batch (and so per Parquet page group) when writing: large
/// enough for good compression, small enough to bound memory per batch.
const WRITE_BATCH_ROWS: usize = 8192;

fn pairs_batch(schema: &SchemaRef, pairs: &[Pair], path: &Path) -> Result<RecordBatch, Error> {
    let mut query = StringBuilder::new();
    let mut positive = StringBuilder::new();
    let mut negatives = ListBuilder::new(StringBuilder::new());
    for pair in pairs {
        query.append_value(&pair.query);
        positive.append_value(&pair.positive);
        for negative in &pair.negatives {
            negatives.values().append_value(negative);
        }
        negatives.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(query.finish()),
        Arc::new(positive.finish()),
        Arc::new(negatives.finish()),
    ];
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::arrow(path, e))
}

/// Writes pairs to Parquet (columns `query`, `positive`, `negatives:
/// list<utf8>`) atomically; the file reads back with [`read_pairs`] and with
/// pandas/polars/DuckDB as is.
pub fn write_pairs_parquet(path: &Path, pairs: &[Pair]) -> Result<(), Error> {
    let schema = pairs_schema();
    let mut writer = ParquetWriter::create(path, schema.clone(), &Metadata::new())?;
    for chunk in pairs.chunks(WRITE_BATCH_ROWS) {
        writer.write(&pairs_batch(&schema, chunk, path)?)?;
    }
    writer.finish()
}
