//! `slot_cleanup`: empty grace slots whose rollback window has passed.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::longop::run_long;
use crate::mcp::CodebServer;
use crate::model::{Environment, SlotName};
use crate::ops::lifecycle;

/// Input of slot_cleanup.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotCleanupParams {
    /// Only this project.
    #[serde(default)]
    pub project: Option<String>,
    /// Only this environment.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// One cleaned slot.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CleanedSlot {
    /// Project.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Slot emptied.
    pub slot: SlotName,
    /// Container removed.
    pub container: String,
    /// Deployment id of the cleanup (absent in a dry run).
    pub deployment_id: Option<String>,
}

/// Result of slot_cleanup.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SlotCleanupResult {
    /// One line for the reader.
    pub summary: String,
    /// True when only listed.
    pub dry_run: bool,
    /// Slots emptied (or that would be).
    pub cleaned: Vec<CleanedSlot>,
}

#[tool_router(router = slot_cleanup_router, vis = "pub(crate)")]
impl CodebServer {
    /// Empty grace slots whose rollback window expired: remove their containers and routes. Never touches an active slot.
    #[tool(
        name = "slot_cleanup",
        title = "Clean up expired grace slots",
        annotations(
            title = "Clean up expired grace slots",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn slot_cleanup(
        &self,
        Parameters(p): Parameters<SlotCleanupParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<SlotCleanupResult>, String> {
        let ctx = self.ctx_arc();
        let caller = self.caller();
        let dry_run = p.dry_run;
        let done = run_long(&context, move |progress, _abort| async move {
            lifecycle::slot_cleanup(
                &ctx,
                p.project.as_deref(),
                p.environment,
                p.dry_run,
                &caller,
                progress,
            )
            .await
        })
        .await
        .map_err(|e| e.to_string())?;
        let cleaned: Vec<CleanedSlot> = done
            .into_iter()
            .map(|c| CleanedSlot {
                project: c.project,
                environment: c.environment,
                slot: c.slot,
                container: c.container,
                deployment_id: c.deployment_id.map(|d| d.to_string()),
            })
            .collect();
        let list = cleaned
            .iter()
            .map(|c| format!("{} {} {}", c.project, c.environment, c.slot))
            .collect::<Vec<_>>()
            .join(", ");
        let summary = match (cleaned.len(), dry_run) {
            (0, _) => "no expired grace slots".to_string(),
            (n, true) => format!("dry run: would clean {n} slot(s): {list}"),
            (n, false) => format!("cleaned {n} slot(s): {list}"),
        };
        Ok(Json(SlotCleanupResult {
            summary,
            dry_run,
            cleaned,
        }))
    }
}
