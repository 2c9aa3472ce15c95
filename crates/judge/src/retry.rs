//! When to retry a request and how long to wait.
//!
//! Retried: 429, 408, every 5xx, timeouts, dropped connections and bodies that are
//! not a chat completion (truncated or garbled under load). Not retried: other 4xx
//! (the request itself is wrong). The wait is exponential with full jitter (AWS's
//! recommendation, which keeps many clients from retrying in lockstep), never
//! shorter than the server's `Retry-After`.

use std::time::{Duration, SystemTime};

/// Retry limits, with defaults suited to a shared inference server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per pair, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }
}

/// What went wrong with one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Status {
        code: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    Timeout,
    Connection(String),
    BadBody(String),
}

impl Failure {
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Status { code, .. } => *code == 429 || *code == 408 || *code >= 500,
            _ => true,
        }
    }

    /// Authentication and authorisation failures stop the whole run: every other
    /// request would fail the same way.
    pub fn fatal(&self) -> bool {
        matches!(
            self,
            Failure::Status {
                code: 401 | 403,
                ..
            }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { code, body, .. } => {
                let snippet: String = body.chars().take(200).collect();
                write!(f, "HTTP {code}: {snippet}")
            }
            Failure::Timeout => write!(f, "timed out"),
            Failure::Connection(e) => write!(f, "connection failed: {e}"),
            Failure::BadBody(e) => write!(f, "unreadable response: {e}"),
        }
    }
}

/// The longest a server's `Retry-After` is honoured for. A server (or a proxy in front
/// of it) that asks for hours or days, or sends a date far in the future, would
/// otherwise stall the run with nothing printed; past this the judge waits this long
/// and tries again, which a server that is really down answers with another error.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 0): a uniform
    /// draw from [0, min(cap, base·2^attempt)] using `unit` ∈ [0, 1), and at least
    /// `retry_after` (itself at most [`MAX_RETRY_AFTER`]).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
            .min(self.cap);
        let jittered = exp.mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => ra.min(MAX_RETRY_AFTER).max(jittered),
            None => jittered,
        }
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110); a date in the past is zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let s = |code| Failure::Status {
            code,
            retry_after: None,
            body: String::new(),
        };
        for code in [429, 408, 500, 502, 503, 504] {
            assert!(s(code).retryable(), "{code}");
        }
        for code in [400, 404, 422] {
            assert!(!s(code).retryable(), "{code}");
        }
        assert!(s(401).fatal() && s(403).fatal() && !s(500).fatal());
        assert!(Failure::Timeout.retryable());
        assert!(Failure::BadBody("x".into()).retryable());
    }

    #[test]
    fn backoff_is_exponential_capped_jittered_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(p.delay(0, None, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(10, None, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(400));
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7)), 0.3),
            Duration::from_secs(7)
        );
        assert_eq!(p.delay(40, None, 1.0), Duration::from_secs(1));
        // A server asking for a day, or for u64::MAX seconds, gets the bound.
        for ask in [86_400, u64::MAX] {
            assert_eq!(
                p.delay(0, Some(Duration::from_secs(ask)), 0.3),
                MAX_RETRY_AFTER
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(" 12 ", now),
            Some(Duration::from_secs(12))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
