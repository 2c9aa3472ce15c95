//! The mining stage's settings, defined once: `sieve mine`'s flags and a pipeline's
//! `[mine]` table are this type, with these defaults.

use serde::{Deserialize, Serialize};
use sieve_encoder::EncodeSettings;
use sieve_index::HnswParams;

use crate::rules::Rules;
use crate::{DenseSearch, Error, MineOptions, Result, DEFAULT_K, DEFAULT_PART_QUERIES};

/// Above this many documents `DenseKind::Auto` uses HNSW instead of exact search.
pub const AUTO_HNSW_MIN_DOCS: usize = 200_000;

/// How dense candidates are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum DenseKind {
    /// Exact below 200,000 documents, HNSW above.
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

    /// HNSW candidates while searching (raised to the k searched for).
    #[cfg_attr(
        feature = "clap",
        arg(long, default_value_t = sieve_index::DEFAULT_HNSW_EF_SEARCH)
    )]
    pub hnsw_ef_search: usize,

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
            hnsw_ef_search: sieve_index::DEFAULT_HNSW_EF_SEARCH,
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
    pub fn options(&self, documents: usize, shard: Option<(usize, usize)>) -> Result<MineOptions> {
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
        let use_hnsw = match self.dense {
            DenseKind::Exact => false,
            DenseKind::Hnsw => true,
            DenseKind::Auto => documents >= AUTO_HNSW_MIN_DOCS,
        };
        Ok(MineOptions {
            bm25_k: self.bm25_k,
            dense_k: self.dense_k,
            rrf_k: self.rrf_k,
            dense: if use_hnsw {
                DenseSearch::hnsw(self.hnsw_params())
            } else {
                DenseSearch::Exact
            },
            rules: self.rules.clone(),
            part_queries: self.part_queries,
            shard,
        })
    }

    pub fn hnsw_params(&self) -> HnswParams {
        HnswParams {
            m: self.hnsw_m,
            ef_construction: self.hnsw_ef_construction,
            ef_search: self.hnsw_ef_search.max(self.dense_k + 1),
        }
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
    fn auto_search_is_decided_by_the_corpus_size() {
        let s = MineSettings::default();
        assert_eq!(s.options(1_000, None).unwrap().dense, DenseSearch::Exact);
        assert!(matches!(
            s.options(AUTO_HNSW_MIN_DOCS, None).unwrap().dense,
            DenseSearch::Hnsw { ef_search, .. }
                if ef_search == sieve_index::DEFAULT_HNSW_EF_SEARCH.max(DEFAULT_K + 1)
        ));
        let zero = MineSettings {
            dense_k: 0,
            ..Default::default()
        };
        let err = zero.options(10, None).unwrap_err().to_string();
        assert!(err.contains("dense_k"), "{err}");
    }
}
