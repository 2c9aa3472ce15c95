//! The model card (`README.md`) written beside every exported model, in the layout
//! sentence-transformers writes: YAML metadata with a `model-index` block (what the Hub
//! and `huggingface_hub.ModelCard` read), then the model, how to use it, how it was
//! trained (data, loss, false-negative policy and what masking touched,
//! hyper-parameters) and evaluated, and the sieve version and command.

use std::fmt::Write as _;

use super::{Objective, Trainer};
use crate::loss::FalseNegativePolicy;

/// What the caller knows about a run that the trainer does not.
#[derive(Debug, Clone, Default)]
pub struct CardInfo {
    /// The base model as the user named it (a hub id or a path).
    pub base_model: Option<String>,
    /// The command line that started the run.
    pub command: Option<String>,
    /// The dev data evaluated on while training (e.g. `scifact dev`).
    pub dev_data: Option<String>,
}

/// YAML's double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl Trainer {
    /// Records what the model card says about the run's origin.
    pub fn set_card_info(&mut self, info: CardInfo) {
        self.card = info;
    }

    /// The model card for the weights as they are now.
    pub fn model_card(&self) -> String {
        let c = &self.config;
        // The base model as named, and whether it is a local directory (not a Hub id).
        let (base, local) = match &self.card.base_model {
            Some(b) => (b.clone(), std::path::Path::new(b).exists()),
            None => (
                self.encoder
                    .dir()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| self.encoder.dir().display().to_string()),
                true,
            ),
        };
        let n = self.data.examples.len();
        let (with_known, known) = count(self.data.examples.iter().map(|e| e.known.len()));
        let (with_judged, judged) = count(self.data.examples.iter().map(|e| e.judged.len()));
        let (with_negatives, negatives) =
            count(self.data.examples.iter().map(|e| e.negatives.len()));
        let objective = match c.objective {
            Objective::InBatch if c.mini_batch_size.is_some() => {
                "CachedMultipleNegativesRankingLoss"
            }
            Objective::InBatch => "MultipleNegativesRankingLoss",
            Objective::Exact => "exact whole-corpus softmax (sieve)",
        };
        let loss = if c.loss.symmetric && c.objective == Objective::InBatch {
            "MultipleNegativesSymmetricRankingLoss"
        } else {
            objective
        };
        let mut tags = vec![
            "sentence-transformers".to_string(),
            "sentence-similarity".into(),
            "feature-extraction".into(),
            "sieve".into(),
            format!("dataset_size:{n}"),
        ];
        if !c.matryoshka.is_empty() {
            tags.push("loss:MatryoshkaLoss".into());
        }
        if c.distill.is_none_or(|d| !d.only) {
            tags.push(format!("loss:{}", loss.split(' ').next().unwrap_or(loss)));
        }
        if c.distill.is_some() {
            tags.push("loss:DistillKLDivLoss".into());
        }

        let mut s = String::from("---\n");
        s += "tags:\n";
        for t in &tags {
            let _ = writeln!(s, "- {t}");
        }
        // The Hub takes a model id here, not a local directory (sentence-transformers
        // leaves the key out for those too).
        if !local {
            let _ = writeln!(s, "base_model: {}", quoted(&base));
        }
        s += "pipeline_tag: sentence-similarity\nlibrary_name: sentence-transformers\n";
        let best = self
            .state
            .best
            .or_else(|| self.evals.last().map(|&(st, m)| (m, st)))
            .filter(|(v, _)| v.is_finite());
        if let Some((value, _)) = best {
            let dev = self.card.dev_data.clone().unwrap_or_else(|| "dev".into());
            s += "metrics:\n- cosine_ndcg@10\nmodel-index:\n";
            let _ = writeln!(
                s,
                "- name: {}",
                quoted(&format!("SentenceTransformer based on {base}"))
            );
            s += "  results:\n  - task:\n      type: information-retrieval\n      name: Information Retrieval\n";
            let _ = writeln!(
                s,
                "    dataset:\n      name: {}\n      type: {}",
                quoted(&dev),
                quoted(&dev.to_lowercase().replace(' ', "-"))
            );
            let _ = writeln!(
                s,
                "    metrics:\n    - type: cosine_ndcg@10\n      value: {value}\n      name: Cosine Ndcg@10"
            );
        }
        s += "---\n\n";

        let _ = writeln!(s, "# SentenceTransformer based on {base}\n");
        let _ = writeln!(
            s,
            "A [sentence-transformers](https://www.SBERT.net) model fine-tuned from `{base}` with \
             [sieve](https://github.com/) on {n} (query, positive) pairs, with the in-batch \
             documents known or judged to answer a query handled by the `{}` policy. It maps \
             text to a {}-dimensional vector for semantic search.\n",
            policy_name(c.false_negatives),
            self.encoder.dim()
        );
        s += "## Model Details\n\n";
        let _ = writeln!(s, "- **Model Type:** Sentence Transformer");
        let _ = writeln!(s, "- **Base model:** `{base}`");
        let _ = writeln!(
            s,
            "- **Maximum Sequence Length:** {} tokens",
            self.encoder.max_seq_length()
        );
        let _ = writeln!(
            s,
            "- **Output Dimensionality:** {} dimensions",
            self.encoder.dim()
        );
        if !c.matryoshka.is_empty() {
            let _ = writeln!(
                s,
                "- **Matryoshka dimensions:** {:?} (the first D dimensions alone embed; load \
                 with `truncate_dim=D`)",
                c.matryoshka.dims
            );
        }
        if let Some((q, d)) = &self.state.prompts {
            let _ = writeln!(
                s,
                "- **Prompts:** query {q:?}, document {d:?} (in `config_sentence_transformers.json`: \
                 `encode_query` and `encode_document` apply them)"
            );
        }
        s += "- **Similarity Function:** Cosine Similarity\n\n";
        s += "## Usage\n\n```python\nfrom sentence_transformers import SentenceTransformer\n\n";
        s += "model = SentenceTransformer(\"path/to/this/model\")\n";
        s += "queries = model.encode_query([\"What causes anaemia?\"])\n";
        s += "documents = model.encode_document([\"Iron deficiency is a common cause of anaemia.\"])\n";
        s += "print(model.similarity(queries, documents))\n```\n\n";

        s += "## Training Details\n\n### Training Dataset\n\n";
        let _ = writeln!(s, "- **Source:** `{}`", self.data.source);
        let _ = writeln!(
            s,
            "- **Size:** {n} training pairs, {} distinct texts",
            self.data.texts.len()
        );
        let _ = writeln!(
            s,
            "- **Hard negatives:** {negatives} over {with_negatives} pairs (up to {} per pair in a batch)",
            self.data
                .examples
                .iter()
                .map(|e| e.negatives.len())
                .max()
                .unwrap_or(0)
        );
        let _ = writeln!(
            s,
            "- **Known other positives** (qrels, repeated questions): {known} over {with_known} pairs"
        );
        let _ = writeln!(
            s,
            "- **Judge-found false negatives** (candidates an LLM judged relevant): {judged} over {with_judged} pairs\n"
        );
        s += "### Loss\n\n";
        if c.matryoshka.is_empty() {
            let _ = writeln!(
                s,
                "`{loss}` with scale {} (temperature {:.4}).",
                c.loss.scale,
                1.0 / c.loss.scale
            );
        } else {
            let _ = writeln!(
                s,
                "`MatryoshkaLoss` over `{loss}` (scale {}): dimensions {:?}, weights {:?}.",
                c.loss.scale,
                c.matryoshka.dims,
                c.matryoshka.weighted().map(|(_, w)| w).collect::<Vec<_>>()
            );
        }
        if let Some(d) = &c.distill {
            let _ = writeln!(
                s,
                "\n{}listwise distillation from the judge (sentence-transformers' \
                 `DistillKLDivLoss`, FlagEmbedding's knowledge distillation): KL divergence from \
                 softmax(P(relevant) / {}) over each query's positive and first {} scored \
                 candidates to the model's softmax over them, weight {}.",
                if d.only { "Trained by " } else { "Plus " },
                d.temperature,
                d.candidates,
                d.weight
            );
        }
        let _ = writeln!(
            s,
            "\nFalse negatives: `{}` ({}); known positives {}, judge labels {}.\n",
            policy_name(c.false_negatives),
            match c.false_negatives {
                FalseNegativePolicy::Mask => "taken out of the query's softmax",
                FalseNegativePolicy::Positive => "counted as further positives",
                FalseNegativePolicy::None => "left in the softmax as negatives",
            },
            if c.mask_known { "used" } else { "ignored" },
            if c.mask_judged { "used" } else { "ignored" },
        );
        let dose = super::mean_dose(self.doses.iter().map(|d| &d.2));
        if !self.doses.is_empty() {
            let _ = writeln!(
                s,
                "False-negative dose (share of a query's softmax mass on documents known to \
                 answer it, before masking), mean over this process's steps: {:.4} (known \
                 {:.4}, judged {:.4}).\n",
                dose.any.mean, dose.known.mean, dose.judged.mean
            );
        }
        s += "### Training Hyperparameters\n\n| setting | value |\n|---|---|\n";
        let rows: Vec<(&str, String)> = vec![
            ("objective", format!("{:?}", c.objective)),
            ("batch_size", c.batch_size.to_string()),
            (
                "mini_batch_size (GradCache)",
                c.mini_batch_size.map_or("none".into(), |m| m.to_string()),
            ),
            ("learning_rate", c.lr.to_string()),
            ("warmup_ratio", c.warmup_ratio.to_string()),
            ("lr_scheduler", format!("{:?}", c.schedule)),
            ("weight_decay", c.weight_decay.to_string()),
            (
                "max_grad_norm",
                c.max_grad_norm.map_or("none".into(), |m| m.to_string()),
            ),
            ("epochs", c.epochs.to_string()),
            (
                "steps",
                format!("{} of {}", self.state.step, self.state.total_steps),
            ),
            ("batching", format!("{:?}", c.batching)),
            ("seed", c.seed.to_string()),
            ("dtype", format!("{:?}", self.encoder.dtype())),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        if !self.evals.is_empty() {
            s += "\n## Evaluation\n\n";
            let dev = self.card.dev_data.as_deref().unwrap_or("dev");
            let _ = writeln!(
                s,
                "nDCG@10 on {dev} while training:\n\n| step | nDCG@10 |\n|---:|---:|"
            );
            for (step, m) in &self.evals {
                let mark = if self.state.best.is_some_and(|(_, b)| b == *step) {
                    " (best)"
                } else {
                    ""
                };
                let _ = writeln!(s, "| {step} | {m:.5}{mark} |");
            }
        }
        s += "\n## Framework Versions\n\n";
        let _ = writeln!(s, "- sieve: {}", env!("CARGO_PKG_VERSION"));
        s += "- candle (training), exported for sentence-transformers\n";
        if let Some(cmd) = &self.card.command {
            let _ = writeln!(s, "\n## Reproduce\n\n```bash\n{cmd}\n```");
        }
        s
    }
}

/// How many items hold any, and how many in all.
fn count(lens: impl Iterator<Item = usize>) -> (usize, usize) {
    lens.fold((0, 0), |(with, all), n| (with + (n > 0) as usize, all + n))
}

fn policy_name(p: FalseNegativePolicy) -> &'static str {
    match p {
        FalseNegativePolicy::Mask => "mask",
        FalseNegativePolicy::Positive => "positive",
        FalseNegativePolicy::None => "none",
    }
}
