//! The `audit_log` table: batched inserts and a paginated read. No business
//! rules here (what is redacted and when rows are written is `ops::audit`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::DbError;

/// One tool call to record, already redacted and bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// When the call arrived.
    pub at: DateTime<Utc>,
    /// Tool name as the client sent it (bounded).
    pub tool: String,
    /// Redacted, bounded arguments (a JSON object).
    pub arguments: Value,
    /// Who called.
    pub principal: String,
    /// The caller's team.
    pub team: String,
    /// The caller's role.
    pub role: String,
    /// Client implementation name, when the client said.
    pub client_name: Option<String>,
    /// Client implementation version, when the client said.
    pub client_version: Option<String>,
    /// The `project` argument, when there was one.
    pub project: Option<String>,
    /// `ok`, `tool_error`, `denied` or `protocol_error` (constraint `audit_log_outcome`).
    pub outcome: &'static str,
    /// Redacted, bounded error text.
    pub error: Option<String>,
    /// Wall time of the call.
    pub duration_ms: i32,
}

/// Rows per INSERT statement: 12 parameters a row stays far below
/// PostgreSQL's 65,535 bind parameters.
pub const AUDIT_INSERT_MAX_ROWS: usize = 1000;

/// Inserts `rows` with one multi-row INSERT per `AUDIT_INSERT_MAX_ROWS`, all
/// in one transaction; returns how many were written.
pub async fn audit_insert_batch(pool: &PgPool, rows: &[AuditRecord]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let mut written = 0;
    for chunk in rows.chunks(AUDIT_INSERT_MAX_ROWS) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO audit_log (at, tool, arguments, principal, team_id, role, \
             client_name, client_version, project, outcome, error, duration_ms) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.at)
                .push_bind(&r.tool)
                .push_bind(&r.arguments)
                .push_bind(&r.principal)
                .push_bind(&r.team)
                .push_bind(&r.role)
                .push_bind(&r.client_name)
                .push_bind(&r.client_version)
                .push_bind(&r.project)
                .push_bind(r.outcome)
                .push_bind(&r.error)
                .push_bind(r.duration_ms);
        });
        written += q.build().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(written)
}

/// One stored row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    /// Row id (the pagination cursor).
    pub id: i64,
    /// When the call arrived.
    pub at: DateTime<Utc>,
    /// Tool name.
    pub tool: String,
    /// Redacted arguments.
    pub arguments: Value,
    /// Who called.
    pub principal: String,
    /// The caller's team.
    pub team_id: Option<String>,
    /// The caller's role.
    pub role: Option<String>,
    /// Client name.
    pub client_name: Option<String>,
    /// Client version.
    pub client_version: Option<String>,
    /// Project argument.
    pub project: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Redacted error text.
    pub error: Option<String>,
    /// Wall time.
    pub duration_ms: i32,
}

/// Filters of `audit_page`; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Only rows of this team.
    pub team: Option<&'a str>,
    /// Only calls naming this project.
    pub project: Option<&'a str>,
    /// Only calls of this tool.
    pub tool: Option<&'a str>,
    /// Only calls by this principal.
    pub principal: Option<&'a str>,
    /// Only calls at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// Up to `limit` rows matching `filter`, newest first (by `at`, then `id`),
/// strictly after the row `after` in that order.
pub async fn audit_page(
    pool: &PgPool,
    filter: &AuditFilter<'_>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, at, tool, arguments, principal, team_id, role, client_name, client_version,
                project, outcome, error, duration_ms
           FROM audit_log a
          WHERE ($1::text IS NULL OR a.team_id = $1)
            AND ($2::text IS NULL OR a.project = $2)
            AND ($3::text IS NULL OR a.tool = $3)
            AND ($4::text IS NULL OR a.principal = $4)
            AND ($5::timestamptz IS NULL OR a.at >= $5)
            AND ($6::bigint IS NULL OR (a.at, a.id) < (SELECT at, id FROM audit_log WHERE id = $6))
          ORDER BY a.at DESC, a.id DESC
          LIMIT $7",
    )
    .bind(filter.team)
    .bind(filter.project)
    .bind(filter.tool)
    .bind(filter.principal)
    .bind(filter.since)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
