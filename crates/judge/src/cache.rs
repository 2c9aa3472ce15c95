//! The judge's verdict store: content-addressed, append-only, crash-safe.
//!
//! A verdict is keyed by SHA-256 over (judge model, template hash, document token
//! budget, query text, document text), so a changed prompt, model or text is a
//! different pair, and the same pair in another dataset or run is paid for once.
//! Each verdict is one line, `JSON<TAB>checksum`, appended with a single `write`; a
//! process killed mid-write leaves at most one torn last line, which the next open
//! skips (and terminates, so the next append starts on a fresh line). Lines whose
//! checksum does not match are skipped and counted, never trusted.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::score::Method;
use crate::{Error, Result};

/// Format tag mixed into every key; bump to invalidate all stored verdicts.
const KEY_VERSION: &str = "sieve-judge-v1";

/// Hex digits of the per-line checksum (a truncated SHA-256 of the JSON part).
const CHECKSUM_HEX: usize = 16;

/// Identity of a judged pair.
pub fn pair_key(
    model: &str,
    template_hash: &str,
    max_doc_tokens: usize,
    query: &str,
    doc: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        KEY_VERSION,
        model,
        template_hash,
        &max_doc_tokens.to_string(),
        query,
        doc,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// One stored verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "p")]
    pub p_relevant: f32,
    #[serde(rename = "m")]
    pub method: String,
    #[serde(rename = "pt")]
    pub prompt_tokens: u64,
    #[serde(rename = "ct")]
    pub completion_tokens: u64,
    #[serde(rename = "tr")]
    pub truncated: bool,
}

impl Entry {
    pub fn method(&self) -> Option<Method> {
        Method::from_name(&self.method)
    }
}

fn checksum(json: &str) -> String {
    let d = format!("{:x}", Sha256::digest(json.as_bytes()));
    d[..CHECKSUM_HEX].to_string()
}

/// The store, loaded into memory and open for appending.
pub struct VerdictCache {
    path: PathBuf,
    file: File,
    entries: HashMap<String, Entry>,
    /// Lines skipped on open (torn or corrupted).
    pub skipped_lines: usize,
    /// Opened by [`VerdictCache::open_shared`]: the lock file that every read and
    /// append of the shards takes (`<cache>.lock`).
    append_lock: Option<File>,
}

impl VerdictCache {
    /// [`Self::open`] (or [`Self::open_shared`]), telling `progress` how many damaged lines were skipped (their
    /// pairs are judged again).
    pub fn open_noting(
        path: &Path,
        shared: bool,
        progress: &dyn sieve_datasets::Progress,
    ) -> Result<Self> {
        let cache = Self::open_as(path, shared)?;
        if cache.skipped_lines > 0 {
            progress.note(&format!(
                "note: {} damaged lines skipped in {} (those pairs will be judged again)",
                cache.skipped_lines,
                path.display()
            ));
        }
        Ok(cache)
    }

    /// Opens (creating) the store at `path` for this run alone: it holds the file's
    /// lock until it ends (two unsharded runs on one cache would judge the same pairs
    /// twice and store both verdicts), so a second opener is refused.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_as(path, false)
    }

    /// Opens (creating) `path` for one of several processes writing it at once: the
    /// shards of one judging run (`sieve judge --shard`), on one machine or on a shared
    /// filesystem. Each holds a shared lock on the cache for its run, so a run that
    /// wants it alone is refused while any shard works (and a shard while such a run
    /// works). The file is read, and each verdict appended, under the exclusive lock of
    /// `<cache>.lock` (`flock`, which Linux's NFS client maps onto byte-range locks), so
    /// that no process reads another's line half-written; an append first ends a line
    /// that a killed shard left torn, so the next verdict is not glued to it.
    pub fn open_shared(path: &Path) -> Result<Self> {
        Self::open_as(path, true)
    }

    fn open_as(path: &Path, shared: bool) -> Result<Self> {
        /// Retries of a busy lock, and the pause between them: about a second in all.
        const LOCK_RETRIES: usize = 20;
        const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // The locks die with the process, so a kill -9 never leaves the cache locked.
        // A lock can outlive its holder's close by a moment: a thread of the same
        // process that forks a child (to spawn a server, a test runner's next test)
        // copies every descriptor into it until the child's exec closes them. So a
        // busy cache is tried again for about a second before it is refused (a flaky
        // "in use" between two tests of one process came from exactly that).
        let try_lock = || {
            if shared {
                file.try_lock_shared()
            } else {
                file.try_lock()
            }
        };
        let mut locked = try_lock();
        for _ in 0..LOCK_RETRIES {
            if !matches!(locked, Err(std::fs::TryLockError::WouldBlock)) {
                break;
            }
            std::thread::sleep(LOCK_RETRY_PAUSE);
            locked = try_lock();
        }
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Cache {
                    path: path.to_path_buf(),
                    message: if shared {
                        "in use by a sieve run that holds it alone; the shards of a run may share a verdict cache, an unsharded run may not (or pass another --cache)"
                    } else {
                        "in use by another sieve process; one run at a time may write a verdict cache (or pass another --cache; the shards of one run, --shard, share one)"
                    }
                    .into(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
        let append_lock = if shared {
            let mut name = path.as_os_str().to_owned();
            name.push(".lock");
            let lock_path = PathBuf::from(name);
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| Error::io(&lock_path, e))?;
            lock.lock().map_err(|e| Error::io(&lock_path, e))?;
            Some(lock)
        } else {
            None
        };
        let mut entries = HashMap::new();
        let mut skipped = 0;
        let mut reader = BufReader::new(&file);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let n = reader
                .read_until(b'\n', &mut raw)
                .map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            let Some(raw_body) = raw.strip_suffix(b"\n") else {
                skipped += 1; // torn last line
                break;
            };
            // A damaged byte that is not UTF-8 spoils its line only, like any other
            // damage (it once made the whole cache unreadable).
            let Ok(body) = std::str::from_utf8(raw_body) else {
                skipped += 1;
                continue;
            };
            let parsed = body
                .rsplit_once('\t')
                .filter(|(json, sum)| checksum(json) == *sum)
                .and_then(|(json, _)| serde_json::from_str::<Entry>(json).ok());
            match parsed {
                Some(e) => {
                    entries.insert(e.key.clone(), e);
                }
                None => skipped += 1,
            }
        }
        drop(reader);
        // Terminate a torn last line so that the next record starts cleanly.
        end_torn_line(&mut file).map_err(|e| Error::io(path, e))?;
        if let Some(lock) = &append_lock {
            lock.unlock().map_err(|e| Error::io(path, e))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            entries,
            skipped_lines: skipped,
            append_lock,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a verdict with one `write` call (the line reaches the OS before this
    /// returns, so only the machine crashing, not the process, can lose it); a shared
    /// cache takes the file's lock around it.
    pub fn put(&mut self, entry: Entry) -> Result<()> {
        let json = serde_json::to_string(&entry).map_err(|e| Error::Cache {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let line = format!("{json}\t{}\n", checksum(&json));
        match &self.append_lock {
            None => self.file.write_all(line.as_bytes()),
            Some(lock) => {
                lock.lock().map_err(|e| Error::io(&self.path, e))?;
                let written = end_torn_line(&mut self.file)
                    .and_then(|()| self.file.write_all(line.as_bytes()));
                lock.unlock().map_err(|e| Error::io(&self.path, e))?;
                written
            }
        }
        .map_err(|e| Error::io(&self.path, e))?;
        self.entries.insert(entry.key.clone(), entry);
        Ok(())
    }

    /// Flushes to stable storage (called at the end of a run and periodically).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

/// Ends the file's last line if a killed writer left it torn (no final newline), so
/// that the next record starts on a line of its own. The file is open for appending.
fn end_torn_line(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.log");
        let first = VerdictCache::open(&path).unwrap();
        let err = VerdictCache::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("in use by another sieve process") && err.contains("v.log"),
            "{err}"
        );
        drop(first);
        VerdictCache::open(&path).unwrap();
    }

    /// Child side of [`concurrent_writers_and_readers_lose_and_tear_nothing`] (ignored:
    /// that test runs it with `--ignored`): appends `n` long verdicts to the shared
    /// cache at `path` (`SIEVE_CACHE_WRITER=path:id:n`), re-opening it every 50 to read
    /// what the others wrote meanwhile; any line read torn or corrupt fails it.
    #[test]
    #[ignore = "a child process of concurrent_writers_and_readers_lose_and_tear_nothing"]
    fn shared_cache_writer_child() {
        let spec = std::env::var("SIEVE_CACHE_WRITER")
            .expect("SIEVE_CACHE_WRITER=path:id:n (run by the concurrent-writers test)");
        let mut parts = spec.rsplitn(3, ':');
        let n: usize = parts.next().unwrap().parse().unwrap();
        let id = parts.next().unwrap().to_string();
        let path = PathBuf::from(parts.next().unwrap());
        let mut c = VerdictCache::open_shared(&path).unwrap();
        for i in 0..n {
            // Lines of ~5 KB: longer than a pipe's atomic write, so an unlocked reader
            // could see one half-written.
            let mut e = entry(&format!("{id}-{i}-{}", "x".repeat(5000)), 0.5);
            e.prompt_tokens = i as u64;
            c.put(e).unwrap();
            if i % 50 == 49 {
                let seen = VerdictCache::open_shared(&path).unwrap();
                assert_eq!(seen.skipped_lines, 0, "{id} read a torn or corrupt line");
                drop(seen);
            }
        }
    }

    /// Four processes append to one shared cache at once (the shards of a judging run
    /// on a shared filesystem), each re-reading it as they go: every verdict is there
    /// once and no line is torn or corrupt. A run that holds the cache alone and a
    /// shard keep each other out; a torn line left by a killed shard costs only itself.
    #[test]
    fn concurrent_writers_and_readers_lose_and_tear_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.log");
        let exe = std::env::current_exe().unwrap();
        let (writers, per) = (4, 300);
        let mut running: Vec<std::process::Child> = (0..writers)
            .map(|id| {
                std::process::Command::new(&exe)
                    .args(["cache::tests::shared_cache_writer_child", "--exact"])
                    .arg("--ignored")
                    .env(
                        "SIEVE_CACHE_WRITER",
                        format!("{}:w{id}:{per}", path.display()),
                    )
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in running.drain(..) {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "a writer failed:\n{text}");
            assert!(
                text.contains("test result: ok. 1 passed"),
                "no writer ran:\n{text}"
            );
        }
        let c = VerdictCache::open(&path).unwrap();
        assert_eq!(c.skipped_lines, 0);
        assert_eq!(c.len(), writers * per, "verdicts were lost or merged");
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, writers * per, "a verdict was written twice");
        for id in ["w0", "w3"] {
            let e = c
                .get(&format!("{id}-{}-{}", per - 1, "x".repeat(5000)))
                .unwrap();
            assert_eq!(e.prompt_tokens, per as u64 - 1);
        }
        // A run holding the cache alone keeps shards out, and a working shard keeps
        // such a run out.
        let err = VerdictCache::open_shared(&path).err().unwrap().to_string();
        assert!(err.contains("holds it alone"), "{err}");
        drop(c);
        let mut shard = VerdictCache::open_shared(&path).unwrap();
        let err = VerdictCache::open(&path).err().unwrap().to_string();
        assert!(err.contains("in use by another sieve process"), "{err}");
        // A shard killed mid-append leaves a torn line: the next shard's append ends it
        // first, so only the fragment is lost, never the verdict written after it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"k\":\"torn\",\"p\":0.")
            .unwrap();
        shard.put(entry("after-the-tear", 0.25)).unwrap();
        drop(shard);
        let c = VerdictCache::open(&path).unwrap();
        assert_eq!(c.skipped_lines, 1, "only the fragment is skipped");
        assert_eq!(c.get("after-the-tear").unwrap().p_relevant, 0.25);
        assert_eq!(c.len(), writers * per + 1);
    }

    fn entry(k: &str, p: f32) -> Entry {
        Entry {
            key: k.into(),
            p_relevant: p,
            method: "logprobs".into(),
            prompt_tokens: 100,
            completion_tokens: 1,
            truncated: false,
        }
    }

    #[test]
    fn keys_depend_on_every_part() {
        let base = pair_key("m", "t", 512, "q", "d");
        assert_ne!(base, pair_key("m2", "t", 512, "q", "d"));
        assert_ne!(base, pair_key("m", "t2", 512, "q", "d"));
        assert_ne!(base, pair_key("m", "t", 256, "q", "d"));
        assert_ne!(base, pair_key("m", "t", 512, "qd", ""));
        assert_eq!(base, pair_key("m", "t", 512, "q", "d"));
    }

    #[test]
    fn survives_torn_and_corrupt_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("judge/verdicts.log");
        {
            let mut c = VerdictCache::open(&path).unwrap();
            c.put(entry("a", 0.9)).unwrap();
            c.put(entry("b", 0.1)).unwrap();
            c.put(entry("c", 0.5)).unwrap();
        }
        // Corrupt b's line, and tear a fourth line as a kill mid-write would.
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replacen("\"p\":0.1", "\"p\":0.7", 1) + "{\"k\":\"d\",\"p\":0.";
        std::fs::write(&path, text).unwrap();
        let mut c = VerdictCache::open(&path).unwrap();
        assert_eq!(c.skipped_lines, 2);
        assert_eq!(c.get("a").unwrap().p_relevant, 0.9);
        assert!(c.get("b").is_none(), "a corrupted verdict is never trusted");
        assert!(c.get("d").is_none());
        c.put(entry("e", 0.2)).unwrap();
        drop(c);
        let c = VerdictCache::open(&path).unwrap();
        assert_eq!(c.len(), 3); // a, c, e
        assert_eq!(c.get("e").unwrap().p_relevant, 0.2);
        assert_eq!(c.skipped_lines, 2);
    }

    /// One byte that is not UTF-8 costs its line only (it once made the judge fail
    /// with "stream did not contain valid UTF-8" and no line number).
    #[test]
    fn a_non_utf8_byte_spoils_only_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verdicts.log");
        {
            let mut c = VerdictCache::open(&path).unwrap();
            c.put(entry("a", 0.9)).unwrap();
            c.put(entry("b", 0.1)).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(7).position(|w| w == b"\"k\":\"b\"").unwrap();
        bytes[at + 5] = 0xff;
        std::fs::write(&path, bytes).unwrap();
        let c = VerdictCache::open(&path).unwrap();
        assert_eq!(c.skipped_lines, 1);
        assert_eq!(c.get("a").unwrap().p_relevant, 0.9);
        assert!(c.get("b").is_none());
    }
}
