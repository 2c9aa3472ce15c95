//! Fuzzes every reader of user input (see `harness.rs`) for `--cases` cases each and
//! prints one JSON line per reader: cases, how many read, how many were refused, the
//! distinct error messages seen, the slowest case and any finding. Exit status 1 if any
//! reader panicked or broke its invariant.
//!
//!   target/release/examples/fuzz_readers [--cases N] [--threads T] [--seed S] [--only NAME,…] [--work DIR]

#[path = "harness.rs"]
mod harness;

use std::path::PathBuf;

fn main() {
    let mut cases: u64 = 1_000_000;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut seed: u64 = 0x5EED;
    let mut only: Vec<String> = Vec::new();
    let mut work = PathBuf::from("target/fuzz");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--cases" => {
                cases = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--cases: a count"))
            }
            "--threads" => {
                threads = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--threads: a count"))
            }
            "--seed" => {
                seed = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--seed: an integer"))
            }
            "--only" => only = value().split(',').map(str::to_string).collect(),
            "--work" => work = PathBuf::from(value()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    harness::quiet_panics();
    let targets = harness::targets(&work.join("seeds"));
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    if let Some(bad) = only.iter().find(|o| !names.contains(&o.as_str())) {
        usage(&format!(
            "--only: no reader {bad} (readers: {})",
            names.join(", ")
        ));
    }
    let mut failed = false;
    for t in &targets {
        if !only.is_empty() && !only.iter().any(|o| o == t.name) {
            continue;
        }
        let r = harness::run(t, cases, seed, threads, &work);
        failed |= !r.findings.is_empty();
        let findings: Vec<serde_json::Value> = r
            .findings
            .iter()
            .map(|f| serde_json::json!({"kind": f.kind, "message": f.message, "input": f.saved}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "reader": r.name, "cases": r.cases, "read": r.ok, "refused": r.errors,
                "distinct_errors": r.distinct_errors, "findings": findings,
                "seconds": (r.seconds * 10.0).round() / 10.0,
                "slowest_case_ms": (r.slowest_ms * 100.0).round() / 100.0,
                "threads": threads, "seed": seed,
            })
        );
    }
    std::process::exit(i32::from(failed));
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("fuzz_readers: {problem}");
    }
    eprintln!("usage: fuzz_readers [--cases N (1000000)] [--threads T] [--seed S] [--only NAME,…] [--work DIR (target/fuzz)]");
    std::process::exit(2);
}
