//! `health_check`: is every server reachable, and is every service of its
//! roles answering?

use futures::future::join_all;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::model::{describe_input, is_valid_server_name, ServerRole};
use crate::ops::health::check_server;

/// Input of health_check.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckParams {
    /// Only this server (name from codeb.toml).
    #[serde(default)]
    pub server: Option<String>,
}

/// Health of one service.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServiceHealth {
    /// Service name: podman, caddy_admin, pdns_api, postgres, redis, registry, streaming_health or backup_disk.
    pub service: String,
    /// True when the service answered as expected.
    pub healthy: bool,
    /// Version, HTTP status, free space or the error seen.
    pub detail: String,
    /// Time the probe took, in milliseconds.
    pub latency_ms: u64,
}

/// Health of one server.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServerHealth {
    /// Server name.
    pub name: String,
    /// Roles the server holds.
    pub roles: Vec<ServerRole>,
    /// True when the server is reachable and every service is healthy.
    pub healthy: bool,
    /// True when a command could be run there.
    pub reachable: bool,
    /// Round trip of a no-op command, in milliseconds.
    pub latency_ms: Option<u64>,
    /// Why the server is unreachable.
    pub error: Option<String>,
    /// Per-service results (empty when unreachable).
    pub services: Vec<ServiceHealth>,
}

/// Result of health_check.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthCheckResult {
    /// One line for the reader: how many servers are healthy and which are not.
    pub summary: String,
    /// True when every checked server is healthy and the state database answers.
    pub healthy: bool,
    /// codeb's own state database.
    pub database: DatabaseHealth,
    /// Each checked server.
    pub servers: Vec<ServerHealth>,
    /// Your team's project environments with an active slot (all servers only; capped).
    pub environments: Vec<crate::ops::health::EnvHealth>,
    /// Environments with an active slot not checked because of the cap.
    pub environments_skipped: usize,
}

/// Health of codeb's state database.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DatabaseHealth {
    /// True when a query succeeded.
    pub healthy: bool,
    /// Round-trip time or the error.
    pub detail: String,
}

#[tool_router(router = health_check_router, vis = "pub(crate)")]
impl CodebServer {
    /// Check each server (SSH, latency, its services), the state database and, without `server`, each environment's slots and route through Caddy (capped).
    #[tool(
        name = "health_check",
        title = "Check fleet health",
        annotations(
            title = "Check fleet health",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn health_check(
        &self,
        Parameters(p): Parameters<HealthCheckParams>,
    ) -> Result<Json<HealthCheckResult>, String> {
        let ctx = self.ctx();
        if let Some(name) = &p.server {
            if !is_valid_server_name(name) || !ctx.fleet.servers().any(|(s, _)| &s.name == name) {
                let known: Vec<_> = ctx.fleet.servers().map(|(s, _)| s.name.as_str()).collect();
                return Err(format!(
                    "unknown server {}; known servers: {}",
                    describe_input(name),
                    known.join(", ")
                ));
            }
        }
        let config = ctx.config.clone();
        let checks = ctx
            .fleet
            .servers()
            .filter(|(s, _)| p.server.as_ref().is_none_or(|n| &s.name == n))
            .map(|(s, r)| check_server(&config, s, r.clone()));
        // Environments of the caller's team's projects only (DESIGN §6).
        let team = self.caller_team();
        let envs = async {
            if p.server.is_some() {
                return Ok((Vec::new(), 0));
            }
            crate::ops::health::check_environments(ctx, &team).await
        };
        let (reports, db, envs) = tokio::join!(join_all(checks), ctx.db.ping(), envs);
        let database = match db {
            Ok(d) => DatabaseHealth {
                healthy: true,
                detail: format!("query answered in {} ms", d.as_millis()),
            },
            Err(e) => DatabaseHealth {
                healthy: false,
                detail: e.to_string(),
            },
        };
        let servers: Vec<ServerHealth> = reports
            .into_iter()
            .map(|r| ServerHealth {
                healthy: r.healthy(),
                name: r.name,
                roles: r.roles,
                reachable: r.reachable,
                latency_ms: r.latency_ms,
                error: r.error,
                services: r
                    .services
                    .into_iter()
                    .map(|s| ServiceHealth {
                        service: s.service,
                        healthy: s.healthy,
                        detail: s.detail,
                        latency_ms: s.latency_ms,
                    })
                    .collect(),
            })
            .collect();
        let ok = servers.iter().filter(|s| s.healthy).count();
        let problems: Vec<String> = servers
            .iter()
            .filter(|s| !s.healthy)
            .map(|s| {
                if !s.reachable {
                    format!("{} unreachable", s.name)
                } else {
                    let bad: Vec<_> = s
                        .services
                        .iter()
                        .filter(|x| !x.healthy)
                        .map(|x| x.service.as_str())
                        .collect();
                    format!("{}: {} unhealthy", s.name, bad.join(", "))
                }
            })
            .collect();
        let mut summary = format!("{ok}/{} servers healthy", servers.len());
        if !problems.is_empty() {
            summary.push_str(&format!(" ({})", problems.join("; ")));
        }
        if !database.healthy {
            summary.push_str("; state database unavailable");
        }
        let (environments, total) = envs.unwrap_or_default();
        let skipped = total.saturating_sub(environments.len());
        if total > 0 {
            let bad: Vec<String> = environments
                .iter()
                .filter(|e| !e.healthy)
                .map(|e| format!("{} {}", e.project, e.environment))
                .collect();
            summary.push_str(&format!(
                "; {}/{} environments healthy",
                environments.len() - bad.len(),
                environments.len()
            ));
            if !bad.is_empty() {
                summary.push_str(&format!(" (unhealthy: {})", bad.join(", ")));
            }
            if skipped > 0 {
                summary.push_str(&format!(
                    "; {skipped} more not checked (cap {}): use slot_status per project",
                    crate::ops::health::MAX_ENVS_CHECKED
                ));
            }
        }
        Ok(Json(HealthCheckResult {
            healthy: ok == servers.len()
                && database.healthy
                && environments.iter().all(|e| e.healthy),
            summary,
            database,
            servers,
            environments,
            environments_skipped: skipped,
        }))
    }
}
