//! `project_create`: register a project and allocate its port pairs.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::project_list::EnvironmentPorts;
use crate::mcp::CodebServer;
use crate::model::{describe_input, validate_project_name};
use crate::state::{self, DbError};

/// Project types codeb knows.
pub const PROJECT_TYPES: &[&str] = &["nextjs", "node", "static", "python", "go", "rust", "other"];

/// Input of project_create.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreateParams {
    /// Project name: 3-32 characters, lowercase letters, digits and '-', starting with a letter.
    pub project: String,
    /// Project type: nextjs, node, static, python, go, rust or other (default node).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Only check and report; register nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Result of project_create.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProjectCreateResult {
    /// One line for the reader.
    pub summary: String,
    /// True when only checked.
    pub dry_run: bool,
    /// Project name.
    pub project: String,
    /// Owning team.
    pub team: String,
    /// Port pairs allocated per environment (empty in a dry run).
    pub environments: Vec<EnvironmentPorts>,
}

#[tool_router(router = project_create_router, vis = "pub(crate)")]
impl CodebServer {
    /// Register a new project under the caller's team with production, staging and preview environments, each with its blue/green host port pair (lowest free pair, unique by a database constraint). Fails clearly if the name is taken or a port range is full.
    #[tool(
        name = "project_create",
        title = "Create a project",
        annotations(
            title = "Create a project",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn project_create(
        &self,
        Parameters(p): Parameters<ProjectCreateParams>,
    ) -> Result<Json<ProjectCreateResult>, String> {
        validate_project_name(&p.project).map_err(|e| e.0)?;
        let kind = p.kind.clone().unwrap_or_else(|| "node".into());
        if !PROJECT_TYPES.contains(&kind.as_str()) {
            return Err(format!(
                "type {} is not one of {}",
                describe_input(&kind),
                PROJECT_TYPES.join(", ")
            ));
        }
        let team = self.caller_team();
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        if p.dry_run {
            let exists = state::projects::project_by_name(pool, &p.project)
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            return Ok(Json(ProjectCreateResult {
                summary: if exists {
                    format!(
                        "dry run: project {} already exists; project_create would fail",
                        p.project
                    )
                } else {
                    format!("dry run: would register project {} ({kind}) for team {team}; nothing changed", p.project)
                },
                dry_run: true,
                project: p.project,
                team,
                environments: Vec::new(),
            }));
        }
        state::projects::project_insert(pool, &p.project, &team, &kind)
            .await
            .map_err(|e| match e {
                DbError::Conflict { message, .. } => message,
                other => other.to_string(),
            })?;
        let row = state::projects::project_by_name(pool, &p.project)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("project vanished right after creation")?;
        let environments: Vec<EnvironmentPorts> = row
            .environments
            .into_iter()
            .map(|(environment, base)| EnvironmentPorts {
                environment,
                blue_port: base as u16,
                green_port: base as u16 + 1,
            })
            .collect();
        Ok(Json(ProjectCreateResult {
            summary: format!(
                "registered {} ({kind}) for team {team}: {}",
                p.project,
                environments
                    .iter()
                    .map(|e| format!("{} {}/{}", e.environment, e.blue_port, e.green_port))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            dry_run: false,
            project: p.project,
            team,
            environments,
        }))
    }
}
