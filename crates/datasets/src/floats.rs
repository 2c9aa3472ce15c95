//! A float32 buffer that is either owned or a private, copy-on-write mapping of the
//! file it came from.
//!
//! Why: a 1M × 384 corpus matrix is 1.5 GB. Reading it copies every byte into
//! anonymous memory while the page cache holds a second copy, and the caller waits for
//! the whole read before the first product can start. Mapped, the matrix is read in
//! place as the search touches it, shares the page cache with every other process
//! reading the same file, and costs nothing up front. The mapping is private
//! (`MAP_PRIVATE`): writing to it (normalising a row in place) copies that page and
//! never changes the file.
//!
//! A mapping is only made where it is exact: little-endian hosts, a payload that
//! starts on a 4-byte boundary and fills the rest of the file. Anything else is read
//! into an owned buffer, so callers never need to care which they got.
//!
//! One caveat of every mapped file: if another process truncates the file while it
//! is mapped, touching a page past the new end raises `SIGBUS`. sieve's own files are
//! written to a temporary name and renamed, which never truncates a mapped inode.

use std::fs::File;
use std::ops::{Deref, DerefMut};

/// `len` f32 values, owned or mapped; derefs to `[f32]`.
pub struct Floats(Repr);

enum Repr {
    Owned(Vec<f32>),
    Mapped { map: memmap2::MmapMut, len: usize },
}

impl Floats {
    /// Maps `len` little-endian f32 values at byte `offset` of `file`, privately.
    /// `Ok(None)` when a mapping could not be exact (big-endian host, an offset that
    /// is not a multiple of 4, or nothing to map); the caller then reads instead.
    ///
    /// The caller checks first that `offset + 4 * len` is within the file: mapping
    /// past its end would make the last pages fault.
    pub fn map(file: &File, offset: u64, len: usize) -> std::io::Result<Option<Self>> {
        if cfg!(target_endian = "big") || !offset.is_multiple_of(4) || len == 0 {
            return Ok(None);
        }
        let bytes = len
            .checked_mul(4)
            .ok_or_else(|| std::io::Error::other("mapping larger than the address space"))?;
        // SAFETY: the mapping is private, so writes through it never reach the file.
        // The file being truncated by someone else while mapped is the one hazard
        // (SIGBUS); see the module docs.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(bytes)
                .map_copy(file)?
        };
        // memmap2 maps from the page below `offset` and points at `offset`, so the
        // pointer's alignment is the offset's: 4 bytes, as f32 needs.
        if !(map.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>()) {
            return Ok(None);
        }
        Ok(Some(Floats(Repr::Mapped { map, len })))
    }

    /// Whether the values live in a file mapping (rather than owned memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }

    /// The values as an owned vector (a copy when mapped).
    pub fn into_vec(self) -> Vec<f32> {
        match self.0 {
            Repr::Owned(v) => v,
            Repr::Mapped { .. } => self.to_vec(),
        }
    }
}

impl From<Vec<f32>> for Floats {
    fn from(v: Vec<f32>) -> Self {
        Floats(Repr::Owned(v))
    }
}

impl Deref for Floats {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.0 {
            Repr::Owned(v) => v,
            // SAFETY: `map` checked the pointer's alignment and that the mapping holds
            // `len * 4` bytes; every bit pattern is a valid f32.
            Repr::Mapped { map, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<f32>(), *len)
            },
        }
    }
}

impl DerefMut for Floats {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut self.0 {
            Repr::Owned(v) => v,
            // SAFETY: as in `deref`; the mapping is private and writable.
            Repr::Mapped { map, len } => unsafe {
                std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<f32>(), *len)
            },
        }
    }
}

impl Clone for Floats {
    /// A clone is always owned: a second private mapping would not see the first's
    /// writes.
    fn clone(&self) -> Self {
        Floats(Repr::Owned(self.to_vec()))
    }
}

impl std::fmt::Debug for Floats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Floats")
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl PartialEq for Floats {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_private_mapping_reads_the_file_and_never_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        let values: Vec<f32> = (0..3000).map(|i| i as f32 * 0.25).collect();
        let mut f = File::create(&path).unwrap();
        f.write_all(&[7u8; 8]).unwrap();
        for v in &values {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
        drop(f);
        let before = std::fs::read(&path).unwrap();
        let file = File::open(&path).unwrap();
        let mut m = Floats::map(&file, 8, values.len()).unwrap().unwrap();
        assert!(m.is_mapped());
        assert_eq!(&m[..], &values[..]);
        m[0] = -1.0;
        m[2999] = 42.0;
        assert_eq!((m[0], m[1], m[2999]), (-1.0, 0.25, 42.0));
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
        let c = m.clone();
        assert!(!c.is_mapped() && c == m);
        assert_eq!(m.into_vec()[2999], 42.0);
        // Unaligned offsets and empty ranges are left to the caller to read.
        assert!(Floats::map(&file, 2, 10).unwrap().is_none());
        assert!(Floats::map(&file, 8, 0).unwrap().is_none());
    }
}
