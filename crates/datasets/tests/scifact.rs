//! The real SciFact directory (`../shared/data/scifact` beside the repository, or
//! `$SIEVE_SHARED_DATA/scifact`). A user's machine has no such copy, so the test is
//! ignored by the suite; `.ci/run` runs it with `--ignored`, and it fails when the
//! data is missing rather than passing without looking.

use std::path::PathBuf;

use sieve_datasets::{load_beir, LoadOptions};

fn scifact() -> PathBuf {
    let shared = std::env::var_os("SIEVE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let dir = shared.join("scifact");
    assert!(
        dir.is_dir(),
        "{} is missing (set SIEVE_SHARED_DATA to the directory holding scifact/)",
        dir.display()
    );
    dir
}

#[test]
#[ignore = "needs ../shared/data/scifact; .ci/run runs it"]
fn scifact_loads_clean_with_the_published_sizes() {
    let dir = scifact();
    let dir = dir.as_path();
    let start = std::time::Instant::now();
    let test = load_beir(dir, "test", LoadOptions { strict: true }).unwrap();
    let elapsed = start.elapsed();
    println!("SciFact test split loaded in {elapsed:?}");
    assert_eq!(test.corpus.len(), 5183);
    assert_eq!(test.queries.len(), 300);
    assert_eq!(test.qrels.len(), 300);
    assert_eq!(test.qrels.values().map(|d| d.len()).sum::<usize>(), 339);
    assert!(test.report.is_clean(), "{}", test.report);
    assert!(
        elapsed.as_secs_f64() < 5.0,
        "loading a 5k-doc corpus took {elapsed:?}"
    );
    // Every query the split keeps has text, and every judged doc exists.
    assert!(test.queries.iter().all(|q| test.qrels.contains_key(&q.id)));
    assert!(test.corpus.iter().all(|d| !d.full_text().is_empty()));

    let train = load_beir(dir, "train", LoadOptions { strict: true }).unwrap();
    assert_eq!(train.queries.len(), 809);
    assert_eq!(train.qrels.values().map(|d| d.len()).sum::<usize>(), 919);
}
