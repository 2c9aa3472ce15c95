//! Small Parquet helpers: write record batches with key/value metadata
//! atomically, read batches and metadata back.
//!
//! Every stage of the pipeline leaves a Parquet file that a later stage (or a
//! resumed run) trusts; writing to a temporary file in the same directory and
//! renaming it means a crash leaves either the old file or the new one, never
//! a truncated file that looks valid until its footer is read.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::Error;

/// Runs `f`, which decodes Parquet from `path`, turning a panic into an error naming
/// the file. parquet-rs and arrow panic on some damaged files instead of returning an
/// error (`bench/fuzz` found out-of-bounds offsets in a footer's column chunk and in a
/// page's null bitmap); a damaged file must be refused like any other bad input, not
/// take the process down. Only decoding runs inside: it holds no state a panic could
/// leave half-changed beyond the reader being abandoned.
pub(crate) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(Error::Format {
            path: path.to_path_buf(),
            problem: format!("damaged Parquet file: the decoder failed ({why})"),
        })
    })
}

/// Key/value metadata stored in the Parquet footer (how a file was made:
/// model, k, judge, prompt hash, tool version). Sorted so files written from
/// the same inputs are byte-identical.
pub type Metadata = BTreeMap<String, String>;

/// The key under which arrow stores its own serialized schema; it is an
/// implementation detail, so it is hidden from [`Metadata`] read back.
const ARROW_SCHEMA_KEY: &str = "ARROW:schema";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Streams record batches into `path` via a temporary file next to it;
/// [`ParquetWriter::finish`] makes the file appear, dropping the writer
/// unfinished removes the temporary file and leaves `path` untouched.
pub struct ParquetWriter {
    writer: Option<ArrowWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl ParquetWriter {
    pub fn create(path: &Path, schema: SchemaRef, metadata: &Metadata) -> Result<Self, Error> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| Error::Format {
                path: path.to_path_buf(),
                problem: "not a file path".into(),
            })?
            .to_string_lossy();
        // Same directory, so the final rename never crosses a filesystem.
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let kv: Vec<KeyValue> = metadata
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_key_value_metadata((!kv.is_empty()).then_some(kv))
            .build();
        let mut this = ParquetWriter {
            writer: None,
            tmp,
            path: path.to_path_buf(),
        };
        this.writer = Some(
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| Error::parquet(path, e))?,
        );
        Ok(this)
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        match self.writer.as_mut() {
            Some(w) => w.write(batch).map_err(|e| Error::parquet(&self.path, e)),
            None => Err(Error::Format {
                path: self.path.clone(),
                problem: "writer already closed".into(),
            }),
        }
    }

    /// Writes the footer, flushes to disk and renames into place.
    pub fn finish(mut self) -> Result<(), Error> {
        let Some(writer) = self.writer.take() else {
            return Err(Error::Format {
                path: self.path.clone(),
                problem: "writer already closed".into(),
            });
        };
        let file = writer
            .into_inner()
            .map_err(|e| Error::parquet(&self.path, e))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }
}

impl Drop for ParquetWriter {
    fn drop(&mut self) {
        // After a successful rename the temporary name no longer exists and
        // this fails harmlessly; otherwise it cleans up a partial file.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes all `batches` (each must have `schema`) to `path` atomically.
pub fn write_parquet<I>(
    path: &Path,
    schema: SchemaRef,
    batches: I,
    metadata: &Metadata,
) -> Result<(), Error>
where
    I: IntoIterator<Item = RecordBatch>,
{
    let mut writer = ParquetWriter::create(path, schema, metadata)?;
    for batch in batches {
        writer.write(&batch)?;
    }
    writer.finish()
}

fn footer_metadata(meta: &parquet::file::metadata::ParquetMetaData) -> Metadata {
    meta.file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter(|kv| kv.key != ARROW_SCHEMA_KEY)
                .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// Streams the record batches of a Parquet file, with its schema and
/// metadata available before the first batch is decoded.
pub struct BatchReader {
    inner: ParquetRecordBatchReader,
    path: PathBuf,
    schema: SchemaRef,
    metadata: Metadata,
}

impl BatchReader {
    pub fn open(path: &Path) -> Result<Self, Error> {
        guarded(path, || {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| Error::parquet(path, e))?;
            let schema = builder.schema().clone();
            let metadata = footer_metadata(builder.metadata());
            let inner = builder.build().map_err(|e| Error::parquet(path, e))?;
            Ok(BatchReader {
                inner,
                path: path.to_path_buf(),
                schema,
                metadata,
            })
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let path = self.path.clone();
        let inner = &mut self.inner;
        guarded(&path, || {
            Ok(inner.next().map(|r| r.map_err(|e| Error::arrow(&path, e))))
        })
        .unwrap_or_else(|e| Some(Err(e)))
    }
}

/// A whole Parquet file in memory.
#[derive(Debug, Clone)]
pub struct ParquetContents {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub metadata: Metadata,
}

/// Reads every batch and the footer metadata of `path`.
pub fn read_parquet(path: &Path) -> Result<ParquetContents, Error> {
    let reader = BatchReader::open(path)?;
    let schema = reader.schema.clone();
    let metadata = reader.metadata.clone();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(ParquetContents {
        schema,
        batches,
        metadata,
    })
}

/// Reads only the footer's key/value metadata, e.g. to check how a file was
/// made before deciding to resume from it.
pub fn read_metadata(path: &Path) -> Result<Metadata, Error> {
    guarded(path, || {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
        Ok(footer_metadata(builder.metadata()))
    })
}
