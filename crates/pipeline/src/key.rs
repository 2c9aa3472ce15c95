//! Whether a stage's output is current.
//!
//! Each stage's key is a hash of what decides its output: its settings, the keys of
//! the stages it reads (so a change anywhere upstream reaches every later stage),
//! fingerprints of the files it reads, and the tool's version. The key is stored
//! beside the output (`<stage>.key.json`) with the inputs it hashed, written before the
//! stage runs (`complete: false`) and again when it finished, so a re-run can tell
//! "current", "interrupted: resume" and "changed: redo, because …" apart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A stage's identity: the hash and what went into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageKey {
    pub key: String,
    /// The JSON the key hashes (settings, upstream keys, file fingerprints, version).
    pub inputs: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    key: String,
    complete: bool,
    inputs: serde_json::Value,
}

impl StageKey {
    /// The key of `inputs` (an object; the tool version is added to it).
    pub fn new(mut inputs: serde_json::Value) -> Self {
        if let Some(o) = inputs.as_object_mut() {
            o.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        }
        // serde_json's maps are sorted, so equal inputs serialise to equal bytes.
        let body = serde_json::to_vec(&inputs).unwrap_or_default();
        let key = format!("{:x}", Sha256::digest(&body));
        Self { key, inputs }
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> &str {
        &self.key[..12]
    }
}

/// What a re-run does with a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Same key, finished, output present: reuse it.
    Current,
    /// Same key, not finished: run it again, resuming from what it left.
    Resume,
    /// No key yet: run it.
    New,
    /// Its key changed (the reasons name what did), or its output is gone: redo it.
    Changed(Vec<String>),
}

impl Decision {
    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Decision::Current => "current (settings and inputs unchanged): reused".into(),
            Decision::Resume => "interrupted last time: resuming".into(),
            Decision::New => "running".into(),
            Decision::Changed(why) => format!("redone: {}", why.join("; ")),
        }
    }

    pub fn reuses(&self) -> bool {
        matches!(self, Decision::Current)
    }
}

/// Where a stage's key lives.
pub fn key_path(work: &Path, stage: &str) -> PathBuf {
    work.join(format!("{stage}.key.json"))
}

/// Compares `key` with the one stored at `path`; `output_present` says whether the
/// stage's output is still there.
pub fn decide(path: &Path, key: &StageKey, output_present: bool) -> Result<Decision> {
    let body = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Decision::New),
        Err(e) => return Err(Error::io(path, e)),
    };
    let Ok(stored) = serde_json::from_slice::<Stored>(&body) else {
        return Ok(Decision::Changed(vec![format!(
            "{} is damaged",
            path.display()
        )]));
    };
    if stored.key != key.key {
        let mut why = Vec::new();
        diff("", &stored.inputs, &key.inputs, &mut why);
        if why.is_empty() {
            why.push("its key changed".into());
        }
        return Ok(Decision::Changed(why));
    }
    if !output_present {
        return Ok(Decision::Changed(vec!["its output is missing".into()]));
    }
    Ok(if stored.complete {
        Decision::Current
    } else {
        Decision::Resume
    })
}

/// Stores `key` at `path`; `complete` once the stage finished.
pub fn store(path: &Path, key: &StageKey, complete: bool) -> Result<()> {
    let stored = Stored {
        key: key.key.clone(),
        complete,
        inputs: key.inputs.clone(),
    };
    let body = serde_json::to_vec_pretty(&stored).unwrap_or_default();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Names every leaf that differs between `old` and `new` ("bm25_k: 10 → 20"); an
/// upstream stage's key (`after_<stage>`) is named as that stage.
fn diff(at: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let null = Value::Null;
                diff(
                    &path,
                    a.get(k).unwrap_or(&null),
                    b.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (a, b) if a != b => {
            if let Some(stage) = at.strip_prefix("after_") {
                out.push(format!("the {stage} stage changed"));
            } else if at == "version" {
                out.push(format!("sieve {a} → {b}"));
            } else {
                let show = |v: &Value| match v {
                    Value::Null => "(unset)".to_string(),
                    v => v.to_string(),
                };
                out.push(format!("{at}: {} → {}", show(a), show(b)));
            }
        }
        _ => {}
    }
}

/// A cheap identity for a file or directory: sizes and modification times (of every
/// file below a directory), hashed. Content hashes would read a corpus of gigabytes on
/// every run; a changed file changes its size or time.
pub fn fingerprint(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut files = Vec::new();
    walk(path, &mut files)?;
    files.sort();
    for f in files {
        let meta = std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let rel = f.strip_prefix(path).unwrap_or(&f);
        h.update(format!("{}\t{}\t{modified}\n", rel.display(), meta.len()).as_bytes());
    }
    Ok(format!("{:x}", h.finalize())[..16].to_string())
}

fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let p = entry.path();
        // Checkpoints and caches below a model directory are not the model.
        if p.file_name().is_some_and(|n| n == "checkpoints") {
            continue;
        }
        walk(&p, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_changed_setting_is_named_and_an_unchanged_one_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(dir.path(), "mine");
        let k1 = StageKey::new(json!({"settings": {"bm25_k": 10, "dense_k": 10}}));
        assert_eq!(decide(&path, &k1, false).unwrap(), Decision::New);
        store(&path, &k1, false).unwrap();
        assert_eq!(decide(&path, &k1, true).unwrap(), Decision::Resume);
        store(&path, &k1, true).unwrap();
        assert_eq!(decide(&path, &k1, true).unwrap(), Decision::Current);
        assert_eq!(
            decide(&path, &k1, false).unwrap(),
            Decision::Changed(vec!["its output is missing".into()])
        );
        let k2 =
            StageKey::new(json!({"settings": {"bm25_k": 20, "dense_k": 10}, "after_mine": "x"}));
        let Decision::Changed(why) = decide(&path, &k2, true).unwrap() else {
            panic!("not changed");
        };
        assert_eq!(
            why,
            vec![
                "the mine stage changed".to_string(),
                "settings.bm25_k: 10 → 20".to_string()
            ]
        );
    }

    #[test]
    fn a_fingerprint_follows_size_and_time_not_the_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        let f1 = fingerprint(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("checkpoints")).unwrap();
        std::fs::write(dir.path().join("checkpoints/x"), "2").unwrap();
        assert_eq!(fingerprint(dir.path()).unwrap(), f1);
        std::fs::write(dir.path().join("a"), "12").unwrap();
        assert_ne!(fingerprint(dir.path()).unwrap(), f1);
    }
}
