//! Creating a project (DESIGN §2, §3): register it (the name's unique
//! index decides races before anything touches a server), allocate its
//! ports, provision its storage, store the protected env variables. Any
//! failure undoes every earlier step, so a project either exists
//! completely or not at all.

use std::collections::BTreeMap;

use crate::model::{validate_project_name, Environment};
use crate::ops::storage::{self, ProjectStorage, RevertReport};
use crate::ops::{redact, Ctx};
use crate::plan::names::{check_project_name, project_hosts, HostNaming};
use crate::state::{self, DbError};

/// A created project, per environment.
#[derive(Debug, Clone)]
pub struct CreatedProject {
    /// Database id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Per environment: base port, env version, env key names.
    pub environments: Vec<CreatedEnvironment>,
}

/// One environment of a created project. Holds no secret.
#[derive(Debug, Clone)]
pub struct CreatedEnvironment {
    /// Environment.
    pub environment: Environment,
    /// Blue port; green is the next one.
    pub base_port: u16,
    /// PostgreSQL role and database name.
    pub database: String,
    /// Redis ACL user.
    pub redis_user: String,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// The env version holding codeb's variables.
    pub env_version: i32,
    /// Names of the variables codeb set.
    pub env_keys: Vec<String>,
}

/// Why a project was not created; every variant says what was undone.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Bad input; nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken or a port range is full; nothing was done.
    #[error("{0}")]
    Refused(String),
    /// The state database failed.
    #[error("{0}; check health_check")]
    Db(#[from] DbError),
    /// A step after registration failed and was undone.
    #[error("project_create {project} failed at {step}: {cause}. Undone: {undone}")]
    Failed {
        /// Project.
        project: String,
        /// The failing step.
        step: String,
        /// Why (redacted).
        cause: String,
        /// What was reverted, and anything that could not be.
        undone: String,
    },
}

/// Whether a new project may be called `name` (DESIGN §2: every host name
/// has exactly one owner): a valid name (`validate_project_name`) that
/// passes `plan::names::check_project_name`, and none of whose generated
/// host names is already a host of a project made before that rule (such
/// projects keep working; only new names are checked) or a domain.
pub async fn check_new_project_name(ctx: &Ctx, name: &str) -> Result<(), CreateError> {
    validate_project_name(name).map_err(|e| CreateError::Invalid(e.0))?;
    let naming = HostNaming::from_config(&ctx.config);
    check_project_name(name, &naming).map_err(CreateError::Invalid)?;
    let hosts = project_hosts(name, &naming);
    let pool = ctx.db.pool().await?;
    // Only a longer name `{name}-...` can share a host with a valid `name`
    // (see plan::names): those of projects older than the rule.
    for other in state::projects::live_names_starting_with(pool, &format!("{name}-")).await? {
        for theirs in project_hosts(&other, &naming) {
            if let Some(mine) = hosts.iter().find(|h| h.host == theirs.host) {
                return Err(CreateError::Refused(format!(
                    "project name `{name}` would give the {} {}, which is already a host name of an existing project; choose another name",
                    mine.describe(),
                    mine.host
                )));
            }
        }
    }
    let names: Vec<String> = hosts.iter().map(|h| h.host.clone()).collect();
    let taken = state::domains::domains_among(pool, &names).await?;
    match hosts.iter().find(|h| taken.contains(&h.host)) {
        Some(mine) => Err(CreateError::Refused(format!(
            "project name `{name}` would give the {} {}, which is already set up as a domain; choose another name",
            mine.describe(),
            mine.host
        ))),
        None => Ok(()),
    }
}

/// Registers and fully provisions a project for `team`.
pub async fn create_project(
    ctx: &Ctx,
    name: &str,
    team: &str,
    kind: &str,
    principal: &str,
) -> Result<CreatedProject, CreateError> {
    check_new_project_name(ctx, name).await?;
    let pool = ctx.db.pool().await?;
    let id = state::projects::project_insert(pool, name, team, kind)
        .await
        .map_err(|e| match e {
            DbError::Conflict { message, .. } | DbError::Exhausted(message) => {
                CreateError::Refused(message)
            }
            other => CreateError::Db(other),
        })?;
    let undo_rows = |step: String, cause: String, mut undone: RevertReport| async move {
        match state::projects::project_remove_failed_creation(pool, id).await {
            Ok(()) => undone
                .reverted
                .push(format!("project {name} and its port allocations")),
            Err(e) => undone
                .failed
                .push(format!("project row {name} (id {id}): {e}")),
        }
        let cause = redact::redact_in(redact::Scope::Project(name), &cause);
        redact::forget_project(name);
        CreateError::Failed {
            project: name.to_string(),
            step,
            cause,
            undone: undone.to_string(),
        }
    };
    let row = match state::projects::project_by_name(pool, name).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(undo_rows(
                "read back the project".into(),
                "the row vanished".into(),
                RevertReport::default(),
            )
            .await)
        }
        Err(e) => {
            return Err(undo_rows(
                "read back the project".into(),
                e.to_string(),
                RevertReport::default(),
            )
            .await)
        }
    };
    // Secrets generated for the project from here on are its own (a stale
    // entry of an earlier project of this name is dropped).
    redact::open_project(&redact::ProjectRef { name, id, team });
    let provisioned: ProjectStorage = match storage::provision_project_storage(ctx, name).await {
        Ok(s) => s,
        Err(e) => {
            let (step, cause) = match &e.error {
                storage::StorageError::Step { step, cause } => (step.clone(), cause.clone()),
                other => (
                    "check the storage server for leftovers".to_string(),
                    other.to_string(),
                ),
            };
            return Err(undo_rows(format!("storage: {step}"), cause, e.revert).await);
        }
    };
    let endpoint = storage::storage_endpoint(ctx);
    let mut environments = Vec::new();
    for creds in &provisioned.environments {
        let vars: BTreeMap<String, String> =
            crate::plan::storage::storage_env_vars(&creds.names, creds.password(), &endpoint);
        // The password is registered already (storage generated it); the
        // URLs carrying it are once the version is written.
        let version = match crate::ops::env::init_protected(
            ctx,
            redact::ProjectRef { name, id, team },
            creds.environment,
            &vars,
            principal,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => {
                let undone = storage::revert_project_storage(ctx, &provisioned).await;
                return Err(undo_rows(
                    format!("store the {} env variables", creds.environment),
                    e,
                    undone,
                )
                .await);
            }
        };
        let base_port = row
            .environments
            .iter()
            .find(|(e, _)| e == creds.environment.as_str())
            .map(|(_, p)| *p as u16)
            .unwrap_or_default();
        environments.push(CreatedEnvironment {
            environment: creds.environment,
            base_port,
            database: creds.names.pg.clone(),
            redis_user: creds.names.redis_user.clone(),
            redis_prefix: creds.names.redis_prefix.clone(),
            env_version: version,
            env_keys: vars.into_keys().collect(),
        });
    }
    Ok(CreatedProject {
        id,
        name: name.to_string(),
        environments,
    })
}
