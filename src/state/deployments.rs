//! Deployments and their step journals.

use sqlx::PgPool;
use uuid::Uuid;

use crate::state::DbError;

/// One journal entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    /// Order within the deployment.
    pub seq: i32,
    /// Step name.
    pub step: String,
    /// Server it ran on.
    pub server: Option<String>,
    /// The argument vector (JSON array of strings).
    pub argv: serde_json::Value,
    /// Exit status.
    pub exit_status: Option<i32>,
    /// Redacted stderr tail.
    pub stderr_tail: Option<String>,
    /// Wall time.
    pub duration_ms: Option<i32>,
}

/// The journal of deployment `id`, or `None` when no such deployment exists.
pub async fn deployment_journal(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(String, Vec<StepRow>)>, DbError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM deployments WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(status) = status else {
        return Ok(None);
    };
    let steps = sqlx::query_as::<_, StepRow>(
        "SELECT seq, step, server, argv, exit_status, stderr_tail, duration_ms
           FROM deployment_steps WHERE deployment_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some((status, steps)))
}

/// Project names starting with `prefix`, for completion.
pub async fn project_names_with_prefix(
    pool: &PgPool,
    prefix: &str,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM projects WHERE deleted_at IS NULL AND starts_with(name, $1) ORDER BY name LIMIT $2",
    )
    .bind(prefix)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
