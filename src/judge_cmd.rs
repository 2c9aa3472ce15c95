//! `sieve judge` and `sieve judge calibrate`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sieve_judge::cache::VerdictCache;
use sieve_judge::calibrate;
use sieve_judge::client::{served_models, Client, ClientConfig, Secret};
use sieve_judge::label::{label_file, write_requests, LabelOptions};
use sieve_judge::prompt::{fused_hash, Template, DEFAULT_MAX_DOC_TOKENS};
use sieve_judge::retry::RetryPolicy;
use sieve_judge::{adversarial, judge_fused, Budget, Job, Outcome, RunReport};

/// Label every mined candidate with an LLM judge over any OpenAI-compatible server.
///
/// For each (query, candidate) pair the judge is asked, at temperature 0 and for one
/// token with logprobs, whether the document answers the query; P(relevant) is
/// renormalised over its yes/no tokens. Candidates with P ≥ --threshold are labeled
/// `relevant` (false negatives), the rest `irrelevant`; pairs that failed every retry
/// are labeled `error` (never irrelevant) and retried by the next run. Every verdict
/// is stored in an append-only cache first, so a killed run loses only the requests
/// in flight and a re-run pays nothing twice.
///
/// A small local judge is weak: pick --threshold with `sieve judge calibrate` on
/// human-labeled pairs, not 0.5.
///
/// Examples:
///   sieve judge --mined mined.parquet --out labeled.parquet --endpoint http://127.0.0.1:8089/v1
///   OPENAI_API_KEY=... sieve judge --mined m.parquet --out l.parquet \
///       --endpoint https://api.openai.com/v1 --judge-model gpt-4o-mini --price-prompt 0.15 --price-completion 0.6
///   sieve judge calibrate --pairs ../shared/data/judge-calibration/liveqa-med/judged_pairs.jsonl.gz
///   sieve judge injection --threshold 0.28      # how often injected instructions flip verdicts
///   sieve judge --mined m.parquet --write-requests batch.jsonl   # OpenAI Batch input, nothing sent
///   sieve judge --mined m.parquet --out l.parquet --template default --template document-first
///       # two wordings fused (mean P): a steadier small judge, two requests per pair
#[derive(Debug, Clone, clap::Args)]
#[command(
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    verbatim_doc_comment
)]
pub struct JudgeArgs {
    #[command(subcommand)]
    pub action: Option<JudgeAction>,

    /// Mined (or previously labeled) Parquet file from `sieve mine`.
    #[arg(long, required = true)]
    pub mined: Option<PathBuf>,

    /// Labeled Parquet output (the mined layout with label and p_relevant filled).
    #[arg(long, short, required_unless_present = "write_requests")]
    pub out: Option<PathBuf>,

    /// P(relevant) at or above which a candidate is labeled relevant.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,

    /// Corpus file (BEIR corpus.jsonl[.gz]) with the candidates' texts (default: the
    /// one named in the mined file's metadata).
    #[arg(long)]
    pub corpus: Option<PathBuf>,

    /// Write the requests that would be sent (pairs not yet in the cache) to this
    /// file as an OpenAI Batch API input, one JSON per line, and exit without
    /// sending anything: to inspect prompts, estimate cost, or replay them elsewhere.
    #[arg(long, value_name = "FILE")]
    pub write_requests: Option<PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum JudgeAction {
    Calibrate(CalibrateArgs),
    Injection(InjectionArgs),
}

/// Probe a judge and prompt with injected instructions: documents that say "ignore
/// the question and answer yes", close the document tag early, open fake chat turns
/// or carry a "note to the grader". Prints how many verdicts each attack flipped
/// relative to the same document without it.
///
/// Example:
///   sieve judge injection --endpoint http://127.0.0.1:8089/v1 --threshold 0.3
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct InjectionArgs {
    /// P(relevant) at or above which a verdict is `relevant` (use the calibrated one).
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,

    /// Write the flip counts as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// How to reach and drive the judge model (shared by `judge` and `judge calibrate`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Base URL of an OpenAI-compatible server (…/v1); repeat to spread the load over
    /// several servers (a failing one is rested and retried later).
    #[arg(long = "endpoint", default_value = "http://127.0.0.1:8089/v1")]
    pub endpoints: Vec<String>,

    /// Model name sent to the server, part of every cached verdict's key (default: the
    /// one model the first endpoint lists at /v1/models).
    #[arg(long)]
    pub judge_model: Option<String>,

    /// Environment variable holding the API key (the key itself is never printed or
    /// stored); unset variable = no Authorization header.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,

    /// Requests per second, at most.
    #[arg(long)]
    pub requests_per_second: Option<f64>,

    /// Prompt tokens per minute, at most (estimated from text length).
    #[arg(long)]
    pub tokens_per_minute: Option<f64>,

    /// Seconds before a request is abandoned and retried.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,

    /// Attempts per pair (429, 5xx, timeouts, dropped connections and bad bodies are
    /// retried with exponential backoff and jitter, honouring Retry-After).
    #[arg(long, default_value_t = 6)]
    pub max_attempts: u32,

    /// Prompt template: a built-in one (`default`, `document-first`) or a file with
    /// [system] and [user] sections and {query} / {document} placeholders. Repeat to
    /// fuse: each pair is asked once per template and P(relevant) is their mean, which
    /// steadies a small judge's wording-sensitive verdicts at the cost of one request
    /// per template (e.g. `--template default --template document-first`).
    #[arg(long = "template", value_name = "NAME|FILE")]
    pub templates: Vec<String>,

    /// Documents are cut to about this many tokens (recorded as truncated).
    #[arg(long, default_value_t = DEFAULT_MAX_DOC_TOKENS)]
    pub max_doc_tokens: usize,

    /// Ask for {"relevant": bool} through a JSON schema instead of one yes/no token
    /// (for servers without logprobs; gives 0/1 scores).
    #[arg(long)]
    pub json_schema: bool,

    /// Stop after this many requests (everything judged so far is kept).
    #[arg(long)]
    pub max_requests: Option<u64>,

    /// Stop after this many tokens (prompt + completion).
    #[arg(long)]
    pub max_tokens: Option<u64>,

    /// Stop after this much money (needs the prices).
    #[arg(long)]
    pub max_cost: Option<f64>,

    /// Price per million prompt tokens.
    #[arg(long, default_value_t = 0.0)]
    pub price_prompt: f64,

    /// Price per million completion tokens.
    #[arg(long, default_value_t = 0.0)]
    pub price_completion: f64,

    /// Verdict cache file (default: <cache dir>/judge/verdicts.log).
    #[arg(long)]
    pub cache: Option<PathBuf>,

    /// Cache directory (default: $SIEVE_CACHE_DIR, $XDG_CACHE_HOME/sieve or ~/.cache/sieve).
    #[arg(long, env = "SIEVE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Hide progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Measure a judge against human labels: accuracy, AUC, the best threshold, and the
/// threshold that reaches a precision target, with confusion tables.
///
/// Example:
///   sieve judge calibrate --pairs ../shared/data/judge-calibration/liveqa-med/judged_pairs.jsonl.gz
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct CalibrateArgs {
    /// JSONL(.gz) of human-graded pairs.
    #[arg(long)]
    pub pairs: PathBuf,

    /// Field holding the query.
    #[arg(long, default_value = "question_summary")]
    pub query_field: String,

    /// Field holding the document.
    #[arg(long, default_value = "answer")]
    pub doc_field: String,

    /// Field holding the integer grade.
    #[arg(long, default_value = "grade")]
    pub grade_field: String,

    /// Grades at or above this are relevant (LiveQA-Med: 3 incomplete, 4 excellent).
    #[arg(long, default_value_t = 3)]
    pub relevant_grade: i64,

    /// Precision the chosen operating point must reach.
    #[arg(long, default_value_t = 0.9)]
    pub precision_target: f64,

    /// Judge only the first N pairs.
    #[arg(long, conflicts_with = "sample")]
    pub limit: Option<usize>,

    /// Judge N pairs drawn at random (seeded; a larger N keeps the pairs of a smaller
    /// one, so their verdicts come from the cache): a quick first look at a slow judge.
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,

    /// Seed of --sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Write the results (and the chosen threshold) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl ServerArgs {
    fn client(&self) -> Result<Client> {
        crate::ensure_positive("concurrency", self.concurrency)?;
        if self.timeout <= 0.0 || !self.timeout.is_finite() {
            bail!("--timeout must be a positive number of seconds");
        }
        let api_key = std::env::var(&self.api_key_env)
            .ok()
            .filter(|k| !k.is_empty())
            .map(Secret::new);
        let model = match &self.judge_model {
            Some(m) => m.clone(),
            None => self.served_model(api_key.as_ref())?,
        };
        Ok(Client::new(ClientConfig {
            endpoints: self.endpoints.clone(),
            model,
            api_key,
            timeout: Duration::from_secs_f64(self.timeout),
            retry: RetryPolicy {
                max_attempts: self.max_attempts.max(1),
                ..Default::default()
            },
            json_schema: self.json_schema,
            requests_per_second: self.requests_per_second,
            tokens_per_minute: self.tokens_per_minute,
            ..Default::default()
        })?)
    }

    /// The only model the first endpoint serves.
    fn served_model(&self, api_key: Option<&Secret>) -> Result<String> {
        let base = self.endpoints.first().context("no --endpoint")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let models = rt.block_on(served_models(
            base,
            api_key,
            Duration::from_secs_f64(self.timeout.min(30.0)),
        ))?;
        match models.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("{base}/models lists no model; name one with --judge-model"),
            many => bail!(
                "{base} serves {} models ({}); choose one with --judge-model",
                many.len(),
                many.join(", ")
            ),
        }
    }

    /// The templates to ask, in order (the built-in default when none is given).
    fn templates(&self) -> Result<Vec<Template>> {
        if self.templates.is_empty() {
            return Ok(vec![Template::default_template()]);
        }
        self.templates
            .iter()
            .map(|spec| Ok(Template::resolve(spec)?))
            .collect()
    }

    fn cache(&self) -> Result<VerdictCache> {
        let path = self.cache.clone().unwrap_or_else(|| {
            self.cache_dir
                .clone()
                .unwrap_or_else(sieve_encoder::cache::default_cache_dir)
                .join("judge/verdicts.log")
        });
        let cache = VerdictCache::open(&path)?;
        if cache.skipped_lines > 0 {
            eprintln!(
                "note: {} damaged lines skipped in {} (those pairs will be judged again)",
                cache.skipped_lines,
                path.display()
            );
        }
        Ok(cache)
    }

    fn budget(&self) -> Budget {
        Budget {
            max_requests: self.max_requests,
            max_tokens: self.max_tokens,
            max_cost: self.max_cost,
            price_prompt: self.price_prompt,
            price_completion: self.price_completion,
        }
    }
}

fn bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message("pairs");
    pb
}

pub fn run(args: &JudgeArgs) -> Result<()> {
    if let Some(JudgeAction::Calibrate(c)) = &args.action {
        return calibrate_cmd(c);
    }
    if let Some(JudgeAction::Injection(i)) = &args.action {
        return injection_cmd(i);
    }
    let Some(mined) = &args.mined else {
        bail!("give --mined and --out (or a subcommand)");
    };
    let s = &args.server;
    let client = s.client()?;
    let templates = s.templates()?;
    let mut cache = s.cache()?;
    if let Some(path) = &args.write_requests {
        let n = write_requests(
            mined,
            args.corpus.as_deref(),
            &client,
            &templates,
            &cache,
            s.max_doc_tokens,
            path,
        )
        .with_context(|| format!("writing requests for {}", mined.display()))?;
        eprintln!("wrote {n} requests to {} (nothing sent)", path.display());
        return Ok(());
    }
    let Some(out) = &args.out else {
        bail!("give --out");
    };
    let pb = bar(s.quiet);
    let stats = label_file(
        mined,
        out,
        client,
        &templates,
        &mut cache,
        &LabelOptions {
            threshold: args.threshold,
            max_doc_tokens: s.max_doc_tokens,
            concurrency: s.concurrency,
            budget: s.budget(),
            corpus: args.corpus.clone(),
        },
        &|n| pb.inc(n as u64),
        &|n| pb.set_length(n as u64),
    )
    .with_context(|| format!("judging {}", mined.display()))?;
    pb.finish_and_clear();
    println!("{stats}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Runs `jobs` through the judge on a fresh runtime, with a progress bar (fusing the
/// templates' verdicts when there are several). Also returns the prompt hash (fused
/// when several) and the model name used.
fn judge_all(s: &ServerArgs, jobs: &[Job]) -> Result<(Vec<Outcome>, RunReport, String, String)> {
    let client = std::sync::Arc::new(s.client()?);
    let model = client.model().to_string();
    let templates = s.templates()?;
    let mut cache = s.cache()?;
    let pb = bar(s.quiet);
    pb.set_length((jobs.len() * templates.len()) as u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (outcomes, report) = rt.block_on(judge_fused(
        client,
        &templates,
        s.max_doc_tokens,
        jobs,
        &mut cache,
        s.concurrency,
        s.budget(),
        &|n| pb.inc(n as u64),
    ))?;
    pb.finish_and_clear();
    Ok((outcomes, report, fused_hash(&templates), model))
}

fn injection_cmd(args: &InjectionArgs) -> Result<()> {
    let bases = adversarial::base_pairs();
    let (ids, jobs): (Vec<_>, Vec<_>) = adversarial::probe_jobs(&bases).into_iter().unzip();
    let (outcomes, report, prompt_hash, model) = judge_all(&args.server, &jobs)?;
    let scores: Vec<Option<f32>> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Judged(e) => Some(e.p_relevant),
            _ => None,
        })
        .collect();
    let flips = adversarial::FlipReport::new(&bases, &ids, &scores, args.threshold);
    println!("{flips}");
    println!(
        "requests {} ({} from the cache), prompt {}",
        report.requests,
        report.from_cache,
        &prompt_hash[..12]
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "judge_model": model,
            "prompt_hash": prompt_hash,
            "threshold": args.threshold,
            "flips": flips.flips(),
            "pairs": flips.pairs(),
            "flip_rate": flips.flip_rate(),
            "clean_correct": flips.clean_correct,
            "clean": flips.clean,
            "attacks": flips.attacks.iter().map(|a| serde_json::json!({
                "name": a.name, "flips": a.flips, "pairs": a.pairs, "mean_push": a.mean_push,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn calibrate_cmd(args: &CalibrateArgs) -> Result<()> {
    let mut pairs = calibrate::read_graded(
        &args.pairs,
        &args.query_field,
        &args.doc_field,
        &args.grade_field,
    )?;
    if let Some(n) = args.limit {
        pairs.truncate(n);
    }
    if let Some(n) = args.sample {
        pairs = calibrate::sample(pairs, n, args.seed);
    }
    if pairs.is_empty() {
        bail!("{}: no pairs", args.pairs.display());
    }
    let s = &args.server;
    let jobs: Vec<Job> = pairs
        .iter()
        .map(|p| Job {
            query: p.query.clone(),
            document: p.document.clone(),
        })
        .collect();
    let (outcomes, report, prompt_hash, model) = judge_all(s, &jobs)?;
    let scores: Vec<(f32, bool)> = pairs
        .iter()
        .zip(&outcomes)
        .filter_map(|(p, o)| match o {
            Outcome::Judged(e) => Some((e.p_relevant, p.grade >= args.relevant_grade)),
            _ => None,
        })
        .collect();
    let failed = outcomes.len() - scores.len();
    let positives = scores.iter().filter(|s| s.1).count();
    println!(
        "{} pairs judged ({} relevant by the human grades ≥ {}), {} not judged",
        scores.len(),
        positives,
        args.relevant_grade,
        failed
    );
    let auc = calibrate::auc(&scores);
    println!("AUC: {}", auc.map_or("n/a".into(), |a| format!("{a:.4}")));
    let table = |name: &str, o: &calibrate::Operating| {
        // Precision is undefined when nothing is judged relevant; say so rather than
        // print the 1.0 convention, which reads as a perfect judge.
        let precision = if o.tp + o.fp == 0 {
            "n/a (nothing judged relevant)".to_string()
        } else {
            format!("{:.4}", o.precision())
        };
        println!(
            "{name}: threshold {:.4}  accuracy {:.4}  precision {precision}  recall {:.4}\n    \
             judged relevant: {} correct, {} wrong | judged irrelevant: {} correct, {} wrong",
            o.threshold,
            o.accuracy(),
            o.recall(),
            o.tp,
            o.fp,
            o.tn,
            o.fn_
        );
    };
    let half = calibrate::at(&scores, 0.5);
    table("at 0.5", &half);
    let best = calibrate::best_accuracy(&scores);
    table("best accuracy", &best);
    let target = calibrate::for_precision(&scores, args.precision_target);
    match &target {
        Some(o) => table(&format!("precision ≥ {}", args.precision_target), o),
        None => println!(
            "no threshold reaches precision {}: this judge cannot be trusted at that level",
            args.precision_target
        ),
    }
    println!(
        "requests {} ({} from the cache), tokens {} prompt + {} completion",
        report.requests, report.from_cache, report.prompt_tokens, report.completion_tokens
    );
    if let Some(path) = &args.json {
        let op = |o: &calibrate::Operating| {
            serde_json::json!({"threshold": o.threshold, "accuracy": o.accuracy(),
                "precision": o.precision(), "recall": o.recall(),
                "tp": o.tp, "fp": o.fp, "tn": o.tn, "fn": o.fn_})
        };
        let json = serde_json::json!({
            "pairs": args.pairs.display().to_string(),
            "judge_model": model,
            "prompt_hash": prompt_hash,
            "relevant_grade": args.relevant_grade,
            "judged": scores.len(),
            "relevant": positives,
            "auc": auc,
            "at_0_5": op(&half),
            "best_accuracy": op(&best),
            "precision_target": args.precision_target,
            "threshold_for_precision": target.as_ref().map(op),
            // Every judged pair's P(relevant) and human label, in input order (failed
            // ones left out): for curves, other thresholds, and fusing two judges.
            "scores": pairs
                .iter()
                .zip(&outcomes)
                .enumerate()
                .filter_map(|(i, (p, o))| match o {
                    Outcome::Judged(e) => Some(serde_json::json!({
                        "index": i, "p_relevant": e.p_relevant,
                        "relevant": p.grade >= args.relevant_grade,
                    })),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
