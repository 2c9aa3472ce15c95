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
    let mut rng = SplitMix64(seed);
    let mut extreme = 0usize;
    for _ in 0..trials {
        let mut sum = 0.0;
        let mut bits = 0u64;
        for (i, d) in diffs.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next();
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

/// A small, seedable generator (Vigna's SplitMix64): reproducible p-values without a
/// dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact two-sided p over all 2^n sign assignments (observed one included).
    fn exact_p(a: &[f64], b: &[f64]) -> f64 {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let obs = d.iter().sum::<f64>().abs();
        let n = d.len();
        let mut extreme = 0u64;
        for mask in 0u64..(1 << n) {
            let s: f64 = (0..n)
                .map(|i| if mask >> i & 1 == 1 { d[i] } else { -d[i] })
                .sum();
            if s.abs() >= obs - 1e-12 {
                extreme += 1;
            }
        }
        extreme as f64 / (1u64 << n) as f64
    }

    #[test]
    fn matches_exact_enumeration() {
        // Three pairs of runs over 14 queries: a clear win, a near tie, a mixed case.
        let a = [
            0.9, 0.8, 0.7, 0.95, 0.6, 0.85, 0.75, 0.9, 0.8, 0.7, 0.65, 0.9, 0.88, 0.7,
        ];
        let cases: [Vec<f64>; 3] = [
            a.iter().map(|x| x - 0.1).collect(),
            a.iter()
                .enumerate()
                .map(|(i, x)| x + if i % 2 == 0 { 0.05 } else { -0.06 })
                .collect(),
            a.iter()
                .enumerate()
                .map(|(i, x)| x - 0.02 * ((i * 5 % 7) as f64 - 2.5))
                .collect(),
        ];
        for b in &cases {
            let exact = exact_p(&a, b);
            let t = paired_randomization(&a, b, 200_000, 7);
            assert!(
                (t.p_value - exact).abs() < 0.005,
                "randomized {} vs exact {exact}",
                t.p_value
            );
        }
        // All 14 differences +0.1: only the observed and the all-flipped assignment
        // are as extreme: p = 2 / 2^14.
        assert!((exact_p(&a, &cases[0]) - 2.0 / 16384.0).abs() < 1e-15);
        let t = paired_randomization(&a, &cases[0], 1000, 1);
        assert!((t.mean_difference - 0.1).abs() < 1e-12);
        assert!(t.p_value < 0.01);
    }

    #[test]
    fn identical_runs_are_not_different_and_pairing_is_checked() {
        let a = [0.1, 0.5, 0.9];
        assert_eq!(paired_randomization(&a, &a, 100, 3).p_value, 1.0);
        let m = |v: &[(&str, f64)]| -> BTreeMap<String, f64> {
            v.iter().map(|(k, x)| (k.to_string(), *x)).collect()
        };
        let (x, y) = paired_scores(
            &m(&[("q1", 0.1), ("q2", 0.2)]),
            &m(&[("q2", 0.5), ("q1", 0.4)]),
        )
        .unwrap();
        assert_eq!((x, y), (vec![0.1, 0.2], vec![0.4, 0.5]));
        let err = paired_scores(&m(&[("q1", 0.1)]), &m(&[("q2", 0.5)])).unwrap_err();
        assert!(err.to_string().contains("q1"), "{err}");
        assert!(paired_scores(&m(&[("q1", 0.1)]), &m(&[("q1", 0.5), ("q2", 0.5)])).is_err());
    }
}
