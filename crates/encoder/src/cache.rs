//! On-disk embedding cache, so that re-running an evaluation never re-encodes.
//!
//! An entry is keyed by the encoder fingerprint (weights, config, pooling, max length)
//! and a hash of the exact texts in order; any change to either is a different file.
//! Files are written to a temporary name and renamed, so a crash leaves either a whole
//! entry or none, and a length check on read rejects a truncated file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// File magic and format version; bump the digit to invalidate old caches.
const MAGIC: &[u8; 8] = b"SIEVEEM1";

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

    /// The cached `n × dim` matrix for these texts, or `None` if absent or unreadable
    /// (a damaged entry is treated as a miss and later overwritten).
    pub fn get(&self, fingerprint: &str, texts: &[&str], dim: usize) -> Option<Vec<f32>> {
        let path = self.path(fingerprint, texts);
        let mut file = std::fs::File::open(&path).ok()?;
        let mut header = [0u8; 24];
        file.read_exact(&mut header).ok()?;
        if &header[..8] != MAGIC {
            return None;
        }
        let n = u64::from_le_bytes(header[8..16].try_into().ok()?) as usize;
        let d = u64::from_le_bytes(header[16..24].try_into().ok()?) as usize;
        if n != texts.len() || d != dim {
            return None;
        }
        let mut bytes = Vec::with_capacity(n * d * 4);
        file.read_to_end(&mut bytes).ok()?;
        if bytes.len() != n * d * 4 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    pub fn put(&self, fingerprint: &str, texts: &[&str], dim: usize, data: &[f32]) -> Result<()> {
        let path = self.path(fingerprint, texts);
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            f.write_all(MAGIC)?;
            f.write_all(&(texts.len() as u64).to_le_bytes())?;
            f.write_all(&(dim as u64).to_le_bytes())?;
            for v in data {
                f.write_all(&v.to_le_bytes())?;
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

/// Embeds `texts` with `encoder`, reading and filling `cache` when given; `progress`
/// receives the number of texts finished after each batch (not called on a hit).
pub fn encode_cached(
    encoder: &crate::Encoder,
    texts: &[&str],
    batch_size: usize,
    cache: Option<&EmbeddingCache>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<f32>> {
    if let Some(hit) = cache.and_then(|c| c.get(encoder.fingerprint(), texts, encoder.dim())) {
        return Ok(hit);
    }
    let emb = encoder.encode(texts, batch_size, progress)?;
    if let Some(c) = cache {
        c.put(encoder.fingerprint(), texts, emb.dim, &emb.data)?;
    }
    Ok(emb.data)
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
        assert_eq!(cache.get("f00d", &texts, 2).unwrap(), data);
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
}
