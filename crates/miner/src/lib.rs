//! Candidate mining: for every query, the documents most likely to be false
//! negatives — the top of BM25 and the top of the embedding model, fused by
//! reciprocal rank. Only these go to the judge, so the miner's recall of the known
//! positives (printed with every run) bounds everything after it.
//!
//! A run works through the queries in parts of [`MineOptions::part_queries`], each
//! written atomically next to the output (`OUT.parts/`), so a killed run resumes
//! where it stopped; the parts are then joined into the output with a fixed batch
//! size, so a resumed run, an uninterrupted run and merged shards
//! ([`merge_shards`]) write the same bytes.
//!
//! ```no_run
//! use sieve_miner::{input::MiningInput, mine, MineOptions, QueryEmbeddings};
//! # fn embed(_: &[sieve_datasets::Document]) -> Vec<f32> { vec![] }
//! # fn embed_q(_: &[sieve_miner::input::MineQuery]) -> Vec<f32> { vec![] }
//! let input = MiningInput::from_beir("scifact".as_ref(), "train", Default::default())?;
//! let bm25 = sieve_miner::open_or_build_bm25(&input, "cache".as_ref())?;
//! let emb = QueryEmbeddings { corpus: embed(&input.corpus).into(), queries: embed_q(&input.queries).into(), dim: 384, device: None };
//! let opts = MineOptions::default();
//! let meta = sieve_miner::run_metadata(&input, &opts, Default::default())?;
//! let rows = mine(&input, &emb, &bm25, None, &opts, "mined.parquet".as_ref(), &meta, &|_| {})?;
//! println!("{}", sieve_miner::stats::MineStats::from_rows(&rows, &opts));
//! # Ok::<(), sieve_miner::Error>(())
//! ```

mod error;
pub mod input;
pub mod rules;
pub mod run;
pub mod settings;
pub mod stats;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sieve_datasets::floats::Floats;
use sieve_datasets::mined::{read_mined, write_mined, Candidate, Dropped, MinedRow, PositiveHit};
use sieve_datasets::parquet_io::{read_metadata, Metadata};
use sieve_index::{Bm25Index, Hit, HnswIndex, HnswParams};

pub use error::{Error, Result};
use input::MiningInput;
use rules::Rules;
pub use run::{mine_to_file, Embedder, MineRequest, Mined, Source};
pub use settings::{DenseKind, MineSettings};

/// Candidates per retriever by default: deep enough that the judge sees most false
/// negatives (recall of known positives flattens past ~50 on BEIR sets), shallow
/// enough to keep judging affordable.
pub const DEFAULT_K: usize = 50;

/// Queries per resumable part: a kill loses at most this much work.
pub const DEFAULT_PART_QUERIES: usize = 512;

pub use sieve_datasets::mined::{RUN_KEY, SHARD_KEY};

/// How dense candidates are found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum DenseSearch {
    /// Brute force (a blocked matrix product at ~85% of the GEMM peak): exact, and
    /// cheaper than building any graph until the queries number in the hundreds of
    /// thousands (see `settings::auto_cost`).
    Exact,
    /// hnsw_rs, built once and stored.
    Hnsw {
        m: usize,
        ef_construction: usize,
        ef_search: usize,
    },
}

impl DenseSearch {
    pub fn hnsw(p: HnswParams) -> Self {
        DenseSearch::Hnsw {
            m: p.m,
            ef_construction: p.ef_construction,
            ef_search: p.ef_search,
        }
    }
}

/// Everything that decides a run's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MineOptions {
    pub bm25_k: usize,
    pub dense_k: usize,
    pub rrf_k: f32,
    pub dense: DenseSearch,
    pub rules: Rules,
    /// Not part of the output's identity: any value gives the same file.
    #[serde(skip)]
    pub part_queries: usize,
    /// `(i, n)`: mine only the i-th of n contiguous slices of the queries.
    #[serde(skip)]
    pub shard: Option<(usize, usize)>,
}

impl Default for MineOptions {
    fn default() -> Self {
        Self {
            bm25_k: DEFAULT_K,
            dense_k: DEFAULT_K,
            rrf_k: sieve_index::DEFAULT_RRF_K,
            dense: DenseSearch::Exact,
            rules: Rules::default(),
            part_queries: DEFAULT_PART_QUERIES,
            shard: None,
        }
    }
}

/// L2-normalised embeddings of the corpus and of the queries, row-major. Owned, or
/// mapped from the `.npy` file or cache entry they were read from ([`Floats`]): a
/// 1M-document corpus is then searched in place, not copied first.
pub struct QueryEmbeddings {
    pub corpus: Floats,
    pub queries: Floats,
    pub dim: usize,
    /// The GPU the embeddings came from: exact dense search runs there too
    /// ([`sieve_index::DeviceCorpus`]). `None` searches on the CPU.
    pub device: Option<candle_core::Device>,
}

impl QueryEmbeddings {
    fn check(&self, input: &MiningInput) -> Result<()> {
        let (n, nq) = (input.corpus.len(), input.queries.len());
        if self.dim == 0 || self.corpus.len() != n * self.dim || self.queries.len() != nq * self.dim
        {
            return Err(Error::Input(format!(
                "embeddings do not match the input: {} corpus and {} query values for {n} documents and {nq} queries of dimension {}",
                self.corpus.len(),
                self.queries.len(),
                self.dim
            )));
        }
        Ok(())
    }

    fn query(&self, i: usize) -> &[f32] {
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }

    fn doc(&self, i: usize) -> &[f32] {
        &self.corpus[i * self.dim..(i + 1) * self.dim]
    }
}

/// Scales each row to unit length (zero rows stay zero): cosine as a dot product.
/// Rows already of unit length (within [`UNIT_NORM_TOLERANCE`]) are left as they are,
/// unwritten: the embeddings `sieve encode` and most servers return are normalised, and
/// a mapped matrix's pages then stay shared with the file instead of being copied.
pub fn normalize_rows(data: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    data.par_chunks_mut(dim).for_each(|row| {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 && (norm - 1.0).abs() > UNIT_NORM_TOLERANCE {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    });
}

/// How far from 1 a row's norm may be and still count as normalised: a few float32
/// rounding steps of a 384–4096-d sum of squares, far below anything that moves a
/// ranking (scores change by at most this relative amount).
pub const UNIT_NORM_TOLERANCE: f32 = 1e-6;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The BM25 index of `input`'s corpus, stored under `cache_root/bm25/<corpus hash>`
/// and reused by later runs and other shards; built into a temporary directory and
/// renamed, so a crash never leaves half an index behind.
pub fn open_or_build_bm25(input: &MiningInput, cache_root: &Path) -> Result<Bm25Index> {
    let dir = cache_root.join("bm25").join(&input.corpus_hash()[..16]);
    if dir.exists() {
        if let Ok(index) = Bm25Index::open(&dir) {
            if index.len() == input.corpus.len() {
                return Ok(index);
            }
        }
        // Unreadable or stale: rebuild.
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let parent = dir.parent().unwrap_or(cache_root);
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(".tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(source) = Bm25Index::build(&input.corpus, Some(&tmp)) {
        // A failed build (a full disk) leaves no half index holding the space.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Build {
            what: "BM25",
            dir,
            source,
        });
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process finished first: use its index.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(Bm25Index::open(&dir)?)
}

/// The HNSW index over `emb.corpus`, loaded from `dir` if a matching one is there,
/// otherwise built and stored there. Parallel construction is not deterministic, so
/// shards that must merge into the bytes of one run share one stored index.
pub fn open_or_build_hnsw(
    emb: &QueryEmbeddings,
    params: HnswParams,
    dir: &Path,
) -> Result<HnswIndex> {
    if dir.exists() {
        if let Ok(mut index) = HnswIndex::load(dir) {
            let p = index.params();
            if index.len() == emb.corpus.len() / emb.dim.max(1)
                && index.dim() == emb.dim
                && p.m == params.m
                && p.ef_construction == params.ef_construction
            {
                index.set_ef_search(params.ef_search);
                return Ok(index);
            }
        }
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let index = HnswIndex::build(&emb.corpus, emb.dim, params)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if let Err(source) = index.dump(dir) {
        let _ = std::fs::remove_dir_all(dir);
        return Err(Error::Build {
            what: "HNSW",
            dir: dir.to_path_buf(),
            source,
        });
    }
    Ok(index)
}

/// The slice of query indices that shard `i` of `n` mines.
pub fn shard_range(queries: usize, shard: Option<(usize, usize)>) -> Range<usize> {
    match shard {
        Some((i, n)) => sieve_datasets::shard::slice(queries, i, n),
        None => 0..queries,
    }
}

/// Mines one range of queries.
struct Miner<'a> {
    input: &'a MiningInput,
    emb: &'a QueryEmbeddings,
    bm25: &'a Bm25Index,
    ann: Option<&'a HnswIndex>,
    /// The corpus on the GPU, for exact search there.
    device: Option<sieve_index::DeviceCorpus>,
    opts: &'a MineOptions,
}

fn rank_of(list: &[Hit], doc: u32) -> Option<u32> {
    list.iter().position(|h| h.doc == doc).map(|p| p as u32 + 1)
}

impl Miner<'_> {
    fn mine(&self, range: Range<usize>) -> Result<Vec<MinedRow>> {
        let (input, emb, dim) = (self.input, self.emb, self.emb.dim);
        let queries = &input.queries[range.clone()];
        let q_emb = &emb.queries[range.start * dim..range.end * dim];
        let same_id = |qi: usize, di: usize| queries[qi].id == input.corpus[di].id;
        let search = sieve_index::HybridSearch {
            bm25: self.bm25,
            corpus: &emb.corpus,
            dim,
            ann: self.ann,
            device: self.device.as_ref(),
            bm25_k: self.opts.bm25_k,
            dense_k: self.opts.dense_k,
            rrf_k: self.opts.rrf_k,
        };
        let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
        let lists = search.search(&texts, q_emb, &same_id)?;
        Ok(queries
            .par_iter()
            .zip(lists)
            .enumerate()
            .map(|(qi, (q, c))| self.row(range.start + qi, q, &c))
            .collect())
    }

    fn row(&self, qpos: usize, q: &input::MineQuery, c: &sieve_index::Candidates) -> MinedRow {
        let (bm25, dense, dense_bm25, fused) = (&c.bm25, &c.dense, &c.dense_bm25, &c.fused);
        let corpus = &self.input.corpus;
        let qe = self.emb.query(qpos);
        let bm25_score: HashMap<u32, f32> = bm25
            .iter()
            .map(|h| (h.doc, h.score))
            .chain(dense.iter().zip(dense_bm25).map(|(h, &s)| (h.doc, s)))
            .collect();
        let is_positive = |d: u32| q.positives.binary_search(&d).is_ok();
        let positive_hits: Vec<PositiveHit> = q
            .positives
            .iter()
            .map(|&p| PositiveHit {
                doc_id: corpus[p as usize].id.clone(),
                dense: dot(qe, self.emb.doc(p as usize)),
                bm25_rank: rank_of(bm25, p),
                dense_rank: rank_of(dense, p),
                fused_rank: rank_of(fused, p),
            })
            .collect();
        let weakest_positive = positive_hits
            .iter()
            .map(|p| p.dense)
            .min_by(|a, b| a.total_cmp(b));
        let mut candidates: Vec<Candidate> = Vec::new();
        for h in fused.iter().filter(|h| !is_positive(h.doc)) {
            let (br, dr) = (rank_of(bm25, h.doc), rank_of(dense, h.doc));
            candidates.push(Candidate {
                doc_id: corpus[h.doc as usize].id.clone(),
                rank: candidates.len() as u32 + 1,
                bm25: bm25_score.get(&h.doc).copied().unwrap_or(0.0),
                dense: dot(qe, self.emb.doc(h.doc as usize)),
                source: match (br, dr) {
                    (Some(_), Some(_)) => "both",
                    (Some(_), None) => "bm25",
                    _ => "dense",
                }
                .to_string(),
                bm25_rank: br,
                dense_rank: dr,
                label: None,
                p_relevant: None,
            });
        }
        let scores: Vec<f32> = candidates.iter().map(|c| c.dense).collect();
        let verdicts = self.opts.rules.apply(&scores, weakest_positive, &q.id);
        let mut kept = Vec::with_capacity(candidates.len());
        let mut dropped = Vec::new();
        for (c, v) in candidates.into_iter().zip(verdicts) {
            match v {
                None => kept.push(c),
                Some(rule) => dropped.push(Dropped {
                    doc_id: c.doc_id,
                    rank: c.rank,
                    dense: c.dense,
                    rule: rule.name().to_string(),
                }),
            }
        }
        MinedRow {
            query_id: q.id.clone(),
            query: q.text.clone(),
            positives: positive_hits.iter().map(|p| p.doc_id.clone()).collect(),
            candidates: kept,
            positive_hits,
            dropped,
        }
    }
}

/// `OUT.parts/`: where a run keeps its finished parts until the output is written.
pub fn parts_dir(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".parts");
    out.with_file_name(name)
}

/// The hash that names a configuration: metadata minus nothing (it already holds
/// the options, the model, the input and the corpus hash).
pub fn run_key(metadata: &Metadata) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in metadata {
        if !is_keyed(k) {
            continue;
        }
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// Footer keys that say where the inputs were found, not what they hold: left out of
/// the run key, so `ds`, `./ds/` and an absolute path resume the same run (the
/// content is keyed by `sieve.corpus_hash` and `sieve.queries_hash`).
pub const DESCRIPTIVE_KEYS: [&str; 3] = ["sieve.input", "sieve.corpus", "sieve.extra_corpus"];

/// Whether a footer key is part of the run key (neither the key itself nor one of
/// [`DESCRIPTIVE_KEYS`]).
pub fn is_keyed(key: &str) -> bool {
    key != RUN_KEY && !DESCRIPTIVE_KEYS.contains(&key)
}

/// The complete footer metadata of a run: the caller's (model, input…) plus the
/// options, the corpus hash, the query count, the shard and the run key that ties
/// parts and shards to this configuration.
pub fn run_metadata(
    input: &MiningInput,
    opts: &MineOptions,
    mut metadata: Metadata,
) -> Result<Metadata> {
    metadata.insert(
        "sieve.options".into(),
        serde_json::to_string(opts).map_err(|e| Error::Input(e.to_string()))?,
    );
    metadata.insert("sieve.corpus_hash".into(), input.corpus_hash());
    metadata.insert("sieve.queries".into(), input.queries.len().to_string());
    metadata.insert("sieve.queries_hash".into(), input.queries_hash());
    metadata.insert("sieve.stage".into(), "mined".into());
    if let Some((i, n)) = opts.shard {
        metadata.insert(SHARD_KEY.into(), format!("{i}/{n}"));
    }
    let key = run_key(&metadata);
    metadata.insert(RUN_KEY.into(), key);
    Ok(metadata)
}

/// Mines the queries of `opts.shard` (all by default) into `out`, resuming from the
/// parts of an interrupted run with the same configuration, and returns the rows.
/// `metadata` comes from [`run_metadata`]. `progress` receives the number of
/// queries finished (including those found already done).
#[allow(clippy::too_many_arguments)]
pub fn mine(
    input: &MiningInput,
    emb: &QueryEmbeddings,
    bm25: &Bm25Index,
    ann: Option<&HnswIndex>,
    opts: &MineOptions,
    out: &Path,
    metadata: &Metadata,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<MinedRow>> {
    emb.check(input)?;
    if bm25.len() != input.corpus.len() {
        return Err(Error::Input(format!(
            "the BM25 index holds {} documents, the corpus {}",
            bm25.len(),
            input.corpus.len()
        )));
    }
    if matches!(opts.dense, DenseSearch::Hnsw { .. }) != ann.is_some() {
        return Err(Error::Input(
            "an HNSW index is needed exactly when dense search is `hnsw`".into(),
        ));
    }
    if let Some((i, n)) = opts.shard {
        if n == 0 || i >= n {
            return Err(Error::Input(format!("shard {i}/{n}: need 0 ≤ i < n")));
        }
    }
    let key = metadata
        .get(RUN_KEY)
        .cloned()
        .ok_or_else(|| Error::Input("metadata without a run key (use run_metadata)".into()))?;

    let parts = parts_dir(out);
    std::fs::create_dir_all(&parts).map_err(|e| Error::io(&parts, e))?;
    let manifest = parts.join("run_key");
    match std::fs::read_to_string(&manifest) {
        Ok(k) if k.trim() == key => {}
        Ok(_) => {
            return Err(Error::mismatch(
                &parts,
                "holds parts of a run with other options, model or input; delete it to start over",
            ))
        }
        Err(_) => std::fs::write(&manifest, &key).map_err(|e| Error::io(&manifest, e))?,
    }

    let device = match (&emb.device, ann) {
        (Some(d), None) if !d.is_cpu() => {
            Some(sieve_index::DeviceCorpus::upload(d, &emb.corpus, emb.dim)?)
        }
        _ => None,
    };
    let miner = Miner {
        input,
        emb,
        bm25,
        ann,
        device,
        opts,
    };
    let range = shard_range(input.queries.len(), opts.shard);
    let step = opts.part_queries.max(1);
    let mut rows = Vec::with_capacity(range.len());
    let mut start = range.start;
    while start < range.end {
        let end = (start + step).min(range.end);
        let part = parts.join(format!("part-{start:010}.parquet"));
        let done = part.exists()
            && read_metadata(&part)
                .ok()
                .is_some_and(|m| m.get(RUN_KEY) == Some(&key));
        let part_rows = if done {
            read_mined(&part)?.0
        } else {
            let r = miner.mine(start..end)?;
            write_mined(&part, &r, metadata)?;
            r
        };
        if part_rows.len() != end - start {
            return Err(Error::mismatch(
                &part,
                format!("holds {} rows, expected {}", part_rows.len(), end - start),
            ));
        }
        rows.extend(part_rows);
        progress(end - start);
        start = end;
    }
    write_mined(out, &rows, metadata)?;
    std::fs::remove_dir_all(&parts).map_err(|e| Error::io(&parts, e))?;
    Ok(rows)
}

/// Joins shard files (any order) into `out`: the same bytes one unsharded run with
/// the same configuration writes. Refuses shards of different runs, missing or
/// repeated shards.
pub fn merge_shards(shards: &[PathBuf], out: &Path) -> Result<Vec<MinedRow>> {
    let (rows, mut base, _) = sieve_datasets::mined::read_shard_set(shards, &[RUN_KEY])?;
    let total: usize = base
        .get("sieve.queries")
        .and_then(|q| q.parse().ok())
        .unwrap_or(rows.len());
    if rows.len() != total {
        return Err(Error::Input(format!(
            "the shards hold {} queries, the run has {total}",
            rows.len()
        )));
    }
    let key = run_key(&base);
    base.insert(RUN_KEY.into(), key);
    write_mined(out, &rows, &base)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit rows are not written (a mapped matrix keeps its pages shared with the
    /// file), other rows are scaled to unit length, zero rows stay zero.
    #[test]
    fn normalize_rows_leaves_unit_rows_untouched() {
        let s = 1.0f32 / 3.0f32.sqrt();
        let unit = [s, s, s];
        let mut m: Vec<f32> = unit
            .iter()
            .copied()
            .chain([3.0, 0.0, 4.0, 0.0, 0.0, 0.0])
            .collect();
        normalize_rows(&mut m, 3);
        assert_eq!(
            m[..3].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            unit.map(f32::to_bits)
        );
        assert_eq!(&m[3..], &[0.6, 0.0, 0.8, 0.0, 0.0, 0.0]);
        // Slightly off unit length is rescaled.
        let mut off = vec![1.001f32, 0.0];
        normalize_rows(&mut off, 2);
        assert_eq!(off, [1.0, 0.0]);
    }
}
