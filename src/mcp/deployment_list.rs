//! `deployment_list` and `deployment_get`: the operation records.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::model::{validate_project_name, Environment};
use crate::state::deployments::{self, DeploymentRow};

/// Input of deployment_list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentListParams {
    /// Only this project.
    #[serde(default)]
    pub project: Option<String>,
    /// Only this environment.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Records per page, 1-100 (default 20).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One operation record.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentInfo {
    /// Deployment id.
    pub id: String,
    /// Project.
    pub project: String,
    /// Environment.
    pub environment: String,
    /// deploy, promote, rollback, slot_cleanup, ...
    pub operation: String,
    /// running, succeeded, failed or recovered.
    pub status: String,
    /// Target slot.
    pub slot: Option<String>,
    /// Image reference as asked for.
    pub image: Option<String>,
    /// Digest a deploy pulled and ran (`sha256:…`).
    pub image_digest: Option<String>,
    /// Who asked.
    pub principal: String,
    /// Recorded reason (rollback, production deploy override).
    pub reason: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// Start (RFC 3339).
    pub created_at: String,
    /// End (RFC 3339).
    pub finished_at: Option<String>,
}

pub(crate) fn info(r: DeploymentRow) -> DeploymentInfo {
    DeploymentInfo {
        id: r.id.to_string(),
        project: r.project,
        environment: r.environment,
        operation: r.operation,
        status: r.status,
        slot: r.slot,
        image: r.image,
        image_digest: r.image_digest,
        principal: r.principal,
        reason: r.reason,
        error: r.error,
        created_at: r.created_at.to_rfc3339(),
        finished_at: r.finished_at.map(|t| t.to_rfc3339()),
    }
}

/// Result of deployment_list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentListResult {
    /// One line for the reader.
    pub summary: String,
    /// Newest first.
    pub deployments: Vec<DeploymentInfo>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Input of deployment_get.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentGetParams {
    /// Deployment id.
    pub id: String,
}

/// One journal entry.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StepInfo {
    /// Order.
    pub seq: i32,
    /// Step name.
    pub step: String,
    /// Server it ran on.
    pub server: Option<String>,
    /// Command argument vector.
    pub argv: Vec<String>,
    /// Exit status.
    pub exit_status: Option<i32>,
    /// Last part of stderr, or a note.
    pub stderr_tail: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: Option<i32>,
}

/// Result of deployment_get.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentGetResult {
    /// One line for the reader.
    pub summary: String,
    /// The record.
    pub deployment: DeploymentInfo,
    /// The step journal in order.
    pub steps: Vec<StepInfo>,
}

fn parse_id(s: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(s).map_err(|_| {
        "id must be a deployment UUID as returned by deploy or deployment_list".to_string()
    })
}

#[tool_router(router = deployment_list_router, vis = "pub(crate)")]
impl CodebServer {
    /// List operation records (deploy, promote, rollback, ...) newest first, paginated.
    #[tool(
        name = "deployment_list",
        title = "List deployments",
        annotations(
            title = "List deployments",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn deployment_list(
        &self,
        Parameters(p): Parameters<DeploymentListParams>,
    ) -> Result<Json<DeploymentListResult>, String> {
        if let Some(pr) = &p.project {
            validate_project_name(pr).map_err(|e| e.0)?;
        }
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
        // Only the caller's team's projects (DESIGN §6), with or without `project`.
        let team = self.caller_team();
        let mut rows = deployments::deployments_page(
            pool,
            Some(&team),
            p.project.as_deref(),
            p.environment.map(Environment::as_str),
            after,
            i64::from(limit) + 1,
        )
        .await
        .map_err(|e| e.to_string())?;
        let next_cursor = crate::mcp::take_page(&mut rows, limit, |r| r.id.to_string());
        let deployments: Vec<DeploymentInfo> = rows.into_iter().map(info).collect();
        let summary = match deployments.first() {
            None => "no deployments".to_string(),
            Some(d) => format!(
                "{} record(s){}; latest: {} {} {} {}",
                deployments.len(),
                if next_cursor.is_some() {
                    " (more follow)"
                } else {
                    ""
                },
                d.operation,
                d.project,
                d.environment,
                d.status
            ),
        };
        Ok(Json(DeploymentListResult {
            summary,
            deployments,
            next_cursor,
        }))
    }

    /// Show one operation record with its step journal (argv, exit status, stderr tail, duration).
    #[tool(
        name = "deployment_get",
        title = "Show a deployment",
        annotations(
            title = "Show a deployment",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn deployment_get(
        &self,
        Parameters(p): Parameters<DeploymentGetParams>,
    ) -> Result<Json<DeploymentGetResult>, String> {
        let id = parse_id(&p.id)?;
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        let row = deployments::deployment_by_id(pool, id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("deployment {id} not found; deployment_list shows recent ones")
            })?;
        let (_, steps) = deployments::deployment_journal(pool, id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let steps: Vec<StepInfo> = steps
            .into_iter()
            .map(|s| StepInfo {
                seq: s.seq,
                step: s.step,
                server: s.server,
                argv: serde_json::from_value(s.argv).unwrap_or_default(),
                exit_status: s.exit_status,
                stderr_tail: s.stderr_tail,
                duration_ms: s.duration_ms,
            })
            .collect();
        let d = info(row);
        let summary = format!(
            "{} {} {} {}: {}{} ({} steps)",
            d.operation,
            d.project,
            d.environment,
            d.id,
            d.status,
            d.error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default(),
            steps.len()
        );
        Ok(Json(DeploymentGetResult {
            summary,
            deployment: d,
            steps,
        }))
    }
}
