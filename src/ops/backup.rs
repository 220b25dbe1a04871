//! Database backups (DESIGN §1, §5): `pg_dump` of a project's database on
//! the storage server, streamed through codeb to the backup server.
//!
//! `pg_dump` logs in as the project's own role (its stored password in a
//! password file that lives only while the dump runs, see `plan::pg`), so
//! nothing the tenant put into its database runs with more privileges than
//! the tenant has; whether the database exists is read from the catalogue
//! in `postgres`.
//!
//! codeb counts and hashes the dump while it streams, the backup server's
//! `sha256sum` and `stat` of the written file must agree, and only then is
//! the `.partial` file renamed to its final name and the record marked
//! succeeded. Any failure removes the file and marks the record failed.
//!
//! A backup runs to its end even if the client goes away: it changes
//! nothing but its own file and record, so finishing is the tidy outcome.

use std::time::Instant;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::exec::{ExecError, Remote};
use crate::model::{Environment, ServerRole, StorageNames};
use crate::ops::lifecycle::{Caller, Progress, ProgressTx, PROGRESS_HEARTBEAT};
use crate::ops::redact::redact;
use crate::ops::storage::project_role_password;
use crate::ops::Ctx;
use crate::plan::backup::{self as plan, BackupPaths};
use crate::plan::cmd::RemoteCmd;
use crate::plan::pg::{self, TenantLogin};
use crate::state::backups as rows;
use crate::state::DbError;

/// Progress phases: database check, directories, dump, verify, finish.
const BACKUP_PHASES: u32 = 5;
/// Bytes read from the dump stream at once.
const STREAM_CHUNK_BYTES: usize = 256 * 1024;
/// Longest error text kept from a command's stderr.
const ERROR_DETAIL_MAX: usize = 400;

/// Why a backup did not succeed; every variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such project.
    #[error("project {0:?} not found; project_list shows the registered projects")]
    NotFound(String),
    /// The project's database does not exist on the storage server.
    #[error("project {project} has no database for {environment} yet ({database} does not exist on server {server}); nothing was backed up. Create the database first (project_create provisions it), then run backup_create again")]
    NoDatabase {
        /// Project.
        project: String,
        /// Environment.
        environment: Environment,
        /// Database name.
        database: String,
        /// Storage server.
        server: String,
    },
    /// The fleet lacks a server for a role.
    #[error("no {0} server is configured; add one to codeb.toml")]
    NoServer(&'static str),
    /// A step before the backup record failed (nothing was written).
    #[error("backup of {project} {environment} failed at {step}: {message}; nothing was written. Check health_check and try again")]
    Precheck {
        /// Project.
        project: String,
        /// Environment.
        environment: Environment,
        /// Step name.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A step of a recorded backup failed.
    #[error("backup {backup_id} of {project} {environment} failed at {step}: {message}. {aftermath} {advice}")]
    Failed {
        /// Backup id.
        backup_id: Uuid,
        /// Project.
        project: String,
        /// Environment.
        environment: Environment,
        /// Step name.
        step: &'static str,
        /// What went wrong.
        message: String,
        /// What was cleaned up.
        aftermath: String,
        /// What to do next.
        advice: &'static str,
    },
    /// The state database failed.
    #[error("{0}; check health_check")]
    Db(#[from] DbError),
}

/// A planned backup (dry run).
#[derive(Debug, Clone)]
pub struct BackupPlan {
    /// Database to dump.
    pub database: String,
    /// Storage server name.
    pub storage_server: String,
    /// Backup server name.
    pub backup_server: String,
    /// Final file the backup would have.
    pub path: String,
    /// The steps, one line each.
    pub steps: Vec<String>,
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupDone {
    /// Backup id.
    pub id: Uuid,
    /// Database dumped.
    pub database: String,
    /// Backup server name.
    pub backup_server: String,
    /// The dump file on the backup server.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 hex, verified on the backup server.
    pub sha256: String,
    /// Wall time.
    pub duration_ms: u64,
}

/// What `backup_create` did.
#[derive(Debug, Clone)]
pub enum BackupOutcome {
    /// Dry run.
    Planned(BackupPlan),
    /// Written and verified.
    Done(BackupDone),
}

/// A failed step: its name, what happened, and what to advise.
struct StepFailure {
    step: &'static str,
    message: String,
    advice: &'static str,
}

const ADVICE_DUMP: &str = "Check the database with health_check and try again.";
const ADVICE_WRITE: &str =
    "Check the backup server's free space and reachability with health_check, then try again.";
const ADVICE_VERIFY: &str = "The copy was damaged on the way or on disk; try again, and check the backup server's disk if it repeats.";

fn bounded(s: &str) -> String {
    let s = redact(s.trim());
    if s.len() > ERROR_DETAIL_MAX {
        let mut end = ERROR_DETAIL_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

/// Drops the harmless note `runuser` makes `psql`/`pg_dump` print when
/// the PostgreSQL account cannot enter the caller's home directory.
fn meaningful_stderr(tail: &str) -> String {
    let kept: Vec<&str> = tail
        .lines()
        .filter(|l| !l.starts_with("could not change directory to"))
        .collect();
    bounded(&kept.join("; "))
}

fn exit_text(status: Option<i32>) -> String {
    status.map_or("a signal".into(), |c| c.to_string())
}

/// Runs a command and requires exit 0; the error names program and stderr.
async fn run_ok(remote: &dyn Remote, cmd: &RemoteCmd) -> Result<String, String> {
    let out = remote.run(cmd).await.map_err(|e| e.to_string())?;
    if out.success() {
        Ok(out.stdout_text())
    } else {
        Err(format!(
            "`{}` on {} exited with {}: {}",
            cmd.program,
            remote.name(),
            exit_text(out.status),
            meaningful_stderr(&out.stderr_tail())
        ))
    }
}

/// Backs up the database of (`project`, `environment`) to the backup
/// server; with `dry_run`, only plans.
pub async fn backup_create(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    dry_run: bool,
    caller: &Caller,
    progress: ProgressTx,
) -> Result<BackupOutcome, BackupError> {
    let names = StorageNames::new(project, environment).map_err(|e| BackupError::Invalid(e.0))?;
    let database = names.pg.clone();
    let storage_cfg = &ctx.config.storage;
    let invalid = |e: crate::model::Invalid| BackupError::Invalid(e.0);
    let login = TenantLogin::new(&names, Uuid::new_v4()).map_err(invalid)?;
    let dump_cmd = plan::pg_dump(storage_cfg, &login);
    let identity_cmd = pg::database_identity(storage_cfg, &database).map_err(invalid)?;
    let passfile_cmds = |password: &str| {
        Ok::<_, BackupError>([
            pg::make_passfile_dir(storage_cfg),
            pg::write_passfile(storage_cfg, &login, password).map_err(invalid)?,
        ])
    };
    let remove_passfile_cmd = pg::remove_passfile(&login);
    let (storage_server, storage) = ctx
        .fleet
        .for_role(ServerRole::Storage)
        .map(|(s, r)| (s.name.clone(), r.clone()))
        .ok_or(BackupError::NoServer("storage"))?;
    let (backup_server, backup) = ctx
        .fleet
        .for_role(ServerRole::Backup)
        .map(|(s, r)| (s.name.clone(), r.clone()))
        .ok_or(BackupError::NoServer("backup"))?;
    let pool = ctx.db.pool().await?;
    let project_row = crate::state::projects::project_by_name(pool, project)
        .await?
        .ok_or_else(|| BackupError::NotFound(project.to_string()))?;

    let id = Uuid::new_v4();
    let started_at = Utc::now();
    let paths = plan::backup_paths(project, environment, started_at, id)
        .map_err(|e| BackupError::Invalid(e.0))?;
    let dirs_cmd = plan::make_backup_dirs(&paths).map_err(invalid)?;
    let write_cmd = plan::write_partial(&paths).map_err(invalid)?;
    let verify_cmds = [
        plan::sync_partial(&paths).map_err(invalid)?,
        plan::sha256_of(&paths.partial).map_err(invalid)?,
        plan::size_of(&paths.partial).map_err(invalid)?,
    ];
    let finish_cmd = plan::finish_file(&paths).map_err(invalid)?;

    if dry_run {
        let [dir_cmd, passfile_cmd] = passfile_cmds("(stored password)")?;
        let mut steps = vec![
            format!("on {storage_server}: {identity_cmd} (database {database} must exist)"),
            format!("on {backup_server}: {dirs_cmd}"),
            format!("on {storage_server}: {dir_cmd}"),
            format!(
                "on {storage_server}: {passfile_cmd} (role {}'s stored password on stdin)",
                login.role
            ),
            format!(
                "stream on {storage_server} as role {}: {dump_cmd}",
                login.role
            ),
            format!("  through codeb (size, SHA-256) into {backup_server}: {write_cmd}"),
            format!("on {storage_server}: {remove_passfile_cmd}"),
        ];
        steps.extend(
            verify_cmds
                .iter()
                .map(|c| format!("on {backup_server}: {c}")),
        );
        steps.push(format!(
            "on {backup_server}: {finish_cmd} when size and SHA-256 match"
        ));
        return Ok(BackupOutcome::Planned(BackupPlan {
            database,
            storage_server,
            backup_server,
            path: paths.file,
            steps,
        }));
    }

    let started = Instant::now();
    let mut phase = 0u32;
    let mut report = |message: String, next: bool| {
        if next {
            phase += 1;
        }
        let _ = progress.send(Progress {
            phase,
            total: BACKUP_PHASES,
            message,
        });
    };

    report(
        format!("checking that database {database} exists on {storage_server}"),
        true,
    );
    let precheck = |step: &'static str, message: String| BackupError::Precheck {
        project: project.to_string(),
        environment,
        step,
        message,
    };
    let identity = run_ok(storage.as_ref(), &identity_cmd)
        .await
        .map_err(|m| precheck("reading the database catalogue", m))?;
    let exists = pg::parse_database_identity(&identity)
        .map_err(|m| precheck("reading the database catalogue", m))?;
    if exists.is_none() {
        return Err(BackupError::NoDatabase {
            project: project.to_string(),
            environment,
            database,
            server: storage_server,
        });
    }
    let password = project_role_password(ctx, project_row.id, project, environment)
        .await
        .map_err(|m| precheck("finding the role's password", m))?;
    let passfile_cmds = passfile_cmds(&password)?;

    rows::backup_insert(
        pool,
        id,
        project_row.id,
        environment.as_str(),
        &paths.file,
        &caller.principal,
        started_at,
    )
    .await?;
    tracing::info!(backup = %id, project, environment = %environment, path = %paths.file, "backup started");

    let result = async {
        report(
            format!("preparing {} on {backup_server}", paths.env_dir),
            true,
        );
        run_ok(backup.as_ref(), &dirs_cmd)
            .await
            .map_err(|message| StepFailure {
                step: "preparing the directory",
                message,
                advice: ADVICE_WRITE,
            })?;

        report(
            format!("dumping {database} from {storage_server} to {backup_server}"),
            true,
        );
        for cmd in &passfile_cmds {
            run_ok(storage.as_ref(), cmd)
                .await
                .map_err(|message| StepFailure {
                    step: "writing the role's password file",
                    message,
                    advice: ADVICE_DUMP,
                })?;
        }
        let dumped = stream_dump(
            storage.as_ref(),
            &dump_cmd,
            backup.as_ref(),
            &write_cmd,
            &mut |bytes| {
                report(
                    format!("dumping {database}: {} streamed", human_bytes(bytes)),
                    false,
                )
            },
        )
        .await;
        let removed = run_ok(storage.as_ref(), &remove_passfile_cmd).await;
        if let (Err(_), Err(message)) = (&dumped, &removed) {
            tracing::warn!(passfile = %login.passfile, error = %message,
                "the backup's password file was not removed; remove it by hand");
        }
        let (size, sha256) = dumped?;
        removed.map_err(|message| StepFailure {
            step: "removing the role's password file",
            message: format!("{message}; remove {} by hand", login.passfile),
            advice: ADVICE_DUMP,
        })?;

        report(
            format!(
                "verifying {} ({}) on {backup_server}",
                paths.partial,
                human_bytes(size)
            ),
            true,
        );
        verify(backup.as_ref(), &verify_cmds, size, &sha256).await?;

        report(format!("finishing {}", paths.file), true);
        run_ok(backup.as_ref(), &finish_cmd)
            .await
            .map_err(|message| StepFailure {
                step: "renaming the verified file",
                message,
                advice: ADVICE_WRITE,
            })?;
        rows::backup_succeeded(pool, id, size, &sha256)
            .await
            .map_err(|e| StepFailure {
                step: "recording the backup",
                message: e.to_string(),
                advice: "Check health_check and try again.",
            })?;
        Ok::<_, StepFailure>((size, sha256))
    }
    .await;

    match result {
        Ok((size_bytes, sha256)) => {
            let duration_ms = started.elapsed().as_millis() as u64;
            tracing::info!(backup = %id, size_bytes, duration_ms, "backup succeeded");
            Ok(BackupOutcome::Done(BackupDone {
                id,
                database,
                backup_server,
                path: paths.file,
                size_bytes,
                sha256,
                duration_ms,
            }))
        }
        Err(f) => {
            let aftermath = clean_up(backup.as_ref(), &paths).await;
            let message = bounded(&f.message);
            let recorded = format!("failed at {}: {message}", f.step);
            let aftermath = match rows::backup_failed(pool, id, &recorded).await {
                Ok(()) => format!("{aftermath} The backup is recorded as failed."),
                Err(e) => format!("{aftermath} Recording the failure failed too ({e})."),
            };
            tracing::warn!(backup = %id, step = f.step, error = %message, "backup failed");
            Err(BackupError::Failed {
                backup_id: id,
                project: project.to_string(),
                environment,
                step: f.step,
                message,
                aftermath,
                advice: f.advice,
            })
        }
    }
}

/// Removes a failed backup's files; says what happened.
async fn clean_up(backup: &dyn Remote, paths: &BackupPaths) -> String {
    let Ok(cmds) = plan::remove_backup_files(paths) else {
        return "Its files could not be named for removal.".into();
    };
    for cmd in &cmds {
        if let Err(e) = run_ok(backup, cmd).await {
            return format!(
                "Removing {} failed ({}); remove it by hand.",
                paths.partial,
                bounded(&e)
            );
        }
    }
    format!("{} was removed.", paths.partial)
}

/// Streams `dump`'s stdout into `write`'s stdin, counting and hashing;
/// returns the size and SHA-256 hex once both commands succeeded.
async fn stream_dump(
    storage: &dyn Remote,
    dump: &RemoteCmd,
    backup: &dyn Remote,
    write: &RemoteCmd,
    on_progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(u64, String), StepFailure> {
    let write_failure = |message: String| StepFailure {
        step: "writing the dump",
        message,
        advice: ADVICE_WRITE,
    };
    let dump_failure = |message: String| StepFailure {
        step: "dumping the database",
        message,
        advice: ADVICE_DUMP,
    };
    // The writer first: a dump must have somewhere to go before it starts.
    let mut writer = backup
        .spawn(write)
        .await
        .map_err(|e| write_failure(e.to_string()))?;
    let mut dumper = match storage.spawn(dump).await {
        Ok(d) => d,
        Err(e) => {
            // Closing the writer's stdin ends it with an empty partial
            // file, which the cleanup removes.
            let _ = writer.wait().await;
            return Err(dump_failure(e.to_string()));
        }
    };
    let (Some(mut out), Some(mut inp)) = (dumper.take_stdout(), writer.take_stdin()) else {
        return Err(dump_failure(
            "the command's streams were not available".into(),
        ));
    };
    let deadline = dumper.deadline().min(writer.deadline());
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; STREAM_CHUNK_BYTES];
    let mut tick = tokio::time::interval(PROGRESS_HEARTBEAT);
    tick.tick().await;
    // What stopped the stream early, if anything.
    let mut read_error: Option<String> = None;
    let mut write_error: Option<String> = None;
    loop {
        let n = tokio::select! {
            r = out.read(&mut buf) => match r {
                Ok(n) => n,
                Err(e) => {
                    read_error = Some(format!("reading the dump stream failed: {e}"));
                    break;
                }
            },
            _ = tick.tick() => {
                on_progress(size);
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => {
                read_error = Some(format!(
                    "the dump did not finish within {} s",
                    plan::BACKUP_DUMP_TIMEOUT.as_secs()
                ));
                break;
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        match tokio::time::timeout_at(deadline, inp.write_all(&buf[..n])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                write_error = Some(format!("the backup server stopped accepting data: {e}"));
                break;
            }
            Err(_) => {
                write_error = Some("writing to the backup server timed out".into());
                break;
            }
        }
    }
    if write_error.is_none() {
        if let Err(e) = inp.shutdown().await {
            write_error = Some(format!(
                "closing the stream to the backup server failed: {e}"
            ));
        }
    }
    drop(inp);
    drop(out);
    let (dump_exit, write_exit) = tokio::join!(dumper.wait(), writer.wait());
    let described = |r: &Result<crate::exec::StreamExit, ExecError>, program: &str| match r {
        Ok(x) if x.success() => None,
        Ok(x) => Some(format!(
            "`{program}` exited with {}: {}",
            exit_text(x.status),
            meaningful_stderr(&x.stderr_tail)
        )),
        Err(e) => Some(e.to_string()),
    };
    if let Some(m) = described(&dump_exit, "pg_dump") {
        return Err(dump_failure(m));
    }
    if let Some(m) = read_error {
        return Err(dump_failure(m));
    }
    if let Some(m) = described(&write_exit, write.program) {
        return Err(write_failure(m));
    }
    if let Some(m) = write_error {
        return Err(write_failure(m));
    }
    if size == 0 {
        return Err(dump_failure("pg_dump succeeded but wrote nothing".into()));
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Checks that the file on the backup server has the streamed size and
/// SHA-256.
async fn verify(
    backup: &dyn Remote,
    cmds: &[RemoteCmd; 3],
    size: u64,
    sha256: &str,
) -> Result<(), StepFailure> {
    let failure = |message: String| StepFailure {
        step: "verifying the written file",
        message,
        advice: ADVICE_VERIFY,
    };
    let [sync, sum, stat] = cmds;
    run_ok(backup, sync).await.map_err(failure)?;
    let out = run_ok(backup, sum).await.map_err(failure)?;
    let remote_sha = plan::parse_sha256sum(&out)
        .ok_or_else(|| failure(format!("unreadable sha256sum output {:?}", bounded(&out))))?;
    let out = run_ok(backup, stat).await.map_err(failure)?;
    let remote_size = plan::parse_size(&out)
        .ok_or_else(|| failure(format!("unreadable stat output {:?}", bounded(&out))))?;
    if remote_size != size {
        return Err(failure(format!(
            "the file has {remote_size} bytes, codeb streamed {size}"
        )));
    }
    if remote_sha != sha256 {
        return Err(failure(format!(
            "the file's SHA-256 is {remote_sha}, the streamed data's is {sha256}"
        )));
    }
    Ok(())
}

/// `1.5 MiB`-style sizes for progress messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::exec::fake::{FakeAnswer, FakeRemote};
    use chrono::TimeZone;

    fn commands() -> (RemoteCmd, RemoteCmd) {
        let paths = plan::backup_paths(
            "shop",
            Environment::Production,
            Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
            Uuid::nil(),
        )
        .unwrap();
        let login = TenantLogin::new(
            &StorageNames::new("shop", Environment::Production).unwrap(),
            Uuid::nil(),
        )
        .unwrap();
        (
            plan::pg_dump(&StorageConfig::default(), &login),
            plan::write_partial(&paths).unwrap(),
        )
    }

    #[tokio::test]
    async fn streams_the_dump_into_the_writer_counting_and_hashing() {
        let dump: String = (0..200_000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let storage = FakeRemote::new(
            "storage",
            vec![("runuser", FakeAnswer::Output(0, dump.clone()))],
        );
        let backup = FakeRemote::new("backup", vec![]);
        let (dump_cmd, write_cmd) = commands();
        let (size, sha) = stream_dump(&storage, &dump_cmd, &backup, &write_cmd, &mut |_| {})
            .await
            .map_err(|f| f.message)
            .unwrap();
        assert_eq!(size, dump.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(dump.as_bytes())));
        assert_eq!(backup.streamed_stdin.lock().unwrap()[0], dump.as_bytes());
        assert_eq!(storage.calls.lock().unwrap()[0], dump_cmd.argv());
        assert_eq!(backup.calls.lock().unwrap()[0], write_cmd.argv());
    }

    #[tokio::test]
    async fn a_failing_dump_names_the_step_and_pg_dump_stderr() {
        let storage = FakeRemote::new(
            "storage",
            vec![(
                "runuser",
                FakeAnswer::Stderr(
                    1,
                    "could not change directory to \"/root\": Permission denied\npg_dump: error: database \"shop_production\" is not currently accepting connections".into(),
                ),
            )],
        );
        let backup = FakeRemote::new("backup", vec![]);
        let (dump_cmd, write_cmd) = commands();
        let f = stream_dump(&storage, &dump_cmd, &backup, &write_cmd, &mut |_| {})
            .await
            .expect_err("fails");
        assert_eq!(f.step, "dumping the database");
        assert_eq!(
            f.message,
            "`pg_dump` exited with 1: pg_dump: error: database \"shop_production\" is not currently accepting connections"
        );
        // A writer that fails is reported as the write step.
        let storage = FakeRemote::new(
            "storage",
            vec![("runuser", FakeAnswer::Output(0, "PGDMP".into()))],
        );
        let backup = FakeRemote::new(
            "backup",
            vec![(
                "install",
                FakeAnswer::Stderr(1, "No space left on device".into()),
            )],
        );
        let f = stream_dump(&storage, &dump_cmd, &backup, &write_cmd, &mut |_| {})
            .await
            .expect_err("fails");
        assert_eq!(f.step, "writing the dump");
        assert!(f.message.contains("No space left"), "{}", f.message);
        // An unreachable backup server stops before the dump starts.
        let backup = FakeRemote::new("backup", vec![("install", FakeAnswer::Unreachable)]);
        let storage = FakeRemote::new("storage", vec![]);
        let f = stream_dump(&storage, &dump_cmd, &backup, &write_cmd, &mut |_| {})
            .await
            .expect_err("fails");
        assert_eq!(f.step, "writing the dump");
        assert!(storage.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
