//! Float32 matrices as NumPy `.npy` files: what `sieve encode` writes and what the
//! miner accepts as precomputed embeddings (from text-embeddings-inference, numpy,
//! another model), so that a corpus is never embedded twice.

use std::io::{Read, Write};
use std::path::Path;

use crate::floats::Floats;
use crate::Error;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Writes a version-1 `.npy` header and little-endian float32 rows, atomically.
pub fn write_npy(path: &Path, data: &[f32], rows: usize, dim: usize) -> Result<(), Error> {
    if data.len() != rows * dim {
        return Err(Error::Format {
            path: path.to_path_buf(),
            problem: format!("{} values do not make {rows} rows of {dim}", data.len()),
        });
    }
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let tmp = path.with_extension("npy.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&[1, 0])?;
        f.write_all(&(header.len() as u16).to_le_bytes())?;
        f.write_all(header.as_bytes())?;
        for v in data {
            f.write_all(&v.to_le_bytes())?;
        }
        f.flush()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Reads a C-order float32 (`<f4`) 2-D `.npy` file: `(rows, dim, data)`. A 1-D array
/// is one row. Anything else (float64, Fortran order, big-endian) is refused with
/// the header in the message, rather than silently converted.
pub fn read_npy(path: &Path) -> Result<(usize, usize, Vec<f32>), Error> {
    let (mut f, layout) = open(path)?;
    Ok((
        layout.rows,
        layout.dim,
        read_payload(path, &mut f, &layout)?,
    ))
}

/// As [`read_npy`], but the matrix is a private copy-on-write mapping of the file
/// where that is exact (see [`Floats`]): a multi-GB corpus matrix is then read in
/// place as it is used, not copied up front. The same checks and errors as
/// `read_npy`; a file that cannot be mapped exactly is read instead.
pub fn read_npy_mapped(path: &Path) -> Result<(usize, usize, Floats), Error> {
    let (mut f, layout) = open(path)?;
    let data = match Floats::map(&f, layout.start, layout.len).map_err(|e| Error::io(path, e))? {
        Some(m) => m,
        None => read_payload(path, &mut f, &layout)?.into(),
    };
    Ok((layout.rows, layout.dim, data))
}

/// Where a checked `.npy` file's payload lies.
struct Layout {
    rows: usize,
    dim: usize,
    /// Byte offset of the first value.
    start: u64,
    /// Number of f32 values: `rows * dim`, and exactly what the file holds after
    /// the header.
    len: usize,
}

/// Opens `path` and checks its header against its size.
fn open(path: &Path) -> Result<(std::fs::File, Layout), Error> {
    let bad = |problem: String| Error::Format {
        path: path.to_path_buf(),
        problem,
    };
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut pre = [0u8; 8];
    f.read_exact(&mut pre).map_err(|e| Error::io(path, e))?;
    if &pre[..6] != MAGIC {
        return Err(bad("not a .npy file (bad magic)".into()));
    }
    let header_len = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            f.read_exact(&mut b).map_err(|e| Error::io(path, e))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            f.read_exact(&mut b).map_err(|e| Error::io(path, e))?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    // Lengths come from the file: check them against its size before allocating, so
    // that a damaged header is an error rather than a multi-GB allocation that aborts.
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let start = pre.len() as u64 + if pre[6] == 1 { 2 } else { 4 };
    if header_len as u64 > size.saturating_sub(start) {
        return Err(bad(format!(
            "header of {header_len} bytes, but the file has {size} bytes in all"
        )));
    }
    let mut header = vec![0u8; header_len];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let header = String::from_utf8_lossy(&header).into_owned();
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'descr':'<f4'") {
        return Err(bad(format!("expected float32 ('<f4'), header {header:?}")));
    }
    if compact.contains("'fortran_order':True") {
        return Err(bad("Fortran-order arrays are not supported".into()));
    }
    let shape = compact
        .split("'shape':(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(format!("no shape in header {header:?}")))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(format!("bad shape ({shape})")))?;
    let (rows, dim) = match dims.as_slice() {
        [n] => (1, *n),
        [r, d] => (*r, *d),
        _ => return Err(bad(format!("expected a 2-D array, shape ({shape})"))),
    };
    let start = start + header_len as u64;
    let payload = size.saturating_sub(start);
    let len = match rows.checked_mul(dim) {
        Some(n) if n.checked_mul(4).is_some_and(|b| b as u64 == payload) => n,
        _ => {
            return Err(bad(format!(
                "shape ({rows}, {dim}) needs {} bytes of data, found {payload} ({})",
                rows.checked_mul(dim)
                    .and_then(|n| n.checked_mul(4))
                    .map_or("more than 2^64".to_string(), |b| b.to_string()),
                if rows
                    .checked_mul(dim)
                    .and_then(|n| n.checked_mul(4))
                    .is_some_and(|b| (b as u64) < payload)
                {
                    "trailing bytes after the array"
                } else {
                    "truncated?"
                }
            )))
        }
    };
    Ok((
        f,
        Layout {
            rows,
            dim,
            start,
            len,
        },
    ))
}

/// Reads the payload `open` checked into an owned buffer.
fn read_payload(path: &Path, f: &mut std::fs::File, layout: &Layout) -> Result<Vec<f32>, Error> {
    let len = layout.len;
    // Read straight into the f32 buffer (no second copy of a multi-GB matrix), then
    // fix the byte order in place (a no-op on little-endian machines).
    let mut data = vec![0f32; len];
    // SAFETY: any byte pattern is a valid f32; the slice covers exactly `data`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), len * 4) };
    let mut filled = 0;
    while filled < bytes.len() {
        match f.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    // The size was checked in `open`; a shorter read means the file shrank since.
    if filled != bytes.len() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            problem: format!(
                "shape ({}, {}) needs {} bytes of data, found {filled} (truncated while reading?)",
                layout.rows,
                layout.dim,
                len * 4
            ),
        });
    }
    for v in &mut data {
        *v = f32::from_bits(u32::from_le(v.to_bits()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_npy(&p, &data, 3, 4).unwrap();
        assert_eq!(read_npy(&p).unwrap(), (3, 4, data.clone()));
        let (r, d, mapped) = read_npy_mapped(&p).unwrap();
        assert!(mapped.is_mapped(), "a 64-byte-aligned payload is mapped");
        assert_eq!((r, d, &mapped[..]), (3, 4, &data[..]));
        drop(mapped);
        // Trailing bytes are refused by both readers.
        let mut longer = std::fs::read(&p).unwrap();
        longer.extend([0u8; 4]);
        let q = dir.path().join("long.npy");
        std::fs::write(&q, &longer).unwrap();
        for err in [read_npy(&q).unwrap_err(), read_npy_mapped(&q).unwrap_err()] {
            assert!(err.to_string().contains("trailing"), "{err}");
        }
        // Header padded so that data starts on a 64-byte boundary, as numpy does.
        assert_eq!((std::fs::metadata(&p).unwrap().len() - 48) % 64, 0);
        assert!(write_npy(&p, &data, 5, 4).is_err());
        // Truncated data.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let err = read_npy(&p).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("a.npy"), "{err}");
        assert_eq!(read_npy_mapped(&p).unwrap_err().to_string(), err);
        // float64 is refused, naming the dtype.
        let hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }";
        let mut f64file = b"\x93NUMPY\x01\x00".to_vec();
        f64file.extend((hdr.len() as u16).to_le_bytes());
        f64file.extend(hdr.as_bytes());
        f64file.extend(1.0f64.to_le_bytes());
        std::fs::write(&p, f64file).unwrap();
        assert!(read_npy(&p).unwrap_err().to_string().contains("<f8"));
        // A payload that does not start on a 4-byte boundary (a hand-written header
        // of odd length) is read, not mapped, with the same values.
        let hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        assert_eq!(
            (10 + hdr.len()) % 4,
            3,
            "the test needs an unaligned payload"
        );
        let mut odd = b"\x93NUMPY\x01\x00".to_vec();
        odd.extend((hdr.len() as u16).to_le_bytes());
        odd.extend(hdr.as_bytes());
        odd.extend(1.5f32.to_le_bytes());
        odd.extend((-2.0f32).to_le_bytes());
        std::fs::write(&p, odd).unwrap();
        let (r, d, v) = read_npy_mapped(&p).unwrap();
        assert!(!v.is_mapped());
        assert_eq!((r, d, &v[..]), (1, 2, &[1.5, -2.0][..]));
    }
}
