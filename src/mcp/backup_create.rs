//! `backup_create`: dump a project environment's database to the backup
//! server, verified by size and SHA-256.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::longop::run_long;
use crate::mcp::CodebServer;
use crate::model::Environment;
use crate::ops::backup::{self, human_bytes, BackupOutcome};

/// Input of backup_create.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupCreateParams {
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// Result of backup_create.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BackupCreateResult {
    /// One line for the reader.
    pub summary: String,
    /// True when only planned.
    pub dry_run: bool,
    /// Backup id; absent in a dry run.
    pub backup_id: Option<String>,
    /// Database dumped.
    pub database: String,
    /// Backup server.
    pub server: String,
    /// Dump file on the backup server (pg_dump custom format).
    pub path: String,
    /// Size in bytes.
    pub size_bytes: Option<u64>,
    /// SHA-256 (hex), verified on the backup server.
    pub sha256: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: Option<u64>,
    /// The planned steps (dry run).
    pub plan: Option<Vec<String>>,
}

#[tool_router(router = backup_create_router, vis = "pub(crate)")]
impl CodebServer {
    /// Back up an environment's database: pg_dump streamed to the backup server, verified by size and SHA-256; a failure leaves no file.
    #[tool(
        name = "backup_create",
        title = "Back up a database",
        annotations(
            title = "Back up a database",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn backup_create(
        &self,
        Parameters(p): Parameters<BackupCreateParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<BackupCreateResult>, String> {
        let ctx = self.ctx_arc();
        let caller = self.caller();
        let (project, environment) = (p.project.clone(), p.environment);
        let outcome = run_long(&context, move |progress, _abort| async move {
            backup::backup_create(
                &ctx,
                &p.project,
                p.environment,
                p.dry_run,
                &caller,
                progress,
            )
            .await
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(Json(match outcome {
            BackupOutcome::Planned(plan) => BackupCreateResult {
                summary: format!(
                    "dry run: would dump {} from {} to {} on {}; nothing changed",
                    plan.database, plan.storage_server, plan.path, plan.backup_server
                ),
                dry_run: true,
                backup_id: None,
                database: plan.database,
                server: plan.backup_server,
                path: plan.path,
                size_bytes: None,
                sha256: None,
                duration_ms: None,
                plan: Some(plan.steps),
            },
            BackupOutcome::Done(d) => BackupCreateResult {
                summary: format!(
                    "backed up {project} {environment} ({}): {} on {}, {}, sha256 {}…, verified",
                    d.database,
                    d.path,
                    d.backup_server,
                    human_bytes(d.size_bytes),
                    &d.sha256[..12]
                ),
                dry_run: false,
                backup_id: Some(d.id.to_string()),
                database: d.database,
                server: d.backup_server,
                path: d.path,
                size_bytes: Some(d.size_bytes),
                sha256: Some(d.sha256),
                duration_ms: Some(d.duration_ms),
                plan: None,
            },
        }))
    }
}
