//! PostgreSQL access through sqlx: connection, embedded migrations and one
//! file per noun. No business rules here.
//!
//! On first connection, after the migrations, PUBLIC loses every privilege
//! on the state database (`harden_state_database`): project roles live in
//! the same cluster and must not even connect to it (DESIGN §6).

pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod backups;
pub mod deployments;
pub mod domains;
pub mod drift;
pub mod envvars;
pub mod project_removal;
pub mod projects;
pub mod slots;
pub mod zones;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::OnceCell;

use crate::config::Config;

/// The embedded migrations (`src/state/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/state/migrations");

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Connection or query failure.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Migration failure.
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// Configuration problem (bad URL, unreadable password file).
    #[error("database config: {0}")]
    Config(String),
    /// A uniqueness or check constraint refused the change.
    #[error("{message}")]
    Conflict {
        /// Constraint name from the schema.
        constraint: String,
        /// What it means for the caller.
        message: String,
    },
    /// A bounded resource (a port range) has nothing left.
    #[error("{0}")]
    Exhausted(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            if let Some(c) = db.constraint() {
                return DbError::Conflict {
                    constraint: c.to_string(),
                    message: format!("the change conflicts with {c}"),
                };
            }
        }
        DbError::Unavailable(e.to_string().replace('\n', " "))
    }
}

impl DbError {
    /// The violated constraint, if this is a conflict.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            DbError::Conflict { constraint, .. } => Some(constraint),
            _ => None,
        }
    }
}

/// A lazily opened, migrated pool: nothing touches the network until the
/// first query, so `codeb serve` answers `initialize` without a database.
#[derive(Clone)]
pub struct Db {
    options: Option<PgConnectOptions>,
    config_error: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    pool: std::sync::Arc<OnceCell<PgPool>>,
}

impl Db {
    /// Prepares the pool from config; connects nothing.
    pub fn from_config(config: &Config) -> Self {
        let (options, config_error) = match connect_options(config) {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            options,
            config_error,
            max_connections: config.database.max_connections,
            acquire_timeout: Duration::from_secs(config.database.connect_timeout_secs),
            pool: std::sync::Arc::new(OnceCell::new()),
        }
    }

    /// Wraps an existing pool (tests).
    pub fn from_pool(pool: PgPool) -> Self {
        let cell = OnceCell::new();
        cell.set(pool).expect("fresh cell");
        Self {
            options: None,
            config_error: None,
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            pool: std::sync::Arc::new(cell),
        }
    }

    /// The pool, connecting and migrating on first use.
    pub async fn pool(&self) -> Result<&PgPool, DbError> {
        self.pool
            .get_or_try_init(|| async {
                let options = self.options.clone().ok_or_else(|| {
                    DbError::Config(self.config_error.clone().unwrap_or_default())
                })?;
                // One direct connection first: a pool only says "timed out",
                // a connection says why (refused, auth failed, no such db).
                use sqlx::Connection;
                match tokio::time::timeout(
                    self.acquire_timeout,
                    sqlx::PgConnection::connect_with(&options),
                )
                .await
                {
                    Ok(Ok(c)) => {
                        let _ = c.close().await;
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        return Err(DbError::Unavailable(format!(
                            "no connection within {} s",
                            self.acquire_timeout.as_secs()
                        )))
                    }
                }
                let pool = PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.acquire_timeout)
                    .connect_with(options)
                    .await?;
                MIGRATOR
                    .run(&pool)
                    .await
                    .map_err(|e| DbError::Migrate(e.to_string()))?;
                harden_state_database(&pool).await;
                Ok(pool)
            })
            .await
    }

    /// Connects (if needed) and applies migrations; returns how many are applied.
    pub async fn migrate(&self) -> Result<usize, DbError> {
        let pool = self.pool().await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
        Ok(n as usize)
    }

    /// A cheap round trip, for health and readiness.
    pub async fn ping(&self) -> Result<Duration, DbError> {
        let started = std::time::Instant::now();
        let pool = self.pool().await?;
        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(started.elapsed())
    }
}

/// True while PUBLIC (every role, project roles included) holds any
/// privilege on the current database.
const PUBLIC_HAS_ACCESS_SQL: &str = "SELECT \
    pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'CONNECT') \
    OR pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'TEMPORARY') \
    OR pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'CREATE')";

/// Revokes every privilege PUBLIC holds on the state database, unless
/// that is already done (so codeb processes starting together do not
/// update the same catalogue row). Only its owner or a superuser can:
/// for anyone else PostgreSQL changes nothing and only warns, so codeb can
/// never lock itself out this way; it then says in its log what an
/// administrator should run. `project_create` does the same as the
/// storage server's superuser (`plan::pg::harden_cluster`).
pub async fn harden_state_database(pool: &PgPool) {
    let open = || sqlx::query_scalar::<_, bool>(PUBLIC_HAS_ACCESS_SQL).fetch_one(pool);
    match open().await {
        Ok(false) => return,
        Ok(true) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not check PUBLIC's access to the state database");
            return;
        }
    }
    let revoked = sqlx::raw_sql(
        "DO $codeb$ BEGIN EXECUTE pg_catalog.format('REVOKE ALL ON DATABASE %I FROM PUBLIC', \
         pg_catalog.current_database()); END $codeb$",
    )
    .execute(pool)
    .await;
    // A concurrent start may have done it (or collided with this one).
    if let Ok(true) = open().await {
        let db: String = sqlx::query_scalar("SELECT pg_catalog.current_database()::text")
            .fetch_one(pool)
            .await
            .unwrap_or_default();
        tracing::warn!(
            database = %db,
            error = ?revoked.err().map(|e| e.to_string()),
            "every role, project roles included, may still connect to codeb's state database: \
             as its owner or a superuser run REVOKE ALL ON DATABASE {db:?} FROM PUBLIC \
             (project_create does it when it can run psql as the storage server's superuser)"
        );
    }
}

fn connect_options(config: &Config) -> Result<PgConnectOptions, String> {
    let mut o = PgConnectOptions::from_str(&config.database.url)
        .map_err(|e| format!("database.url: {e}"))?
        .application_name("codeb");
    if let Some(p) = config.database_password().map_err(|e| e.to_string())? {
        o = o.password(&p);
    }
    Ok(o)
}
