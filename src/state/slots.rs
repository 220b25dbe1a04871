//! Slots of a project's environments.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::state::DbError;

/// One slot row joined with its environment's base port.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlotRow {
    /// Environment name.
    pub environment: String,
    /// `blue` or `green`.
    pub slot: String,
    /// Slot state.
    pub state: String,
    /// Image running in the slot, if any.
    pub image: Option<String>,
    /// Deployment that filled the slot.
    pub deployment_id: Option<Uuid>,
    /// Env version the slot runs with.
    pub env_version: Option<i32>,
    /// When a grace slot expires.
    pub grace_expires_at: Option<DateTime<Utc>>,
    /// Base port of the environment's pair.
    pub base_port: i32,
}

/// Every slot of `project_id`, optionally of one environment.
pub async fn slots_for_project(
    pool: &PgPool,
    project_id: i64,
    environment: Option<&str>,
) -> Result<Vec<SlotRow>, DbError> {
    Ok(sqlx::query_as::<_, SlotRow>(
        "SELECT s.environment, s.slot, s.state, s.image, s.deployment_id, s.env_version,
                s.grace_expires_at, pe.base_port
           FROM slots s
           JOIN project_environments pe USING (project_id, environment)
          WHERE s.project_id = $1 AND ($2::text IS NULL OR s.environment = $2)
          ORDER BY s.environment, s.slot",
    )
    .bind(project_id)
    .bind(environment)
    .fetch_all(pool)
    .await?)
}

/// Every slot of the live project named `project` in one query (empty when
/// the project does not exist or has no environments).
pub async fn slots_for_project_name(
    pool: &PgPool,
    project: &str,
    environment: Option<&str>,
) -> Result<Vec<SlotRow>, DbError> {
    Ok(sqlx::query_as::<_, SlotRow>(
        "SELECT s.environment, s.slot, s.state, s.image, s.deployment_id, s.env_version,
                s.grace_expires_at, pe.base_port
           FROM projects p
           JOIN slots s ON s.project_id = p.id
           JOIN project_environments pe ON pe.project_id = s.project_id AND pe.environment = s.environment
          WHERE p.name = $1 AND p.deleted_at IS NULL AND ($2::text IS NULL OR s.environment = $2)
          ORDER BY s.environment, s.slot",
    )
    .bind(project)
    .bind(environment)
    .fetch_all(pool)
    .await?)
}

/// A (project, environment) with its settings and both slots, for planning.
#[derive(Debug, Clone)]
pub struct EnvRow {
    /// Project id.
    pub project_id: i64,
    /// Owning team.
    pub team_id: String,
    /// The view the planners take.
    pub view: crate::plan::env::EnvView,
}

/// Reads one (project, environment) for planning; `None` if the project does not exist.
pub async fn env_view(
    pool: &PgPool,
    project: &str,
    environment: crate::model::Environment,
) -> Result<Option<EnvRow>, DbError> {
    use crate::model::{SlotName, SlotState};
    use crate::plan::env::{EnvView, SlotView};
    let head: Option<(i64, String, i32, String, String, String, i32)> = sqlx::query_as(
        "SELECT p.id, p.team_id, p.container_port, p.health_path, p.memory_limit, p.cpu_limit, pe.base_port
           FROM projects p JOIN project_environments pe ON pe.project_id = p.id
          WHERE p.name = $1 AND p.deleted_at IS NULL AND pe.environment = $2",
    )
    .bind(project)
    .bind(environment.as_str())
    .fetch_optional(pool)
    .await?;
    let Some((project_id, team_id, container_port, health_path, memory, cpus, base_port)) = head
    else {
        return Ok(None);
    };
    let rows = slots_for_project(pool, project_id, Some(environment.as_str())).await?;
    let slot_view = |slot: SlotName| -> SlotView {
        let r = rows.iter().find(|r| r.slot == slot.as_str());
        SlotView {
            slot,
            state: r
                .and_then(|r| SlotState::parse(&r.state))
                .unwrap_or(SlotState::Empty),
            image: r.and_then(|r| r.image.clone()),
            grace_expires_at: r.and_then(|r| r.grace_expires_at),
            env_version: r.and_then(|r| r.env_version),
        }
    };
    Ok(Some(EnvRow {
        project_id,
        team_id,
        view: EnvView {
            project: project.to_string(),
            environment,
            base_port: base_port as u16,
            container_port: container_port as u16,
            health_path,
            memory,
            cpus,
            slots: [slot_view(SlotName::Blue), slot_view(SlotName::Green)],
        },
    }))
}

/// Locks the operation's row and checks its lease is still ours.
async fn check_fence(
    tx: &mut sqlx::PgConnection,
    deployment_id: Uuid,
    fencing_token: i64,
) -> Result<(), DbError> {
    let ok: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM deployments WHERE id = $1 AND fencing_token = $2 AND status = 'running' FOR UPDATE",
    )
    .bind(deployment_id)
    .bind(fencing_token)
    .fetch_optional(&mut *tx)
    .await?;
    match ok {
        Some(_) => Ok(()),
        None => Err(DbError::Conflict {
            constraint: "deployments_lease".into(),
            message: crate::state::deployments::LEASE_LOST.into(),
        }),
    }
}

/// Sets one slot's state (and image) under the operation's fence.
#[allow(clippy::too_many_arguments)]
pub async fn slot_set(
    pool: &PgPool,
    deployment_id: Uuid,
    fencing_token: i64,
    project_id: i64,
    environment: &str,
    slot: &str,
    state: &str,
    image: Option<&str>,
) -> Result<(), DbError> {
    let mut tx = pool.begin().await?;
    check_fence(&mut tx, deployment_id, fencing_token).await?;
    sqlx::query(
        "UPDATE slots SET state = $4, image = $5, deployment_id = CASE WHEN $4 = 'empty' THEN NULL ELSE $6 END,
                grace_expires_at = NULL, updated_at = now()
          WHERE project_id = $1 AND environment = $2 AND slot = $3",
    )
    .bind(project_id)
    .bind(environment)
    .bind(slot)
    .bind(state)
    .bind(image)
    .bind(deployment_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records the env version a slot's container runs with (None: no env).
pub async fn slot_set_env_version(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
    slot: &str,
    env_version: Option<i32>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE slots SET env_version = $4 WHERE project_id = $1 AND environment = $2 AND slot = $3",
    )
    .bind(project_id)
    .bind(environment)
    .bind(slot)
    .bind(env_version)
    .execute(pool)
    .await?;
    Ok(())
}

/// The state flip of a switch, in one short transaction: `from` first
/// (it may hold the one active row), then `to` becomes active.
#[allow(clippy::too_many_arguments)]
pub async fn slots_switch(
    pool: &PgPool,
    deployment_id: Uuid,
    fencing_token: i64,
    project_id: i64,
    environment: &str,
    to: &str,
    from: Option<(&str, &str)>,
    grace_expires_at: Option<DateTime<Utc>>,
) -> Result<(), DbError> {
    let mut tx = pool.begin().await?;
    check_fence(&mut tx, deployment_id, fencing_token).await?;
    if let Some((from_slot, from_state)) = from {
        sqlx::query(
            "UPDATE slots SET state = $4, grace_expires_at = $5, updated_at = now()
              WHERE project_id = $1 AND environment = $2 AND slot = $3",
        )
        .bind(project_id)
        .bind(environment)
        .bind(from_slot)
        .bind(from_state)
        .bind(grace_expires_at)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE slots SET state = 'active', grace_expires_at = NULL, updated_at = now()
          WHERE project_id = $1 AND environment = $2 AND slot = $3",
    )
    .bind(project_id)
    .bind(environment)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Slot rows whose recorded deployment is not `deployment_id` (recovery).
pub async fn slot_deployment(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
    slot: &str,
) -> Result<Option<Uuid>, DbError> {
    Ok(sqlx::query_scalar::<_, Option<Uuid>>(
        "SELECT deployment_id FROM slots WHERE project_id = $1 AND environment = $2 AND slot = $3",
    )
    .bind(project_id)
    .bind(environment)
    .bind(slot)
    .fetch_optional(pool)
    .await?
    .flatten())
}
