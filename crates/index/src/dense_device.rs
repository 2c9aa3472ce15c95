//! Exact dense top-k on a candle device (a GPU), for `sieve mine` and `sieve eval` when
//! they embed on one.
//!
//! The corpus is uploaded once and the queries go in blocks. Each corpus chunk is
//! scored by one matrix product, appended to each query's running top-k, and the
//! pair is sorted on the device: the first `k` of each row are kept. Only the final
//! `k` hits per query come back to the host. The chunk is `SORT_WIDTH − k` rows wide
//! so that the sorted rows are `SORT_WIDTH` = 2,048 wide: candle's CUDA arg-sort sorts
//! one row per thread block in shared memory (8 KiB a row here), so `k` up to 1,022
//! (MTEB's 1,000 plus a dropped identical id) stays on the device.
//!
//! On the CPU [`crate::exact_top_k`] is faster (a fused scan with bounded heaps, no
//! sorts), and [`exact_top_k_on`] calls it there; [`DeviceCorpus`] runs on the CPU
//! too, which is how it is tested against it.

use candle_core::{DType, Device, Tensor};

use crate::{exact_top_k, Error, Hit};

/// Columns of one device sort: the running top-k plus a chunk of the corpus.
const SORT_WIDTH: usize = 2048;

/// Queries scored together: a `4096 × 2048` f32 score block is 32 MiB.
const QUERY_BLOCK: usize = 4096;

/// Exact top-k by inner product of `queries` (`nq × dim`) against `corpus` (`n × dim`),
/// on `device`: [`crate::exact_top_k`] on the CPU, [`DeviceCorpus`] elsewhere (the
/// corpus uploaded for this call; keep a [`DeviceCorpus`] to search it again).
pub fn exact_top_k_on(
    device: &Device,
    queries: &[f32],
    corpus: &[f32],
    dim: usize,
    k: usize,
    skip: &(dyn Fn(usize, usize) -> bool + Sync),
    skip_most: usize,
) -> Result<Vec<Vec<Hit>>, Error> {
    if device.is_cpu() || !DeviceCorpus::fits(k, skip_most) {
        return Ok(exact_top_k(queries, corpus, dim, k, skip));
    }
    DeviceCorpus::upload(device, corpus, dim)?.top_k(queries, k, skip, skip_most)
}

/// A corpus's embeddings resident on a device, searched exactly by inner product
/// (cosine when the caller's rows are L2-normalised, as sieve's embeddings are).
pub struct DeviceCorpus {
    table: Tensor,
    n: usize,
    dim: usize,
}

impl DeviceCorpus {
    /// Copies `corpus` (`n × dim`, row-major) to `device`.
    pub fn upload(device: &Device, corpus: &[f32], dim: usize) -> Result<Self, Error> {
        if dim == 0 || !corpus.len().is_multiple_of(dim) {
            return Err(Error::Embed(format!(
                "dense top-k: {} corpus values are not rows of dimension {dim}",
                corpus.len()
            )));
        }
        let n = corpus.len() / dim;
        let table = Tensor::from_slice(corpus, (n, dim), device).map_err(|e| {
            Error::Embed(format!(
                "uploading {n} × {dim} embeddings to {device:?}: {e}"
            ))
        })?;
        Ok(Self { table, n, dim })
    }

    /// Whether a search `k` deep (plus `skip_most` dropped hits) leaves chunks wide
    /// enough for the device path; deeper searches belong to [`crate::exact_top_k`].
    pub fn fits(k: usize, skip_most: usize) -> bool {
        k + skip_most < SORT_WIDTH / 2
    }

    pub fn device(&self) -> &Device {
        self.table.device()
    }

    /// The top `k` of every query, best first. `skip(query, doc)` drops pairs, at most
    /// `skip_most` per query (a query's own id: 1): they are fetched beyond `k` and
    /// dropped on the host. NaN scores are never returned. Ties are broken by lower
    /// document index among the hits kept, as on the CPU; but the device sort is not
    /// stable, so when documents tie exactly at the `k`-th score (duplicate texts),
    /// which of them makes the cut may differ from [`crate::exact_top_k`].
    pub fn top_k(
        &self,
        queries: &[f32],
        k: usize,
        skip: &(dyn Fn(usize, usize) -> bool + Sync),
        skip_most: usize,
    ) -> Result<Vec<Vec<Hit>>, Error> {
        let (n, dim) = (self.n, self.dim);
        let device = self.table.device();
        let err = |e: candle_core::Error| Error::Embed(format!("dense top-k on {device:?}: {e}"));
        if !queries.len().is_multiple_of(dim) {
            return Err(Error::Embed(format!(
                "dense top-k: {} query values are not rows of dimension {dim}",
                queries.len()
            )));
        }
        let nq = queries.len() / dim;
        if n == 0 || k == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        let keep = k + skip_most;
        if keep >= SORT_WIDTH {
            return Err(Error::Embed(format!(
                "dense top-k on the device: k {k} + {skip_most} is past {SORT_WIDTH}"
            )));
        }
        let chunk = SORT_WIDTH - keep;
        let mut out = Vec::with_capacity(nq);
        for (block, rows) in queries.chunks(QUERY_BLOCK * dim).enumerate() {
            let b = rows.len() / dim;
            let q = Tensor::from_slice(rows, (b, dim), device).map_err(err)?;
            let (scores, ids) = block_top(&q, &self.table, n, chunk, keep).map_err(err)?;
            let scores = scores.to_vec2::<f32>().map_err(err)?;
            let ids = ids.to_vec2::<u32>().map_err(err)?;
            for (i, (s, d)) in scores.into_iter().zip(ids).enumerate() {
                let qi = block * QUERY_BLOCK + i;
                let mut hits: Vec<Hit> = s
                    .into_iter()
                    .zip(d)
                    .filter(|(score, doc)| score.is_finite() && !skip(qi, *doc as usize))
                    .map(|(score, doc)| Hit { doc, score })
                    .collect();
                // The device sort is not stable: break ties by document as the CPU does.
                hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
                hits.truncate(k);
                out.push(hits);
            }
        }
        Ok(out)
    }
}

/// The `keep` best (score, document) of every row of `q` against the `n`-row `table`,
/// best first: chunk by chunk, each appended to the running best and sorted.
fn block_top(
    q: &Tensor,
    table: &Tensor,
    n: usize,
    chunk: usize,
    keep: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let b = q.dim(0)?;
    let device = q.device();
    let mut best: Option<(Tensor, Tensor)> = None;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let scores = q.matmul(&table.narrow(0, start, len)?.t()?)?;
        // NaN would sort unpredictably: it goes last, and the host drops it.
        let scores = scores
            .ne(&scores)?
            .where_cond(&Tensor::full(f32::NEG_INFINITY, (b, len), device)?, &scores)?;
        let ids = Tensor::arange(start as u32, (start + len) as u32, device)?
            .unsqueeze(0)?
            .broadcast_as((b, len))?
            .contiguous()?;
        let (s, i) = match best.take() {
            Some((bs, bi)) => (
                Tensor::cat(&[&bs, &scores], 1)?,
                Tensor::cat(&[&bi, &ids], 1)?,
            ),
            None => (scores, ids),
        };
        let order = s.arg_sort_last_dim(false)?;
        let top = order.narrow(1, 0, keep.min(s.dim(1)?))?.contiguous()?;
        best = Some((s.gather(&top, 1)?, i.gather(&top, 1)?));
        start += len;
    }
    match best {
        Some((s, i)) => Ok((s.to_dtype(DType::F32)?, i)),
        None => candle_core::bail!("an empty corpus"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The device path (run on the CPU) returns the CPU scan's hits: the same
    /// documents, order and scores, across several chunks and query blocks, with
    /// exclusions and a NaN row.
    #[test]
    fn device_path_equals_the_cpu_scan() {
        let dim = 16;
        let (nq, n) = (QUERY_BLOCK + 37, 2500);
        let queries = random(nq * dim, 7);
        let mut corpus = random(n * dim, 11);
        corpus[3 * dim] = f32::NAN; // document 3 scores NaN everywhere
        let skip = |q: usize, d: usize| d == q % n;
        for k in [1, 10, 100, 700] {
            let cpu = exact_top_k(&queries, &corpus, dim, k, &skip);
            let dev = DeviceCorpus::upload(&Device::Cpu, &corpus, dim)
                .unwrap()
                .top_k(&queries, k, &skip, 1)
                .unwrap();
            assert_eq!(cpu.len(), dev.len());
            for (qi, (a, b)) in cpu.iter().zip(&dev).enumerate() {
                assert_eq!(a.len(), k);
                let docs = |h: &[Hit]| h.iter().map(|x| x.doc).collect::<Vec<_>>();
                assert_eq!(docs(a), docs(b), "k {k}, query {qi}");
                for (x, y) in a.iter().zip(b) {
                    assert!((x.score - y.score).abs() < 1e-5, "k {k}, query {qi}");
                }
                assert!(b.iter().all(|h| h.doc != 3 && h.doc as usize != qi % n));
            }
        }
        // An empty corpus, ragged buffers.
        let empty = DeviceCorpus::upload(&Device::Cpu, &[], dim).unwrap();
        assert_eq!(
            empty.top_k(&queries[..dim], 5, &skip, 0).unwrap(),
            vec![Vec::<Hit>::new()]
        );
        let full = DeviceCorpus::upload(&Device::Cpu, &corpus, dim).unwrap();
        assert!(full.top_k(&queries[..dim + 1], 5, &skip, 0).is_err());
        assert!(DeviceCorpus::upload(&Device::Cpu, &corpus[..dim + 1], dim).is_err());
    }
}
