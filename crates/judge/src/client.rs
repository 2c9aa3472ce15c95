//! Requests to OpenAI-compatible servers: endpoint choice, rate limits, retries.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::prompt::Prompt;
use crate::retry::{parse_retry_after, Failure, RetryPolicy};
use crate::score::{parse_response, Verdict};
use crate::{Error, Result};

/// Consecutive failures after which an endpoint is rested.
const FAILURES_BEFORE_REST: u32 = 5;
/// First rest of a failing endpoint; doubles while it keeps failing.
const FIRST_REST: Duration = Duration::from_secs(10);
const LONGEST_REST: Duration = Duration::from_secs(300);

/// An API key that never prints.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced: a server or proxy that echoes
    /// the Authorization header in an error body must not make sieve print the key.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

/// `text` without the key, when there is one.
fn redacted(key: Option<&Secret>, text: &str) -> String {
    match key {
        Some(k) => k.redact(text),
        None => text.to_string(),
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach the judge model.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URLs (`http://host:port/v1`); `/chat/completions` is appended.
    pub endpoints: Vec<String>,
    pub model: String,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Ask for `{"relevant": bool}` through a JSON schema instead of one token.
    pub json_schema: bool,
    /// `top_logprobs` requested (OpenAI allows up to 20).
    pub top_logprobs: u32,
    pub requests_per_second: Option<f64>,
    pub tokens_per_minute: Option<f64>,
    /// Server-specific fields merged into every request body (`--extra-body`), checked
    /// by [`crate::settings::parse_extra_body`] not to touch the fields sieve sets.
    pub extra_body: serde_json::Map<String, serde_json::Value>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:8089/v1".into()],
            model: "judge".into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            json_schema: false,
            top_logprobs: 10,
            requests_per_second: None,
            tokens_per_minute: None,
            extra_body: serde_json::Map::new(),
        }
    }
}

struct Endpoint {
    url: String,
    failures: AtomicU32,
    rest_until: Mutex<Option<Instant>>,
    rests: AtomicU32,
}

/// Spaces requests to a rate: each reservation gets the next free slot.
struct Pacer {
    next: Mutex<Instant>,
    interval: Duration,
}

impl Pacer {
    fn new(per_second: f64) -> Self {
        Self {
            next: Mutex::new(Instant::now()),
            interval: Duration::from_secs_f64(1.0 / per_second.max(1e-9)),
        }
    }
    /// Reserves `units` slots; returns when the first may start.
    fn reserve(&self, units: f64) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let slot = (*next).max(now);
        *next = slot + self.interval.mul_f64(units);
        slot
    }
}

/// Usage totals, updated as responses arrive.
#[derive(Debug, Default)]
pub struct Usage {
    pub requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens the servers served from their prompt caches.
    pub cached_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub retries: AtomicU64,
}

/// A judge client over one or more endpoints.
pub struct Client {
    http: reqwest::Client,
    cfg: ClientConfig,
    endpoints: Vec<Endpoint>,
    turn: AtomicUsize,
    requests: Option<Pacer>,
    tokens: Option<Pacer>,
    pub usage: Usage,
}

/// The workspace's generator seeded from the clock, for jitter only.
fn unit_random() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut s = STATE.load(Ordering::Relaxed);
    if s == 0 {
        s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    let mut rng = sieve_datasets::rng::SplitMix64(s);
    let u = rng.unit();
    STATE.store(rng.0, Ordering::Relaxed);
    u
}

/// The model ids an OpenAI-compatible server lists at `{base}/models`.
///
/// Used when no judge model is named: the name is part of every verdict's cache key,
/// so a placeholder such as "judge" would let a different model, started later on
/// the same port, reuse the old model's verdicts.
pub async fn served_models(
    base: &str,
    api_key: Option<&Secret>,
    timeout: Duration,
) -> Result<Vec<String>> {
    let url = format!("{}/models", base.trim_end_matches('/'));
    let http = http_client(timeout)?;
    let mut req = http.get(&url);
    if let Some(key) = api_key {
        req = req.bearer_auth(key.expose());
    }
    let fail = |m: String| Error::Config(format!("asking {url} which model it serves: {m}"));
    let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let text = redacted(
        api_key,
        &resp.text().await.map_err(|e| fail(e.to_string()))?,
    );
    if !status.is_success() {
        let mut snippet: String = text.chars().take(200).collect();
        if snippet.len() < text.len() {
            snippet.push('…');
        }
        return Err(fail(format!("HTTP {status}: {snippet}")));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
    Ok(v["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// An HTTP client whose TLS runs on rustls with the *ring* provider.
///
/// reqwest's default provider is aws-lc-rs, whose C sources (cmake) add minutes to a
/// clean build on a small machine; ring is in the tree anyway (hf-hub's ureq), and
/// judge traffic needs no more than TLS 1.2/1.3 with the standard suites.
fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    // A provider installed earlier (by us or by the embedding program) is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Config("no endpoint".into()));
        }
        let http = http_client(cfg.timeout)?;
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|u| Endpoint {
                url: format!("{}/chat/completions", u.trim_end_matches('/')),
                failures: AtomicU32::new(0),
                rest_until: Mutex::new(None),
                rests: AtomicU32::new(0),
            })
            .collect();
        Ok(Self {
            http,
            requests: cfg.requests_per_second.map(Pacer::new),
            tokens: cfg.tokens_per_minute.map(|t| Pacer::new(t / 60.0)),
            cfg,
            endpoints,
            turn: AtomicUsize::new(0),
            usage: Usage::default(),
        })
    }

    /// The model name sent with every request (part of each verdict's key).
    pub fn model(&self) -> &str {
        &self.cfg.model
    }

    /// The next endpoint in turn that is not resting. When every endpoint rests, the
    /// one that wakes first is used at once: resting only moves load to healthy
    /// endpoints, and the retry backoff already paces requests to a lone one.
    fn pick(&self) -> &Endpoint {
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut soonest: Option<(Instant, usize)> = None;
        for i in 0..self.endpoints.len() {
            let idx = (start + i) % self.endpoints.len();
            let until = *self.endpoints[idx]
                .rest_until
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > now => {
                    if soonest.is_none_or(|(s, _)| t < s) {
                        soonest = Some((t, idx));
                    }
                }
                _ => return &self.endpoints[idx],
            }
        }
        &self.endpoints[soonest.map_or(0, |(_, i)| i)]
    }

    fn record(&self, ep: &Endpoint, ok: bool) {
        if ok {
            ep.failures.store(0, Ordering::Relaxed);
            ep.rests.store(0, Ordering::Relaxed);
            return;
        }
        let n = ep.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= FAILURES_BEFORE_REST {
            let rests = ep.rests.fetch_add(1, Ordering::Relaxed);
            let rest = FIRST_REST
                .saturating_mul(1u32.checked_shl(rests.min(16)).unwrap_or(u32::MAX))
                .min(LONGEST_REST);
            *ep.rest_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + rest);
            ep.failures.store(0, Ordering::Relaxed);
            tracing::warn!(endpoint = %ep.url, "endpoint keeps failing; resting it for {rest:?}");
        }
    }

    /// The chat-completions request body for `prompt`.
    pub fn request_body(&self, prompt: &Prompt) -> serde_json::Value {
        let mut messages = Vec::new();
        if !prompt.system.is_empty() {
            messages.push(serde_json::json!({"role": "system", "content": prompt.system}));
        }
        messages.push(serde_json::json!({"role": "user", "content": prompt.user}));
        let mut body = serde_json::json!({
            "model": self.cfg.model,
            "messages": messages,
            "temperature": 0,
        });
        if self.cfg.json_schema {
            body["max_tokens"] = 16.into();
            body["response_format"] = serde_json::json!({
                "type": "json_schema",
                "json_schema": {"name": "verdict", "strict": true, "schema": {
                    "type": "object",
                    "properties": {"relevant": {"type": "boolean"}},
                    "required": ["relevant"],
                    "additionalProperties": false}}
            });
        } else {
            body["max_tokens"] = 1.into();
            body["logprobs"] = true.into();
            body["top_logprobs"] = self.cfg.top_logprobs.into();
        }
        for (k, v) in &self.cfg.extra_body {
            body[k] = v.clone();
        }
        body
    }

    async fn attempt(&self, ep: &Endpoint, body: &serde_json::Value) -> Result<Verdict, Failure> {
        let mut req = self.http.post(&ep.url).json(body);
        if let Some(key) = &self.cfg.api_key {
            req = req.bearer_auth(key.expose());
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                Failure::Timeout
            } else {
                // reqwest's message names the URL, never the headers.
                Failure::Connection(e.to_string())
            }
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = resp.text().await.map_err(|e| {
            if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::BadBody(format!("reading the body: {e}"))
            }
        })?;
        // Nothing a server sends back reaches a message with the key in it.
        let text = redacted(self.cfg.api_key.as_ref(), &text);
        if !status.is_success() {
            return Err(Failure::Status {
                code: status.as_u16(),
                retry_after,
                body: text,
            });
        }
        parse_response(&text, self.cfg.json_schema).map_err(|b| Failure::BadBody(b.0))
    }

    /// Judges one prompt, retrying per the policy. `Ok(Err(failure))` is a pair that
    /// failed every attempt (stored as `error`, retried next run); `Err` stops the run.
    pub async fn judge(&self, prompt: &Prompt) -> Result<std::result::Result<Verdict, Failure>> {
        let body = self.request_body(prompt);
        let estimate = (prompt.system.len() + prompt.user.len()) as f64
            / crate::prompt::CHARS_PER_TOKEN as f64
            + 1.0;
        let mut last = Failure::Timeout;
        for attempt in 0..self.cfg.retry.max_attempts.max(1) {
            if let Some(p) = &self.requests {
                tokio::time::sleep_until(p.reserve(1.0).into()).await;
            }
            if let Some(p) = &self.tokens {
                tokio::time::sleep_until(p.reserve(estimate).into()).await;
            }
            let ep = self.pick();
            self.usage.requests.fetch_add(1, Ordering::Relaxed);
            match self.attempt(ep, &body).await {
                Ok(v) => {
                    self.record(ep, true);
                    self.usage
                        .prompt_tokens
                        .fetch_add(v.prompt_tokens, Ordering::Relaxed);
                    self.usage
                        .cached_tokens
                        .fetch_add(v.cached_tokens, Ordering::Relaxed);
                    self.usage
                        .completion_tokens
                        .fetch_add(v.completion_tokens, Ordering::Relaxed);
                    return Ok(Ok(v));
                }
                Err(f) if f.fatal() => {
                    return Err(Error::Unauthorized {
                        endpoint: ep.url.clone(),
                        detail: f.to_string(),
                    })
                }
                Err(f) => {
                    self.record(ep, false);
                    tracing::debug!(endpoint = %ep.url, attempt, "judge request failed: {f}");
                    if !f.retryable() {
                        return Ok(Err(f));
                    }
                    if attempt + 1 < self.cfg.retry.max_attempts {
                        self.usage.retries.fetch_add(1, Ordering::Relaxed);
                        let wait = self
                            .cfg
                            .retry
                            .delay(attempt, f.retry_after(), unit_random());
                        tokio::time::sleep(wait).await;
                    }
                    last = f;
                }
            }
        }
        Ok(Err(last))
    }
}
