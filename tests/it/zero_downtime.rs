//! Zero downtime: a bounded load generator sends requests through Caddy —
//! half on fresh connections, half on keep-alive connections — while ten
//! promote/rollback cycles run. It speaks HTTP/1.1 by hand so that no
//! retry can hide a failure: any non-2xx answer, connection error or
//! connection the server closes is counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::common::{structured, testbed, unique_project, HttpServer, FAULT_LOCK};
use super::lifecycle::{expect_served, image, through_caddy, Recorder};

/// Workers per connection kind.
const WORKERS_PER_KIND: usize = 3;
/// Pause between two requests of one worker (≈100 requests/s each).
const WORKER_PACE: Duration = Duration::from_millis(10);
/// Upper bound on requests, whatever happens.
const MAX_REQUESTS: u64 = 200_000;
/// Upper bound on the run, whatever happens.
const MAX_RUN: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    closed_by_server: AtomicU64,
    errors: Mutex<Vec<String>>,
    versions: Mutex<Vec<(Instant, String)>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        }
    }
}

/// Reads one HTTP/1.1 response: (status, body, server wants to close).
async fn read_response(
    r: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<(u16, String, bool)>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    let mut close = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(Some((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        close,
    )))
}

async fn worker(
    addr: String,
    host: String,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tally: Arc<Tally>,
) {
    let request =
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: codeb-zero-downtime\r\n\r\n");
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS {
        let started = Instant::now();
        if conn.is_none() {
            match TcpStream::connect(&addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(BufReader::new(s));
                }
                Err(e) => {
                    tally.fail(format!("connect: {e}"));
                    continue;
                }
            }
        }
        let c = conn.as_mut().unwrap();
        let outcome = async {
            c.get_mut().write_all(request.as_bytes()).await?;
            read_response(c).await
        }
        .await;
        match outcome {
            Ok(Some((status, body, close))) => {
                if (200..300).contains(&status) {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    let version = body.trim().to_string();
                    let mut v = tally.versions.lock().unwrap();
                    if v.last().is_none_or(|(_, last)| *last != version) {
                        v.push((Instant::now(), version));
                    }
                } else {
                    tally.fail(format!(
                        "HTTP {status}: {}",
                        body.chars().take(100).collect::<String>()
                    ));
                }
                if close && keep_alive {
                    tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                }
                if close || !keep_alive {
                    conn = None;
                }
            }
            Ok(None) => {
                // The server closed a connection we meant to reuse.
                tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                tally.fail("connection closed by the server".into());
                conn = None;
            }
            Err(e) => {
                tally.fail(format!("io: {e}"));
                conn = None;
            }
        }
        if let Some(rest) = WORKER_PACE.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_and_rollback_under_load_lose_nothing() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let transport = server.transport();
    use rmcp::ServiceExt;
    let client = Recorder::default()
        .serve(transport)
        .await
        .expect("initialize");
    let call = |tool: &'static str, args: serde_json::Value| {
        let client = &client;
        async move {
            super::lifecycle::call_with_progress(client, tool, args)
                .await
                .0
        }
    };
    let p = unique_project("zd");
    let domain = format!("{p}.codeb.test");
    structured(&call("project_create", json!({"project": p})).await);
    structured(
        &call(
            "deploy",
            json!({"project": p, "environment": "production", "image": image("v1"), "override_reason": "test: no staging in this test"}),
        )
        .await,
    );
    structured(
        &call(
            "promote",
            json!({"project": p, "environment": "production"}),
        )
        .await,
    );
    structured(
        &call(
            "deploy",
            json!({"project": p, "environment": "production", "image": image("v2"), "override_reason": "test: no staging in this test"}),
        )
        .await,
    );
    expect_served(&domain, "demo v1").await;

    let addr = testbed().status["caddy_http"].as_str().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let mut workers = Vec::new();
    for i in 0..WORKERS_PER_KIND * 2 {
        workers.push(tokio::spawn(worker(
            addr.clone(),
            domain.clone(),
            i % 2 == 0,
            stop.clone(),
            sent.clone(),
            tally.clone(),
        )));
    }
    // A hard stop, whatever the test does.
    let watchdog = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(MAX_RUN).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let started = Instant::now();
    let mut switches = 0;
    for cycle in 0..10 {
        for (tool, want) in [("promote", "demo v2"), ("rollback", "demo v1")] {
            let mut args = json!({"project": p, "environment": "production"});
            if tool == "rollback" {
                args["reason"] = json!(format!("cycle {cycle}"));
            }
            let r = call(tool, args).await;
            let v = structured(&r);
            assert!(v["switch_visible_ms"].is_u64(), "{v}");
            let (status, body, _) = through_caddy(&domain).await;
            assert_eq!(
                (status, body.trim()),
                (200, want),
                "after {tool} in cycle {cycle}"
            );
            switches += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    watchdog.abort();
    let elapsed = started.elapsed();
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let closed = tally.closed_by_server.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed.as_secs_f64();
    let changes = tally.versions.lock().unwrap().len();
    eprintln!(
        "zero downtime: {switches} switches in {:.1} s, {ok} ok, {failed} failed, {closed} closed by server, {rate:.0} req/s, {changes} version runs",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        failed,
        0,
        "failed requests: {:?}",
        tally.errors.lock().unwrap()
    );
    assert_eq!(closed, 0, "connections closed by the server");
    assert!(
        rate >= 200.0,
        "the generator must reach 200 requests/s to mean anything (got {rate:.0})"
    );
    assert!(
        changes >= switches,
        "the version seen changes at each switch ({changes} runs for {switches} switches)"
    );
    client.cancel().await.unwrap();
}
