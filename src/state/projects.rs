//! Projects and their environments.

use sqlx::PgPool;

use crate::state::DbError;

/// A project row with its environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    /// Database id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Owning team.
    pub team_id: String,
    /// Project type (nextjs, node, static, ...).
    pub kind: String,
    /// Environments with their base port, sorted by name.
    pub environments: Vec<(String, i32)>,
}

type Row = (
    i64,
    String,
    String,
    String,
    Option<Vec<String>>,
    Option<Vec<i32>>,
);

/// Live projects with their environments; `$1` team, `$2` exact name,
/// `$3` names after this cursor, `$4` limit (all optional but the limit).
const SELECT_PROJECTS: &str = "SELECT p.id, p.name, p.team_id, p.kind,
        array_agg(pe.environment ORDER BY pe.environment) FILTER (WHERE pe.environment IS NOT NULL),
        array_agg(pe.base_port ORDER BY pe.environment) FILTER (WHERE pe.environment IS NOT NULL)
   FROM projects p
   LEFT JOIN project_environments pe ON pe.project_id = p.id
  WHERE p.deleted_at IS NULL
    AND ($1::text IS NULL OR p.team_id = $1)
    AND ($2::text IS NULL OR p.name = $2)
    AND ($3::text IS NULL OR p.name > $3)
  GROUP BY p.id
  ORDER BY p.name
  LIMIT $4";

fn into_project((id, name, team_id, kind, envs, ports): Row) -> ProjectRow {
    ProjectRow {
        id,
        name,
        team_id,
        kind,
        environments: envs
            .unwrap_or_default()
            .into_iter()
            .zip(ports.unwrap_or_default())
            .collect(),
    }
}

/// One page of live projects ordered by name, starting after `after`.
pub async fn projects_page(
    pool: &PgPool,
    team: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ProjectRow>, DbError> {
    let rows: Vec<Row> = sqlx::query_as(SELECT_PROJECTS)
        .bind(team)
        .bind(None::<&str>)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(into_project).collect())
}

/// Finds a live project by name.
pub async fn project_by_name(pool: &PgPool, name: &str) -> Result<Option<ProjectRow>, DbError> {
    let row: Option<Row> = sqlx::query_as(SELECT_PROJECTS)
        .bind(None::<&str>)
        .bind(name)
        .bind(None::<&str>)
        .bind(1_i64)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(into_project))
}

/// Attempts at allocating port pairs when a concurrent insert took the same pair.
const PORT_ALLOCATION_ATTEMPTS: usize = 20;

/// Names of live projects that start with `prefix` (`[a-z0-9-]` only, so
/// it holds no LIKE wildcard), sorted.
pub async fn live_names_starting_with(pool: &PgPool, prefix: &str) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM projects
          WHERE deleted_at IS NULL AND left(name, length($1)) = $1
          ORDER BY name",
    )
    .bind(prefix)
    .fetch_all(pool)
    .await?)
}

/// Registers a project with all three environments and their slots,
/// allocating the lowest free port pair per environment. The unique
/// constraint on `base_port` decides races: a transaction that loses one is
/// retried from the start. Nothing is left half-made on failure.
pub async fn project_insert(
    pool: &PgPool,
    name: &str,
    team: &str,
    kind: &str,
) -> Result<i64, DbError> {
    let mut last = None;
    for _ in 0..PORT_ALLOCATION_ATTEMPTS {
        match project_insert_once(pool, name, team, kind).await {
            Err(e) if e.constraint() == Some("project_environments_port_unique") => last = Some(e),
            Err(e) if e.constraint() == Some("projects_name_unique") => {
                return Err(DbError::Conflict {
                    constraint: "projects_name_unique".into(),
                    message: format!("project {name:?} already exists; pick another name or use the existing project"),
                })
            }
            other => return other,
        }
    }
    Err(last.expect("at least one attempt"))
}

async fn project_insert_once(
    pool: &PgPool,
    name: &str,
    team: &str,
    kind: &str,
) -> Result<i64, DbError> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO projects (name, team_id, kind) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(team)
    .bind(kind)
    .fetch_one(&mut *tx)
    .await?;
    for env in crate::model::Environment::ALL {
        let (lo, hi) = env.port_range();
        let port: Option<i32> = sqlx::query_scalar(
            "SELECT p FROM generate_series($1::int, $2::int - 1, 2) AS p
              WHERE NOT EXISTS (SELECT 1 FROM project_environments WHERE base_port = p)
              ORDER BY p LIMIT 1",
        )
        .bind(lo as i32)
        .bind(hi as i32)
        .fetch_optional(&mut *tx)
        .await?;
        let port = port.ok_or_else(|| {
            DbError::Exhausted(format!(
                "no free port pair left in the {env} range {lo}-{hi}; delete unused projects first"
            ))
        })?;
        sqlx::query("INSERT INTO project_environments (project_id, environment, base_port) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(env.as_str())
            .bind(port)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO slots (project_id, environment, slot) VALUES ($1, $2, 'blue'), ($1, $2, 'green')")
            .bind(id)
            .bind(env.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// Removes a project's rows outright (environments, slots and records go
/// with them by cascade). Only for undoing a creation that failed before
/// the project was ever usable; deleting a real project is a soft delete.
pub async fn project_remove_failed_creation(pool: &PgPool, id: i64) -> Result<(), DbError> {
    sqlx::query("DELETE FROM projects WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
