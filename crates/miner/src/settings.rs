//! The mining stage's settings, defined once: `sieve mine`'s flags and a pipeline's
//! `[mine]` table are this type, with these defaults.

use serde::{Deserialize, Serialize};
use sieve_encoder::EncodeSettings;
use sieve_index::HnswParams;

use crate::rules::Rules;
use crate::{DenseSearch, Error, MineOptions, Result, DEFAULT_K, DEFAULT_PART_QUERIES};

/// The rates `DenseKind::Auto` weighs, in core-seconds so that every shard of a run
/// makes the same choice on any machine (the choice is part of the run key). Measured on
/// 2 cores of an Intel Xeon (AVX-512), 384-d: the exact top-k's GFLOP/s per core in
/// `bench/dense/run.sh`; hnsw_rs (M 16, ef_construction 200) in `bench/hnsw/run.sh`,
/// 107 s to build 100k documents and 2,105 s for 1M, 2,460 and 537 queries/s at
/// recall@10 ≥ 0.98. Both costs grow with the dimension alike, so it cancels.
pub mod auto_cost {
    /// Exact search: sieve's blocked GEMM plus per-query heaps, per core (185 GFLOP/s
    /// on 2 cores for 100k × 10k × 384, 86% of the gemm crate's peak there).
    pub const EXACT_GFLOPS_PER_CORE: f64 = 90.0;
    /// HNSW build cost per document at 100k documents, per core; it grows as n^0.3
    /// (the two measured sizes: 2.1 ms at 100k, 4.2 ms at 1M).
    pub const BUILD_SECONDS_PER_DOC_100K: f64 = 2.14e-3;
    pub const BUILD_GROWTH: f64 = 0.30;
    /// HNSW search cost per query at recall@10 ≥ 0.98, per core: 0.81 ms at 100k,
    /// 3.7 ms at 1M (the ef needed grows with n).
    pub const SEARCH_SECONDS_PER_QUERY_100K: f64 = 0.81e-3;
    pub const SEARCH_GROWTH: f64 = 0.66;
    /// The dimension the rates were measured at.
    pub const DIM: f64 = 384.0;

    /// Core-seconds for the exact top-k of `queries` against `documents`.
    pub fn exact(documents: usize, queries: usize) -> f64 {
        2.0 * documents as f64 * queries as f64 * DIM / (EXACT_GFLOPS_PER_CORE * 1e9)
    }

    /// Core-seconds to build an HNSW graph of `documents` (scaled by `ef_construction`
    /// against the measured 200) and search it for `queries`.
    pub fn hnsw(documents: usize, queries: usize, ef_construction: usize) -> f64 {
        let scale = (documents.max(1) as f64 / 1e5).max(0.01);
        let build = documents as f64
            * BUILD_SECONDS_PER_DOC_100K
            * scale.powf(BUILD_GROWTH)
            * (ef_construction as f64 / 200.0);
        let search = queries as f64 * SEARCH_SECONDS_PER_QUERY_100K * scale.powf(SEARCH_GROWTH);
        build + search
    }
}

/// How dense candidates are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum DenseKind {
    /// Whichever the estimated work favours: exact search costs queries × documents ×
    /// dim, an HNSW graph documents × log-ish to build plus a little per query, so exact
    /// wins until the queries number in the hundreds of thousands (the choice and both
    /// estimates are printed).
    #[default]
    Auto,
    /// Brute-force cosine top-k (exact).
    Exact,
    /// hnsw_rs approximate search, built once and stored (see --hnsw-dir).
    Hnsw,
}

/// What decides a mining run's candidates (the paths it reads and writes are the
/// caller's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct MineSettings {
    /// Candidates from BM25 per query.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_K))]
    pub bm25_k: usize,

    /// Candidates from the embedding model per query.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_K))]
    pub dense_k: usize,

    /// k of reciprocal-rank fusion: score = Σ 1/(k + rank).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = sieve_index::DEFAULT_RRF_K))]
    pub rrf_k: f32,

    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = DenseKind::Auto))]
    pub dense: DenseKind,

    /// HNSW links per node.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = sieve_index::DEFAULT_HNSW_M))]
    pub hnsw_m: usize,

    /// HNSW candidates while building.
    #[cfg_attr(
        feature = "clap",
        arg(long, default_value_t = sieve_index::DEFAULT_HNSW_EF_CONSTRUCTION)
    )]
    pub hnsw_ef_construction: usize,

    /// HNSW candidates while searching (raised to the k searched for). Default: scaled
    /// with the corpus to reach recall@10 ≥ 0.98 (64 up to 100k documents, 256 at 1M;
    /// `bench/hnsw`); the recall reached is measured on a sample and printed.
    #[cfg_attr(feature = "clap", arg(long))]
    pub hnsw_ef_search: Option<usize>,

    /// sentence-transformers' `mine_hard_negatives` filters.
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(flatten)]
    pub rules: Rules,

    /// Queries per resumable part (a kill loses at most one part's work).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_PART_QUERIES))]
    pub part_queries: usize,

    /// Turn data warnings (duplicate ids, dangling qrels, empty texts) into errors.
    #[cfg_attr(feature = "clap", arg(long))]
    pub strict: bool,

    /// How the embedding model runs.
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(flatten)]
    pub encode: EncodeSettings,
}

impl Default for MineSettings {
    fn default() -> Self {
        Self {
            bm25_k: DEFAULT_K,
            dense_k: DEFAULT_K,
            rrf_k: sieve_index::DEFAULT_RRF_K,
            dense: DenseKind::Auto,
            hnsw_m: sieve_index::DEFAULT_HNSW_M,
            hnsw_ef_construction: sieve_index::DEFAULT_HNSW_EF_CONSTRUCTION,
            hnsw_ef_search: None,
            rules: Rules::default(),
            part_queries: DEFAULT_PART_QUERIES,
            strict: false,
            encode: EncodeSettings::default(),
        }
    }
}

impl MineSettings {
    /// The options a run over `documents` documents mines with: the `auto` policy
    /// resolved, the HNSW search depth raised to the k searched for. Rejects zero
    /// depths, naming the setting.
    pub fn options(
        &self,
        documents: usize,
        queries: usize,
        shard: Option<(usize, usize)>,
    ) -> Result<MineOptions> {
        for (name, v) in [
            ("bm25_k", self.bm25_k),
            ("dense_k", self.dense_k),
            ("part_queries", self.part_queries),
            ("batch_size", self.encode.batch_size),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        if self.hnsw_ef_search == Some(0) {
            return Err(Error::Config("hnsw_ef_search must be at least 1".into()));
        }
        let use_hnsw = self.dense_choice(documents, queries).0;
        Ok(MineOptions {
            bm25_k: self.bm25_k,
            dense_k: self.dense_k,
            rrf_k: self.rrf_k,
            dense: if use_hnsw {
                DenseSearch::hnsw(self.hnsw_params(documents))
            } else {
                DenseSearch::Exact
            },
            rules: self.rules.clone(),
            part_queries: self.part_queries,
            shard,
        })
    }

    /// Whether HNSW is used for `documents` × `queries` (all of the run's queries,
    /// not a shard's, so that every shard chooses alike), and why, for the log.
    pub fn dense_choice(&self, documents: usize, queries: usize) -> (bool, String) {
        let exact = auto_cost::exact(documents, queries);
        let hnsw = auto_cost::hnsw(documents, queries, self.hnsw_ef_construction);
        let estimates = format!(
            "estimated {} core-seconds exact vs {} to build and search an HNSW graph",
            fmt_seconds(exact),
            fmt_seconds(hnsw)
        );
        match self.dense {
            DenseKind::Exact => (
                false,
                format!("dense search: exact (--dense exact; {estimates})"),
            ),
            DenseKind::Hnsw => (
                true,
                format!("dense search: HNSW (--dense hnsw; {estimates})"),
            ),
            DenseKind::Auto if hnsw < exact => (
                true,
                format!("dense search: HNSW, chosen by --dense auto ({estimates})"),
            ),
            DenseKind::Auto => (
                false,
                format!("dense search: exact, chosen by --dense auto ({estimates})"),
            ),
        }
    }

    /// The graph's parameters for a corpus of `documents`: `ef_search` as given, or
    /// scaled with the corpus ([`sieve_index::ef_search_for`]), raised to the k
    /// searched for.
    pub fn hnsw_params(&self, documents: usize) -> HnswParams {
        HnswParams {
            m: self.hnsw_m,
            ef_construction: self.hnsw_ef_construction,
            ef_search: self
                .hnsw_ef_search
                .unwrap_or_else(|| sieve_index::ef_search_for(documents))
                .max(self.dense_k + 1),
        }
    }
}

fn fmt_seconds(s: f64) -> String {
    if s < 0.1 {
        "< 0.1".into()
    } else if s < 10.0 {
        format!("{s:.1}")
    } else {
        format!("{:.0}", s)
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: MineSettings,
    }

    /// `sieve mine` with no option and an empty `[mine]` table mine the same way.
    #[test]
    fn command_line_and_table_defaults_agree() {
        let cli = Cli::parse_from(["x"]).s;
        assert_eq!(cli, MineSettings::default());
        let table: MineSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(table, cli);
        // And a flag and its table key set the same field.
        let cli = Cli::parse_from(["x", "--bm25-k", "7", "--relative-margin", "0.05"]).s;
        let table: MineSettings =
            serde_json::from_str(r#"{"bm25_k": 7, "relative_margin": 0.05}"#).unwrap();
        assert_eq!(table, cli);
    }

    #[test]
    fn auto_search_weighs_the_work_of_each() {
        let s = MineSettings::default();
        assert_eq!(
            s.options(1_000, 100, None).unwrap().dense,
            DenseSearch::Exact
        );
        // 1M documents and 10k queries: the exact top-k is minutes, a graph most of an
        // hour (bench/mine once spent 67 of its 68 minutes building one).
        assert_eq!(
            s.options(1_000_000, 10_000, None).unwrap().dense,
            DenseSearch::Exact
        );
        let (_, why) = s.dense_choice(1_000_000, 10_000);
        assert!(why.contains("exact, chosen by --dense auto"), "{why}");
        // Millions of queries against a million documents: a graph pays.
        assert!(matches!(
            s.options(1_000_000, 5_000_000, None).unwrap().dense,
            DenseSearch::Hnsw { ef_search: 256, .. }
        ));
        let err = MineSettings {
            hnsw_ef_search: Some(0),
            ..Default::default()
        }
        .options(10, 10, None)
        .unwrap_err()
        .to_string();
        assert!(err.contains("hnsw_ef_search"), "{err}");
        let zero = MineSettings {
            dense_k: 0,
            ..Default::default()
        };
        let err = zero.options(10, 10, None).unwrap_err().to_string();
        assert!(err.contains("dense_k"), "{err}");
    }
}
