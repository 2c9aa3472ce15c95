//! Every reader of user input, fed a few thousand mutated files each (the bench runs a
//! million: `bench/fuzz/run.sh`): none may panic, every refusal names its file, and each
//! reader's invariant holds on what it accepts.

#[path = "../bench/fuzz/harness.rs"]
mod harness;

#[test]
fn mutated_inputs_are_refused_with_errors_never_panics() {
    harness::quiet_panics();
    let work = tempfile::tempdir().unwrap();
    let targets = harness::targets(&work.path().join("seeds"));
    assert!(targets.len() >= 17, "{} readers", targets.len());
    let mut failures = Vec::new();
    for t in &targets {
        let r = harness::run(t, 3_000, 0xC1, 2, work.path());
        assert_eq!(r.cases, 3_000, "{}", r.name);
        // Mutants must reach both sides: a reader that refuses everything (or nothing)
        // is not being fuzzed, and a file reader whose refusals all read alike is
        // stopped at its first check.
        assert!(
            r.ok > 0 && r.errors > 0,
            "{}: {} read, {} refused",
            r.name,
            r.ok,
            r.errors
        );
        if t.names_file {
            assert!(
                r.distinct_errors >= 3,
                "{}: only {} distinct errors",
                r.name,
                r.distinct_errors
            );
        }
        for f in &r.findings {
            failures.push(format!(
                "{}: {} — {} (input: {})",
                r.name,
                f.kind,
                f.message,
                f.saved.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Inputs the fuzzer found that once panicked (parquet-rs and arrow on damaged files)
/// or aborted the process (a `.npy` header whose shape asks for more memory than
/// exists): each must now be an error that names the file.
#[test]
fn inputs_that_once_crashed_a_reader_are_errors() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str, as_name: &str| {
        let p = dir.path().join(as_name);
        std::fs::copy(fixtures.join(name), &p).unwrap_or_else(|e| panic!("{name}: {e}"));
        p
    };
    let p = copy("negative-column-start.parquet", "mined.parquet");
    let e = sieve_datasets::mined::read_mined(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mined.parquet"), "{e}");
    let p = copy("null-bitmap-out-of-bounds.parquet", "pairs.parquet");
    let e = sieve_datasets::read_pairs(&p, Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("pairs.parquet"), "{e}");
    let p = copy("huge-shape.npy", "emb.npy");
    let e = sieve_datasets::npy::read_npy(&p).unwrap_err().to_string();
    assert!(e.contains("emb.npy") && e.contains("truncated"), "{e}");
}

/// A `config.json` whose `layer_norm_eps` lost its mantissa (`-12` for `1e-12`) loaded
/// and embedded every text to NaN, until the fuzzer found it.
#[test]
fn a_non_positive_layer_norm_eps_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    harness::tiny_model(dir.path());
    assert!(sieve_encoder::Encoder::load_dir(dir.path(), &Default::default()).is_ok());
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["layer_norm_eps"] = serde_json::json!(-12);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let e = sieve_encoder::Encoder::load_dir(dir.path(), &Default::default())
        .err()
        .expect("a negative epsilon loaded")
        .to_string();
    assert!(
        e.contains("config.json") && e.contains("layer_norm_eps"),
        "{e}"
    );
}
