//! The blue-green lifecycle (DESIGN §2, §7): deploy, promote, rollback and
//! slot cleanup. Each operation observes (database + servers), plans with a
//! pure planner, and applies step by step under a deployment record with a
//! lease. Every remote command is journaled. No transaction or lock is held
//! across SSH work: state flips are short, fenced transactions.
//!
//! Cancellation: `abort` is honoured only before the traffic switch; after
//! the switch an operation always completes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::exec::{CmdOutput, ExecError, Remote};
use crate::model::{validate_project_name, Environment, ServerRole, SlotName, SlotState};
use crate::ops::Ctx;
use crate::plan::cmd::RemoteCmd;
use crate::plan::deploy::{
    plan_deploy, CleanupStep, DeployInput, DeployPlan, DeployStep, HEALTH_INTERVAL_MS,
    HEALTH_PROBE_TIMEOUT_SECS,
};
use crate::plan::dns::{env_hostnames, srv_patch_body, RrsetChange};
use crate::plan::env::EnvView;
use crate::plan::podman::{self, RunSpec};
use crate::plan::policy::{self, validate_override_reason, PolicyVerdict};
use crate::plan::switch::{plan_cleanup, plan_promote, plan_rollback, SwitchPlan};
use crate::state::deployments::{self as journal, Begin, NewDeployment};
use crate::state::slots::{self, EnvRow};
use crate::state::DbError;

/// Probes in a row that cannot run at all (the app server does not answer)
/// before the health gate gives up instead of waiting out its deadline.
/// Each such probe already took a connect or command timeout.
pub const HEALTH_GATE_UNREACHABLE_PROBES: u32 = 2;
/// Progress phases of a deploy besides one per plan step: "planned" and "deployed".
const DEPLOY_PHASES_BESIDE_STEPS: u32 = 2;
/// Longest silence between two progress reports of a running operation.
/// DESIGN §5 asks for one at least every 5 s as the client sees it; 4 s
/// leaves a second for delivery.
pub const PROGRESS_HEARTBEAT: Duration = Duration::from_secs(4);
/// How long a switch may take to show through Caddy before it is undone.
pub const SWITCH_VERIFY_DEADLINE: Duration = Duration::from_secs(15);
// Caddy looks up a route again at most this long after PowerDNS failed to
// answer: a switch made right after PowerDNS returns must still verify.
const _: () =
    assert!(crate::plan::caddy::SRV_GRACE_PERIOD_SECS + 3 < SWITCH_VERIFY_DEADLINE.as_secs());
/// Consecutive answers from the new slot that confirm a switch.
pub const SWITCH_VERIFY_CONFIRMATIONS: u32 = 2;
/// Header Caddy adds with the upstream port.
pub const UPSTREAM_HEADER: &str = "x-codeb-upstream";

/// Why an operation did not succeed; every variant reads as advice.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such project.
    #[error("project {0:?} not found; project_list shows the registered projects")]
    NotFound(String),
    /// The plan cannot be made in the current state.
    #[error("{0}")]
    Refused(String),
    /// Another operation runs on the same (project, environment).
    #[error("{operation} {running_id} is already running on {project} {environment} (since {since}); wait for it (deployment_get {running_id}) and try again. If the codeb running it has stopped, the first call after its lease expires ({lease_expires}) recovers it")]
    Busy {
        /// Project.
        project: String,
        /// Environment.
        environment: Environment,
        /// The running operation.
        running_id: Uuid,
        /// Its kind.
        operation: String,
        /// Start time.
        since: String,
        /// When its lease runs out unless its codeb renews it.
        lease_expires: String,
    },
    /// A step failed; the deployment record has the journal.
    #[error("{operation} {deployment_id} failed at {step}: {message}. {aftermath} See deployment_get {deployment_id} for the step journal")]
    Failed {
        /// Operation.
        operation: &'static str,
        /// Deployment id.
        deployment_id: Uuid,
        /// Step name.
        step: String,
        /// What went wrong.
        message: String,
        /// What state things were left in.
        aftermath: String,
    },
    /// The client went away before the traffic switch.
    #[error("{operation} {deployment_id} was cancelled before the traffic switch; nothing was switched. {aftermath}")]
    Cancelled {
        /// Operation.
        operation: &'static str,
        /// Deployment id.
        deployment_id: Uuid,
        /// What was cleaned up.
        aftermath: String,
    },
    /// The database failed.
    #[error("{0}; check health_check")]
    Db(#[from] DbError),
}

/// A progress event for the MCP layer: phase number, total, message.
#[derive(Debug, Clone)]
pub struct Progress {
    /// 1-based phase.
    pub phase: u32,
    /// Number of phases.
    pub total: u32,
    /// Phase text.
    pub message: String,
}

/// Where an operation reports progress.
pub type ProgressTx = mpsc::UnboundedSender<Progress>;

/// Who asks: recorded with every operation, checked by access control.
#[derive(Debug, Clone)]
pub struct Caller {
    /// How records name this caller: `key:{id}` for an API key, `local`
    /// for the operator at the codeb machine.
    pub principal: String,
    /// The principal (DESIGN §6) it acts for: the person or CI system its
    /// key belongs to (`local` for the operator at the codeb machine). Two
    /// callers with one holder are one person for the two-person rule.
    pub holder: String,
    /// The caller's team.
    pub team: String,
    /// The caller's role.
    pub role: crate::model::Role,
    /// The API key it authenticated with (None: the local operator).
    pub key_id: Option<Uuid>,
}

/// The principal of the operator at the codeb machine: stdio callers
/// without `CODEB_API_KEY`, and the default of `codeb key create`.
pub const LOCAL_PRINCIPAL: &str = "local";

impl Caller {
    /// The operator on the machine itself (stdio, CLI): owner of the
    /// default team (DESIGN §6).
    pub fn local_owner() -> Self {
        Self {
            principal: LOCAL_PRINCIPAL.into(),
            holder: LOCAL_PRINCIPAL.into(),
            team: "default".into(),
            role: crate::model::Role::Owner,
            key_id: None,
        }
    }
}

/// A running operation, for other modules' operations (env_sync, ...).
pub(crate) type OpHandle<'a> = Op<'a>;

/// A running operation: its record, fence and reporting channels.
pub(crate) struct Op<'a> {
    ctx: &'a Ctx,
    id: Uuid,
    token: i64,
    row: EnvRow,
    progress: ProgressTx,
    total: u32,
    phase: u32,
    abort: CancellationToken,
    /// Renews the lease; dropped with the operation, whatever ends it.
    lease: crate::ops::lease::LeaseKeeper,
    /// Set when the last command found the app server unreachable, so a
    /// cleanup does not wait for it once per step.
    app_unreachable: AtomicBool,
}

impl<'a> Op<'a> {
    /// The shared context.
    pub(crate) fn ctx(&self) -> &'a Ctx {
        self.ctx
    }

    fn env(&self) -> &str {
        self.row.view.environment.as_str()
    }

    /// `text` scrubbed of codeb's secrets and this project's (the journal
    /// and the error are the project's outputs).
    fn redact(&self, text: &str) -> String {
        crate::ops::redact::redact_in(
            crate::ops::redact::Scope::Project(&self.row.view.project),
            text,
        )
    }

    pub(crate) fn phase(&mut self, message: impl Into<String>) {
        self.phase += 1;
        let _ = self.progress.send(Progress {
            phase: self.phase,
            total: self.total,
            message: message.into(),
        });
    }

    fn app(&self) -> Result<Arc<dyn Remote>, String> {
        self.ctx
            .fleet
            .for_role(ServerRole::App)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| "no app server configured".to_string())
    }

    /// What the operation observed under its lease.
    pub(crate) fn row(&self) -> &EnvRow {
        &self.row
    }

    /// The operation's id.
    pub(crate) fn id(&self) -> Uuid {
        self.id
    }

    /// The executor of the first server with `role`.
    pub(crate) fn server(&self, role: ServerRole) -> Result<Arc<dyn Remote>, String> {
        self.ctx
            .fleet
            .for_role(role)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| format!("no {role} server configured"))
    }

    /// Records the env version the operation ran with.
    pub(crate) async fn set_env_version(&self, version: i32) {
        if let Ok(pool) = self.ctx.db.pool().await {
            let _ = sqlx::query("UPDATE deployments SET env_version = $2 WHERE id = $1")
                .bind(self.id)
                .bind(version)
                .execute(pool)
                .await;
        }
    }

    /// Ends the operation as succeeded with `result`.
    pub(crate) async fn finish_ok(self, result: Option<&serde_json::Value>) -> Result<(), OpError> {
        self.finish(true, None, result).await
    }

    /// Ends the operation as failed with `error`.
    pub(crate) async fn finish_err(self, error: &str) -> Result<(), OpError> {
        self.finish(false, Some(error), None).await
    }

    /// Runs one command on the app server and journals it.
    async fn run(&self, step: &str, cmd: &RemoteCmd) -> Result<CmdOutput, String> {
        let app = self.app()?;
        self.run_on(&app, step, cmd).await
    }

    /// Runs one command on `server` and journals it.
    pub(crate) async fn run_on(
        &self,
        server: &Arc<dyn Remote>,
        step: &str,
        cmd: &RemoteCmd,
    ) -> Result<CmdOutput, String> {
        let app = server;
        let is_app = self
            .ctx
            .fleet
            .for_role(ServerRole::App)
            .is_some_and(|(_, r)| Arc::ptr_eq(r, server));
        let started = Instant::now();
        let result = app.run(cmd).await;
        match &result {
            Ok(_) if is_app => self.app_unreachable.store(false, Ordering::Relaxed),
            Err(ExecError::Unreachable { .. }) if is_app => {
                self.app_unreachable.store(true, Ordering::Relaxed)
            }
            _ => {}
        }
        // journal_command scrubs the tail.
        let (exit, tail) = match &result {
            Ok(o) => (o.status, Some(o.stderr_tail())),
            Err(e) => (None, Some(e.to_string())),
        };
        self.journal_command(step, app.name(), cmd, exit, tail.as_deref(), started)
            .await;
        result.map_err(|e| e.to_string())
    }

    /// Journals one command that ran on `server` (best effort: a journal
    /// write that fails does not fail the operation).
    pub(crate) async fn journal_command(
        &self,
        step: &str,
        server: &str,
        cmd: &RemoteCmd,
        exit: Option<i32>,
        stderr_tail: Option<&str>,
        started: Instant,
    ) {
        let stderr_tail = stderr_tail.map(|t| self.redact(t));
        if let Ok(pool) = self.ctx.db.pool().await {
            let _ = journal::step_append(
                pool,
                self.id,
                step,
                Some(server),
                &cmd.argv(),
                exit,
                stderr_tail.as_deref(),
                started.elapsed(),
            )
            .await;
        }
    }

    /// Like `run_on` but a non-zero exit is an error naming the program,
    /// the server and its (bounded) stderr.
    pub(crate) async fn run_ok_on(
        &self,
        server: &Arc<dyn Remote>,
        step: &str,
        cmd: &RemoteCmd,
    ) -> Result<CmdOutput, String> {
        let out = self.run_on(server, step, cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(format!(
                "`{}` on {} exited with {}: {}",
                cmd.program,
                server.name(),
                out.status.map_or("a signal".into(), |c| c.to_string()),
                bounded(&out.stderr_tail())
            ))
        }
    }

    /// Like `run` but a non-zero exit is an error naming stderr.
    async fn run_ok(&self, step: &str, cmd: &RemoteCmd) -> Result<CmdOutput, String> {
        let out = self.run(step, cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(format!(
                "`{}` exited with {}: {}",
                cmd.program,
                out.status.map_or("a signal".into(), |c| c.to_string()),
                bounded(&out.stderr_tail())
            ))
        }
    }

    pub(crate) async fn journal_note(&self, step: &str, note: &str, duration: Duration) {
        let note = self.redact(note);
        if let Ok(pool) = self.ctx.db.pool().await {
            let _ =
                journal::step_append(pool, self.id, step, None, &[], None, Some(&note), duration)
                    .await;
        }
    }

    async fn finish(
        self,
        ok: bool,
        error: Option<&str>,
        result: Option<&serde_json::Value>,
    ) -> Result<(), OpError> {
        let error = error.map(|e| self.redact(e));
        let Op {
            ctx,
            id,
            token,
            lease,
            ..
        } = self;
        lease.finish();
        let pool = ctx.db.pool().await?;
        journal::deployment_finish(pool, id, token, ok, error.as_deref(), result).await?;
        Ok(())
    }
}

fn bounded(s: &str) -> String {
    let s = s.trim();
    if s.len() > 400 {
        let mut end = 400;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

/// Observes a (project, environment) and starts an operation on it.
#[allow(clippy::too_many_arguments)]
async fn begin<'a>(
    ctx: &'a Ctx,
    operation: &'static str,
    project: &str,
    environment: Environment,
    image: Option<&str>,
    idempotency_key: Option<&str>,
    reason: Option<&str>,
    caller: &Caller,
    progress: ProgressTx,
    total: u32,
    abort: CancellationToken,
) -> Result<Result<Op<'a>, Uuid>, OpError> {
    let pool = ctx.db.pool().await?;
    let row = slots::env_view(pool, project, environment)
        .await?
        .ok_or_else(|| OpError::NotFound(project.to_string()))?;
    let id = Uuid::new_v4();
    let new = NewDeployment {
        id,
        project_id: row.project_id,
        environment: environment.as_str(),
        operation,
        slot: None,
        image,
        idempotency_key,
        principal: &caller.principal,
        reason,
        lease_owner: &ctx.instance_id,
        lease: ctx.config.lifecycle.lease(),
    };
    let token = match journal::deployment_begin(pool, &new).await? {
        Begin::Started {
            fencing_token,
            recovered,
        } => {
            for r in recovered {
                recover(ctx, &row, &r).await;
            }
            fencing_token
        }
        Begin::Busy {
            running_id,
            operation,
            since,
            lease_expires_at,
        } => {
            return Err(OpError::Busy {
                project: project.to_string(),
                environment,
                running_id,
                operation,
                since: since.to_rfc3339(),
                lease_expires: lease_expires_at
                    .map_or_else(|| "unknown".into(), |t| t.to_rfc3339()),
            })
        }
        Begin::Duplicate { existing_id } => return Ok(Err(existing_id)),
    };
    // Recovery may have changed slots: observe again under our lease.
    let row = slots::env_view(pool, project, environment)
        .await?
        .ok_or_else(|| OpError::NotFound(project.to_string()))?;
    let lease = crate::ops::lease::LeaseKeeper::start(
        ctx.db.clone(),
        id,
        token,
        ctx.config.lifecycle.lease(),
        ctx.config.lifecycle.lease_heartbeat(),
    );
    Ok(Ok(Op {
        ctx,
        id,
        token,
        row,
        progress,
        total,
        phase: 0,
        abort,
        lease,
        app_unreachable: AtomicBool::new(false),
    }))
}

/// Starts an operation without image or idempotency key (env_sync, ...)
/// under the (project, environment) lock.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn begin_op<'a>(
    ctx: &'a Ctx,
    operation: &'static str,
    project: &str,
    environment: Environment,
    caller: &Caller,
    progress: ProgressTx,
    total: u32,
    abort: CancellationToken,
) -> Result<Op<'a>, OpError> {
    match begin(
        ctx,
        operation,
        project,
        environment,
        None,
        None,
        None,
        caller,
        progress,
        total,
        abort,
    )
    .await?
    {
        Ok(op) => Ok(op),
        Err(existing) => Err(OpError::Refused(format!(
            "operation {existing} already exists for this request"
        ))),
    }
}

/// Puts a crashed operation's leftovers in line with the database: a
/// container the crashed deploy started but never recorded is removed, and
/// the routes are rebuilt from the recorded slot states.
async fn recover(ctx: &Ctx, row: &EnvRow, r: &journal::Recovered) {
    tracing::warn!(id = %r.id, operation = %r.operation, "recovering an operation whose lease expired");
    let Some((_, app)) = ctx.fleet.for_role(ServerRole::App) else {
        return;
    };
    let Ok(pool) = ctx.db.pool().await else {
        return;
    };
    if r.operation == "deploy" {
        if let Some(slot) = r.slot.as_deref().and_then(SlotName::parse) {
            let recorded = slots::slot_deployment(
                pool,
                row.project_id,
                row.view.environment.as_str(),
                slot.as_str(),
            )
            .await;
            if !matches!(recorded, Ok(Some(d)) if d == r.id) {
                if let Ok(cmd) = podman::rm_force(&row.view.container(slot)) {
                    let _ = app.run(&cmd).await;
                }
                let _ = sqlx::query(
                    "UPDATE slots SET state = 'empty', image = NULL, deployment_id = NULL, grace_expires_at = NULL
                      WHERE project_id = $1 AND environment = $2 AND slot = $3 AND state IN ('empty', 'deployed', 'grace')",
                )
                .bind(row.project_id)
                .bind(row.view.environment.as_str())
                .bind(slot.as_str())
                .execute(pool)
                .await;
                if let Ok(client) = crate::ops::pdns::pdns_client(ctx).await {
                    let host = crate::plan::dns::preview_hostname(
                        &row.view.project,
                        row.view.environment,
                        slot,
                        &ctx.config.routing.preview_domain,
                    );
                    let name =
                        crate::plan::dns::route_rrset_name(&host, &ctx.config.routing.route_zone);
                    let body = srv_patch_body(
                        &[RrsetChange::Delete { name }],
                        &ctx.config.routing.route_target,
                    );
                    let _ = client
                        .patch_rrsets(&ctx.config.routing.route_zone, &body)
                        .await;
                }
            }
        }
    }
    if matches!(
        r.operation.as_str(),
        "promote" | "rollback" | "slot_cleanup"
    ) {
        if let Ok(Some(fresh)) =
            slots::env_view(pool, &row.view.project, row.view.environment).await
        {
            let v = &fresh.view;
            if let Some(active) = v.in_state(SlotState::Active) {
                let fallback = v
                    .in_state(SlotState::Grace)
                    .or_else(|| v.in_state(SlotState::Deployed))
                    .map(|s| v.port(s.slot));
                let mut hosts =
                    env_hostnames(&v.project, v.environment, &ctx.config.routing.base_domain);
                if let Ok(d) = crate::state::domains::domains_for_env(
                    pool,
                    fresh.project_id,
                    v.environment.as_str(),
                )
                .await
                {
                    hosts.extend(d);
                }
                let changes = crate::plan::switch::route_changes(
                    &hosts,
                    &ctx.config.routing.route_zone,
                    v.port(active.slot),
                    fallback,
                );
                if let Ok(client) = crate::ops::pdns::pdns_client(ctx).await {
                    let body = srv_patch_body(&changes, &ctx.config.routing.route_target);
                    let _ = client
                        .patch_rrsets(&ctx.config.routing.route_zone, &body)
                        .await;
                }
            }
        }
    }
    ctx.observer.invalidate();
}

/// Result of a deploy.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    /// Deployment id.
    pub deployment_id: Uuid,
    /// Slot filled.
    pub slot: SlotName,
    /// Its host port.
    pub port: u16,
    /// Image reference as asked for.
    pub image: String,
    /// Digest of the image the container runs (`sha256:…`; it runs
    /// `REPOSITORY@DIGEST`); absent in results recorded before digests were.
    pub digest: Option<String>,
    /// Preview URL routed through Caddy.
    pub preview_url: String,
    /// Health gate result.
    pub health: String,
    /// Notes (e.g. a grace slot was replaced).
    pub warnings: Vec<String>,
    /// True when this is an earlier deployment returned for the same idempotency key.
    pub replayed: bool,
    /// Env version the container runs with (None: the environment has no variables).
    pub env_version: Option<i32>,
    /// The production policy's verdict (DESIGN §6).
    pub policy: Option<String>,
}

/// Either a plan (dry run) or what was done.
#[derive(Debug)]
pub enum Outcome<P, D> {
    /// `dry_run`: the plan, nothing changed.
    Planned(P),
    /// Applied.
    Done(D),
}

/// Validates an environment's project and reads it for a dry run.
async fn observe(ctx: &Ctx, project: &str, environment: Environment) -> Result<EnvRow, OpError> {
    validate_project_name(project).map_err(|e| OpError::Invalid(e.0))?;
    let pool = ctx.db.pool().await?;
    slots::env_view(pool, project, environment)
        .await?
        .ok_or_else(|| OpError::NotFound(project.to_string()))
}

fn preview_url(ctx: &Ctx, host: &str) -> String {
    let scheme = if ctx.config.routing.public_http.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

/// deploy: observe → plan → apply (DESIGN §2).
#[allow(clippy::too_many_arguments)]
pub async fn deploy(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    image: &str,
    idempotency_key: Option<&str>,
    override_reason: Option<&str>,
    dry_run: bool,
    caller: &Caller,
    progress: ProgressTx,
    abort: CancellationToken,
) -> Result<Outcome<DeployPlan, DeployOutcome>, OpError> {
    podman::validate_image_ref(image).map_err(|e| OpError::Invalid(e.0))?;
    if let Some(k) = idempotency_key {
        if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(OpError::Invalid(
                "idempotency_key must be 1-128 printable ASCII characters without spaces".into(),
            ));
        }
    }
    if let Some(r) = override_reason {
        validate_override_reason(r).map_err(|e| OpError::Invalid(e.0))?;
    }
    let observed = observe(ctx, project, environment).await?;
    // The production policy (DESIGN §6) is checked before anything runs,
    // dry run included, so a dry run says whether the deploy would be
    // refused. It compares digests: the one staging ran for this reference
    // (or the one the reference names) is what production runs.
    let staged_digest = match (environment, podman::image_ref_digest(image)) {
        (Environment::Production, Some(d)) => {
            journal::digest_staged(ctx.db.pool().await?, observed.project_id, d)
                .await?
                .then(|| d.to_string())
        }
        (Environment::Production, None) => {
            journal::staged_digest(ctx.db.pool().await?, observed.project_id, image).await?
        }
        _ => None,
    };
    let verdict = policy::check_deploy(
        environment,
        image,
        staged_digest.as_deref(),
        override_reason,
        caller.role,
    )
    .map_err(|e| OpError::Refused(e.0))?;
    let recorded_reason = match &verdict {
        PolicyVerdict::Overridden { reason } => Some(reason.as_str()),
        _ => None,
    };
    let policy_text = (environment == Environment::Production).then(|| verdict.to_string());
    let input = DeployInput {
        image: image.to_string(),
        staged_digest: match &verdict {
            PolicyVerdict::StagedFirst { digest } => Some(digest.clone()),
            _ => None,
        },
    };
    if dry_run {
        let mut plan = plan_deploy(&observed.view, &input, &ctx.config.routing.preview_domain)
            .map_err(|e| OpError::Refused(e.0))?;
        plan.policy = policy_text;
        return Ok(Outcome::Planned(plan));
    }
    // One phase per plan step, plus "planned" and "deployed": the plan made
    // under the lease below sets the count before the first report.
    let total = DEPLOY_PHASES_BESIDE_STEPS;
    let mut op = match begin(
        ctx,
        "deploy",
        project,
        environment,
        Some(image),
        idempotency_key,
        recorded_reason,
        caller,
        progress,
        total,
        abort,
    )
    .await?
    {
        Ok(op) => op,
        Err(existing) => return replay_deploy(ctx, existing).await.map(Outcome::Done),
    };
    let plan = match plan_deploy(&op.row.view, &input, &ctx.config.routing.preview_domain) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.0.clone();
            op.finish(false, Some(&msg), None).await?;
            return Err(OpError::Refused(msg));
        }
    };
    op.total = DEPLOY_PHASES_BESIDE_STEPS + plan.steps.len() as u32;
    if let Ok(pool) = ctx.db.pool().await {
        let _ = sqlx::query("UPDATE deployments SET slot = $2 WHERE id = $1")
            .bind(op.id)
            .bind(plan.slot.as_str())
            .execute(pool)
            .await;
    }
    op.phase(format!(
        "planned: deploy {image} into {} (port {})",
        plan.slot, plan.port
    ));
    match apply_deploy(&mut op, &plan).await {
        Ok(Applied {
            health,
            env_version,
            digest,
        }) => {
            let outcome = DeployOutcome {
                deployment_id: op.id,
                slot: plan.slot,
                port: plan.port,
                image: image.to_string(),
                digest: Some(digest),
                preview_url: preview_url(ctx, &plan.preview_host),
                health,
                warnings: plan.warnings.clone(),
                replayed: false,
                env_version,
                policy: policy_text,
            };
            op.phase("deployed");
            let result = serde_json::to_value(&outcome).ok();
            op.finish(true, None, result.as_ref()).await?;
            ctx.observer.invalidate();
            Ok(Outcome::Done(outcome))
        }
        Err((step, message, cancelled)) => {
            let aftermath = cleanup_failed_deploy(&op, &plan).await;
            let id = op.id;
            let err = if cancelled {
                OpError::Cancelled {
                    operation: "deploy",
                    deployment_id: id,
                    aftermath,
                }
            } else {
                OpError::Failed {
                    operation: "deploy",
                    deployment_id: id,
                    step,
                    message,
                    aftermath,
                }
            };
            op.finish(false, Some(&err.to_string()), None).await?;
            ctx.observer.invalidate();
            Err(err)
        }
    }
}

async fn replay_deploy(ctx: &Ctx, id: Uuid) -> Result<DeployOutcome, OpError> {
    let pool = ctx.db.pool().await?;
    let row = journal::deployment_by_id(pool, id)
        .await?
        .ok_or_else(|| OpError::Refused(format!("deployment {id} vanished")))?;
    match (row.status.as_str(), row.result) {
        ("succeeded", Some(r)) => {
            let mut o: DeployOutcome = serde_json::from_value(r).map_err(|e| OpError::Refused(e.to_string()))?;
            o.replayed = true;
            Ok(o)
        }
        ("running", _) => Err(OpError::Refused(format!(
            "deployment {id} with this idempotency key is still running; poll deployment_get {id}"
        ))),
        (status, _) => Err(OpError::Refused(format!(
            "deployment {id} with this idempotency key ended {status}: {}; use a new idempotency_key to deploy again",
            row.error.unwrap_or_default()
        ))),
    }
}

impl<'de> serde::Deserialize<'de> for DeployOutcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Raw {
            deployment_id: Uuid,
            slot: SlotName,
            port: u16,
            image: String,
            #[serde(default)]
            digest: Option<String>,
            preview_url: String,
            health: String,
            #[serde(default)]
            warnings: Vec<String>,
            #[serde(default)]
            env_version: Option<i32>,
            #[serde(default)]
            policy: Option<String>,
        }
        let r = Raw::deserialize(d)?;
        Ok(DeployOutcome {
            deployment_id: r.deployment_id,
            slot: r.slot,
            port: r.port,
            image: r.image,
            digest: r.digest,
            preview_url: r.preview_url,
            health: r.health,
            warnings: r.warnings,
            replayed: false,
            env_version: r.env_version,
            policy: r.policy,
        })
    }
}

type StepFailure = (String, String, bool);

fn fail(step: &str, message: impl Into<String>) -> StepFailure {
    (step.to_string(), message.into(), false)
}

/// What a deploy that went through did.
struct Applied {
    health: String,
    env_version: Option<i32>,
    /// The digest pulled and run.
    digest: String,
}

/// The digest `image` was pulled as (after `podman pull`, whose stdout is
/// the image id), checked against the digest the plan expects, recorded
/// on the deployment; returns (digest, `REPOSITORY@DIGEST` to run).
async fn pulled_digest(
    op: &Op<'_>,
    image: &str,
    pull_stdout: &str,
    expected: Option<&str>,
) -> Result<(String, String), StepFailure> {
    let id = podman::parse_pulled_id(pull_stdout).map_err(|e| fail("pull", e))?;
    let cmd = podman::image_digests(&id).map_err(|e| fail("pull", e.0))?;
    let out = op
        .run_ok("image_digest", &cmd)
        .await
        .map_err(|e| fail("pull", e))?;
    let digest =
        podman::parse_image_digest(&out.stdout_text(), image).map_err(|e| fail("pull", e))?;
    if let Some(want) = expected.filter(|w| *w != digest) {
        return Err(fail(
            "pull",
            format!("{image} was pulled as digest {digest}, not {want}; nothing was run"),
        ));
    }
    let pinned = podman::pinned_image(image, &digest).map_err(|e| fail("pull", e.0))?;
    let pool = op
        .ctx
        .db
        .pool()
        .await
        .map_err(|e| fail("record", e.to_string()))?;
    journal::deployment_set_digest(pool, op.id, op.token, &digest)
        .await
        .map_err(|e| fail("record", e.to_string()))?;
    Ok((digest, pinned))
}

async fn apply_deploy(op: &mut Op<'_>, plan: &DeployPlan) -> Result<Applied, StepFailure> {
    let view = op.row.view.clone();
    let mut health = String::new();
    // Set by the pull: (digest, REPOSITORY@DIGEST), what the run names.
    let mut pulled: Option<(String, String)> = None;
    // The container runs with the latest env version, synced now: the app
    // file is always rewritten (what runs is what the file says), the
    // backup copy once per version.
    let env = crate::ops::env::latest_rendered(
        op.ctx,
        op.row.project_id,
        &view.project,
        view.environment,
    )
    .await
    .map_err(|e| fail("env", e.to_string()))?;
    if let Some(r) = &env {
        op.set_env_version(r.version).await;
    }
    let env_file = env
        .as_ref()
        .map(|_| crate::plan::envvars::app_env_path(&view.project, view.environment));
    // The old container of the target slot goes while the image is pulled:
    // any failure cleans the target slot anyway, so doing it early loses
    // nothing and takes its time off the deploy.
    let early_remove = plan.steps.iter().find_map(|s| match s {
        DeployStep::RemoveContainer { container } => Some(container.clone()),
        _ => None,
    });
    let mut removed = false;
    for step in &plan.steps {
        if op.abort.is_cancelled() {
            return Err(("cancel".into(), "client went away".into(), true));
        }
        match step {
            DeployStep::Pull { image } => {
                op.phase(format!("pulling {image}"));
                let cmd = podman::pull(image).map_err(|e| fail("pull", e.0))?;
                let env_write = sync_env_for_deploy(op, env.as_ref());
                let out = match &early_remove {
                    Some(container) => {
                        let rm = podman::rm_force(container).map_err(|e| fail("remove", e.0))?;
                        let (out, gone, written) = tokio::join!(
                            op.run_ok("pull", &cmd),
                            op.run_ok("remove_old", &rm),
                            env_write
                        );
                        let out = out.map_err(|e| fail("pull", e))?;
                        gone.map_err(|e| fail("remove", e))?;
                        written?;
                        removed = true;
                        out
                    }
                    None => {
                        let (out, written) = tokio::join!(op.run_ok("pull", &cmd), env_write);
                        let out = out.map_err(|e| fail("pull", e))?;
                        written?;
                        out
                    }
                };
                pulled = Some(
                    pulled_digest(op, image, &out.stdout_text(), plan.digest.as_deref()).await?,
                );
            }
            DeployStep::EnsureNetwork => {
                op.phase(format!("ensuring network {}", podman::NETWORK));
                // Once seen, the network stays: codeb never removes it.
                if !op.ctx.app_network_ready.load(Ordering::Relaxed) {
                    let exists = op
                        .run("network_exists", &podman::network_exists(podman::NETWORK))
                        .await
                        .map_err(|e| fail("network", e))?;
                    if !exists.success() {
                        op.run_ok("network_create", &podman::network_create(podman::NETWORK))
                            .await
                            .map_err(|e| fail("network", e))?;
                    }
                    op.ctx.app_network_ready.store(true, Ordering::Relaxed);
                }
            }
            DeployStep::RemoveContainer { container } => {
                op.phase(format!("replacing container {container}"));
                if !removed {
                    let cmd = podman::rm_force(container).map_err(|e| fail("remove", e.0))?;
                    op.run_ok("remove_old", &cmd)
                        .await
                        .map_err(|e| fail("remove", e))?;
                }
            }
            DeployStep::Run {
                container,
                image: _,
                host_port,
            } => {
                let (_, pinned) = pulled
                    .as_ref()
                    .ok_or_else(|| fail("run", "the plan runs an image before pulling it"))?;
                op.phase(format!("starting {container} from {pinned}"));
                let labels = [
                    (podman::LABEL_PROJECT, view.project.clone()),
                    (podman::LABEL_ENVIRONMENT, view.environment.to_string()),
                    (podman::LABEL_SLOT, plan.slot.to_string()),
                    (podman::LABEL_DEPLOYMENT, op.id.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                let env_secrets = match &env {
                    Some(r) => env_secrets_for_run(op, container, r).await?,
                    None => Vec::new(),
                };
                let spec = RunSpec {
                    name: container.clone(),
                    image: pinned.clone(),
                    labels,
                    network: podman::NETWORK.to_string(),
                    host_port: *host_port,
                    container_port: view.container_port,
                    memory: view.memory.clone(),
                    cpus: view.cpus.clone(),
                    env_file: env_file.clone(),
                    env_secrets,
                };
                let cmd = podman::run(&spec).map_err(|e| fail("run", e.0))?;
                op.run_ok("run", &cmd).await.map_err(|e| fail("run", e))?;
            }
            DeployStep::HealthGate { port, path } => {
                op.phase(format!("health-gating 127.0.0.1:{port}{path}"));
                health = health_gate(op, *port, path).await?;
            }
            DeployStep::PreviewRoute { host, port } => {
                op.phase(format!("routing preview host {host}"));
                let changes = crate::plan::switch::route_changes(
                    std::slice::from_ref(host),
                    &op.ctx.config.routing.route_zone,
                    *port,
                    None,
                );
                patch_routes(op, "preview_route", &changes)
                    .await
                    .map_err(|e| fail("preview_route", e))?;
            }
            DeployStep::MarkDeployed => {
                op.phase(format!("recording {} as deployed", plan.slot));
                let pool = op
                    .ctx
                    .db
                    .pool()
                    .await
                    .map_err(|e| fail("record", e.to_string()))?;
                slots::slot_set(
                    pool,
                    op.id,
                    op.token,
                    op.row.project_id,
                    op.env(),
                    plan.slot.as_str(),
                    "deployed",
                    pulled.as_ref().map(|(_, pinned)| pinned.as_str()),
                )
                .await
                .map_err(|e| fail("record", e.to_string()))?;
                slots::slot_set_env_version(
                    pool,
                    op.row.project_id,
                    op.env(),
                    plan.slot.as_str(),
                    env.as_ref().map(|r| r.version),
                )
                .await
                .map_err(|e| fail("record", e.to_string()))?;
            }
        }
    }
    let digest = pulled
        .map(|(d, _)| d)
        .ok_or_else(|| fail("pull", "the plan has no pull"))?;
    Ok(Applied {
        health,
        env_version: env.as_ref().map(|r| r.version),
        digest,
    })
}

/// Writes the env file a deploy runs with (and, for a version never synced,
/// the backup copy).
async fn sync_env_for_deploy(
    op: &Op<'_>,
    env: Option<&crate::ops::env::Rendered>,
) -> Result<(), StepFailure> {
    let Some(r) = env else { return Ok(()) };
    let view = &op.row.view;
    crate::ops::env::write_env_files(
        op,
        op.row.project_id,
        &view.project,
        view.environment,
        r,
        !r.synced,
    )
    .await
    .map_err(|(_, e)| fail("env", e))
}

/// Values with line breaks reach the container as podman secrets: this
/// container's old env secrets go, the current ones are created from
/// stdin. Returns (secret, variable) pairs for `podman run`.
async fn env_secrets_for_run(
    op: &Op<'_>,
    container: &str,
    env: &crate::ops::env::Rendered,
) -> Result<Vec<(String, String)>, StepFailure> {
    use crate::plan::envvars::{needs_secret, secret_name, secret_prefix};
    let multi: Vec<(&String, &String)> = env.vars.iter().filter(|(_, v)| needs_secret(v)).collect();
    if multi.is_empty() {
        return Ok(Vec::new());
    }
    let listed = op
        .run_ok("env_secrets_list", &podman::secret_names())
        .await
        .map_err(|e| fail("env_secrets", e))?;
    let prefix = secret_prefix(container);
    let old: Vec<String> = listed
        .stdout_text()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    if !old.is_empty() {
        let rm = podman::secret_rm(&old).map_err(|e| fail("env_secrets", e.0))?;
        op.run_ok("env_secrets_remove", &rm)
            .await
            .map_err(|e| fail("env_secrets", e))?;
    }
    let mut pairs = Vec::new();
    for (k, v) in multi {
        let name = secret_name(container, k);
        let cmd = podman::secret_create(&name, v.clone().into_bytes())
            .map_err(|e| fail("env_secrets", e.0))?;
        op.run_ok("env_secret_create", &cmd)
            .await
            .map_err(|e| fail("env_secrets", e))?;
        pairs.push((name, k.clone()));
    }
    Ok(pairs)
}

/// Probes the slot directly until it answers 200 or the deadline passes.
async fn health_gate(op: &mut Op<'_>, port: u16, path: &str) -> Result<String, StepFailure> {
    let cmd = podman::probe_http(port, path, HEALTH_PROBE_TIMEOUT_SECS)
        .map_err(|e| fail("health", e.0))?;
    let app = op.app().map_err(|e| fail("health", e))?;
    let started = Instant::now();
    let deadline_secs = op.ctx.config.lifecycle.health_deadline_secs;
    let deadline = Duration::from_secs(deadline_secs);
    let mut probes = 0u32;
    let mut unreachable_probes = 0u32;
    let mut last;
    let mut last_report = Instant::now();
    loop {
        if op.abort.is_cancelled() {
            return Err(("cancel".into(), "client went away".into(), true));
        }
        probes += 1;
        let probe_started = Instant::now();
        last = match app.run(&cmd).await {
            Err(e) => {
                unreachable_probes += 1;
                if unreachable_probes >= HEALTH_GATE_UNREACHABLE_PROBES {
                    if matches!(e, ExecError::Unreachable { .. }) {
                        op.app_unreachable.store(true, Ordering::Relaxed);
                    }
                    let msg = format!(
                        "the app server stopped answering during the health gate: {unreachable_probes} probes in a row could not run (last: {e})"
                    );
                    op.journal_note("health_gate", &msg, started.elapsed())
                        .await;
                    return Err(fail("health_gate", msg));
                }
                e.to_string()
            }
            Ok(out) => {
                unreachable_probes = 0;
                match out.stdout_text().trim() {
                    "200" => {
                        let note = format!(
                            "healthy after {probes} probe(s) in {} ms: GET {path} answered 200",
                            started.elapsed().as_millis()
                        );
                        op.journal_note("health_gate", &note, started.elapsed())
                            .await;
                        return Ok(note);
                    }
                    "000" | "" => format!("no answer ({})", bounded(&out.stderr_tail())),
                    code => format!("HTTP {code}"),
                }
            }
        };
        if started.elapsed() >= deadline {
            let msg = format!("health check GET {path} on port {port} never answered 200 within {deadline_secs} s ({probes} probes; last: {last})");
            op.journal_note("health_gate", &msg, started.elapsed())
                .await;
            return Err(fail("health_gate", msg));
        }
        if last_report.elapsed() >= PROGRESS_HEARTBEAT {
            last_report = Instant::now();
            let _ = op.progress.send(Progress {
                phase: op.phase,
                total: op.total,
                message: format!(
                    "still waiting for health ({} s, last: {last})",
                    started.elapsed().as_secs()
                ),
            });
        }
        let wait =
            Duration::from_millis(HEALTH_INTERVAL_MS).saturating_sub(probe_started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = op.abort.cancelled() => {}
        }
    }
}

async fn cleanup_failed_deploy(op: &Op<'_>, plan: &DeployPlan) -> String {
    let mut notes = Vec::new();
    let mut incomplete = false;
    for step in crate::plan::deploy::plan_failed_deploy_cleanup(plan) {
        let result: Result<(), String> = match &step {
            CleanupStep::RemoveContainer(c) => match podman::rm_force(c) {
                Ok(cmd) => op.run_ok("cleanup_remove", &cmd).await.map(|_| ()),
                Err(e) => Err(e.0),
            },
            // The route API is reached through the app server's SSH
            // master: do not wait for a second connect timeout.
            CleanupStep::DeletePreviewRoute(_) if op.app_unreachable.load(Ordering::Relaxed) => {
                Err("skipped: the app server is unreachable".into())
            }
            CleanupStep::DeletePreviewRoute(host) => {
                let name =
                    crate::plan::dns::route_rrset_name(host, &op.ctx.config.routing.route_zone);
                patch_routes(op, "cleanup_preview_route", &[RrsetChange::Delete { name }]).await
            }
            CleanupStep::MarkEmpty(slot) => match op.ctx.db.pool().await {
                Ok(pool) => slots::slot_set(
                    pool,
                    op.id,
                    op.token,
                    op.row.project_id,
                    op.env(),
                    slot.as_str(),
                    "empty",
                    None,
                )
                .await
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(()) => notes.push(format!("{step}: done")),
            Err(e) => {
                incomplete = true;
                notes.push(format!("{step}: FAILED ({e})"));
            }
        }
    }
    notes.push("the active slot was not touched".into());
    let mut aftermath = format!("Cleanup: {}.", notes.join("; "));
    if incomplete {
        aftermath.push_str(
            " Once the app server answers again (health_check), deploy again: a deploy first \
             replaces the slot's leftover container and preview route.",
        );
    }
    aftermath
}

/// One atomic PATCH of route rrsets, journaled.
pub(crate) async fn patch_routes(
    op: &Op<'_>,
    step: &str,
    changes: &[RrsetChange],
) -> Result<(), String> {
    let started = Instant::now();
    let zone = op.ctx.config.routing.route_zone.clone();
    let body = srv_patch_body(changes, &op.ctx.config.routing.route_target);
    let result = crate::ops::pdns::with_pdns(op.ctx, |client| {
        let (zone, body) = (zone.clone(), body.clone());
        async move { client.patch_rrsets(&zone, &body).await }
    })
    .await
    .map_err(|e| e.to_string());
    let names: Vec<String> = changes
        .iter()
        .map(|c| match c {
            RrsetChange::Replace { name, targets } => format!(
                "{name} = {}",
                targets
                    .iter()
                    .map(|t| format!("{}:{}", t.priority, t.port))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            RrsetChange::Delete { name } => format!("{name} deleted"),
        })
        .collect();
    let note = match &result {
        Ok(()) => format!("PATCH zone {zone}: {}", names.join("; ")),
        Err(e) => format!("PATCH zone {zone} failed: {e}"),
    };
    op.journal_note(step, &note, started.elapsed()).await;
    result
}

/// Result of a promote or rollback.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchOutcome {
    /// Deployment id.
    pub deployment_id: Uuid,
    /// Slot now active.
    pub active: SlotName,
    /// Its port.
    pub port: u16,
    /// Its image.
    pub image: Option<String>,
    /// Slot kept as fallback.
    pub previous: Option<SlotName>,
    /// State of the previous slot now.
    pub previous_state: Option<String>,
    /// Host names switched.
    pub hosts: Vec<String>,
    /// Milliseconds from the PATCH to the first confirmed answer from the new slot.
    pub switch_visible_ms: u64,
    /// Env versions: (the slot losing traffic, the slot receiving it).
    pub env_versions: (Option<i32>, Option<i32>),
    /// Env keys that differ between the two (names and fingerprints only).
    pub env_changes: Vec<crate::plan::envvars::KeyChange>,
}

/// promote (DESIGN §2).
pub async fn promote(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    dry_run: bool,
    caller: &Caller,
    progress: ProgressTx,
    abort: CancellationToken,
) -> Result<Outcome<SwitchPlan, SwitchOutcome>, OpError> {
    switch(
        ctx,
        "promote",
        project,
        environment,
        None,
        dry_run,
        caller,
        progress,
        abort,
    )
    .await
}

/// rollback (DESIGN §2).
#[allow(clippy::too_many_arguments)]
pub async fn rollback(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    reason: Option<&str>,
    dry_run: bool,
    caller: &Caller,
    progress: ProgressTx,
    abort: CancellationToken,
) -> Result<Outcome<SwitchPlan, SwitchOutcome>, OpError> {
    if let Some(r) = reason {
        if r.len() > 1000 || r.chars().any(|c| c.is_control() && c != '\n') {
            return Err(OpError::Invalid(
                "reason must be at most 1000 characters of text".into(),
            ));
        }
    }
    switch(
        ctx,
        "rollback",
        project,
        environment,
        reason,
        dry_run,
        caller,
        progress,
        abort,
    )
    .await
}

fn plan_switch(
    ctx: &Ctx,
    operation: &str,
    view: &EnvView,
    domains: &[String],
) -> Result<SwitchPlan, OpError> {
    let mut hosts = env_hostnames(
        &view.project,
        view.environment,
        &ctx.config.routing.base_domain,
    );
    hosts.extend(domains.iter().cloned());
    let zone = &ctx.config.routing.route_zone;
    let now = Utc::now();
    let r = if operation == "promote" {
        plan_promote(view, &hosts, zone, now, ctx.grace_period())
    } else {
        plan_rollback(view, &hosts, zone, now)
    };
    r.map_err(|e| OpError::Refused(e.0))
}

/// The domains (domain_setup) of one environment, routed with its hosts.
async fn env_domains(
    ctx: &Ctx,
    project_id: i64,
    environment: Environment,
) -> Result<Vec<String>, OpError> {
    let pool = ctx.db.pool().await?;
    Ok(crate::state::domains::domains_for_env(pool, project_id, environment.as_str()).await?)
}

#[allow(clippy::too_many_arguments)]
async fn switch(
    ctx: &Ctx,
    operation: &'static str,
    project: &str,
    environment: Environment,
    reason: Option<&str>,
    dry_run: bool,
    caller: &Caller,
    progress: ProgressTx,
    abort: CancellationToken,
) -> Result<Outcome<SwitchPlan, SwitchOutcome>, OpError> {
    let observed = observe(ctx, project, environment).await?;
    if dry_run {
        let domains = env_domains(ctx, observed.project_id, environment).await?;
        return plan_switch(ctx, operation, &observed.view, &domains).map(Outcome::Planned);
    }
    let mut op = match begin(
        ctx,
        operation,
        project,
        environment,
        None,
        None,
        reason,
        caller,
        progress,
        5,
        abort,
    )
    .await?
    {
        Ok(op) => op,
        Err(_) => unreachable!("no idempotency key"),
    };
    // Custom domains (domain_setup) move with the environment's own hosts.
    let planned = match env_domains(ctx, op.row.project_id, environment).await {
        Ok(domains) => plan_switch(ctx, operation, &op.row.view, &domains),
        Err(e) => Err(e),
    };
    let plan = match planned {
        Ok(p) => p,
        Err(e) => {
            op.finish(false, Some(&e.to_string()), None).await?;
            return Err(e);
        }
    };
    match apply_switch(&mut op, &plan).await {
        Ok(visible) => {
            if op.abort.is_cancelled() {
                op.journal_note(
                    "client_gone",
                    "the client went away after the traffic switch; the operation completed",
                    Duration::ZERO,
                )
                .await;
            }
            let from_env = plan.from.and_then(|s| op.row.view.slot(s).env_version);
            let to_env = op.row.view.slot(plan.to).env_version;
            let env_changes = if plan.from.is_some() {
                crate::ops::env::version_diff(ctx, op.row.project_id, environment, from_env, to_env)
                    .await
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let outcome = SwitchOutcome {
                env_versions: (from_env, to_env),
                env_changes,
                deployment_id: op.id,
                active: plan.to,
                port: plan.to_port,
                image: plan.to_image.clone(),
                previous: plan.from,
                previous_state: plan.from_state.map(|s| s.as_str().to_string()),
                hosts: plan.hosts.clone(),
                switch_visible_ms: visible.as_millis() as u64,
            };
            if let Ok(pool) = ctx.db.pool().await {
                let _ = crate::state::domains::domains_mark_routed(
                    pool,
                    op.row.project_id,
                    environment.as_str(),
                )
                .await;
            }
            op.phase("done");
            let result = serde_json::to_value(&outcome).ok();
            op.finish(true, None, result.as_ref()).await?;
            Ok(Outcome::Done(outcome))
        }
        Err((step, message, cancelled)) => {
            let id = op.id;
            let err = if cancelled {
                OpError::Cancelled {
                    operation,
                    deployment_id: id,
                    aftermath: "Routes and slot states are unchanged.".into(),
                }
            } else {
                let aftermath = switch_aftermath(operation, &step, &plan);
                OpError::Failed {
                    operation,
                    deployment_id: id,
                    step,
                    message,
                    aftermath,
                }
            };
            op.finish(false, Some(&err.to_string()), None).await?;
            Err(err)
        }
    }
}

/// What a failed promote or rollback left behind, by the step that failed,
/// and what to do next.
fn switch_aftermath(operation: &str, step: &str, plan: &SwitchPlan) -> String {
    let unchanged =
        "Nothing was switched: the previous route is in place and slot states are unchanged.";
    match step {
        "route" | "switch_route" => format!(
            "{unchanged} PowerDNS on the app server holds the route table: once it answers again \
             (health_check shows it), run {operation} again."
        ),
        "verify" => format!(
            "The previous route was put back and slot states are unchanged; \
             check Caddy on the app server (health_check), then run {operation} again."
        ),
        "restore_route" => format!(
            "Slot states are unchanged, but PowerDNS may still send traffic to {} (port {}): \
             once PowerDNS answers again (health_check shows it), run {operation} again to \
             finish the switch, or check slot_status.",
            plan.to, plan.to_port
        ),
        "record" => format!(
            "Traffic now goes to {} (port {}), verified through Caddy, but recording the new \
             slot states failed: once the database answers (health_check), run {operation} \
             again to record it.",
            plan.to, plan.to_port
        ),
        _ => format!("{unchanged} Fix the cause above, then run {operation} again."),
    }
}

async fn apply_switch(op: &mut Op<'_>, plan: &SwitchPlan) -> Result<Duration, StepFailure> {
    let view = op.row.view.clone();
    // 1. Re-probe the slot that will take traffic.
    op.phase(format!("probing {} before the switch", plan.to));
    // Directly through the SSH master's port forward: no process is
    // started on the app server, so the switch is not delayed by one.
    let probe_started = Instant::now();
    let seen = crate::ops::probe::probe_slot(
        op.ctx,
        plan.to_port,
        &view.health_path,
        Duration::from_secs(u64::from(HEALTH_PROBE_TIMEOUT_SECS)),
    )
    .await
    .map_err(|e| fail("probe", e))?;
    op.journal_note(
        "probe",
        &format!("GET {} on port {}: {seen}", view.health_path, plan.to_port),
        probe_started.elapsed(),
    )
    .await;
    if !seen.healthy() {
        return Err(fail(
            "probe",
            format!(
                "slot {} (port {}) does not answer GET {} with 200 ({seen})",
                plan.to, plan.to_port, view.health_path
            ),
        ));
    }
    if op.abort.is_cancelled() {
        return Err(("cancel".into(), "client went away".into(), true));
    }
    // 2. Remember the current routes so a failed verification can put them back.
    let zone = op.ctx.config.routing.route_zone.clone();
    let mut restore = Vec::new();
    for c in &plan.changes {
        if let RrsetChange::Replace { name, .. } = c {
            let before = crate::ops::pdns::with_pdns(op.ctx, |client| {
                let (zone, name) = (zone.clone(), name.clone());
                async move { client.srv_rrset(&zone, &name).await }
            })
            .await
            .map_err(|e| fail("route", format!("reading the current routes failed: {e}")))?;
            restore.push(match before {
                Some(targets) => RrsetChange::Replace {
                    name: name.clone(),
                    targets,
                },
                None => RrsetChange::Delete { name: name.clone() },
            });
        }
    }
    // 3. The switch: one atomic PATCH. From here on the operation completes.
    op.phase(format!(
        "switching {} to {} (port {})",
        plan.hosts.join(", "),
        plan.to,
        plan.to_port
    ));
    if let Err(e) = patch_routes(op, "switch_route", &plan.changes).await {
        // A PATCH is atomic, but a lost answer leaves open whether it was
        // applied: put the previous routes back to be sure.
        return Err(match patch_routes(op, "restore_route", &restore).await {
            Ok(()) => fail("switch_route", e),
            Err(u) => fail(
                "restore_route",
                format!("{e}; putting the previous route back also failed: {u}"),
            ),
        });
    }
    let switched_at = Instant::now();
    // 4. Verify through Caddy.
    op.phase("verifying through Caddy");
    match verify_through_caddy(op.ctx, &plan.hosts, plan.to_port).await {
        Ok(()) => {}
        Err(e) => {
            return Err(match patch_routes(op, "restore_route", &restore).await {
                Ok(()) => fail("verify", e),
                Err(u) => fail(
                    "restore_route",
                    format!("{e}; putting the previous route back also failed: {u}"),
                ),
            });
        }
    }
    let visible = switched_at.elapsed();
    op.journal_note(
        "verify",
        &format!(
            "responses through Caddy come from port {} after {} ms",
            plan.to_port,
            visible.as_millis()
        ),
        visible,
    )
    .await;
    // 5. Flip states in one short transaction.
    op.phase("recording the switch");
    let pool = op
        .ctx
        .db
        .pool()
        .await
        .map_err(|e| fail("record", e.to_string()))?;
    let from = plan.from.map(|s| {
        (
            s.as_str(),
            plan.from_state.map(|x| x.as_str()).unwrap_or("deployed"),
        )
    });
    slots::slots_switch(
        pool,
        op.id,
        op.token,
        op.row.project_id,
        op.env(),
        plan.to.as_str(),
        from,
        plan.grace_expires_at,
    )
    .await
    .map_err(|e| fail("record", e.to_string()))?;
    Ok(visible)
}

/// Polls Caddy with each host name until `SWITCH_VERIFY_CONFIRMATIONS`
/// answers in a row carry `X-CodeB-Upstream: port`, or the deadline passes.
pub async fn verify_through_caddy(ctx: &Ctx, hosts: &[String], port: u16) -> Result<(), String> {
    let base = ctx
        .config
        .routing
        .public_http
        .trim_end_matches('/')
        .to_string();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for host in hosts {
        let mut streak = 0;
        let mut last = String::from("no answer yet");
        while streak < SWITCH_VERIFY_CONFIRMATIONS {
            if started.elapsed() > SWITCH_VERIFY_DEADLINE {
                return Err(format!(
                    "Caddy did not route {host} to port {port} within {} s (last: {last})",
                    SWITCH_VERIFY_DEADLINE.as_secs()
                ));
            }
            match client
                .get(format!("{base}/"))
                .header("host", host.as_str())
                .send()
                .await
            {
                Ok(r) => {
                    let upstream = r
                        .headers()
                        .get(UPSTREAM_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    if upstream == port.to_string() && r.status().is_success() {
                        streak += 1;
                        continue;
                    }
                    streak = 0;
                    last = format!("HTTP {} from upstream {:?}", r.status().as_u16(), upstream);
                }
                Err(e) => {
                    streak = 0;
                    last = e.to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Result of slot_cleanup for one environment.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupOutcome {
    /// Project.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Slot emptied.
    pub slot: SlotName,
    /// Container removed.
    pub container: String,
    /// Deployment id, absent in a dry run.
    pub deployment_id: Option<Uuid>,
}

/// slot_cleanup: empties expired grace slots (never the active one) of the
/// caller's team's projects, or of `project`.
pub async fn slot_cleanup(
    ctx: &Ctx,
    project: Option<&str>,
    environment: Option<Environment>,
    dry_run: bool,
    caller: &Caller,
    progress: ProgressTx,
) -> Result<Vec<CleanupOutcome>, OpError> {
    if let Some(p) = project {
        validate_project_name(p).map_err(|e| OpError::Invalid(e.0))?;
    }
    let pool = ctx.db.pool().await?;
    let candidates: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT p.name, s.environment FROM slots s JOIN projects p ON p.id = s.project_id
          WHERE s.state = 'grace' AND s.grace_expires_at <= now() AND p.deleted_at IS NULL
            AND ($1::text IS NULL OR p.name = $1) AND ($2::text IS NULL OR s.environment = $2)
            AND p.team_id = $3
          ORDER BY 1, 2",
    )
    .bind(project)
    .bind(environment.map(Environment::as_str))
    .bind(&caller.team)
    .fetch_all(pool)
    .await
    .map_err(DbError::from)?;
    let mut done = Vec::new();
    for (name, env) in candidates {
        let Some(env) = Environment::parse(&env) else {
            continue;
        };
        let row = observe(ctx, &name, env).await?;
        let mut hosts = env_hostnames(&name, env, &ctx.config.routing.base_domain);
        hosts.extend(env_domains(ctx, row.project_id, env).await?);
        let Some(plan) = plan_cleanup(
            &row.view,
            &hosts,
            &ctx.config.routing.route_zone,
            &ctx.config.routing.preview_domain,
            Utc::now(),
        ) else {
            continue;
        };
        if dry_run {
            done.push(CleanupOutcome {
                project: name,
                environment: env,
                slot: plan.slot,
                container: plan.container,
                deployment_id: None,
            });
            continue;
        }
        let op = match begin(
            ctx,
            "slot_cleanup",
            &name,
            env,
            None,
            None,
            None,
            caller,
            progress.clone(),
            3,
            CancellationToken::new(),
        )
        .await
        {
            Ok(Ok(op)) => op,
            Ok(Err(_)) => continue,
            Err(OpError::Busy { .. }) => continue,
            Err(e) => return Err(e),
        };
        // Re-plan under the lease: the slot may have changed meanwhile.
        let Some(plan) = plan_cleanup(
            &op.row.view,
            &hosts,
            &ctx.config.routing.route_zone,
            &ctx.config.routing.preview_domain,
            Utc::now(),
        ) else {
            op.finish(true, None, None).await?;
            continue;
        };
        let mut changes = plan.changes.clone();
        changes.push(RrsetChange::Delete {
            name: plan.preview_rrset.clone(),
        });
        let applied: Result<(), String> = async {
            patch_routes(&op, "route_without_grace", &changes).await?;
            let cmd = podman::rm_force(&plan.container).map_err(|e| e.0)?;
            op.run_ok("remove_container", &cmd).await?;
            let pool = ctx.db.pool().await.map_err(|e| e.to_string())?;
            slots::slot_set(
                pool,
                op.id,
                op.token,
                op.row.project_id,
                env.as_str(),
                plan.slot.as_str(),
                "empty",
                None,
            )
            .await
            .map_err(|e| e.to_string())
        }
        .await;
        let id = op.id;
        match applied {
            Ok(()) => {
                op.finish(true, None, None).await?;
                done.push(CleanupOutcome {
                    project: name,
                    environment: env,
                    slot: plan.slot,
                    container: plan.container,
                    deployment_id: Some(id),
                });
            }
            Err(e) => {
                op.finish(false, Some(&e), None).await?;
                return Err(OpError::Failed {
                    operation: "slot_cleanup",
                    deployment_id: id,
                    step: "cleanup".into(),
                    message: e,
                    aftermath: "The active slot was not touched.".into(),
                });
            }
        }
    }
    ctx.observer.invalidate();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SwitchPlan {
        SwitchPlan {
            operation: "promote",
            to: SlotName::Green,
            to_port: 4101,
            to_image: None,
            from: Some(SlotName::Blue),
            hosts: vec!["shop.codeb.test".into()],
            changes: Vec::new(),
            to_state: SlotState::Active,
            from_state: Some(SlotState::Grace),
            grace_expires_at: None,
        }
    }

    #[test]
    fn switch_aftermath_says_what_was_left_and_what_to_do() {
        for step in ["route", "switch_route"] {
            let a = switch_aftermath("promote", step, &plan());
            assert!(a.contains("Nothing was switched"), "{a}");
            assert!(a.contains("PowerDNS"), "{a}");
            assert!(a.contains("run promote again"), "{a}");
        }
        let a = switch_aftermath("rollback", "restore_route", &plan());
        assert!(!a.contains("Nothing was switched"), "{a}");
        assert!(
            a.contains("port 4101") && a.contains("run rollback again"),
            "{a}"
        );
        let a = switch_aftermath("promote", "record", &plan());
        assert!(a.contains("Traffic now goes to green"), "{a}");
        let a = switch_aftermath("promote", "probe", &plan());
        assert!(a.contains("Nothing was switched"), "{a}");
    }
}
