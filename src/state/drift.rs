//! The rows drift_report compares with the servers, each kind read in ONE
//! query whatever the number of projects: slots with their port pairs,
//! the latest synced env version per environment, and domains — of the
//! projects of one team (every team's: None), or of one project — and, for
//! an owner's report, the names other teams' projects own.

use sqlx::PgPool;
use uuid::Uuid;

use crate::state::envvars::EnvVersionRow;
use crate::state::DbError;

/// One slot of a live project, with its environment's base port.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DriftSlotRow {
    /// Project id.
    pub project_id: i64,
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: String,
    /// Base port of the pair.
    pub base_port: i32,
    /// blue or green; `None` for an environment without slot rows.
    pub slot: Option<String>,
    /// Slot state.
    pub state: Option<String>,
    /// Recorded image.
    pub image: Option<String>,
    /// Deployment that filled the slot.
    pub deployment_id: Option<Uuid>,
}

/// Every environment (and its slots) of the live projects of `team`, or of
/// the one named `project`.
pub async fn drift_slots(
    pool: &PgPool,
    team: Option<&str>,
    project: Option<&str>,
) -> Result<Vec<DriftSlotRow>, DbError> {
    Ok(sqlx::query_as::<_, DriftSlotRow>(
        "SELECT p.id AS project_id, p.name AS project, pe.environment, pe.base_port,
                s.slot, s.state, s.image, s.deployment_id
           FROM projects p
           JOIN project_environments pe ON pe.project_id = p.id
           LEFT JOIN slots s ON s.project_id = pe.project_id AND s.environment = pe.environment
          WHERE p.deleted_at IS NULL AND ($1::text IS NULL OR p.name = $1)
            AND ($2::text IS NULL OR p.team_id = $2)
          ORDER BY p.name, pe.environment, s.slot",
    )
    .bind(project)
    .bind(team)
    .fetch_all(pool)
    .await?)
}

/// The latest version written to the app server (synced) of every
/// environment of the live projects of `team`, or of the one named
/// `project`: (project id, environment, version row).
pub async fn drift_synced_env_versions(
    pool: &PgPool,
    team: Option<&str>,
    project: Option<&str>,
) -> Result<Vec<(i64, String, EnvVersionRow)>, DbError> {
    let rows: Vec<crate::state::envvars::RowWithEnv> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (v.project_id, v.environment) v.project_id, v.environment, {}
           FROM env_versions v JOIN projects p ON p.id = v.project_id
          WHERE v.synced_at IS NOT NULL AND p.deleted_at IS NULL
            AND ($1::text IS NULL OR p.name = $1) AND ($2::text IS NULL OR p.team_id = $2)
          ORDER BY v.project_id, v.environment, v.version DESC",
        crate::state::envvars::COLUMNS_V
    ))
    .bind(project)
    .bind(team)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(crate::state::envvars::split_row_with_env)
        .collect())
}

/// One domains row with its project's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DriftDomainRow {
    /// Hostname.
    pub hostname: String,
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: String,
    /// managed, custom or preview.
    pub kind: String,
    /// DNS state.
    pub dns_state: String,
    /// Route state.
    pub route_state: String,
}

/// The domains of the live projects of `team`, or of the one named `project`.
pub async fn drift_domains(
    pool: &PgPool,
    team: Option<&str>,
    project: Option<&str>,
) -> Result<Vec<DriftDomainRow>, DbError> {
    Ok(sqlx::query_as::<_, DriftDomainRow>(
        "SELECT d.hostname, p.name AS project, d.environment, d.kind, d.dns_state, d.route_state
           FROM domains d JOIN projects p ON p.id = d.project_id
          WHERE p.deleted_at IS NULL AND ($1::text IS NULL OR p.name = $1)
            AND ($2::text IS NULL OR p.team_id = $2)
          ORDER BY d.hostname",
    )
    .bind(project)
    .bind(team)
    .fetch_all(pool)
    .await?)
}

/// What the projects of teams other than `team` — deleted ones included —
/// own on the servers: (project, environment, domain host name or None),
/// one row per environment and one per domain. An owner's report uses it
/// only to tell another team's containers and routes from orphans; it
/// never lists them.
pub async fn drift_other_teams_names(
    pool: &PgPool,
    team: &str,
) -> Result<Vec<(String, String, Option<String>)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT p.name, pe.environment, NULL::text
           FROM projects p JOIN project_environments pe ON pe.project_id = p.id
          WHERE p.team_id <> $1
         UNION ALL
         SELECT p.name, d.environment, d.hostname
           FROM domains d JOIN projects p ON p.id = d.project_id
          WHERE p.team_id <> $1",
    )
    .bind(team)
    .fetch_all(pool)
    .await?)
}
