//! The judge against a small fault-injecting HTTP server: the failures a real server
//! will not produce on demand (500s, 429 with Retry-After, hangs, truncated and
//! non-JSON bodies, dropped connections, refused keys).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sieve_judge::cache::VerdictCache;
use sieve_judge::client::{Client, ClientConfig, Secret};
use sieve_judge::prompt::Template;
use sieve_judge::retry::RetryPolicy;
use sieve_judge::{judge_jobs, Budget, Job, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
enum Reply {
    /// 200 with P(yes) = p in the logprobs.
    Yes(f64),
    Status(u16, Option<u64>),
    Hang,
    Truncated,
    Drop,
    NotJson,
}

struct Server {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

/// Serves `script` in order, then `fallback` forever.
async fn serve(script: Vec<Reply>, fallback: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let seen = seen.clone();
            let fallback = fallback.clone();
            tokio::spawn(async move {
                loop {
                    // Read one request: headers, then Content-Length bytes.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                    seen.lock().unwrap().push(format!("{head}{body}"));
                    let reply = script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or(fallback.clone());
                    let send = |status: &str, extra: &str, body: &str| {
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                            body.len()
                        )
                    };
                    let out = match reply {
                        Reply::Yes(p) => {
                            let b = serde_json::json!({
                                "choices": [{"message": {"content": "yes"},
                                    "logprobs": {"content": [{"token": "yes", "logprob": p.ln(),
                                        "top_logprobs": [{"token": "yes", "logprob": p.ln()},
                                                         {"token": "no", "logprob": (1.0 - p).ln()}]}]}}],
                                "usage": {"prompt_tokens": 100, "completion_tokens": 1}
                            });
                            send("200 OK", "", &b.to_string())
                        }
                        Reply::Status(code, ra) => {
                            let extra = ra
                                .map(|s| format!("Retry-After: {s}\r\n"))
                                .unwrap_or_default();
                            send(&format!("{code} Oops"), &extra, "{\"error\": \"injected\"}")
                        }
                        Reply::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        Reply::Truncated => {
                            let _ = sock
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"choices\": [")
                                .await;
                            return;
                        }
                        Reply::Drop => return,
                        Reply::NotJson => send("200 OK", "", "<html>gateway says hi</html>"),
                    };
                    if sock.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server { url, requests }
}

fn config(urls: Vec<String>) -> ClientConfig {
    ClientConfig {
        endpoints: urls,
        model: "test-judge".into(),
        api_key: Some(Secret::new("sk-very-secret-key".into())),
        timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            max_attempts: 7,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
        },
        ..Default::default()
    }
}

fn jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| Job {
            query: format!("query {i}"),
            document: format!("document {i}"),
        })
        .collect()
}

async fn run(
    client: Arc<Client>,
    jobs: &[Job],
    cache: &mut VerdictCache,
    budget: Budget,
) -> sieve_judge::Result<(Vec<Outcome>, sieve_judge::RunReport)> {
    judge_jobs(
        client,
        &Template::default_template(),
        jobs,
        cache,
        sieve_judge::RunOptions {
            max_doc_tokens: 512,
            concurrency: 4,
            budget,
        },
        &|_| {},
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_every_fault_and_honours_retry_after() {
    let server = serve(
        vec![
            Reply::Status(500, None),
            Reply::Status(429, Some(1)),
            Reply::Truncated,
            Reply::Drop,
            Reply::NotJson,
            Reply::Hang,
        ],
        Reply::Yes(0.8),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cache = VerdictCache::open(&dir.path().join("v.log")).unwrap();
    let client = Arc::new(Client::new(config(vec![server.url.clone()])).unwrap());
    let t = Instant::now();
    let (out, report) = run(client, &jobs(1), &mut cache, Budget::default())
        .await
        .unwrap();
    let Outcome::Judged(e) = &out[0] else {
        panic!("{out:?}");
    };
    assert!((e.p_relevant - 0.8).abs() < 1e-5);
    assert_eq!(report.retries, 6);
    assert_eq!(server.requests.lock().unwrap().len(), 7);
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    // The request is what the judge needs: one token, logprobs, temperature 0, the key.
    let req = server.requests.lock().unwrap()[0].clone();
    assert!(
        req.contains("\"max_tokens\":1") && req.contains("\"logprobs\":true"),
        "{req}"
    );
    assert!(req.contains("\"temperature\":0"));
    assert!(req
        .to_ascii_lowercase()
        .contains("authorization: bearer sk-very-secret-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_that_keeps_failing_is_an_error_never_irrelevant_and_is_retried_next_run() {
    let down = serve(vec![], Reply::Status(503, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.log");
    let mut cache = VerdictCache::open(&path).unwrap();
    let mut cfg = config(vec![down.url.clone()]);
    cfg.retry.max_attempts = 3;
    let (out, report) = run(
        Arc::new(Client::new(cfg).unwrap()),
        &jobs(2),
        &mut cache,
        Budget::default(),
    )
    .await
    .unwrap();
    assert!(
        out.iter()
            .all(|o| matches!(o, Outcome::Failed(m) if m.contains("503"))),
        "{out:?}"
    );
    assert_eq!(report.failed, 2);
    assert!(cache.is_empty(), "failures are not cached");
    drop(cache);

    // Next run, server healthy: both judged, then a third run pays nothing.
    let up = serve(vec![], Reply::Yes(0.3)).await;
    let mut cache = VerdictCache::open(&path).unwrap();
    let client = Arc::new(Client::new(config(vec![up.url.clone()])).unwrap());
    let (out, _) = run(client, &jobs(2), &mut cache, Budget::default())
        .await
        .unwrap();
    assert!(out.iter().all(|o| matches!(o, Outcome::Judged(_))));
    let before = up.requests.lock().unwrap().len();
    let client = Arc::new(Client::new(config(vec![up.url.clone()])).unwrap());
    let (_, report) = run(client, &jobs(2), &mut cache, Budget::default())
        .await
        .unwrap();
    assert_eq!(report.from_cache, 2);
    assert_eq!(
        up.requests.lock().unwrap().len(),
        before,
        "cached pairs cost nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_key_stops_the_run_without_printing_the_key() {
    let server = serve(vec![], Reply::Status(401, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cache = VerdictCache::open(&dir.path().join("v.log")).unwrap();
    let client = Arc::new(Client::new(config(vec![server.url.clone()])).unwrap());
    let err = run(client.clone(), &jobs(3), &mut cache, Budget::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains("API key"), "{err}");
    assert!(!err.contains("sk-very-secret-key"));
    assert!(!format!("{:?}", config(vec![])).contains("sk-very-secret-key"));
    let log = std::fs::read_to_string(dir.path().join("v.log")).unwrap();
    assert!(!log.contains("sk-very"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_rested_and_the_others_carry_the_load() {
    let bad = serve(vec![], Reply::Status(500, None)).await;
    let good = serve(vec![], Reply::Yes(0.9)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cache = VerdictCache::open(&dir.path().join("v.log")).unwrap();
    let client = Arc::new(Client::new(config(vec![bad.url.clone(), good.url.clone()])).unwrap());
    let (out, _) = run(client, &jobs(40), &mut cache, Budget::default())
        .await
        .unwrap();
    assert!(out.iter().all(|o| matches!(o, Outcome::Judged(_))));
    let (b, g) = (
        bad.requests.lock().unwrap().len(),
        good.requests.lock().unwrap().len(),
    );
    assert!(g >= 40);
    // After five straight failures the bad endpoint rests for 10 s: it sees only a
    // handful of the 40+ requests.
    assert!(b <= 8, "bad endpoint got {b} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_stops_cleanly_and_the_rest_is_judged_later() {
    let server = serve(vec![], Reply::Yes(0.6)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.log");
    let mut cache = VerdictCache::open(&path).unwrap();
    let client = Arc::new(Client::new(config(vec![server.url.clone()])).unwrap());
    let budget = Budget {
        max_tokens: Some(350), // 101 tokens a request: the fourth crosses it
        ..Default::default()
    };
    let all = jobs(10);
    let (out, report) = run(client, &all, &mut cache, budget).await.unwrap();
    let judged = out
        .iter()
        .filter(|o| matches!(o, Outcome::Judged(_)))
        .count();
    assert!(report.stopped_by_budget);
    // Requests already in flight when the limit is reached still land.
    assert!((4..=7).contains(&judged), "{judged} judged");
    assert_eq!(report.skipped, 10 - judged);
    assert_eq!(cache.len(), judged);
    let client = Arc::new(Client::new(config(vec![server.url.clone()])).unwrap());
    let (out, report) = run(client, &all, &mut cache, Budget::default())
        .await
        .unwrap();
    assert_eq!(report.from_cache, judged);
    assert!(out.iter().all(|o| matches!(o, Outcome::Judged(_))));
    let b = Budget {
        price_prompt: 0.15,
        price_completion: 0.6,
        ..Default::default()
    };
    assert!((b.cost(1_000_000, 1_000_000) - 0.75).abs() < 1e-12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_stops_the_run_instead_of_marking_everything_error() {
    // A port nobody listens on: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cache = VerdictCache::open(&dir.path().join("v.log")).unwrap();
    let mut cfg = config(vec![format!("http://127.0.0.1:{port}/v1")]);
    cfg.retry.max_attempts = 2;
    let t = Instant::now();
    let err = run(
        Arc::new(Client::new(cfg).unwrap()),
        &jobs(500),
        &mut cache,
        Budget::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("is the server up"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(cache.is_empty());
}
