//! The mined / labeled dataset: one Parquet row per query with its known positives
//! and its candidates (documents likely to be false negatives), which the judge
//! labels in place.
//!
//! Columns (readable as is by pandas, polars, DuckDB):
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `query_id`, `query` | utf8 | the query |
//! | `positives` | list<utf8> | ids of the known positives (qrels / pairs), never among the candidates |
//! | `candidates` | list<struct> | `doc_id`, `rank` (1-based, fused, positives excluded), `bm25`, `dense` (cosine), `source` (`bm25`/`dense`/`both`), `bm25_rank`, `dense_rank` (1-based in each retriever's own list, positives included; null if outside its top-k), `label` (`relevant`/`irrelevant`/`error`, null until judged), `p_relevant` |
//! | `positive_hits` | list<struct> | per positive: `doc_id`, `dense`, and its `bm25_rank` / `dense_rank` / `fused_rank` (null if not retrieved): the miner's recall, per query |
//! | `dropped` | list<struct> | candidates a filter rule removed: `doc_id`, `rank`, `dense`, `rule` |
//!
//! The footer's key/value metadata says how the file was made (`sieve.*` keys).
//! Files are written with a fixed batch size, so the same rows and metadata give
//! the same bytes however they were produced (one run, resumed, or merged shards).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, ListArray, RecordBatch, StringArray, StructArray,
    UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Float32Type, Schema, SchemaRef, UInt32Type};

use crate::parquet_io::{BatchReader, Metadata, ParquetWriter};
use crate::Error;

/// Rows per record batch when writing: fixed, so that output bytes never depend on
/// how the rows were gathered.
pub const MINED_BATCH_ROWS: usize = 1024;

/// Judge verdict values of the `label` field.
pub const LABEL_RELEVANT: &str = "relevant";
pub const LABEL_IRRELEVANT: &str = "irrelevant";
/// The judge could not label the pair (after retries); retried on the next run and
/// never treated as irrelevant.
pub const LABEL_ERROR: &str = "error";
/// The pair's text reads as an instruction to the judge (`sieve_judge::detect`): its
/// verdict is kept in `p_relevant` but never acted on: neither masked nor used as a
/// hard negative.
pub const LABEL_SUSPICIOUS: &str = "suspicious";

/// One candidate document of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub doc_id: String,
    pub rank: u32,
    pub bm25: f32,
    pub dense: f32,
    /// `bm25`, `dense` or `both`.
    pub source: String,
    pub bm25_rank: Option<u32>,
    pub dense_rank: Option<u32>,
    pub label: Option<String>,
    pub p_relevant: Option<f32>,
}

/// Where a known positive landed in each retriever's list.
#[derive(Debug, Clone, PartialEq)]
pub struct PositiveHit {
    pub doc_id: String,
    pub dense: f32,
    pub bm25_rank: Option<u32>,
    pub dense_rank: Option<u32>,
    pub fused_rank: Option<u32>,
}

/// A candidate removed by a filter rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub doc_id: String,
    pub rank: u32,
    pub dense: f32,
    pub rule: String,
}

/// One query's row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MinedRow {
    pub query_id: String,
    pub query: String,
    pub positives: Vec<String>,
    pub candidates: Vec<Candidate>,
    pub positive_hits: Vec<PositiveHit>,
    pub dropped: Vec<Dropped>,
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
fn u32f(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::UInt32, nullable)
}
fn f32f(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float32, nullable)
}

fn candidate_fields() -> Fields {
    Fields::from(vec![
        utf8("doc_id", false),
        u32f("rank", false),
        f32f("bm25", false),
        f32f("dense", false),
        utf8("source", false),
        u32f("bm25_rank", true),
        u32f("dense_rank", true),
        utf8("label", true),
        f32f("p_relevant", true),
    ])
}

fn positive_fields() -> Fields {
    Fields::from(vec![
        utf8("doc_id", false),
        f32f("dense", false),
        u32f("bm25_rank", true),
        u32f("dense_rank", true),
        u32f("fused_rank", true),
    ])
}

fn dropped_fields() -> Fields {
    Fields::from(vec![
        utf8("doc_id", false),
        u32f("rank", false),
        f32f("dense", false),
        utf8("rule", false),
    ])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(fields),
        false,
    )))
}

/// The schema of mined and labeled files.
pub fn mined_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("query_id", false),
        utf8("query", false),
        Field::new(
            "positives",
            DataType::List(Arc::new(utf8("item", false))),
            false,
        ),
        Field::new("candidates", list_of(candidate_fields()), false),
        Field::new("positive_hits", list_of(positive_fields()), false),
        Field::new("dropped", list_of(dropped_fields()), false),
    ]))
}

/// A list column from per-row lists, flattened into `columns` by `flatten`.
fn list_column<T>(
    rows: &[MinedRow],
    get: impl Fn(&MinedRow) -> &[T],
    fields: Fields,
    flatten: impl Fn(&[&T]) -> Vec<ArrayRef>,
) -> ArrayRef {
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let mut items: Vec<&T> = Vec::new();
    for r in rows {
        items.extend(get(r));
        offsets.push(items.len() as i32);
    }
    let values = StructArray::new(fields.clone(), flatten(&items), None);
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(fields), false)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    ))
}

fn batch(schema: &SchemaRef, rows: &[MinedRow], path: &Path) -> Result<RecordBatch, Error> {
    let s = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let mut pos_offsets = vec![0i32];
    let mut pos_values: Vec<&str> = Vec::new();
    for r in rows {
        pos_values.extend(r.positives.iter().map(String::as_str));
        pos_offsets.push(pos_values.len() as i32);
    }
    let positives: ArrayRef = Arc::new(ListArray::new(
        Arc::new(utf8("item", false)),
        OffsetBuffer::new(pos_offsets.into()),
        Arc::new(StringArray::from(pos_values)),
        None,
    ));
    let candidates = list_column(
        rows,
        |r| &r.candidates,
        candidate_fields(),
        |c: &[&Candidate]| {
            vec![
                s(c.iter().map(|c| c.doc_id.as_str()).collect()),
                Arc::new(UInt32Array::from_iter_values(c.iter().map(|c| c.rank))),
                Arc::new(Float32Array::from_iter_values(c.iter().map(|c| c.bm25))),
                Arc::new(Float32Array::from_iter_values(c.iter().map(|c| c.dense))),
                s(c.iter().map(|c| c.source.as_str()).collect()),
                Arc::new(UInt32Array::from_iter(c.iter().map(|c| c.bm25_rank))),
                Arc::new(UInt32Array::from_iter(c.iter().map(|c| c.dense_rank))),
                Arc::new(StringArray::from_iter(c.iter().map(|c| c.label.as_deref()))),
                Arc::new(Float32Array::from_iter(c.iter().map(|c| c.p_relevant))),
            ]
        },
    );
    let hits = list_column(
        rows,
        |r| &r.positive_hits,
        positive_fields(),
        |p: &[&PositiveHit]| {
            vec![
                s(p.iter().map(|p| p.doc_id.as_str()).collect()),
                Arc::new(Float32Array::from_iter_values(p.iter().map(|p| p.dense))),
                Arc::new(UInt32Array::from_iter(p.iter().map(|p| p.bm25_rank))),
                Arc::new(UInt32Array::from_iter(p.iter().map(|p| p.dense_rank))),
                Arc::new(UInt32Array::from_iter(p.iter().map(|p| p.fused_rank))),
            ]
        },
    );
    let dropped = list_column(
        rows,
        |r| &r.dropped,
        dropped_fields(),
        |d: &[&Dropped]| {
            vec![
                s(d.iter().map(|d| d.doc_id.as_str()).collect()),
                Arc::new(UInt32Array::from_iter_values(d.iter().map(|d| d.rank))),
                Arc::new(Float32Array::from_iter_values(d.iter().map(|d| d.dense))),
                s(d.iter().map(|d| d.rule.as_str()).collect()),
            ]
        },
    );
    RecordBatch::try_new(
        schema.clone(),
        vec![
            s(rows.iter().map(|r| r.query_id.as_str()).collect()),
            s(rows.iter().map(|r| r.query.as_str()).collect()),
            positives,
            candidates,
            hits,
            dropped,
        ],
    )
    .map_err(|e| Error::arrow(path, e))
}

/// Writes `rows` with `metadata` to `path` atomically, in batches of
/// [`MINED_BATCH_ROWS`].
pub fn write_mined(path: &Path, rows: &[MinedRow], metadata: &Metadata) -> Result<(), Error> {
    let schema = mined_schema();
    let mut writer = ParquetWriter::create(path, schema.clone(), metadata)?;
    for chunk in rows.chunks(MINED_BATCH_ROWS) {
        writer.write(&batch(&schema, chunk, path)?)?;
    }
    writer.finish()
}

fn format_err(path: &Path, problem: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Typed access to a struct column's fields by name, with errors naming the field.
struct Cols<'a> {
    st: &'a StructArray,
    path: &'a Path,
    what: &'a str,
}

impl<'a> Cols<'a> {
    fn col(&self, name: &str) -> Result<&'a ArrayRef, Error> {
        self.st
            .column_by_name(name)
            .ok_or_else(|| format_err(self.path, format!("{}: missing field `{name}`", self.what)))
    }
    fn str(&self, name: &str) -> Result<&'a StringArray, Error> {
        self.col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| format_err(self.path, format!("{}.{name}: expected utf8", self.what)))
    }
    fn u32(&self, name: &str) -> Result<&'a UInt32Array, Error> {
        self.col(name)?
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| format_err(self.path, format!("{}.{name}: expected uint32", self.what)))
    }
    fn f32(&self, name: &str) -> Result<&'a Float32Array, Error> {
        self.col(name)?
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| format_err(self.path, format!("{}.{name}: expected float32", self.what)))
    }
    /// An optional field: absent in files written before it existed.
    fn opt_str(&self, name: &str) -> Option<&'a StringArray> {
        self.st.column_by_name(name)?.as_string_opt::<i32>()
    }
    fn opt_f32(&self, name: &str) -> Option<&'a Float32Array> {
        self.st
            .column_by_name(name)?
            .as_primitive_opt::<Float32Type>()
    }
}

fn opt<T: arrow::datatypes::ArrowPrimitiveType>(
    a: &arrow::array::PrimitiveArray<T>,
    i: usize,
) -> Option<T::Native> {
    a.is_valid(i).then(|| a.value(i))
}

fn list<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a ListArray, Error> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format_err(path, format!("missing column `{name}`")))?
        .as_list_opt::<i32>()
        .ok_or_else(|| format_err(path, format!("column `{name}`: expected a list")))
}

fn rows_of(batch: &RecordBatch, path: &Path) -> Result<Vec<MinedRow>, Error> {
    let str_col = |name: &str| -> Result<&StringArray, Error> {
        batch
            .column_by_name(name)
            .ok_or_else(|| format_err(path, format!("missing column `{name}`")))?
            .as_string_opt::<i32>()
            .ok_or_else(|| format_err(path, format!("column `{name}`: expected utf8")))
    };
    let qid = str_col("query_id")?;
    let qtext = str_col("query")?;
    let positives = list(batch, "positives", path)?;
    let pos_values = positives
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| format_err(path, "positives: expected list<utf8>"))?;
    let structs = |name: &'static str| -> Result<(&ListArray, Cols<'_>), Error> {
        let l = list(batch, name, path)?;
        let st = l
            .values()
            .as_struct_opt()
            .ok_or_else(|| format_err(path, format!("{name}: expected list<struct>")))?;
        Ok((
            l,
            Cols {
                st,
                path,
                what: name,
            },
        ))
    };
    let (cl, c) = structs("candidates")?;
    let (c_doc, c_rank, c_bm25, c_dense, c_src) = (
        c.str("doc_id")?,
        c.u32("rank")?,
        c.f32("bm25")?,
        c.f32("dense")?,
        c.str("source")?,
    );
    let (c_brank, c_drank) = (c.u32("bm25_rank")?, c.u32("dense_rank")?);
    let (c_label, c_p) = (c.opt_str("label"), c.opt_f32("p_relevant"));
    let (hl, h) = structs("positive_hits")?;
    let (h_doc, h_dense, h_b, h_d, h_f) = (
        h.str("doc_id")?,
        h.f32("dense")?,
        h.u32("bm25_rank")?,
        h.u32("dense_rank")?,
        h.u32("fused_rank")?,
    );
    let (dl, d) = structs("dropped")?;
    let (d_doc, d_rank, d_dense, d_rule) = (
        d.str("doc_id")?,
        d.u32("rank")?,
        d.f32("dense")?,
        d.str("rule")?,
    );
    let range = |l: &ListArray, i: usize| {
        let o = l.value_offsets();
        o[i] as usize..o[i + 1] as usize
    };
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        rows.push(MinedRow {
            query_id: qid.value(i).to_string(),
            query: qtext.value(i).to_string(),
            positives: range(positives, i)
                .map(|j| pos_values.value(j).to_string())
                .collect(),
            candidates: range(cl, i)
                .map(|j| Candidate {
                    doc_id: c_doc.value(j).to_string(),
                    rank: c_rank.value(j),
                    bm25: c_bm25.value(j),
                    dense: c_dense.value(j),
                    source: c_src.value(j).to_string(),
                    bm25_rank: opt(c_brank, j),
                    dense_rank: opt(c_drank, j),
                    label: c_label
                        .filter(|a| a.is_valid(j))
                        .map(|a| a.value(j).to_string()),
                    p_relevant: c_p.and_then(|a| opt(a, j)),
                })
                .collect(),
            positive_hits: range(hl, i)
                .map(|j| PositiveHit {
                    doc_id: h_doc.value(j).to_string(),
                    dense: h_dense.value(j),
                    bm25_rank: opt(h_b, j),
                    dense_rank: opt(h_d, j),
                    fused_rank: opt(h_f, j),
                })
                .collect(),
            dropped: range(dl, i)
                .map(|j| Dropped {
                    doc_id: d_doc.value(j).to_string(),
                    rank: d_rank.value(j),
                    dense: d_dense.value(j),
                    rule: d_rule.value(j).to_string(),
                })
                .collect(),
        });
    }
    Ok(rows)
}

/// The corpus file a mined file names in its `sieve.corpus` metadata, resolved
/// relative to the mined file; `None` when it names none.
pub fn named_corpus(mined: &Path, meta: &Metadata) -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from(meta.get("sieve.corpus")?);
    Some(if p.is_absolute() {
        p
    } else {
        mined.parent().unwrap_or(Path::new(".")).join(p)
    })
}

/// Metadata key of a shard's position (`i/n`); absent from complete files.
pub const SHARD_KEY: &str = "sieve.shard";
/// Metadata key of the hash that ties parts and shards to one configuration.
pub const RUN_KEY: &str = "sieve.run_key";
/// Metadata key of a labeled file's verdict counts by scoring method (JSON): a
/// judging shard's own, summed when shards are merged.
pub const SCORE_METHODS_KEY: &str = "sieve.judge_score_methods";

/// The files a shard-set argument names: every `*.parquet` in a directory, or the
/// files matching a name with `*` wildcards (`shards/mined-*.parquet`), sorted; `None`
/// when `spec` is neither: a plain file, a directory without Parquet files, or a BEIR
/// directory (one with a `corpus.jsonl[.gz]`, whatever else it holds). A pattern that
/// matches nothing is an error naming it.
pub fn shard_files(spec: &Path) -> Result<Option<Vec<std::path::PathBuf>>, Error> {
    let name = spec.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let beir = ["corpus.jsonl", "corpus.jsonl.gz"]
        .iter()
        .any(|c| spec.join(c).is_file());
    let (dir, pattern) = if spec.is_dir() && !beir {
        (spec.to_path_buf(), "*.parquet".to_string())
    } else if name.contains('*') && !spec.exists() {
        let parent = spec.parent().filter(|p| !p.as_os_str().is_empty());
        (
            parent.unwrap_or(Path::new(".")).to_path_buf(),
            name.to_string(),
        )
    } else {
        return Ok(None);
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_file() && wildcard_match(&pattern, file) {
            found.push(path);
        }
    }
    found.sort();
    match (found.is_empty(), spec.is_dir()) {
        (true, true) => Ok(None),
        (true, false) => Err(Error::Format {
            path: spec.to_path_buf(),
            problem: "no file matches this pattern".into(),
        }),
        (false, _) => Ok(Some(found)),
    }
}

/// `*` matches any run of characters (none included); everything else itself.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// A complete set of shards of one run (`sieve mine --shard`, `sieve judge --shard`;
/// any order), read in shard order: the rows one unsharded run writes, the run's
/// metadata without [`SHARD_KEY`] and the keys in `own` (which may differ from shard to
/// shard: a mining shard's [`RUN_KEY`], a judging shard's counts), and every shard's
/// own metadata in shard order, for the caller to combine those keys. Refuses a file
/// that is not a shard, shards of different runs (other metadata) or shard counts, and
/// missing or repeated shards, naming the file.
pub fn read_shard_set(
    shards: &[std::path::PathBuf],
    own: &[&str],
) -> Result<(Vec<MinedRow>, Metadata, Vec<Metadata>), Error> {
    let mismatch = |path: &Path, problem: String| Error::Format {
        path: path.to_path_buf(),
        problem,
    };
    let mut found: Vec<(usize, usize, &std::path::PathBuf, Metadata)> = Vec::new();
    for path in shards {
        let meta = crate::parquet_io::read_metadata(path)?;
        let shard = meta
            .get(SHARD_KEY)
            .and_then(|s| s.split_once('/'))
            .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
            .ok_or_else(|| mismatch(path, format!("not a shard (no `{SHARD_KEY}` metadata)")))?;
        found.push((shard.0, shard.1, path, meta));
    }
    found.sort_by_key(|f| f.0);
    let Some(first) = found.first() else {
        return Err(Error::Format {
            path: std::path::PathBuf::new(),
            problem: "no shards given".into(),
        });
    };
    let n = first.1;
    let strip = |m: &Metadata| {
        let mut m = m.clone();
        m.remove(SHARD_KEY);
        for k in own {
            m.remove(*k);
        }
        m
    };
    let base = strip(&first.3);
    for (want, (i, ni, path, meta)) in found.iter().enumerate() {
        if *ni != n {
            return Err(mismatch(path, format!("shard {i}/{ni}, others are of {n}")));
        }
        if *i != want {
            return Err(mismatch(
                path,
                format!(
                    "shard {i}/{n} follows shard {}: shard {want}/{n} is missing or repeated",
                    want.saturating_sub(1)
                ),
            ));
        }
        if strip(meta) != base {
            return Err(mismatch(
                path,
                "made with other options, model or input than the first shard".into(),
            ));
        }
    }
    if found.len() != n {
        return Err(mismatch(
            found[found.len() - 1].2,
            format!("{} of {n} shards given", found.len()),
        ));
    }
    let mut rows = Vec::new();
    for (_, _, path, _) in &found {
        rows.extend(read_mined(path)?.0);
    }
    let metas = found.into_iter().map(|f| f.3).collect();
    Ok((rows, base, metas))
}

/// Reads a mined or labeled file: its rows and footer metadata.
pub fn read_mined(path: &Path) -> Result<(Vec<MinedRow>, Metadata), Error> {
    // Decoding the columns of a damaged file can panic inside arrow too.
    crate::parquet_io::guarded(path, || {
        let reader = BatchReader::open(path)?;
        let metadata = reader.metadata().clone();
        let mut rows = Vec::new();
        for b in reader {
            rows.extend(rows_of(&b?, path)?);
        }
        Ok((rows, metadata))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> MinedRow {
        MinedRow {
            query_id: format!("q{i}"),
            query: format!("query {i}"),
            positives: (0..i % 3).map(|j| format!("p{j}")).collect(),
            candidates: (0..i % 4)
                .map(|j| Candidate {
                    doc_id: format!("d{j}"),
                    rank: j as u32 + 1,
                    bm25: j as f32,
                    dense: 0.5,
                    source: "both".into(),
                    bm25_rank: (j % 2 == 0).then_some(j as u32 + 1),
                    dense_rank: None,
                    label: (j == 1).then(|| LABEL_RELEVANT.to_string()),
                    p_relevant: (j == 1).then_some(0.9),
                })
                .collect(),
            positive_hits: (0..i % 3)
                .map(|j| PositiveHit {
                    doc_id: format!("p{j}"),
                    dense: 0.8,
                    bm25_rank: Some(1),
                    dense_rank: None,
                    fused_rank: Some(2),
                })
                .collect(),
            dropped: (0..i % 2)
                .map(|_| Dropped {
                    doc_id: "x".into(),
                    rank: 1,
                    dense: 0.99,
                    rule: "max_score".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_across_batches_and_byte_stable() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<MinedRow> = (0..MINED_BATCH_ROWS + 7).map(row).collect();
        let mut meta = Metadata::new();
        meta.insert("sieve.stage".into(), "mined".into());
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        write_mined(&a, &rows, &meta).unwrap();
        write_mined(&b, &rows, &meta).unwrap();
        let (back, m) = read_mined(&a).unwrap();
        assert_eq!(back, rows);
        assert_eq!(m, meta);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    #[test]
    fn wrong_files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pairs.parquet");
        crate::write_pairs_parquet(
            &p,
            &[crate::Pair {
                query: "q".into(),
                positive: "p".into(),
                negatives: vec![],
            }],
        )
        .unwrap();
        let err = read_mined(&p).unwrap_err().to_string();
        assert!(
            err.contains("pairs.parquet") && err.contains("query_id"),
            "{err}"
        );
    }
}
