//! Is run A better than run B, or is the difference noise?
//!
//! The paired randomization (sign-flip) test, the test Smucker, Allan & Carterette
//! (CIKM 2007) recommend for IR metrics: under the null hypothesis the two runs are
//! exchangeable per query, so each per-query difference is as likely to carry either
//! sign. The p-value is the share of random sign assignments whose mean difference is
//! at least as far from zero as the observed one (two-sided), counting the observed
//! assignment itself so that p is never 0.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Sign assignments drawn by default: p-values near 0.05 come out within ±0.005.
pub const DEFAULT_TRIALS: usize = 10_000;

/// The outcome of comparing two runs on the same queries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedTest {
    /// Queries both runs scored.
    pub queries: usize,
    /// mean(a) − mean(b).
    pub mean_difference: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Two-sided paired randomization test of `a` against `b` (same length, same order),
/// with `trials` seeded random sign assignments.
pub fn paired_randomization(a: &[f64], b: &[f64], trials: usize, seed: u64) -> PairedTest {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = diffs.len();
    if n == 0 {
        return PairedTest {
            queries: 0,
            mean_difference: 0.0,
            p_value: 1.0,
        };
    }
    let observed = diffs.iter().sum::<f64>().abs();
    // Sums are compared, not means (same n); the tolerance keeps ties that differ
    // only by rounding on the "as extreme" side, as an exact enumeration would.
    let tol = 1e-12 * diffs.iter().map(|d| d.abs()).sum::<f64>().max(1.0);
    let mut rng = sieve_datasets::rng::SplitMix64(seed);
    let mut extreme = 0usize;
    for _ in 0..trials {
        let mut sum = 0.0;
        let mut bits = 0u64;
        for (i, d) in diffs.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next_u64();
            }
            sum += if bits & 1 == 1 { *d } else { -*d };
            bits >>= 1;
        }
        if sum.abs() >= observed - tol {
            extreme += 1;
        }
    }
    PairedTest {
        queries: n,
        mean_difference: diffs.iter().sum::<f64>() / n as f64,
        p_value: (extreme + 1) as f64 / (trials + 1) as f64,
    }
}

/// Pairs two per-query score maps by query id; both must cover the same queries
/// (runs over different query sets are not comparable).
pub fn paired_scores(
    a: &BTreeMap<String, f64>,
    b: &BTreeMap<String, f64>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    if let Some(q) = a.keys().find(|q| !b.contains_key(*q)) {
        return Err(Error::Invalid(format!(
            "query {q} is scored in one run only ({} vs {} queries): the runs are not paired",
            a.len(),
            b.len()
        )));
    }
    if a.len() != b.len() {
        return Err(Error::Invalid(format!(
            "the runs score {} and {} queries: they are not paired",
            a.len(),
            b.len()
        )));
    }
    Ok(a.iter().map(|(q, x)| (*x, b[q])).unzip())
}
