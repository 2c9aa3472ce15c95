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

/// The judge server's base URL (…/v1), or None (test skipped) when none is configured;
/// with `SIEVE_REQUIRE_LLM` set (the test script and CI) a missing server fails instead.
pub fn llm_server() -> Option<String> {
    match std::env::var("SIEVE_TEST_LLM_URL") {
        Ok(u) if !u.is_empty() => Some(u.trim_end_matches('/').to_string()),
        _ => {
            assert!(
                std::env::var_os("SIEVE_REQUIRE_LLM").is_none(),
                "SIEVE_REQUIRE_LLM is set but SIEVE_TEST_LLM_URL is not: start one with scripts/llm-server.sh"
            );
            eprintln!(
                "SKIPPED: no judge server (run scripts/llm-server.sh and set SIEVE_TEST_LLM_URL)"
            );
            None
        }
    }
}
