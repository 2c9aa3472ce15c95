//! How far a judge can be trusted: agreement with human labels.
//!
//! Given P(relevant) from the judge and a human verdict per pair, this reports the
//! ROC AUC (the probability that a random relevant pair scores above a random
//! irrelevant one, ties counting one half: the Mann–Whitney statistic), the
//! accuracy-maximising threshold, and the lowest threshold whose precision reaches a
//! target — the operating point a pipeline should use for a weak judge, whose
//! scores rarely reach 0.5 on real evidence.

/// One point of a threshold sweep: pairs with p ≥ `threshold` count as relevant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Operating {
    pub threshold: f32,
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    pub fn_: usize,
}

impl Operating {
    pub fn precision(&self) -> f64 {
        let d = self.tp + self.fp;
        if d == 0 {
            1.0
        } else {
            self.tp as f64 / d as f64
        }
    }
    pub fn recall(&self) -> f64 {
        let d = self.tp + self.fn_;
        if d == 0 {
            0.0
        } else {
            self.tp as f64 / d as f64
        }
    }
    pub fn accuracy(&self) -> f64 {
        let n = self.tp + self.fp + self.tn + self.fn_;
        if n == 0 {
            0.0
        } else {
            (self.tp + self.tn) as f64 / n as f64
        }
    }
}

/// Counts at `threshold`.
pub fn at(scores: &[(f32, bool)], threshold: f32) -> Operating {
    let mut o = Operating {
        threshold,
        tp: 0,
        fp: 0,
        tn: 0,
        fn_: 0,
    };
    for &(p, rel) in scores {
        match (p >= threshold, rel) {
            (true, true) => o.tp += 1,
            (true, false) => o.fp += 1,
            (false, false) => o.tn += 1,
            (false, true) => o.fn_ += 1,
        }
    }
    o
}

/// Mann–Whitney AUC; `None` without both classes.
pub fn auc(scores: &[(f32, bool)]) -> Option<f64> {
    let mut v: Vec<(f32, bool)> = scores.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (np, nn) = (
        v.iter().filter(|x| x.1).count(),
        v.iter().filter(|x| !x.1).count(),
    );
    if np == 0 || nn == 0 {
        return None;
    }
    // Sum of the positives' mid-ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let mid = (i + 1 + j) as f64 / 2.0;
        rank_sum += mid * v[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    Some((rank_sum - (np * (np + 1)) as f64 / 2.0) / (np * nn) as f64)
}

/// Every distinct score as a threshold, plus one above the maximum (nothing
/// relevant), in increasing order.
fn thresholds(scores: &[(f32, bool)]) -> Vec<f32> {
    let mut t: Vec<f32> = scores.iter().map(|s| s.0).collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t.dedup();
    let top = t.last().copied().unwrap_or(0.0);
    t.push(f32::from_bits(top.to_bits() + 1).max(top + f32::EPSILON));
    t
}

/// The threshold with the best accuracy (the lowest among equals).
pub fn best_accuracy(scores: &[(f32, bool)]) -> Operating {
    let mut best = at(scores, f32::INFINITY);
    for t in thresholds(scores) {
        let o = at(scores, t);
        if o.accuracy() > best.accuracy() {
            best = o;
        }
    }
    best
}

/// The lowest threshold (highest recall) whose precision is at least `target`
/// with at least one pair accepted; `None` if no threshold reaches it.
pub fn for_precision(scores: &[(f32, bool)], target: f64) -> Option<Operating> {
    thresholds(scores)
        .into_iter()
        .map(|t| at(scores, t))
        .find(|o| o.tp + o.fp > 0 && o.precision() >= target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_pairwise_definition_with_ties() {
        let s = [
            (0.9, true),
            (0.8, false),
            (0.8, true),
            (0.3, false),
            (0.3, true),
            (0.1, false),
        ];
        // Brute force: over (pos, neg) pairs, 1 if pos > neg, 0.5 if equal.
        let mut num = 0.0;
        let mut den = 0.0;
        for &(a, ra) in &s {
            for &(b, rb) in &s {
                if ra && !rb {
                    den += 1.0;
                    num += if a > b {
                        1.0
                    } else if a == b {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((auc(&s).unwrap() - num / den).abs() < 1e-12);
        assert_eq!(auc(&[(0.1, true)]), None);
    }

    #[test]
    fn thresholds_for_accuracy_and_precision() {
        let s = [
            (0.9, true),
            (0.7, true),
            (0.6, false),
            (0.4, true),
            (0.2, false),
            (0.1, false),
        ];
        // 0.4 and 0.7 both classify 5 of 6 correctly: the lower one wins.
        let b = best_accuracy(&s);
        assert_eq!(b.threshold, 0.4);
        assert!((b.accuracy() - 5.0 / 6.0).abs() < 1e-12);
        let p = for_precision(&s, 0.99).unwrap();
        assert_eq!((p.threshold, p.tp, p.fp), (0.7, 2, 0));
        let p = for_precision(&s, 0.75).unwrap();
        assert_eq!((p.threshold, p.tp, p.fp, p.fn_), (0.4, 3, 1, 0));
        assert!(for_precision(&[(0.5, false)], 0.5).is_none());
        let none = at(&s, 1.5);
        assert_eq!((none.tp, none.fp, none.precision()), (0, 0, 1.0));
    }
}

/// One human-graded pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Graded {
    pub query: String,
    pub document: String,
    pub grade: i64,
}

/// Reads graded pairs from JSONL (optionally `.gz`), taking the named fields; a
/// missing field or a non-integer grade is an error naming the line.
pub fn read_graded(
    path: &std::path::Path,
    query_field: &str,
    doc_field: &str,
    grade_field: &str,
) -> crate::Result<Vec<Graded>> {
    use std::io::{BufRead, BufReader, Read};
    let file = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| crate::Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |m: String| crate::Error::Config(format!("{}:{}: {m}", path.display(), i + 1));
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let text = |f: &str| -> crate::Result<String> {
            v.get(f)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| bad(format!("field `{f}` missing or not a string")))
        };
        let grade = v
            .get(grade_field)
            .and_then(|x| x.as_i64())
            .ok_or_else(|| bad(format!("field `{grade_field}` missing or not an integer")))?;
        out.push(Graded {
            query: text(query_field)?,
            document: text(doc_field)?,
            grade,
        });
    }
    Ok(out)
}

/// `n` of `pairs` drawn uniformly without replacement, in their original order;
/// the same (seed, pairs) always gives the same sample, so a re-run with a larger
/// `n` keeps the pairs already judged (and cached).
pub fn sample(pairs: Vec<Graded>, n: usize, seed: u64) -> Vec<Graded> {
    use sha2::{Digest, Sha256};
    if n >= pairs.len() {
        return pairs;
    }
    let mut order: Vec<(Vec<u8>, usize)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut h = Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(p.query.as_bytes());
            h.update([0]);
            h.update(p.document.as_bytes());
            h.update((i as u64).to_le_bytes());
            (h.finalize().to_vec(), i)
        })
        .collect();
    order.sort();
    let mut keep: Vec<usize> = order.into_iter().take(n).map(|(_, i)| i).collect();
    keep.sort_unstable();
    let mut it = keep.into_iter().peekable();
    pairs
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| {
            if it.peek() == Some(&i) {
                it.next();
                Some(p)
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    #[test]
    fn samples_are_stable_nested_and_spread() {
        let pairs: Vec<Graded> = (0..200)
            .map(|i| Graded {
                query: format!("q{i}"),
                document: format!("d{i}"),
                grade: i % 4,
            })
            .collect();
        let a = sample(pairs.clone(), 50, 1);
        assert_eq!(a.len(), 50);
        assert_eq!(a, sample(pairs.clone(), 50, 1));
        let b = sample(pairs.clone(), 80, 1);
        assert!(
            a.iter().all(|p| b.contains(p)),
            "a larger sample keeps the smaller"
        );
        assert_ne!(a, sample(pairs.clone(), 50, 2));
        // Not the first 50, and every grade drawn.
        let index = |p: &Graded| p.query[1..].parse::<usize>().unwrap();
        assert!(a.iter().any(|p| index(p) >= 100));
        for g in 0..4 {
            assert!(a.iter().any(|p| p.grade == g));
        }
        assert_eq!(sample(pairs.clone(), 500, 1).len(), 200);
    }
}
