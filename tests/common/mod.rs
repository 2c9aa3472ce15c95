//! Helpers shared by the end-to-end tests (each test file includes what it uses).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `sieve` binary under test.
pub fn sieve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sieve"))
}

/// `SIEVE_TEST_MODEL`, else `models/all-MiniLM-L6-v2` (from `scripts/fetch-model.sh`).
pub fn model_dir() -> PathBuf {
    std::env::var_os("SIEVE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"))
}

/// The judge server's base URL (…/v1) from `SIEVE_TEST_LLM_URL`: `scripts/test.sh`
/// starts a real one. Without it the test fails and says how to get one (a test whose
/// input is missing never passes by returning early).
pub fn llm_server() -> String {
    match std::env::var("SIEVE_TEST_LLM_URL") {
        Ok(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
        _ => panic!(
            "SIEVE_TEST_LLM_URL is not set: run the suite with scripts/test.sh, which starts a \
             judge server, or start one with scripts/llm-server.sh and export its URL"
        ),
    }
}

/// `sieve` with a file-size limit of `kib` KiB (`ulimit -f`) and SIGXFSZ ignored, so a
/// write past the limit fails with EFBIG as a write to a full disk fails with ENOSPC:
/// the disk-full tests need no root and no small filesystem.
pub fn sieve_with_file_limit(kib: u64) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {kib} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_sieve"));
    c
}

/// Every path under `dir` whose name marks it unfinished (`.tmp`, `tmp-`): what a
/// failed write must not leave behind.
pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp") || name.contains("tmp-") {
            out.push(p.clone());
        }
        if p.is_dir() {
            out.extend(leftovers(&p));
        }
    }
    out
}

/// The checks every disk-full test makes of a failed run's stderr: it failed, named
/// the limit's error and a file under `dir`, and said what to do.
pub fn assert_out_of_space(st: &std::process::Output, dir: &Path) -> String {
    let err = String::from_utf8_lossy(&st.stderr).into_owned();
    assert!(!st.status.success(), "succeeded past the limit: {err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(
        err.contains(&dir.display().to_string()),
        "no path named: {err}"
    );
    assert!(
        err.contains("hint: the disk is full") && err.contains("run the same command again"),
        "{err}"
    );
    err
}
