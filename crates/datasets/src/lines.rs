//! Line-at-a-time input shared by the JSONL and TSV readers.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};

use crate::Error;

/// Large enough that gzip inflation and syscalls are not the bottleneck,
/// small enough to be irrelevant next to the data itself.
const BUF_SIZE: usize = 1 << 16;

pub(crate) fn is_gz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// One line with what an error message about it needs; borrowing all three
/// from the reader lets callers parse without copying the line.
pub(crate) struct Line<'a> {
    pub(crate) text: &'a str,
    /// 1-based.
    pub(crate) number: usize,
    pub(crate) path: &'a Path,
}

/// Reads one line at a time into a reused buffer, so memory stays at one line
/// however large the file, and the line counter is exact for error messages.
pub(crate) struct LineReader {
    path: PathBuf,
    inner: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
    line: usize,
}

impl LineReader {
    /// Opens `path`, inflating it on the fly when it ends in `.gz`.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let inner: Box<dyn BufRead + Send> = if is_gz(path) {
            // Multi-member: `cat a.gz b.gz` and bgzip output are valid gzip.
            Box::new(BufReader::with_capacity(
                BUF_SIZE,
                MultiGzDecoder::new(BufReader::with_capacity(BUF_SIZE, file)),
            ))
        } else {
            Box::new(BufReader::with_capacity(BUF_SIZE, file))
        };
        Ok(LineReader {
            path: path.to_path_buf(),
            inner,
            buf: Vec::new(),
            line: 0,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// 1-based number of the line last returned (0 before the first).
    pub(crate) fn line(&self) -> usize {
        self.line
    }

    /// The next line without its `\n` / `\r\n` terminator (and without a
    /// leading byte-order mark on line 1), or `None` at end of file.
    pub(crate) fn next_line(&mut self) -> Result<Option<Line<'_>>, Error> {
        self.buf.clear();
        let n = self
            .inner
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        let text = std::str::from_utf8(&self.buf).map_err(|_| Error::InvalidUtf8 {
            path: self.path.clone(),
            line: self.line,
        })?;
        let text = if self.line == 1 {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        Ok(Some(Line {
            text,
            number: self.line,
            path: &self.path,
        }))
    }
}

/// JSON type names as a user would say them, for "expected X, found Y".
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses one JSONL line as an object. serde_json's message says "line 1"
/// for every record because it only sees one line; that is replaced by the
/// column so the caller's file line number is the only line number shown.
pub(crate) fn parse_object(
    path: &Path,
    line: usize,
    text: &str,
) -> Result<Map<String, Value>, Error> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::Record {
            path: path.to_path_buf(),
            line,
            problem: format!("expected a JSON object, found {}", type_name(&other)),
        }),
        Err(e) => {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = match full.strip_suffix(&suffix) {
                Some(msg) => format!("{msg} at column {}", e.column()),
                None => full,
            };
            Err(Error::InvalidJson {
                path: path.to_path_buf(),
                line,
                message,
            })
        }
    }
}

/// Takes an id that BEIR files store as a string or, in some datasets, as a
/// JSON integer; integers become their decimal string so ids compare equal to
/// the (always textual) qrels columns.
pub(crate) fn take_id(
    map: &mut Map<String, Value>,
    key: &str,
    path: &Path,
    line: usize,
) -> Result<String, Error> {
    let id = match map.remove(key) {
        None => return Err(Error::field(path, line, key, "missing")),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(Error::field(
                path,
                line,
                key,
                format!(
                    "expected a string or an integer, found {}",
                    type_name(&other)
                ),
            ))
        }
    };
    if id.is_empty() {
        return Err(Error::field(path, line, key, "empty"));
    }
    Ok(id)
}

/// Takes an optional string field; JSON `null` counts as absent because
/// exporters (pandas, HF datasets) write missing values that way.
pub(crate) fn take_opt_string(
    map: &mut Map<String, Value>,
    key: &str,
    path: &Path,
    line: usize,
) -> Result<Option<String>, Error> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::field(
            path,
            line,
            key,
            format!("expected a string, found {}", type_name(&other)),
        )),
    }
}

/// A JSONL(.gz) file's records, one object per non-empty line, with its line number:
/// the one JSONL reader for files the other crates read (graded judge pairs,
/// per-query scores). Errors name the file and line.
pub struct JsonLines {
    reader: LineReader,
}

impl JsonLines {
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            reader: LineReader::open(path)?,
        })
    }
}

impl Iterator for JsonLines {
    /// `(line number, object)`.
    type Item = Result<(usize, Map<String, Value>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.reader.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            if line.text.trim().is_empty() {
                continue;
            }
            let number = line.number;
            return Some(parse_object(line.path, number, line.text).map(|o| (number, o)));
        }
    }
}
