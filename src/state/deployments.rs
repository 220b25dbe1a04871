//! Deployments: one row per operation with a lease (heartbeat + fencing
//! token) and a step journal (DESIGN §2, §7). State flips are short
//! transactions; nothing here is held across SSH work.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::state::DbError;

/// What a new operation records when it starts.
#[derive(Debug, Clone)]
pub struct NewDeployment<'a> {
    /// Durable id.
    pub id: Uuid,
    /// Project.
    pub project_id: i64,
    /// Environment name.
    pub environment: &'a str,
    /// `deploy`, `promote`, `rollback`, `slot_cleanup`, ...
    pub operation: &'a str,
    /// Target slot, when known.
    pub slot: Option<&'a str>,
    /// Image, for deploys.
    pub image: Option<&'a str>,
    /// Caller's idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// Who asked.
    pub principal: &'a str,
    /// Why (rollback reasons, production deploy overrides).
    pub reason: Option<&'a str>,
    /// This process's lease owner id.
    pub lease_owner: &'a str,
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
}

/// An operation whose owner's lease ran out and which was marked recovered.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recovered {
    /// Its id.
    pub id: Uuid,
    /// Its operation.
    pub operation: String,
    /// Its target slot.
    pub slot: Option<String>,
}

/// The outcome of trying to start an operation.
#[derive(Debug, Clone)]
pub enum Begin {
    /// Started; writes must carry this fencing token.
    Started {
        /// Fencing token of the new lease.
        fencing_token: i64,
        /// Operations whose expired leases were recovered first.
        recovered: Vec<Recovered>,
    },
    /// Another operation is running on this (project, environment).
    Busy {
        /// The running operation's id.
        running_id: Uuid,
        /// Its operation name.
        operation: String,
        /// When it started.
        since: DateTime<Utc>,
        /// When its lease runs out unless renewed: after that, the next
        /// operation recovers it (its codeb has stopped).
        lease_expires_at: Option<DateTime<Utc>>,
    },
    /// The idempotency key was used before: this is that operation.
    Duplicate {
        /// The earlier operation's id.
        existing_id: Uuid,
    },
}

/// The running operation that made a start busy.
#[derive(sqlx::FromRow)]
struct RunningRow {
    id: Uuid,
    operation: String,
    created_at: DateTime<Utc>,
    lease_expires_at: Option<DateTime<Utc>>,
}

/// The lease of this operation is gone (expired and recovered by someone else).
pub const LEASE_LOST: &str =
    "the operation's lease was lost (another codeb recovered it); nothing more is applied";

/// Starts an operation: recovers expired leases of the same (project,
/// environment), then inserts a running row. The partial unique index
/// `deployments_one_running` lets exactly one start.
pub async fn deployment_begin(pool: &PgPool, d: &NewDeployment<'_>) -> Result<Begin, DbError> {
    if let Some(key) = d.idempotency_key {
        if let Some(id) = idempotent_match(pool, d.project_id, d.environment, key).await? {
            return Ok(Begin::Duplicate { existing_id: id });
        }
    }
    let recovered: Vec<Recovered> = sqlx::query_as(
        "UPDATE deployments
            SET status = 'recovered', finished_at = now(), lease_owner = NULL,
                error = 'codeb stopped while this operation ran (lease expired); recovered'
          WHERE project_id = $1 AND environment = $2 AND status = 'running' AND lease_expires_at < now()
          RETURNING id, operation, slot",
    )
    .bind(d.project_id)
    .bind(d.environment)
    .fetch_all(pool)
    .await?;
    let inserted = sqlx::query_scalar::<_, i64>(
        "INSERT INTO deployments (id, project_id, environment, operation, slot, image, idempotency_key,
                                  principal, reason, lease_owner, lease_expires_at, fencing_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11),
                 nextval('deployments_fencing_seq'))
         RETURNING fencing_token",
    )
    .bind(d.id)
    .bind(d.project_id)
    .bind(d.environment)
    .bind(d.operation)
    .bind(d.slot)
    .bind(d.image)
    .bind(d.idempotency_key)
    .bind(d.principal)
    .bind(d.reason)
    .bind(d.lease_owner)
    .bind(d.lease.as_secs_f64())
    .fetch_one(pool)
    .await;
    match inserted {
        Ok(fencing_token) => Ok(Begin::Started {
            fencing_token,
            recovered,
        }),
        Err(e) => {
            let e = DbError::from(e);
            match e.constraint() {
                Some("deployments_one_running") => {
                    let row: Option<RunningRow> = sqlx::query_as(
                        "SELECT id, operation, created_at, lease_expires_at FROM deployments
                          WHERE project_id = $1 AND environment = $2 AND status = 'running'",
                    )
                    .bind(d.project_id)
                    .bind(d.environment)
                    .fetch_optional(pool)
                    .await?;
                    match row {
                        Some(r) => Ok(Begin::Busy {
                            running_id: r.id,
                            operation: r.operation,
                            since: r.created_at,
                            lease_expires_at: r.lease_expires_at,
                        }),
                        // It finished between our insert and this read: try once more.
                        None => Box::pin(deployment_begin(pool, d)).await,
                    }
                }
                Some("deployments_idempotency") => {
                    let key = d.idempotency_key.unwrap_or_default();
                    match idempotent_match(pool, d.project_id, d.environment, key).await? {
                        Some(existing_id) => Ok(Begin::Duplicate { existing_id }),
                        None => Err(e),
                    }
                }
                _ => Err(e),
            }
        }
    }
}

async fn idempotent_match(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
    key: &str,
) -> Result<Option<Uuid>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM deployments WHERE project_id = $1 AND environment = $2 AND idempotency_key = $3",
    )
    .bind(project_id)
    .bind(environment)
    .bind(key)
    .fetch_optional(pool)
    .await?)
}

/// Renews the lease; `false` when it was lost.
pub async fn deployment_heartbeat(
    pool: &PgPool,
    id: Uuid,
    fencing_token: i64,
    lease: Duration,
) -> Result<bool, DbError> {
    let n = sqlx::query(
        "UPDATE deployments SET lease_expires_at = now() + make_interval(secs => $3)
          WHERE id = $1 AND fencing_token = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(fencing_token)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Lets the lease of a running operation run out now (its task ended
/// without recording an end), so the next operation recovers it; `false`
/// when it was no longer running under `fencing_token`.
pub async fn deployment_give_up_lease(
    pool: &PgPool,
    id: Uuid,
    fencing_token: i64,
) -> Result<bool, DbError> {
    let n = sqlx::query(
        "UPDATE deployments SET lease_expires_at = now()
          WHERE id = $1 AND fencing_token = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(fencing_token)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Ends an operation; `false` when the lease was lost before.
pub async fn deployment_finish(
    pool: &PgPool,
    id: Uuid,
    fencing_token: i64,
    succeeded: bool,
    error: Option<&str>,
    result: Option<&serde_json::Value>,
) -> Result<bool, DbError> {
    let n = sqlx::query(
        "UPDATE deployments
            SET status = CASE WHEN $3 THEN 'succeeded' ELSE 'failed' END,
                error = $4, result = $5, finished_at = now(), lease_owner = NULL
          WHERE id = $1 AND fencing_token = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(fencing_token)
    .bind(succeeded)
    .bind(error)
    .bind(result)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Appends one journal entry (argv only: stdin payloads are never recorded).
#[allow(clippy::too_many_arguments)]
pub async fn step_append(
    pool: &PgPool,
    id: Uuid,
    step: &str,
    server: Option<&str>,
    argv: &[String],
    exit_status: Option<i32>,
    stderr_tail: Option<&str>,
    duration: Duration,
) -> Result<(), DbError> {
    // Steps of one operation may run concurrently (pull beside env writes):
    // two appends can pick the same seq; the loser takes the next one.
    let mut attempts = 0;
    loop {
        let r = sqlx::query(
            "INSERT INTO deployment_steps (deployment_id, seq, step, server, argv, exit_status, stderr_tail, duration_ms)
             VALUES ($1, (SELECT coalesce(max(seq), 0) + 1 FROM deployment_steps WHERE deployment_id = $1),
                     $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(step)
        .bind(server)
        .bind(serde_json::json!(argv))
        .bind(exit_status)
        .bind(stderr_tail)
        .bind(duration.as_millis().min(i32::MAX as u128) as i32)
        .execute(pool)
        .await;
        match r {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = DbError::from(e);
                attempts += 1;
                if e.constraint() != Some("deployment_steps_pkey") || attempts >= 20 {
                    return Err(e);
                }
            }
        }
    }
}

/// One deployment row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeploymentRow {
    /// Id.
    pub id: Uuid,
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: String,
    /// Operation.
    pub operation: String,
    /// Target slot.
    pub slot: Option<String>,
    /// Image reference as asked for.
    pub image: Option<String>,
    /// Digest of the image a deploy pulled and ran (`sha256:…`).
    pub image_digest: Option<String>,
    /// Env version.
    pub env_version: Option<i32>,
    /// running / succeeded / failed / recovered.
    pub status: String,
    /// Who asked.
    pub principal: String,
    /// Why (rollback).
    pub reason: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// Final result document.
    pub result: Option<serde_json::Value>,
    /// Start.
    pub created_at: DateTime<Utc>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
}

const SELECT_DEPLOYMENT: &str = "SELECT d.id, p.name AS project, d.environment, d.operation, d.slot, d.image,
        d.image_digest, d.env_version, d.status, d.principal, d.reason, d.error, d.result, d.created_at, d.finished_at
   FROM deployments d JOIN projects p ON p.id = d.project_id";

/// One deployment by id.
pub async fn deployment_by_id(pool: &PgPool, id: Uuid) -> Result<Option<DeploymentRow>, DbError> {
    Ok(
        sqlx::query_as(&format!("{SELECT_DEPLOYMENT} WHERE d.id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The digest the latest healthy deploy of exactly the reference `image`
/// to the project's staging ran (it passed its health gate), if any: what
/// a production deploy of that reference runs (DESIGN §6). Deploys made
/// before digests were recorded do not count.
pub async fn staged_digest(
    pool: &PgPool,
    project_id: i64,
    image: &str,
) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT image_digest FROM deployments
          WHERE project_id = $1 AND environment = 'staging' AND operation = 'deploy'
            AND status = 'succeeded' AND image = $2 AND image_digest IS NOT NULL
          ORDER BY finished_at DESC NULLS LAST LIMIT 1",
    )
    .bind(project_id)
    .bind(image)
    .fetch_optional(pool)
    .await?)
}

/// Whether a deploy to the project's staging ran `digest` healthy, under
/// whatever reference (DESIGN §6).
pub async fn digest_staged(pool: &PgPool, project_id: i64, digest: &str) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM deployments
                         WHERE project_id = $1 AND environment = 'staging' AND operation = 'deploy'
                           AND status = 'succeeded' AND image_digest = $2)",
    )
    .bind(project_id)
    .bind(digest)
    .fetch_one(pool)
    .await?)
}

/// Records the digest a deploy pulled (and runs); `false` when the lease
/// was lost.
pub async fn deployment_set_digest(
    pool: &PgPool,
    id: Uuid,
    fencing_token: i64,
    digest: &str,
) -> Result<bool, DbError> {
    let n = sqlx::query(
        "UPDATE deployments SET image_digest = $3
          WHERE id = $1 AND fencing_token = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(fencing_token)
    .bind(digest)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// A page of deployments, newest first, after the `after` id; of projects
/// of `team` only (every team's: None), optionally of one project and
/// environment. A cursor naming a deployment outside `team` ends the list,
/// like an unknown one.
pub async fn deployments_page(
    pool: &PgPool,
    team: Option<&str>,
    project: Option<&str>,
    environment: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DeploymentRow>, DbError> {
    Ok(sqlx::query_as(&format!(
        "{SELECT_DEPLOYMENT}
          WHERE ($1::text IS NULL OR p.team_id = $1)
            AND ($2::text IS NULL OR p.name = $2)
            AND ($3::text IS NULL OR d.environment = $3)
            AND ($4::uuid IS NULL OR (d.created_at, d.id) <
                 (SELECT c.created_at, c.id FROM deployments c JOIN projects cp ON cp.id = c.project_id
                   WHERE c.id = $4 AND ($1::text IS NULL OR cp.team_id = $1)))
          ORDER BY d.created_at DESC, d.id DESC
          LIMIT $5"
    ))
    .bind(team)
    .bind(project)
    .bind(environment)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

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

/// Names of `team`'s live projects starting with `prefix`, for completion.
pub async fn project_names_with_prefix(
    pool: &PgPool,
    team: &str,
    prefix: &str,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM projects
          WHERE deleted_at IS NULL AND team_id = $3 AND starts_with(name, $1)
          ORDER BY name LIMIT $2",
    )
    .bind(prefix)
    .bind(limit)
    .bind(team)
    .fetch_all(pool)
    .await?)
}
