//! BM25 ranking on a tiny corpus, checked against a naive BM25 written here,
//! plus analysis rules and persistence.

use sieve_datasets::Document;
use sieve_index::{Bm25Index, Bm25Params, Hit, Retriever, DEFAULT_BM25_PARAMS};

fn doc(id: &str, title: &str, text: &str) -> Document {
    Document {
        id: id.to_owned(),
        title: title.to_owned(),
        text: text.to_owned(),
    }
}

fn corpus() -> Vec<Document> {
    vec![
        doc(
            "d0",
            "Running shoes",
            "The runner runs fast in running shoes.",
        ),
        doc("d1", "Cooking pasta", "Boil the pasta in salted water."),
        doc("d2", "", "A dog and a cat."),
        doc(
            "d3",
            "Marathon",
            "She ran a marathon; running is her passion.",
        ),
        doc("d4", "Water", "Water, water everywhere!"),
        doc("d5", "The", "It is what it is."),
    ]
}

/// Textbook BM25 (Lucene idf, no (k1+1) factor, as bm25s) over the analysed
/// tokens, scoring every document; best first, ties by lower position.
fn naive_bm25(docs: &[Document], query: &str, params: Bm25Params) -> Vec<Hit> {
    let tokenized: Vec<Vec<String>> = docs
        .iter()
        .map(|d| Bm25Index::analyze(&d.full_text()))
        .collect();
    let n = docs.len() as f64;
    let avg = tokenized.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let mut hits = Vec::new();
    for (i, tokens) in tokenized.iter().enumerate() {
        let mut score = 0.0f64;
        let mut matched = false;
        for term in Bm25Index::analyze(query) {
            let df = tokenized.iter().filter(|t| t.contains(&term)).count() as f64;
            let tf = tokens.iter().filter(|t| **t == term).count() as f64;
            if tf == 0.0 {
                continue;
            }
            matched = true;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            let norm = f64::from(params.k1)
                * (1.0 - f64::from(params.b) + f64::from(params.b) * tokens.len() as f64 / avg);
            score += idf * tf / (tf + norm);
        }
        if matched {
            hits.push(Hit {
                doc: i as u32,
                score: score as f32,
            });
        }
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
    hits
}

fn assert_same(got: &[Hit], want: &[Hit]) {
    let docs = |h: &[Hit]| h.iter().map(|h| h.doc).collect::<Vec<_>>();
    assert_eq!(docs(got), docs(want));
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.score - w.score).abs() <= 1e-5 * w.score.abs().max(1.0),
            "{g:?} vs {w:?}"
        );
    }
}

const QUERIES: [&str; 7] = [
    "running",
    "pasta water",
    "water water",
    "runner's marathon passion?",
    "dog OR cat AND \"shoes",
    "Cooking: (salted) [water]!!",
    "nothing matches this zebra",
];

#[test]
fn analysis_stems_lowercases_and_drops_stop_words_and_single_chars() {
    assert_eq!(
        Bm25Index::analyze("Running RUNS run"),
        vec!["run", "run", "run"]
    );
    assert!(Bm25Index::analyze("the and of it is").is_empty());
    assert!(Bm25Index::analyze("a b c 1 2 3 x").is_empty());
    assert_eq!(Bm25Index::analyze("covid-19 e.g."), vec!["covid", "19"]);
}

#[test]
fn ranking_matches_naive_bm25() {
    let docs = corpus();
    let index = Bm25Index::build(&docs, None).expect("build");
    assert_eq!(index.len(), docs.len());
    let results = index.retrieve(&QUERIES, 10).expect("retrieve");
    for (query, got) in QUERIES.iter().zip(&results) {
        assert_same(got, &naive_bm25(&docs, query, DEFAULT_BM25_PARAMS));
    }
    // Stemming: "running" matches "runs"/"running" (d0, tf 3) and d3 (tf 1);
    // "ran" is not stemmed to "run" by Porter2.
    let docs_of = |h: &[Hit]| h.iter().map(|h| h.doc).collect::<Vec<_>>();
    assert_eq!(docs_of(&results[0]), vec![0, 3]);
    // "water" three times in the short d4 beats d1's single mention.
    assert_eq!(docs_of(&results[2]), vec![4, 1]);
    assert!(results[6].is_empty());
    // k truncates, keeping the best.
    let top1 = index.retrieve(&["pasta water"], 1).expect("retrieve");
    assert_eq!(top1[0], results[1][..1].to_vec());
}

#[test]
fn params_change_scores_without_reindexing() {
    let docs = corpus();
    let params = Bm25Params { k1: 0.9, b: 0.4 };
    let index = Bm25Index::build(&docs, None)
        .expect("build")
        .with_params(params);
    assert_eq!(index.params(), params);
    let got = index.retrieve(&["pasta water"], 10).expect("retrieve");
    assert_same(&got[0], &naive_bm25(&docs, "pasta water", params));
}

#[test]
fn queries_without_terms_return_empty_without_error() {
    let index = Bm25Index::build(&corpus(), None).expect("build");
    let queries = [
        "",
        "?!?! ... ::: ((",
        "the and of it is",
        "\"unclosed AND OR NOT -+",
    ];
    let results = index.retrieve(&queries, 10).expect("no syntax errors");
    assert_eq!(results.len(), queries.len());
    assert!(results[..3].iter().all(Vec::is_empty));
    assert!(index.retrieve(&["pasta"], 0).expect("k = 0")[0].is_empty());
    assert!(index.retrieve(&[], 10).expect("no queries").is_empty());
}

#[test]
fn empty_corpus() {
    let index = Bm25Index::build(&[], None).expect("build");
    assert!(index.is_empty());
    assert!(index.retrieve(&["pasta"], 10).expect("retrieve")[0].is_empty());
}

#[test]
fn persisted_index_reopens_with_same_results() {
    let docs = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bm25");
    let built = Bm25Index::build(&docs, Some(&path)).expect("build");
    let before = built.retrieve(&QUERIES, 10).expect("retrieve");
    drop(built);
    let opened = Bm25Index::open(&path).expect("open");
    assert_eq!(opened.len(), docs.len());
    assert_eq!(opened.retrieve(&QUERIES, 10).expect("retrieve"), before);
    // Building again into a directory that already holds an index is refused.
    assert!(Bm25Index::build(&docs, Some(&path)).is_err());
    assert!(Bm25Index::open(&dir.path().join("missing")).is_err());
}

/// Enough documents that the multithreaded writer produces several segments:
/// each hit must still map back to its position in the input slice.
#[test]
fn positions_survive_segments_and_merges() {
    let n = 20_000;
    let texts: Vec<String> = (0..n)
        .map(|i| format!("common filler words unique{i}token shared{} bucket", i % 10))
        .collect();
    let index = Bm25Index::build_from_texts(&texts, None).expect("build");
    assert_eq!(index.len(), n);
    let queries: Vec<String> = [0, 1, 4_999, 12_345, n - 1]
        .iter()
        .map(|i| format!("unique{i}token"))
        .collect();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let results = index.retrieve(&refs, 3).expect("retrieve");
    for (q, hits) in queries.iter().zip(&results) {
        assert_eq!(hits.len(), 1, "{q}");
        assert_eq!(format!("unique{}token", hits[0].doc), *q);
    }
    // A term shared by 2,000 equally long documents: all tie, and ties are
    // broken by lower position.
    let shared = index.retrieve(&["shared7"], 5).expect("retrieve");
    let docs: Vec<u32> = shared[0].iter().map(|h| h.doc).collect();
    assert_eq!(docs, vec![7, 17, 27, 37, 47]);
}

#[test]
fn scores_of_given_documents_match_the_naive_formula() {
    let docs = corpus();
    let index = Bm25Index::build(&docs, None).expect("build");
    let all: Vec<u32> = (0..docs.len() as u32).collect();
    let extra = vec![all.clone(); QUERIES.len()];
    let results = index
        .search_with_scores(&QUERIES, 1, &extra)
        .expect("search");
    for (query, (top, scores)) in QUERIES.iter().zip(&results) {
        let naive = naive_bm25(&docs, query, DEFAULT_BM25_PARAMS);
        assert!(top.len() <= 1);
        for (d, &s) in all.iter().zip(scores) {
            // Documents sharing no term with the query score exactly 0.
            let want = naive.iter().find(|h| h.doc == *d).map_or(0.0, |h| h.score);
            assert!((s - want).abs() < 1e-5, "{query:?} doc {d}: {s} vs {want}");
        }
    }
    // Fewer extra lists than queries: the rest get none.
    let partial = index
        .search_with_scores(&QUERIES, 2, &extra[..1])
        .expect("search");
    assert!(partial[1].1.is_empty());
}
