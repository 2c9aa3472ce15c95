//! `sieve eval`: flags in, [`sieve_eval::evaluate`] called, the table out.

use anyhow::{Context, Result};
use sieve_eval::EvalRequest;

use crate::EvalArgs;

impl EvalArgs {
    pub fn request(&self) -> EvalRequest<'_> {
        EvalRequest {
            model: &self.model.model,
            model_name: self.model_name.clone(),
            dataset: &self.dataset,
            split: &self.split,
            task_name: self.task_name.clone(),
            cache_dir: Some(self.cache.resolve()),
            bm25_index: self.bm25_index.as_deref(),
            progress: sieve_datasets::SharedProgress(std::sync::Arc::new(
                crate::progress::Bars::new(self.quiet),
            )),
        }
    }
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let results = sieve_eval::evaluate_all(&args.settings, &args.request(), &|w| eprintln!("{w}"))
        .with_context(|| format!("evaluating on {}", args.dataset.display()))?;
    for result in &results {
        let path = result
            .write(&args.output_dir)
            .with_context(|| format!("writing results under {}", args.output_dir.display()))?;
        outln!("{}", result.markdown());
        outln!("results: {}", path.display());
    }
    if results.len() > 1 {
        outln!("\n| dimension | nDCG@10 | Recall@100 |\n|---:|---:|---:|");
        for r in &results {
            outln!(
                "| {} | {:.5} | {:.5} |",
                r.truncate_dim.map_or("all".to_string(), |d| d.to_string()),
                r.main_score(),
                r.scores.get("recall_at_100").copied().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
