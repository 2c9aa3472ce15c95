//! `sieve eval`.

use anyhow::{Context, Result};
use sieve_datasets::LoadOptions as DataOptions;
use sieve_eval::{report, EvalOptions};

use crate::{ensure_positive, EvalArgs, RetrieverKind};

pub fn run(args: &EvalArgs) -> Result<()> {
    ensure_positive("batch-size", args.model.batch_size)?;
    ensure_positive("top-k", args.top_k)?;
    let ds = sieve_datasets::load_beir(
        &args.dataset,
        &args.split,
        DataOptions {
            strict: args.strict,
        },
    )
    .with_context(|| format!("loading dataset {}", args.dataset.display()))?;
    if !ds.report.is_clean() {
        eprintln!("{}", ds.report);
    }
    let task = args
        .task_name
        .clone()
        .unwrap_or_else(|| report::task_name_for(&args.dataset));
    let opts = EvalOptions {
        batch_size: args.model.batch_size,
        top_k: args.top_k,
        cache_dir: if args.no_cache {
            None
        } else {
            Some(
                args.cache_dir
                    .clone()
                    .unwrap_or_else(sieve_eval::cache::default_cache_dir),
            )
        },
        ignore_identical_ids: !args.keep_identical_ids,
        show_progress: !args.quiet,
    };
    let result = match args.retriever {
        RetrieverKind::Bm25 => {
            sieve_eval::evaluate_bm25(&ds, &task, &args.split, args.bm25_index.as_deref(), &opts)?
        }
        RetrieverKind::Dense => {
            let encoder = args.model.load()?;
            let name = args
                .model_name
                .clone()
                .unwrap_or_else(|| args.model.display_name());
            sieve_eval::evaluate_dense(&encoder, &ds, &name, &task, &args.split, &opts)?
        }
        RetrieverKind::Hybrid => {
            let encoder = args.model.load()?;
            let name = args
                .model_name
                .clone()
                .unwrap_or_else(|| format!("{}+bm25", args.model.display_name()));
            sieve_eval::evaluate_hybrid(
                &encoder,
                &ds,
                &name,
                &task,
                &args.split,
                args.bm25_index.as_deref(),
                &opts,
            )?
        }
    };
    let path = result
        .write(&args.output_dir)
        .with_context(|| format!("writing results under {}", args.output_dir.display()))?;
    println!("{}", result.markdown());
    println!("results: {}", path.display());
    Ok(())
}
