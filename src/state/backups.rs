//! Database backups: one row per `backup_create`, running → succeeded or
//! failed.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::state::DbError;

/// A backup record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackupRow {
    /// Backup id.
    pub id: Uuid,
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: String,
    /// The dump file on the backup server.
    pub path: String,
    /// Size in bytes (when succeeded).
    pub size_bytes: Option<i64>,
    /// SHA-256 hex (when succeeded).
    pub sha256: Option<String>,
    /// running, succeeded or failed.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Who asked.
    pub principal: String,
    /// Start.
    pub created_at: DateTime<Utc>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Records a backup that starts now.
pub async fn backup_insert(
    pool: &PgPool,
    id: Uuid,
    project_id: i64,
    environment: &str,
    path: &str,
    principal: &str,
    created_at: DateTime<Utc>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO backups (id, project_id, environment, path, principal, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(project_id)
    .bind(environment)
    .bind(path)
    .bind(principal)
    .bind(created_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a running backup succeeded with its verified size and checksum.
pub async fn backup_succeeded(
    pool: &PgPool,
    id: Uuid,
    size_bytes: u64,
    sha256: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE backups SET status = 'succeeded', size_bytes = $2, sha256 = $3, finished_at = now()
          WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(i64::try_from(size_bytes).unwrap_or(i64::MAX))
    .bind(sha256)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a running backup failed with the reason.
pub async fn backup_failed(pool: &PgPool, id: Uuid, error: &str) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE backups SET status = 'failed', error = $2, finished_at = now()
          WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

const SELECT_BACKUP: &str = "SELECT b.id, p.name AS project, b.environment, b.path, b.size_bytes,
        b.sha256, b.status, b.error, b.principal, b.created_at, b.finished_at
   FROM backups b JOIN projects p ON p.id = b.project_id";

/// One backup by id.
pub async fn backup_by_id(pool: &PgPool, id: Uuid) -> Result<Option<BackupRow>, DbError> {
    Ok(sqlx::query_as(&format!("{SELECT_BACKUP} WHERE b.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// One page of a project's backups, newest first, after backup `after`.
pub async fn backups_page(
    pool: &PgPool,
    project: &str,
    environment: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<BackupRow>, DbError> {
    Ok(sqlx::query_as(&format!(
        "{SELECT_BACKUP}
          WHERE p.name = $1 AND p.deleted_at IS NULL
            AND ($2::text IS NULL OR b.environment = $2)
            AND ($3::uuid IS NULL OR (b.created_at, b.id) < (SELECT created_at, id FROM backups WHERE id = $3))
          ORDER BY b.created_at DESC, b.id DESC
          LIMIT $4"
    ))
    .bind(project)
    .bind(environment)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The id of the project (row, not name) a backup belongs to: a project
/// deleted and created again under its name is another project.
pub async fn backup_project_id(pool: &PgPool, id: Uuid) -> Result<Option<i64>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT project_id FROM backups WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// When the last verified (succeeded) backup of each environment of the
/// project (row id) finished: (environment, finished_at), one per
/// environment that has one.
pub async fn latest_verified_backups(
    pool: &PgPool,
    project_id: i64,
) -> Result<Vec<(String, DateTime<Utc>)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT environment, max(finished_at) FROM backups
          WHERE project_id = $1 AND status = 'succeeded' AND finished_at IS NOT NULL
          GROUP BY environment ORDER BY environment",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?)
}
