//! Which slice of the work one process does: `i/n` as given, or read from the scheduler
//! that started it, so that one submit script serves every task of a Slurm job array
//! or a Kubernetes Indexed Job.
//!
//! ```
//! use sieve_datasets::shard::ShardSpec;
//!
//! let env = |k: &str| match k {
//!     "SLURM_ARRAY_TASK_ID" => Some("5".to_string()),
//!     "SLURM_ARRAY_TASK_MIN" => Some("4".to_string()),
//!     "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
//!     _ => None,
//! };
//! let shard = "auto".parse::<ShardSpec>()?.resolve_with(env)?;
//! assert_eq!((shard.index, shard.count), (1, 4));
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::str::FromStr;

/// A `--shard` value as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSpec {
    /// `i/n`: slice `i` of `n`.
    Fixed { index: usize, count: usize },
    /// `auto`: this task's place in a Slurm job array (`SLURM_ARRAY_TASK_ID`, `_MIN`,
    /// `_STEP`, `_COUNT`). `auto/N`: the same, or Kubernetes' `JOB_COMPLETION_INDEX`
    /// (an Indexed Job does not export its completion count) among `N` tasks.
    Auto { count: Option<usize> },
}

/// The slice this process does, and where that was read from (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    pub source: String,
}

impl Shard {
    /// The items `[start, end)` of `len` that this shard takes: contiguous slices in
    /// shard order, sizes differing by at most one, so the shards' outputs joined in
    /// order are the unsharded output.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        slice(len, self.index, self.count)
    }
}

/// Slice `index` of `count` of `len` items (see [`Shard::range`]).
pub fn slice(len: usize, index: usize, count: usize) -> std::ops::Range<usize> {
    if count == 0 {
        return 0..len;
    }
    (index * len / count)..((index + 1) * len / count)
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}/{} ({})", self.index, self.count, self.source)
    }
}

fn number(what: &str, text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what}: {text:?} is not a whole number"))
}

impl FromStr for ShardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = match s.split_once('/') {
            Some((i, n)) => (i.trim(), Some(n)),
            None => (s.trim(), None),
        };
        if i == "auto" {
            let count = n.map(|n| number(s, n)).transpose()?;
            if count == Some(0) {
                return Err(format!("{s:?}: the task count must be at least 1"));
            }
            return Ok(Self::Auto { count });
        }
        let n = n.ok_or_else(|| format!("{s:?}: expected i/n (e.g. 0/4), auto or auto/N"))?;
        let (index, count) = (number(s, i)?, number(s, n)?);
        if count == 0 || index >= count {
            return Err(format!("{s:?}: need 0 ≤ i < n"));
        }
        Ok(Self::Fixed { index, count })
    }
}

impl ShardSpec {
    /// The slice, reading the scheduler's variables from the process environment.
    pub fn resolve(&self) -> Result<Shard, String> {
        self.resolve_with(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// The slice, with the environment read through `env` (tests pass their own).
    pub fn resolve_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
        let read = |k: &str| env(k).map(|v| number(k, &v)).transpose();
        match *self {
            ShardSpec::Fixed { index, count } => Ok(Shard {
                index,
                count,
                source: "--shard".into(),
            }),
            ShardSpec::Auto { count: given } => {
                if let Some(id) = read("SLURM_ARRAY_TASK_ID")? {
                    let min = read("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                    let step = read("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
                    let count = match (read("SLURM_ARRAY_TASK_COUNT")?, given) {
                        (Some(c), Some(g)) if c != g => {
                            return Err(format!(
                                "--shard auto/{g}, but this Slurm array has {c} tasks \
                                 (SLURM_ARRAY_TASK_COUNT)"
                            ))
                        }
                        (Some(c), _) | (None, Some(c)) => c,
                        (None, None) => {
                            return Err("SLURM_ARRAY_TASK_COUNT is not set: give the task \
                                        count, --shard auto/N"
                                .into())
                        }
                    };
                    let offset = id.checked_sub(min).filter(|o| o % step == 0);
                    let index = offset.map(|o| o / step).filter(|&i| i < count);
                    let Some(index) = index else {
                        return Err(format!(
                            "Slurm array task {id} (min {min}, step {step}, {count} tasks) is \
                             not one of {count} evenly spaced tasks: submit a contiguous \
                             --array=0-{}",
                            count.saturating_sub(1)
                        ));
                    };
                    return Ok(Shard {
                        index,
                        count,
                        source: format!(
                            "SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}, \
                             SLURM_ARRAY_TASK_COUNT={count}"
                        ),
                    });
                }
                if let Some(index) = read("JOB_COMPLETION_INDEX")? {
                    let Some(count) = given else {
                        return Err(format!(
                            "JOB_COMPLETION_INDEX={index} (a Kubernetes Indexed Job) does not \
                             say how many tasks there are: --shard auto/N with the Job's \
                             completions"
                        ));
                    };
                    if index >= count {
                        return Err(format!(
                            "JOB_COMPLETION_INDEX={index}, but --shard auto/{count} has \
                             tasks 0..{}",
                            count - 1
                        ));
                    }
                    return Ok(Shard {
                        index,
                        count,
                        source: format!("JOB_COMPLETION_INDEX={index} of {count}"),
                    });
                }
                Err(
                    "--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor \
                     JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give i/n"
                        .into(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn resolve(spec: &str, vars: &'static [(&'static str, &'static str)]) -> Result<Shard, String> {
        spec.parse::<ShardSpec>()?.resolve_with(env(vars))
    }

    #[test]
    fn fixed_shards_parse_and_bad_ones_say_why() {
        let s = resolve("2/4", &[("SLURM_ARRAY_TASK_ID", "0")]).unwrap();
        assert_eq!(
            (s.index, s.count),
            (2, 4),
            "a given i/n wins over the scheduler"
        );
        for (bad, says) in [
            ("4/4", "0 ≤ i < n"),
            ("1/0", "0 ≤ i < n"),
            ("x/4", "not a whole number"),
            ("3", "expected i/n"),
            ("auto/0", "at least 1"),
            ("auto/x", "not a whole number"),
        ] {
            let err = bad.parse::<ShardSpec>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn slurm_arrays_give_index_and_count() {
        let s = resolve(
            "auto",
            &[
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("SLURM_ARRAY_TASK_MIN", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
        )
        .unwrap();
        assert_eq!((s.index, s.count), (3, 4));
        assert!(s.to_string().contains("SLURM_ARRAY_TASK_ID=3"), "{s}");
        // --array=10-16:2 is tasks 10, 12, 14, 16.
        let s = resolve(
            "auto",
            &[
                ("SLURM_ARRAY_TASK_ID", "14"),
                ("SLURM_ARRAY_TASK_MIN", "10"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
        )
        .unwrap();
        assert_eq!((s.index, s.count), (2, 4));
        // A list such as --array=1,3,7 cannot be mapped onto slices.
        let err = resolve(
            "auto",
            &[
                ("SLURM_ARRAY_TASK_ID", "7"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        )
        .unwrap_err();
        assert!(err.contains("contiguous --array=0-2"), "{err}");
        let err = resolve(
            "auto/8",
            &[
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
        )
        .unwrap_err();
        assert!(err.contains("has 4 tasks"), "{err}");
    }

    #[test]
    fn kubernetes_indexed_jobs_need_the_count() {
        let s = resolve("auto/5", &[("JOB_COMPLETION_INDEX", "4")]).unwrap();
        assert_eq!((s.index, s.count), (4, 5));
        let err = resolve("auto", &[("JOB_COMPLETION_INDEX", "4")]).unwrap_err();
        assert!(err.contains("--shard auto/N"), "{err}");
        let err = resolve("auto/4", &[("JOB_COMPLETION_INDEX", "4")]).unwrap_err();
        assert!(err.contains("tasks 0..3"), "{err}");
        let err = resolve("auto/4", &[]).unwrap_err();
        assert!(err.contains("neither SLURM_ARRAY_TASK_ID"), "{err}");
        let err = resolve("auto", &[("SLURM_ARRAY_TASK_ID", "two")]).unwrap_err();
        assert!(err.contains("SLURM_ARRAY_TASK_ID"), "{err}");
    }
}
