//! Reaching the PowerDNS API of the app server (DESIGN §8): its address in
//! config (`pdns.api_url`) is as seen on the app server, normally its
//! loopback, so codeb forwards a local port there over the app server's SSH
//! master (or uses it directly when codeb runs on the app server).
//!
//! The forward lives as long as the SSH master and is remembered by the
//! executor; a dead master is noticed when the next client is asked for and
//! the forward is opened again. `with_pdns` also retries a call once after
//! an `Unreachable` answer, through a freshly asked-for client.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::Mutex;

use crate::exec::pdns::{PdnsClient, PdnsError};
use crate::model::ServerRole;
use crate::ops::Ctx;

/// Upper bound of one PowerDNS API request, connect included.
pub const PDNS_API_TIMEOUT: Duration = Duration::from_secs(10);

/// The last client handed out, reused while its forwarded address and key
/// stay the same.
#[derive(Default)]
pub struct PdnsCache {
    client: Mutex<Option<(PdnsClient, String)>>,
}

impl PdnsCache {
    /// Drops the cached client so the next one is built afresh.
    pub async fn forget(&self) {
        self.client.lock().await.take();
    }
}

/// A PowerDNS API client that reaches the app server's API from here.
///
/// Errors: `Unexpected` for configuration problems (no app server, a
/// `pdns.api_url` that is not an address on the server, no API key),
/// `Unreachable` when the SSH forward cannot be opened.
pub async fn pdns_client(ctx: &Ctx) -> Result<PdnsClient, PdnsError> {
    let config = &ctx.config;
    let api_url = &config.pdns.api_url;
    let (url, on_server) = api_address(api_url)?;
    let (server, remote) = ctx.fleet.for_role(ServerRole::App).ok_or_else(|| {
        PdnsError::Unexpected(
            "no server has the role \"app\", which runs PowerDNS: add it to [[servers]]".into(),
        )
    })?;
    let local = remote.forward_tcp(on_server).await.map_err(|e| {
        PdnsError::Unreachable(format!(
            "cannot forward a local port to {on_server} on server {}: {e}",
            server.name
        ))
    })?;
    let base = local_base(&url, local);
    let key = config
        .pdns_api_key()
        .map_err(|e| PdnsError::Unexpected(e.to_string()))?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            PdnsError::Unexpected(
                "no PowerDNS API key: set pdns.api_key_file or CODEB_PDNS_API_KEY".into(),
            )
        })?;

    let mut cached = ctx.pdns.client.lock().await;
    if let Some((client, cached_key)) = cached.as_ref() {
        if client.base_url() == base && *cached_key == key {
            return Ok(client.clone());
        }
    }
    let label = if local == on_server {
        format!("{api_url} on {}", server.name)
    } else {
        format!("{api_url} on {} (forwarded to {local})", server.name)
    };
    let client = PdnsClient::new(&base, &config.pdns.server_id, key.clone(), PDNS_API_TIMEOUT)
        .described_as(label);
    *cached = Some((client.clone(), key));
    Ok(client)
}

/// Runs `call` with a PowerDNS client; when it finds the API unreachable,
/// forgets the client, asks for a new one (which re-opens a dead forward)
/// and runs `call` once more. Only for idempotent calls: every route change
/// is a REPLACE or DELETE, which are.
pub async fn with_pdns<T, F, Fut>(ctx: &Ctx, call: F) -> Result<T, PdnsError>
where
    F: Fn(PdnsClient) -> Fut,
    Fut: Future<Output = Result<T, PdnsError>>,
{
    let client = pdns_client(ctx).await?;
    match call(client).await {
        Err(PdnsError::Unreachable(first)) => {
            tracing::info!(error = %first, "PowerDNS API unreachable; trying once more");
            ctx.pdns.forget().await;
            let client = pdns_client(ctx).await?;
            call(client).await
        }
        other => other,
    }
}

/// The URL and the socket address (on the app server) of `pdns.api_url`.
fn api_address(api_url: &str) -> Result<(Url, SocketAddr), PdnsError> {
    let bad = |why: &str| {
        PdnsError::Unexpected(format!(
            "pdns.api_url {api_url:?} {why}: give the API's address as seen on the app server, e.g. http://127.0.0.1:8081"
        ))
    };
    let url = Url::parse(api_url).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("is not http or https"));
    }
    let host = url.host_str().unwrap_or("");
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| bad("does not name an IP address"))?
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| bad("has no port"))?;
    Ok((url, SocketAddr::new(ip, port)))
}

/// `url` with its host and port replaced by `local`, without trailing '/'.
fn local_base(url: &Url, local: SocketAddr) -> String {
    let mut u = url.clone();
    // Both only fail for URLs that cannot have a host, which `api_address`
    // has already refused.
    let _ = u.set_ip_host(local.ip());
    let _ = u.set_port(Some(local.port()));
    u.set_query(None);
    u.set_fragment(None);
    u.as_str().trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::config::{Config, ServerConfig};
    use crate::exec::fake::FakeRemote;
    use crate::exec::{Fleet, Remote};
    use crate::state::Db;

    fn config(key_file: &std::path::Path, api_url: &str) -> Config {
        toml::from_str(&format!(
            r#"
[database]
url = "postgres://codeb@127.0.0.1:1/codeb"
[routing]
route_zone = "route.codeb.test"
route_target = "app.route.codeb.test"
base_domain = "codeb.test"
preview_domain = "preview.codeb.test"
public_http = "http://127.0.0.1:80"
[pdns]
api_url = "{api_url}"
api_key_file = "{}"
[[servers]]
name = "app"
roles = ["app"]
address = "10.0.0.1"
"#,
            key_file.display()
        ))
        .unwrap()
    }

    fn key_file(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("codeb-ops-pdns-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        std::fs::write(&p, "test-key\n").unwrap();
        p
    }

    fn ctx(config: Config, fake: Arc<FakeRemote>) -> Ctx {
        let server: ServerConfig = config.servers[0].clone();
        let fleet = Fleet::from_parts(vec![(server, fake as Arc<dyn Remote>)]);
        let db = Db::from_config(&config);
        Ctx::from_parts(config, fleet, db)
    }

    /// A PowerDNS stand-in that answers every request 200 `{}` and counts them.
    async fn fake_api() -> (SocketAddr, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({"id": "localhost"}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, hits)
    }

    fn on_server() -> SocketAddr {
        "127.0.0.1:8081".parse().unwrap()
    }

    #[tokio::test]
    async fn client_goes_through_the_forward_and_is_reused() {
        let (local, hits) = fake_api().await;
        let fake = Arc::new(FakeRemote::new("app", vec![]).with_forward(on_server(), local));
        let ctx = ctx(
            config(&key_file("reuse"), "http://127.0.0.1:8081"),
            fake.clone(),
        );
        let a = pdns_client(&ctx).await.unwrap();
        assert_eq!(a.base_url(), format!("http://{local}"));
        a.ping().await.unwrap();
        let b = pdns_client(&ctx).await.unwrap();
        assert_eq!(b.base_url(), a.base_url());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            *fake.forward_calls.lock().unwrap(),
            vec![on_server(), on_server()]
        );
    }

    #[tokio::test]
    async fn failed_forward_is_unreachable_and_names_the_server() {
        let fake = Arc::new(FakeRemote::new("app", vec![]));
        let ctx = ctx(config(&key_file("nofwd"), "http://localhost:8081/"), fake);
        let e = pdns_client(&ctx).await.unwrap_err();
        assert!(matches!(e, PdnsError::Unreachable(_)), "{e:?}");
        assert!(e.to_string().contains("server app"), "{e}");
        assert!(e.to_string().contains("127.0.0.1:8081"), "{e}");
    }

    #[tokio::test]
    async fn with_pdns_retries_once_after_unreachable() {
        let (local, _) = fake_api().await;
        let fake = Arc::new(FakeRemote::new("app", vec![]).with_forward(on_server(), local));
        let ctx = ctx(config(&key_file("retry"), "http://127.0.0.1:8081"), fake);
        let calls = AtomicUsize::new(0);
        let r = with_pdns(&ctx, |c| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(PdnsError::Unreachable("first".into()))
                } else {
                    c.ping().await
                }
            }
        })
        .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Other errors are not retried.
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = with_pdns(&ctx, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(PdnsError::Unexpected("no".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn api_addresses() {
        let (_, a) = api_address("http://127.0.0.1:8081").unwrap();
        assert_eq!(a, on_server());
        let (_, a) = api_address("http://localhost/").unwrap();
        assert_eq!(a, "127.0.0.1:80".parse().unwrap());
        let (_, a) = api_address("http://[::1]:8081").unwrap();
        assert_eq!(a, "[::1]:8081".parse().unwrap());
        for bad in [
            "pdns.internal:8081",
            "ftp://127.0.0.1/",
            "http://pdns.internal:8081",
        ] {
            let e = api_address(bad).unwrap_err();
            assert!(e.to_string().contains("pdns.api_url"), "{e}");
        }
    }

    #[test]
    fn local_base_keeps_scheme_and_path() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (u, _) = api_address("http://127.0.0.1:8081/").unwrap();
        assert_eq!(local_base(&u, local), "http://127.0.0.1:40000");
        let (u, _) = api_address("https://localhost:8443/pdns?x=1").unwrap();
        assert_eq!(local_base(&u, local), "https://127.0.0.1:40000/pdns");
    }
}
