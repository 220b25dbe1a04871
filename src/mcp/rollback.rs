//! `rollback`: send traffic back to the grace slot.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::mcp::longop::run_long;
use crate::mcp::promote::{switch_result, SwitchResult};
use crate::mcp::CodebServer;
use crate::model::Environment;
use crate::ops::lifecycle;

/// Input of rollback.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackParams {
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Why (recorded).
    #[serde(default)]
    pub reason: Option<String>,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

#[tool_router(router = rollback_router, vis = "pub(crate)")]
impl CodebServer {
    /// Send traffic back to the grace slot (while unexpired and healthy): atomic switch verified through Caddy; names env keys that differ.
    #[tool(
        name = "rollback",
        title = "Roll back to the grace slot",
        annotations(
            title = "Roll back to the grace slot",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn rollback(
        &self,
        Parameters(p): Parameters<RollbackParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<SwitchResult>, String> {
        let ctx = self.ctx_arc();
        let caller = self.caller();
        let (project, env) = (p.project.clone(), p.environment);
        let o = run_long(&context, move |progress, abort| async move {
            lifecycle::rollback(
                &ctx,
                &p.project,
                p.environment,
                p.reason.as_deref(),
                p.dry_run,
                &caller,
                progress,
                abort,
            )
            .await
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(Json(switch_result("rollback", &project, env, o)))
    }
}
