//! A mined file is the same bytes whether the run was interrupted and resumed, or
//! split into shards and merged.

use std::path::{Path, PathBuf};

use sieve_datasets::mined::read_mined;
use sieve_datasets::Document;
use sieve_miner::input::{MineQuery, MiningInput};
use sieve_miner::rules::Rules;
use sieve_miner::{mine, normalize_rows, run_metadata, MineOptions, QueryEmbeddings};

const WORDS: [&str; 24] = [
    "protein", "cell", "gene", "virus", "cancer", "immune", "brain", "heart", "drug", "trial",
    "mouse", "tissue", "blood", "liver", "kidney", "lung", "bone", "skin", "muscle", "nerve",
    "enzyme", "hormone", "insulin", "vaccine",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// 400 documents of 8 words and 90 queries, each with one or two positives;
/// embeddings that are noisy copies of a per-word direction, so dense and BM25 agree
/// only partly.
#[allow(clippy::needless_range_loop)]
fn fixture() -> (MiningInput, QueryEmbeddings) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let dim = 16;
    let word_vecs: Vec<Vec<f32>> = (0..WORDS.len())
        .map(|_| (0..dim).map(|_| rng.unit()).collect())
        .collect();
    let mut corpus = Vec::new();
    let mut corpus_emb = Vec::new();
    for i in 0..400 {
        let words: Vec<usize> = (0..8)
            .map(|_| (rng.next() % WORDS.len() as u64) as usize)
            .collect();
        let text: Vec<&str> = words.iter().map(|&w| WORDS[w]).collect();
        corpus.push(Document {
            id: format!("doc{i}"),
            title: String::new(),
            text: text.join(" "),
        });
        for d in 0..dim {
            let v: f32 = words.iter().map(|&w| word_vecs[w][d]).sum::<f32>() + rng.unit();
            corpus_emb.push(v);
        }
    }
    let mut queries = Vec::new();
    let mut query_emb = Vec::new();
    for q in 0..90 {
        let p = (rng.next() % 400) as u32;
        let mut positives = vec![p];
        if q % 3 == 0 {
            positives.push((p + 1) % 400);
        }
        positives.sort_unstable();
        let words: Vec<&str> = corpus[p as usize].text.split(' ').take(3).collect();
        queries.push(MineQuery {
            id: format!("q{q}"),
            text: words.join(" "),
            positives,
        });
        let base = p as usize * dim;
        for d in 0..dim {
            query_emb.push(corpus_emb[base + d] + rng.unit());
        }
    }
    normalize_rows(&mut corpus_emb, dim);
    normalize_rows(&mut query_emb, dim);
    let input = MiningInput {
        corpus,
        queries,
        ..Default::default()
    };
    (
        input,
        QueryEmbeddings {
            corpus: corpus_emb.into(),
            queries: query_emb.into(),
            dim,
            device: None,
        },
    )
}

fn opts() -> MineOptions {
    MineOptions {
        bm25_k: 12,
        dense_k: 12,
        part_queries: 7,
        rules: Rules {
            relative_margin: Some(0.05),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn run(dir: &Path, name: &str, opts: &MineOptions) -> PathBuf {
    let (input, emb) = fixture();
    let bm25 = sieve_miner::open_or_build_bm25(&input, &dir.join("cache")).unwrap();
    let out = dir.join(name);
    let meta = run_metadata(&input, opts, Default::default()).unwrap();
    mine(&input, &emb, &bm25, None, opts, &out, &meta, &|_| {}).unwrap();
    out
}

#[test]
fn rows_are_sound() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), "all.parquet", &opts());
    let (rows, meta) = read_mined(&out).unwrap();
    assert_eq!(rows.len(), 90);
    assert_eq!(meta.get("sieve.stage").map(String::as_str), Some("mined"));
    assert!(
        !sieve_miner::parts_dir(&out).exists(),
        "parts are removed at the end"
    );
    let (input, _) = fixture();
    for (row, q) in rows.iter().zip(&input.queries) {
        assert_eq!(row.query_id, q.id);
        let pos: Vec<String> = q.positives.iter().map(|&p| format!("doc{p}")).collect();
        assert_eq!(row.positives, pos);
        // Positives are never candidates; candidate ranks are 1..n over kept and dropped.
        for c in &row.candidates {
            assert!(!row.positives.contains(&c.doc_id));
            assert!(c.bm25_rank.is_some() || c.dense_rank.is_some());
            assert!(c.label.is_none());
        }
        let mut ranks: Vec<u32> = row
            .candidates
            .iter()
            .map(|c| c.rank)
            .chain(row.dropped.iter().map(|d| d.rank))
            .collect();
        ranks.sort_unstable();
        assert_eq!(ranks, (1..=ranks.len() as u32).collect::<Vec<_>>());
        // The relative margin dropped exactly the candidates above 95% of the
        // weakest positive.
        let weakest = row
            .positive_hits
            .iter()
            .map(|p| p.dense)
            .fold(f32::INFINITY, f32::min);
        for c in &row.candidates {
            assert!(c.dense <= weakest * 0.95 + 1e-6);
        }
        for d in &row.dropped {
            assert_eq!(d.rule, "relative_margin");
            assert!(d.dense > weakest * 0.95);
        }
    }
    let stats = sieve_miner::stats::MineStats::from_rows(&rows, &opts());
    let r10 = &stats.recall[0];
    assert_eq!(r10.k, 10);
    let (b, d, h) = (r10.bm25.unwrap(), r10.dense.unwrap(), r10.hybrid.unwrap());
    assert!(
        h >= b.max(d) - 1e-9,
        "hybrid {h} below bm25 {b} / dense {d}"
    );
    // k deeper than what was retrieved is not reported; the lists' own depth is.
    let at = |k: usize| stats.recall.iter().find(|r| r.k == k).unwrap();
    assert_eq!(at(100).bm25, None);
    let r12 = at(12);
    assert!(r12.bm25.unwrap() >= b && r12.dense.unwrap() >= d);
}

#[test]
fn resumed_run_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let straight = run(dir.path(), "straight.parquet", &opts());

    // Interrupt a run after its third part: the panic stands in for a crash.
    let (input, emb) = fixture();
    let opts = opts();
    let bm25 = sieve_miner::open_or_build_bm25(&input, &dir.path().join("cache")).unwrap();
    let out = dir.path().join("resumed.parquet");
    let meta = run_metadata(&input, &opts, Default::default()).unwrap();
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mine(&input, &emb, &bm25, None, &opts, &out, &meta, &|_| {
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                panic!("simulated crash");
            }
        })
    }));
    assert!(crashed.is_err());
    assert!(!out.exists());
    let parts = std::fs::read_dir(sieve_miner::parts_dir(&out))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count();
    assert_eq!(parts, 3, "three parts survive the crash");
    // A leftover temporary file of a part being written must not confuse the resume.
    std::fs::write(sieve_miner::parts_dir(&out).join(".part-x.tmp"), b"junk").unwrap();

    let resumed_queries = std::sync::atomic::AtomicUsize::new(0);
    mine(&input, &emb, &bm25, None, &opts, &out, &meta, &|n| {
        resumed_queries.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(resumed_queries.into_inner(), 90);
    assert_eq!(
        std::fs::read(&straight).unwrap(),
        std::fs::read(&out).unwrap()
    );

    // Parts of another configuration are refused, not mixed in.
    let other = MineOptions {
        bm25_k: 5,
        ..opts.clone()
    };
    let out2 = dir.path().join("other.parquet");
    std::fs::create_dir_all(sieve_miner::parts_dir(&out2)).unwrap();
    std::fs::write(
        sieve_miner::parts_dir(&out2).join("run_key"),
        "something else",
    )
    .unwrap();
    let meta2 = run_metadata(&input, &other, Default::default()).unwrap();
    let err = mine(&input, &emb, &bm25, None, &other, &out2, &meta2, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("other options"), "{err}");
}

#[test]
fn merged_shards_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let straight = run(dir.path(), "straight.parquet", &opts());
    let shards: Vec<PathBuf> = (0..3)
        .map(|i| {
            let o = MineOptions {
                shard: Some((i, 3)),
                // Part size does not change the result.
                part_queries: 4 + i,
                ..opts()
            };
            run(dir.path(), &format!("shard-{i}.parquet"), &o)
        })
        .collect();
    let merged = dir.path().join("merged.parquet");
    // Any order.
    let order = vec![shards[2].clone(), shards[0].clone(), shards[1].clone()];
    sieve_miner::merge_shards(&order, &merged).unwrap();
    assert_eq!(
        std::fs::read(&straight).unwrap(),
        std::fs::read(&merged).unwrap()
    );

    // Missing shard, a non-shard, and a shard of another configuration are refused.
    let err = sieve_miner::merge_shards(&shards[..2], &merged).unwrap_err();
    assert!(err.to_string().contains("2 of 3"), "{err}");
    let err = sieve_miner::merge_shards(std::slice::from_ref(&straight), &merged).unwrap_err();
    assert!(err.to_string().contains("not a shard"), "{err}");
    let odd = run(
        dir.path(),
        "odd.parquet",
        &MineOptions {
            shard: Some((1, 3)),
            bm25_k: 5,
            ..opts()
        },
    );
    let err = sieve_miner::merge_shards(&[shards[0].clone(), odd, shards[2].clone()], &merged)
        .unwrap_err();
    assert!(err.to_string().contains("other options"), "{err}");
}
