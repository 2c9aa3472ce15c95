//! Labelling a mined file: every candidate gets `label` and `p_relevant`, and the
//! statistics a user reads first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sieve_datasets::mined::{
    read_mined, read_shard_set, write_mined, MinedRow, LABEL_ERROR, LABEL_IRRELEVANT,
    LABEL_RELEVANT, LABEL_SUSPICIOUS, RUN_KEY, SCORE_METHODS_KEY, SHARD_KEY,
};

/// The footer keys judging adds to a mined file's (besides `sieve.stage`, which it
/// sets to `labeled`).
pub const JUDGE_KEYS: [&str; 7] = [
    "sieve.judge_model",
    "sieve.prompt_hash",
    "sieve.prompt_hashes",
    "sieve.judge_threshold",
    "sieve.judge_instruction_check",
    SCORE_METHODS_KEY,
    "sieve.judge_max_doc_tokens",
];
use sieve_datasets::parquet_io::Metadata;
use sieve_datasets::ValidationReport;

use crate::cache::VerdictCache;
use crate::client::Client;
use crate::prompt::{fused_hash, Template};
use crate::{judge_fused, Budget, Error, Job, Outcome, Result, RunReport};

/// Rank buckets of the statistics (1-based fused ranks, upper bounds inclusive).
pub const RANK_BUCKETS: [u32; 5] = [5, 10, 20, 50, 100];

/// Options of a labelling run besides the client's.
#[derive(Debug, Clone)]
pub struct LabelOptions {
    pub threshold: f32,
    pub max_doc_tokens: usize,
    pub concurrency: usize,
    pub budget: Budget,
    /// Overrides the corpus named in the mined file's metadata.
    pub corpus: Option<PathBuf>,
    /// Label pairs whose text reads as an instruction to the judge `suspicious`
    /// ([`crate::detect`]) instead of acting on their verdict.
    pub check_instructions: bool,
    /// Judge only slice `i` of `n` of the mined file's queries, into a labeled shard
    /// (`sieve merge` joins the shards).
    pub shard: Option<(usize, usize)>,
}

/// What the run found and spent.
#[derive(Debug, Clone, Default)]
pub struct LabelStats {
    pub candidates: usize,
    pub relevant: usize,
    pub irrelevant: usize,
    pub errors: usize,
    pub unjudged: usize,
    /// Judged pairs labeled `suspicious` by the instruction check, by reason.
    pub suspicious: BTreeMap<&'static str, usize>,
    /// source → (relevant, judged)
    pub by_source: BTreeMap<String, (usize, usize)>,
    /// bucket upper bound (u32::MAX for the rest) → (relevant, judged)
    pub by_rank: BTreeMap<u32, (usize, usize)>,
    pub run: RunReport,
    /// How the verdicts were read.
    pub methods: crate::ScoreMethods,
    pub cost: f64,
}

impl std::fmt::Display for LabelStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let judged = self.relevant + self.irrelevant;
        let pct = |a: usize, b: usize| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        writeln!(
            f,
            "judged relevant (false negatives): {} of {judged} judged candidates ({:.1}%)",
            self.relevant,
            pct(self.relevant, judged)
        )?;
        writeln!(
            f,
            "errors (retried next run): {}, not judged (budget): {}",
            self.errors, self.unjudged
        )?;
        if !self.suspicious.is_empty() {
            let reasons: Vec<String> = self
                .suspicious
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            writeln!(
                f,
                "suspicious (text reads as an instruction to the judge; verdict not acted on): {} ({})",
                self.suspicious.values().sum::<usize>(),
                reasons.join(", ")
            )?;
        }
        writeln!(f, "by source:")?;
        for (s, (r, n)) in &self.by_source {
            writeln!(f, "  {s:>6}: {r:>6} / {n:<7} {:5.1}%", pct(*r, *n))?;
        }
        writeln!(f, "by fused rank:")?;
        let mut lo = 1;
        for (hi, (r, n)) in &self.by_rank {
            let label = if *hi == u32::MAX {
                format!("{lo}+")
            } else {
                format!("{lo}-{hi}")
            };
            writeln!(f, "  {label:>7}: {r:>6} / {n:<7} {:5.1}%", pct(*r, *n))?;
            lo = hi.saturating_add(1);
        }
        writeln!(
            f,
            "requests: {} ({} retries; {} verdicts from the cache), tokens: {} prompt ({} from the server's prompt cache) + {} completion, cost: {:.4}",
            self.run.requests,
            self.run.retries,
            self.run.from_cache,
            self.run.prompt_tokens,
            self.run.cached_tokens,
            self.run.completion_tokens,
            self.cost
        )?;
        writeln!(f, "{}", self.methods)?;
        if self.run.truncated > 0 {
            writeln!(
                f,
                "documents truncated to the token budget: {}",
                self.run.truncated
            )?;
        }
        if self.run.stopped_by_budget {
            writeln!(
                f,
                "stopped by the budget: run again with a larger one to finish"
            )?;
        }
        Ok(())
    }
}

/// The corpus file named by the mined file (relative to it), or `over`.
fn corpus_path(mined: &Path, meta: &Metadata, over: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = over {
        return Ok(p.to_path_buf());
    }
    sieve_datasets::mined::named_corpus(mined, meta).ok_or_else(|| {
        Error::Config(format!(
            "{}: no `sieve.corpus` in its metadata; pass --corpus",
            mined.display()
        ))
    })
}

/// A mined file's rows with one job per candidate, and each job's (row, candidate).
type Loaded = (Vec<MinedRow>, Metadata, Vec<Job>, Vec<(usize, usize)>);

fn load_jobs(mined: &Path, corpus: Option<&Path>, shard: Option<(usize, usize)>) -> Result<Loaded> {
    let (mut rows, mut meta) = read_mined(mined)?;
    if let Some((i, n)) = shard {
        if let Some(already) = meta.get(SHARD_KEY) {
            return Err(Error::Config(format!(
                "{}: already shard {already} of a sharded run; judge it whole (no --shard), \
                 or shard the merged file",
                mined.display()
            )));
        }
        let range = sieve_datasets::shard::slice(rows.len(), i, n);
        rows = rows.drain(range).collect();
        meta.insert(SHARD_KEY.into(), format!("{i}/{n}"));
    }
    let corpus_file = corpus_path(mined, &meta, corpus)?;
    let mut report = ValidationReport::default();
    let corpus = sieve_datasets::read_corpus(&corpus_file, &mut report)?;
    if let Some(mined_hash) = meta.get("sieve.corpus_hash") {
        if *mined_hash != sieve_datasets::corpus_hash(&corpus) {
            return Err(Error::Config(format!(
                "{}: this corpus is not the one {} was mined from (its sieve.corpus_hash \
                 differs): the candidates' texts would not be the ones mined; mine again, or \
                 pass the original corpus with --corpus",
                corpus_file.display(),
                mined.display()
            )));
        }
    }
    let text: HashMap<&str, String> = corpus
        .iter()
        .map(|d| (d.id.as_str(), d.full_text()))
        .collect();
    let mut jobs = Vec::new();
    let mut slots = Vec::new();
    for (ri, row) in rows.iter().enumerate() {
        for (ci, c) in row.candidates.iter().enumerate() {
            let doc = text.get(c.doc_id.as_str()).ok_or_else(|| {
                Error::Config(format!(
                    "{}: candidate {:?} of query {:?} is not in the corpus {}",
                    mined.display(),
                    c.doc_id,
                    row.query_id,
                    corpus_file.display()
                ))
            })?;
            jobs.push(Job {
                query: row.query.clone(),
                document: doc.clone(),
            });
            slots.push((ri, ci));
        }
    }
    Ok((rows, meta, jobs, slots))
}

/// Writes the chat-completion requests that judging `mined` would send (pairs
/// already in `cache` left out, each pair once per template) as an OpenAI Batch API input file:
/// one `{"custom_id", "method", "url", "body"}` per line, the pair's cache key as
/// `custom_id`. Nothing is sent. Returns the number of requests written.
#[allow(clippy::too_many_arguments)]
pub fn write_requests(
    mined: &Path,
    corpus: Option<&Path>,
    shard: Option<(usize, usize)>,
    client: &Client,
    templates: &[Template],
    cache: &VerdictCache,
    max_doc_tokens: usize,
    out: &Path,
) -> Result<usize> {
    use std::io::Write;
    let (_, _, jobs, _) = load_jobs(mined, corpus, shard)?;
    let file = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let mut w = std::io::BufWriter::new(file);
    let mut seen = std::collections::HashSet::new();
    for (template, job) in templates
        .iter()
        .flat_map(|t| jobs.iter().map(move |j| (t, j)))
    {
        let key = job.key(client.model(), &template.hash, max_doc_tokens);
        if cache.get(&key).is_some() || !seen.insert(key.clone()) {
            continue;
        }
        let prompt = template.render(&job.query, &job.document, max_doc_tokens);
        let line = serde_json::json!({
            "custom_id": key,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": client.request_body(&prompt),
        });
        writeln!(w, "{line}").map_err(|e| Error::io(out, e))?;
    }
    w.flush().map_err(|e| Error::io(out, e))?;
    Ok(seen.len())
}

/// Labels every candidate of `mined` and writes `out`. With several templates, each
/// candidate's P(relevant) is their mean ([`crate::judge_fused`]).
#[allow(clippy::too_many_arguments)]
pub fn label_file(
    mined: &Path,
    out: &Path,
    client: Client,
    templates: &[Template],
    cache: &mut VerdictCache,
    opts: &LabelOptions,
    progress: &(dyn Fn(usize) + Sync),
    total: &dyn Fn(usize),
) -> Result<LabelStats> {
    let (mut rows, mut meta, jobs, slots) = load_jobs(mined, opts.corpus.as_deref(), opts.shard)?;
    // Only when the check is on: it reads every document once more.
    let signals: Vec<Option<&'static str>> = jobs
        .iter()
        .map(|j| {
            opts.check_instructions
                .then(|| crate::detect::pair_signal(&j.query, &j.document))
                .flatten()
        })
        .collect();
    total(jobs.len() * templates.len());
    let model = client.model().to_string();
    let client = Arc::new(client);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("async runtime: {e}")))?;
    let (outcomes, run) = rt.block_on(judge_fused(
        client,
        templates,
        &jobs,
        cache,
        crate::RunOptions {
            max_doc_tokens: opts.max_doc_tokens,
            concurrency: opts.concurrency,
            budget: opts.budget,
        },
        progress,
    ))?;
    let mut stats = LabelStats {
        candidates: jobs.len(),
        methods: crate::ScoreMethods::of(&outcomes),
        ..Default::default()
    };
    for (j, ((ri, ci), outcome)) in slots.into_iter().zip(outcomes).enumerate() {
        let c = &mut rows[ri].candidates[ci];
        match outcome {
            Outcome::Judged(e) if signals[j].is_some() => {
                c.p_relevant = Some(e.p_relevant);
                c.label = Some(LABEL_SUSPICIOUS.to_string());
                let why = signals[j].unwrap_or_default();
                *stats.suspicious.entry(why).or_default() += 1;
            }
            Outcome::Judged(e) => {
                let relevant = e.p_relevant >= opts.threshold;
                c.p_relevant = Some(e.p_relevant);
                c.label = Some(
                    if relevant {
                        LABEL_RELEVANT
                    } else {
                        LABEL_IRRELEVANT
                    }
                    .to_string(),
                );
                let s = stats.by_source.entry(c.source.clone()).or_default();
                s.0 += usize::from(relevant);
                s.1 += 1;
                let bucket = RANK_BUCKETS
                    .iter()
                    .copied()
                    .find(|&b| c.rank <= b)
                    .unwrap_or(u32::MAX);
                let r = stats.by_rank.entry(bucket).or_default();
                r.0 += usize::from(relevant);
                r.1 += 1;
                if relevant {
                    stats.relevant += 1;
                } else {
                    stats.irrelevant += 1;
                }
            }
            Outcome::Failed(_) => {
                c.p_relevant = None;
                c.label = Some(LABEL_ERROR.to_string());
                stats.errors += 1;
            }
            Outcome::Skipped => {
                c.p_relevant = None;
                c.label = None;
                stats.unjudged += 1;
            }
        }
    }
    stats.cost = opts.budget.cost(run.prompt_tokens, run.completion_tokens);
    stats.run = run;
    meta.insert("sieve.stage".into(), "labeled".into());
    meta.insert("sieve.judge_model".into(), model);
    meta.insert("sieve.prompt_hash".into(), fused_hash(templates));
    if templates.len() > 1 {
        meta.insert(
            "sieve.prompt_hashes".into(),
            templates
                .iter()
                .map(|t| t.hash.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    meta.insert("sieve.judge_threshold".into(), opts.threshold.to_string());
    meta.insert(
        "sieve.judge_instruction_check".into(),
        opts.check_instructions.to_string(),
    );
    meta.insert(
        sieve_datasets::mined::SCORE_METHODS_KEY.into(),
        serde_json::to_string(&stats.methods).unwrap_or_default(),
    );
    meta.insert(
        "sieve.judge_max_doc_tokens".into(),
        opts.max_doc_tokens.to_string(),
    );
    write_mined(out, &rows, &meta)?;
    Ok(stats)
}

/// Labels every candidate of `mined` into `out` with `settings`: the one entry point of
/// `sieve judge` and the pipeline's judge stage. `progress` sees the pairs to judge
/// (one unit per template verdict).
#[allow(clippy::too_many_arguments)]
pub fn label_with(
    settings: &crate::JudgeSettings,
    mined: &Path,
    out: &Path,
    threshold: f32,
    corpus: Option<PathBuf>,
    shard: Option<(usize, usize)>,
    cache: &mut VerdictCache,
    progress: &dyn sieve_datasets::Progress,
) -> Result<LabelStats> {
    crate::settings::check_threshold(threshold)?;
    let client = settings.client()?;
    let templates = settings.templates()?;
    let stats = label_file(
        mined,
        out,
        client,
        &templates,
        cache,
        &LabelOptions {
            threshold,
            max_doc_tokens: settings.max_doc_tokens,
            concurrency: settings.concurrency,
            budget: settings.budget(),
            corpus,
            check_instructions: !settings.allow_instructions,
            shard,
        },
        &|n| progress.advance(n),
        &|n| progress.start("pairs", n),
    )?;
    progress.finish();
    let attempted = stats.relevant + stats.irrelevant + stats.errors;
    if stats.errors > 0 && stats.errors as f64 > settings.max_error_share * attempted as f64 {
        progress.note(&stats.to_string());
        return Err(Error::TooManyFailures {
            failed: stats.errors,
            attempted,
            limit: settings.max_error_share,
            out: out.to_path_buf(),
        });
    }
    Ok(stats)
}

/// Joins the labeled shards of one judging run (`sieve judge --shard i/n` over one
/// mined file; any order) into `out`: the rows in shard order and the metadata of an
/// unsharded run, the verdict counts by scoring method summed. Refuses shards of
/// different runs or judges, missing or repeated ones, like `sieve merge` for mining.
///
/// The shards of one mined file judged with `--shard` share its run key; the mined
/// shards of a sharded mining run, each judged whole, each carry their own, and the
/// merge then takes `mined_run_key` of the run's mined metadata (the labeled metadata
/// without [`JUDGE_KEYS`], staged `mined` again): the key `sieve merge` gives the
/// mined shards' merge.
pub fn merge_labeled(
    shards: &[PathBuf],
    out: &Path,
    mined_run_key: &dyn Fn(&Metadata) -> String,
) -> Result<usize> {
    let (rows, mut meta, metas) = read_shard_set(shards, &[SCORE_METHODS_KEY, RUN_KEY])?;
    let keys: std::collections::BTreeSet<Option<&String>> =
        metas.iter().map(|m| m.get(RUN_KEY)).collect();
    match keys.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(one)] => {
            meta.insert(RUN_KEY.into(), (*one).clone());
        }
        [None] => {}
        _ => {
            let mut mined = meta.clone();
            for k in JUDGE_KEYS {
                mined.remove(k);
            }
            mined.insert("sieve.stage".into(), "mined".into());
            meta.insert(RUN_KEY.into(), mined_run_key(&mined));
        }
    }
    let mut methods = crate::ScoreMethods::default();
    for (m, path) in metas.iter().zip(shards) {
        let s: crate::ScoreMethods = m
            .get(SCORE_METHODS_KEY)
            .and_then(|j| serde_json::from_str(j).ok())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{}: no readable `{SCORE_METHODS_KEY}`: not a labeled shard",
                    path.display()
                ))
            })?;
        methods.logprobs += s.logprobs;
        methods.text += s.text;
        methods.json += s.json;
    }
    if let Some(total) = meta
        .get("sieve.queries")
        .and_then(|q| q.parse::<usize>().ok())
    {
        if total != rows.len() {
            return Err(Error::Config(format!(
                "the labeled shards hold {} queries, the mined run has {total}",
                rows.len()
            )));
        }
    }
    meta.insert(
        SCORE_METHODS_KEY.into(),
        serde_json::to_string(&methods).unwrap_or_default(),
    );
    write_mined(out, &rows, &meta)?;
    Ok(rows.len())
}
