//! The real SciFact directory, when this machine has it.

use std::path::Path;

use sieve_datasets::{load_beir, LoadOptions};

const SCIFACT: &str = "/work/shared/data/scifact";

#[test]
fn scifact_loads_clean_with_the_published_sizes() {
    let dir = Path::new(SCIFACT);
    if !dir.is_dir() {
        println!("note: {SCIFACT} not present; skipping the SciFact check");
        return;
    }
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
