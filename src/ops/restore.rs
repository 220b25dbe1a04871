//! backup_restore (DESIGN §6, critical): puts a backup back into the
//! project's own database.
//!
//! `backup_restore_plan` names what will be replaced (the backup's
//! identity and the target database with its owner). `backup_restore`
//! takes the environment's operation lock, recomputes the plan and refuses
//! unless its hash is the approved one, checks the dump file's SHA-256 on
//! the backup server against the recorded one, and then streams the file
//! through codeb into `pg_restore` and `psql` on the storage server (see
//! `plan::restore`): one transaction that codeb commits only when the
//! streamed bytes were exactly the recorded backup's and pg_restore
//! succeeded. A failed restore changes nothing. Afterwards it reports the
//! exact row count of every table.
//!
//! Nothing here runs in the project's database with more than the
//! project's privileges: the plan reads the database's identity from the
//! catalogue in `postgres`, and the restore and the row counts log in as
//! the project's role with its stored password (`plan::pg`), whose
//! password file exists only while they run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::exec::{ExecError, Remote, StreamExit};
use crate::model::{validate_project_name, Environment, ServerRole, StorageNames};
use crate::ops::backup::human_bytes;
use crate::ops::critical::{stale_plan_message, CriticalPlan};
use crate::ops::lifecycle::{
    begin_op, Caller, OpError, OpHandle, Progress, ProgressTx, PROGRESS_HEARTBEAT,
};
use crate::ops::redact::redact;
use crate::ops::storage::project_role_password;
use crate::ops::Ctx;
use crate::plan::backup::{parse_sha256sum, parse_size, sha256_of, size_of};
use crate::plan::cmd::RemoteCmd;
use crate::plan::pg::{self, TenantLogin};
use crate::plan::restore::{self as plan, RESTORE_COMMIT};
use crate::state;

/// The tool name, as in plans and approvals.
pub const TOOL: &str = "backup_restore";
/// Progress phases: plan confirmed, file checked, restore, row counts.
const PHASES: u32 = 4;
/// Bytes moved at once between the streams.
const STREAM_CHUNK_BYTES: usize = 256 * 1024;
/// Longest error text kept from a command's stderr.
const ERROR_DETAIL_MAX: usize = 600;

/// What backup_restore did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RestoreOutcome {
    /// One sentence for humans.
    pub summary: String,
    /// Project.
    pub project: String,
    /// Environment whose database was restored.
    pub environment: Environment,
    /// The backup restored.
    pub backup_id: String,
    /// Operation id (deployment_get shows the journal).
    pub deployment_id: String,
    /// The database now holding the backup.
    pub database: String,
    /// Bytes of the dump streamed (equal to the recorded size).
    pub bytes_restored: u64,
    /// SHA-256 of the streamed dump (equal to the recorded one).
    pub sha256: String,
    /// Exact rows per table (`schema.table`) after the restore.
    pub tables: BTreeMap<String, i64>,
    /// Wall time of the restore in milliseconds.
    pub duration_ms: u64,
}

/// Everything a restore needs, observed for its plan.
struct Planned {
    project_id: i64,
    project: String,
    environment: Environment,
    path: String,
    size: u64,
    sha256: String,
    names: StorageNames,
    database: String,
    role: String,
    plan: CriticalPlan,
}

/// A backup of `project` by id, with the project's id and team; NotFound
/// for a missing project, a refusal naming the backup for a missing one
/// (also for another project's).
async fn backup_of(
    ctx: &Ctx,
    project: &str,
    backup_id: Uuid,
) -> Result<(i64, String, state::backups::BackupRow), OpError> {
    validate_project_name(project).map_err(|e| OpError::Invalid(e.0))?;
    let pool = ctx.db.pool().await?;
    let live = state::projects::project_by_name(pool, project)
        .await?
        .ok_or_else(|| OpError::NotFound(project.to_string()))?;
    // Another project's backup is as absent as a missing one — also one of
    // a deleted project that had this name.
    let missing = || {
        OpError::Refused(format!(
            "backup {backup_id} not found for project {project}; backup_list shows its backups"
        ))
    };
    if state::backups::backup_project_id(pool, backup_id).await? != Some(live.id) {
        return Err(missing());
    }
    let b = state::backups::backup_by_id(pool, backup_id)
        .await?
        .ok_or_else(missing)?;
    Ok((live.id, live.team_id, b))
}

async fn plan_typed(ctx: &Ctx, project: &str, backup_id: Uuid) -> Result<Planned, OpError> {
    let (project_id, team, b) = backup_of(ctx, project, backup_id).await?;
    let (Some(size), Some(sha256)) = (b.size_bytes, b.sha256.clone()) else {
        return Err(OpError::Refused(format!(
            "backup {backup_id} of {project} is {} and has no verified file; only a succeeded \
             backup can be restored (backup_list shows them)",
            b.status
        )));
    };
    if b.status != "succeeded" {
        return Err(OpError::Refused(format!(
            "backup {backup_id} of {project} is {}; only a succeeded backup can be restored \
             (backup_list shows them)",
            b.status
        )));
    }
    let environment = Environment::parse(&b.environment).ok_or_else(|| {
        OpError::Refused(format!(
            "backup {backup_id} names an unknown environment {:?}",
            b.environment
        ))
    })?;
    plan::validate_backup_path(&b.path).map_err(|e| OpError::Refused(e.0))?;
    let names = StorageNames::new(project, environment).map_err(|e| OpError::Invalid(e.0))?;
    let database = names.pg.clone();
    let role = names.pg.clone();
    let (storage_name, storage) = server(ctx, ServerRole::Storage)?;
    let (backup_name, _) = server(ctx, ServerRole::Backup)?;
    // The target as it is now, read from the catalogue in `postgres`: it
    // must exist and belong to the project's role.
    let identity = storage
        .run(
            &pg::database_identity(&ctx.config.storage, &database)
                .map_err(|e| OpError::Invalid(e.0))?,
        )
        .await
        .map_err(|e| OpError::Refused(format!("reading the identity of {database} failed: {e}")))?;
    let unreadable = |why: String| {
        OpError::Refused(format!(
            "reading the identity of database {database} on {storage_name} failed: {why}"
        ))
    };
    if !identity.success() {
        return Err(unreadable(bounded(&identity.stderr_tail())));
    }
    let (oid, owner) = pg::parse_database_identity(&identity.stdout_text())
        .map_err(unreadable)?
        .ok_or_else(|| {
            OpError::Refused(format!(
                "database {database} of {project} {environment} does not exist on \
                 {storage_name}, so there is nothing to restore into; project_create \
                 provisions it"
            ))
        })?;
    if owner != role {
        return Err(OpError::Refused(format!(
            "database {database} belongs to role {owner:?}, not to the project's role {role}: \
             restored objects would not be usable by the application; give the database back \
             to {role} first"
        )));
    }
    let size = size as u64;
    let details = serde_json::json!({
        "backup_id": backup_id.to_string(),
        "environment": environment,
        "backup_server": backup_name,
        "path": b.path,
        "size_bytes": size,
        "sha256": sha256,
        "storage_server": storage_name,
        "project_id": project_id,
        "database": database,
        "database_oid": oid,
        "owner": owner,
    });
    let summary = format!(
        "Replace everything in database {database} ({project} {environment}) with backup \
         {backup_id} of {} ({}); what the database holds now is lost, including tables \
         created since.",
        b.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        human_bytes(size)
    );
    Ok(Planned {
        project_id,
        project: project.to_string(),
        environment,
        path: b.path,
        size,
        sha256,
        names,
        database,
        role,
        plan: CriticalPlan {
            tool: TOOL,
            project: project.to_string(),
            project_id,
            team,
            environments: vec![environment],
            summary,
            details,
        },
    })
}

fn server(ctx: &Ctx, role: ServerRole) -> Result<(String, Arc<dyn Remote>), OpError> {
    ctx.fleet
        .for_role(role)
        .map(|(s, r)| (s.name.clone(), r.clone()))
        .ok_or_else(|| OpError::Refused(format!("no {role} server is configured")))
}

fn bounded(s: &str) -> String {
    let kept: Vec<&str> = s
        .lines()
        .filter(|l| !l.starts_with("could not change directory to"))
        .collect();
    let s = redact(kept.join("; ").trim());
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

/// The plan of restoring backup `backup_id` of `project`: the backup's
/// identity (id, environment, path, size, SHA-256) and the database it
/// replaces with its owner role.
pub async fn backup_restore_plan(
    ctx: &Ctx,
    project: &str,
    backup_id: Uuid,
) -> Result<CriticalPlan, OpError> {
    Ok(plan_typed(ctx, project, backup_id).await?.plan)
}

/// Restores backup `backup_id` into `project`'s database as planned;
/// refuses unless the plan recomputed under the operation lock has hash
/// `approved_hash`.
pub async fn backup_restore(
    ctx: &Ctx,
    project: &str,
    backup_id: Uuid,
    approved_hash: &str,
    caller: &Caller,
    progress: ProgressTx,
) -> Result<RestoreOutcome, OpError> {
    let environment = Environment::parse(&backup_of(ctx, project, backup_id).await?.2.environment)
        .ok_or_else(|| OpError::Refused(format!("backup {backup_id} has no known environment")))?;
    let mut op = begin_op(
        ctx,
        TOOL,
        project,
        environment,
        caller,
        progress.clone(),
        PHASES,
        CancellationToken::new(),
    )
    .await?;
    let planned = match plan_typed(ctx, project, backup_id).await {
        Ok(p) if p.plan.hash() == approved_hash && p.environment == environment => p,
        Ok(_) => {
            let msg = stale_plan_message(TOOL, project);
            op.finish_err(&msg).await?;
            return Err(OpError::Refused(msg));
        }
        Err(e) => {
            op.finish_err(&e.to_string()).await?;
            return Err(e);
        }
    };
    op.phase(format!(
        "plan confirmed: restoring backup {backup_id} into {}",
        planned.database
    ));
    let started = Instant::now();
    let result = restore(&mut op, &planned, &progress).await;
    match result {
        Ok((tables, sha256)) => {
            let rows: i64 = tables.values().sum();
            let outcome = RestoreOutcome {
                summary: format!(
                    "Restored backup {backup_id} ({}) into {}: {} table(s), {rows} row(s).",
                    human_bytes(planned.size),
                    planned.database,
                    tables.len()
                ),
                project: project.to_string(),
                environment,
                backup_id: backup_id.to_string(),
                deployment_id: op.id().to_string(),
                database: planned.database.clone(),
                bytes_restored: planned.size,
                sha256,
                tables,
                duration_ms: started.elapsed().as_millis() as u64,
            };
            let result = serde_json::to_value(&outcome).ok();
            op.finish_ok(result.as_ref()).await?;
            Ok(outcome)
        }
        Err(Failure::Refused(msg)) => {
            op.finish_err(&msg).await?;
            Err(OpError::Refused(msg))
        }
        Err(Failure::Step {
            step,
            message,
            aftermath,
        }) => {
            let err = OpError::Failed {
                operation: TOOL,
                deployment_id: op.id(),
                step: step.to_string(),
                message: bounded(&message),
                aftermath,
            };
            op.finish_err(&err.to_string()).await?;
            Err(err)
        }
    }
}

/// Why a restore stopped.
enum Failure {
    /// Refused before anything changed.
    Refused(String),
    /// A step failed; `aftermath` says what state the database is in.
    Step {
        step: &'static str,
        message: String,
        aftermath: String,
    },
}

const UNCHANGED: &str = "The restore ran in one transaction that was not committed, so \
    the database is unchanged.";

fn unchanged(step: &'static str, message: String) -> Failure {
    Failure::Step {
        step,
        message,
        aftermath: UNCHANGED.to_string(),
    }
}

async fn restore(
    op: &mut OpHandle<'_>,
    p: &Planned,
    progress: &ProgressTx,
) -> Result<(BTreeMap<String, i64>, String), Failure> {
    let ctx = op.ctx();
    let storage_cfg = &ctx.config.storage;
    let backup = op.server(ServerRole::Backup).map_err(Failure::Refused)?;
    let storage = op.server(ServerRole::Storage).map_err(Failure::Refused)?;
    let invalid = |e: crate::model::Invalid| Failure::Refused(e.0);

    // 1. The file on the backup server must be the recorded backup.
    op.phase(format!("checking {} on {}", p.path, backup.name()));
    let refuse_file = |why: String| {
        Failure::Refused(format!(
            "backup file {} on {} {why}; nothing was restored. Pick another backup \
             (backup_list) or make a new one",
            p.path,
            backup.name()
        ))
    };
    let out = op
        .run_ok_on(
            &backup,
            "check_sha256",
            &sha256_of(&p.path).map_err(invalid)?,
        )
        .await
        .map_err(|e| refuse_file(format!("cannot be read ({e})")))?;
    let sha = parse_sha256sum(&out.stdout_text())
        .ok_or_else(|| refuse_file("gave an unreadable sha256sum answer".into()))?;
    if sha != p.sha256 {
        return Err(refuse_file(format!(
            "has SHA-256 {sha}, but the backup recorded {}: it was changed or damaged since",
            p.sha256
        )));
    }
    let out = op
        .run_ok_on(&backup, "check_size", &size_of(&p.path).map_err(invalid)?)
        .await
        .map_err(|e| refuse_file(format!("cannot be read ({e})")))?;
    if parse_size(&out.stdout_text()) != Some(p.size) {
        return Err(refuse_file(format!(
            "has {} bytes, but the backup recorded {}",
            out.stdout_text().trim(),
            p.size
        )));
    }

    // 2. A login as the project's role: its stored password into a
    //    password file on the storage server, removed again at the end.
    let password = project_role_password(ctx, p.project_id, &p.project, p.environment)
        .await
        .map_err(|m| Failure::Refused(format!("{m}; nothing was restored")))?;
    let login = TenantLogin::new(&p.names, Uuid::new_v4()).map_err(invalid)?;
    let passfile = [
        ("passfile_dir", pg::make_passfile_dir(storage_cfg)),
        (
            "passfile",
            pg::write_passfile(storage_cfg, &login, &password).map_err(invalid)?,
        ),
    ];
    let as_role = async {
        for (step, cmd) in &passfile {
            op.run_ok_on(&storage, step, cmd)
                .await
                .map_err(|e| unchanged("passfile", e))?;
        }
        restore_as_role(op, p, progress, &backup, &storage, &login).await
    }
    .await;
    if let Err(e) = op
        .run_ok_on(&storage, "remove_passfile", &pg::remove_passfile(&login))
        .await
    {
        tracing::warn!(
            passfile = %login.passfile,
            error = %e,
            "the restore's password file was not removed; remove it by hand"
        );
    }
    as_role
}

/// Streams the backup into the database and counts its rows, both logged
/// in as the project's role through `login`.
async fn restore_as_role(
    op: &mut OpHandle<'_>,
    p: &Planned,
    progress: &ProgressTx,
    backup: &Arc<dyn Remote>,
    storage: &Arc<dyn Remote>,
    login: &TenantLogin,
) -> Result<(BTreeMap<String, i64>, String), Failure> {
    let storage_cfg = &op.ctx().config.storage;
    let invalid = |e: crate::model::Invalid| Failure::Refused(e.0);
    // The stream: cat → codeb (size, SHA-256) → pg_restore → codeb → psql.
    op.phase(format!(
        "restoring {} into {} on {} as role {}",
        human_bytes(p.size),
        p.database,
        storage.name(),
        login.role
    ));
    let cmds = StreamCmds {
        read: plan::read_backup_file(&p.path).map_err(invalid)?,
        convert: plan::pg_restore_to_sql(storage_cfg),
        apply: plan::psql_apply(storage_cfg, login),
        prelude: plan::restore_prelude(&p.role).map_err(invalid)?,
    };
    let streamed = stream_restore(op, backup, storage, &cmds, p, progress).await?;

    // 3. Exact row counts of the restored tables.
    op.phase(format!("counting the rows of {}", p.database));
    let counted = async {
        let cmd = plan::row_counts(storage_cfg, login);
        let out = op.run_ok_on(storage, "row_counts", &cmd).await?;
        plan::parse_row_counts(&out.stdout_text())
    }
    .await
    .map_err(|message| Failure::Step {
        step: "row_counts",
        message,
        aftermath: "The backup was restored and committed; only counting its rows failed \
                    (run backup_restore's count again by checking the database, or see \
                    deployment_get for the journal)."
            .into(),
    })?;
    Ok((counted, streamed))
}

/// The three streamed commands and the SQL sent before the restore.
struct StreamCmds {
    read: RemoteCmd,
    convert: RemoteCmd,
    apply: RemoteCmd,
    prelude: String,
}

/// Journals one streamed command's end.
async fn journal_stream(
    op: &OpHandle<'_>,
    step: &str,
    server: &Arc<dyn Remote>,
    cmd: &RemoteCmd,
    exit: &Result<StreamExit, ExecError>,
    started: Instant,
) {
    let (status, tail) = match exit {
        Ok(x) => (x.status, bounded(&x.stderr_tail)),
        Err(e) => (None, bounded(&e.to_string())),
    };
    op.journal_command(step, server.name(), cmd, status, Some(&tail), started)
        .await;
}

fn exit_problem(exit: &Result<StreamExit, ExecError>, program: &str) -> Option<String> {
    match exit {
        Ok(x) if x.success() => None,
        Ok(x) => Some(format!(
            "`{program}` exited with {}: {}",
            x.status.map_or("a signal".into(), |c| c.to_string()),
            bounded(&x.stderr_tail)
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// Streams the backup through pg_restore into psql and commits only when
/// everything checked out; returns the SHA-256 of the streamed bytes.
async fn stream_restore(
    op: &OpHandle<'_>,
    backup: &Arc<dyn Remote>,
    storage: &Arc<dyn Remote>,
    cmds: &StreamCmds,
    p: &Planned,
    progress: &ProgressTx,
) -> Result<String, Failure> {
    let started = Instant::now();
    // The consumer first: the SQL must have somewhere to go before it is made.
    let mut apply = storage
        .spawn(&cmds.apply)
        .await
        .map_err(|e| unchanged("restore", format!("starting psql failed: {e}")))?;
    let mut convert = match storage.spawn(&cmds.convert).await {
        Ok(c) => c,
        Err(e) => {
            // psql sees the end of its input with no transaction begun.
            let _ = apply.wait().await;
            return Err(unchanged(
                "restore",
                format!("starting pg_restore failed: {e}"),
            ));
        }
    };
    let mut read = match backup.spawn(&cmds.read).await {
        Ok(r) => r,
        Err(e) => {
            let _ = convert.wait().await;
            let _ = apply.wait().await;
            return Err(unchanged(
                "restore",
                format!("reading the backup file failed: {e}"),
            ));
        }
    };
    let deadline = read
        .deadline()
        .min(convert.deadline())
        .min(apply.deadline());
    let (Some(file), Some(to_convert), Some(sql), Some(to_apply), apply_out) = (
        read.take_stdout(),
        convert.take_stdin(),
        convert.take_stdout(),
        apply.take_stdin(),
        apply.take_stdout(),
    ) else {
        return Err(unchanged(
            "restore",
            "the commands' streams were not available".into(),
        ));
    };
    // psql's (silenced) output is read until psql ends, which is after
    // codeb closes its input below: on its own task, never waited for.
    let drained = tokio::spawn(drain(apply_out));
    let phase = (PHASES - 1, PHASES);
    let pumped = tokio::time::timeout_at(deadline, async {
        tokio::join!(
            pump_file(file, to_convert, progress, phase),
            pump_sql(sql, to_apply, &cmds.prelude),
        )
    })
    .await;
    let Ok((file_pump, sql_pump)) = pumped else {
        drained.abort();
        // Dropping the commands closes psql's input without COMMIT.
        return Err(unchanged(
            "restore",
            format!(
                "the restore did not finish within {} s",
                plan_timeout_secs(&cmds.read)
            ),
        ));
    };
    let (read_exit, convert_exit) = tokio::join!(read.wait(), convert.wait());
    journal_stream(op, "read_backup", backup, &cmds.read, &read_exit, started).await;
    journal_stream(
        op,
        "pg_restore",
        storage,
        &cmds.convert,
        &convert_exit,
        started,
    )
    .await;
    // Everything that must hold before COMMIT.
    let mut problems = Vec::new();
    problems.extend(exit_problem(&read_exit, "cat"));
    problems.extend(file_pump.error.clone());
    problems.extend(exit_problem(&convert_exit, "pg_restore"));
    if file_pump.size != p.size {
        problems.push(format!(
            "{} bytes were streamed, the backup recorded {}",
            file_pump.size, p.size
        ));
    } else if file_pump.sha256 != p.sha256 {
        problems.push(format!(
            "the streamed bytes have SHA-256 {}, the backup recorded {}",
            file_pump.sha256, p.sha256
        ));
    }
    let (mut to_apply, sql_error) = sql_pump;
    problems.extend(sql_error);
    let mut committed = false;
    if problems.is_empty() {
        if let Some(w) = to_apply.as_mut() {
            match w.write_all(RESTORE_COMMIT.as_bytes()).await {
                Ok(()) => committed = true,
                Err(e) => problems.push(format!("sending COMMIT to psql failed: {e}")),
            }
        }
    }
    if let Some(mut w) = to_apply.take() {
        let _ = w.shutdown().await;
    }
    let apply_exit = apply.wait().await;
    drained.abort();
    journal_stream(op, "psql", storage, &cmds.apply, &apply_exit, started).await;
    let psql_problem = exit_problem(&apply_exit, "psql");
    match (committed, psql_problem) {
        (true, None) => {
            op.journal_note(
                "restore",
                &format!(
                    "committed: {} bytes with SHA-256 {} restored into {}",
                    file_pump.size, file_pump.sha256, p.database
                ),
                started.elapsed(),
            )
            .await;
            Ok(file_pump.sha256)
        }
        (true, Some(problem)) if apply_exit.is_err() => Err(Failure::Step {
            step: "restore",
            message: problem,
            aftermath: format!(
                "COMMIT was sent but psql's end was not seen, so the restore may or may not \
                 have been committed: check the tables of {} before running backup_restore \
                 again.",
                p.database
            ),
        }),
        (true, Some(problem)) => Err(unchanged("restore", problem)),
        (false, psql) => {
            // psql's own error, if any, is the root cause of the others.
            let mut all: Vec<String> = psql.into_iter().collect();
            all.extend(problems);
            Err(unchanged("restore", all.join("; ")))
        }
    }
}

fn plan_timeout_secs(cmd: &RemoteCmd) -> u64 {
    cmd.timeout.map_or(0, |t| t.as_secs())
}

/// What the file pump saw.
struct FilePump {
    size: u64,
    sha256: String,
    error: Option<String>,
}

/// Copies the backup file into pg_restore, counting and hashing it, with
/// a progress report at least every `PROGRESS_HEARTBEAT`. If pg_restore
/// stops taking input, the rest of the file is still read (and hashed) so
/// the reader ends by itself.
async fn pump_file(
    mut file: Box<dyn AsyncRead + Send + Unpin>,
    to_convert: Box<dyn AsyncWrite + Send + Unpin>,
    progress: &ProgressTx,
    (phase, total): (u32, u32),
) -> FilePump {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut error = None;
    let mut writer = Some(to_convert);
    let mut buf = vec![0u8; STREAM_CHUNK_BYTES];
    let mut tick = tokio::time::interval(PROGRESS_HEARTBEAT);
    tick.tick().await;
    loop {
        let n = tokio::select! {
            r = file.read(&mut buf) => match r {
                Ok(n) => n,
                Err(e) => {
                    error = Some(format!("reading the backup stream failed: {e}"));
                    break;
                }
            },
            _ = tick.tick() => {
                let _ = progress.send(Progress {
                    phase,
                    total,
                    message: format!("restoring: {} streamed", human_bytes(size)),
                });
                continue;
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        if let Some(w) = writer.as_mut() {
            if let Err(e) = w.write_all(&buf[..n]).await {
                error.get_or_insert(format!("pg_restore stopped taking the backup: {e}"));
                writer = None;
            }
        }
    }
    if let Some(mut w) = writer {
        if let Err(e) = w.shutdown().await {
            error.get_or_insert(format!("closing pg_restore's input failed: {e}"));
        }
    }
    FilePump {
        size,
        sha256: hex::encode(hasher.finalize()),
        error,
    }
}

type SqlWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Sends the prelude, then pg_restore's SQL, to psql; keeps psql's input
/// open (the caller decides about COMMIT). If psql stops taking input,
/// the rest of the SQL is still read so pg_restore ends by itself.
async fn pump_sql(
    mut sql: Box<dyn AsyncRead + Send + Unpin>,
    to_apply: SqlWriter,
    prelude: &str,
) -> (Option<SqlWriter>, Option<String>) {
    let mut writer = Some(to_apply);
    let mut error = None;
    if let Some(w) = writer.as_mut() {
        if let Err(e) = w.write_all(prelude.as_bytes()).await {
            error = Some(format!("psql stopped taking input: {e}"));
            writer = None;
        }
    }
    let mut buf = vec![0u8; STREAM_CHUNK_BYTES];
    loop {
        let n = match sql.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                error.get_or_insert(format!("reading pg_restore's output failed: {e}"));
                break;
            }
        };
        if let Some(w) = writer.as_mut() {
            if let Err(e) = w.write_all(&buf[..n]).await {
                error.get_or_insert(format!("psql stopped taking input: {e}"));
                writer = None;
            }
        }
    }
    if let Some(w) = writer.as_mut() {
        if let Err(e) = w.flush().await {
            error.get_or_insert(format!("psql stopped taking input: {e}"));
        }
    }
    (writer, error)
}

/// Reads psql's (silenced) output so it can never block on a full pipe.
async fn drain(out: Option<Box<dyn AsyncRead + Send + Unpin>>) {
    if let Some(mut r) = out {
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_pump_hashes_everything_even_after_the_consumer_stops() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let (tx, _) = tokio::sync::mpsc::unbounded_channel();
        let (w, mut r) = tokio::io::duplex(64 * 1024);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        });
        let pumped = pump_file(
            Box::new(std::io::Cursor::new(data.clone())),
            Box::new(w),
            &tx,
            (2, 4),
        )
        .await;
        assert_eq!(pumped.size, data.len() as u64);
        assert_eq!(pumped.sha256, hex::encode(Sha256::digest(&data)));
        assert!(pumped.error.is_none());
        assert_eq!(reader.await.unwrap(), data);

        // A consumer that goes away: the error is kept, the hash still covers all.
        let (w, r) = tokio::io::duplex(1024);
        drop(r);
        let pumped = pump_file(
            Box::new(std::io::Cursor::new(data.clone())),
            Box::new(w),
            &tx,
            (2, 4),
        )
        .await;
        assert_eq!(pumped.size, data.len() as u64);
        assert_eq!(pumped.sha256, hex::encode(Sha256::digest(&data)));
        assert!(pumped.error.unwrap().contains("pg_restore stopped"));
    }

    #[tokio::test]
    async fn the_sql_pump_sends_the_prelude_first_and_never_commits() {
        let (w, mut r) = tokio::io::duplex(1024 * 1024);
        let (writer, error) = pump_sql(
            Box::new(std::io::Cursor::new(b"CREATE TABLE t ();\n".to_vec())),
            Box::new(w),
            "BEGIN;\n",
        )
        .await;
        assert!(error.is_none());
        drop(writer);
        let mut got = String::new();
        r.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "BEGIN;\nCREATE TABLE t ();\n");
    }
}
