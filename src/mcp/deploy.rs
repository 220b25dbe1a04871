//! `deploy`: put an image into the inactive slot, health-gated, with a
//! preview URL. Traffic does not move until `promote`.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::longop::run_long;
use crate::mcp::CodebServer;
use crate::model::{Environment, SlotName};
use crate::ops::lifecycle::{self, Outcome};

/// Input of deploy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployParams {
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Image reference to run, e.g. `registry:5000/app:v2`.
    pub image: String,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
    /// E.g. a CI run id; repeating it returns the same deployment.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Admins: why production may skip the staging check (recorded).
    #[serde(default)]
    pub override_reason: Option<String>,
}

/// Result of deploy.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeployResult {
    /// One line for the reader.
    pub summary: String,
    /// True when only planned.
    pub dry_run: bool,
    /// Deployment id (poll with deployment_get); absent in a dry run.
    pub deployment_id: Option<String>,
    /// Slot filled.
    pub slot: SlotName,
    /// Host port of the slot.
    pub port: u16,
    /// Image reference as asked for.
    pub image: String,
    /// Digest the container runs (`REPOSITORY@` it); in a dry run, the one
    /// it will run when known (production: the digest staging ran).
    pub digest: Option<String>,
    /// Preview URL of the slot through Caddy.
    pub preview_url: Option<String>,
    /// Health gate result.
    pub health: Option<String>,
    /// The planned steps (dry run).
    pub plan: Option<Vec<String>>,
    /// Things to know, e.g. a grace release is replaced.
    pub warnings: Vec<String>,
    /// True when an earlier deployment with the same idempotency key is returned.
    pub replayed: bool,
    /// Env version the container runs with (absent: no variables, or a dry run).
    pub env_version: Option<i32>,
    /// Production policy verdict: staged first, or overridden.
    pub policy: Option<String>,
}

#[tool_router(router = deploy_router, vis = "pub(crate)")]
impl CodebServer {
    /// Deploy an image into the inactive slot (pull, run with the latest env, health-gate, preview URL); promote moves traffic. Production needs its digest healthy in staging.
    #[tool(
        name = "deploy",
        title = "Deploy an image",
        annotations(
            title = "Deploy an image",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn deploy(
        &self,
        Parameters(p): Parameters<DeployParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DeployResult>, String> {
        let ctx = self.ctx_arc();
        let caller = self.caller();
        let outcome = run_long(&context, move |progress, abort| async move {
            lifecycle::deploy(
                &ctx,
                &p.project,
                p.environment,
                &p.image,
                p.idempotency_key.as_deref(),
                p.override_reason.as_deref(),
                p.dry_run,
                &caller,
                progress,
                abort,
            )
            .await
            .map(|o| (o, p))
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(Json(match outcome {
            (Outcome::Planned(plan), p) => DeployResult {
                summary: format!(
                    "dry run: would deploy {}{} into {} {} {} (port {}){}; nothing changed",
                    p.image,
                    plan.digest
                        .as_deref()
                        .map(|d| format!(" as {d}"))
                        .unwrap_or_default(),
                    p.project,
                    p.environment,
                    plan.slot,
                    plan.port,
                    plan.policy
                        .as_deref()
                        .map(|v| format!("; policy {v}"))
                        .unwrap_or_default()
                ),
                dry_run: true,
                deployment_id: None,
                slot: plan.slot,
                port: plan.port,
                image: p.image,
                digest: plan.digest,
                preview_url: None,
                health: None,
                plan: Some(plan.steps.iter().map(|s| s.to_string()).collect()),
                warnings: plan.warnings,
                replayed: false,
                env_version: None,
                policy: plan.policy,
            },
            (Outcome::Done(d), p) => DeployResult {
                summary: format!(
                    "{}deployed {}{} to {} {} {} (port {}), healthy; preview {}; promote to send traffic",
                    if d.replayed { "already " } else { "" },
                    d.image,
                    d.digest
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default(),
                    p.project,
                    p.environment,
                    d.slot,
                    d.port,
                    d.preview_url
                ),
                dry_run: false,
                deployment_id: Some(d.deployment_id.to_string()),
                slot: d.slot,
                port: d.port,
                image: d.image,
                digest: d.digest,
                preview_url: Some(d.preview_url),
                health: Some(d.health),
                plan: None,
                warnings: d.warnings,
                replayed: d.replayed,
                env_version: d.env_version,
                policy: d.policy,
            },
        }))
    }
}
