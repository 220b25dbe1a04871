//! Env versions (DESIGN §3): ciphertext plus key names and fingerprints.
//! Values exist here only encrypted.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::plan::envvars::KeyInfo;
use crate::state::DbError;

/// One stored version.
#[derive(Debug, Clone)]
pub struct EnvVersionRow {
    /// Version number (1, 2, ...).
    pub version: i32,
    /// XChaCha20-Poly1305 ciphertext of the JSON object of values.
    pub ciphertext: Vec<u8>,
    /// Its nonce.
    pub nonce: Vec<u8>,
    /// Key names, fingerprints, protected flags.
    pub keys: Vec<KeyInfo>,
    /// Id of the master key that encrypted it.
    pub key_id: String,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was last written to the servers.
    pub synced_at: Option<DateTime<Utc>>,
}

type Row = (
    i32,
    Vec<u8>,
    Vec<u8>,
    sqlx::types::Json<Vec<KeyInfo>>,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn into_row(r: Row) -> EnvVersionRow {
    EnvVersionRow {
        version: r.0,
        ciphertext: r.1,
        nonce: r.2,
        keys: r.3 .0,
        key_id: r.4,
        created_by: r.5,
        created_at: r.6,
        synced_at: r.7,
    }
}

const COLUMNS: &str = "version, ciphertext, nonce, keys, key_id, created_by, created_at, synced_at";

/// `COLUMNS` qualified with the table alias `v` (for joins).
pub(crate) const COLUMNS_V: &str =
    "v.version, v.ciphertext, v.nonce, v.keys, v.key_id, v.created_by, v.created_at, v.synced_at";

/// A version row preceded by its project id and environment.
pub(crate) type RowWithEnv = (
    i64,
    String,
    i32,
    Vec<u8>,
    Vec<u8>,
    sqlx::types::Json<Vec<KeyInfo>>,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// Splits a `RowWithEnv` into (project id, environment, version row).
pub(crate) fn split_row_with_env(r: RowWithEnv) -> (i64, String, EnvVersionRow) {
    (r.0, r.1, into_row((r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9)))
}

/// A version of (project, environment): the given one, else the latest.
pub async fn version_get(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
    version: Option<i32>,
) -> Result<Option<EnvVersionRow>, DbError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM env_versions
          WHERE project_id = $1 AND environment = $2 AND ($3::int IS NULL OR version = $3)
          ORDER BY version DESC LIMIT 1"
    ))
    .bind(project_id)
    .bind(environment)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(into_row))
}

/// Key lists of several versions of one (project, environment).
pub async fn keys_of(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
    versions: &[i32],
) -> Result<Vec<(i32, Vec<KeyInfo>)>, DbError> {
    let rows: Vec<(i32, sqlx::types::Json<Vec<KeyInfo>>)> = sqlx::query_as(
        "SELECT version, keys FROM env_versions
          WHERE project_id = $1 AND environment = $2 AND version = ANY($3)",
    )
    .bind(project_id)
    .bind(environment)
    .bind(versions)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(v, k)| (v, k.0)).collect())
}

/// What a new version holds.
pub struct NewVersion<'a> {
    /// Project id.
    pub project_id: i64,
    /// Environment.
    pub environment: &'a str,
    /// The version number: the latest seen plus one.
    pub version: i32,
    /// Ciphertext.
    pub ciphertext: &'a [u8],
    /// Nonce.
    pub nonce: &'a [u8],
    /// Key infos.
    pub keys: &'a [KeyInfo],
    /// Master key id.
    pub key_id: &'a str,
    /// Author.
    pub created_by: &'a str,
}

/// Inserts a version. `Ok(false)` when that number was taken meanwhile
/// (another change won the race; read the latest and try again).
pub async fn version_insert(pool: &PgPool, v: &NewVersion<'_>) -> Result<bool, DbError> {
    let r = sqlx::query(
        "INSERT INTO env_versions (project_id, environment, version, ciphertext, nonce, keys, key_id, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(v.project_id)
    .bind(v.environment)
    .bind(v.version)
    .bind(v.ciphertext)
    .bind(v.nonce)
    .bind(sqlx::types::Json(v.keys))
    .bind(v.key_id)
    .bind(v.created_by)
    .execute(pool)
    .await;
    match r {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = DbError::from(e);
            if e.constraint() == Some("env_versions_pkey") {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Records that `version` was written to the servers now.
pub async fn mark_synced(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
    version: i32,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE env_versions SET synced_at = now()
          WHERE project_id = $1 AND environment = $2 AND version = $3",
    )
    .bind(project_id)
    .bind(environment)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether any env data exists, and the distinct key ids that encrypted it.
pub async fn key_ids_in_use(pool: &PgPool) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT key_id FROM env_versions ORDER BY key_id")
            .fetch_all(pool)
            .await?,
    )
}

/// The latest version number of a (project, environment), if any.
pub async fn latest_version_number(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
) -> Result<Option<i32>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT max(version) FROM env_versions WHERE project_id = $1 AND environment = $2",
    )
    .bind(project_id)
    .bind(environment)
    .fetch_one(pool)
    .await?)
}

/// A version some live project uses, with its project's name and team.
#[derive(Debug, Clone)]
pub struct VersionInUse {
    /// Project id.
    pub project_id: i64,
    /// Project name.
    pub project: String,
    /// Project team.
    pub team: String,
    /// Environment.
    pub environment: String,
    /// The version.
    pub row: EnvVersionRow,
}

/// Every live project's latest version per environment and the versions
/// its non-empty slots run, newest first per (project, environment).
pub async fn versions_in_use(pool: &PgPool) -> Result<Vec<VersionInUse>, DbError> {
    // (name, team) and then the `RowWithEnv` columns.
    type InUseRow = (
        String,
        String,
        i64,
        String,
        i32,
        Vec<u8>,
        Vec<u8>,
        sqlx::types::Json<Vec<KeyInfo>>,
        String,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<InUseRow> = sqlx::query_as(&format!(
            "SELECT p.name, p.team_id, v.project_id, v.environment, {COLUMNS_V}
               FROM env_versions v JOIN projects p ON p.id = v.project_id
              WHERE p.deleted_at IS NULL
                AND (v.version = (SELECT max(w.version) FROM env_versions w
                                   WHERE w.project_id = v.project_id AND w.environment = v.environment)
                     OR v.version IN (SELECT s.env_version FROM slots s
                                       WHERE s.project_id = v.project_id AND s.environment = v.environment
                                         AND s.state <> 'empty' AND s.env_version IS NOT NULL))
              ORDER BY v.project_id, v.environment, v.version DESC"
        ))
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let (project, team) = (r.0, r.1);
            let (project_id, environment, row) =
                split_row_with_env((r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11));
            VersionInUse {
                project_id,
                project,
                team,
                environment,
                row,
            }
        })
        .collect())
}

/// The team of a live project (whose env values are registered for
/// redaction in its outputs); `None` when it does not exist (any more).
pub async fn project_team(pool: &PgPool, project_id: i64) -> Result<Option<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT team_id FROM projects WHERE id = $1 AND deleted_at IS NULL")
            .bind(project_id)
            .fetch_optional(pool)
            .await?,
    )
}
