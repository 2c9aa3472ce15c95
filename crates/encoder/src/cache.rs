//! On-disk embedding cache, so that re-running an evaluation never re-encodes.
//!
//! An entry is keyed by the encoder fingerprint (weights, config, pooling, max length)
//! and a hash of the exact texts in order; any change to either is a different file.
//! Files are written to a temporary name and renamed, so a crash leaves either a whole
//! entry or none. The header carries a SHA-256 of the matrix, checked on every read:
//! a truncated or overwritten entry is a miss (re-encoded, with a warning), never
//! embeddings silently wrong (30 overwritten rows once made an evaluation score 0.018
//! instead of 0.935).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sieve_datasets::floats::Floats;

use crate::error::{Error, Result};

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// File magic and format version; bump the digit to invalidate old caches (version 2
/// added the checksum).
const MAGIC: &[u8; 8] = b"SIEVEEM2";
/// Magic, rows, dimension, SHA-256 of the little-endian f32 payload.
const HEADER: usize = 8 + 8 + 8 + 32;

/// `SIEVE_CACHE_DIR`, else `$XDG_CACHE_HOME/sieve`, else `~/.cache/sieve`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIEVE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("sieve");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/sieve"))
        .unwrap_or_else(|| PathBuf::from(".cache/sieve"))
}

/// SHA-256 over the texts, each length-prefixed so that boundaries are part of the key.
pub fn texts_hash(texts: &[&str]) -> String {
    let mut h = Sha256::new();
    for t in texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    format!("{:x}", h.finalize())
}

#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    dir: PathBuf,
}

impl EmbeddingCache {
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("embeddings"),
        }
    }

    fn path(&self, fingerprint: &str, texts: &[&str]) -> PathBuf {
        let model = fingerprint.get(..16).unwrap_or(fingerprint);
        self.dir
            .join(model)
            .join(format!("{}.emb", texts_hash(texts)))
    }

    /// The cached `n × dim` matrix for these texts, or `None` if absent or damaged (a
    /// damaged entry is reported, treated as a miss and overwritten by the next put).
    /// The matrix is a private mapping of the entry (see [`Floats`]): a hit costs a
    /// checksum pass over the file, not a copy of it.
    pub fn get(&self, fingerprint: &str, texts: &[&str], dim: usize) -> Option<Floats> {
        let path = self.path(fingerprint, texts);
        let mut file = std::fs::File::open(&path).ok()?;
        match read_entry(&mut file, texts.len(), dim) {
            Ok(v) => Some(v),
            Err(why) => {
                tracing::warn!(
                    "{}: damaged embedding cache entry ({why}); encoding again",
                    path.display()
                );
                None
            }
        }
    }

    pub fn put(&self, fingerprint: &str, texts: &[&str], dim: usize, data: &[f32]) -> Result<()> {
        let path = self.path(fingerprint, texts);
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            // The checksum goes before the payload: hash, then write, in chunks (no
            // byte copy of a multi-GB matrix).
            let mut h = Sha256::new();
            let mut chunk = Vec::with_capacity(CHUNK * 4);
            for part in data.chunks(CHUNK) {
                chunk.clear();
                chunk.extend(part.iter().flat_map(|v| v.to_le_bytes()));
                h.update(&chunk);
            }
            f.write_all(MAGIC)?;
            f.write_all(&(texts.len() as u64).to_le_bytes())?;
            f.write_all(&(dim as u64).to_le_bytes())?;
            f.write_all(&h.finalize())?;
            for part in data.chunks(CHUNK) {
                chunk.clear();
                chunk.extend(part.iter().flat_map(|v| v.to_le_bytes()));
                f.write_all(&chunk)?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(&path, e)
        })
    }
}

/// Values per chunk when hashing or writing an entry.
const CHUNK: usize = 1 << 16;

/// Reads and checks one entry of `n × dim` values; the error says what is wrong.
fn read_entry(
    file: &mut std::fs::File,
    n: usize,
    dim: usize,
) -> std::result::Result<Floats, String> {
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header)
        .map_err(|e| format!("header: {e}"))?;
    if &header[..8] != MAGIC {
        return Err("not a current-format entry".into());
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (rows, d) = (word(8), word(16));
    if (rows, d) != (n, dim) {
        return Err(format!("{rows} × {d}, expected {n} × {dim}"));
    }
    let size = file.metadata().map_err(|e| format!("size: {e}"))?.len();
    let payload = size.saturating_sub(HEADER as u64);
    if payload != (n * dim * 4) as u64 {
        return Err(format!("{payload} payload bytes, expected {}", n * dim * 4));
    }
    let data = match Floats::map(file, HEADER as u64, n * dim).map_err(|e| format!("map: {e}"))? {
        Some(m) => m,
        None => {
            let mut bytes = Vec::with_capacity(n * dim * 4);
            file.read_to_end(&mut bytes)
                .map_err(|e| format!("payload: {e}"))?;
            if bytes.len() != n * dim * 4 {
                return Err(format!(
                    "{} payload bytes, expected {}",
                    bytes.len(),
                    n * dim * 4
                ));
            }
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<f32>>()
                .into()
        }
    };
    let mut h = Sha256::new();
    let mut chunk = Vec::with_capacity(CHUNK * 4);
    for part in data.chunks(CHUNK) {
        chunk.clear();
        chunk.extend(part.iter().flat_map(|v| v.to_le_bytes()));
        h.update(&chunk);
    }
    if h.finalize().as_slice() != &header[24..HEADER] {
        return Err("checksum mismatch: the file was changed after it was written".into());
    }
    Ok(data)
}

/// Embeds `texts` with `encoder`, reading and filling `cache` when given; `progress`
/// receives the number of texts finished after each batch (not called on a hit).
pub fn encode_cached(
    encoder: &crate::Encoder,
    texts: &[&str],
    batch_size: usize,
    cache: Option<&EmbeddingCache>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Floats> {
    if let Some(hit) = cache.and_then(|c| c.get(encoder.fingerprint(), texts, encoder.dim())) {
        return Ok(hit);
    }
    let emb = encoder.encode(texts, batch_size, progress)?;
    if let Some(c) = cache {
        c.put(encoder.fingerprint(), texts, emb.dim, &emb.data)?;
    }
    Ok(emb.data.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_keying() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(tmp.path());
        let texts = ["a", "bc"];
        let data = [1.0f32, 2.0, 3.0, 4.0];
        assert!(cache.get("f00d", &texts, 2).is_none());
        cache.put("f00d", &texts, 2, &data).unwrap();
        let hit = cache.get("f00d", &texts, 2).unwrap();
        assert_eq!(&hit[..], &data[..]);
        assert!(
            hit.is_mapped(),
            "a hit maps the entry rather than copying it"
        );
        // Different model, different texts, or a different boundary: misses.
        assert!(cache.get("beef", &texts, 2).is_none());
        assert!(cache.get("f00d", &["ab", "c"], 2).is_none());
        assert!(cache.get("f00d", &texts, 4).is_none());
    }

    #[test]
    fn truncated_entry_is_a_miss() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(tmp.path());
        let texts = ["x"];
        cache.put("m", &texts, 3, &[1.0, 2.0, 3.0]).unwrap();
        let path = cache.path("m", &texts);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 2).unwrap();
        assert!(cache.get("m", &texts, 3).is_none());
    }

    /// Rows overwritten in place, the length unchanged: the checksum rejects the entry
    /// (a length check alone once let 30 damaged rows through).
    #[test]
    fn an_overwritten_entry_of_the_right_length_is_a_miss() {
        use std::io::{Seek, SeekFrom};
        let tmp = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(tmp.path());
        let texts = ["x", "y"];
        let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        cache.put("m", &texts, 3, &data).unwrap();
        assert_eq!(&cache.get("m", &texts, 3).unwrap()[..], &data[..]);
        let path = cache.path("m", &texts);
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(HEADER as u64 + 4)).unwrap();
        f.write_all(&0.0f32.to_le_bytes()).unwrap();
        drop(f);
        assert!(cache.get("m", &texts, 3).is_none());
        // The next put repairs it.
        cache.put("m", &texts, 3, &data).unwrap();
        assert_eq!(&cache.get("m", &texts, 3).unwrap()[..], &data[..]);
    }
}
