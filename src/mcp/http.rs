//! Streamable HTTP transport (DESIGN §5): `/mcp` plus `/healthz`, `/readyz`,
//! `/metrics` and Caddy's on-demand TLS `ask` at `/tls/ask?domain=`.
//! TCP_NODELAY on every accepted connection, Host and Origin allowlists
//! from config, 1 MiB body limit.
//!
//! Every `/mcp` request is authenticated here, before rmcp sees it (DESIGN
//! §6): `Authorization: Bearer KEY` or `X-API-Key: KEY`, else 401 with a
//! JSON-RPC error body; then a per-key rate limit (429 with Retry-After).
//! Keys this server never verified share a global budget of database
//! lookups (429 with Retry-After once spent: `auth::KeyVerifier`).
//! The authenticated `Caller` rides in the request extensions, which rmcp
//! hands to the server inside the HTTP `Parts` (`CodebServer::request_caller`).
//! `/healthz`, `/readyz`, `/metrics` (counters and version only) and
//! `/tls/ask` (Caddy, on loopback) stay open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::mcp::CodebServer;
use crate::ops::Ctx;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Address refused by policy.
    #[error("{0}")]
    Refused(String),
    /// Bind or serve failure.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    ctx: Arc<Ctx>,
    requests: Arc<AtomicU64>,
    verifier: Arc<crate::auth::KeyVerifier>,
}

type KeyedLimiter = governor::DefaultKeyedRateLimiter<uuid::Uuid>;

/// What the authentication middleware needs.
#[derive(Clone)]
struct AuthState {
    verifier: Arc<crate::auth::KeyVerifier>,
    limiter: Arc<KeyedLimiter>,
    refusals: Arc<RefusalAudit>,
}

/// Audit rows of requests refused before MCP (401, 429). Anyone can send
/// those at any rate, so their rows are themselves rate limited: past
/// `REFUSAL_AUDIT_PER_SECOND` (burst `REFUSAL_AUDIT_BURST`) they are
/// counted, and the next row written says how many were left out.
struct RefusalAudit {
    log: crate::ops::audit::AuditLog,
    limiter: governor::DefaultDirectRateLimiter,
    left_out: AtomicU64,
}

/// Audit rows per second for requests refused before MCP.
const REFUSAL_AUDIT_PER_SECOND: u32 = 20;
/// Burst of such rows.
const REFUSAL_AUDIT_BURST: u32 = 100;
/// The `tool` column of a request refused before MCP (its body is unread).
pub const REFUSED_REQUEST_TOOL: &str = "(http request)";

impl RefusalAudit {
    fn new(log: crate::ops::audit::AuditLog) -> Self {
        let quota = governor::Quota::per_second(
            std::num::NonZeroU32::new(REFUSAL_AUDIT_PER_SECOND).expect("non-zero"),
        )
        .allow_burst(std::num::NonZeroU32::new(REFUSAL_AUDIT_BURST).expect("non-zero"));
        Self {
            log,
            limiter: governor::RateLimiter::direct(quota),
            left_out: AtomicU64::new(0),
        }
    }

    /// Queues the row of one refused request (`caller` when its key was
    /// valid, as for 429), unless over the row rate.
    fn record(
        &self,
        outcome: crate::ops::audit::AuditOutcome,
        caller: Option<&crate::ops::lifecycle::Caller>,
        message: &str,
    ) {
        if self.limiter.check().is_err() {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let left_out = self.left_out.swap(0, Ordering::Relaxed);
        let error = if left_out > 0 {
            format!("{message} ({left_out} more refused requests before this one were not audited: over {REFUSAL_AUDIT_PER_SECOND} rows/s)")
        } else {
            message.to_string()
        };
        self.log.record(crate::state::audit::AuditRecord {
            at: chrono::Utc::now(),
            tool: REFUSED_REQUEST_TOOL.into(),
            arguments: serde_json::json!({}),
            principal: caller.map_or_else(|| "unauthenticated".into(), |c| c.principal.clone()),
            team: caller.map_or_else(String::new, |c| c.team.clone()),
            role: caller.map_or_else(String::new, |c| c.role.as_str().to_string()),
            client_name: None,
            client_version: None,
            project: None,
            environment: None,
            request_id: None,
            outcome: outcome.as_str(),
            error: Some(error),
            duration_ms: 0,
        });
    }
}

/// JSON-RPC error code for authentication failures (server-defined range).
pub const JSONRPC_UNAUTHORIZED: i64 = -32001;
/// JSON-RPC error code for rate-limited requests.
pub const JSONRPC_RATE_LIMITED: i64 = -32002;

fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> axum::response::Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code, "message": message },
    });
    (status, axum::Json(body)).into_response()
}

/// The key presented in `Authorization: Bearer` or `X-API-Key`, if any.
fn presented_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, key) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

async fn authenticate(
    State(auth): State<AuthState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use crate::auth::KeyError;
    let has_header = req
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION)
        || req.headers().contains_key("x-api-key");
    let result = match presented_key(req.headers()) {
        Some(key) => auth.verifier.verify(key).await,
        None if has_header => Err(KeyError::Malformed),
        None => Err(KeyError::Missing),
    };
    let caller = match result {
        Ok(c) => c,
        Err(KeyError::Throttled { retry_after_secs }) => {
            let mut resp = jsonrpc_error(
                StatusCode::TOO_MANY_REQUESTS,
                JSONRPC_RATE_LIMITED,
                &KeyError::Throttled { retry_after_secs }.to_string(),
            );
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
            return resp;
        }
        Err(e) => {
            let status = if matches!(e, KeyError::Unavailable(_)) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            let message = e.to_string();
            auth.refusals.record(
                crate::ops::audit::AuditOutcome::Unauthenticated,
                None,
                &message,
            );
            let mut resp = jsonrpc_error(status, JSONRPC_UNAUTHORIZED, &message);
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"codeb\""),
            );
            return resp;
        }
    };
    if let Some(id) = caller.key_id {
        if let Err(not_until) = auth.limiter.check_key(&id) {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let message = format!("rate limit of this API key reached; retry in {secs} s");
            auth.refusals.record(
                crate::ops::audit::AuditOutcome::RateLimited,
                Some(&caller),
                &message,
            );
            let mut resp = jsonrpc_error(
                StatusCode::TOO_MANY_REQUESTS,
                JSONRPC_RATE_LIMITED,
                &message,
            );
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            );
            return resp;
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Builds the axum router serving MCP at `/mcp` for `bound` (the real
/// listening address, which joins the Host allowlist).
pub fn router(ctx: Arc<Ctx>, bound: SocketAddr, cancel: CancellationToken) -> Router {
    let mcp = &ctx.config.mcp;
    let mut hosts = mcp.allowed_hosts.clone();
    // The configured names with the real port, so `127.0.0.1:PORT` passes
    // even when the config lists only `127.0.0.1`.
    for h in mcp.allowed_hosts.clone() {
        if !h.contains(':') {
            hosts.push(format!("{h}:{}", bound.port()));
        }
    }
    // Likewise the server's own origin on the bound port.
    let mut origins = mcp.allowed_origins.clone();
    for h in &mcp.allowed_hosts {
        if !h.contains(':') {
            origins.push(format!("http://{h}:{}", bound.port()));
        }
    }
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        // Plain JSON wherever nothing streams (stateless 2026-07-28 requests;
        // rmcp keeps SSE for legacy sessions).
        .with_json_response(true)
        .with_max_request_body_bytes(mcp.max_body_bytes)
        .with_cancellation_token(cancel.child_token());
    // Over HTTP there is no default caller: each request carries its own.
    let shared = CodebServer::new(ctx.clone()).with_default_caller(None);
    let per_minute = std::num::NonZeroU32::new(ctx.config.auth.rate_limit_per_minute)
        .unwrap_or(std::num::NonZeroU32::MIN);
    let auth = AuthState {
        verifier: shared.verifier(),
        limiter: Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(
            per_minute,
        ))),
        refusals: Arc::new(RefusalAudit::new(ctx.audit.clone())),
    };
    let service = StreamableHttpService::new(
        move || Ok(shared.session()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let state = AppState {
        ctx,
        requests: Arc::new(AtomicU64::new(0)),
        verifier: auth.verifier.clone(),
    };
    let counter = state.requests.clone();
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(auth, authenticate))
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    next.run(req).await
                }
            },
        ))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/tls/ask", get(tls_ask))
        .with_state(state)
}

/// The body of an unready `/readyz` or a failed `/tls/ask`: these endpoints
/// are open (no key), so the cause — a database error naming hosts, roles,
/// databases — goes to codeb's log only.
const STATE_DB_UNAVAILABLE: &str = "the state database does not answer (details in codeb's log)\n";

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.ctx.db.ping().await {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "readyz: state database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {STATE_DB_UNAVAILABLE}"),
            )
        }
    }
}

/// Query of the on-demand TLS `ask` endpoint.
#[derive(serde::Deserialize)]
struct AskQuery {
    domain: Option<String>,
}

/// Caddy's on-demand TLS `ask` (DESIGN §2): 200 only for host names in
/// codeb's route table, 404 for any other (or invalid) name, 400 without
/// `domain`, 503 when the state database does not answer.
async fn tls_ask(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<AskQuery>,
) -> impl IntoResponse {
    let Some(domain) = q.domain.filter(|d| !d.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing ?domain=\n".to_string());
    };
    match crate::ops::domains::tls_allowed(&s.ctx, &domain).await {
        Ok(true) => (StatusCode::OK, "ok\n".to_string()),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            "not a routed host name\n".to_string(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "tls ask: state database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                STATE_DB_UNAVAILABLE.to_string(),
            )
        }
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let redaction = crate::ops::redact::stats();
    let body = format!(
        "# HELP codeb_http_requests_total MCP HTTP requests received.\n\
         # TYPE codeb_http_requests_total counter\n\
         codeb_http_requests_total {}\n\
         # HELP codeb_api_key_lookups_total Database lookups of presented API keys.\n\
         # TYPE codeb_api_key_lookups_total counter\n\
         codeb_api_key_lookups_total {}\n\
         # HELP codeb_api_key_lookups_throttled_total Unknown API keys refused (429) without a lookup.\n\
         # TYPE codeb_api_key_lookups_throttled_total counter\n\
         codeb_api_key_lookups_throttled_total {}\n\
         # HELP codeb_build_info Build information.\n\
         # TYPE codeb_build_info gauge\n\
         codeb_build_info{{version=\"{}\"}} 1\n\
         # HELP codeb_redaction_values Secret values registered for redaction (codeb's and projects').\n\
         # TYPE codeb_redaction_values gauge\n\
         codeb_redaction_values {}\n\
         # HELP codeb_redaction_project_bytes Bytes of projects' secret values charged to the redaction budget.\n\
         # TYPE codeb_redaction_project_bytes gauge\n\
         codeb_redaction_project_bytes {}\n",
        s.requests.load(Ordering::Relaxed),
        s.verifier.database_lookups(),
        s.verifier.throttled_lookups(),
        env!("CARGO_PKG_VERSION"),
        redaction.values,
        redaction.project_bytes
    );
    ([("content-type", "text/plain; version=0.0.4")], body)
}

/// A non-loopback address needs explicit Host and Origin allowlists in the
/// config (`[mcp] allowed_hosts`, `allowed_origins`): the defaults name only
/// loopback, which no remote client would send.
pub fn check_bind_address(
    addr: &SocketAddr,
    mcp: &crate::config::McpConfig,
) -> Result<(), HttpError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let loopback_name = |h: &str| {
        let host = h.rsplit_once(':').map_or(h, |(host, _)| host);
        matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1" | "")
    };
    if mcp.allowed_hosts.iter().all(|h| loopback_name(h)) {
        return Err(HttpError::Refused(format!(
            "refusing to listen on {addr}: set mcp.allowed_hosts in the config to the host names clients use (e.g. [\"codeb.example.com\"])"
        )));
    }
    if mcp.allowed_origins.is_empty() {
        return Err(HttpError::Refused(format!(
            "refusing to listen on {addr}: set mcp.allowed_origins in the config to the origins allowed to call (e.g. [\"https://codeb.example.com\"])"
        )));
    }
    Ok(())
}

/// Serves until `cancel` fires. Prints the bound address to stderr.
pub async fn serve(
    ctx: Arc<Ctx>,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> Result<(), HttpError> {
    use axum::serve::ListenerExt;
    check_bind_address(&addr, &ctx.config.mcp)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(ctx, bound, cancel.clone());
    eprintln!("codeb: serving MCP at http://{bound}/mcp");
    tracing::info!(%bound, "http listening");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_explicit_allowlists() {
        let any: SocketAddr = "0.0.0.0:9101".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:9101".parse().unwrap();
        let mut mcp = crate::config::McpConfig::default();
        assert!(check_bind_address(&lo, &mcp).is_ok());
        let e = check_bind_address(&any, &mcp).unwrap_err().to_string();
        assert!(e.contains("mcp.allowed_hosts"), "{e}");
        mcp.allowed_hosts = vec!["codeb.example.com".into()];
        let e = check_bind_address(&any, &mcp).unwrap_err().to_string();
        assert!(e.contains("mcp.allowed_origins"), "{e}");
        mcp.allowed_origins = vec!["https://codeb.example.com".into()];
        assert!(check_bind_address(&any, &mcp).is_ok());
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", "k1".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert("authorization", "Bearer k2".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k2"));
        h.insert("authorization", "Basic k2".parse().unwrap());
        assert_eq!(presented_key(&h), None);
    }
}
