//! `domain_setup`: point a domain at the app server (PowerDNS A/AAAA,
//! checked over DNS) and route it to a project environment's active slot
//! (SRV rrset, checked through Caddy). Undone on failure. Names codeb did
//! not make are replaced only on an owner's `takeover` (recorded).

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::longop::run_long;
use crate::mcp::CodebServer;
use crate::model::Environment;
use crate::ops::domains::{self, DomainRoute};

/// Input of domain_setup.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainSetupParams {
    /// Project name.
    pub project: String,
    /// production, staging or preview.
    pub environment: Environment,
    /// Domain, e.g. `shop.example.com` (punycode, no wildcards).
    pub domain: String,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
    /// Owner only: replace records codeb did not make.
    #[serde(default)]
    pub takeover: bool,
}

/// Result of domain_setup.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DomainSetupResult {
    /// One line for the reader.
    pub summary: String,
    /// True when only planned.
    pub dry_run: bool,
    /// The domain, normalised.
    pub domain: String,
    /// Operation id (deployment_get); absent in a dry run.
    pub deployment_id: Option<String>,
    /// PowerDNS zone holding its records.
    pub zone: Option<String>,
    /// True when the zone was created now.
    pub zone_created: bool,
    /// Addresses its A/AAAA records name.
    pub addresses: Vec<String>,
    /// What the authoritative server answered.
    pub dns_answer: Vec<String>,
    /// ok or pending.
    pub dns_state: String,
    /// ok, or pending until the environment has an active slot.
    pub route_state: String,
    /// Where it routes.
    pub route: Option<DomainRoute>,
    /// Steps planned or done.
    pub steps: Vec<String>,
}

#[tool_router(router = domain_setup_router, vis = "pub(crate)")]
impl CodebServer {
    /// Point a domain at the app server (A/AAAA, DNS-checked), route it to the environment's active slot (Caddy-checked); undone on failure.
    #[tool(
        name = "domain_setup",
        title = "Set up a domain",
        annotations(
            title = "Set up a domain",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn domain_setup(
        &self,
        Parameters(p): Parameters<DomainSetupParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DomainSetupResult>, String> {
        let ctx = self.ctx_arc();
        let caller = self.caller();
        let dry_run = p.dry_run;
        let (o, p) = run_long(&context, move |progress, abort| async move {
            domains::domain_setup(
                &ctx,
                &p.project,
                p.environment,
                &p.domain,
                p.dry_run,
                p.takeover,
                &caller,
                progress,
                abort,
            )
            .await
            .map(|o| (o, p))
        })
        .await
        .map_err(|e| e.to_string())?;
        let strings = |v: &[std::net::IpAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let summary = if dry_run {
            format!(
                "dry run: would set up {} for {} {} in {} steps{}; nothing changed",
                o.domain,
                p.project,
                p.environment,
                o.steps.len(),
                if o.took_over.is_empty() {
                    String::new()
                } else {
                    format!(", taking over {}", o.took_over.join(", "))
                }
            )
        } else {
            let route = match &o.route {
                Some(r) if o.route_state == "ok" => {
                    format!(
                        "routed to {} (port {}), checked through Caddy",
                        r.slot, r.port
                    )
                }
                _ => "route pending: no active slot yet, the first promote routes it".into(),
            };
            let took_over = if o.took_over.is_empty() {
                String::new()
            } else {
                format!(
                    "took over (recorded): replaced {}; ",
                    o.took_over.join(", ")
                )
            };
            format!(
                "{}{took_over}{} answers {} over DNS; {route}",
                if o.already {
                    "already set up, checked again: "
                } else {
                    ""
                },
                o.domain,
                strings(&o.dns_answer).join(", ")
            )
        };
        Ok(Json(DomainSetupResult {
            summary,
            dry_run,
            deployment_id: o.deployment_id.map(|u| u.to_string()),
            zone: o.zone,
            zone_created: o.zone_created,
            addresses: strings(&o.addresses),
            dns_answer: strings(&o.dns_answer),
            dns_state: o.dns_state,
            route_state: o.route_state,
            route: o.route,
            steps: o.steps,
            domain: o.domain,
        }))
    }
}
