//! health_check: per server reachability and per-role services, run
//! concurrently on every server with bounded time.

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;

use crate::config::{Config, ServerConfig};
use crate::exec::Remote;
use crate::model::ServerRole;
use crate::plan::health::{interpret, probes_for_role, reachability_probe, ProbeTargets};

/// Health of one service on one server.
#[derive(Debug, Clone)]
pub struct ServiceReport {
    /// Service name.
    pub service: String,
    /// Healthy or not.
    pub healthy: bool,
    /// Detail (version, status, error).
    pub detail: String,
    /// Probe wall time in milliseconds.
    pub latency_ms: u64,
}

/// Health of one server.
#[derive(Debug, Clone)]
pub struct ServerReport {
    /// Server name.
    pub name: String,
    /// Roles it holds.
    pub roles: Vec<ServerRole>,
    /// Address from config.
    pub address: String,
    /// True when a command ran there.
    pub reachable: bool,
    /// Round trip of the reachability probe, when reachable.
    pub latency_ms: Option<u64>,
    /// Why it is unreachable.
    pub error: Option<String>,
    /// Per-service results (empty when unreachable).
    pub services: Vec<ServiceReport>,
}

impl ServerReport {
    /// Reachable and every service healthy.
    pub fn healthy(&self) -> bool {
        self.reachable && self.services.iter().all(|s| s.healthy)
    }
}

/// Probe targets from config.
pub fn probe_targets(config: &Config) -> ProbeTargets {
    let (host, port) = postgres_host_port(&config.database.url);
    ProbeTargets {
        caddy_admin: config.caddy.admin_addr.clone(),
        pdns_api_url: config.pdns.api_url.clone(),
        postgres_host: host,
        postgres_port: port,
        registry: config.registry.address.clone(),
        streaming_health_url: config.streaming.health_url.clone(),
    }
}

fn postgres_host_port(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(5432)),
        None => (
            if hostport.is_empty() {
                "127.0.0.1".into()
            } else {
                hostport.to_string()
            },
            5432,
        ),
    }
}

/// Checks one server: reachability first, then every role's probes at once.
pub async fn check_server(
    config: &Config,
    server: &ServerConfig,
    remote: Arc<dyn Remote>,
) -> ServerReport {
    let targets = probe_targets(config);
    let mut report = ServerReport {
        name: server.name.clone(),
        roles: server.roles.clone(),
        address: server.address.clone(),
        reachable: false,
        latency_ms: None,
        error: None,
        services: Vec::new(),
    };
    let started = Instant::now();
    match remote.run(&reachability_probe()).await {
        Ok(out) if out.success() => {
            report.reachable = true;
            report.latency_ms = Some(started.elapsed().as_millis() as u64);
        }
        Ok(out) => {
            report.error = Some(format!(
                "`true` exited with {:?}: {}",
                out.status,
                out.stderr_tail()
            ));
            return report;
        }
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    }
    let probes: Vec<_> = server
        .roles
        .iter()
        .flat_map(|r| probes_for_role(*r, &targets))
        .collect();
    let runs = probes.iter().map(|p| {
        let remote = remote.clone();
        async move {
            let started = Instant::now();
            let result = remote.run(&p.cmd).await;
            let latency_ms = started.elapsed().as_millis() as u64;
            let (healthy, detail) = match result {
                Ok(out) => {
                    let v = interpret(
                        &p.expect,
                        out.status,
                        &out.stdout_text(),
                        &out.stderr_tail(),
                    );
                    (v.healthy, v.detail)
                }
                Err(e) => (false, e.to_string()),
            };
            ServiceReport {
                service: p.service.to_string(),
                healthy,
                detail,
                latency_ms,
            }
        }
    });
    report.services = join_all(runs).await;
    report
}

/// Most project environments health_check probes in one call; the rest
/// are counted and named as skipped, so the tool stays fast.
pub const MAX_ENVS_CHECKED: usize = 25;
/// Probes in flight at once (direct slot probes and Caddy requests).
const ENV_PROBE_CONCURRENCY: usize = 8;
/// Limit of one slot probe or one request through Caddy.
const ENV_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Direct health of one slot.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct SlotHealth {
    /// blue or green.
    pub slot: String,
    /// active or deployed.
    pub state: String,
    /// Host port.
    pub port: u16,
    /// GET health path answered 200.
    pub healthy: bool,
    /// HTTP status or why there was no answer.
    pub detail: String,
}

/// Health of one project environment with an active slot.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct EnvHealth {
    /// Project.
    pub project: String,
    /// Environment.
    pub environment: String,
    /// Active and deployed slots, probed directly.
    pub slots: Vec<SlotHealth>,
    /// Host name requested through Caddy.
    pub route_host: String,
    /// Caddy answered 2xx from the active slot's port.
    pub route_ok: bool,
    /// Status and upstream seen through Caddy, or the error.
    pub route_detail: String,
    /// Every slot healthy and the route ok.
    pub healthy: bool,
}

/// Probes up to `MAX_ENVS_CHECKED` environments of `team`'s projects that
/// have an active slot: their active and deployed slots directly and the
/// route through Caddy, concurrently. Returns them and how many exist in all.
pub async fn check_environments(
    ctx: &crate::ops::Ctx,
    team: &str,
) -> Result<(Vec<EnvHealth>, usize), String> {
    use futures::StreamExt;
    let pool = ctx.db.pool().await.map_err(|e| e.to_string())?;
    let rows: Vec<(String, String, String, String, i32, String)> = sqlx::query_as(
        "SELECT p.name, s.environment, s.slot, s.state, pe.base_port, p.health_path
           FROM slots s
           JOIN projects p ON p.id = s.project_id
           JOIN project_environments pe ON pe.project_id = s.project_id AND pe.environment = s.environment
          WHERE p.deleted_at IS NULL AND s.state IN ('active', 'deployed') AND p.team_id = $1
            AND EXISTS (SELECT 1 FROM slots a WHERE a.project_id = s.project_id
                          AND a.environment = s.environment AND a.state = 'active')
          ORDER BY p.name, s.environment, s.slot",
    )
    .bind(team)
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    type Env = (String, String, String, Vec<(String, String, u16)>);
    let mut envs: Vec<Env> = Vec::new();
    for (project, env, slot, state, base, path) in rows {
        let port = (base as u16).saturating_add(u16::from(slot == "green"));
        match envs.last_mut() {
            Some(e) if e.0 == project && e.1 == env => e.3.push((slot, state, port)),
            _ => envs.push((project, env, path, vec![(slot, state, port)])),
        }
    }
    let total = envs.len();
    envs.truncate(MAX_ENVS_CHECKED);
    let caddy = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ENV_PROBE_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let base_url = ctx
        .config
        .routing
        .public_http
        .trim_end_matches('/')
        .to_string();
    let checks = envs.into_iter().map(|(project, env, path, slots)| {
        let caddy = caddy.clone();
        let base_url = base_url.clone();
        async move {
            let environment = crate::model::Environment::parse(&env)
                .unwrap_or(crate::model::Environment::Production);
            let route_host = crate::plan::dns::env_hostnames(
                &project,
                environment,
                &ctx.config.routing.base_domain,
            )
            .remove(0);
            let active_port = slots
                .iter()
                .find(|s| s.1 == "active")
                .map(|s| s.2)
                .unwrap_or(0);
            let probes = slots.iter().map(|(slot, state, port)| {
                let path = path.clone();
                async move {
                    let r =
                        crate::ops::probe::probe_slot(ctx, *port, &path, ENV_PROBE_TIMEOUT).await;
                    let (healthy, detail) = match r {
                        Ok(seen) => (seen.healthy(), seen.to_string()),
                        Err(e) => (false, e),
                    };
                    SlotHealth {
                        slot: slot.clone(),
                        state: state.clone(),
                        port: *port,
                        healthy,
                        detail,
                    }
                }
            });
            let route = caddy
                .get(format!("{base_url}/"))
                .header("host", route_host.as_str())
                .send();
            let (slots, route) = tokio::join!(join_all(probes), route);
            let (route_ok, route_detail) = match route {
                Ok(r) => {
                    let upstream = r
                        .headers()
                        .get(crate::ops::lifecycle::UPSTREAM_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let ok = r.status().is_success() && upstream == active_port.to_string();
                    (
                        ok,
                        format!("HTTP {} from upstream {upstream:?}", r.status().as_u16()),
                    )
                }
                Err(e) => (
                    false,
                    if e.is_timeout() {
                        "no answer in time".into()
                    } else {
                        e.to_string()
                    },
                ),
            };
            EnvHealth {
                healthy: route_ok && slots.iter().all(|s| s.healthy),
                project,
                environment: env,
                slots,
                route_host,
                route_ok,
                route_detail,
            }
        }
    });
    let checked: Vec<EnvHealth> = futures::stream::iter(checks)
        .buffered(ENV_PROBE_CONCURRENCY)
        .collect()
        .await;
    Ok((checked, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::{FakeAnswer, FakeRemote};

    fn server(roles: Vec<ServerRole>) -> ServerConfig {
        ServerConfig {
            name: "x".into(),
            roles,
            address: "10.0.0.1".into(),
            ssh_port: 22,
            ssh_user: "root".into(),
            ssh_key_file: None,
            known_hosts_file: None,
        }
    }

    fn config() -> Config {
        let toml = r#"
[database]
url = "postgres://codeb@10.77.0.12:5433/codeb"
[routing]
route_zone = "route.codeb.test"
route_target = "app.route.codeb.test"
base_domain = "codeb.test"
preview_domain = "preview.codeb.test"
public_http = "http://10.77.0.11:80"
[pdns]
api_url = "http://127.0.0.1:8081"
[registry]
address = "10.77.0.12:5000"
[[servers]]
name = "x"
roles = ["app"]
address = "local"
"#;
        toml::from_str(toml).unwrap()
    }

    #[tokio::test]
    async fn unreachable_server_runs_no_probes() {
        let fake = Arc::new(FakeRemote::new(
            "x",
            vec![("true", FakeAnswer::Unreachable)],
        ));
        let r = check_server(&config(), &server(vec![ServerRole::App]), fake.clone()).await;
        assert!(!r.reachable);
        assert!(!r.healthy());
        assert!(r.error.unwrap().contains("unreachable"));
        assert_eq!(
            fake.calls.lock().unwrap().len(),
            1,
            "only the reachability probe ran"
        );
    }

    #[tokio::test]
    async fn failing_service_is_reported_by_name() {
        let fake = Arc::new(FakeRemote::new(
            "x",
            vec![
                ("redis-cli", FakeAnswer::Timeout),
                ("curl", FakeAnswer::Output(0, "200".into())),
            ],
        ));
        let r = check_server(&config(), &server(vec![ServerRole::Storage]), fake.clone()).await;
        assert!(r.reachable);
        assert!(!r.healthy());
        let redis = r.services.iter().find(|s| s.service == "redis").unwrap();
        assert!(!redis.healthy);
        assert!(redis.detail.contains("did not finish"), "{}", redis.detail);
        assert!(
            r.services
                .iter()
                .find(|s| s.service == "registry")
                .unwrap()
                .healthy
        );
        let calls = fake.calls.lock().unwrap();
        assert!(calls.iter().any(|c| c
            == &vec![
                "pg_isready",
                "-q",
                "-t",
                "3",
                "-h",
                "10.77.0.12",
                "-p",
                "5433"
            ]));
    }
}
