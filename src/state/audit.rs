//! The `audit_log` table: batched inserts and a paginated read. No business
//! rules here (what is redacted and when rows are written is `ops::audit`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

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
    /// The `environment` argument, when there was one.
    pub environment: Option<String>,
    /// The JSON-RPC request id.
    pub request_id: Option<String>,
    /// `ok`, `tool_error`, `denied`, `protocol_error`, `unauthenticated` or
    /// `rate_limited` (constraint `audit_log_outcome`).
    pub outcome: &'static str,
    /// Redacted, bounded error text.
    pub error: Option<String>,
    /// Wall time of the call.
    pub duration_ms: i32,
}

/// Rows per INSERT statement (one statement per chunk, all in one
/// transaction).
pub const AUDIT_INSERT_MAX_ROWS: usize = 1000;

/// Inserts `rows`, all in one transaction; returns how many were written.
/// One statement whatever the batch size: the columns go as 12 arrays
/// through `UNNEST`, so PostgreSQL parses and plans it once per connection
/// (a `VALUES` list of N rows would be a new statement for every N).
pub async fn audit_insert_batch(pool: &PgPool, rows: &[AuditRecord]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let mut written = 0;
    for chunk in rows.chunks(AUDIT_INSERT_MAX_ROWS) {
        let col = |f: fn(&AuditRecord) -> String| chunk.iter().map(f).collect::<Vec<_>>();
        let opt = |f: fn(&AuditRecord) -> Option<String>| chunk.iter().map(f).collect::<Vec<_>>();
        let r = sqlx::query(
            "INSERT INTO audit_log (at, tool, arguments, principal, team_id, role, \
             client_name, client_version, project, outcome, error, duration_ms, \
             environment, request_id) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::jsonb[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
             $11::text[], $12::int4[], $13::text[], $14::text[])",
        )
        .bind(chunk.iter().map(|r| r.at).collect::<Vec<_>>())
        .bind(col(|r| r.tool.clone()))
        .bind(
            chunk
                .iter()
                .map(|r| r.arguments.clone())
                .collect::<Vec<_>>(),
        )
        .bind(col(|r| r.principal.clone()))
        .bind(col(|r| r.team.clone()))
        .bind(col(|r| r.role.clone()))
        .bind(opt(|r| r.client_name.clone()))
        .bind(opt(|r| r.client_version.clone()))
        .bind(opt(|r| r.project.clone()))
        .bind(chunk.iter().map(|r| r.outcome).collect::<Vec<_>>())
        .bind(opt(|r| r.error.clone()))
        .bind(chunk.iter().map(|r| r.duration_ms).collect::<Vec<_>>())
        .bind(opt(|r| r.environment.clone()))
        .bind(opt(|r| r.request_id.clone()))
        .execute(&mut *tx)
        .await?;
        written += r.rows_affected();
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
    /// Environment argument.
    pub environment: Option<String>,
    /// JSON-RPC request id.
    pub request_id: Option<String>,
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
                project, environment, request_id, outcome, error, duration_ms
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
