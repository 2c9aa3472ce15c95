//! `sieve encode`: embed a file of texts; also the sieve half of `bench/encode`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Embed texts from a file and write them as a NumPy `.npy` matrix (float32, n × dim).
///
/// Input: a BEIR corpus or queries file (`.jsonl` / `.jsonl.gz`; documents are embedded
/// as `title + " " + text`, as MTEB does) or a plain `.txt` file with one text per line.
/// Rows of the output follow the input order.
///
/// Example:
///   sieve encode --model models/all-MiniLM-L6-v2 --input corpus.jsonl.gz --output corpus.npy
///   sieve encode --model intfloat/e5-small-v2 --query-prompt "query: " --role query \
///       --input queries.jsonl --output queries.npy
#[derive(Debug, Clone, clap::Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub model: crate::model_args::ModelArgs,

    /// Texts: BEIR corpus/queries JSONL (optionally gzipped) or one text per line (.txt).
    #[arg(long, short)]
    pub input: PathBuf,

    /// Where to write the float32 `.npy` matrix; omit to only measure.
    #[arg(long, short)]
    pub output: Option<PathBuf>,

    /// Embed only the first N texts.
    #[arg(long)]
    pub limit: Option<usize>,

    /// The texts are queries or documents: their prompt goes in front (--query-prompt /
    /// --document-prompt, or the model's own), as sentence-transformers' encode_query /
    /// encode_document do. plain: the model's default prompt only, as encode does.
    #[arg(long, value_enum, default_value_t = sieve_encoder::Role::Plain)]
    pub role: sieve_encoder::Role,

    /// Print one JSON line of throughput statistics (used by bench/encode).
    #[arg(long)]
    pub json: bool,

    /// Hide the progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

fn read_texts(path: &Path, limit: usize) -> Result<Vec<String>> {
    let name = path.to_string_lossy();
    if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
        let reader = sieve_datasets::CorpusReader::open(path)?;
        reader
            .take(limit)
            .map(|d| Ok(d?.full_text()))
            .collect::<Result<Vec<_>>>()
    } else if name.ends_with(".txt") {
        let body = std::fs::read(path).with_context(|| format!("reading {name}"))?;
        let body = String::from_utf8(body).map_err(|e| {
            anyhow::anyhow!(
                "{name}: invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            )
        })?;
        Ok(body.lines().take(limit).map(str::to_string).collect())
    } else {
        bail!("{name}: unknown input format (expected .jsonl, .jsonl.gz or .txt)")
    }
}

/// Peak resident memory of this process (Linux), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: &EncodeArgs) -> Result<()> {
    let texts = read_texts(&args.input, args.limit.unwrap_or(usize::MAX))?;
    let encoder = args.model.load()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pb = if args.quiet || args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(refs.len() as u64)
    };
    let start = Instant::now();
    let emb = encoder.encode_as(args.role, &refs, args.model.encode.batch_size, &|n| {
        pb.inc(n as u64)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if let Some(out) = &args.output {
        sieve_datasets::npy::write_npy(out, &emb.data, emb.len(), emb.dim)?;
    }
    let stats = serde_json::json!({
        "tool": "sieve",
        "texts": refs.len(),
        "seconds": seconds,
        "texts_per_s": refs.len() as f64 / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "batch_size": args.model.encode.batch_size,
        "max_seq_length": encoder.max_seq_length(),
        "threads": rayon::current_num_threads(),
    });
    if args.json {
        outln!("{stats}");
    } else {
        eprintln!(
            "embedded {} texts in {seconds:.1} s ({:.1} texts/s), dim {}",
            refs.len(),
            refs.len() as f64 / seconds,
            emb.dim
        );
    }
    Ok(())
}
