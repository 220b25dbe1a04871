//! Approvals of critical operations (DESIGN §6): a row per confirmation
//! codeb waits for. Every transition out of `pending` is one conditional
//! UPDATE, so a row is used at most once even when two approvers race.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::state::DbError;

/// Waits for a second admin key (`approve`).
pub const KIND_APPROVAL: &str = "approval";
/// Waits for the requesting client's human (input-required elicitation).
pub const KIND_CONFIRMATION: &str = "confirmation";

/// An approval record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApprovalRow {
    /// Approval id (also the `requestState` of a confirmation).
    pub id: Uuid,
    /// `approval` or `confirmation`.
    pub kind: String,
    /// Team of the requester; only this team sees it.
    pub team_id: String,
    /// The critical tool.
    pub tool: String,
    /// Its project.
    pub project: String,
    /// The project's row id when requested (None: requested before
    /// migration 0009). A namesake made later has another id.
    pub project_id: Option<i64>,
    /// The tool's arguments (validated when requested; no secrets).
    pub arguments: serde_json::Value,
    /// Hash of the plan it confirms.
    pub plan_hash: String,
    /// The plan's one-line summary.
    pub summary: String,
    /// The plan's details.
    pub plan: serde_json::Value,
    /// Requesting key (None: the local operator).
    pub requested_by: Option<Uuid>,
    /// How records name the requester (`key:{id}` or `local`).
    pub requested_principal: String,
    /// The principal (person or CI system) who asked.
    pub requester: String,
    /// Approving key.
    pub approved_by: Option<Uuid>,
    /// How records name the approver.
    pub approved_principal: Option<String>,
    /// The principal who approved (another than `requester` for an approval).
    pub approver: Option<String>,
    /// pending, approved, executed, failed, refused, expired, declined.
    pub status: String,
    /// When requested.
    pub created_at: DateTime<Utc>,
    /// When it stops being usable.
    pub expires_at: DateTime<Utc>,
    /// When approved, declined or refused.
    pub decided_at: Option<DateTime<Utc>>,
    /// When the operation finished.
    pub executed_at: Option<DateTime<Utc>>,
    /// Why it failed or was refused.
    pub error: Option<String>,
    /// The operation's result.
    pub result: Option<serde_json::Value>,
}

/// A new approval request.
pub struct NewApproval<'a> {
    /// Id.
    pub id: Uuid,
    /// KIND_APPROVAL or KIND_CONFIRMATION.
    pub kind: &'a str,
    /// Requester's team.
    pub team: &'a str,
    /// Tool.
    pub tool: &'a str,
    /// Project.
    pub project: &'a str,
    /// The project's row id.
    pub project_id: i64,
    /// Arguments.
    pub arguments: &'a serde_json::Value,
    /// Plan hash.
    pub plan_hash: &'a str,
    /// Plan summary.
    pub summary: &'a str,
    /// Plan details.
    pub plan: &'a serde_json::Value,
    /// Requesting key.
    pub requested_by: Option<Uuid>,
    /// How records name the requester.
    pub requested_principal: &'a str,
    /// The principal who asks.
    pub requester: &'a str,
    /// Lifetime.
    pub ttl: std::time::Duration,
}

/// The columns of `ApprovalRow`, for SELECT and RETURNING alike.
const COLUMNS: &str = "id, kind, team_id, tool, project, project_id, arguments, plan_hash,
        summary, plan, requested_by, requested_principal, requester, approved_by,
        approved_principal, approver, status, created_at, expires_at, decided_at, executed_at,
        error, result";

/// Records a pending request; returns it as stored.
pub async fn approval_insert(pool: &PgPool, a: &NewApproval<'_>) -> Result<ApprovalRow, DbError> {
    let ttl_ms = i64::try_from(a.ttl.as_millis()).unwrap_or(i64::MAX);
    Ok(sqlx::query_as(&format!(
        "INSERT INTO approvals (id, kind, team_id, tool, project, project_id, arguments,
                                plan_hash, summary, plan, requested_by, requested_principal,
                                requester, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                 now() + make_interval(secs => $14::double precision / 1000))
         RETURNING {COLUMNS}"
    ))
    .bind(a.id)
    .bind(a.kind)
    .bind(a.team)
    .bind(a.tool)
    .bind(a.project)
    .bind(a.project_id)
    .bind(a.arguments)
    .bind(a.plan_hash)
    .bind(a.summary)
    .bind(a.plan)
    .bind(a.requested_by)
    .bind(a.requested_principal)
    .bind(a.requester)
    .bind(ttl_ms as f64)
    .fetch_one(pool)
    .await?)
}

/// One approval by id, of `team` only (another team's is "not found").
pub async fn approval_get(
    pool: &PgPool,
    id: Uuid,
    team: &str,
) -> Result<Option<ApprovalRow>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE id = $1 AND team_id = $2"
    ))
    .bind(id)
    .bind(team)
    .fetch_optional(pool)
    .await?)
}

/// Who decides a request.
pub struct Decider<'a> {
    /// The deciding key (None: the local operator, or the requester's own
    /// client for a confirmation).
    pub key: Option<Uuid>,
    /// How records name the decider.
    pub recorded_as: &'a str,
    /// The principal (person or CI system) deciding.
    pub principal: &'a str,
}

/// Takes a pending, unexpired request out of `pending` into `approved`,
/// recording who decided. Returns None when it was not pending any more
/// (used, expired, or taken by a concurrent call): single use. For an
/// approval the database refuses a decider of the requesting principal
/// (constraint `approvals_second_principal`).
pub async fn approval_claim(
    pool: &PgPool,
    id: Uuid,
    kind: &str,
    by: &Decider<'_>,
) -> Result<Option<ApprovalRow>, DbError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE approvals SET status = 'approved', approved_by = $3,
                approved_principal = $4, approver = $5, decided_at = now()
          WHERE id = $1 AND kind = $2 AND status = 'pending' AND expires_at > now()
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(kind)
    .bind(by.key)
    .bind(by.recorded_as)
    .bind(by.principal)
    .fetch_optional(pool)
    .await?)
}

/// Ends a pending request without running it because it no longer applies
/// (its project was deleted and created again, or changed team): status
/// `refused` with the reason. False when it was not pending any more.
pub async fn approval_refuse(pool: &PgPool, id: Uuid, error: &str) -> Result<bool, DbError> {
    let r = sqlx::query(
        "UPDATE approvals SET status = 'refused', error = $2, decided_at = now()
          WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Ends a pending request without running it (declined by the human).
pub async fn approval_decline(pool: &PgPool, id: Uuid, by: &str) -> Result<bool, DbError> {
    let r = sqlx::query(
        "UPDATE approvals SET status = 'declined', approved_principal = $2, decided_at = now()
          WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(by)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records how an approved request ended: executed, failed or refused.
pub async fn approval_finish(
    pool: &PgPool,
    id: Uuid,
    status: &str,
    error: Option<&str>,
    result: Option<&serde_json::Value>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE approvals SET status = $2, error = $3, result = $4, executed_at = now()
          WHERE id = $1 AND status = 'approved'",
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(result)
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts an approved request back to pending when its operation could not
/// start (another operation held the lock): nothing ran, so the approval
/// is not used up.
pub async fn approval_release(pool: &PgPool, id: Uuid) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE approvals SET status = 'pending', approved_by = NULL, approved_principal = NULL,
                approver = NULL, decided_at = NULL
          WHERE id = $1 AND status = 'approved'",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks the team's pending requests whose time ran out as expired.
pub async fn approvals_expire(pool: &PgPool, team: &str) -> Result<u64, DbError> {
    let r = sqlx::query(
        "UPDATE approvals SET status = 'expired', decided_at = now()
          WHERE team_id = $1 AND status = 'pending' AND expires_at <= now()",
    )
    .bind(team)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// One page of the team's approvals of kind `approval`, newest first,
/// after approval `after`; only pending ones unless `all`.
pub async fn approvals_page(
    pool: &PgPool,
    team: &str,
    all: bool,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ApprovalRow>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM approvals
          WHERE team_id = $1 AND kind = 'approval' AND ($2 OR status = 'pending')
            AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM approvals WHERE id = $3))
          ORDER BY created_at DESC, id DESC
          LIMIT $4"
    ))
    .bind(team)
    .bind(all)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
