//! `project_create`: register a project, allocate its port pairs and
//! provision its storage (database, Redis user, protected env variables).

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::model::{describe_input, validate_project_name, Environment, StorageNames};
use crate::ops::project::{check_new_project_name, create_project, CreateError};
use crate::plan::storage::{env_local_text, PROTECTED_KEYS, REDIS_PREFIX_KEY};
use crate::state;
/// Project types codeb knows.
pub const PROJECT_TYPES: &[&str] = &["nextjs", "node", "static", "python", "go", "rust", "other"];

/// Input of project_create.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreateParams {
    /// Project name: 3-32 of a-z, 0-9 and '-', starting with a letter.
    pub project: String,
    /// nextjs, node, static, python, go, rust or other (default node).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// One environment of the created project. Never holds a secret value.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CreatedEnvironment {
    /// Environment.
    pub environment: String,
    /// Host port of the blue slot (null in a dry run).
    pub blue_port: Option<u16>,
    /// Host port of the green slot (null in a dry run).
    pub green_port: Option<u16>,
    /// PostgreSQL database and role name on the storage server.
    pub database: String,
    /// Redis ACL user; it may use keys and channels under `redis_prefix` only.
    pub redis_user: String,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// Env version holding the variables codeb set (null in a dry run).
    pub env_version: Option<i32>,
    /// Names of the env variables codeb set (values never leave codeb).
    pub env_keys: Vec<String>,
    /// A `.env.local` for local development (local services, no server secrets).
    pub env_local: String,
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
    /// Per environment: ports, storage names, env keys and a `.env.local`.
    pub environments: Vec<CreatedEnvironment>,
}

fn env_keys() -> Vec<String> {
    let mut keys: Vec<String> = PROTECTED_KEYS
        .iter()
        .chain(std::iter::once(&REDIS_PREFIX_KEY))
        .map(|k| k.to_string())
        .collect();
    keys.sort();
    keys
}

#[tool_router(router = project_create_router, vis = "pub(crate)")]
impl CodebServer {
    /// Create a project: per environment a port pair, PostgreSQL database and role, Redis user and key prefix, protected env vars; returns a .env.local. All or nothing.
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
        if p.dry_run {
            check_new_project_name(self.ctx(), &p.project)
                .await
                .map_err(|e| e.to_string())?;
            return self.project_create_dry_run(p.project, kind, team).await;
        }
        let created = create_project(
            self.ctx(),
            &p.project,
            &team,
            &kind,
            &self.caller().principal,
        )
        .await
        .map_err(|e| match e {
            CreateError::Db(e) => format!("{e}; check health_check"),
            other => other.to_string(),
        })?;
        let environments: Vec<CreatedEnvironment> = created
            .environments
            .iter()
            .map(|e| {
                let names = StorageNames {
                    pg: e.database.clone(),
                    redis_user: e.redis_user.clone(),
                    redis_prefix: e.redis_prefix.clone(),
                };
                CreatedEnvironment {
                    environment: e.environment.as_str().into(),
                    blue_port: Some(e.base_port),
                    green_port: Some(e.base_port + 1),
                    database: e.database.clone(),
                    redis_user: e.redis_user.clone(),
                    redis_prefix: e.redis_prefix.clone(),
                    env_version: Some(e.env_version),
                    env_keys: e.env_keys.clone(),
                    env_local: env_local_text(&p.project, e.environment, &names),
                }
            })
            .collect();
        Ok(Json(ProjectCreateResult {
            summary: format!(
                "created {} ({kind}) for team {team}: {}; each with its own database, Redis user and env version",
                p.project,
                environments
                    .iter()
                    .map(|e| format!(
                        "{} {}/{}",
                        e.environment,
                        e.blue_port.unwrap_or_default(),
                        e.green_port.unwrap_or_default()
                    ))
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

impl CodebServer {
    /// What project_create would do; reads the state database only.
    async fn project_create_dry_run(
        &self,
        project: String,
        kind: String,
        team: String,
    ) -> Result<Json<ProjectCreateResult>, String> {
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        let exists = state::projects::project_by_name(pool, &project)
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        let mut environments = Vec::new();
        for env in Environment::ALL {
            let names = StorageNames::new(&project, env).map_err(|e| e.0)?;
            environments.push(CreatedEnvironment {
                environment: env.as_str().into(),
                blue_port: None,
                green_port: None,
                env_local: env_local_text(&project, env, &names),
                database: names.pg,
                redis_user: names.redis_user,
                redis_prefix: names.redis_prefix,
                env_version: None,
                env_keys: env_keys(),
            });
        }
        let summary = if exists {
            format!("dry run: project {project} already exists; project_create would fail")
        } else {
            format!(
                "dry run: would register project {project} ({kind}) for team {team} and create, per environment, a port pair, PostgreSQL database+role {}, Redis user {} and env keys {}; nothing changed",
                environments.iter().map(|e| e.database.as_str()).collect::<Vec<_>>().join("/"),
                environments.iter().map(|e| e.redis_user.as_str()).collect::<Vec<_>>().join("/"),
                env_keys().join(", ")
            )
        };
        Ok(Json(ProjectCreateResult {
            summary,
            dry_run: true,
            project,
            team,
            environments,
        }))
    }
}
