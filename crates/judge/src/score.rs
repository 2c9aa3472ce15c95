//! From a chat-completion response to P(relevant).
//!
//! With logprobs, P(yes) is renormalised over the yes and no tokens among the first
//! position's `top_logprobs` (any case, with or without a leading space: tokenisers
//! split " Yes" and "yes" differently), so mass on unrelated tokens does not count
//! against either answer. Servers that return no logprobs get the text parsed:
//! yes → 1, no → 0. Constrained JSON output (`{"relevant": true}`) is parsed the same
//! way.

use serde::Deserialize;

/// How a verdict was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Logprobs,
    Text,
    Json,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Logprobs => "logprobs",
            Method::Text => "text",
            Method::Json => "json",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Method::Logprobs, Method::Text, Method::Json]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// One parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub p_relevant: f32,
    pub method: Method,
    pub prompt_tokens: u64,
    /// Of `prompt_tokens`, how many the server served from its prompt cache
    /// (`usage.prompt_tokens_details.cached_tokens`, as OpenAI, llama.cpp and vLLM
    /// report it; 0 when a server does not say).
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    logprobs: Option<Logprobs>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Logprobs {
    #[serde(default)]
    content: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Deserialize)]
struct TokenLogprob {
    token: String,
    logprob: f64,
    #[serde(default)]
    top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Deserialize)]
struct TopLogprob {
    token: String,
    logprob: f64,
}

#[derive(Debug, Deserialize, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Deserialize, Default)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// yes / no / neither for one token or word.
fn polarity(token: &str) -> Option<bool> {
    let t = token
        .trim()
        .trim_matches(|c: char| c.is_ascii_punctuation())
        .to_ascii_lowercase();
    match t.as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// Why a body could not be read as a verdict (retried: servers do send truncated
/// or garbled bodies under load).
#[derive(Debug, Clone, PartialEq)]
pub struct BadBody(pub String);

/// Parses a response body. `json_mode` expects `{"relevant": bool}` as content.
pub fn parse_response(body: &str, json_mode: bool) -> Result<Verdict, BadBody> {
    let r: Response =
        serde_json::from_str(body).map_err(|e| BadBody(format!("not a chat completion: {e}")))?;
    let usage = r.usage.unwrap_or_default();
    let choice = r
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| BadBody("no choices in the response".into()))?;
    let verdict = |p: f32, method| Verdict {
        p_relevant: p,
        method,
        prompt_tokens: usage.prompt_tokens,
        cached_tokens: usage
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(usage.prompt_tokens),
        completion_tokens: usage.completion_tokens,
    };
    let text = choice.message.and_then(|m| m.content).unwrap_or_default();
    if json_mode {
        #[derive(Deserialize)]
        struct Answer {
            relevant: bool,
        }
        let a: Answer = serde_json::from_str(text.trim()).map_err(|e| {
            BadBody(format!(
                "expected {{\"relevant\": bool}}, got {text:?}: {e}"
            ))
        })?;
        return Ok(verdict(if a.relevant { 1.0 } else { 0.0 }, Method::Json));
    }
    if let Some(first) = choice
        .logprobs
        .and_then(|l| l.content)
        .and_then(|c| c.into_iter().next())
    {
        let (mut yes, mut no) = (0f64, 0f64);
        let mut add = |token: &str, lp: f64| match polarity(token) {
            Some(true) => yes += lp.exp(),
            Some(false) => no += lp.exp(),
            None => {}
        };
        if first.top_logprobs.is_empty() {
            add(&first.token, first.logprob);
        }
        for t in &first.top_logprobs {
            add(&t.token, t.logprob);
        }
        if yes + no > 0.0 {
            return Ok(verdict((yes / (yes + no)) as f32, Method::Logprobs));
        }
    }
    let word = text.split_whitespace().next().unwrap_or("");
    match polarity(word) {
        Some(true) => Ok(verdict(1.0, Method::Text)),
        Some(false) => Ok(verdict(0.0, Method::Text)),
        None => Err(BadBody(format!(
            "the answer {text:?} is neither yes nor no and no yes/no token has a logprob"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(content: &str, top: &[(&str, f64)]) -> String {
        let top: Vec<serde_json::Value> = top
            .iter()
            .map(|(t, lp)| serde_json::json!({"token": t, "logprob": lp}))
            .collect();
        serde_json::json!({
            "choices": [{"message": {"role": "assistant", "content": content},
                         "logprobs": {"content": [{"token": content, "logprob": -0.1, "top_logprobs": top}]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 1, "total_tokens": 121}
        })
        .to_string()
    }

    #[test]
    fn renormalises_over_yes_and_no_variants() {
        let b = body(
            "Yes",
            &[
                ("Yes", (0.5f64).ln()),
                (" yes", (0.1f64).ln()),
                ("No", (0.2f64).ln()),
                ("Maybe", (0.2f64).ln()),
            ],
        );
        let v = parse_response(&b, false).unwrap();
        assert_eq!(v.method, Method::Logprobs);
        assert!((v.p_relevant - 0.75).abs() < 1e-6, "{v:?}");
        assert_eq!((v.prompt_tokens, v.completion_tokens), (120, 1));
        assert_eq!(
            v.cached_tokens, 0,
            "no prompt_tokens_details: nothing cached"
        );
        let cached = b.replace(
            r#""total_tokens":121"#,
            r#""total_tokens":121,"prompt_tokens_details":{"cached_tokens":96}"#,
        );
        assert_ne!(cached, b);
        assert_eq!(parse_response(&cached, false).unwrap().cached_tokens, 96);
    }

    #[test]
    fn falls_back_to_text_and_json() {
        let no_lp = serde_json::json!({"choices": [{"message": {"content": " no."}}]}).to_string();
        let v = parse_response(&no_lp, false).unwrap();
        assert_eq!((v.p_relevant, v.method), (0.0, Method::Text));
        // logprobs without any yes/no token: the text decides.
        let v = parse_response(&body("yes", &[("Sure", -0.1)]), false).unwrap();
        assert_eq!((v.p_relevant, v.method), (1.0, Method::Text));
        let json =
            serde_json::json!({"choices": [{"message": {"content": "{\"relevant\": true}"}}]})
                .to_string();
        let v = parse_response(&json, true).unwrap();
        assert_eq!((v.p_relevant, v.method), (1.0, Method::Json));
    }

    #[test]
    fn bad_bodies_are_errors_not_verdicts() {
        for b in [
            "",
            "{\"choices\": [",
            "<html>502 Bad Gateway</html>",
            "{\"choices\": []}",
            &serde_json::json!({"choices": [{"message": {"content": "perhaps"}}]}).to_string(),
        ] {
            assert!(parse_response(b, false).is_err(), "{b:?}");
        }
        let json = serde_json::json!({"choices": [{"message": {"content": "yes"}}]}).to_string();
        assert!(parse_response(&json, true).is_err());
    }
}
