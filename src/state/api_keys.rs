//! API keys and teams (DESIGN §6). Only SHA-256 digests of keys are stored;
//! a key is found by its digest, so the lookup takes the same path whatever
//! the key's text.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::state::DbError;

/// One API key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Key id (shown by `key list`, used by `key revoke`).
    pub id: Uuid,
    /// Owning team.
    pub team_id: String,
    /// Role name (viewer, member, admin, owner).
    pub role: String,
    /// Free-text label.
    pub label: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last authenticated use (updated at most about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

type Row = (
    Uuid,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

const COLUMNS: &str = "id, team_id, role, label, created_at, expires_at, revoked_at, last_used_at";

fn into_row(
    (id, team_id, role, label, created_at, expires_at, revoked_at, last_used_at): Row,
) -> ApiKeyRow {
    ApiKeyRow {
        id,
        team_id,
        role,
        label,
        created_at,
        expires_at,
        revoked_at,
        last_used_at,
    }
}

/// Creates the team if it does not exist yet.
pub async fn team_ensure(pool: &PgPool, team: &str) -> Result<(), DbError> {
    sqlx::query("INSERT INTO teams (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
        .bind(team)
        .execute(pool)
        .await?;
    Ok(())
}

/// Stores a new key's digest (the team must exist).
pub async fn api_key_insert(
    pool: &PgPool,
    id: Uuid,
    team: &str,
    role: &str,
    label: &str,
    key_sha256: &[u8],
    expires_at: Option<DateTime<Utc>>,
) -> Result<ApiKeyRow, DbError> {
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, team_id, role, label, key_sha256, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(team)
    .bind(role)
    .bind(label)
    .bind(key_sha256)
    .bind(expires_at)
    .fetch_one(pool)
    .await?;
    Ok(into_row(row))
}

/// The key with this digest, if any, with the stored digest (which the
/// caller compares in constant time).
pub async fn api_key_by_hash(
    pool: &PgPool,
    key_sha256: &[u8],
) -> Result<Option<(ApiKeyRow, Vec<u8>)>, DbError> {
    type WithDigest = (
        Uuid,
        String,
        String,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Vec<u8>,
    );
    let row: Option<WithDigest> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, key_sha256 FROM api_keys WHERE key_sha256 = $1"
    ))
    .bind(key_sha256)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(a, b, c, d, e, f, g, h, stored)| (into_row((a, b, c, d, e, f, g, h)), stored)))
}

/// Keys, newest first; of one team when `team` is given.
pub async fn api_keys_list(pool: &PgPool, team: Option<&str>) -> Result<Vec<ApiKeyRow>, DbError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR team_id = $1)
         ORDER BY created_at DESC, id LIMIT 1000"
    ))
    .bind(team)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(into_row).collect())
}

/// Revokes a key (of `team` when given). Returns the row, or None when no
/// such key exists (for that team). Revoking twice keeps the first time.
pub async fn api_key_revoke(
    pool: &PgPool,
    id: Uuid,
    team: Option<&str>,
) -> Result<Option<ApiKeyRow>, DbError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
          WHERE id = $1 AND ($2::text IS NULL OR team_id = $2) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(team)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(into_row))
}

/// Records a use of the key.
pub async fn api_key_touch(pool: &PgPool, id: Uuid) -> Result<(), DbError> {
    sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The owning team of a live project, if the project exists.
pub async fn project_team(pool: &PgPool, project: &str) -> Result<Option<String>, DbError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT team_id FROM projects WHERE name = $1 AND deleted_at IS NULL")
            .bind(project)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|r| r.0))
}

/// The owning team of the project a deployment belongs to, if it exists.
pub async fn deployment_team(pool: &PgPool, id: Uuid) -> Result<Option<String>, DbError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT p.team_id FROM deployments d JOIN projects p ON p.id = d.project_id WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}
