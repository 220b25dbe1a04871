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
