//! Domains routed to a (project, environment) (DESIGN §4): the `domains`
//! table. `dns_state` and `route_state` are `pending`, `ok` or `failed`.

use sqlx::PgPool;

use crate::state::DbError;

/// One domain row with its project's name.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DomainRow {
    /// Host name, lowercase, no trailing dot.
    pub hostname: String,
    /// Owning project.
    pub project: String,
    /// The owning project's team.
    pub team: String,
    /// Environment it routes to.
    pub environment: String,
    /// `managed` (zone listed in dns.managed_zones) or `custom`.
    pub kind: String,
    /// State of its A/AAAA records.
    pub dns_state: String,
    /// State of its SRV route.
    pub route_state: String,
    /// When it was set up.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const SELECT: &str =
    "SELECT d.hostname, p.name AS project, p.team_id AS team, d.environment, d.kind, d.dns_state,
                             d.route_state, d.created_at
                        FROM domains d JOIN projects p ON p.id = d.project_id";

/// The row of `hostname`, if any.
pub async fn domain_get(pool: &PgPool, hostname: &str) -> Result<Option<DomainRow>, DbError> {
    Ok(
        sqlx::query_as::<_, DomainRow>(&format!("{SELECT} WHERE d.hostname = $1"))
            .bind(hostname)
            .fetch_optional(pool)
            .await?,
    )
}

/// Records `hostname` for (project_id, environment) as pending. Returns
/// false when a row for it already exists (whoever owns it).
pub async fn domain_insert(
    pool: &PgPool,
    hostname: &str,
    project_id: i64,
    environment: &str,
    kind: &str,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO domains (hostname, project_id, environment, kind) VALUES ($1, $2, $3, $4)
         ON CONFLICT (hostname) DO NOTHING",
    )
    .bind(hostname)
    .bind(project_id)
    .bind(environment)
    .bind(kind)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets the DNS and route states of `hostname` (None leaves one as it is).
pub async fn domain_set_states(
    pool: &PgPool,
    hostname: &str,
    dns_state: Option<&str>,
    route_state: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE domains SET dns_state = COALESCE($2, dns_state),
                            route_state = COALESCE($3, route_state)
          WHERE hostname = $1",
    )
    .bind(hostname)
    .bind(dns_state)
    .bind(route_state)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records on the row of `hostname` that its setup replaced address
/// records codeb did not make (`takeover`: who, when, what was there).
pub async fn domain_set_takeover(
    pool: &PgPool,
    hostname: &str,
    takeover: &serde_json::Value,
) -> Result<(), DbError> {
    sqlx::query("UPDATE domains SET takeover = $2 WHERE hostname = $1")
        .bind(hostname)
        .bind(takeover)
        .execute(pool)
        .await?;
    Ok(())
}

/// Removes the row of `hostname`.
pub async fn domain_remove(pool: &PgPool, hostname: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM domains WHERE hostname = $1")
        .bind(hostname)
        .execute(pool)
        .await?;
    Ok(())
}

/// Host names of the domains of one (project, environment), sorted.
pub async fn domains_for_env(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT hostname FROM domains WHERE project_id = $1 AND environment = $2 ORDER BY hostname",
    )
    .bind(project_id)
    .bind(environment)
    .fetch_all(pool)
    .await?)
}

/// Marks the routes of every domain of one (project, environment) `ok`
/// (after a switch put them in place).
pub async fn domains_mark_routed(
    pool: &PgPool,
    project_id: i64,
    environment: &str,
) -> Result<(), DbError> {
    sqlx::query("UPDATE domains SET route_state = 'ok' WHERE project_id = $1 AND environment = $2")
        .bind(project_id)
        .bind(environment)
        .execute(pool)
        .await?;
    Ok(())
}

/// One page of domains of live projects sorted by host name, after
/// `after`: of projects of `team` only (every team's: None), optionally of
/// one project.
pub async fn domains_page(
    pool: &PgPool,
    team: Option<&str>,
    project: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<DomainRow>, DbError> {
    Ok(sqlx::query_as::<_, DomainRow>(&format!(
        "{SELECT} WHERE p.deleted_at IS NULL AND ($4::text IS NULL OR p.team_id = $4)
                    AND ($1::text IS NULL OR p.name = $1)
                    AND ($2::text IS NULL OR d.hostname > $2)
                  ORDER BY d.hostname LIMIT $3"
    ))
    .bind(project)
    .bind(after)
    .bind(limit)
    .bind(team)
    .fetch_all(pool)
    .await?)
}

/// True when `hostname` is in codeb's route table for the project that
/// owns it (DESIGN §2, on-demand TLS `ask`): a domain row of a live project
/// whose route codeb set (`route_state` ok), the env hostname of a live
/// project environment with an active slot (`{project}.{base}` or
/// `{project}-{env}.{base}`), or the preview host of a non-empty slot
/// (`{project}-{env}-{slot}.{preview}`). `hostname` is normalised
/// (lowercase, no trailing dot). The shapes are those of
/// `plan::dns::env_hostnames` and `plan::dns::preview_hostname`.
pub async fn hostname_routed(
    pool: &PgPool,
    hostname: &str,
    base_domain: &str,
    preview_domain: &str,
) -> Result<bool, DbError> {
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    let preview = preview_domain.trim_end_matches('.').to_ascii_lowercase();
    let row: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM domains d JOIN projects p ON p.id = d.project_id
          WHERE d.hostname = $1 AND p.deleted_at IS NULL AND d.route_state = 'ok'
         UNION ALL
         SELECT 1 FROM slots s JOIN projects p ON p.id = s.project_id
          WHERE p.deleted_at IS NULL AND s.state = 'active'
            AND $1 = CASE WHEN s.environment = 'production' THEN p.name || '.' || $2
                          ELSE p.name || '-' || s.environment || '.' || $2 END
         UNION ALL
         SELECT 1 FROM slots s JOIN projects p ON p.id = s.project_id
          WHERE p.deleted_at IS NULL AND s.state <> 'empty'
            AND $1 = p.name || '-' || s.environment || '-' || s.slot || '.' || $3
         LIMIT 1",
    )
    .bind(hostname)
    .bind(&base)
    .bind(&preview)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// Host names among `hosts` that are already domain rows (of any
/// project): `project_create` refuses a name whose generated host is one.
pub async fn domains_among(pool: &PgPool, hosts: &[String]) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT hostname FROM domains WHERE hostname = ANY($1) ORDER BY hostname",
    )
    .bind(hosts)
    .fetch_all(pool)
    .await?)
}
