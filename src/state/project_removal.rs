//! What deleting a project reads and, at its very end, changes: the rows
//! a project_delete plan is made of, and the one short transaction that
//! frees the project's ports and name.

use sqlx::PgPool;
use uuid::Uuid;

use crate::state::DbError;

/// The latest env version per environment of a project.
pub async fn latest_env_versions(
    pool: &PgPool,
    project_id: i64,
) -> Result<Vec<(String, i32)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT environment, max(version) FROM env_versions WHERE project_id = $1
          GROUP BY environment ORDER BY environment",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?)
}

/// Every domain of a project: (host name, environment, kind), sorted.
pub async fn project_domains(
    pool: &PgPool,
    project_id: i64,
) -> Result<Vec<(String, String, String)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT hostname, environment, kind FROM domains WHERE project_id = $1 ORDER BY hostname",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?)
}

/// How many succeeded backups a project has.
pub async fn succeeded_backups(pool: &PgPool, project_id: i64) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM backups WHERE project_id = $1 AND status = 'succeeded'",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await?)
}

/// What the final transaction of a project deletion removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftDeleted {
    /// Host ports freed (both of every pair), sorted.
    pub ports_freed: Vec<u16>,
    /// Env versions deleted (by cascade).
    pub env_versions_deleted: i64,
    /// Domain rows deleted (by cascade).
    pub domains_deleted: i64,
}

/// In one transaction: checks that the deletion's operations (`ops`) are
/// still running under this codeb's leases (`lease_owner`) — a deletion
/// whose lease another codeb recovered must not finish — then deletes the
/// project's environment rows (freeing its ports; slots, env versions and
/// domains go with them by cascade) and marks the project deleted, so its
/// name can be used again. Deployment history and backups stay.
pub async fn project_soft_delete(
    pool: &PgPool,
    project_id: i64,
    ops: &[Uuid],
    lease_owner: &str,
) -> Result<SoftDeleted, DbError> {
    let mut tx = pool.begin().await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM deployments
          WHERE id = ANY($1) AND project_id = $2 AND status = 'running' AND lease_owner = $3
          FOR UPDATE) held",
    )
    .bind(ops)
    .bind(project_id)
    .bind(lease_owner)
    .fetch_one(&mut *tx)
    .await?;
    if held != ops.len() as i64 {
        return Err(DbError::Conflict {
            constraint: "deployments_lease".into(),
            message: crate::state::deployments::LEASE_LOST.into(),
        });
    }
    let env_versions_deleted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM env_versions WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(&mut *tx)
            .await?;
    let domains_deleted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM domains WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(&mut *tx)
            .await?;
    let bases: Vec<i32> = sqlx::query_scalar(
        "DELETE FROM project_environments WHERE project_id = $1 RETURNING base_port",
    )
    .bind(project_id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("UPDATE projects SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut ports_freed: Vec<u16> = bases
        .into_iter()
        .flat_map(|b| [b as u16, b as u16 + 1])
        .collect();
    ports_freed.sort_unstable();
    Ok(SoftDeleted {
        ports_freed,
        env_versions_deleted,
        domains_deleted,
    })
}
