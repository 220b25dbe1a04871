//! `project_list`: the registered projects, one page at a time.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::model::validate_project_name;
use crate::state;

/// Projects per page when `limit` is omitted.
pub const PROJECT_LIST_DEFAULT_LIMIT: u32 = 50;
/// Largest page.
pub const PROJECT_LIST_MAX_LIMIT: u32 = 200;

/// Input of project_list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectListParams {
    /// The previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Projects per page, 1-200 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One environment of a project.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvironmentPorts {
    /// Environment.
    pub environment: String,
    /// Host port of the blue slot.
    pub blue_port: u16,
    /// Host port of the green slot.
    pub green_port: u16,
}

/// One project.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProjectSummary {
    /// Project name.
    pub name: String,
    /// Owning team.
    pub team: String,
    /// Project type (nextjs, node, static, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Environments and their port pairs.
    pub environments: Vec<EnvironmentPorts>,
}

/// Result of project_list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProjectListResult {
    /// One line for the reader.
    pub summary: String,
    /// Projects on this page, ordered by name.
    pub projects: Vec<ProjectSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[tool_router(router = project_list_router, vis = "pub(crate)")]
impl CodebServer {
    /// List projects with team, type and port pairs, paginated.
    #[tool(
        name = "project_list",
        title = "List projects",
        annotations(
            title = "List projects",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn project_list(
        &self,
        Parameters(p): Parameters<ProjectListParams>,
    ) -> Result<Json<ProjectListResult>, String> {
        let limit = p.limit.unwrap_or(PROJECT_LIST_DEFAULT_LIMIT);
        if !(1..=PROJECT_LIST_MAX_LIMIT).contains(&limit) {
            return Err(format!(
                "limit must be between 1 and {PROJECT_LIST_MAX_LIMIT}, got {limit}"
            ));
        }
        if let Some(c) = &p.cursor {
            validate_project_name(c).map_err(|_| {
                "cursor is not one this server issued; omit it to start from the first page"
                    .to_string()
            })?;
        }
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        // One extra row tells whether another page follows.
        let mut rows = state::projects::projects_page(
            pool,
            Some(&self.caller_team()),
            p.cursor.as_deref(),
            i64::from(limit) + 1,
        )
        .await
        .map_err(|e| format!("{e}; check health_check"))?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| r.name.clone())
        } else {
            None
        };
        let projects: Vec<ProjectSummary> = rows
            .into_iter()
            .map(|r| ProjectSummary {
                name: r.name,
                team: r.team_id,
                kind: r.kind,
                environments: r
                    .environments
                    .into_iter()
                    .map(|(environment, base)| EnvironmentPorts {
                        environment,
                        blue_port: base as u16,
                        green_port: base as u16 + 1,
                    })
                    .collect(),
            })
            .collect();
        let summary = match (projects.len(), more) {
            (0, _) if p.cursor.is_none() => "no projects registered yet".to_string(),
            (n, true) => format!("{n} projects on this page; more follow (pass next_cursor)"),
            (n, false) => format!("{n} projects"),
        };
        Ok(Json(ProjectListResult {
            summary,
            projects,
            next_cursor,
        }))
    }
}
