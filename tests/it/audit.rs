//! The audit log (DESIGN §6): every call appears once in `audit_query` with
//! its tool, outcome and client, over HTTP and stdio; secrets passed in
//! arguments never reach the table; rows survive a SIGTERM; pagination and
//! filters; the writer on a real database and without one.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
};
use rmcp::service::RunningService;
use rmcp::RoleClient;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

type Client = RunningService<RoleClient, ClientConfig>;

const CLIENT_NAME: &str = "audit-test-client";
const CLIENT_VERSION: &str = "9.8.7";

fn client_info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new(CLIENT_NAME, CLIENT_VERSION),
    )
}

async fn http_client(server: &HttpServer) -> Client {
    use rmcp::ServiceExt;
    let transport = server.transport();
    client_info()
        .serve(transport)
        .await
        .expect("http initialize")
}

async fn named_stdio_client(env: &[(&str, &str)]) -> Client {
    use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
    use rmcp::ServiceExt;
    let config = testbed().config.clone();
    let transport =
        TokioChildProcess::new(tokio::process::Command::new(codeb_bin()).configure(|c| {
            c.arg("--config")
                .arg(&config)
                .arg("serve")
                .env("CODEB_LOG", "warn");
            for (k, v) in env {
                c.env(k, v);
            }
        }))
        .expect("spawn codeb serve");
    client_info()
        .serve(transport)
        .await
        .expect("stdio initialize")
}

fn params(tool: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    CallToolRequestParams::new(tool.to_string()).with_arguments(map)
}

async fn call_ok(client: &Client, tool: &str, args: Value) -> CallToolResult {
    client
        .call_tool(params(tool, args))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool} failed at the protocol level: {e}"))
}

/// Calls `tool` expecting a JSON-RPC error (e.g. an unknown tool).
async fn call_protocol_error(client: &Client, tool: &str, args: Value) {
    let r = client.call_tool(params(tool, args)).await;
    assert!(r.is_err(), "{tool}: expected a protocol error, got {r:?}");
}

/// Every audit entry matching `args` (a filter for audit_query), all pages,
/// without audit_query's own entries unless `args` asks for that tool.
async fn audit_entries(client: &Client, args: Value) -> Vec<Value> {
    let own = args["tool"] == json!("audit_query");
    let mut all = audit_entries_all(client, args).await;
    if !own {
        all.retain(|e| e["tool"] != json!("audit_query"));
    }
    all
}

async fn audit_entries_all(client: &Client, args: Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut a = args.clone();
        a["limit"] = json!(100);
        if let Some(c) = &cursor {
            a["cursor"] = json!(c);
        }
        let r = call_ok(client, "audit_query", a).await;
        let v = structured(&r).clone();
        out.extend(v["entries"].as_array().expect("entries").iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Audit rows of `project` straight from the table (audit_query's own
/// calls name the project too; they are left out).
async fn table_rows(pool: &sqlx::PgPool, project: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE project = $1 AND tool <> 'audit_query'",
    )
    .bind(project)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Table rows (any column) containing `needle`.
async fn rows_containing(pool: &sqlx::PgPool, needle: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_log t WHERE strpos(row_to_json(t)::text, $1) > 0",
    )
    .bind(needle)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The sequence both transports run: an ok call, a tool error, invalid
/// arguments, an unknown tool; each must appear exactly once.
async fn sequence_is_audited_once(client: &Client, transport: &str) {
    let p = unique_project("audit");
    let r = call_ok(client, "deployment_list", json!({"project": p})).await;
    structured(&r);
    let r = call_ok(
        client,
        "slot_status",
        json!({"project": p, "environment": "staging"}),
    )
    .await;
    assert!(error_text(&r).contains("not found"), "{transport}");
    let r = call_ok(client, "slot_status", json!({"project": p, "extra": 1})).await;
    assert!(error_text(&r).contains("unknown field"), "{transport}");
    call_protocol_error(client, "no_such_tool", json!({"project": p})).await;

    let entries = audit_entries(client, json!({"project": p})).await;
    let got: Vec<(String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["tool"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("deployment_list", "ok"),
        ("slot_status", "tool_error"),
        ("slot_status", "tool_error"),
        ("no_such_tool", "protocol_error"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{transport}: each call exactly once, in order");
    for e in &entries {
        assert_eq!(e["client_name"], json!(CLIENT_NAME), "{transport}: {e}");
        assert_eq!(
            e["client_version"],
            json!(CLIENT_VERSION),
            "{transport}: {e}"
        );
        // stdio: the local operator; HTTP: the API key that authenticated.
        let principal = e["principal"].as_str().unwrap();
        if transport == "stdio" {
            assert_eq!(principal, "local", "{e}");
        } else {
            assert!(principal.starts_with("key:"), "{e}");
        }
        assert_eq!(e["team"], json!("default"), "{e}");
        assert_eq!(e["role"], json!("owner"), "{e}");
        assert_eq!(e["arguments"]["project"], json!(p), "{e}");
        assert!(e["duration_ms"].as_i64().unwrap() >= 0, "{e}");
    }
    // The environment argument and the JSON-RPC request id have columns.
    for e in &entries {
        assert_eq!(e["environment"], e["arguments"]["environment"], "{e}");
    }
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["environment"] == json!("staging"))
            .count(),
        1,
        "{entries:?}"
    );
    let ids: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|e| e["request_id"].as_str().expect("request id"))
        .collect();
    assert_eq!(
        ids.len(),
        entries.len(),
        "one request id per call: {entries:?}"
    );
    assert!(
        entries[1]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "error text kept: {}",
        entries[1]
    );
    // The table agrees.
    assert_eq!(table_rows(&db().await, &p).await, 4, "{transport}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_every_call_is_audited_once() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = http_client(&server).await;
    sequence_is_audited_once(&client, "http").await;
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_every_call_is_audited_once() {
    let _guard = FAULT_LOCK.read().await;
    let client = named_stdio_client(&[]).await;
    sequence_is_audited_once(&client, "stdio").await;
    client.cancel().await.unwrap();
}

/// 2026-07-28 stateless requests name their client in `_meta`.
#[tokio::test(flavor = "multi_thread")]
async fn stateless_request_records_client_from_meta() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let p = unique_project("audit-sl");
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": "deployment_list",
            "arguments": {"project": p},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "stateless-audit", "version": "2.0"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let resp = reqwest::Client::new()
        .post(&server.url)
        .header("authorization", format!("Bearer {}", server.key))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "deployment_list")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let client = http_client(&server).await;
    let entries = audit_entries(&client, json!({"project": p})).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["client_name"], json!("stateless-audit"));
    assert_eq!(entries[0]["client_version"], json!("2.0"));
    assert_eq!(entries[0]["outcome"], json!("ok"));
    client.cancel().await.unwrap();
}

/// Secrets in arguments — env values (not yet registered anywhere), values
/// inside rejected calls, secret-named fields — never reach the table.
#[tokio::test(flavor = "multi_thread")]
async fn canary_in_arguments_never_reaches_the_audit_log() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = http_client(&server).await;
    let p = unique_project("audit-canary");
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    // Accepted shape (the project does not exist: a tool error after
    // validation), rejected environment, rejected unknown field.
    let r = call_ok(
        &client,
        "env_set",
        json!({"project": p, "environment": "staging", "set": {"API_KEY": canary, "PLAIN": canary}}),
    )
    .await;
    error_text(&r);
    let r = call_ok(
        &client,
        "env_set",
        json!({"project": p, "environment": "prod", "set": {"X": canary}}),
    )
    .await;
    assert!(error_text(&r).contains("is unknown"), "{r:?}");
    let r = call_ok(
        &client,
        "slot_status",
        json!({"project": p, "api_token": canary}),
    )
    .await;
    assert!(error_text(&r).contains("unknown field"));

    let entries = audit_entries(&client, json!({"project": p})).await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    let text = serde_json::to_string(&entries).unwrap();
    assert!(
        !text.contains(&canary),
        "canary in audit_query: {text:.500}"
    );
    let first = entries.last().unwrap();
    assert_eq!(first["arguments"]["set"]["PLAIN"], json!("[redacted]"));
    assert_eq!(first["arguments"]["set"]["API_KEY"], json!("[redacted]"));
    assert_eq!(entries[0]["arguments"]["api_token"], json!("[redacted]"));
    let pool = db().await;
    assert_eq!(table_rows(&pool, &p).await, 3, "the rows are there");
    assert_eq!(
        rows_containing(&pool, &canary).await,
        0,
        "canary in audit_log"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_query_paginates_and_filters() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = http_client(&server).await;
    let p = unique_project("audit-page");
    let before = chrono::Utc::now();
    for _ in 0..5 {
        structured(&call_ok(&client, "deployment_list", json!({"project": p})).await);
    }
    error_text(&call_ok(&client, "slot_status", json!({"project": p})).await);

    // Pages of 2: 3 pages, 6 distinct entries, newest first.
    let mut ids = Vec::new();
    let mut times = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut a = json!({"project": p, "limit": 2});
        if let Some(c) = &cursor {
            a["cursor"] = json!(c);
        }
        let v = structured(&call_ok(&client, "audit_query", a).await).clone();
        pages += 1;
        let entries = v["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        for e in entries {
            ids.push(e["id"].as_i64().unwrap());
            times.push(chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap());
        }
        assert!(v["summary"].as_str().unwrap().contains("entr"), "{v}");
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 6);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "no entry twice: {ids:?}");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Filters.
    let tool = audit_entries(&client, json!({"project": p, "tool": "slot_status"})).await;
    assert_eq!(tool.len(), 1);
    assert_eq!(tool[0]["outcome"], json!("tool_error"));
    let me = audit_entries(&client, json!({"project": p})).await[0]["principal"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(me.starts_with("key:"), "{me}");
    let mine = audit_entries(&client, json!({"project": p, "principal": me})).await;
    assert_eq!(mine.len(), 6);
    let nobody = audit_entries(
        &client,
        json!({"project": p, "principal": "key:00000000-0000-4000-8000-000000000000"}),
    )
    .await;
    assert!(nobody.is_empty());
    let since = (before - chrono::Duration::seconds(1)).to_rfc3339();
    assert_eq!(
        audit_entries(&client, json!({"project": p, "since": since}))
            .await
            .len(),
        6
    );
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert!(
        audit_entries(&client, json!({"project": p, "since": future}))
            .await
            .is_empty()
    );
    // The audit_query calls themselves are audited (under no project).
    let own = audit_entries(&client, json!({"tool": "audit_query", "since": since})).await;
    assert!(own.len() >= 3, "{}", own.len());

    for (args, expect) in [
        (json!({"since": "yesterday"}), "RFC 3339"),
        (json!({"cursor": "$(id)"}), "cursor"),
        (json!({"cursor": "-5"}), "cursor"),
        (json!({"limit": 0}), "between 1 and 100"),
        (json!({"limit": 101}), "between 1 and 100"),
        (json!({"tool": "x;rm"}), "tool must be"),
        (json!({"principal": "a\nb"}), "principal"),
        (json!({"project": "-rf"}), "project name"),
        (json!({"extra": 1}), "unknown field"),
    ] {
        let r = call_ok(&client, "audit_query", args.clone()).await;
        let t = error_text(&r);
        assert!(t.contains(expect), "{args}: {t}");
    }
    client.cancel().await.unwrap();
}

/// Spawns `codeb serve --http`, returning the child, its URL and its log.
async fn spawn_http(
    env: &[(&str, &str)],
) -> (
    tokio::process::Child,
    String,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    let mut cmd = tokio::process::Command::new(codeb_bin());
    cmd.arg("--config")
        .arg(&testbed().config)
        .args(["serve", "--http", "127.0.0.1:0"])
        .env("CODEB_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn codeb");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("codeb: serving MCP at ") {
                return rest.trim().to_string();
            }
        }
        panic!("codeb exited before listening");
    })
    .await
    .expect("codeb listens within 30 s");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (child, url, log)
}

async fn wait_exit(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("codeb exits within 30 s of SIGTERM")
        .unwrap()
}

/// Rows queued by the last calls are written when codeb is told to stop.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_queued_rows() {
    let _guard = FAULT_LOCK.read().await;
    const N: usize = 40;
    let (mut child, url, log) = spawn_http(&[]).await;
    let p = unique_project("audit-term");
    let key = super::common::mint_key("default", "owner");
    let client = {
        use rmcp::ServiceExt;
        client_info()
            .serve(super::common::http_transport(&url, &key))
            .await
            .expect("http initialize")
    };
    // Concurrently, so the last rows are still queued when SIGTERM comes.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..N {
        let peer = client.peer().clone();
        let args = params("deployment_list", json!({"project": p}));
        calls.spawn(async move { peer.call_tool(args).await });
    }
    while let Some(r) = calls.join_next().await {
        structured(&r.unwrap().expect("answered"));
    }
    let pid = child.id().expect("running");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_exit(&mut child).await;
    assert!(status.success(), "clean exit: {status:?}");
    drop(client);
    // Only now, with the process gone, look at the table.
    let pool = db().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = table_rows(&pool, &p).await;
        if n == N as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {N} rows after exit; log:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("audit: queue flushed at shutdown"),
        "shutdown flush logged: {log}"
    );
    assert!(!log.contains("audit row not written"), "{log}");
}

/// Without a database the calls are still answered, and at shutdown the
/// rows that could not be written are logged (redacted) — bounded wait.
#[tokio::test(flavor = "multi_thread")]
async fn database_down_calls_answered_rows_logged_at_shutdown() {
    use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
    use rmcp::ServiceExt;
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let p = unique_project("audit-down");
    let log_path = std::env::temp_dir().join(format!("{p}.log"));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let config = testbed().config.clone();
    let (transport, _) =
        TokioChildProcess::builder(tokio::process::Command::new(codeb_bin()).configure(|c| {
            c.arg("--config")
                .arg(&config)
                .arg("serve")
                .env("CODEB_LOG", "info")
                .env("CODEB_DATABASE__URL", "postgres://codeb@127.0.0.1:1/codeb")
                .env("CODEB_DATABASE__CONNECT_TIMEOUT_SECS", "1");
        }))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("spawn codeb serve");
    let client = client_info().serve(transport).await.expect("initialize");
    let started = Instant::now();
    let r = call_ok(&client, "deployment_list", json!({"project": p})).await;
    assert!(
        error_text(&r).contains("database"),
        "answered without a database"
    );
    let r = call_ok(
        &client,
        "env_set",
        json!({"project": p, "environment": "staging", "set": {"K": canary}}),
    )
    .await;
    error_text(&r);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "calls answered promptly"
    );
    // Closing stdin ends the session: codeb shuts down and drains.
    let stop = Instant::now();
    client.cancel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = strip_ansi(&std::fs::read_to_string(&log_path).unwrap());
        if log.contains("audit: queue flushed at shutdown") {
            break log;
        }
        assert!(Instant::now() < deadline, "no shutdown line: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = std::fs::remove_file(&log_path);
    assert!(
        stop.elapsed() < Duration::from_secs(20),
        "bounded shutdown wait"
    );
    let unwritten: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("audit row not written") && l.contains(&p))
        .collect();
    assert_eq!(unwritten.len(), 2, "both rows logged: {log}");
    assert!(log.contains("unwritten=2"), "{log}");
    assert!(!log.contains(&canary), "canary in the log: {log}");
}

/// `text` without terminal colour sequences (the log is coloured).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The writer on its own, against a fresh database: batches, flush.
#[sqlx::test(migrator = "codeb::state::MIGRATOR")]
async fn writer_batches_rows_into_the_table(pool: sqlx::PgPool) {
    use codeb::ops::audit::AuditLog;
    use codeb::state::audit::{audit_page, AuditFilter, AuditRecord};
    let log = AuditLog::new(codeb::state::Db::from_pool(pool.clone()));
    let row = |i: usize| AuditRecord {
        at: chrono::Utc::now(),
        tool: "deployment_list".into(),
        arguments: json!({"i": i}),
        principal: "local".into(),
        team: "default".into(),
        role: "owner".into(),
        client_name: Some("t".into()),
        client_version: None,
        project: Some("shop".into()),
        environment: Some("staging".into()),
        request_id: Some(i.to_string()),
        outcome: "ok",
        error: None,
        duration_ms: 1,
    };
    for i in 0..250 {
        log.record(row(i));
    }
    log.flush(Duration::from_secs(10)).await.expect("flush");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 250);
    for i in 250..260 {
        log.record(row(i));
    }
    let report = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((report.unwritten, report.dropped), (0, 0));
    let page = audit_page(
        &pool,
        &AuditFilter {
            project: Some("shop"),
            ..Default::default()
        },
        None,
        1000,
    )
    .await
    .unwrap();
    assert_eq!(page.len(), 260, "everything written by shutdown");
}

/// A call access control refuses — a viewer deploying, another team's
/// project — is audited as `denied`, not as a tool error.
#[tokio::test(flavor = "multi_thread")]
async fn access_refusals_are_audited_as_denied() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let pool = db().await;
    let team_b = unique_team("audit-deny");
    let viewer = {
        use rmcp::ServiceExt;
        client_info()
            .serve(http_transport(&server.url, &mint_key("default", "viewer")))
            .await
            .expect("http initialize")
    };
    let other_team = {
        use rmcp::ServiceExt;
        client_info()
            .serve(http_transport(&server.url, &mint_key(&team_b, "owner")))
            .await
            .expect("http initialize")
    };
    let p = unique_project("audit-deny");
    insert_project(&pool, &p).await;
    let r = call_ok(
        &viewer,
        "deploy",
        json!({"project": p, "environment": "staging", "image": "registry.test/x:1"}),
    )
    .await;
    assert!(error_text(&r).contains("member role"));
    let r = call_ok(
        &other_team,
        "slot_status",
        json!({"project": p, "environment": "staging"}),
    )
    .await;
    error_text(&r);
    let admin = http_client(&server).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = audit_entries(&admin, json!({"project": p})).await;
        if !entries.is_empty() || Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["tool"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [("deploy", "denied")], "team default's view");
    // The other team's refusal is in its own team's rows (the table).
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM audit_log WHERE team_id = $1 AND project = $2")
            .bind(&team_b)
            .bind(&p)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(outcome, "denied");
    delete_project(&pool, &p).await;
    delete_teams(&pool, &[&team_b]).await;
}
