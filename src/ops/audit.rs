//! The audit log (DESIGN §6): every tool call — tool, redacted arguments,
//! principal, team, role, client, outcome, duration — written to the
//! `audit_log` table off the request path.
//!
//! `AuditLog::record` only queues a row (a `try_send`, never waits); one
//! writer task per process flushes the queue every `AUDIT_FLUSH_INTERVAL` or
//! every `AUDIT_BATCH_ROWS` rows with one multi-row INSERT. While the
//! database is down rows stay queued (at most `AUDIT_BUFFER_ROWS`; more are
//! counted as dropped and logged) and the calls themselves are answered as
//! usual. `AuditLog::shutdown` drains the queue before codeb exits; rows it
//! cannot write within its deadline go to the log as JSON lines, so nothing
//! disappears silently.
//!
//! Arguments are redacted structurally before anything else sees them:
//! `env_set`'s values arrive before they are registered as secrets, so no
//! text scrubber could know them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::ops::redact;
use crate::state::audit::{audit_insert_batch, AuditRecord};
use crate::state::Db;

/// Longest serialized arguments kept; longer ones are cut with a marker.
pub const AUDIT_ARGUMENTS_MAX_BYTES: usize = 4096;
/// Longest error text kept.
pub const AUDIT_ERROR_MAX_BYTES: usize = 1024;
/// Longest tool, project, principal or client name kept.
pub const AUDIT_NAME_MAX_BYTES: usize = 128;
/// The writer flushes at least this often when rows are queued.
pub const AUDIT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The writer flushes as soon as this many rows are queued.
pub const AUDIT_BATCH_ROWS: usize = 100;
/// Rows kept while the database does not answer; more are dropped (counted).
pub const AUDIT_BUFFER_ROWS: usize = 10_000;
/// Capacity of the channel between `record` and the writer.
pub const AUDIT_CHANNEL_ROWS: usize = 4096;
/// After a failed write, the writer waits this long before trying again.
pub const AUDIT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long shutdown waits for the queue to reach the database: a healthy
/// database takes milliseconds; stdio clients (rmcp, per the MCP shutdown
/// sequence) allow a server 3 s after closing stdin before SIGTERM/SIGKILL,
/// and the rows left must still be logged within that.
pub const AUDIT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// Answered with a result (including an input-required answer).
    Ok,
    /// Answered with `isError: true`.
    ToolError,
    /// Refused by access control.
    Denied,
    /// Answered with a JSON-RPC error (unknown tool, outage, bug).
    ProtocolError,
    /// An HTTP request refused before MCP: no valid key (401).
    Unauthenticated,
    /// An HTTP request refused before MCP: the key's rate limit (429).
    RateLimited,
}

impl AuditOutcome {
    /// The stored name (constraint `audit_log_outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ToolError => "tool_error",
            Self::Denied => "denied",
            Self::ProtocolError => "protocol_error",
            Self::Unauthenticated => "unauthenticated",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Why flushing the audit queue failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The writer did not finish in time (database slow or down).
    #[error("audit log not flushed within {0} ms; the database may be unavailable")]
    Timeout(u128),
    /// The database refused the rows.
    #[error("audit log not written: {0}")]
    Db(#[source] crate::state::DbError),
    /// The writer has stopped (codeb is shutting down).
    #[error("audit writer stopped")]
    Stopped,
}

/// What shutdown achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditShutdown {
    /// Rows written during shutdown.
    pub written: u64,
    /// Rows that could not be written (they went to the log instead).
    pub unwritten: u64,
    /// Rows dropped during the run because the buffer was full.
    pub dropped: u64,
}

enum Msg {
    Row(Box<AuditRecord>),
    Flush(oneshot::Sender<Result<(), AuditError>>),
    Close(tokio::time::Instant, oneshot::Sender<AuditShutdown>),
}

/// The process's audit log: built with the shared context, its writer task
/// starts on the first recorded call. Clones share it.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

struct Shared {
    db: Db,
    tx: OnceLock<mpsc::Sender<Msg>>,
    handle: Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// An audit log writing to `db`; starts nothing yet.
    pub fn new(db: Db) -> Self {
        Self {
            shared: Arc::new(Shared {
                db,
                tx: OnceLock::new(),
                handle: Mutex::new(None),
                dropped: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// Rows dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn sender(&self) -> Option<&mpsc::Sender<Msg>> {
        if let Some(tx) = self.shared.tx.get() {
            return Some(tx);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(self.shared.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(AUDIT_CHANNEL_ROWS);
            let writer = Writer {
                db: self.shared.db.clone(),
                pending: VecDeque::new(),
                dropped: self.shared.dropped.clone(),
                dropped_logged: 0,
                failing: None,
            };
            let handle = runtime.spawn(writer.run(rx));
            *self.shared.handle.lock().expect("audit handle lock") = Some(handle);
            tx
        }))
    }

    /// Queues one row; never waits. A full queue drops the row (counted).
    pub fn record(&self, row: AuditRecord) {
        let Some(tx) = self.sender() else {
            log_unwritten(&row, "no runtime");
            return;
        };
        match tx.try_send(Msg::Row(Box::new(row))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(Msg::Row(row))) => {
                log_unwritten(&row, "audit writer stopped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Writes every row queued before this call; waits at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), AuditError> {
        let Some(tx) = self.shared.tx.get() else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        tokio::time::timeout(timeout, async {
            tx.send(Msg::Flush(ack))
                .await
                .map_err(|_| AuditError::Stopped)?;
            done.await.map_err(|_| AuditError::Stopped)?
        })
        .await
        .map_err(|_| AuditError::Timeout(timeout.as_millis()))?
    }

    /// Drains the queue into the database and stops the writer; waits at
    /// most `timeout`. Rows not written by then are logged as JSON lines
    /// (`audit row not written`) with one error line saying how many.
    pub async fn shutdown(&self, timeout: Duration) -> AuditShutdown {
        let Some(tx) = self.shared.tx.get() else {
            return AuditShutdown::default();
        };
        let deadline = tokio::time::Instant::now() + timeout;
        // The writer stops trying at `deadline`, then logs what is left:
        // give it a moment past that to do so.
        let (ack, done) = oneshot::channel();
        let report = tokio::time::timeout_at(deadline + Duration::from_secs(2), async {
            tx.send(Msg::Close(deadline, ack)).await.ok()?;
            done.await.ok()
        })
        .await;
        let report = match report {
            Ok(Some(r)) => r,
            _ => {
                // The writer is stuck on the database: stop it and log
                // whatever it still holds.
                let handle = self.shared.handle.lock().expect("audit handle lock").take();
                if let Some(h) = handle {
                    h.abort();
                }
                tracing::error!(
                    timeout_ms = timeout.as_millis() as u64,
                    "audit: shutdown flush did not finish; queued rows not in the database may be lost"
                );
                return AuditShutdown {
                    dropped: self.dropped(),
                    ..Default::default()
                };
            }
        };
        if report.unwritten > 0 {
            tracing::error!(
                unwritten = report.unwritten,
                "audit: the database did not take these rows before shutdown; they are in this log as 'audit row not written' lines"
            );
        }
        if report.dropped > 0 {
            tracing::error!(
                dropped = report.dropped,
                "audit: rows dropped during this run because the buffer was full"
            );
        }
        tracing::info!(
            written = report.written,
            unwritten = report.unwritten,
            "audit: queue flushed at shutdown"
        );
        report
    }
}

struct Writer {
    db: Db,
    pending: VecDeque<AuditRecord>,
    dropped: Arc<AtomicU64>,
    dropped_logged: u64,
    /// When the last write failed (retry after `AUDIT_RETRY_INTERVAL`).
    failing: Option<tokio::time::Instant>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut tick = tokio::time::interval(AUDIT_FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Row(row)) => {
                        self.push(*row);
                        if self.pending.len() >= AUDIT_BATCH_ROWS && self.may_retry() {
                            let _ = self.write_pending().await;
                        }
                    }
                    Some(Msg::Flush(ack)) => {
                        let _ = ack.send(self.write_pending().await);
                    }
                    Some(Msg::Close(deadline, ack)) => {
                        let report = self.close(&mut rx, deadline).await;
                        let _ = ack.send(report);
                        return;
                    }
                    None => {
                        let deadline = tokio::time::Instant::now() + AUDIT_SHUTDOWN_TIMEOUT;
                        self.close(&mut rx, deadline).await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    if !self.pending.is_empty() && self.may_retry() {
                        let _ = self.write_pending().await;
                    }
                    self.log_dropped();
                }
            }
        }
    }

    fn push(&mut self, row: AuditRecord) {
        if self.pending.len() >= AUDIT_BUFFER_ROWS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.pending.push_back(row);
        }
    }

    fn may_retry(&self) -> bool {
        self.failing
            .is_none_or(|at| at.elapsed() >= AUDIT_RETRY_INTERVAL)
    }

    fn log_dropped(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_logged {
            tracing::error!(
                dropped_total = dropped,
                buffered = self.pending.len(),
                "audit: buffer full, rows dropped (the database does not take them)"
            );
            self.dropped_logged = dropped;
        }
    }

    /// Writes every pending row; on failure they stay pending.
    async fn write_pending(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = self.pending.make_contiguous();
        let result = match self.db.pool().await {
            Ok(pool) => audit_insert_batch(pool, rows).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                self.pending.clear();
                if self.failing.take().is_some() {
                    tracing::info!("audit: database writes resumed");
                }
                Ok(())
            }
            Err(e) => {
                if self.failing.is_none() {
                    tracing::warn!(
                        buffered = self.pending.len(),
                        error = %e,
                        "audit: rows kept in memory until the database answers"
                    );
                }
                self.failing = Some(tokio::time::Instant::now());
                Err(AuditError::Db(e))
            }
        }
    }

    /// Drains the channel and writes everything, retrying until the caller's
    /// deadline stops it; reports what was written.
    async fn close(
        &mut self,
        rx: &mut mpsc::Receiver<Msg>,
        deadline: tokio::time::Instant,
    ) -> AuditShutdown {
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Row(row) => self.push(*row),
                Msg::Flush(ack) => {
                    let _ = ack.send(Err(AuditError::Stopped));
                }
                Msg::Close(_, ack) => {
                    let _ = ack.send(AuditShutdown::default());
                }
            }
        }
        let queued = self.pending.len() as u64;
        // Each attempt is cut at the deadline (a dropped transaction rolls
        // back, so the rows stay pending and are logged below).
        loop {
            match tokio::time::timeout_at(deadline, self.write_pending()).await {
                Ok(Ok(())) | Err(_) => break,
                Ok(Err(_)) if tokio::time::Instant::now() + AUDIT_RETRY_INTERVAL < deadline => {
                    tokio::time::sleep(AUDIT_RETRY_INTERVAL).await;
                }
                Ok(Err(_)) => break,
            }
        }
        let unwritten = self.pending.len() as u64;
        for row in self.pending.drain(..) {
            log_unwritten(&row, "database unavailable at shutdown");
        }
        AuditShutdown {
            written: queued - unwritten,
            unwritten,
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Logs a row that will not reach the database (already redacted).
fn log_unwritten(row: &AuditRecord, why: &str) {
    let json = serde_json::json!({
        "at": row.at.to_rfc3339(),
        "tool": row.tool,
        "arguments": row.arguments,
        "principal": row.principal,
        "team": row.team,
        "role": row.role,
        "client_name": row.client_name,
        "client_version": row.client_version,
        "project": row.project,
        "environment": row.environment,
        "request_id": row.request_id,
        "outcome": row.outcome,
        "error": row.error,
        "duration_ms": row.duration_ms,
    });
    tracing::warn!(why, row = %json, "audit row not written");
}

/// Whether a field of this name holds a secret: any `_`/`-` separated part
/// (or the whole lowercased name) is password, secret, token, key, ...
/// `idempotency_key` is a caller-chosen label, not a secret.
pub fn is_secret_field(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "key",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
    ];
    let lower = name.to_ascii_lowercase();
    if lower == "idempotency_key" {
        return false;
    }
    lower
        .split(['_', '-', '.'])
        .any(|part| WORDS.contains(&part))
        || ["password", "secret", "token", "apikey", "api_key"]
            .iter()
            .any(|w| lower.contains(w))
}

/// Fields whose every value is secret, per tool: `env_set.set` maps names
/// to values that are not yet registered as secrets.
const SECRET_VALUE_MAPS: &[(&str, &str)] = &[("env_set", "set")];

/// Most entries kept of one array or object.
const MAX_ITEMS: usize = 64;

/// The arguments of a `tool` call as stored: secret fields replaced by
/// `[redacted]`, every string scrubbed of registered secrets, bounded to
/// `AUDIT_ARGUMENTS_MAX_BYTES` serialized (cut with a `truncated` marker).
pub fn sanitize_arguments(tool: &str, arguments: Option<&Map<String, Value>>) -> Value {
    let Some(arguments) = arguments else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    for (i, (k, v)) in arguments.iter().enumerate() {
        if i >= MAX_ITEMS {
            out.insert("…".into(), Value::String("more fields omitted".into()));
            break;
        }
        let value = if is_secret_field(k) {
            Value::String(REDACTED.into())
        } else if SECRET_VALUE_MAPS.contains(&(tool, k.as_str())) {
            redact_all_values(v)
        } else {
            sanitize_value(v, 1)
        };
        out.insert(bounded(&redact::redact(k), AUDIT_NAME_MAX_BYTES), value);
    }
    let value = Value::Object(out);
    let text = value.to_string();
    // Belt and braces: a registered secret split across fields cannot
    // survive, and one that slipped through would show here.
    let scrubbed = redact::redact(&text);
    if scrubbed.len() <= AUDIT_ARGUMENTS_MAX_BYTES {
        if scrubbed == text {
            return value;
        }
        if let Ok(v) = serde_json::from_str(&scrubbed) {
            return v;
        }
    }
    serde_json::json!({
        "truncated": true,
        "text": bounded(&scrubbed, AUDIT_ARGUMENTS_MAX_BYTES - 64),
    })
}

/// A map (or anything) with every leaf value replaced by `[redacted]`;
/// object keys (variable names) are kept.
fn redact_all_values(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .take(MAX_ITEMS)
                .map(|(k, _)| {
                    (
                        bounded(&redact::redact(k), AUDIT_NAME_MAX_BYTES),
                        Value::String(REDACTED.into()),
                    )
                })
                .collect(),
        ),
        _ => Value::String(REDACTED.into()),
    }
}

fn sanitize_value(v: &Value, depth: usize) -> Value {
    match v {
        Value::String(s) => Value::String(bounded(&redact::redact(s), AUDIT_ARGUMENTS_MAX_BYTES)),
        Value::Array(a) if depth < 8 => Value::Array(
            a.iter()
                .take(MAX_ITEMS)
                .map(|v| sanitize_value(v, depth + 1))
                .collect(),
        ),
        Value::Object(m) if depth < 8 => Value::Object(
            m.iter()
                .take(MAX_ITEMS)
                .map(|(k, v)| {
                    let value = if is_secret_field(k) {
                        Value::String(REDACTED.into())
                    } else {
                        sanitize_value(v, depth + 1)
                    };
                    (bounded(&redact::redact(k), AUDIT_NAME_MAX_BYTES), value)
                })
                .collect(),
        ),
        Value::Array(_) | Value::Object(_) => Value::String("[nested too deep]".into()),
        other => other.clone(),
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with a marker.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const MARK: &str = "…[truncated]";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Redacted, bounded text for the `error` column (and names).
pub fn sanitize_text(text: &str, max: usize) -> String {
    // Scrub before cutting: a cut could split a secret so the scrubber
    // no longer recognizes its remaining part.
    bounded(&redact::redact(text), max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn env_set_values_are_redacted_before_they_are_registered() {
        let a = args(json!({
            "project": "shop",
            "environment": "staging",
            "set": {"API_TOKEN": "canary-unregistered-1", "PLAIN": "canary-unregistered-2"},
            "unset": ["OLD"]
        }));
        let out = sanitize_arguments("env_set", Some(&a));
        let text = out.to_string();
        assert!(!text.contains("canary-unregistered"), "{text}");
        assert_eq!(out["set"]["PLAIN"], json!(REDACTED));
        assert_eq!(out["set"]["API_TOKEN"], json!(REDACTED));
        assert_eq!(out["project"], json!("shop"));
        assert_eq!(out["unset"], json!(["OLD"]));
    }

    #[test]
    fn secret_named_fields_are_redacted_at_any_depth() {
        let a = args(json!({
            "password": "p1-canary",
            "nested": {"db_password": "p2-canary", "list": [{"apiKey": "p3-canary"}]},
            "x-auth-token": "p4-canary",
            "idempotency_key": "release-42"
        }));
        let text = sanitize_arguments("future_tool", Some(&a)).to_string();
        assert!(!text.contains("canary"), "{text}");
        assert!(text.contains("release-42"), "{text}");
        for name in [
            "key",
            "SECRET",
            "client_secret",
            "access-token",
            "Authorization",
        ] {
            assert!(is_secret_field(name), "{name}");
        }
        for name in ["keys", "project", "idempotency_key", "monkey", "unset"] {
            assert!(!is_secret_field(name), "{name}");
        }
    }

    #[test]
    fn registered_secrets_are_scrubbed_and_size_is_bounded() {
        redact::register("canary-registered-audit-77");
        let a = args(json!({"reason": "it was canary-registered-audit-77 ok"}));
        let text = sanitize_arguments("rollback", Some(&a)).to_string();
        assert!(!text.contains("canary-registered-audit-77"), "{text}");
        assert!(text.contains(REDACTED));

        let huge = "ä".repeat(1 << 19);
        let a = args(json!({"project": huge, "b": huge, "c": [huge, huge]}));
        let out = sanitize_arguments("slot_status", Some(&a));
        let text = out.to_string();
        assert!(text.len() <= AUDIT_ARGUMENTS_MAX_BYTES, "{}", text.len());
        assert_eq!(out["truncated"], json!(true));
        assert!(out["text"].as_str().unwrap().ends_with("[truncated]"));
        assert_eq!(sanitize_arguments("x", None), json!({}));
    }

    #[test]
    fn bounded_cuts_on_char_boundaries() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded(&"é".repeat(100), 40);
        assert!(cut.len() <= 40 && cut.ends_with("[truncated]"), "{cut}");
        assert_eq!(AuditOutcome::ProtocolError.as_str(), "protocol_error");
    }
}
