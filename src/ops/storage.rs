//! A project's storage on the storage server (DESIGN §1): per environment a
//! PostgreSQL login role owning a database nobody else may connect to, and
//! a Redis ACL user confined to the environment's key prefix. Passwords are
//! generated here, registered for redaction at once, and sent only as a
//! SCRAM verifier (PostgreSQL) and a SHA-256 hash (Redis) — the plaintext
//! reaches neither server nor any log; it is handed back to the caller,
//! which stores it as protected env variables.
//!
//! Nothing is left half-made: every object is recorded the moment it
//! exists, and a failure drops exactly what this call created — never an
//! object that was already there.
//!
//! Before anything is created, `harden_storage_postgres` makes sure no
//! project role can connect to anything but its own database: CONNECT,
//! TEMPORARY and CREATE are revoked from PUBLIC on `postgres`, `template1`
//! and codeb's state database (`plan::pg::harden_cluster`, idempotent).
//! `project_role_password` is how backups and restores log in as a
//! project's role (see `plan::pg`).

use std::fmt;

use crate::exec::Remote;
use crate::model::{Environment, ServerRole, StorageNames};
use crate::ops::{redact, Ctx};
use crate::plan::pg::harden_cluster;
use crate::plan::storage::{
    self as plan, parse_redis_replies, redis_cli_session, RedisReply, StorageEndpoint,
};

/// What went wrong while making or removing a project's storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An object with a name the project needs already exists; nothing
    /// was changed and the object was left alone.
    #[error("{what} already exists on the storage server (left over from an earlier project?); nothing was created or dropped — drop it by hand or pick another project name")]
    Leftover {
        /// The objects found, e.g. `PostgreSQL role shop_production`.
        what: String,
    },
    /// A step failed (its cause is already redacted).
    #[error("{step} failed: {cause}")]
    Step {
        /// What was being done.
        step: String,
        /// Why it failed.
        cause: String,
    },
}

fn step_error(step: impl Into<String>, cause: impl fmt::Display) -> StorageError {
    StorageError::Step {
        step: step.into(),
        cause: redact::redact(&cause.to_string().replace('\n', " ")),
    }
}

/// Provisioning failed; what was created before the failure was reverted
/// as far as possible.
#[derive(Debug, thiserror::Error)]
#[error("{error}; {revert}")]
pub struct ProvisionError {
    /// The failure.
    #[source]
    pub error: StorageError,
    /// What the revert did.
    pub revert: RevertReport,
}

/// The outcome of reverting: what was removed and what could not be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevertReport {
    /// Objects removed, e.g. `database shop_production`.
    pub reverted: Vec<String>,
    /// Objects that could not be removed, with the reason.
    pub failed: Vec<String>,
}

impl RevertReport {
    /// True when everything that had to go is gone.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }

    fn merge(&mut self, other: RevertReport) {
        self.reverted.extend(other.reverted);
        self.failed.extend(other.failed);
    }
}

impl fmt::Display for RevertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reverted.is_empty() {
            f.write_str("nothing needed reverting")?;
        } else {
            write!(f, "reverted: {}", self.reverted.join(", "))?;
        }
        if !self.failed.is_empty() {
            write!(
                f,
                "; NOT reverted, remove by hand: {}",
                self.failed.join("; ")
            )?;
        }
        Ok(())
    }
}

/// One environment's generated credentials. `Debug` never shows the password.
#[derive(Clone)]
pub struct EnvCredentials {
    /// The environment.
    pub environment: Environment,
    /// Role/database, Redis user and key prefix names.
    pub names: StorageNames,
    password: String,
}

impl EnvCredentials {
    /// The generated password (PostgreSQL role and Redis user share it).
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for EnvCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvCredentials")
            .field("environment", &self.environment)
            .field("names", &self.names)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// What exists on the storage server because of one provisioning call.
#[derive(Debug, Clone, Default)]
struct Created {
    pg_roles: Vec<StorageNames>,
    pg_databases: Vec<StorageNames>,
    redis_users: Vec<StorageNames>,
}

/// A project's provisioned storage: credentials per environment and the
/// record of what was created (for `revert_project_storage`).
#[derive(Debug, Clone)]
pub struct ProjectStorage {
    /// The project.
    pub project: String,
    /// Credentials, one per environment in `Environment::ALL` order.
    pub environments: Vec<EnvCredentials>,
    created: Created,
}

/// Where the project's containers reach PostgreSQL and Redis.
pub fn storage_endpoint(ctx: &Ctx) -> StorageEndpoint {
    StorageEndpoint {
        host: ctx.config.storage_app_host(),
        postgres_port: ctx.config.storage.postgres_port,
        redis_port: ctx.config.storage.redis_port,
    }
}

/// The names a project's storage will have, per environment.
pub fn storage_names(project: &str) -> Result<Vec<(Environment, StorageNames)>, StorageError> {
    Environment::ALL
        .iter()
        .map(|&env| {
            StorageNames::new(project, env)
                .map(|n| (env, n))
                .map_err(|e| step_error("name the storage objects", e.0))
        })
        .collect()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StorageError> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| step_error("draw random bytes", e))?;
    Ok(buf)
}

/// A fresh password of `plan::storage::PASSWORD_LEN` alphanumeric
/// characters from the OS's random source, registered for redaction as a
/// secret of `project`.
pub fn generate_password(project: &str) -> Result<String, StorageError> {
    loop {
        // 128 bytes hold 32 accepted ones except with negligible probability.
        if let Some(pw) = plan::password_from_random(&random_bytes::<128>()?) {
            redact::add_current(project, redact::STORAGE_SOURCE, [pw.clone()].into());
            return Ok(pw);
        }
    }
}

fn storage_remote(ctx: &Ctx) -> Result<&dyn Remote, StorageError> {
    ctx.fleet
        .for_role(ServerRole::Storage)
        .map(|(_, r)| r.as_ref())
        .ok_or_else(|| step_error("find the storage server", "no server has the storage role"))
}

fn redis_admin_password(ctx: &Ctx) -> Result<Option<String>, StorageError> {
    let pw = ctx
        .config
        .redis_admin_password()
        .map_err(|e| step_error("read the Redis admin password", e))?;
    if let Some(p) = &pw {
        redact::register(p);
    }
    Ok(pw)
}

/// Runs one redis-cli session and returns its replies without the `AUTH`
/// reply, after checking that there is one reply per line and that AUTH
/// succeeded.
async fn redis_session(
    ctx: &Ctx,
    step: &str,
    lines: &[String],
) -> Result<Vec<RedisReply>, StorageError> {
    let remote = storage_remote(ctx)?;
    let admin = redis_admin_password(ctx)?;
    let cmd = redis_cli_session(ctx.config.storage.redis_port, admin.as_deref(), lines);
    let out = remote.run(&cmd).await.map_err(|e| step_error(step, e))?;
    if !out.success() {
        return Err(step_error(
            step,
            format!(
                "redis-cli exited with {:?}: {}",
                out.status,
                out.stderr_tail()
            ),
        ));
    }
    let mut replies = parse_redis_replies(&out.stdout_text());
    if admin.is_some() {
        if replies.is_empty() {
            return Err(step_error(step, "redis-cli printed nothing"));
        }
        let auth = replies.remove(0);
        if !auth.is_ok() {
            return Err(step_error(
                step,
                format!("AUTH as the Redis admin was refused: {auth:?}; check storage.redis_admin_password_file"),
            ));
        }
    }
    if replies.len() != lines.len() {
        return Err(step_error(
            step,
            format!(
                "redis-cli answered {} of {} commands: {}",
                replies.len(),
                lines.len(),
                out.stderr_tail()
            ),
        ));
    }
    Ok(replies)
}

/// Fails with `Leftover` if any PostgreSQL role or database or Redis user
/// the project needs already exists; returns whether Redis keeps users in
/// an ACL file. Reads only.
async fn check_leftovers(
    ctx: &Ctx,
    names: &[(Environment, StorageNames)],
) -> Result<bool, StorageError> {
    let pool = ctx
        .db
        .pool()
        .await
        .map_err(|e| step_error("check PostgreSQL for leftovers", e))?;
    let mut found = Vec::new();
    for (_, n) in names {
        let (role, db): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
        )
        .bind(&n.pg)
        .fetch_one(pool)
        .await
        .map_err(|e| step_error("check PostgreSQL for leftovers", e))?;
        if role {
            found.push(format!("PostgreSQL role {}", n.pg));
        }
        if db {
            found.push(format!("PostgreSQL database {}", n.pg));
        }
    }
    let mut lines = vec!["CONFIG GET aclfile".to_string()];
    for (_, n) in names {
        lines.push(plan::redis_getuser_line(n).map_err(|e| step_error("check Redis", e))?);
    }
    let replies = redis_session(ctx, "check Redis for leftover users", &lines).await?;
    let aclfile = match &replies[0] {
        RedisReply::Value(serde_json::Value::Array(kv)) if kv.len() == 2 => {
            kv[1].as_str().is_some_and(|s| !s.is_empty())
        }
        other => {
            return Err(step_error(
                "check Redis for leftover users",
                format!("CONFIG GET aclfile answered {other:?}"),
            ))
        }
    };
    for ((_, n), reply) in names.iter().zip(&replies[1..]) {
        match reply {
            RedisReply::Value(serde_json::Value::Null) => {}
            RedisReply::Value(_) => found.push(format!("Redis user {}", n.redis_user)),
            RedisReply::Error(e) => {
                return Err(step_error(
                    "check Redis for leftover users",
                    format!("ACL GETUSER {}: {e}", n.redis_user),
                ))
            }
        }
    }
    if found.is_empty() {
        Ok(aclfile)
    } else {
        Err(StorageError::Leftover {
            what: found.join(", "),
        })
    }
}

/// Revokes from PUBLIC every privilege on `postgres`, `template1` and
/// codeb's state database (granting codeb's role CONNECT on its state
/// database first), as the superuser in `postgres`; see
/// `plan::pg::harden_cluster`. Idempotent and cheap when already done.
pub async fn harden_storage_postgres(ctx: &Ctx) -> Result<(), StorageError> {
    const STEP: &str = "revoke PUBLIC access to postgres, template1 and codeb's database";
    let pool = ctx.db.pool().await.map_err(|e| step_error(STEP, e))?;
    let (state_db, state_role): (String, String) =
        sqlx::query_as("SELECT pg_catalog.current_database()::text, CURRENT_USER::text")
            .fetch_one(pool)
            .await
            .map_err(|e| step_error(STEP, e))?;
    let cmd = harden_cluster(&ctx.config.storage, &state_db, &state_role)
        .map_err(|e| step_error(STEP, e.0))?;
    let out = storage_remote(ctx)?
        .run(&cmd)
        .await
        .map_err(|e| step_error(STEP, e))?;
    if !out.success() {
        let stderr: Vec<String> = out
            .stderr_tail()
            .lines()
            .filter(|l| !l.starts_with("could not change directory to"))
            .map(str::to_string)
            .collect();
        return Err(step_error(
            STEP,
            format!(
                "psql as {} exited with {:?}: {}; codeb runs it as root through runuser over \
                 SSH (storage.pg_os_user, storage.pg_socket_dir)",
                ctx.config.storage.pg_os_user,
                out.status,
                stderr.join("; ")
            ),
        ));
    }
    Ok(())
}

/// The password codeb generated for the PostgreSQL role of (`project`,
/// `environment`) and keeps as the protected `POSTGRES_PASSWORD`, checked
/// to be that role's (`POSTGRES_USER`); registered for redaction. Backups
/// and restores log in with it as the project's role (see `plan::pg`).
pub async fn project_role_password(
    ctx: &Ctx,
    project_id: i64,
    project: &str,
    environment: Environment,
) -> Result<String, String> {
    let names = StorageNames::new(project, environment).map_err(|e| e.0)?;
    let missing = |what: &str| {
        format!(
            "{project} {environment} has {what}, so codeb cannot log in to database {} as its \
             role (backups and restores run as the project's role, never as a superuser); \
             project_create stores it",
            names.pg
        )
    };
    let rendered = crate::ops::env::latest_rendered(ctx, project_id, project, environment)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| missing("no env variables"))?;
    if rendered.vars.get("POSTGRES_USER") != Some(&names.pg) {
        return Err(missing(&format!("no POSTGRES_USER {}", names.pg)));
    }
    let password = rendered
        .vars
        .get("POSTGRES_PASSWORD")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| missing("no POSTGRES_PASSWORD"))?;
    redact::register(&password);
    Ok(password)
}

/// Creates the project's storage for every environment: checks for
/// leftovers first (changing nothing if any exist), then creates the
/// PostgreSQL roles and databases and the Redis users. On failure,
/// everything created so far is removed again.
pub async fn provision_project_storage(
    ctx: &Ctx,
    project: &str,
) -> Result<ProjectStorage, ProvisionError> {
    let no_revert = |error| ProvisionError {
        error,
        revert: RevertReport::default(),
    };
    let started = std::time::Instant::now();
    let names = storage_names(project).map_err(no_revert)?;
    let (hardened, leftovers) =
        futures::join!(harden_storage_postgres(ctx), check_leftovers(ctx, &names));
    hardened.map_err(no_revert)?;
    let aclfile = leftovers.map_err(no_revert)?;
    tracing::debug!(
        project,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "storage: no leftovers"
    );
    let mut storage = ProjectStorage {
        project: project.to_string(),
        environments: Vec::new(),
        created: Created::default(),
    };
    for (env, n) in &names {
        let password = generate_password(project).map_err(no_revert)?;
        storage.environments.push(EnvCredentials {
            environment: *env,
            names: n.clone(),
            password,
        });
    }
    let result = create_all(ctx, &mut storage, aclfile).await;
    tracing::debug!(
        project,
        elapsed_ms = started.elapsed().as_millis() as u64,
        ok = result.is_ok(),
        "storage: created"
    );
    match result {
        Ok(()) => Ok(storage),
        Err(error) => {
            let revert = revert_project_storage(ctx, &storage).await;
            Err(ProvisionError { error, revert })
        }
    }
}

/// Creates everything, the three environments' PostgreSQL objects and the
/// Redis users all at once: CREATE DATABASE (tens of milliseconds each)
/// dominates, and concurrent ones from the same template do not block
/// each other. Records in `storage.created` whatever came to exist, even
/// when a sibling step failed.
async fn create_all(
    ctx: &Ctx,
    storage: &mut ProjectStorage,
    aclfile: bool,
) -> Result<(), StorageError> {
    let pool = ctx
        .db
        .pool()
        .await
        .map_err(|e| step_error("connect to PostgreSQL", e))?;
    // From the start of the Redis session a user may exist even if the
    // session breaks off; they were all absent a moment ago, so reverting
    // them is safe.
    storage.created.redis_users = storage
        .environments
        .iter()
        .map(|c| c.names.clone())
        .collect();
    let pg = futures::future::join_all(
        storage
            .environments
            .iter()
            .map(|c| create_pg_environment(pool, c.clone())),
    );
    let (pg, redis) = futures::join!(pg, create_redis_users(ctx, &storage.environments, aclfile));
    let mut first_error = None;
    for (names, made_role, made_db, result) in pg {
        if made_role {
            storage.created.pg_roles.push(names.clone());
        }
        if made_db {
            storage.created.pg_databases.push(names);
        }
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = redis {
        first_error.get_or_insert(e);
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// One environment's role and database; returns its names, whether the
/// role and the database were created, and the outcome.
async fn create_pg_environment(
    pool: &sqlx::PgPool,
    creds: EnvCredentials,
) -> (StorageNames, bool, bool, Result<(), StorageError>) {
    let n = creds.names.clone();
    let (mut made_role, mut made_db) = (false, false);
    let result = async {
        let salt = random_bytes::<{ plan::SCRAM_SALT_BYTES }>()?;
        // PBKDF2 is CPU work (about 3 ms optimized, 30 ms in debug builds):
        // off the async workers, and the environments' in parallel.
        let password = creds.password().to_string();
        let verifier = tokio::task::spawn_blocking(move || {
            plan::scram_sha256_verifier(&password, &salt, plan::SCRAM_ITERATIONS)
        })
        .await
        .map_err(|e| step_error("compute the SCRAM verifier", e))?;
        let stmts = plan::pg_create_statements(&n, &verifier)
            .map_err(|e| step_error("plan the PostgreSQL statements", e))?;
        let steps = [
            format!("create PostgreSQL role {}", n.pg),
            format!("let codeb act for role {}", n.pg),
            format!("create database {}", n.pg),
            format!("revoke public access to database {}", n.pg),
        ];
        for (k, (sql, step)) in stmts.iter().zip(&steps).enumerate() {
            // Simple-query protocol: CREATE DATABASE refuses to run inside
            // the implicit transaction of a prepared statement batch.
            let t = std::time::Instant::now();
            sqlx::raw_sql(sql)
                .execute(pool)
                .await
                .map_err(|e| step_error(step.as_str(), e))?;
            tracing::debug!(
                step = step.as_str(),
                elapsed_ms = t.elapsed().as_millis() as u64,
                "storage: done"
            );
            match k {
                0 => made_role = true,
                2 => made_db = true,
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    (n, made_role, made_db, result)
}

/// All environments' Redis users in one session, made durable.
async fn create_redis_users(
    ctx: &Ctx,
    environments: &[EnvCredentials],
    aclfile: bool,
) -> Result<(), StorageError> {
    let mut lines = Vec::new();
    for c in environments {
        lines.push(
            plan::redis_setuser_line(&c.names, &plan::redis_password_hash(c.password()))
                .map_err(|e| step_error("plan the Redis users", e))?,
        );
    }
    lines.push(plan::redis_persist_line(aclfile).to_string());
    let replies = redis_session(ctx, "create Redis users", &lines).await?;
    for (line, reply) in lines.iter().zip(&replies) {
        if !reply.is_ok() {
            let what = line.split(" #").next().unwrap_or(line);
            return Err(step_error(
                "create Redis users",
                format!("`{what}` answered {reply:?}"),
            ));
        }
    }
    Ok(())
}

/// Removes what `provision_project_storage` created for `storage` (and
/// nothing else): Redis users, then databases, then roles.
pub async fn revert_project_storage(ctx: &Ctx, storage: &ProjectStorage) -> RevertReport {
    let mut report = RevertReport::default();
    let users: Vec<&StorageNames> = storage.created.redis_users.iter().collect();
    report.merge(delete_redis_users(ctx, &users).await);
    report.merge(
        drop_pg(
            ctx,
            &storage.created.pg_databases,
            &storage.created.pg_roles,
        )
        .await,
    );
    report
}

/// Drops every storage object named after `project` — whoever made it.
/// For removing a project for good (and for tests); a failed creation
/// uses `revert_project_storage`, which never touches leftovers.
pub async fn drop_project_storage(ctx: &Ctx, project: &str) -> Result<RevertReport, StorageError> {
    let names: Vec<StorageNames> = storage_names(project)?
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    let refs: Vec<&StorageNames> = names.iter().collect();
    let mut report = delete_redis_users(ctx, &refs).await;
    report.merge(drop_pg(ctx, &names, &names).await);
    Ok(report)
}

async fn delete_redis_users(ctx: &Ctx, users: &[&StorageNames]) -> RevertReport {
    let mut report = RevertReport::default();
    if users.is_empty() {
        return report;
    }
    let who = users
        .iter()
        .map(|n| n.redis_user.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let result = async {
        let line = plan::redis_deluser_line(users).map_err(|e| step_error("plan", e))?;
        let aclfile = redis_session(ctx, "ask Redis for its ACL file", &["CONFIG GET aclfile".into()])
            .await
            .map(|r| matches!(&r[0], RedisReply::Value(serde_json::Value::Array(kv)) if kv.get(1).and_then(|v| v.as_str()).is_some_and(|s| !s.is_empty())))?;
        let lines = vec![line, plan::redis_persist_line(aclfile).to_string()];
        let replies = redis_session(ctx, "delete Redis users", &lines).await?;
        match (&replies[0], &replies[1]) {
            (RedisReply::Value(serde_json::Value::Number(_)), p) if p.is_ok() => Ok(()),
            (d, p) => Err(step_error(
                "delete Redis users",
                format!("ACL DELUSER answered {d:?}, persisting answered {p:?}"),
            )),
        }
    }
    .await;
    match result {
        Ok(()) => report.reverted.push(format!("Redis users {who}")),
        Err(e) => report.failed.push(format!("Redis users {who} ({e})")),
    }
    report
}

async fn drop_pg(ctx: &Ctx, databases: &[StorageNames], roles: &[StorageNames]) -> RevertReport {
    let mut report = RevertReport::default();
    if databases.is_empty() && roles.is_empty() {
        return report;
    }
    let pool = match ctx.db.pool().await {
        Ok(p) => p,
        Err(e) => {
            for n in databases {
                report.failed.push(format!("database {} ({e})", n.pg));
            }
            for n in roles {
                report
                    .failed
                    .push(format!("PostgreSQL role {} ({e})", n.pg));
            }
            return report;
        }
    };
    let mut plan_drop = Vec::new();
    for n in databases {
        plan_drop.push((
            format!("database {}", n.pg),
            plan::pg_drop_database_statement(n),
        ));
    }
    for n in roles {
        plan_drop.push((
            format!("PostgreSQL role {}", n.pg),
            plan::pg_drop_role_statement(n),
        ));
    }
    for (what, sql) in plan_drop {
        let result = match sql {
            Ok(sql) => sqlx::raw_sql(&sql)
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(|e| redact::redact(&e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => report.reverted.push(what),
            Err(e) => report.failed.push(format!("{what} ({e})")),
        }
    }
    report
}
