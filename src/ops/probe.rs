//! Direct health probes of a slot: an HTTP GET to the slot's port on the
//! app server's loopback through the SSH master's port forward (no process
//! is started on the server per probe), or directly when codeb runs there.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::model::ServerRole;
use crate::ops::Ctx;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// An HTTP answer with this status.
    Status(u16),
    /// No HTTP answer (refused, reset, timed out); the text says which.
    NoAnswer(String),
}

impl ProbeResult {
    /// True for 200.
    pub fn healthy(&self) -> bool {
        *self == ProbeResult::Status(200)
    }
}

impl std::fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "HTTP {s}"),
            Self::NoAnswer(why) => write!(f, "no answer ({why})"),
        }
    }
}

/// GET `path` on the slot at `port` of the app server, bounded by `timeout`.
/// `path` must be validated (`podman::validate_http_path`).
pub async fn probe_slot(
    ctx: &Ctx,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<ProbeResult, String> {
    let (_, app) = ctx
        .fleet
        .for_role(ServerRole::App)
        .ok_or("no app server configured")?;
    let local = app
        .forward_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    // The Host header names the slot's own address, as a direct probe would.
    let url = format!("http://{local}{path}");
    match client
        .get(url)
        .header("host", format!("127.0.0.1:{port}"))
        .send()
        .await
    {
        Ok(r) => Ok(ProbeResult::Status(r.status().as_u16())),
        Err(e) if e.is_timeout() => Ok(ProbeResult::NoAnswer(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
        Err(e) => Ok(ProbeResult::NoAnswer(without_local_port(
            &e.to_string(),
            local,
        ))),
    }
}

/// Error texts name the local forward; the caller thinks of the slot port.
fn without_local_port(s: &str, local: SocketAddr) -> String {
    s.replace(&format!("http://{local}"), "the slot")
        .chars()
        .take(200)
        .collect()
}
