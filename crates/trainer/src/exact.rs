//! The exact softmax: every query's denominator is the whole corpus (minus its masked
//! documents), not a batch.
//!
//! The corpus is kept embedded in an `N × dim` table ([`CorpusTable`]), refreshed by
//! the caller every R steps; the documents of the current batch use fresh embeddings
//! with gradients instead of their (stale) rows, and are written back after the step
//! (coordinate ascent: the table side is held fixed while the model moves).
//!
//! For query `i` with normalised embedding `q̂_i`, `s_in = scale · q̂_i · t_n` and
//!
//! ```text
//! loss_i = −LSE_{n∈P_i} s_in + LSE_{n∉X_i} s_in
//! ```
//!
//! The table part of the denominator is streamed over chunks of the table with an
//! online log-sum-exp that also accumulates `Σ_n softmax_n · t_n`, the gradient of
//! that log-sum-exp with respect to `q̂_i`. It enters the graph as a linear surrogate
//! with the right value and gradient, so memory holds the table and one
//! `batch × chunk` block, never `batch × N`, and nothing of the table is differentiated.

use std::sync::OnceLock;

use candle_core::{DType, Device, Result, Tensor, D};

/// Logit given to excluded entries (see `loss::EXCLUDED`).
const EXCLUDED: f64 = -1e9;

/// Floor of the running maximum: far below any logit (|scale · cos| is small), far above
/// −inf, so that blocks whose entries are all excluded rescale by exp(finite) = 0 or 1.
const MAX_FLOOR: f64 = -1e30;

/// Table rows scored per block of the streaming log-sum-exp.
pub const DEFAULT_CHUNK: usize = 8192;

/// Logits per block on an accelerator (`batch × rows`, 32 MB in f32): there each block
/// costs a dozen kernel launches, so blocks are as large as memory comfortably allows.
const DEVICE_BLOCK_LOGITS: usize = 1 << 23;

/// The corpus embeddings, row-major and L2-normalised, on the host.
///
/// When the loss runs on an accelerator, the rows are uploaded to it once, on first use,
/// and kept there ([`write_back`](Self::write_back) updates both copies): streaming a
/// 1M × 384 table over PCIe every step would cost more than the step's arithmetic.
#[derive(Debug)]
pub struct CorpusTable {
    pub data: Vec<f32>,
    pub dim: usize,
    /// The same rows on the device (and in the dtype) of the first non-CPU loss.
    resident: OnceLock<Tensor>,
}

impl Clone for CorpusTable {
    /// The copy starts without a device copy: a shared one would see the other's writes.
    fn clone(&self) -> Self {
        Self::from_normalized(self.data.clone(), self.dim)
    }
}

impl CorpusTable {
    pub fn new(data: Vec<f32>, dim: usize) -> Self {
        let mut t = Self::from_normalized(data, dim);
        crate::rows::normalize_rows(&mut t.data, dim);
        t
    }

    /// A table whose rows are already L2-normalised (a checkpoint's).
    pub fn from_normalized(data: Vec<f32>, dim: usize) -> Self {
        Self {
            data,
            dim,
            resident: OnceLock::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The first `d` columns of every row, re-normalised: the table Matryoshka's prefix
    /// `d` is scored against, cosine on the prefix as the in-batch loss computes it.
    /// A prefix of a unit row re-normalised equals the prefix of the raw embedding
    /// normalised, so prefix tables derive from the full one (a checkpoint keeps only it).
    pub fn prefix(&self, d: usize) -> Result<CorpusTable> {
        if d == 0 || d > self.dim {
            candle_core::bail!("a prefix of {d} dimensions of a {}-wide table", self.dim);
        }
        let mut data = Vec::with_capacity(self.len() * d);
        for r in self.data.chunks(self.dim) {
            data.extend_from_slice(&r[..d]);
        }
        Ok(Self::new(data, d))
    }

    /// After `full.write_back(ids, …)`: this prefix table's rows `ids` recomputed from
    /// `full`'s, so that it stays equal, bit for bit, to `full.prefix(self.dim)`.
    pub fn refresh_prefix_rows(&mut self, full: &CorpusTable, ids: &[usize]) -> Result<()> {
        let d = self.dim;
        let mut rows = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            rows.extend_from_slice(&full.data[id * full.dim..id * full.dim + d]);
        }
        self.write_back(ids, &rows)
    }

    /// Overwrites rows `ids` with `rows` (`ids.len() × dim`), normalising them.
    pub fn write_back(&mut self, ids: &[usize], rows: &[f32]) -> Result<()> {
        for (k, &id) in ids.iter().enumerate() {
            let src = &rows[k * self.dim..(k + 1) * self.dim];
            let n = src
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            for (d, s) in self.data[id * self.dim..(id + 1) * self.dim]
                .iter_mut()
                .zip(src)
            {
                *d = s / n;
            }
        }
        if let Some(dev) = self.resident.get() {
            for &id in ids {
                let row = Tensor::from_slice(
                    &self.data[id * self.dim..(id + 1) * self.dim],
                    (1, self.dim),
                    dev.device(),
                )?
                .to_dtype(dev.dtype())?;
                dev.slice_set(&row, 0, id)?;
            }
        }
        Ok(())
    }

    /// The whole table on `device` in `dtype`, uploaded on the first call; `None` on the
    /// CPU, or for a device/dtype other than the first one's (those stream blocks).
    fn resident(&self, device: &Device, dtype: DType) -> Result<Option<&Tensor>> {
        if device.is_cpu() || self.data.is_empty() {
            return Ok(None);
        }
        if self.resident.get().is_none() {
            let t =
                Tensor::from_slice(&self.data, (self.len(), self.dim), device)?.to_dtype(dtype)?;
            let _ = self.resident.set(t);
        }
        Ok(self
            .resident
            .get()
            .filter(|t| t.device().same_device(device) && t.dtype() == dtype))
    }

    fn block(&self, from: usize, to: usize, device: &Device, dtype: DType) -> Result<Tensor> {
        if let Some(t) = self.resident(device, dtype)? {
            return t.narrow(0, from, to - from);
        }
        Tensor::from_slice(
            &self.data[from * self.dim..to * self.dim],
            (to - from, self.dim),
            device,
        )?
        .to_dtype(dtype)
    }
}

/// One batch of the exact loss, in corpus positions.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactBatch {
    /// Corpus position of each fresh document row (positives first); distinct.
    pub fresh: Vec<usize>,
    /// Per query: corpus positions in the numerator (its positive first).
    pub positives: Vec<Vec<usize>>,
    /// Per query: corpus positions out of the denominator.
    pub excluded: Vec<Vec<usize>>,
}

fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&norm)
}

fn masked_logsumexp(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let sum = x.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    (sum.log()? + max)?.squeeze(D::Minus1)
}

/// Streams `LSE_n s_in` over the table rows not in `skip_i`, returning per query the
/// value and `∂/∂q̂_i` (scale · softmax-weighted mean of the rows), both detached.
///
/// f32 on the CPU (training's case) takes the fused pass of [`crate::exact_scan`];
/// other devices and dtypes stream blocks through candle ops ([`table_lse_blocks`]).
fn table_lse(
    qn: &Tensor,
    table: &CorpusTable,
    skip: &[Vec<usize>],
    scale: f64,
    chunk: usize,
) -> Result<(Vec<f64>, Tensor)> {
    // Per query, its skipped positions sorted, to find each block's share by bisection.
    let mut skip_sorted: Vec<Vec<usize>> = skip.to_vec();
    skip_sorted.iter_mut().for_each(|s| {
        s.sort_unstable();
        s.dedup()
    });
    if qn.device().is_cpu() && qn.dtype() == DType::F32 && table.dim > 0 {
        let (b, dim) = qn.dims2()?;
        if dim != table.dim {
            candle_core::bail!("exact_loss: queries are {dim}-d, the table {}-d", table.dim);
        }
        let q = qn.detach().flatten_all()?.to_vec1::<f32>()?;
        let (lse, grad) =
            crate::exact_scan::table_lse(&q, dim, &table.data, &skip_sorted, scale as f32);
        return Ok((lse, Tensor::from_vec(grad, (b, dim), qn.device())?));
    }
    table_lse_blocks(qn, table, &skip_sorted, scale, chunk)
}

/// [`table_lse`] by candle ops over `chunk`-row blocks (any device and dtype);
/// `skip_sorted[i]` is sorted and deduplicated.
fn table_lse_blocks(
    qn: &Tensor,
    table: &CorpusTable,
    skip_sorted: &[Vec<usize>],
    scale: f64,
    chunk: usize,
) -> Result<(Vec<f64>, Tensor)> {
    let (b, dim) = qn.dims2()?;
    let (device, dtype) = (qn.device().clone(), qn.dtype());
    let q = qn.detach();
    let n = table.len();
    // Running maximum (floored: a row whose entries are all excluded must not turn
    // −inf − (−inf) into NaN), running sum and running softmax-weighted row sum.
    let mut max = Tensor::full(MAX_FLOOR, (b, 1), &device)?.to_dtype(dtype)?;
    let mut sum = Tensor::zeros((b, 1), dtype, &device)?;
    let mut weighted = Tensor::zeros((b, dim), dtype, &device)?;
    let chunk = if device.is_cpu() {
        chunk.max(1)
    } else {
        chunk.max(DEVICE_BLOCK_LOGITS / b.max(1))
    };
    let mut from = 0;
    while from < n {
        let to = (from + chunk).min(n);
        let width = to - from;
        let rows = table.block(from, to, &device, dtype)?;
        let mut logits = (q.matmul(&rows.t()?)? * scale)?;
        // The skipped entries become −inf in place (a scatter of a few indices), not
        // through a dense `batch × width` bias built on the host: on a GPU, uploading
        // that bias cost ten times the block's arithmetic.
        let mut holes: Vec<u32> = Vec::new();
        for (i, s) in skip_sorted.iter().enumerate() {
            let lo = s.partition_point(|&x| x < from);
            for &pos in s[lo..].iter().take_while(|&&x| x < to) {
                holes.push((i * width + pos - from) as u32);
            }
        }
        if !holes.is_empty() {
            let k = holes.len();
            let holes = Tensor::from_vec(holes, k, &device)?;
            let minus_inf = Tensor::full(f32::NEG_INFINITY, k, &device)?.to_dtype(dtype)?;
            logits = logits
                .flatten_all()?
                .scatter(&holes, &minus_inf, 0)?
                .reshape((b, width))?;
        }
        // Online update: rescale what was accumulated when the maximum grows.
        let new_max = max.maximum(&logits.max_keepdim(1)?)?;
        let rescale = (&max - &new_max)?.exp()?;
        let e = logits.broadcast_sub(&new_max)?.exp()?;
        sum = ((sum * &rescale)? + e.sum_keepdim(1)?)?;
        weighted = (weighted.broadcast_mul(&rescale)? + e.matmul(&rows)?)?;
        max = new_max;
        from = to;
    }
    let max = max.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let sum_v = sum.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let lse: Vec<f64> = max
        .iter()
        .zip(&sum_v)
        .map(|(&m, &s)| {
            if s > 0.0 {
                m + s.ln()
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let inv: Vec<f64> = sum_v
        .iter()
        .map(|&s| if s > 0.0 { scale / s } else { 0.0 })
        .collect();
    let inv = Tensor::from_vec(inv, (b, 1), &device)?.to_dtype(dtype)?;
    Ok((lse, weighted.broadcast_mul(&inv)?))
}

/// The exact-softmax loss for query embeddings `(B, dim)` and the fresh embeddings of
/// the batch's documents `(M, dim)` (`batch.fresh` says which corpus rows they
/// replace), against `table`.
pub fn exact_loss(
    queries: &Tensor,
    fresh: &Tensor,
    batch: &ExactBatch,
    table: &CorpusTable,
    scale: f64,
    chunk: usize,
) -> Result<Tensor> {
    Ok(exact_loss_parts(queries, fresh, batch, table, scale, chunk)?.0)
}

/// [`exact_loss`], and each query's denominator log-sum-exp (detached): the false-
/// negative dose reads it instead of scoring the corpus a second time.
pub fn exact_loss_parts(
    queries: &Tensor,
    fresh: &Tensor,
    batch: &ExactBatch,
    table: &CorpusTable,
    scale: f64,
    chunk: usize,
) -> Result<(Tensor, Vec<f64>)> {
    let (b, _) = queries.dims2()?;
    let (m, _) = fresh.dims2()?;
    if batch.fresh.len() != m || batch.positives.len() != b || batch.excluded.len() != b {
        candle_core::bail!(
            "exact_loss: batch layout does not match {b} queries and {m} fresh rows"
        );
    }
    let (device, dtype) = (queries.device().clone(), queries.dtype());
    let qn = normalize(queries)?;
    let fnorm = normalize(fresh)?;
    let fresh_pos: std::collections::HashMap<usize, usize> = batch
        .fresh
        .iter()
        .enumerate()
        .map(|(k, &p)| (p, k))
        .collect();

    // Denominator, table part: every row but the fresh ones and the query's excluded.
    let skip: Vec<Vec<usize>> = batch
        .excluded
        .iter()
        .map(|x| {
            x.iter()
                .copied()
                .chain(batch.fresh.iter().copied())
                .collect()
        })
        .collect();
    let (lse, grad) = table_lse(&qn, table, &skip, scale, chunk)?;
    // value = lse, gradient = grad: (q̂·G) − (q̂·G)ᵀdetached + lse.
    let lin = (&qn * &grad)?.sum(1)?;
    let offset: Vec<f64> = lse
        .iter()
        .map(|&l| if l.is_finite() { l } else { EXCLUDED })
        .collect();
    let offset = Tensor::from_vec(offset, b, &device)?.to_dtype(dtype)?;
    let table_part = ((&lin - lin.detach())? + offset)?;

    // Denominator, fresh part.
    let fresh_logits = (qn.matmul(&fnorm.t()?)? * scale)?;
    let mut den_bias = vec![0f64; b * m];
    let mut num_bias = vec![EXCLUDED; b * m];
    for i in 0..b {
        for &x in &batch.excluded[i] {
            if let Some(&k) = fresh_pos.get(&x) {
                den_bias[i * m + k] = EXCLUDED;
            }
        }
        for &p in &batch.positives[i] {
            if let Some(&k) = fresh_pos.get(&p) {
                num_bias[i * m + k] = 0.0;
            }
        }
    }
    let den_bias = Tensor::from_vec(den_bias, (b, m), &device)?.to_dtype(dtype)?;
    let fresh_part = masked_logsumexp(&(&fresh_logits + den_bias)?)?;
    let den = masked_logsumexp(&Tensor::stack(&[&table_part, &fresh_part], 1)?)?;

    // Numerator: fresh positives, plus positives that only exist as table rows.
    let num_bias = Tensor::from_vec(num_bias, (b, m), &device)?.to_dtype(dtype)?;
    let mut num_terms = vec![(&fresh_logits + num_bias)?];
    let table_pos: Vec<usize> = {
        let mut v: Vec<usize> = batch
            .positives
            .iter()
            .flatten()
            .copied()
            .filter(|p| !fresh_pos.contains_key(p))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if !table_pos.is_empty() {
        let mut rows = Vec::with_capacity(table_pos.len() * table.dim);
        for &p in &table_pos {
            rows.extend_from_slice(&table.data[p * table.dim..(p + 1) * table.dim]);
        }
        let rows =
            Tensor::from_vec(rows, (table_pos.len(), table.dim), &device)?.to_dtype(dtype)?;
        let mut bias = vec![EXCLUDED; b * table_pos.len()];
        for i in 0..b {
            for p in &batch.positives[i] {
                if let Ok(k) = table_pos.binary_search(p) {
                    bias[i * table_pos.len() + k] = 0.0;
                }
            }
        }
        let bias = Tensor::from_vec(bias, (b, table_pos.len()), &device)?.to_dtype(dtype)?;
        num_terms.push(((qn.matmul(&rows.t()?)? * scale)? + bias)?);
    }
    let num = masked_logsumexp(&Tensor::cat(&num_terms, 1)?)?;
    let den_values = den
        .detach()
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok(((den - num)?.mean_all()?, den_values))
}

/// Matryoshka over the exact softmax: `Σ w · exact_loss(q[:, :d], fresh[:, :d])`, each
/// prefix against its own table (`table` at the full width, `prefixes` below it, one per
/// narrower dimension, from [`CorpusTable::prefix`]), and the full-width denominators for
/// the dose. The full width is scored even when it is not one of the prefixes, for the
/// dose alone. Memory: each prefix table holds `N × d` floats beside the full table's.
#[allow(clippy::too_many_arguments)]
pub fn exact_matryoshka_loss_parts(
    queries: &Tensor,
    fresh: &Tensor,
    batch: &ExactBatch,
    table: &CorpusTable,
    prefixes: &[CorpusTable],
    weighted: &[(usize, f64)],
    scale: f64,
    chunk: usize,
) -> Result<(Tensor, Vec<f64>)> {
    let (full, den) = exact_loss_parts(queries, fresh, batch, table, scale, chunk)?;
    if weighted.is_empty() {
        return Ok((full, den));
    }
    let mut total: Option<Tensor> = None;
    for &(d, w) in weighted {
        let l = if d == table.dim {
            full.clone()
        } else {
            let t = prefixes.iter().find(|t| t.dim == d).ok_or_else(|| {
                candle_core::Error::Msg(format!("no prefix table of {d} dimensions"))
            })?;
            let q = queries.narrow(1, 0, d)?;
            let f = fresh.narrow(1, 0, d)?;
            exact_loss_parts(&q, &f, batch, t, scale, chunk)?.0
        };
        let l = (l * w)?;
        total = Some(match total {
            Some(t) => (t + l)?,
            None => l,
        });
    }
    Ok((total.unwrap_or(full), den))
}

/// Dense reference in f64: all `B × N` logits at once, fresh rows (normalised here)
/// replacing table rows (used as given: the table holds unit vectors).
pub fn reference_exact_loss(
    queries: &[Vec<f64>],
    fresh: &[Vec<f64>],
    batch: &ExactBatch,
    table: &[Vec<f64>],
    scale: f64,
) -> f64 {
    let unit = |v: &[f64]| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f64>>()
    };
    let mut docs: Vec<Vec<f64>> = table.to_vec();
    for (k, &p) in batch.fresh.iter().enumerate() {
        docs[p] = unit(&fresh[k]);
    }
    let mut total = 0.0;
    for (i, q) in queries.iter().enumerate() {
        let q = unit(q);
        let s = |n: usize| scale * q.iter().zip(&docs[n]).map(|(a, b)| a * b).sum::<f64>();
        let den: f64 = (0..docs.len())
            .filter(|n| !batch.excluded[i].contains(n))
            .map(|n| s(n).exp())
            .sum();
        let num: f64 = batch.positives[i].iter().map(|&n| s(n).exp()).sum();
        total += den.ln() - num.ln();
    }
    total / queries.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::SplitMix64;
    use crate::loss::{contrastive_loss, Cell, CellTable, LossConfig};
    use candle_core::Var;

    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut r = SplitMix64(seed);
        (0..n)
            .map(|_| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
            .collect()
    }

    fn rows(flat: &[f64], dim: usize) -> Vec<Vec<f64>> {
        flat.chunks(dim).map(<[f64]>::to_vec).collect()
    }

    fn var(flat: &[f64], r: usize, c: usize) -> Var {
        Var::from_tensor(&Tensor::from_vec(flat.to_vec(), (r, c), &Device::Cpu).unwrap()).unwrap()
    }

    /// 3 queries, a 23-document corpus, 4 fresh rows (3 positives and a negative).
    /// The gradients of the queries `q` and fresh rows `f` against central finite
    /// differences of `reference(queries, fresh)` (flat values), each element within `tol`.
    fn check_finite_differences(
        grads: &candle_core::backprop::GradStore,
        (q, qv): (&Var, &[f64]),
        (f, fv): (&Var, &[f64]),
        reference: impl Fn(&[f64], &[f64]) -> f64,
        h: f64,
        tol: f64,
    ) {
        for (v, flat, is_q) in [(q, qv, true), (f, fv, false)] {
            let g = grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for k in 0..flat.len() {
                let eval = |d: f64| {
                    let mut x = flat.to_vec();
                    x[k] += d;
                    if is_q {
                        reference(&x, fv)
                    } else {
                        reference(qv, &x)
                    }
                };
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                let side = if is_q { "query" } else { "fresh row" };
                assert!(
                    (g[k] - fd).abs() < tol,
                    "{side} element {k}: {} vs {fd}",
                    g[k]
                );
            }
        }
    }

    fn setup() -> (ExactBatch, usize, usize) {
        let batch = ExactBatch {
            fresh: vec![4, 9, 17, 2],
            positives: vec![vec![4], vec![9, 20], vec![17]],
            excluded: vec![vec![5, 9, 21], vec![], vec![2, 0]],
        };
        (batch, 23, 6)
    }

    #[test]
    fn equals_the_dense_reference_and_its_finite_differences() {
        let (batch, n, dim) = setup();
        let qv = values(1, 3 * dim);
        let fv = values(2, 4 * dim);
        let tv = values(3, n * dim);
        let table = CorpusTable::new(tv.iter().map(|&x| x as f32).collect(), dim);
        // The reference sees exactly the f32 table the loss streams over.
        let table64: Vec<Vec<f64>> = rows(
            &table.data.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            dim,
        );
        let q = var(&qv, 3, dim);
        let f = var(&fv, 4, dim);
        for chunk in [1, 5, 64] {
            let loss =
                exact_loss(q.as_tensor(), f.as_tensor(), &batch, &table, 20.0, chunk).unwrap();
            let got = loss.to_scalar::<f64>().unwrap();
            let want =
                reference_exact_loss(&rows(&qv, dim), &rows(&fv, dim), &batch, &table64, 20.0);
            assert!((got - want).abs() < 1e-9, "chunk {chunk}: {got} vs {want}");
            let grads = loss.backward().unwrap();
            let reference = |qv: &[f64], fv: &[f64]| {
                reference_exact_loss(&rows(qv, dim), &rows(fv, dim), &batch, &table64, 20.0)
            };
            check_finite_differences(&grads, (&q, &qv), (&f, &fv), reference, 1e-6, 1e-6);
        }
    }

    /// Matryoshka over the exact softmax equals the weighted sum of the dense reference
    /// on each prefix, whose table rows are the original vectors' prefixes normalised in
    /// f64 (independently of [`CorpusTable::prefix`]); its gradient matches finite
    /// differences of that sum; and prefix tables kept up by `refresh_prefix_rows` after
    /// a write-back stay bit-equal to prefixes taken afresh.
    #[test]
    fn matryoshka_equals_the_weighted_references_on_prefixes() {
        let (batch, n, dim) = setup();
        let qv = values(11, 3 * dim);
        let fv = values(12, 4 * dim);
        let tv = values(13, n * dim);
        let mut table = CorpusTable::new(tv.iter().map(|&x| x as f32).collect(), dim);
        let weighted = [(6, 1.0), (4, 0.5), (2, 0.25)];
        let mut prefixes: Vec<CorpusTable> = [4, 2].map(|d| table.prefix(d).unwrap()).to_vec();
        let unit = |v: &[f64]| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<f64>>()
        };
        let cut = |flat: &[f64], d: usize| -> Vec<Vec<f64>> {
            rows(flat, dim).iter().map(|r| r[..d].to_vec()).collect()
        };
        let reference = |qv: &[f64], fv: &[f64]| -> f64 {
            weighted
                .iter()
                .map(|&(d, w)| {
                    let t: Vec<Vec<f64>> = rows(&tv, dim)
                        .iter()
                        .map(|r| unit(&r.iter().map(|&x| x as f32 as f64).collect::<Vec<_>>()[..d]))
                        .collect();
                    w * reference_exact_loss(&cut(qv, d), &cut(fv, d), &batch, &t, 20.0)
                })
                .sum()
        };
        let q = var(&qv, 3, dim);
        let f = var(&fv, 4, dim);
        let (loss, den) = exact_matryoshka_loss_parts(
            q.as_tensor(),
            f.as_tensor(),
            &batch,
            &table,
            &prefixes,
            &weighted,
            20.0,
            5,
        )
        .unwrap();
        assert_eq!(den.len(), 3);
        let got = loss.to_scalar::<f64>().unwrap();
        let want = reference(&qv, &fv);
        // The tables are f32 (prefixes normalised in f32): 1e-5, not the f64 paths' 1e-9.
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let grads = loss.backward().unwrap();
        check_finite_differences(&grads, (&q, &qv), (&f, &fv), reference, 1e-5, 1e-4);
        // A prefix missing from `prefixes` is an error, not a silent full-width term.
        assert!(exact_matryoshka_loss_parts(
            q.as_tensor(),
            f.as_tensor(),
            &batch,
            &table,
            &prefixes[..1],
            &weighted,
            20.0,
            5
        )
        .is_err());
        // Write-back keeps the prefix tables equal to fresh prefixes, bit for bit.
        let ids = [3, 0, 22];
        let new_rows: Vec<f32> = values(14, ids.len() * dim)
            .iter()
            .map(|&x| x as f32)
            .collect();
        table.write_back(&ids, &new_rows).unwrap();
        for p in &mut prefixes {
            p.refresh_prefix_rows(&table, &ids).unwrap();
            assert_eq!(p.data, table.prefix(p.dim).unwrap().data);
        }
        assert!(table.prefix(7).is_err() && table.prefix(0).is_err());
    }

    /// The fused f32 pass against the block path in f64 on the same f32 table, over
    /// sizes that leave partial tiles and span several parallel ranges, with skipped
    /// rows on tile and range edges and one query whose every row is skipped.
    #[test]
    fn the_fused_cpu_pass_equals_the_block_path() {
        let dim = 8;
        // 5 queries make the products copy them; 32 (a multiple of the vector width)
        // are read in place, down another path of the `gemm` crate.
        // One query takes the crate's small-matrix path.
        for (n, b) in [
            (1, 5),
            (127, 5),
            (129, 32),
            (300, 1),
            (16_384 * 2 + 300, 5),
            (16_384 + 77, 32),
        ] {
            let table =
                CorpusTable::new(values(11, n * dim).iter().map(|&x| x as f32).collect(), dim);
            let qv: Vec<f32> = values(12, b * dim).iter().map(|&x| x as f32).collect();
            let q32 =
                normalize(&Tensor::from_vec(qv.clone(), (b, dim), &Device::Cpu).unwrap()).unwrap();
            let q64 = q32.to_dtype(DType::F64).unwrap();
            let edges = [0, 127, 128, 16_383, 16_384, n - 1];
            let mut skip: Vec<Vec<usize>> = vec![
                vec![],
                edges.iter().copied().filter(|&e| e < n).collect(),
                vec![n / 2],
                (0..n).collect(),
                vec![n - 1, 0, n - 1],
            ];
            // The other queries skip one row each, spread over the table.
            skip.extend((5..b).map(|i| vec![(i * 7919) % n]));
            skip.truncate(b);
            let (lse, grad) = table_lse(&q32, &table, &skip, 20.0, DEFAULT_CHUNK).unwrap();
            let mut sorted = skip.clone();
            sorted.iter_mut().for_each(|s| {
                s.sort_unstable();
                s.dedup()
            });
            let (want, want_grad) = table_lse_blocks(&q64, &table, &sorted, 20.0, 1000).unwrap();
            if b > 3 {
                assert_eq!(lse[3], f64::NEG_INFINITY, "n {n}: every row skipped");
            }
            for (i, (a, w)) in lse.iter().zip(&want).enumerate() {
                if w.is_finite() {
                    assert!((a - w).abs() < 1e-5, "n {n}, query {i}: {a} vs {w}");
                } else {
                    assert_eq!(a, w, "n {n}, query {i}");
                }
            }
            let g = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let wg = want_grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (k, (a, w)) in g.iter().zip(&wg).enumerate() {
                assert!((*a as f64 - w).abs() < 1e-4, "n {n}, {k}: {a} vs {w}");
            }
        }
        // No queries: nothing to score, no panic.
        let table = CorpusTable::new(vec![0.5; 3 * dim], dim);
        let (lse, grad) = crate::exact_scan::table_lse(&[], dim, &table.data, &[], 20.0);
        assert!(lse.is_empty() && grad.is_empty());
    }

    /// The f32 loss (fused pass) against the f64 dense reference, value and query
    /// gradient by finite differences of the reference.
    #[test]
    fn the_f32_loss_equals_the_dense_reference() {
        let (batch, n, dim) = setup();
        let qv = values(21, 3 * dim);
        let fv = values(22, 4 * dim);
        let table = CorpusTable::new(values(23, n * dim).iter().map(|&x| x as f32).collect(), dim);
        let table64 = rows(
            &table.data.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            dim,
        );
        let q32: Vec<f32> = qv.iter().map(|&x| x as f32).collect();
        let q = Var::from_tensor(&Tensor::from_vec(q32, (3, dim), &Device::Cpu).unwrap()).unwrap();
        let f = Tensor::from_vec(
            fv.iter().map(|&x| x as f32).collect(),
            (4, dim),
            &Device::Cpu,
        )
        .unwrap();
        let loss = exact_loss(q.as_tensor(), &f, &batch, &table, 20.0, DEFAULT_CHUNK).unwrap();
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        let qr: Vec<f64> = qv.iter().map(|&x| x as f32 as f64).collect();
        let fr: Vec<f64> = fv.iter().map(|&x| x as f32 as f64).collect();
        let reference = |q: &[f64]| {
            reference_exact_loss(&rows(q, dim), &rows(&fr, dim), &batch, &table64, 20.0)
        };
        let want = reference(&qr);
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        let g = loss
            .backward()
            .unwrap()
            .get(q.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for k in 0..qr.len() {
            let (mut up, mut down) = (qr.clone(), qr.clone());
            up[k] += 1e-6;
            down[k] -= 1e-6;
            let fd = (reference(&up) - reference(&down)) / 2e-6;
            assert!((g[k] as f64 - fd).abs() < 1e-3, "{k}: {} vs {fd}", g[k]);
        }
    }

    #[test]
    fn with_a_fresh_table_it_is_the_full_corpus_softmax() {
        // When the table holds the current embeddings of every document, the loss and
        // the query gradient equal an in-batch softmax whose batch is the whole corpus.
        let (batch, n, dim) = setup();
        let qv = values(4, 3 * dim);
        let tv: Vec<f64> = values(5, n * dim)
            .iter()
            .map(|&x| x as f32 as f64)
            .collect();
        let table = CorpusTable::new(tv.iter().map(|&x| x as f32).collect(), dim);
        let t64: Vec<f64> = table.data.iter().map(|&x| x as f64).collect();
        let fv: Vec<f64> = batch
            .fresh
            .iter()
            .flat_map(|&p| t64[p * dim..(p + 1) * dim].to_vec())
            .collect();
        let q1 = var(&qv, 3, dim);
        let f = var(&fv, 4, dim);
        let exact = exact_loss(q1.as_tensor(), f.as_tensor(), &batch, &table, 20.0, 7).unwrap();
        let g_exact = exact
            .backward()
            .unwrap()
            .get(q1.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();

        let mut cells = vec![Cell::Negative; 3 * n];
        for i in 0..3 {
            for &x in &batch.excluded[i] {
                cells[i * n + x] = Cell::Excluded;
            }
            for &p in &batch.positives[i] {
                cells[i * n + p] = Cell::Positive;
            }
        }
        // contrastive_loss wants the B positives first: query i's own positive at column i.
        let mut order: Vec<usize> = batch.positives.iter().map(|p| p[0]).collect();
        let rest: Vec<usize> = (0..n).filter(|d| !order.contains(d)).collect();
        order.extend(rest);
        let cells: Vec<Cell> = (0..3)
            .flat_map(|i| order.iter().map(|&d| cells[i * n + d]).collect::<Vec<_>>())
            .collect();
        let docs: Vec<f64> = order
            .iter()
            .flat_map(|&d| t64[d * dim..(d + 1) * dim].to_vec())
            .collect();
        let q2 = var(&qv, 3, dim);
        let d = Tensor::from_vec(docs, (n, dim), &Device::Cpu).unwrap();
        let full = contrastive_loss(
            q2.as_tensor(),
            &d,
            &CellTable {
                queries: 3,
                documents: n,
                cells,
            },
            &LossConfig {
                scale: 20.0,
                symmetric: false,
            },
        )
        .unwrap();
        let g_full = full
            .backward()
            .unwrap()
            .get(q2.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let (a, b) = (
            exact.to_scalar::<f64>().unwrap(),
            full.to_scalar::<f64>().unwrap(),
        );
        // The table's rows are unit vectors rounded to f32; the in-batch loss normalises
        // them again in f64, which moves the result by ~1e-7.
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        for (x, y) in g_exact.iter().zip(&g_full) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
    }
}
