//! The LLM judge: labels each mined (query, candidate) pair through any
//! OpenAI-compatible chat-completions server (vLLM, llama.cpp, SGLang, Ollama,
//! hosted APIs), so that training can mask the false negatives.
//!
//! One token at temperature 0 with `logprobs` gives P(relevant) ([`score`]); the
//! prompt is a replaceable template that treats the document as data ([`prompt`]);
//! failed requests are retried with backoff and never stored as irrelevant
//! ([`retry`], [`client`]); every verdict goes to a content-addressed, append-only
//! store before it counts, so a killed run loses only the requests in flight and a
//! re-run pays nothing twice ([`cache`]); [`calibrate`] measures a judge against
//! human labels.

pub mod adversarial;
pub mod cache;
pub mod calibrate;
pub mod client;
pub mod detect;
mod error;
pub mod label;
pub mod prompt;
pub mod retry;
pub mod score;
pub mod settings;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use error::{Error, Result};
pub use settings::JudgeSettings;

use cache::{pair_key, Entry, VerdictCache};
use client::Client;
use prompt::Template;

/// Pairs that may fail every attempt, with none succeeding, before a run stops.
pub const GIVE_UP_AFTER_FAILURES: usize = 16;

/// A spending limit; the run stops cleanly (everything judged so far kept) once
/// any limit is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub max_requests: Option<u64>,
    pub max_tokens: Option<u64>,
    /// In the currency of the prices below.
    pub max_cost: Option<f64>,
    /// Price per million prompt tokens.
    pub price_prompt: f64,
    /// Price per million completion tokens.
    pub price_completion: f64,
}

impl Budget {
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.price_prompt
            + completion_tokens as f64 * self.price_completion)
            / 1e6
    }

    /// What is left of this budget after `spent`.
    fn after(&self, spent: &RunReport) -> Budget {
        let cost = self.cost(spent.prompt_tokens, spent.completion_tokens);
        Budget {
            max_requests: self.max_requests.map(|m| m.saturating_sub(spent.requests)),
            max_tokens: self
                .max_tokens
                .map(|m| m.saturating_sub(spent.prompt_tokens + spent.completion_tokens)),
            max_cost: self.max_cost.map(|m| (m - cost).max(0.0)),
            ..*self
        }
    }

    /// One of `parts` equal shares of this budget: a fused judge gives each template
    /// its share, so a budgeted run ends with fused verdicts on its first pairs rather
    /// than the first template's verdicts on all of them and none of the second's.
    fn share(&self, parts: usize) -> Budget {
        let n = parts.max(1) as u64;
        Budget {
            max_requests: self.max_requests.map(|m| m / n),
            max_tokens: self.max_tokens.map(|m| m / n),
            max_cost: self.max_cost.map(|m| m / n as f64),
            ..*self
        }
    }

    fn exhausted(&self, requests: u64, prompt: u64, completion: u64) -> bool {
        self.max_requests.is_some_and(|m| requests >= m)
            || self.max_tokens.is_some_and(|m| prompt + completion >= m)
            || self
                .max_cost
                .is_some_and(|m| self.cost(prompt, completion) >= m)
    }
}

/// One pair to judge.
#[derive(Debug, Clone)]
pub struct Job {
    pub query: String,
    pub document: String,
}

impl Job {
    /// The pair's verdict-cache key under `model`, a template hash and a document budget.
    pub fn key(&self, model: &str, template_hash: &str, max_doc_tokens: usize) -> String {
        pair_key(
            model,
            template_hash,
            max_doc_tokens,
            &self.query,
            &self.document,
        )
    }
}

/// What became of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Judged(Entry),
    /// Every attempt failed; stored as `error` and retried by the next run.
    Failed(String),
    /// Not attempted: the budget ran out first.
    Skipped,
}

/// How a run's verdicts were read: from logprobs (a graded P(relevant)) or from the
/// answer's text or a JSON schema (P is 0 or 1 only). A calibrated threshold means
/// nothing over 0/1 scores, so every run says which it got, and calibration refuses
/// binary scores unless asked to take them ([`MAX_BINARY_SHARE`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScoreMethods {
    pub logprobs: usize,
    pub text: usize,
    pub json: usize,
}

/// Share of binary (0/1) verdicts above which calibration refuses to choose a
/// threshold unless `allow_binary_scores` is set: a few text answers happen when the
/// yes/no tokens fall out of the server's top logprobs; many mean it sends none.
pub const MAX_BINARY_SHARE: f64 = 0.05;

impl ScoreMethods {
    /// Counts the judged outcomes by method (failed and skipped ones are not counted).
    pub fn of(outcomes: &[Outcome]) -> Self {
        let mut m = Self::default();
        for o in outcomes {
            if let Outcome::Judged(e) = o {
                match score::Method::from_name(&e.method) {
                    Some(score::Method::Logprobs) => m.logprobs += 1,
                    Some(score::Method::Json) => m.json += 1,
                    // A cache line from an older or foreign writer: not graded.
                    Some(score::Method::Text) | None => m.text += 1,
                }
            }
        }
        m
    }

    /// Verdicts whose P(relevant) is 0 or 1 only.
    pub fn binary(&self) -> usize {
        self.text + self.json
    }

    pub fn total(&self) -> usize {
        self.logprobs + self.binary()
    }

    pub fn binary_share(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.binary() as f64 / self.total() as f64
        }
    }
}

impl std::fmt::Display for ScoreMethods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scores: {} from logprobs, {} from the answer's text (0/1), {} from a JSON schema (0/1)",
            self.logprobs, self.text, self.json
        )?;
        if self.text > 0 {
            write!(
                f,
                "\nwarning: {} of {} verdicts came without logprobs, so their P(relevant) is 0 or 1 \
                 and no threshold can rank them; use a server that returns logprobs \
                 (llama-server, vLLM and OpenAI do when asked)",
                self.text,
                self.total()
            )?;
        }
        Ok(())
    }
}

/// Totals of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    pub from_cache: usize,
    pub judged: usize,
    pub failed: usize,
    pub skipped: usize,
    pub requests: u64,
    pub retries: u64,
    pub prompt_tokens: u64,
    /// Of `prompt_tokens`, served from the servers' prompt caches (see
    /// `score::Verdict::cached_tokens`).
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub truncated: usize,
    pub stopped_by_budget: bool,
}

/// The jobs' cached verdicts, and the prompts still to send (one per distinct pair:
/// identical pairs inside one run are judged once).
#[allow(clippy::type_complexity)]
fn from_cache(
    jobs: &[Job],
    cache: &VerdictCache,
    template: &Template,
    model: &str,
    max_doc_tokens: usize,
) -> (Vec<Outcome>, Vec<(usize, String, prompt::Prompt)>) {
    let mut outcomes: Vec<Outcome> = vec![Outcome::Skipped; jobs.len()];
    let mut todo: Vec<(usize, String, prompt::Prompt)> = Vec::new();
    let mut queued = std::collections::HashSet::new();
    for (i, job) in jobs.iter().enumerate() {
        let key = job.key(model, &template.hash, max_doc_tokens);
        if let Some(e) = cache.get(&key) {
            outcomes[i] = Outcome::Judged(e.clone());
            continue;
        }
        if !queued.insert(key.clone()) {
            continue;
        }
        let p = template.render(&job.query, &job.document, max_doc_tokens);
        todo.push((i, key, p));
    }
    (outcomes, todo)
}

/// How a run judges: document length, requests in flight, what it may spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunOptions {
    /// Documents are cut to about this many tokens.
    pub max_doc_tokens: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub budget: Budget,
}

/// Judges `jobs` (cached ones free), at most `opts.concurrency` requests in flight,
/// within `opts.budget`; every new verdict is appended to `cache` as it arrives.
/// `progress` receives the number of jobs finished. Returns one outcome per job.
pub async fn judge_jobs(
    client: Arc<Client>,
    template: &Template,
    jobs: &[Job],
    cache: &mut VerdictCache,
    opts: RunOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<Outcome>, RunReport)> {
    let RunOptions {
        max_doc_tokens,
        concurrency,
        budget,
    } = opts;
    let model = client_model(&client);
    let mut report = RunReport::default();
    let (mut outcomes, todo) = from_cache(jobs, cache, template, &model, max_doc_tokens);
    report.from_cache = outcomes.iter().filter(|o| **o != Outcome::Skipped).count();
    progress(report.from_cache);

    let mut set = tokio::task::JoinSet::new();
    let mut pending = todo.into_iter();
    let mut fatal: Option<Error> = None;
    let started_requests = client.usage.requests.load(Ordering::Relaxed);
    let started_prompt = client.usage.prompt_tokens.load(Ordering::Relaxed);
    let started_completion = client.usage.completion_tokens.load(Ordering::Relaxed);
    let started_cached = client.usage.cached_tokens.load(Ordering::Relaxed);
    let spent = |c: &Client| {
        (
            c.usage.requests.load(Ordering::Relaxed) - started_requests,
            c.usage.prompt_tokens.load(Ordering::Relaxed) - started_prompt,
            c.usage.completion_tokens.load(Ordering::Relaxed) - started_completion,
        )
    };
    let mut keys: BTreeMap<usize, String> = BTreeMap::new();
    loop {
        // Keep the pipeline full while the budget and no fatal error allow.
        while fatal.is_none() && set.len() < concurrency.max(1) {
            let (r, p, c) = spent(&client);
            if budget.exhausted(r, p, c) {
                report.stopped_by_budget = pending.len() > 0;
                break;
            }
            let Some((i, key, prompt)) = pending.next() else {
                break;
            };
            keys.insert(i, key);
            let client = client.clone();
            set.spawn(async move {
                let truncated = prompt.truncated;
                (i, truncated, client.judge(&prompt).await)
            });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        let (i, truncated, result) = done.map_err(|e| Error::Config(format!("judge task: {e}")))?;
        match result {
            Err(e) => {
                fatal.get_or_insert(e);
            }
            Ok(Ok(v)) => {
                let entry = Entry {
                    key: keys.remove(&i).unwrap_or_default(),
                    p_relevant: v.p_relevant,
                    method: v.method.name().to_string(),
                    prompt_tokens: v.prompt_tokens,
                    completion_tokens: v.completion_tokens,
                    truncated,
                };
                cache.put(entry.clone())?;
                report.judged += 1;
                report.truncated += usize::from(truncated);
                outcomes[i] = Outcome::Judged(entry);
            }
            Ok(Err(f)) => {
                keys.remove(&i);
                report.failed += 1;
                // Nothing has worked yet and many pairs failed every attempt: the
                // server is down or misconfigured; stop instead of marking the
                // whole dataset `error`.
                if report.judged == 0
                    && report.failed >= GIVE_UP_AFTER_FAILURES.max(2 * concurrency)
                {
                    fatal.get_or_insert(Error::Config(format!(
                        "the first {} pairs failed every attempt and none succeeded (last: {f}); is the server up?",
                        report.failed
                    )));
                }
                outcomes[i] = Outcome::Failed(f.to_string());
            }
        }
        progress(1);
    }
    cache.sync()?;
    if let Some(e) = fatal {
        return Err(e);
    }
    // Duplicates inside the run take their twin's verdict.
    for i in 0..jobs.len() {
        if outcomes[i] == Outcome::Skipped {
            let key = jobs[i].key(&model, &template.hash, max_doc_tokens);
            if let Some(e) = cache.get(&key) {
                outcomes[i] = Outcome::Judged(e.clone());
            }
        }
    }
    report.skipped = outcomes.iter().filter(|o| **o == Outcome::Skipped).count();
    let (r, p, c) = spent(&client);
    report.requests = r;
    report.prompt_tokens = p;
    report.completion_tokens = c;
    report.cached_tokens = client.usage.cached_tokens.load(Ordering::Relaxed) - started_cached;
    report.retries = client.usage.retries.load(Ordering::Relaxed);
    Ok((outcomes, report))
}

/// Judges `jobs` with every template in `templates` and fuses the verdicts: a pair's
/// P(relevant) is the mean over the templates (with one template, exactly
/// [`judge_jobs`]). Each template's verdicts are cached under its own hash, so a fused
/// run reuses single-prompt runs and the reverse. A pair is judged only when every
/// template judged it; one failure makes it `Failed`, one budget stop `Skipped`. The
/// budget covers all templates together; `progress` counts template verdicts
/// (`jobs.len() × templates.len()` in all).
pub async fn judge_fused(
    client: Arc<Client>,
    templates: &[Template],
    jobs: &[Job],
    cache: &mut VerdictCache,
    opts: RunOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<Outcome>, RunReport)> {
    let Some((first, rest)) = templates.split_first() else {
        return Err(Error::Config("no prompt template".into()));
    };
    let budget = opts.budget;
    let (mut fused, mut total) = judge_jobs(
        client.clone(),
        first,
        jobs,
        cache,
        RunOptions {
            budget: budget.share(templates.len()),
            ..opts
        },
        progress,
    )
    .await?;
    if rest.is_empty() {
        return Ok((fused, total));
    }
    for (i, t) in rest.iter().enumerate() {
        // What is left, shared among the templates still to run.
        let left = budget.after(&total).share(rest.len() - i);
        let (outcomes, report) = judge_jobs(
            client.clone(),
            t,
            jobs,
            cache,
            RunOptions {
                budget: left,
                ..opts
            },
            progress,
        )
        .await?;
        total.from_cache += report.from_cache;
        total.judged += report.judged;
        total.requests += report.requests;
        total.prompt_tokens += report.prompt_tokens;
        total.cached_tokens += report.cached_tokens;
        total.completion_tokens += report.completion_tokens;
        total.truncated += report.truncated;
        total.stopped_by_budget |= report.stopped_by_budget;
        // Retries come from the shared client's running total.
        total.retries = report.retries;
        for (f, o) in fused.iter_mut().zip(outcomes) {
            *f = match (std::mem::replace(f, Outcome::Skipped), o) {
                (Outcome::Judged(mut a), Outcome::Judged(b)) => {
                    // Summed here, divided by the number of templates below.
                    a.p_relevant += b.p_relevant;
                    a.prompt_tokens += b.prompt_tokens;
                    a.completion_tokens += b.completion_tokens;
                    a.truncated |= b.truncated;
                    // A fused P is graded only when every template's was.
                    if b.method != score::Method::Logprobs.name() {
                        a.method = b.method;
                    }
                    Outcome::Judged(a)
                }
                (Outcome::Failed(e), _) | (_, Outcome::Failed(e)) => Outcome::Failed(e),
                _ => Outcome::Skipped,
            };
        }
    }
    let k = templates.len() as f32;
    let hash = prompt::fused_hash(templates);
    for (o, job) in fused.iter_mut().zip(jobs) {
        if let Outcome::Judged(e) = o {
            e.p_relevant /= k;
            e.key = job.key(client.model(), &hash, opts.max_doc_tokens);
        }
    }
    total.failed = fused
        .iter()
        .filter(|o| matches!(o, Outcome::Failed(_)))
        .count();
    total.skipped = fused.iter().filter(|o| **o == Outcome::Skipped).count();
    Ok((fused, total))
}

fn client_model(client: &Client) -> String {
    client.model().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fused_budget_is_shared_among_its_templates() {
        let b = Budget {
            max_requests: Some(100),
            max_tokens: Some(9_000),
            max_cost: Some(3.0),
            price_prompt: 1.0,
            price_completion: 2.0,
        };
        let half = b.share(2);
        assert_eq!(half.max_requests, Some(50));
        assert_eq!(half.max_tokens, Some(4_500));
        assert_eq!(half.max_cost, Some(1.5));
        assert_eq!(half.price_prompt, 1.0);
        // After the first template spent 40 requests and 3,000 + 40 tokens, the second
        // (the last) gets all that is left.
        let spent = RunReport {
            requests: 40,
            prompt_tokens: 3_000,
            completion_tokens: 40,
            ..Default::default()
        };
        let left = b.after(&spent).share(1);
        assert_eq!(left.max_requests, Some(60));
        assert_eq!(left.max_tokens, Some(5_960));
        let cost = (3_000.0 + 2.0 * 40.0) / 1e6;
        assert!((left.max_cost.unwrap() - (3.0 - cost)).abs() < 1e-12);
        assert_eq!(Budget::default().share(3), Budget::default());
    }
}

/// What [`judge_blocking`] returns: one outcome per job, the run's totals, the prompt
/// hash (fused when several templates) and the model name used.
#[derive(Debug, Clone)]
pub struct Judged {
    pub outcomes: Vec<Outcome>,
    pub report: RunReport,
    pub prompt_hash: String,
    pub model: String,
}

/// Judges `jobs` with `settings` on a fresh runtime, fusing the templates' verdicts
/// when there are several: the one entry point of `judge calibrate`, `judge
/// injection` and the pipeline's calibration. `progress` counts template verdicts
/// (`jobs.len() × templates` in all).
pub fn judge_blocking(
    settings: &JudgeSettings,
    cache: &mut VerdictCache,
    jobs: &[Job],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Judged> {
    let client = Arc::new(settings.client()?);
    let model = client.model().to_string();
    let templates = settings.templates()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("starting the HTTP runtime: {e}")))?;
    let (outcomes, report) = rt.block_on(judge_fused(
        client,
        &templates,
        jobs,
        cache,
        settings.run_options(),
        progress,
    ))?;
    Ok(Judged {
        outcomes,
        report,
        prompt_hash: prompt::fused_hash(&templates),
        model,
    })
}

/// Calibrates the judge on the human-graded pairs of `path`: judges them (cached ones
/// free) and measures AUC and operating points against the grades.
pub fn calibrate_file(
    settings: &JudgeSettings,
    calibration: &calibrate::CalibrateSettings,
    path: &std::path::Path,
    cache: &mut VerdictCache,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<calibrate::CalibrationReport> {
    let pairs = calibration.read(path)?;
    let jobs: Vec<Job> = pairs
        .iter()
        .map(|p| Job {
            query: p.query.clone(),
            document: p.document.clone(),
        })
        .collect();
    let judged = judge_blocking(settings, cache, &jobs, progress)?;
    let methods = ScoreMethods::of(&judged.outcomes);
    if methods.binary_share() > MAX_BINARY_SHARE
        && !settings.allow_binary_scores
        && !settings.json_schema
    {
        return Err(Error::BinaryScores {
            binary: methods.binary(),
            judged: methods.total(),
            endpoint: settings.endpoints.first().cloned().unwrap_or_default(),
        });
    }
    let p: Vec<Option<f32>> = judged
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::Judged(e) => Some(e.p_relevant),
            _ => None,
        })
        .collect();
    let mut report = calibrate::CalibrationReport::new(
        path,
        calibration,
        &pairs,
        &p,
        &judged.model,
        &judged.prompt_hash,
    );
    report.requests = judged.report.requests;
    report.from_cache = judged.report.from_cache as u64;
    report.prompt_tokens = judged.report.prompt_tokens;
    report.completion_tokens = judged.report.completion_tokens;
    report.score_methods = methods;
    Ok(report)
}
