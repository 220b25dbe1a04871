//! project_delete (DESIGN §6, critical): removes a project for good.
//!
//! `project_delete_plan` observes the project's rows and returns the plan a
//! human confirms. `project_delete` takes the operation lock of all three
//! environments, recomputes the plan under them and refuses unless its
//! hash is the approved one, then removes, in order: the containers (and
//! their env secrets) on the app server, the route rrsets of every host
//! name and the address records codeb set for its domains, the env files
//! on the app and backup servers (database dumps are kept), the
//! PostgreSQL databases and roles and Redis users, the Redis keys under
//! `{project}:`, and finally — one short transaction — the environment
//! rows (freeing the ports; slots, env versions and domains cascade) and
//! the project itself (soft delete: its name can be used again, its
//! deployment history and backups stay).
//!
//! Every step is idempotent and journaled. A failure stops the deletion
//! and says exactly what was removed and what was not; the project stays
//! registered, so a new project_delete (with a new plan) finishes the job.

use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::model::{validate_project_name, Environment, ServerRole, SlotName, StorageNames};
use crate::ops::critical::{stale_plan_message, CriticalPlan};
use crate::ops::lifecycle::{begin_op, patch_routes, Caller, OpError, OpHandle, ProgressTx};
use crate::ops::pdns::with_pdns;
use crate::ops::{redact, Ctx};

use crate::plan::dns::zone_for;
use crate::plan::envvars::{secret_prefix, APP_ENV_ROOT, BACKUP_ENV_ROOT};
use crate::plan::podman;
use crate::plan::project_delete::{
    self as plan, ObservedEnvironment, ObservedProject, ObservedSlot, ProjectDeleteDetails,
};
use crate::plan::storage::{parse_redis_replies, redis_cli_session};
use crate::state::{self, DbError};

/// The tool name, as in plans and approvals.
pub const TOOL: &str = "project_delete";
/// One step of a delete.
#[derive(Debug, Clone, Copy)]
enum Step {
    Containers,
    Routes,
    Addresses,
    EnvFiles,
    Storage,
    RedisKeys,
    Records,
}

/// The steps in order, with their names in errors and progress.
const STEPS: [(Step, &str); 7] = [
    (Step::Containers, "containers"),
    (Step::Routes, "routes"),
    (Step::Addresses, "address records"),
    (Step::EnvFiles, "env files"),
    (Step::Storage, "storage"),
    (Step::RedisKeys, "redis keys"),
    (Step::Records, "records"),
];
/// Progress phases: the verified plan, one per step, done.
const PHASES: u32 = STEPS.len() as u32 + 2;

/// What project_delete removed.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProjectDeleteOutcome {
    /// One sentence for humans.
    pub summary: String,
    /// The deleted project.
    pub project: String,
    /// The operation ids (production, staging, preview); the first holds
    /// the step journal.
    pub deployment_ids: Vec<String>,
    /// Containers removed from the app server.
    pub containers_removed: Vec<String>,
    /// podman secrets (env values with line breaks) removed.
    pub secrets_removed: Vec<String>,
    /// Host names whose routes were deleted.
    pub hostnames_unrouted: Vec<String>,
    /// Address records deleted (`name TYPE`).
    pub address_records_removed: Vec<String>,
    /// Address records left because they no longer hold what codeb set.
    pub address_records_kept: Vec<String>,
    /// Env directories removed (`server:path`).
    pub env_files_removed: Vec<String>,
    /// PostgreSQL databases dropped (by this call or an earlier attempt).
    pub databases_dropped: Vec<String>,
    /// PostgreSQL roles dropped (by this call or an earlier attempt).
    pub roles_dropped: Vec<String>,
    /// Redis ACL users deleted (by this call or an earlier attempt).
    pub redis_users_deleted: Vec<String>,
    /// Redis keys deleted under `{project}:`.
    pub redis_keys_deleted: u64,
    /// Env versions deleted.
    pub env_versions_deleted: i64,
    /// Host ports freed.
    pub ports_freed: Vec<u16>,
    /// Backups kept (their dump files stay on the backup server).
    pub backups_kept: i64,
}

/// The observed project: its id and the typed plan details.
struct Planned {
    project_id: i64,
    details: ProjectDeleteDetails,
    plan: CriticalPlan,
}

async fn plan_typed(ctx: &Ctx, project: &str) -> Result<Planned, OpError> {
    validate_project_name(project).map_err(|e| OpError::Invalid(e.0))?;
    let pool = ctx.db.pool().await?;
    let row = state::projects::project_by_name(pool, project)
        .await?
        .ok_or_else(|| OpError::NotFound(project.to_string()))?;
    let slots = state::slots::slots_for_project(pool, row.id, None).await?;
    let versions = state::project_removal::latest_env_versions(pool, row.id).await?;
    let domains = state::project_removal::project_domains(pool, row.id).await?;
    let backups_kept = state::project_removal::succeeded_backups(pool, row.id).await?;
    let with_data = databases_with_data(ctx, project, &row.environments).await?;
    let environments = row
        .environments
        .iter()
        .filter_map(|(env, base)| {
            let environment = Environment::parse(env)?;
            Some(ObservedEnvironment {
                environment,
                base_port: *base as u16,
                slots: slots
                    .iter()
                    .filter(|s| s.environment == *env)
                    .filter_map(|s| {
                        Some(ObservedSlot {
                            slot: SlotName::parse(&s.slot)?,
                            state: s.state.clone(),
                            image: s.image.clone(),
                            env_version: s.env_version,
                        })
                    })
                    .collect(),
                latest_env_version: versions.iter().find(|(e, _)| e == env).map(|(_, v)| *v),
                domains: domains
                    .iter()
                    .filter(|(_, e, _)| e == env)
                    .map(|(h, _, k)| (h.clone(), k.clone()))
                    .collect(),
                database_has_data: with_data.contains(&environment),
            })
        })
        .collect();
    let observed = ObservedProject {
        project: project.to_string(),
        environments,
        backups_kept,
    };
    let routing = &ctx.config.routing;
    let (summary, details) =
        plan::plan_project_delete(&observed, &routing.base_domain, &routing.preview_domain)
            .map_err(|e| OpError::Invalid(e.0))?;
    // Seeds' protection rule: no database with data goes without a recent
    // verified backup of it.
    let max_hours = ctx.config.auth.delete_backup_max_age_hours;
    let latest: Vec<(Environment, chrono::DateTime<chrono::Utc>)> =
        state::backups::latest_verified_backups(pool, row.id)
            .await?
            .into_iter()
            .filter_map(|(e, at)| Some((Environment::parse(&e)?, at)))
            .collect();
    let missing = details.environments_missing_backup(
        &latest,
        chrono::Utc::now(),
        chrono::Duration::hours(i64::from(max_hours)),
    );
    if !missing.is_empty() {
        return Err(OpError::Refused(plan::missing_backup_message(
            project, &missing, max_hours,
        )));
    }
    let plan = CriticalPlan {
        tool: TOOL,
        project: project.to_string(),
        project_id: row.id,
        team: row.team_id.clone(),
        environments: details.environments_holding_something(),
        summary,
        details: details.to_value(),
    };
    Ok(Planned {
        project_id: row.id,
        details,
        plan,
    })
}

/// The environments of `project` (of those recorded) whose database holds
/// data, asked of the storage server (`plan::databases_with_data`). A
/// failure refuses the plan: without knowing, nothing can be deleted safely.
async fn databases_with_data(
    ctx: &Ctx,
    project: &str,
    recorded: &[(String, i32)],
) -> Result<Vec<Environment>, OpError> {
    let names: Vec<(Environment, String)> = recorded
        .iter()
        .filter_map(|(e, _)| Environment::parse(e))
        .map(|e| {
            StorageNames::new(project, e)
                .map(|n| (e, n.pg))
                .map_err(|e| OpError::Invalid(e.0))
        })
        .collect::<Result<_, _>>()?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let (server, remote) = ctx
        .fleet
        .for_role(ServerRole::Storage)
        .map(|(s, r)| (s.name.clone(), r.clone()))
        .ok_or_else(|| OpError::Refused("no storage server is configured".into()))?;
    let databases: Vec<String> = names.iter().map(|(_, d)| d.clone()).collect();
    let cmd = plan::databases_with_data(&ctx.config.storage, &databases)
        .map_err(|e| OpError::Invalid(e.0))?;
    let cannot = |why: String| {
        OpError::Refused(format!(
            "project_delete of {project} needs to know whether its databases hold data (they \
             must be backed up first), but asking {server} failed: {why}. Nothing was changed; \
             check health_check and try again"
        ))
    };
    let out = remote.run(&cmd).await.map_err(|e| cannot(e.to_string()))?;
    if !out.success() {
        return Err(cannot(redact::redact(&out.stderr_tail())));
    }
    let listed = plan::parse_databases_with_data(&out.stdout_text())
        .ok_or_else(|| cannot("its answer could not be read".into()))?;
    Ok(names
        .into_iter()
        .filter(|(_, d)| listed.iter().any(|(n, data)| n == d && *data))
        .map(|(e, _)| e)
        .collect())
}

/// The plan of deleting `project`, from its live rows: per environment
/// the port pair, slot states, latest env version, routed host names and
/// storage names, and the number of backups kept.
pub async fn project_delete_plan(ctx: &Ctx, project: &str) -> Result<CriticalPlan, OpError> {
    Ok(plan_typed(ctx, project).await?.plan)
}

/// What has been removed so far, for the outcome and for a failure report.
#[derive(Default)]
struct Removed {
    outcome_parts: Vec<String>,
    containers: Vec<String>,
    secrets: Vec<String>,
    hostnames: Vec<String>,
    addresses_removed: Vec<String>,
    addresses_kept: Vec<String>,
    env_dirs: Vec<String>,
    databases: Vec<String>,
    roles: Vec<String>,
    redis_users: Vec<String>,
    redis_keys: u64,
    soft_deleted: Option<state::project_removal::SoftDeleted>,
}

impl Removed {
    fn note(&mut self, what: String) {
        self.outcome_parts.push(what);
    }
}

/// Deletes `project` as planned; refuses unless the plan recomputed under
/// the operation locks has hash `approved_hash`.
pub async fn project_delete(
    ctx: &Ctx,
    project: &str,
    approved_hash: &str,
    caller: &Caller,
    progress: ProgressTx,
) -> Result<ProjectDeleteOutcome, OpError> {
    validate_project_name(project).map_err(|e| OpError::Invalid(e.0))?;
    // 1. The lock of every environment, production first; any busy one
    // releases those taken.
    let mut ops: Vec<OpHandle<'_>> = Vec::new();
    for (i, env) in Environment::ALL.into_iter().enumerate() {
        let channel = if i == 0 {
            progress.clone()
        } else {
            // Only the first operation reports progress.
            tokio::sync::mpsc::unbounded_channel().0
        };
        match begin_op(
            ctx,
            TOOL,
            project,
            env,
            caller,
            channel,
            PHASES,
            CancellationToken::new(),
        )
        .await
        {
            Ok(op) => ops.push(op),
            Err(e) => {
                release(ops, &format!("project_delete did not start: {e}")).await;
                return Err(e);
            }
        }
    }
    // 2. The plan again, under the locks: only the approved state may go.
    let planned = match plan_typed(ctx, project).await {
        Ok(p) if p.plan.hash() == approved_hash => p,
        Ok(_) => {
            let msg = stale_plan_message(TOOL, project);
            release(ops, &msg).await;
            return Err(OpError::Refused(msg));
        }
        Err(e) => {
            release(ops, &e.to_string()).await;
            return Err(e);
        }
    };
    let ids: Vec<uuid::Uuid> = ops.iter().map(|o| o.id()).collect();
    let mut rest = ops.split_off(1);
    let mut primary = ops.pop().expect("three operations");
    primary.phase(format!(
        "plan confirmed ({}): deleting {project}",
        &approved_hash[..approved_hash.len().min(12)]
    ));
    for op in &rest {
        op.journal_note(
            "journal",
            &format!(
                "project_delete of {project}: the step journal is in deployment {}",
                ids[0]
            ),
            std::time::Duration::ZERO,
        )
        .await;
    }
    let mut removed = Removed::default();
    let mut failure = None;
    for (i, (step, name)) in STEPS.iter().enumerate() {
        primary.phase(format!("removing {name}"));
        let r = match step {
            Step::Containers => {
                remove_containers(&primary, project, &planned.details, &mut removed).await
            }
            Step::Routes => remove_routes(&primary, project, &planned.details, &mut removed).await,
            Step::Addresses => remove_addresses(&primary, &planned.details, &mut removed).await,
            Step::EnvFiles => remove_env_files(&primary, project, &mut removed).await,
            Step::Storage => {
                remove_storage(&primary, project, &planned.details, &mut removed).await
            }
            Step::RedisKeys => remove_redis_keys(&primary, project, &mut removed).await,
            Step::Records => remove_records(&primary, planned.project_id, &ids, &mut removed).await,
        };
        if let Err(message) = r {
            failure = Some((i, redact::redact(&message)));
            break;
        }
    }
    ctx.observer.invalidate();
    match failure {
        None => {
            let gone = removed.soft_deleted.clone().unwrap_or_else(|| {
                state::project_removal::SoftDeleted {
                    ports_freed: Vec::new(),
                    env_versions_deleted: 0,
                    domains_deleted: 0,
                }
            });
            let outcome = ProjectDeleteOutcome {
                summary: format!(
                    "Deleted project {project}: {} container(s), {} route(s), {} database(s), \
                     {} Redis key(s) and {} env version(s) removed; ports {} freed; {} backup(s) kept.",
                    removed.containers.len(),
                    removed.hostnames.len(),
                    removed.databases.len(),
                    removed.redis_keys,
                    gone.env_versions_deleted,
                    ports_text(&gone.ports_freed),
                    planned.details.backups_kept
                ),
                project: project.to_string(),
                deployment_ids: ids.iter().map(|u| u.to_string()).collect(),
                containers_removed: removed.containers,
                secrets_removed: removed.secrets,
                hostnames_unrouted: removed.hostnames,
                address_records_removed: removed.addresses_removed,
                address_records_kept: removed.addresses_kept,
                env_files_removed: removed.env_dirs,
                databases_dropped: removed.databases,
                roles_dropped: removed.roles,
                redis_users_deleted: removed.redis_users,
                redis_keys_deleted: removed.redis_keys,
                env_versions_deleted: gone.env_versions_deleted,
                ports_freed: gone.ports_freed,
                backups_kept: planned.details.backups_kept,
            };
            primary.phase("deleted");
            let result = serde_json::to_value(&outcome).ok();
            for op in rest.drain(..) {
                let _ = op.finish_ok(result.as_ref()).await;
            }
            primary.finish_ok(result.as_ref()).await?;
            // Its secrets are gone with it: nothing of it is masked any more.
            redact::forget_project(project);
            Ok(outcome)
        }
        Some((i, message)) => {
            let done = if removed.outcome_parts.is_empty() {
                "nothing".to_string()
            } else {
                removed.outcome_parts.join("; ")
            };
            let aftermath = format!(
                "Removed before the failure: {done}. Not done or not finished: {}. The project is still \
                 registered (not deleted), so nothing is lost track of: once the cause is fixed \
                 (health_check), run project_delete again — a new plan — to remove the rest. \
                 Database dumps are kept.",
                STEPS[i..]
                    .iter()
                    .map(|(_, name)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let err = OpError::Failed {
                operation: TOOL,
                deployment_id: ids[0],
                step: STEPS[i].1.to_string(),
                message,
                aftermath,
            };
            let text = err.to_string();
            for op in rest.drain(..) {
                let _ = op.finish_err(&text).await;
            }
            primary.finish_err(&text).await?;
            Err(err)
        }
    }
}

fn ports_text(ports: &[u16]) -> String {
    if ports.is_empty() {
        "none".into()
    } else {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Ends operations that will not run, as failed with `why`.
async fn release(ops: Vec<OpHandle<'_>>, why: &str) {
    for op in ops {
        let _ = op.finish_err(why).await;
    }
}

/// Every container of the project — the six slot names and any other
/// container carrying its label — and their env secrets.
async fn remove_containers(
    op: &OpHandle<'_>,
    project: &str,
    details: &ProjectDeleteDetails,
    removed: &mut Removed,
) -> Result<(), String> {
    let app = op.server(ServerRole::App)?;
    let ps = podman::ps(Some(project)).map_err(|e| e.0)?;
    let listed = podman::parse_ps(
        &op.run_ok_on(&app, "list_containers", &ps)
            .await?
            .stdout_text(),
    )?;
    let existing: Vec<String> = listed.into_iter().map(|c| c.name).collect();
    let mut names: Vec<String> = details
        .environments
        .iter()
        .flat_map(|e| e.slots.iter().map(|s| s.container.clone()))
        .chain(Environment::ALL.into_iter().flat_map(|env| {
            SlotName::ALL
                .into_iter()
                .map(move |slot| plan::container_name(project, env, slot))
        }))
        .chain(existing.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    for name in &names {
        let cmd = podman::rm_force(name).map_err(|e| e.0)?;
        op.run_ok_on(&app, "remove_container", &cmd).await?;
        if existing.contains(name) {
            removed.containers.push(name.clone());
        }
    }
    if !removed.containers.is_empty() {
        removed.note(format!("containers {}", removed.containers.join(", ")));
    }
    let secrets_out = op
        .run_ok_on(&app, "list_secrets", &podman::secret_names())
        .await?;
    let prefixes: Vec<String> = names.iter().map(|n| secret_prefix(n)).collect();
    let secrets: Vec<String> = secrets_out
        .stdout_text()
        .lines()
        .map(str::trim)
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p.as_str())))
        .map(str::to_string)
        .collect();
    if !secrets.is_empty() {
        let cmd = podman::secret_rm(&secrets).map_err(|e| e.0)?;
        op.run_ok_on(&app, "remove_secrets", &cmd).await?;
        removed.note(format!("{} podman secret(s)", secrets.len()));
        removed.secrets = secrets;
    }
    Ok(())
}

/// The route rrsets of every host name, in one atomic PATCH.
async fn remove_routes(
    op: &OpHandle<'_>,
    project: &str,
    details: &ProjectDeleteDetails,
    removed: &mut Removed,
) -> Result<(), String> {
    let routing = &op.ctx().config.routing;
    let changes = plan::route_deletions(
        project,
        details,
        &routing.route_zone,
        &routing.preview_domain,
    );
    patch_routes(op, "delete_routes", &changes).await?;
    let mut hosts: Vec<String> = details
        .environments
        .iter()
        .flat_map(|e| e.hostnames.iter().map(|h| h.hostname.clone()))
        .collect();
    hosts.sort();
    hosts.dedup();
    removed.note(format!("the routes of {}", hosts.join(", ")));
    removed.hostnames = hosts;
    Ok(())
}

/// The A/AAAA records domain_setup made for the project's domains — only
/// while they still hold exactly the address codeb set.
async fn remove_addresses(
    op: &OpHandle<'_>,
    details: &ProjectDeleteDetails,
    removed: &mut Removed,
) -> Result<(), String> {
    let domains = plan::address_domains(details);
    if domains.is_empty() {
        return Ok(());
    }
    let ctx = op.ctx();
    let started = Instant::now();
    let zones = with_pdns(ctx, |c| async move { c.zones().await })
        .await
        .map_err(|e| e.to_string())?;
    let v4 = ctx.config.domain_ipv4().map(|a| a.to_string());
    let v6 = ctx.config.dns.app_ipv6.map(|a| a.to_string());
    for domain in domains {
        let Some(zone) = zone_for(&domain, zones.iter().map(String::as_str)) else {
            op.journal_note(
                "address_records",
                &format!("{domain}: no PowerDNS zone holds it; nothing to remove"),
                started.elapsed(),
            )
            .await;
            continue;
        };
        let (a, aaaa) = {
            let (z, n) = (zone.clone(), domain.clone());
            with_pdns(ctx, |c| {
                let (z, n) = (z.clone(), n.clone());
                async move {
                    Ok((
                        c.rrset_contents(&z, &n, "A").await?,
                        c.rrset_contents(&z, &n, "AAAA").await?,
                    ))
                }
            })
            .await
            .map_err(|e| e.to_string())?
        };
        let del_a = plan::address_rrset_is_ours(a.as_deref(), v4.as_deref());
        let del_aaaa = plan::address_rrset_is_ours(aaaa.as_deref(), v6.as_deref());
        for (rtype, present, ours) in [("A", &a, del_a), ("AAAA", &aaaa, del_aaaa)] {
            if present.as_ref().is_some_and(|c| !c.is_empty()) && !ours {
                removed.addresses_kept.push(format!(
                    "{domain} {rtype} (points elsewhere now: {})",
                    present.as_deref().unwrap_or_default().join(", ")
                ));
            }
        }
        if !del_a && !del_aaaa {
            continue;
        }
        let body = plan::address_delete_body(&domain, del_a, del_aaaa);
        let r = with_pdns(ctx, |c| {
            let (z, body) = (zone.clone(), body.clone());
            async move { c.patch_rrsets(&z, &body).await }
        })
        .await;
        let what: Vec<String> = [("A", del_a), ("AAAA", del_aaaa)]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(t, _)| format!("{domain} {t}"))
            .collect();
        let note = match &r {
            Ok(()) => format!("PATCH zone {zone}: deleted {}", what.join(", ")),
            Err(e) => format!("PATCH zone {zone} failed: {e}"),
        };
        op.journal_note("address_records", &note, started.elapsed())
            .await;
        r.map_err(|e| e.to_string())?;
        removed.note(format!("address records {}", what.join(", ")));
        removed.addresses_removed.extend(what);
    }
    Ok(())
}

/// The env directories on the app server and the backup server.
async fn remove_env_files(
    op: &OpHandle<'_>,
    project: &str,
    removed: &mut Removed,
) -> Result<(), String> {
    for (role, root, step) in [
        (ServerRole::App, APP_ENV_ROOT, "remove_env_app"),
        (ServerRole::Backup, BACKUP_ENV_ROOT, "remove_env_backup"),
    ] {
        let server = op.server(role)?;
        let cmd = plan::remove_env_dir(root, project).map_err(|e| e.0)?;
        op.run_ok_on(&server, step, &cmd).await?;
        let dir = plan::env_dir(root, project).map_err(|e| e.0)?;
        let entry = format!("{}:{dir}", server.name());
        removed.note(format!("env files {entry}"));
        removed.env_dirs.push(entry);
    }
    Ok(())
}

/// PostgreSQL databases and roles, Redis users.
async fn remove_storage(
    op: &OpHandle<'_>,
    project: &str,
    details: &ProjectDeleteDetails,
    removed: &mut Removed,
) -> Result<(), String> {
    let started = Instant::now();
    let report = crate::ops::storage::drop_project_storage(op.ctx(), project)
        .await
        .map_err(|e| e.to_string())?;
    op.journal_note("drop_storage", &report.to_string(), started.elapsed())
        .await;
    if !report.reverted.is_empty() {
        removed.note(format!("storage: {}", report.reverted.join(", ")));
    }
    if !report.is_clean() {
        return Err(format!(
            "not everything could be dropped: {}",
            report.failed.join("; ")
        ));
    }
    let storage: Vec<_> = details.environments.iter().map(|e| &e.storage).collect();
    removed.databases = storage.iter().map(|s| s.database.clone()).collect();
    removed.roles = storage.iter().map(|s| s.role.clone()).collect();
    removed.redis_users = storage.iter().map(|s| s.redis_user.clone()).collect();
    Ok(())
}

/// The Redis keys under `{project}:`, deleted server-side in bounded
/// batches (SCAN + UNLINK in one script per batch).
async fn remove_redis_keys(
    op: &OpHandle<'_>,
    project: &str,
    removed: &mut Removed,
) -> Result<(), String> {
    let ctx = op.ctx();
    let storage = op.server(ServerRole::Storage)?;
    let admin = ctx
        .config
        .redis_admin_password()
        .map_err(|e| e.to_string())?;
    if let Some(pw) = &admin {
        redact::register(pw);
    }
    let mut cursor = "0".to_string();
    let mut deleted = 0u64;
    for _ in 0..plan::REDIS_UNLINK_MAX_CALLS {
        let line = plan::redis_unlink_line(project, &cursor).map_err(|e| e.0)?;
        let cmd = redis_cli_session(ctx.config.storage.redis_port, admin.as_deref(), &[line]);
        let out = op.run_ok_on(&storage, "delete_redis_keys", &cmd).await?;
        let mut replies = parse_redis_replies(&out.stdout_text());
        if admin.is_some() {
            if replies.is_empty() || !replies[0].is_ok() {
                return Err(
                    "AUTH as the Redis admin was refused; check storage.redis_admin_password_file"
                        .into(),
                );
            }
            replies.remove(0);
        }
        let reply = replies
            .first()
            .ok_or_else(|| format!("redis-cli answered nothing: {}", out.stderr_tail()))?;
        let (next, n) = plan::parse_unlink_reply(reply)?;
        deleted += n;
        cursor = next;
        if cursor == "0" {
            removed.redis_keys = deleted;
            removed.note(format!("{deleted} Redis key(s) under {project}:"));
            return Ok(());
        }
    }
    removed.redis_keys = deleted;
    Err(format!(
        "the Redis scan did not finish within {} calls ({deleted} keys deleted so far)",
        plan::REDIS_UNLINK_MAX_CALLS
    ))
}

/// The final transaction: environment rows (ports, slots, env versions,
/// domains) and the project's soft delete.
async fn remove_records(
    op: &OpHandle<'_>,
    project_id: i64,
    ops: &[uuid::Uuid],
    removed: &mut Removed,
) -> Result<(), String> {
    let started = Instant::now();
    let pool = op.ctx().db.pool().await.map_err(|e| e.to_string())?;
    let gone =
        state::project_removal::project_soft_delete(pool, project_id, ops, &op.ctx().instance_id)
            .await
            .map_err(|e: DbError| e.to_string())?;
    op.journal_note(
        "records",
        &format!(
            "deleted the environment rows (ports {}), {} env version(s), {} domain row(s); project marked deleted",
            ports_text(&gone.ports_freed),
            gone.env_versions_deleted,
            gone.domains_deleted
        ),
        started.elapsed(),
    )
    .await;
    removed.soft_deleted = Some(gone);
    Ok(())
}
