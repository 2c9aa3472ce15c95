//! The candidate filters users know from sentence-transformers'
//! `mine_hard_negatives`, with its names and meanings, applied to the fused list.
//!
//! sieve mines candidates *for the judge*, so by default nothing is filtered: the
//! documents these rules drop (those scoring close to the positive) are exactly the
//! likely false negatives the judge should see. The rules are there for users who
//! want sentence-transformers' (or NV-Retriever's) hard negatives without a judge.
//! Every dropped candidate is recorded with the rule that dropped it.

use serde::{Deserialize, Serialize};

/// How to keep `num_negatives` of the surviving candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SamplingStrategy {
    /// The best-ranked ones.
    #[default]
    Top,
    /// A uniform sample (seeded per query, so reruns and shards agree).
    Random,
}

/// Filters, in the order they apply. Scores are the dense cosine similarities of
/// the mining model, as in sentence-transformers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct Rules {
    /// Skip the first range_min candidates (1-based ranks ≤ range_min).
    #[cfg_attr(feature = "clap", arg(long, alias = "range_min", default_value_t = 0))]
    pub range_min: usize,
    /// Consider only candidates ranked ≤ range_max.
    #[cfg_attr(feature = "clap", arg(long, alias = "range_max"))]
    pub range_max: Option<usize>,
    /// Drop candidates whose cosine exceeds this.
    #[cfg_attr(feature = "clap", arg(long, alias = "max_score"))]
    pub max_score: Option<f32>,
    /// Drop candidates scoring above (positive − absolute_margin).
    #[cfg_attr(feature = "clap", arg(long, alias = "absolute_margin"))]
    pub absolute_margin: Option<f32>,
    /// Drop candidates scoring above positive · (1 − relative_margin)
    /// (NV-Retriever's 95% rule: 0.05). The positive is the query's weakest one.
    #[cfg_attr(feature = "clap", arg(long, alias = "relative_margin"))]
    pub relative_margin: Option<f32>,
    /// Keep at most this many candidates per query.
    #[cfg_attr(feature = "clap", arg(long, alias = "num_negatives"))]
    pub num_negatives: Option<usize>,
    /// Which num_negatives to keep.
    #[cfg_attr(
        feature = "clap",
        arg(long, alias = "sampling_strategy", value_enum, default_value_t = SamplingStrategy::Top)
    )]
    pub sampling_strategy: SamplingStrategy,
    /// Seed of --sampling-strategy random.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_SEED))]
    pub seed: u64,
}

/// Seed of the `random` sampling strategy by default.
pub const DEFAULT_SEED: u64 = 12345;

impl Default for Rules {
    fn default() -> Self {
        Self {
            range_min: 0,
            range_max: None,
            max_score: None,
            absolute_margin: None,
            relative_margin: None,
            num_negatives: None,
            sampling_strategy: SamplingStrategy::Top,
            seed: DEFAULT_SEED,
        }
    }
}

/// Why a candidate was dropped; the names are the option names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    RangeMin,
    RangeMax,
    MaxScore,
    AbsoluteMargin,
    RelativeMargin,
    NumNegatives,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::RangeMin,
        Rule::RangeMax,
        Rule::MaxScore,
        Rule::AbsoluteMargin,
        Rule::RelativeMargin,
        Rule::NumNegatives,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::RangeMin => "range_min",
            Rule::RangeMax => "range_max",
            Rule::MaxScore => "max_score",
            Rule::AbsoluteMargin => "absolute_margin",
            Rule::RelativeMargin => "relative_margin",
            Rule::NumNegatives => "num_negatives",
        }
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl Rules {
    /// Decides, for candidates in rank order with their dense scores, which survive:
    /// returns `None` for kept candidates and the rule for dropped ones.
    /// `positive_score` is the *lowest* dense score among the query's positives (so a
    /// candidate is compared with the weakest positive, which drops more), `None`
    /// when the query has none (the margins then drop nothing). `query_key` seeds
    /// the random sampling.
    pub fn apply(
        &self,
        scores: &[f32],
        positive_score: Option<f32>,
        query_key: &str,
    ) -> Vec<Option<Rule>> {
        let mut verdict: Vec<Option<Rule>> = scores
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let rank = i + 1;
                if rank <= self.range_min {
                    return Some(Rule::RangeMin);
                }
                if self.range_max.is_some_and(|m| rank > m) {
                    return Some(Rule::RangeMax);
                }
                if self.max_score.is_some_and(|m| s > m) {
                    return Some(Rule::MaxScore);
                }
                if let Some(p) = positive_score {
                    if self.absolute_margin.is_some_and(|m| s > p - m) {
                        return Some(Rule::AbsoluteMargin);
                    }
                    if self.relative_margin.is_some_and(|m| s > p * (1.0 - m)) {
                        return Some(Rule::RelativeMargin);
                    }
                }
                None
            })
            .collect();
        if let Some(n) = self.num_negatives {
            let kept: Vec<usize> = (0..verdict.len())
                .filter(|&i| verdict[i].is_none())
                .collect();
            if kept.len() > n {
                let chosen: Vec<usize> = match self.sampling_strategy {
                    SamplingStrategy::Top => kept[..n].to_vec(),
                    SamplingStrategy::Random => sample(&kept, n, self.seed, query_key),
                };
                for i in kept {
                    if chosen.binary_search(&i).is_err() {
                        verdict[i] = Some(Rule::NumNegatives);
                    }
                }
            }
        }
        verdict
    }
}

/// `n` of `items` uniformly, in their original order; deterministic in (seed, key).
fn sample(items: &[usize], n: usize, seed: u64, key: &str) -> Vec<usize> {
    // splitmix64 over a hash of the key: independent streams per query.
    let mut rng = sieve_datasets::rng::SplitMix64(seed ^ fnv1a(key));
    let mut next = || rng.next_u64();
    let mut pool = items.to_vec();
    // Partial Fisher–Yates: the first n slots become the sample.
    for i in 0..n.min(pool.len()) {
        let j = i + (next() % (pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    let mut chosen = pool[..n.min(pool.len())].to_vec();
    chosen.sort_unstable();
    chosen
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_everything() {
        let v = Rules::default().apply(&[0.9, 0.8, 0.1], Some(0.5), "q");
        assert_eq!(v, vec![None, None, None]);
    }

    #[test]
    fn rules_apply_in_order_with_their_names() {
        let rules = Rules {
            range_min: 1,
            range_max: Some(6),
            max_score: Some(0.95),
            absolute_margin: Some(0.1),
            relative_margin: Some(0.05),
            ..Default::default()
        };
        // positive 0.8: absolute drops > 0.7, relative drops > 0.76
        let scores = [0.99, 0.97, 0.75, 0.72, 0.5, 0.4, 0.3];
        let v = rules.apply(&scores, Some(0.8), "q");
        assert_eq!(
            v,
            vec![
                Some(Rule::RangeMin),
                Some(Rule::MaxScore),
                Some(Rule::AbsoluteMargin),
                Some(Rule::AbsoluteMargin),
                None,
                None,
                Some(Rule::RangeMax),
            ]
        );
        let rel = Rules {
            relative_margin: Some(0.05),
            ..Default::default()
        };
        assert_eq!(
            rel.apply(&[0.77, 0.75], Some(0.8), "q"),
            vec![Some(Rule::RelativeMargin), None]
        );
        // No positive: margins cannot apply.
        assert_eq!(rel.apply(&[0.99], None, "q"), vec![None]);
    }

    #[test]
    fn num_negatives_top_and_random() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let top = Rules {
            num_negatives: Some(2),
            ..Default::default()
        };
        let v = top.apply(&scores, None, "q");
        assert_eq!(v.iter().filter(|x| x.is_none()).count(), 2);
        assert!(v[0].is_none() && v[1].is_none());
        let random = Rules {
            num_negatives: Some(3),
            sampling_strategy: SamplingStrategy::Random,
            seed: 7,
            ..Default::default()
        };
        let a = random.apply(&scores, None, "q1");
        assert_eq!(a, random.apply(&scores, None, "q1"), "deterministic");
        assert_eq!(a.iter().filter(|x| x.is_none()).count(), 3);
        assert!(a.iter().flatten().all(|r| *r == Rule::NumNegatives));
        // Different queries get different samples (with overwhelming probability
        // for at least one of several keys).
        let differs = (0..10).any(|i| random.apply(&scores, None, &format!("k{i}")) != a);
        assert!(differs);
        for r in Rule::ALL {
            assert_eq!(Rule::from_name(r.name()), Some(r));
        }
    }
}
