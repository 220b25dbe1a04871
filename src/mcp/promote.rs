//! `promote` and `rollback`: move traffic between slots with one atomic
//! route change, verified through Caddy.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::longop::run_long;
use crate::mcp::CodebServer;
use crate::model::{Environment, SlotName};
use crate::ops::lifecycle::{self, Outcome, SwitchOutcome};
use crate::plan::switch::SwitchPlan;

/// Input of promote.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteParams {
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// Result of promote or rollback.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SwitchResult {
    /// One line for the reader.
    pub summary: String,
    /// True when only planned.
    pub dry_run: bool,
    /// Deployment id of this switch; absent in a dry run.
    pub deployment_id: Option<String>,
    /// Slot that receives traffic.
    pub active: SlotName,
    /// Its port (seen in X-CodeB-Upstream through Caddy).
    pub port: u16,
    /// Its image.
    pub image: Option<String>,
    /// Slot kept behind as fallback.
    pub previous: Option<SlotName>,
    /// State of that slot now (grace after promote, deployed after rollback).
    pub previous_state: Option<String>,
    /// Host names that moved.
    pub hosts: Vec<String>,
    /// Milliseconds until the switch was confirmed through Caddy.
    pub switch_visible_ms: Option<u64>,
    /// The planned switch (dry run).
    pub plan: Option<String>,
    /// Env version of the slot now serving (absent: no variables).
    pub env_version: Option<i32>,
    /// Env keys that differ from the slot that lost traffic: names and fingerprints, never values.
    pub env_changes: Vec<crate::plan::envvars::KeyChange>,
}

pub(crate) fn switch_result(
    operation: &str,
    project: &str,
    env: Environment,
    o: Outcome<SwitchPlan, SwitchOutcome>,
) -> SwitchResult {
    match o {
        Outcome::Planned(p) => SwitchResult {
            summary: format!(
                "dry run: {operation} would route {} to {} (port {}); nothing changed",
                p.hosts.join(", "),
                p.to,
                p.to_port
            ),
            dry_run: true,
            deployment_id: None,
            active: p.to,
            port: p.to_port,
            image: p.to_image.clone(),
            previous: p.from,
            previous_state: p.from_state.map(|s| s.as_str().to_string()),
            hosts: p.hosts.clone(),
            switch_visible_ms: None,
            plan: Some(p.to_string()),
            env_version: None,
            env_changes: Vec::new(),
        },
        Outcome::Done(d) => SwitchResult {
            summary: format!(
                "{operation} done: {project} {env} now serves {} from {} (port {}){}{}",
                d.image.as_deref().unwrap_or("?"),
                d.active,
                d.port,
                match (d.previous, &d.previous_state) {
                    (Some(s), Some(st)) => format!("; {s} is {st}"),
                    _ => String::new(),
                },
                if d.env_changes.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; env v{} -> v{} changes {}",
                        d.env_versions.0.map_or("-".into(), |v| v.to_string()),
                        d.env_versions.1.map_or("-".into(), |v| v.to_string()),
                        d.env_changes
                            .iter()
                            .map(|c| format!("{} ({})", c.key, c.change))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
            dry_run: false,
            deployment_id: Some(d.deployment_id.to_string()),
            active: d.active,
            port: d.port,
            image: d.image,
            previous: d.previous,
            previous_state: d.previous_state,
            hosts: d.hosts,
            switch_visible_ms: Some(d.switch_visible_ms),
            plan: None,
            env_version: d.env_versions.1,
            env_changes: d.env_changes,
        },
    }
}

#[tool_router(router = promote_router, vis = "pub(crate)")]
impl CodebServer {
    /// Send traffic to the deployed slot: re-probe, atomic route switch (previous slot as fallback) verified through Caddy; undone if that fails.
    #[tool(
        name = "promote",
        title = "Promote the deployed slot",
        annotations(
            title = "Promote the deployed slot",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn promote(
        &self,
        Parameters(p): Parameters<PromoteParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<SwitchResult>, String> {
        let ctx = self.ctx_arc();
        let caller = self.caller();
        let (project, env) = (p.project.clone(), p.environment);
        let o = run_long(&context, move |progress, abort| async move {
            lifecycle::promote(
                &ctx,
                &p.project,
                p.environment,
                p.dry_run,
                &caller,
                progress,
                abort,
            )
            .await
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(Json(switch_result("promote", &project, env, o)))
    }
}
