//! Zones codeb created in PowerDNS and the team each belongs to (DESIGN §6
//! "Names have owners"): the `zones` table. Names are lowercase without
//! trailing dot.

use sqlx::PgPool;

use crate::state::DbError;

/// The owned zones that hold `domain` or are `domain`, with their teams.
pub async fn zones_holding(pool: &PgPool, domain: &str) -> Result<Vec<(String, String)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT zone, team_id FROM zones
          WHERE $1 = zone OR right($1, length(zone) + 1) = '.' || zone
          ORDER BY length(zone) DESC",
    )
    .bind(domain)
    .fetch_all(pool)
    .await?)
}

/// Records `zone` as `team`'s unless it already belongs to a team.
/// Returns the owning team afterwards and whether this call recorded it.
pub async fn zone_claim(pool: &PgPool, zone: &str, team: &str) -> Result<(String, bool), DbError> {
    let inserted = sqlx::query(
        "INSERT INTO zones (zone, team_id) VALUES ($1, $2) ON CONFLICT (zone) DO NOTHING",
    )
    .bind(zone)
    .bind(team)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    let owner: String = sqlx::query_scalar("SELECT team_id FROM zones WHERE zone = $1")
        .bind(zone)
        .fetch_one(pool)
        .await?;
    Ok((owner, inserted))
}

/// Forgets `zone` (its PowerDNS zone was deleted again).
pub async fn zone_forget(pool: &PgPool, zone: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM zones WHERE zone = $1")
        .bind(zone)
        .execute(pool)
        .await?;
    Ok(())
}
