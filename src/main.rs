//! `sieve`: mine, judge, train and evaluate text-embedding models on checked negatives.
//!
//! The binary only parses arguments, wires the library crates together and reports;
//! every stage's logic lives in `crates/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::ALLOCATOR;

/// `println!` for what a command prints: a closed stdout (`sieve eval … | head`) ends
/// the process quietly with exit 0, where `println!` panics with exit 101.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// One line to stdout; see [`outln!`].
pub fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

mod alloc;
mod data_args;
mod dose_cmd;
mod encode_cmd;
mod eval_cmd;
mod judge_cmd;
mod mine_cmd;
mod model_args;
mod pipeline_cmd;
mod progress;
mod report_cmd;
mod train_cmd;

/// Train text-embedding models on checked negatives.
///
/// sieve mines likely false negatives (BM25 + dense), has an LLM judge label them,
/// trains with an exact or large-batch softmax that masks them, and evaluates the
/// result the way MTEB does.
#[derive(Debug, Parser)]
#[command(
    name = "sieve",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Eval(EvalArgs),
    Encode(encode_cmd::EncodeArgs),
    Mine(Box<mine_cmd::MineArgs>),
    Merge(mine_cmd::MergeArgs),
    Judge(Box<judge_cmd::JudgeArgs>),
    Train(Box<train_cmd::TrainArgs>),
    Dose(Box<dose_cmd::DoseArgs>),
    Pipeline(pipeline_cmd::PipelineArgs),
    Report(report_cmd::ReportArgs),
}

/// The cache directory flag, defined once: embeddings, verdicts and the BM25/HNSW
/// indexes live under it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CacheDir {
    /// Cache directory: embeddings, judge verdicts, BM25/HNSW indexes (default:
    /// $SIEVE_CACHE_DIR, $XDG_CACHE_HOME/sieve or ~/.cache/sieve).
    #[arg(long = "cache-dir", env = "SIEVE_CACHE_DIR")]
    pub dir: Option<PathBuf>,
}

impl CacheDir {
    pub fn resolve(&self) -> PathBuf {
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(sieve_encoder::cache::default_cache_dir);
        let _ = CACHE_IN_USE.set(dir.clone());
        dir
    }
}

/// The cache directory this run uses, for the disk-full hint (what can be freed).
static CACHE_IN_USE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Whether `err` comes from a full disk, a quota or a file-size limit. Some layers
/// (tantivy, parquet) keep only the message of the `std::io::Error`, so the messages
/// are matched too.
fn out_of_space(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
    err.chain().any(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), StorageFull | QuotaExceeded | FileTooLarge) {
                return true;
            }
        }
        let text = cause.to_string();
        [
            "No space left on device",
            "Disk quota exceeded",
            "File too large",
        ]
        .iter()
        .any(|m| text.contains(m))
    })
}

/// Bytes under `dir` (0 if absent).
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// What to tell a user whose disk filled: that nothing half-written is left for a later
/// stage to take as finished, what can be deleted, and that the rerun resumes.
fn out_of_space_hint() -> String {
    let mut hint = String::from(
        "hint: the disk is full (or a quota or `ulimit -f` file-size limit was reached). \
         sieve removed what it had half-written: no file above is left for a later stage \
         to take as finished. Free space on the filesystem of the path named above and run \
         the same command again; finished work (mined parts, judged verdicts, checkpoints) \
         is kept and resumed.",
    );
    if let Some(cache) = CACHE_IN_USE.get() {
        let mb = |d: &str| dir_size(&cache.join(d)) as f64 / 1e6;
        let (emb, bm25, hnsw, judge) = (mb("embeddings"), mb("bm25"), mb("hnsw"), mb("judge"));
        if emb + bm25 + hnsw > 0.0 {
            hint.push_str(&format!(
                "\n  in {}: embeddings/ {emb:.0} MB, bm25/ {bm25:.0} MB, hnsw/ {hnsw:.0} MB can be \
                 deleted (rebuilt when needed); judge/ ({judge:.0} MB) holds verdicts that cost \
                 judge time to redo.",
                cache.display()
            ));
        }
    }
    hint
}

/// Evaluate retrieval on a BEIR dataset, as MTEB does.
///
/// Embeds the corpus and the split's queries, retrieves the exact top 1000 by cosine
/// similarity, and scores nDCG, MAP, Recall, Precision and MRR at 1, 3, 5, 10, 20, 100
/// and 1000 with pytrec_eval's definitions. Writes `<output-dir>/<model>/<Task>.json`
/// in MTEB's result layout and a Markdown summary beside it, and prints the table.
///
/// Example:
///   sieve eval --model models/all-MiniLM-L6-v2 --dataset ../shared/data/scifact
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The embedding model (not needed with --retriever bm25).
    #[command(flatten)]
    pub model: model_args::ModelName,

    /// BEIR directory: corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv.
    #[arg(long, short)]
    pub dataset: PathBuf,

    /// Qrels split to evaluate (qrels/<split>.tsv).
    #[arg(long, default_value = "test")]
    pub split: String,

    #[command(flatten)]
    pub settings: sieve_eval::EvalSettings,

    /// Where results/<model>/<Task>.json and .md are written.
    #[arg(long, default_value = "results")]
    pub output_dir: PathBuf,

    /// Task name in the result file (default: MTEB's name for known BEIR datasets,
    /// else the dataset directory's name).
    #[arg(long)]
    pub task_name: Option<String>,

    /// Name of the model in the results path (default: the model directory's name).
    #[arg(long)]
    pub model_name: Option<String>,

    #[command(flatten)]
    pub cache: CacheDir,

    /// Persist the BM25 index here (reused when present).
    #[arg(long)]
    pub bm25_index: Option<PathBuf>,

    /// Hide progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval(args) => eval_cmd::run(&args),
        Command::Encode(args) => encode_cmd::run(&args),
        Command::Mine(args) => mine_cmd::run(&args),
        Command::Merge(args) => mine_cmd::merge(&args),
        Command::Judge(args) => judge_cmd::run(&args),
        Command::Train(args) => train_cmd::run(&args),
        Command::Dose(args) => dose_cmd::run(&args),
        Command::Pipeline(args) => pipeline_cmd::run(&args),
        Command::Report(args) => report_cmd::run(&args),
    }
}

fn main() -> ExitCode {
    alloc::configure();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIEVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or CI gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A cause that an outer message already quotes (`{path}: {source}`) is
            // not printed again.
            let mut shown = err.to_string();
            eprintln!("error: {shown}");
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !shown.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                    shown.push('\n');
                    shown.push_str(&cause);
                }
            }
            if out_of_space(&err) {
                eprintln!("{}", out_of_space_hint());
            }
            ExitCode::FAILURE
        }
    }
}

/// Shared argument checks that clap cannot express.
pub fn ensure_positive(name: &str, value: usize) -> Result<()> {
    if value == 0 {
        bail!("--{name} must be at least 1");
    }
    Ok(())
}
