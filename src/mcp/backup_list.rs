//! `backup_list`: a project's database backups, newest first.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::model::{validate_project_name, Environment};
use crate::state::backups::{self, BackupRow};

/// Input of backup_list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupListParams {
    /// Project name.
    pub project: String,
    /// Only this environment.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Backups per page, 1-100 (default 20).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One backup.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BackupInfo {
    /// Backup id.
    pub id: String,
    /// Environment.
    pub environment: String,
    /// Dump file on the backup server.
    pub path: String,
    /// Size in bytes (succeeded only).
    pub size_bytes: Option<i64>,
    /// SHA-256 hex (succeeded only).
    pub sha256: Option<String>,
    /// running, succeeded or failed.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Start (RFC 3339).
    pub created_at: String,
    /// End (RFC 3339).
    pub finished_at: Option<String>,
}

fn info(r: BackupRow) -> BackupInfo {
    BackupInfo {
        id: r.id.to_string(),
        environment: r.environment,
        path: r.path,
        size_bytes: r.size_bytes,
        sha256: r.sha256,
        status: r.status,
        error: r.error,
        created_at: r.created_at.to_rfc3339(),
        finished_at: r.finished_at.map(|t| t.to_rfc3339()),
    }
}

/// Result of backup_list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BackupListResult {
    /// One line for the reader.
    pub summary: String,
    /// Newest first.
    pub backups: Vec<BackupInfo>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[tool_router(router = backup_list_router, vis = "pub(crate)")]
impl CodebServer {
    /// List a project's backups newest first (path, size, SHA-256, status), paginated.
    #[tool(
        name = "backup_list",
        title = "List backups",
        annotations(
            title = "List backups",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn backup_list(
        &self,
        Parameters(p): Parameters<BackupListParams>,
    ) -> Result<Json<BackupListResult>, String> {
        validate_project_name(&p.project).map_err(|e| e.0)?;
        let limit = crate::mcp::page_limit(p.limit, 20)?;
        let after = p
            .cursor
            .as_deref()
            .map(|c| {
                uuid::Uuid::parse_str(c).map_err(|_| {
                    "cursor is not one this server issued; omit it to start again".to_string()
                })
            })
            .transpose()?;
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        if crate::state::projects::project_by_name(pool, &p.project)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!(
                "project {:?} not found; project_list shows the registered projects",
                p.project
            ));
        }
        let mut rows = backups::backups_page(
            pool,
            &p.project,
            p.environment.map(Environment::as_str),
            after,
            i64::from(limit) + 1,
        )
        .await
        .map_err(|e| e.to_string())?;
        let next_cursor = crate::mcp::take_page(&mut rows, limit, |r| r.id.to_string());
        let backups: Vec<BackupInfo> = rows.into_iter().map(info).collect();
        let summary = match backups.first() {
            None => format!("no backups of {}; backup_create makes one", p.project),
            Some(b) => format!(
                "{} backup(s) of {}{}; latest: {} {} {}",
                backups.len(),
                p.project,
                if next_cursor.is_some() {
                    " (more follow)"
                } else {
                    ""
                },
                b.environment,
                b.status,
                b.created_at
            ),
        };
        Ok(Json(BackupListResult {
            summary,
            backups,
            next_cursor,
        }))
    }
}
