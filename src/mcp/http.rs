//! Streamable HTTP transport (DESIGN §5): `/mcp` plus `/healthz`, `/readyz`,
//! `/metrics` and Caddy's on-demand TLS `ask` at `/tls/ask?domain=`.
//! TCP_NODELAY on every accepted connection, Host and Origin allowlists
//! from config, 1 MiB body limit.

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
    let shared = CodebServer::new(ctx.clone());
    let tools = shared.router();
    let factory_ctx = ctx.clone();
    let service = StreamableHttpService::new(
        move || Ok(CodebServer::with_router(factory_ctx.clone(), tools.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let state = AppState {
        ctx,
        requests: Arc::new(AtomicU64::new(0)),
    };
    let counter = state.requests.clone();
    Router::new()
        .nest_service("/mcp", service)
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

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.ctx.db.ping().await {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
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
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let body = format!(
        "# HELP codeb_http_requests_total MCP HTTP requests received.\n\
         # TYPE codeb_http_requests_total counter\n\
         codeb_http_requests_total {}\n\
         # HELP codeb_build_info Build information.\n\
         # TYPE codeb_build_info gauge\n\
         codeb_build_info{{version=\"{}\"}} 1\n",
        s.requests.load(Ordering::Relaxed),
        env!("CARGO_PKG_VERSION")
    );
    ([("content-type", "text/plain; version=0.0.4")], body)
}

/// Until access control lands (issue [5]) the HTTP transport serves only
/// loopback addresses.
pub fn check_bind_address(addr: &SocketAddr) -> Result<(), HttpError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(HttpError::Refused(format!(
            "refusing to listen on {addr}: without access control codeb serves HTTP only on loopback (127.0.0.1 or ::1)"
        )))
    }
}

/// Serves until `cancel` fires. Prints the bound address to stderr.
pub async fn serve(
    ctx: Arc<Ctx>,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> Result<(), HttpError> {
    use axum::serve::ListenerExt;
    check_bind_address(&addr)?;
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
