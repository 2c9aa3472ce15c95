//! The judge stage's settings, defined once: the server and budget flags of `sieve
//! judge` (and of `judge calibrate` / `judge injection`) and a pipeline's `[judge]`
//! table are this type, with these defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{served_models, Client, ClientConfig, Secret};
use crate::prompt::{Template, DEFAULT_MAX_DOC_TOKENS};
use crate::retry::RetryPolicy;
use crate::{Budget, Error, Result};

/// The server a judge talks to when none is named (`scripts/llm-server.sh`'s port).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8089/v1";
/// Requests in flight at once by default.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Seconds before a request is abandoned by default.
pub const DEFAULT_TIMEOUT_S: f64 = 120.0;
/// P(relevant) at or above which a candidate is labeled relevant, when no calibrated
/// threshold is given. A small judge rarely reaches it: calibrate instead.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Attempts per pair by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;

/// How to reach and drive the judge model, and what a run may spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct JudgeSettings {
    /// Base URL of an OpenAI-compatible server (…/v1); repeat to spread the load over
    /// several servers (a failing one is rested and retried later).
    #[cfg_attr(feature = "clap", arg(long = "endpoint", default_value = DEFAULT_ENDPOINT))]
    pub endpoints: Vec<String>,

    /// Model name sent to the server, part of every cached verdict's key (default: the
    /// one model the first endpoint lists at /v1/models).
    #[cfg_attr(feature = "clap", arg(long))]
    pub judge_model: Option<String>,

    /// Environment variable holding the API key (the key itself is never printed or
    /// stored); unset variable = no Authorization header.
    #[cfg_attr(feature = "clap", arg(long, default_value = "OPENAI_API_KEY"))]
    pub api_key_env: String,

    /// Requests in flight at once.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_CONCURRENCY))]
    pub concurrency: usize,

    /// Requests per second, at most.
    #[cfg_attr(feature = "clap", arg(long))]
    pub requests_per_second: Option<f64>,

    /// Prompt tokens per minute, at most (estimated from text length).
    #[cfg_attr(feature = "clap", arg(long))]
    pub tokens_per_minute: Option<f64>,

    /// Seconds before a request is abandoned and retried.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_TIMEOUT_S))]
    pub timeout: f64,

    /// Attempts per pair (429, 5xx, timeouts, dropped connections and bad bodies are
    /// retried with exponential backoff and jitter, honouring Retry-After).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS))]
    pub max_attempts: u32,

    /// Prompt template: a built-in one (`default`, `document-first`) or a file with
    /// [system] and [user] sections and {query} / {document} placeholders. Repeat to
    /// fuse: each pair is asked once per template and P(relevant) is their mean, which
    /// steadies a small judge's wording-sensitive verdicts at the cost of one request
    /// per template (e.g. `--template default --template document-first`).
    #[cfg_attr(feature = "clap", arg(long = "template", value_name = "NAME|FILE"))]
    pub templates: Vec<String>,

    /// Documents are cut to about this many tokens (recorded as truncated).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_MAX_DOC_TOKENS))]
    pub max_doc_tokens: usize,

    /// Ask for {"relevant": bool} through a JSON schema instead of one yes/no token
    /// (for servers without logprobs; gives 0/1 scores).
    #[cfg_attr(feature = "clap", arg(long))]
    pub json_schema: bool,

    /// Stop after this many requests (everything judged so far is kept).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_requests: Option<u64>,

    /// Stop after this many tokens (prompt + completion).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_tokens: Option<u64>,

    /// Stop after this much money (needs the prices).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_cost: Option<f64>,

    /// Price per million prompt tokens.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub price_prompt: f64,

    /// Price per million completion tokens.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0.0))]
    pub price_completion: f64,

    /// Fail the run (a non-zero exit, after writing what was judged) when more than
    /// this share of the pairs failed every attempt: a judge that could not answer must
    /// never look like a result. The failed pairs are labeled `error` and retried by
    /// the next run.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_MAX_ERROR_SHARE))]
    pub max_error_share: f64,

    /// Accept verdicts read from the answer's text (P 0 or 1, when the server returns
    /// no logprobs) for calibration and calibrated masking; without it calibration
    /// refuses them, since no threshold can rank 0/1 scores (`--json-schema` implies it).
    #[cfg_attr(feature = "clap", arg(long))]
    pub allow_binary_scores: bool,

    /// Act on the verdicts of pairs whose document or query reads as an instruction
    /// to the judge ("answer yes", a fake chat turn, a note to the grader). By default
    /// such pairs are labeled `suspicious` and their verdict is never acted on by
    /// itself: neither masked nor used as a hard negative.
    #[cfg_attr(feature = "clap", arg(long))]
    pub allow_instructions: bool,

    /// A JSON object merged into every request body, for what a server takes beyond
    /// the OpenAI fields: llama.cpp's `cache_prompt` / `id_slot`, vLLM's `top_k`, or
    /// `{"chat_template_kwargs": {"enable_thinking": false}}` for a reasoning model
    /// that must answer in one token. The fields sieve sets itself (model, messages,
    /// temperature, max_tokens, logprobs, top_logprobs, response_format, stream, n) are
    /// refused.
    /// Part of every cached verdict's key: a changed request never reuses old verdicts.
    #[cfg_attr(feature = "clap", arg(long, value_name = "JSON"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_body: Option<String>,
}

/// Request fields sieve sets itself: an extra body may not replace them, since the
/// verdict's parsing and the cache's meaning depend on them.
pub const RESERVED_BODY_FIELDS: [&str; 11] = [
    "model",
    "messages",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "response_format",
    "stream",
    "stream_options",
    "n",
];

/// `value` as JSON text with every object's keys sorted, at any depth: the same
/// fields give the same text however they were written.
fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::from(k.as_str()),
                        canonical_json(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// Parses `--extra-body`: a JSON object none of whose keys is in
/// [`RESERVED_BODY_FIELDS`].
pub fn parse_extra_body(text: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    let bad = |m: String| Error::Config(format!("extra_body: {m}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(bad(format!("must be a JSON object, got {value}")));
    };
    if let Some(k) = map
        .keys()
        .find(|k| RESERVED_BODY_FIELDS.contains(&k.as_str()))
    {
        return Err(bad(format!(
            "\"{k}\" is set by sieve and may not be overridden (reserved: {})",
            RESERVED_BODY_FIELDS.join(", ")
        )));
    }
    Ok(map)
}

/// A labelling threshold is a probability: 0 < t ≤ 1 (0 would call everything
/// relevant; 2, -1 and NaN were once accepted).
pub fn check_threshold(t: f32) -> Result<()> {
    if t > 0.0 && t <= 1.0 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "threshold must be a probability in (0, 1], got {t}"
        )))
    }
}

/// Share of failed pairs above which a judge run fails by default.
pub const DEFAULT_MAX_ERROR_SHARE: f64 = 0.1;

impl Default for JudgeSettings {
    fn default() -> Self {
        Self {
            endpoints: vec![DEFAULT_ENDPOINT.into()],
            judge_model: None,
            api_key_env: "OPENAI_API_KEY".into(),
            concurrency: DEFAULT_CONCURRENCY,
            requests_per_second: None,
            tokens_per_minute: None,
            timeout: DEFAULT_TIMEOUT_S,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            templates: Vec::new(),
            max_doc_tokens: DEFAULT_MAX_DOC_TOKENS,
            json_schema: false,
            max_requests: None,
            max_tokens: None,
            max_cost: None,
            price_prompt: 0.0,
            price_completion: 0.0,
            max_error_share: DEFAULT_MAX_ERROR_SHARE,
            allow_binary_scores: false,
            allow_instructions: false,
            extra_body: None,
        }
    }
}

impl JudgeSettings {
    /// A client for these settings; without `judge_model`, asks the first endpoint
    /// which one model it serves.
    pub fn client(&self) -> Result<Client> {
        self.validate()?;
        let api_key = std::env::var(&self.api_key_env)
            .ok()
            .filter(|k| !k.is_empty())
            .map(Secret::new);
        let model = match &self.judge_model {
            Some(m) => m.clone(),
            None => self.served_model(api_key.as_ref())?,
        };
        Client::new(ClientConfig {
            endpoints: self.endpoints.clone(),
            model,
            api_key,
            timeout: Duration::from_secs_f64(self.timeout),
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                ..Default::default()
            },
            json_schema: self.json_schema,
            requests_per_second: self.requests_per_second,
            tokens_per_minute: self.tokens_per_minute,
            extra_body: self.extra_body_map()?,
            ..Default::default()
        })
    }

    fn extra_body_map(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        self.extra_body
            .as_deref()
            .map_or_else(|| Ok(Default::default()), parse_extra_body)
    }

    /// Every value in range, checked before anything is sent (a pipeline checks them
    /// before its first stage): a bad value is an error, never quietly another one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        if self.endpoints.is_empty() {
            return bad("no endpoint".into());
        }
        if self.timeout <= 0.0 || !self.timeout.is_finite() {
            return bad(format!(
                "timeout must be a positive number of seconds, got {}",
                self.timeout
            ));
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1 (1: no retries)".into());
        }
        if !(0.0..=1.0).contains(&self.max_error_share) {
            return bad(format!(
                "max_error_share must be between 0 and 1, got {}",
                self.max_error_share
            ));
        }
        if self.max_doc_tokens == 0 {
            return bad("max_doc_tokens must be at least 1".into());
        }
        self.extra_body_map()?;
        for (name, v) in [
            ("requests_per_second", self.requests_per_second),
            ("tokens_per_minute", self.tokens_per_minute),
            ("max_cost", self.max_cost),
        ] {
            if let Some(v) = v.filter(|v| !(*v > 0.0 && v.is_finite())) {
                return bad(format!("{name} must be a positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("price_prompt", self.price_prompt),
            ("price_completion", self.price_completion),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!("{name} must be zero or more, got {v}"));
            }
        }
        Ok(())
    }

    /// The only model the first endpoint serves.
    fn served_model(&self, api_key: Option<&Secret>) -> Result<String> {
        let base = &self.endpoints[0];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("starting the HTTP runtime: {e}")))?;
        let models = rt.block_on(served_models(
            base,
            api_key,
            Duration::from_secs_f64(self.timeout.min(30.0)),
        ))?;
        match models.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::Config(format!(
                "{base}/models lists no model; name one with --judge-model"
            ))),
            many => Err(Error::Config(format!(
                "{base} serves {} models ({}); choose one with --judge-model",
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// The templates to ask, in order (the built-in default when none is given).
    /// The prompt templates; under `--extra-body` each one's hash also covers the
    /// extra fields (in their canonical, key-sorted form), so that verdicts asked with
    /// other request fields are cached apart. Without it the hashes are the
    /// templates' own, as before the option existed.
    pub fn templates(&self) -> Result<Vec<Template>> {
        let mut templates = if self.templates.is_empty() {
            vec![Template::default_template()]
        } else {
            self.templates
                .iter()
                .map(|t| Template::resolve(t))
                .collect::<Result<Vec<_>>>()?
        };
        let extra = self.extra_body_map()?;
        if !extra.is_empty() {
            let canonical = canonical_json(&serde_json::Value::Object(extra));
            for t in &mut templates {
                t.hash = crate::prompt::sha256_hex(&format!("{}\nextra_body:{canonical}", t.hash));
            }
        }
        Ok(templates)
    }

    pub fn run_options(&self) -> crate::RunOptions {
        crate::RunOptions {
            max_doc_tokens: self.max_doc_tokens,
            concurrency: self.concurrency,
            budget: self.budget(),
        }
    }

    pub fn budget(&self) -> Budget {
        Budget {
            max_requests: self.max_requests,
            max_tokens: self.max_tokens,
            max_cost: self.max_cost,
            price_prompt: self.price_prompt,
            price_completion: self.price_completion,
        }
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: JudgeSettings,
    }

    /// `sieve judge` with no server option and an empty `[judge]` table judge the same
    /// way (the pipeline once asked for 4 requests at a time and 256-token documents
    /// where the command line asked for 8 and 512).
    #[test]
    fn command_line_and_table_defaults_agree() {
        let cli = Cli::parse_from(["x"]).s;
        assert_eq!(cli, JudgeSettings::default());
        let table: JudgeSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(table, cli);
        let cli = Cli::parse_from([
            "x",
            "--endpoint",
            "http://a/v1",
            "--endpoint",
            "http://b/v1",
        ])
        .s;
        let table: JudgeSettings =
            serde_json::from_str(r#"{"endpoints": ["http://a/v1", "http://b/v1"]}"#).unwrap();
        assert_eq!(table, cli);
    }
}
