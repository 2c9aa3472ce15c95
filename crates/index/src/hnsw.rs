//! Approximate dense top-k over an HNSW graph (hnsw_rs).
//!
//! Exact search ([`crate::exact_top_k`]) costs a full corpus scan per query;
//! mining negatives for every training query, every epoch, over multi-million
//! document corpora needs sub-linear search, at the price of a small recall
//! loss that [`HnswParams::ef_search`] trades against speed.
//!
//! Scores are cosines. hnsw_rs's `DistDot` computes `1 - dot` and *asserts*
//! `dot ≤ 1.000002`, so a vector even slightly longer than 1 would abort a
//! build or a search half-way. Corpus rows therefore must already be unit
//! length (within [`NORM_TOLERANCE`]; anything else is reported as
//! [`Error::NotNormalized`] rather than silently ranking by cosine when the
//! caller meant inner product), and every row is re-normalised on its way into
//! the graph so rounding can never trip that assert. Queries are normalised
//! too (their length does not change the ranking).
//!
//! Persistence: [`HnswIndex::dump`] writes hnsw_rs's own two files plus a small
//! text sidecar holding what hnsw_rs does not check (our parameters, the
//! dimension and the row count); [`HnswIndex::load`] validates the sidecar and
//! the data file's exact size before handing the files to hnsw_rs, whose
//! loader exits the process on a truncated data file. The files are in native
//! byte order: a dump moves between machines of the same endianness only.
//!
//! Determinism: insertion is parallel, so the graph (and hence which
//! near-ties are found) depends on thread timing and differs slightly between
//! builds; a given graph, in memory or dumped and reloaded, always answers the
//! same queries identically.

use std::fs;
use std::io::ErrorKind;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::DistDot;
use rayon::prelude::*;

use crate::{Error, Hit};

/// Default links per node on the upper layers (the base layer keeps `2·m`):
/// the usual setting for sentence embeddings of a few hundred dimensions.
pub const DEFAULT_HNSW_M: usize = 16;

/// Default candidate list size while inserting: high enough that recall at
/// search time is limited by `ef_search`, not by a poorly connected graph.
pub const DEFAULT_HNSW_EF_CONSTRUCTION: usize = 200;

/// Default candidate list size while searching (raised to `k` when `k` is
/// larger): on all-MiniLM-L6-v2 SciFact embeddings recall@10 is 0.99 here and
/// 0.98 at 32, so the default leaves headroom for larger, harder corpora.
pub const DEFAULT_HNSW_EF_SEARCH: usize = 64;

/// The `ef_search` that reaches recall@10 ≥ 0.98 on an hnsw_rs graph of `documents`
/// (M 16, ef_construction 200), never below [`DEFAULT_HNSW_EF_SEARCH`]: the depth a
/// search needs grows with the graph. Fitted to `bench/hnsw/run.sh` on 384-d data:
/// 32 at 5k (SciFact), 48 at 100k and 256 at 1M (recall 0.9869) synthetic documents,
/// i.e. ef ∝ n^0.73 past 100k; larger graphs are extrapolated on that slope, capped at
/// 4,096. Rounded up to a multiple of 8. [`measured_recall`] measures what a run got.
pub fn ef_search_for(documents: usize) -> usize {
    let slope = (256f64 / 48.0).log10();
    let n = documents.max(1) as f64;
    let ef = if n <= 1e5 {
        48.0
    } else {
        48.0 * (n / 1e5).powf(slope)
    };
    // Rounded (not ceiled) first: 48 · 10^slope is 256 only up to float error.
    let ef = (ef.round() as usize).clamp(DEFAULT_HNSW_EF_SEARCH, 4096);
    ef.div_ceil(8) * 8
}

/// What [`measured_recall`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasuredRecall {
    /// Mean over the sampled queries of |HNSW top-k ∩ exact top-k| / k.
    pub recall: f64,
    pub k: usize,
    pub queries: usize,
}

/// Recall@`k` of `index` against exact search over `corpus` (the rows it was built
/// from), on up to `sample` of `queries` evenly spaced through them: what a run's
/// graph and `ef_search` actually reached, for the log, at the cost of `sample` exact
/// searches (a second at 200 queries × 1M documents).
pub fn measured_recall(
    index: &HnswIndex,
    corpus: &[f32],
    queries: &[f32],
    k: usize,
    sample: usize,
) -> MeasuredRecall {
    let dim = index.dim;
    let nq = queries.len() / dim.max(1);
    let take = sample.min(nq);
    let picked: Vec<f32> = (0..take)
        .flat_map(|j| {
            let i = j * nq / take.max(1);
            queries[i * dim..(i + 1) * dim].iter().copied()
        })
        .collect();
    let mut unit = Vec::with_capacity(picked.len());
    for q in picked.chunks_exact(dim.max(1)) {
        let mut u = Vec::with_capacity(dim);
        // A non-finite query (HNSW finds nothing for it) is scored as zeros.
        if !normalise_into(q, &mut u) {
            u = vec![0.0; dim];
        }
        unit.extend(u);
    }
    let exact = crate::exact_top_k(&unit, corpus, dim, k, &|_, _| false);
    let approx = index.search(&picked, k);
    let mut total = 0.0;
    for (e, a) in exact.iter().zip(&approx) {
        if e.is_empty() {
            total += 1.0;
            continue;
        }
        let want: std::collections::HashSet<u32> = e.iter().map(|h| h.doc).collect();
        total += a.iter().filter(|h| want.contains(&h.doc)).count() as f64 / e.len() as f64;
    }
    MeasuredRecall {
        recall: if take == 0 { 1.0 } else { total / take as f64 },
        k,
        queries: take,
    }
}

/// Defaults of [`HnswParams`], usable in `const` contexts.
pub const DEFAULT_HNSW_PARAMS: HnswParams = HnswParams {
    m: DEFAULT_HNSW_M,
    ef_construction: DEFAULT_HNSW_EF_CONSTRUCTION,
    ef_search: DEFAULT_HNSW_EF_SEARCH,
};

/// How far a corpus row's L2 norm may be from 1 and still be accepted: loose
/// enough for embeddings normalised in f16/bf16 or by another library, tight
/// enough to catch un-normalised model outputs (norms of several units).
pub const NORM_TOLERANCE: f32 = 1e-3;

/// hnsw_rs stores `m` as a `u8` in its dump and refuses more than 256 in memory.
const MAX_M: usize = 255;

/// Layers hnsw_rs allocates; its dump refuses any other value, and the level
/// distribution (scale `1 / ln m`) never gets near it.
const NB_LAYERS: usize = 16;

/// hnsw_rs writes `<basename>.hnsw.graph` and `<basename>.hnsw.data`.
const BASENAME: &str = "hnsw";

/// Our sidecar, written last so that a dump interrupted half-way is not loadable.
const META_FILE: &str = "sieve-hnsw.txt";

/// First line of the sidecar; bump when the layout of the dump changes.
const META_FORMAT: &str = "sieve-hnsw 1";

/// hnsw_rs's data file: a 4-byte magic and the dimension (usize), then per
/// point a 4-byte magic, the id (u64), the byte length (u64) and the floats.
const DATA_HEADER_BYTES: u64 = 4 + 8;
const DATA_POINT_OVERHEAD_BYTES: u64 = 4 + 8 + 8;

/// Graph construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on upper layers (`2·m` on the base layer); more links
    /// raise recall at a given `ef_search` at the cost of memory and build time.
    /// Unlike hnswlib, which links a new node to `m` neighbours on the base
    /// layer and only lets reverse links grow it to `2·m`, hnsw_rs selects
    /// `2·m` from the start: at equal `m` its graph is denser (higher recall
    /// per `ef_search`, costlier per step).
    pub m: usize,
    /// Candidates considered when linking a new node; higher builds a better
    /// graph, more slowly.
    pub ef_construction: usize,
    /// Candidates kept while searching (at least `k`); the recall/speed knob.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        DEFAULT_HNSW_PARAMS
    }
}

impl HnswParams {
    fn validate(&self) -> Result<(), Error> {
        if !(2..=MAX_M).contains(&self.m) {
            return Err(Error::InvalidArgument(format!(
                "HNSW m = {} outside 2..={MAX_M}",
                self.m
            )));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(Error::InvalidArgument(format!(
                "HNSW ef_construction ({}) and ef_search ({}) must be positive",
                self.ef_construction, self.ef_search
            )));
        }
        Ok(())
    }
}

/// An HNSW graph over unit-length vectors, ranked by cosine.
///
/// Hits refer to row positions in the `vectors` slice given to [`Self::build`].
pub struct HnswIndex {
    graph: Hnsw<'static, f32, DistDot>,
    dim: usize,
    len: usize,
    params: HnswParams,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.dim)
            .field("len", &self.len)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl HnswIndex {
    /// Builds the graph over `vectors` (`n × dim`, row-major), inserting rows
    /// in parallel on the current rayon pool.
    ///
    /// Every row must have an L2 norm within [`NORM_TOLERANCE`] of 1 (see the
    /// module docs for why); the first row that does not (including rows with
    /// NaN or infinite values) is reported as [`Error::NotNormalized`].
    pub fn build(vectors: &[f32], dim: usize, params: HnswParams) -> Result<Self, Error> {
        params.validate()?;
        let len = rows(vectors.len(), dim, "corpus")?;
        if len == 0 {
            return Err(Error::InvalidArgument(
                "cannot build an HNSW index over an empty corpus".into(),
            ));
        }
        if u32::try_from(len).is_err() {
            return Err(Error::TooManyDocuments(len));
        }
        let bad = vectors
            .par_chunks_exact(dim)
            .enumerate()
            .map(|(row, v)| (row, l2_norm(v)))
            .find_first(|&(_, norm)| !is_unit(norm));
        if let Some((row, norm)) = bad {
            return Err(Error::NotNormalized { row, norm });
        }

        let mut graph = Hnsw::new(params.m, len, NB_LAYERS, params.ef_construction, DistDot);
        // `parallel_insert_slice` would need the normalised copy of the whole
        // corpus at once; one scratch row per worker does the same job.
        vectors.par_chunks_exact(dim).enumerate().for_each_init(
            || Vec::with_capacity(dim),
            |unit, (row, v)| {
                normalise_into(v, unit);
                graph.insert_slice((unit, row));
            },
        );
        graph.set_searching_mode(true);
        Ok(Self {
            graph,
            dim,
            len,
            params,
        })
    }

    /// For each query (`nq × dim`, row-major), at most `k` hits best first,
    /// scored by cosine; ties are broken by lower position as elsewhere in
    /// this crate. Queries run in parallel on the current rayon pool.
    ///
    /// Queries need not be unit length (they are normalised; the ranking does
    /// not depend on their length). A query containing NaN or infinity gets no
    /// hits; an all-zero query gets arbitrary documents scored 0.
    ///
    /// # Panics
    ///
    /// If `queries.len()` is not a multiple of the index's dimension: that is
    /// a caller bug (a mis-shaped buffer), not a data error.
    pub fn search(&self, queries: &[f32], k: usize) -> Vec<Vec<Hit>> {
        assert!(
            queries.len().is_multiple_of(self.dim),
            "HnswIndex::search: query buffer of {} floats is not a multiple of dim {}",
            queries.len(),
            self.dim
        );
        if k == 0 {
            return vec![Vec::new(); queries.len() / self.dim];
        }
        let ef = self.params.ef_search.max(k);
        queries
            .par_chunks_exact(self.dim)
            .map_init(
                || Vec::with_capacity(self.dim),
                |unit, query| self.search_one(query, k, ef, unit),
            )
            .collect()
    }

    fn search_one(&self, query: &[f32], k: usize, ef: usize, unit: &mut Vec<f32>) -> Vec<Hit> {
        if !normalise_into(query, unit) {
            return Vec::new();
        }
        let mut hits: Vec<Hit> = self
            .graph
            .search(unit, k, ef)
            .into_iter()
            .map(|n| Hit {
                // Ids are row positions, checked to fit u32 at build/load.
                doc: n.d_id as u32,
                score: 1.0 - n.distance,
            })
            .collect();
        hits.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
        hits
    }

    /// Changes the recall/speed trade-off of later searches; the graph is
    /// unaffected, so one build serves every operating point.
    pub fn set_ef_search(&mut self, ef_search: usize) {
        // Zero would make every search return nothing; 1 is the smallest
        // meaningful value and `search` raises it to `k` anyway.
        self.params.ef_search = ef_search.max(1);
    }

    /// The parameters the graph was built with, and the current `ef_search`.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Dimension of the indexed vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of indexed vectors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an index over an empty corpus cannot be built.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the graph and vectors to `dir` (created if missing; a previous
    /// dump there is replaced) so that [`Self::load`] can skip the build.
    pub fn dump(&self, dir: &Path) -> Result<(), Error> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let meta_path = dir.join(META_FILE);
        // Until the new sidecar is written, the directory must not look loadable.
        match fs::remove_file(&meta_path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err(&meta_path)(e)),
            _ => {}
        }
        // hnsw_rs panics when it cannot create its files; find out first.
        for path in [graph_path(dir), data_path(dir)] {
            fs::File::create(&path).map_err(io_err(&path))?;
        }
        let written = self
            .graph
            .file_dump(dir, BASENAME)
            .map_err(|e| Error::Hnsw(format!("dumping to {}: {e:#}", dir.display())))?;
        if written != BASENAME {
            return Err(Error::Hnsw(format!(
                "hnsw_rs dumped to basename {written:?} in {} instead of {BASENAME:?}",
                dir.display()
            )));
        }
        let meta = format!(
            "{META_FORMAT}\ndim={}\ncount={}\nm={}\nef_construction={}\nef_search={}\n",
            self.dim, self.len, self.params.m, self.params.ef_construction, self.params.ef_search
        );
        fs::write(&meta_path, meta).map_err(io_err(&meta_path))
    }

    /// Reloads an index written by [`Self::dump`], with the `ef_search` it had.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let meta_path = dir.join(META_FILE);
        let text = fs::read_to_string(&meta_path).map_err(io_err(&meta_path))?;
        let corrupt = |msg: String| Error::Hnsw(format!("{}: {msg}", meta_path.display()));
        let (dim, len, params) = parse_meta(&text).map_err(corrupt)?;
        params.validate().map_err(|e| corrupt(e.to_string()))?;
        if dim == 0 || len == 0 || u32::try_from(len).is_err() {
            return Err(corrupt(format!("invalid dim {dim} / count {len}")));
        }

        // hnsw_rs's loader exits the process on a short data file and reads
        // vectors of the length its header claims; check the exact size first.
        let data = data_path(dir);
        let actual = fs::metadata(&data).map_err(io_err(&data))?.len();
        let expected = (dim as u64)
            .checked_mul(4)
            .and_then(|b| b.checked_add(DATA_POINT_OVERHEAD_BYTES))
            .and_then(|b| b.checked_mul(len as u64))
            .and_then(|b| b.checked_add(DATA_HEADER_BYTES));
        if expected != Some(actual) {
            return Err(Error::Hnsw(format!(
                "{}: {actual} bytes, but {len} vectors of dimension {dim} take {} \
                 (truncated, or not written with {})",
                data.display(),
                expected.map_or_else(|| "more than u64".to_string(), |b| b.to_string()),
                meta_path.display()
            )));
        }
        let graph_file = graph_path(dir);
        fs::metadata(&graph_file).map_err(io_err(&graph_file))?;

        // Default reload options: no mmap, so every vector is copied into a
        // `Vec` owned by the graph.
        let reloader = HnswIo::new(dir, BASENAME);
        // hnsw_rs asserts (panics) on inconsistencies inside its files; those
        // are data errors here, not bugs.
        let graph = catch_unwind(AssertUnwindSafe(|| {
            reloader.load_hnsw_with_dist::<f32, DistDot>(DistDot)
        }))
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "hnsw_rs panicked".into())
        })
        .and_then(|loaded| loaded.map_err(|e| format!("{e:#}")))
        .map_err(|msg| Error::Hnsw(format!("loading {}: {msg}", graph_file.display())))?;
        // SAFETY: `Hnsw<'b, ..>`'s lifetime only bounds vectors borrowed from
        // an mmap owned by the `HnswIo`. Without mmap (the default options
        // used above) every point owns its vector, so nothing in the graph
        // refers to `reloader` and the graph may outlive it. Lifetimes do not
        // affect layout, so this transmute changes nothing else. (The
        // alternatives were leaking the `HnswIo` or a self-referential struct.)
        let mut graph = unsafe {
            std::mem::transmute::<Hnsw<'_, f32, DistDot>, Hnsw<'static, f32, DistDot>>(graph)
        };
        drop(reloader);

        let found = (
            graph.get_nb_point(),
            graph.get_point_indexation().get_data_dimension(),
            usize::from(graph.get_max_nb_connection()),
            graph.get_ef_construction(),
        );
        if found != (len, dim, params.m, params.ef_construction) {
            return Err(Error::Hnsw(format!(
                "{} holds (count, dim, m, ef_construction) = {found:?} but {} says {:?}",
                graph_file.display(),
                meta_path.display(),
                (len, dim, params.m, params.ef_construction)
            )));
        }
        graph.set_searching_mode(true);
        Ok(Self {
            graph,
            dim,
            len,
            params,
        })
    }
}

fn graph_path(dir: &Path) -> PathBuf {
    dir.join(format!("{BASENAME}.hnsw.graph"))
}

fn data_path(dir: &Path) -> PathBuf {
    dir.join(format!("{BASENAME}.hnsw.data"))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Number of `dim`-wide rows in a buffer of `floats` values.
fn rows(floats: usize, dim: usize, what: &str) -> Result<usize, Error> {
    if dim == 0 || !floats.is_multiple_of(dim) {
        return Err(Error::InvalidArgument(format!(
            "{what} buffer of {floats} floats is not a whole number of rows of dimension {dim}"
        )));
    }
    Ok(floats / dim)
}

/// False for NaN, so rows holding NaN are rejected.
fn is_unit(norm: f32) -> bool {
    (norm - 1.0).abs() <= NORM_TOLERANCE
}

fn l2_norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Writes `v / |v|` into `out`; a zero vector stays zero. Returns false (and
/// leaves `out` unspecified) if `v` has a NaN or infinite component or norm.
fn normalise_into(v: &[f32], out: &mut Vec<f32>) -> bool {
    let norm = l2_norm(v);
    if !norm.is_finite() {
        return false;
    }
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    out.clear();
    out.extend(v.iter().map(|x| x * inv));
    true
}

/// Parses the sidecar written by [`HnswIndex::dump`]: `(dim, count, params)`.
fn parse_meta(text: &str) -> Result<(usize, usize, HnswParams), String> {
    let mut lines = text.lines();
    if lines.next() != Some(META_FORMAT) {
        return Err(format!("first line is not {META_FORMAT:?}"));
    }
    let mut fields = [None; 5];
    const KEYS: [&str; 5] = ["dim", "count", "m", "ef_construction", "ef_search"];
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line:?} is not key=value"))?;
        let slot = KEYS
            .iter()
            .position(|k| *k == key.trim())
            .ok_or_else(|| format!("unknown key {key:?}"))?;
        let value = value
            .trim()
            .parse::<usize>()
            .map_err(|e| format!("{key}: {e}"))?;
        fields[slot] = Some(value);
    }
    let mut values = [0; 5];
    for (i, field) in fields.iter().enumerate() {
        values[i] = field.ok_or_else(|| format!("missing {}", KEYS[i]))?;
    }
    let [dim, count, m, ef_construction, ef_search] = values;
    Ok((
        dim,
        count,
        HnswParams {
            m,
            ef_construction,
            ef_search,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::exact_top_k;

    /// xorshift64* with Box–Muller normals: deterministic data without `rand`.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in (0, 1].
        fn uniform(&mut self) -> f32 {
            ((self.next_u64() >> 40) as f32 + 1.0) / (1u64 << 24) as f32
        }
        fn normal(&mut self) -> f32 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        }
    }

    fn normalise_rows(v: &mut [f32], dim: usize) {
        for row in v.chunks_exact_mut(dim) {
            let n = l2_norm(row);
            row.iter_mut().for_each(|x| *x /= n);
        }
    }

    /// `n` unit vectors around `clusters` random centres, plus `nq` queries
    /// drawn the same way (so they land near the corpus, as real queries do).
    fn clustered(
        n: usize,
        nq: usize,
        dim: usize,
        clusters: usize,
        seed: u64,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let mut centres: Vec<f32> = (0..clusters * dim).map(|_| rng.normal()).collect();
        normalise_rows(&mut centres, dim);
        let noise = 0.6 / (dim as f32).sqrt();
        let mut draw = |count: usize| {
            let mut out = Vec::with_capacity(count * dim);
            for _ in 0..count {
                let c = (rng.next_u64() % clusters as u64) as usize;
                let centre = &centres[c * dim..(c + 1) * dim];
                out.extend(centre.iter().map(|x| x + noise * rng.normal()));
            }
            normalise_rows(&mut out, dim);
            out
        };
        let corpus = draw(n);
        let queries = draw(nq);
        (corpus, queries)
    }

    const DIM: usize = 64;

    /// One 20k × 64 index shared by the tests that need a realistic graph
    /// (hnsw_rs builds it in ~6 s on 2 cores; `ef_construction` is halved
    /// from the default to keep the suite fast, recall stays ~1 on this data).
    fn shared() -> &'static (Vec<f32>, Vec<f32>, HnswIndex) {
        static SHARED: OnceLock<(Vec<f32>, Vec<f32>, HnswIndex)> = OnceLock::new();
        SHARED.get_or_init(|| {
            let (corpus, queries) = clustered(20_000, 500, DIM, 200, 7);
            let params = HnswParams {
                ef_construction: 100,
                ..HnswParams::default()
            };
            let index = HnswIndex::build(&corpus, DIM, params).expect("build");
            (corpus, queries, index)
        })
    }

    fn recall(approx: &[Vec<Hit>], exact: &[Vec<Hit>]) -> f64 {
        let mut found = 0usize;
        let mut total = 0usize;
        for (a, e) in approx.iter().zip(exact) {
            total += e.len();
            found += e
                .iter()
                .filter(|h| a.iter().any(|x| x.doc == h.doc))
                .count();
        }
        found as f64 / total as f64
    }

    #[test]
    fn recall_at_10_against_exact() {
        let (corpus, queries, index) = shared();
        let approx = index.search(queries, 10);
        let exact = exact_top_k(queries, corpus, DIM, 10, &|_, _| false);
        let r = recall(&approx, &exact);
        assert!(r >= 0.98, "recall@10 = {r}");
        for (a, e) in approx.iter().zip(&exact) {
            assert_eq!(a.len(), 10);
            assert!(a.windows(2).all(|w| w[0].score >= w[1].score));
            // Scores are the same cosines exact search computes.
            if a[0].doc == e[0].doc {
                assert!((a[0].score - e[0].score).abs() < 1e-4);
            }
        }
    }

    /// The sampled recall the miner prints is the recall of the whole query set,
    /// within sampling error, and low when the graph's answers are not exact search's.
    #[test]
    fn measured_recall_follows_the_recall_of_every_query() {
        let (corpus, queries, index) = shared();
        let all = recall(
            &index.search(queries, 10),
            &exact_top_k(queries, corpus, DIM, 10, &|_, _| false),
        );
        let m = measured_recall(index, corpus, queries, 10, 100);
        assert_eq!((m.k, m.queries), (10, 100));
        assert!((m.recall - all).abs() < 0.03, "{} vs {all}", m.recall);
        // Against rows the graph was not built from (each moved one place), the exact
        // ids no longer match the graph's: the measurement says so.
        let mut moved = corpus[DIM..].to_vec();
        moved.extend_from_slice(&corpus[..DIM]);
        let off = measured_recall(index, &moved, queries, 10, 100);
        assert!(off.recall < 0.05, "{}", off.recall);
        assert_eq!(
            measured_recall(index, corpus, queries, 10, 10_000).queries,
            queries.len() / DIM
        );
    }

    #[test]
    fn ef_search_grows_with_the_corpus_through_the_measured_points() {
        assert_eq!(ef_search_for(5_000), DEFAULT_HNSW_EF_SEARCH);
        assert_eq!(ef_search_for(100_000), DEFAULT_HNSW_EF_SEARCH);
        assert_eq!(ef_search_for(1_000_000), 256);
        let ten_m = ef_search_for(10_000_000);
        assert!((1300..=1400).contains(&ten_m), "{ten_m}");
        assert_eq!(ef_search_for(usize::MAX), 4096);
        let mut last = 0;
        for n in [0, 1, 10, 200_000, 500_000, 2_000_000, 100_000_000] {
            let ef = ef_search_for(n);
            assert!(ef >= last && ef.is_multiple_of(8), "{n}: {ef}");
            last = ef;
        }
    }

    #[test]
    fn dump_and_load_give_identical_hits() {
        let (_, queries, index) = shared();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/index");
        index.dump(&path).expect("dump");
        let loaded = HnswIndex::load(&path).expect("load");
        assert_eq!((loaded.dim(), loaded.len()), (index.dim(), index.len()));
        assert_eq!(loaded.params(), index.params());
        assert_eq!(loaded.search(queries, 10), index.search(queries, 10));
        // Dumping over an existing dump replaces it.
        loaded.dump(&path).expect("second dump");
        let again = HnswIndex::load(&path).expect("second load");
        assert_eq!(again.search(queries, 10), index.search(queries, 10));
    }

    #[test]
    fn ef_search_is_persisted_and_settable() {
        let (corpus, queries) = clustered(500, 10, 16, 10, 3);
        let mut index = HnswIndex::build(&corpus, 16, HnswParams::default()).expect("build");
        index.set_ef_search(200);
        let dir = tempfile::tempdir().expect("tempdir");
        index.dump(dir.path()).expect("dump");
        let loaded = HnswIndex::load(dir.path()).expect("load");
        assert_eq!(loaded.params().ef_search, 200);
        assert_eq!(loaded.search(&queries, 5), index.search(&queries, 5));
    }

    #[test]
    fn rejects_rows_that_are_not_unit_length() {
        let (mut corpus, _) = clustered(100, 0, 8, 4, 1);
        // Within tolerance: accepted (and re-normalised internally).
        corpus[8..16]
            .iter_mut()
            .for_each(|x| *x *= 1.0 + 0.5 * NORM_TOLERANCE);
        assert!(HnswIndex::build(&corpus, 8, HnswParams::default()).is_ok());

        corpus[5 * 8..6 * 8].iter_mut().for_each(|x| *x *= 3.0);
        match HnswIndex::build(&corpus, 8, HnswParams::default()) {
            Err(Error::NotNormalized { row: 5, norm }) => assert!((norm - 3.0).abs() < 1e-3),
            other => panic!("expected NotNormalized for row 5, got {other:?}"),
        }
        corpus[2 * 8] = f32::NAN;
        assert!(matches!(
            HnswIndex::build(&corpus, 8, HnswParams::default()),
            Err(Error::NotNormalized { row: 2, .. })
        ));
    }

    #[test]
    fn rejects_bad_shapes_and_params() {
        let (corpus, _) = clustered(10, 0, 8, 2, 1);
        let bad = |r: Result<HnswIndex, Error>| matches!(r, Err(Error::InvalidArgument(_)));
        assert!(bad(HnswIndex::build(&corpus, 7, HnswParams::default())));
        assert!(bad(HnswIndex::build(&corpus, 0, HnswParams::default())));
        assert!(bad(HnswIndex::build(&[], 8, HnswParams::default())));
        for params in [
            HnswParams {
                m: 0,
                ..HnswParams::default()
            },
            HnswParams {
                m: 256,
                ..HnswParams::default()
            },
            HnswParams {
                ef_construction: 0,
                ..HnswParams::default()
            },
        ] {
            assert!(bad(HnswIndex::build(&corpus, 8, params)), "{params:?}");
        }
    }

    #[test]
    fn k_larger_than_corpus_returns_every_document_once() {
        let (corpus, queries) = clustered(100, 5, 8, 4, 2);
        let index = HnswIndex::build(&corpus, 8, HnswParams::default()).expect("build");
        for hits in index.search(&queries, 150) {
            assert_eq!(hits.len(), 100);
            let mut docs: Vec<u32> = hits.iter().map(|h| h.doc).collect();
            docs.sort_unstable();
            docs.dedup();
            assert_eq!(docs.len(), 100);
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn empty_and_degenerate_queries() {
        let (corpus, queries) = clustered(100, 2, 8, 4, 4);
        let index = HnswIndex::build(&corpus, 8, HnswParams::default()).expect("build");
        assert!(index.search(&[], 10).is_empty());
        assert_eq!(index.search(&queries, 0), vec![Vec::<Hit>::new(); 2]);
        // Query length does not change the ranking.
        let scaled: Vec<f32> = queries.iter().map(|x| x * 4.0).collect();
        assert_eq!(index.search(&scaled, 5), index.search(&queries, 5));
        let mut nan = queries.clone();
        nan[0] = f32::NAN;
        let hits = index.search(&nan, 5);
        assert!(hits[0].is_empty());
        assert_eq!(hits[1].len(), 5);
    }

    #[test]
    fn load_reports_missing_and_damaged_files() {
        let (corpus, _) = clustered(200, 0, 8, 4, 5);
        let index = HnswIndex::build(&corpus, 8, HnswParams::default()).expect("build");
        let dir = tempfile::tempdir().expect("tempdir");

        let err = HnswIndex::load(dir.path()).expect_err("empty dir");
        assert!(err.to_string().contains(META_FILE), "{err}");

        index.dump(dir.path()).expect("dump");
        let data = data_path(dir.path());
        let bytes = fs::read(&data).expect("read data");
        fs::write(&data, &bytes[..bytes.len() - 3]).expect("truncate");
        let err = HnswIndex::load(dir.path()).expect_err("truncated");
        assert!(err.to_string().contains("hnsw.hnsw.data"), "{err}");

        index.dump(dir.path()).expect("dump");
        let meta = dir.path().join(META_FILE);
        let text = fs::read_to_string(&meta).expect("read meta");
        fs::write(&meta, text.replace("dim=8", "dim=x")).expect("write meta");
        let err = HnswIndex::load(dir.path()).expect_err("bad sidecar");
        assert!(err.to_string().contains(META_FILE), "{err}");

        fs::write(&meta, text.replace("m=16", "m=12")).expect("write meta");
        let err = HnswIndex::load(dir.path()).expect_err("inconsistent sidecar");
        assert!(err.to_string().contains("hnsw.hnsw.graph"), "{err}");
    }
}
