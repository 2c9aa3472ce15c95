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
