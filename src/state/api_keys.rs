//! API keys and teams (DESIGN §6). Only SHA-256 digests of keys are stored;
//! a key is found by its digest, so the lookup takes the same path whatever
//! the key's text.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::state::DbError;

/// One API key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRow {
    /// Key id (shown by `key list`, used by `key revoke`).
    pub id: Uuid,
    /// Owning team.
    pub team_id: String,
    /// Role name (viewer, member, admin, owner).
    pub role: String,
    /// Free-text label.
    pub label: String,
    /// The person or CI system the key belongs to (DESIGN §6): two keys of
    /// one principal are one person for the two-person rule. `legacy` for
    /// keys made before principals existed.
    pub principal: String,
    /// The key that created this one (None: `codeb key create` on the codeb
    /// machine, the stdio operator, or made before this was recorded).
    pub created_by: Option<Uuid>,
    /// The principal that created it (None: made before this was recorded).
    pub created_by_principal: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last authenticated use (updated at most about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The columns of `ApiKeyRow`, for SELECT and RETURNING alike.
const COLUMNS: &str = "id, team_id, role, label, principal, created_by, created_by_principal,
        created_at, expires_at, revoked_at, last_used_at";

/// A new key's record.
pub struct NewApiKey<'a> {
    /// Id.
    pub id: Uuid,
    /// Team (must exist).
    pub team: &'a str,
    /// Role name.
    pub role: &'a str,
    /// Label.
    pub label: &'a str,
    /// The principal it belongs to.
    pub principal: &'a str,
    /// The creating key, if any.
    pub created_by: Option<Uuid>,
    /// The creating principal.
    pub created_by_principal: &'a str,
    /// SHA-256 of the key.
    pub key_sha256: &'a [u8],
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
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
pub async fn api_key_insert(pool: &PgPool, k: &NewApiKey<'_>) -> Result<ApiKeyRow, DbError> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, team_id, role, label, principal, created_by,
                               created_by_principal, key_sha256, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(k.id)
    .bind(k.team)
    .bind(k.role)
    .bind(k.label)
    .bind(k.principal)
    .bind(k.created_by)
    .bind(k.created_by_principal)
    .bind(k.key_sha256)
    .bind(k.expires_at)
    .fetch_one(pool)
    .await?)
}

/// The key with this digest, if any, with the stored digest (which the
/// caller compares in constant time).
pub async fn api_key_by_hash(
    pool: &PgPool,
    key_sha256: &[u8],
) -> Result<Option<(ApiKeyRow, Vec<u8>)>, DbError> {
    #[derive(sqlx::FromRow)]
    struct WithDigest {
        #[sqlx(flatten)]
        row: ApiKeyRow,
        key_sha256: Vec<u8>,
    }
    let found: Option<WithDigest> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, key_sha256 FROM api_keys WHERE key_sha256 = $1"
    ))
    .bind(key_sha256)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|f| (f.row, f.key_sha256)))
}

/// Keys, newest first; of one team when `team` is given.
pub async fn api_keys_list(pool: &PgPool, team: Option<&str>) -> Result<Vec<ApiKeyRow>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR team_id = $1)
         ORDER BY created_at DESC, id LIMIT 1000"
    ))
    .bind(team)
    .fetch_all(pool)
    .await?)
}

/// One key by id (of `team` when given).
pub async fn api_key_get(
    pool: &PgPool,
    id: Uuid,
    team: Option<&str>,
) -> Result<Option<ApiKeyRow>, DbError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND ($2::text IS NULL OR team_id = $2)"
    ))
    .bind(id)
    .bind(team)
    .fetch_optional(pool)
    .await?)
}

/// Revokes a key (of `team` when given). Returns the row, or None when no
/// such key exists (for that team). Revoking twice keeps the first time.
/// Who may revoke which key is decided by the caller (`mcp::keys`).
pub async fn api_key_revoke(
    pool: &PgPool,
    id: Uuid,
    team: Option<&str>,
) -> Result<Option<ApiKeyRow>, DbError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
          WHERE id = $1 AND ($2::text IS NULL OR team_id = $2) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(team)
    .fetch_optional(pool)
    .await?)
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
