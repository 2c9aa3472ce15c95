//! How far a judge can be trusted: agreement with human labels.
//!
//! Given P(relevant) from the judge and a human verdict per pair, this reports the
//! ROC AUC (the probability that a random relevant pair scores above a random
//! irrelevant one, ties counting one half: the Mann–Whitney statistic), the
//! accuracy-maximising threshold, and the lowest threshold whose precision reaches a
//! target — the operating point a pipeline should use for a weak judge, whose
//! scores rarely reach 0.5 on real evidence.

use std::path::Path;

use crate::{Error, Result};

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
    let mut out = Vec::new();
    for record in sieve_datasets::JsonLines::open(path)? {
        let (line, v) = record?;
        let bad = |m: String| crate::Error::Config(format!("{}:{line}: {m}", path.display()));
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

/// How graded pairs are read and what the calibration aims at: `sieve judge
/// calibrate`'s flags and a pipeline's `[judge.calibrate]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct CalibrateSettings {
    /// Field holding the query.
    #[cfg_attr(feature = "clap", arg(long, default_value = "question_summary"))]
    pub query_field: String,

    /// Field holding the document.
    #[cfg_attr(feature = "clap", arg(long, default_value = "answer"))]
    pub doc_field: String,

    /// Field holding the integer grade.
    #[cfg_attr(feature = "clap", arg(long, default_value = "grade"))]
    pub grade_field: String,

    /// Grades at or above this are relevant (LiveQA-Med: 3 incomplete, 4 excellent).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub relevant_grade: i64,

    /// Precision the chosen operating point must reach.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_PRECISION_TARGET))]
    pub precision_target: f64,

    /// Judge only the first N pairs.
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "sample"))]
    pub limit: Option<usize>,

    /// Judge N pairs drawn at random (seeded; a larger N keeps the pairs of a smaller
    /// one, so their verdicts come from the cache): a quick first look at a slow judge.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub sample: Option<usize>,

    /// Seed of --sample.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub seed: u64,
}

/// The precision a calibrated threshold must reach by default.
pub const DEFAULT_PRECISION_TARGET: f64 = 0.9;

impl Default for CalibrateSettings {
    fn default() -> Self {
        Self {
            query_field: "question_summary".into(),
            doc_field: "answer".into(),
            grade_field: "grade".into(),
            relevant_grade: 3,
            precision_target: DEFAULT_PRECISION_TARGET,
            limit: None,
            sample: None,
            seed: 0,
        }
    }
}

impl CalibrateSettings {
    /// The precision target is a precision (0, 1]; a sample or limit of 0 judges nothing.
    pub fn validate(&self) -> Result<()> {
        if !(self.precision_target > 0.0 && self.precision_target <= 1.0) {
            return Err(crate::Error::Config(format!(
                "precision_target must be in (0, 1], got {}",
                self.precision_target
            )));
        }
        if self.limit == Some(0) || self.sample == Some(0) {
            return Err(crate::Error::Config(
                "limit and sample must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The graded pairs of `path` these settings judge (first `limit`, or a seeded
    /// `sample`); an empty selection is an error naming the file.
    pub fn read(&self, path: &Path) -> Result<Vec<Graded>> {
        self.validate()?;
        let mut pairs = read_graded(path, &self.query_field, &self.doc_field, &self.grade_field)?;
        if let Some(n) = self.limit {
            pairs.truncate(n);
        }
        if let Some(n) = self.sample {
            pairs = sample(pairs, n, self.seed);
        }
        if pairs.is_empty() {
            return Err(Error::Config(format!("{}: no pairs", path.display())));
        }
        Ok(pairs)
    }
}

/// One operating point as a report states it. JSON has no infinity or NaN: they are
/// written as null (a threshold above every score, a rate with nothing to count) and
/// read back as such.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OperatingPoint {
    #[serde(deserialize_with = "null_is_infinite")]
    pub threshold: f32,
    #[serde(deserialize_with = "null_is_nan")]
    pub accuracy: f64,
    #[serde(deserialize_with = "null_is_nan")]
    pub precision: f64,
    #[serde(deserialize_with = "null_is_nan")]
    pub recall: f64,
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

fn null_is_infinite<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::INFINITY))
}

fn null_is_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl From<&Operating> for OperatingPoint {
    fn from(o: &Operating) -> Self {
        Self {
            threshold: o.threshold,
            accuracy: o.accuracy(),
            // Undefined with nothing judged relevant: null in JSON (n/a on the
            // console), never the 1.0 convention the threshold search uses.
            precision: if o.tp + o.fp == 0 {
                f64::NAN
            } else {
                o.precision()
            },
            recall: o.recall(),
            tp: o.tp,
            fp: o.fp,
            tn: o.tn,
            fn_: o.fn_,
        }
    }
}

/// One judged pair of a calibration: its position in the input, P(relevant) and the
/// human label.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoredPair {
    pub index: usize,
    pub p_relevant: f32,
    pub relevant: bool,
}

/// What `sieve judge calibrate` measured, as its `--json` file holds it (and as the
/// pipeline reads it back).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationReport {
    pub pairs: String,
    pub judge_model: String,
    pub prompt_hash: String,
    pub relevant_grade: i64,
    pub judged: usize,
    /// Pairs the judge failed on (left out of every figure).
    #[serde(default)]
    pub not_judged: usize,
    pub relevant: usize,
    pub auc: Option<f64>,
    pub at_0_5: OperatingPoint,
    pub best_accuracy: OperatingPoint,
    pub precision_target: f64,
    /// The operating point reaching `precision_target`; `None` when none does.
    pub threshold_for_precision: Option<OperatingPoint>,
    /// Requests sent, and answered from the verdict cache.
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub from_cache: u64,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// How the verdicts were read (logprobs, or 0/1 from text or a JSON schema).
    #[serde(default)]
    pub score_methods: crate::ScoreMethods,
    /// Pairs the instruction check ([`crate::detect`]) would flag: real documents
    /// whose verdicts a run would not act on (the check's cost).
    #[serde(default)]
    pub instruction_flagged: usize,
    /// Every judged pair's P(relevant) and human label, in input order (failed ones
    /// left out): for curves, other thresholds, and fusing two judges.
    pub scores: Vec<ScoredPair>,
}

impl CalibrationReport {
    /// The figures for `pairs` given each one's judged P(relevant) (`None`: failed).
    pub fn new(
        source: &Path,
        settings: &CalibrateSettings,
        pairs: &[Graded],
        p: &[Option<f32>],
        judge_model: &str,
        prompt_hash: &str,
    ) -> Self {
        let scored: Vec<ScoredPair> = pairs
            .iter()
            .zip(p)
            .enumerate()
            .filter_map(|(index, (g, p))| {
                p.map(|p_relevant| ScoredPair {
                    index,
                    p_relevant,
                    relevant: g.grade >= settings.relevant_grade,
                })
            })
            .collect();
        let scores: Vec<(f32, bool)> = scored.iter().map(|s| (s.p_relevant, s.relevant)).collect();
        Self {
            pairs: source.display().to_string(),
            judge_model: judge_model.to_string(),
            prompt_hash: prompt_hash.to_string(),
            relevant_grade: settings.relevant_grade,
            judged: scores.len(),
            not_judged: pairs.len() - scores.len(),
            relevant: scores.iter().filter(|s| s.1).count(),
            auc: auc(&scores),
            at_0_5: (&at(&scores, 0.5)).into(),
            best_accuracy: (&best_accuracy(&scores)).into(),
            precision_target: settings.precision_target,
            threshold_for_precision: for_precision(&scores, settings.precision_target)
                .as_ref()
                .map(Into::into),
            requests: 0,
            from_cache: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            score_methods: Default::default(),
            instruction_flagged: pairs
                .iter()
                .filter(|p| crate::detect::pair_signal(&p.query, &p.document).is_some())
                .count(),
            scores: scored,
        }
    }
}

impl std::fmt::Display for CalibrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} pairs judged ({} relevant by the human grades ≥ {}), {} not judged",
            self.judged, self.relevant, self.relevant_grade, self.not_judged
        )?;
        writeln!(
            f,
            "AUC: {}",
            self.auc.map_or("n/a".into(), |a| format!("{a:.4}"))
        )?;
        let table = |f: &mut std::fmt::Formatter<'_>, name: &str, o: &OperatingPoint| {
            // Precision is undefined when nothing is judged relevant; say so rather than
            // print the 1.0 convention, which reads as a perfect judge.
            let precision = if o.tp + o.fp == 0 {
                "n/a (nothing judged relevant)".to_string()
            } else {
                format!("{:.4}", o.precision)
            };
            writeln!(
                f,
                "{name}: threshold {:.4}  accuracy {:.4}  precision {precision}  recall {:.4}\n    \
                 judged relevant: {} correct, {} wrong | judged irrelevant: {} correct, {} wrong",
                o.threshold, o.accuracy, o.recall, o.tp, o.fp, o.tn, o.fn_
            )
        };
        table(f, "at 0.5", &self.at_0_5)?;
        table(f, "best accuracy", &self.best_accuracy)?;
        match &self.threshold_for_precision {
            Some(o) => table(f, &format!("precision ≥ {}", self.precision_target), o)?,
            None => writeln!(
                f,
                "no threshold reaches precision {}: this judge cannot be trusted at that level",
                self.precision_target
            )?,
        }
        write!(
            f,
            "flagged by the instruction check (not acted on in a run): {} of {} pairs\n\
             requests {} ({} from the cache), tokens {} prompt + {} completion\n{}",
            self.instruction_flagged,
            self.judged + self.not_judged,
            self.requests,
            self.from_cache,
            self.prompt_tokens,
            self.completion_tokens,
            self.score_methods
        )
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;

    /// A judge that calls nothing relevant has an infinite best threshold; its report
    /// still reads back from JSON (which writes infinity as null).
    #[test]
    fn a_report_with_an_infinite_threshold_round_trips() {
        let pairs: Vec<Graded> = (0..3)
            .map(|i| Graded {
                query: format!("q{i}"),
                document: "d".into(),
                grade: 1,
            })
            .collect();
        let r = CalibrationReport::new(
            Path::new("p.jsonl"),
            &CalibrateSettings::default(),
            &pairs,
            &[Some(0.1), Some(0.2), None],
            "m",
            "h",
        );
        assert_eq!((r.judged, r.not_judged, r.relevant), (2, 1, 0));
        assert!(r.threshold_for_precision.is_none());
        let back: CalibrationReport =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.best_accuracy.threshold, r.best_accuracy.threshold);
        assert_eq!(back.scores, r.scores);
        assert_eq!(back.at_0_5.tp, r.at_0_5.tp);
    }

    /// Nothing judged relevant: the JSON's precision is null where the console says
    /// n/a (it once wrote 1.0, which reads as a perfect judge).
    #[test]
    fn an_undefined_precision_is_null_in_json_and_na_on_the_console() {
        let pairs: Vec<Graded> = (0..2)
            .map(|i| Graded {
                query: format!("q{i}"),
                document: "d".into(),
                grade: 4 * i,
            })
            .collect();
        let r = CalibrationReport::new(
            Path::new("p.jsonl"),
            &CalibrateSettings::default(),
            &pairs,
            &[Some(0.1), Some(0.2)],
            "m",
            "h",
        );
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(r.at_0_5.tp + r.at_0_5.fp, 0);
        assert!(v["at_0_5"]["precision"].is_null(), "{}", v["at_0_5"]);
        assert!(r.to_string().contains("precision n/a"), "{r}");
    }
}
