//! Critical tools (DESIGN §6): `domain_delete`, `project_delete`,
//! `backup_restore`, and the approval tools `approval_list` / `approve`.
//!
//! A critical call first plans from the live state (`ops::critical`). With
//! `dry_run` that plan is the answer. Otherwise it needs a confirmation the
//! model cannot forge, by the first channel the client offers:
//! 1. legacy clients that declared elicitation: an `elicitation/create`
//!    request answered by the human in the client (type the name to confirm);
//! 2. 2026-07-28 clients that declared elicitation: an input-required result
//!    carrying the same elicitation; `requestState` is the id of a
//!    server-side confirmation row (bound to caller, tool and arguments,
//!    single-use, short-lived), never trusted state;
//! 3. everyone else: a pending approval that an admin key of a *different
//!    principal* (another person or CI system) of the same team must
//!    `approve` within `auth.approval_ttl_secs`.
//!
//! Policy (`auth.approval_required`, DESIGN §6) decides where the human in
//! the requesting client is not enough: a model can answer elicitation in
//! some clients, so for the listed tools and environments (default:
//! production `project_delete` and `backup_restore`) every call becomes a
//! pending approval for a second principal. The environments a call
//! touches come from its plan, so they are bound by the plan hash too.
//!
//! Every path executes with the hash of the plan that was shown; the hash
//! covers the project's row id and team, so a confirmation never carries
//! over to a namesake created later, and the operation recomputes the plan
//! under its lock and refuses when the live state moved since. `approve`
//! also checks that the project is still the one requested (same id, same
//! team) before anything runs.

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::tool::{InputResponses, IntoCallToolResult, RequestState};
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    CallToolResponse, ElicitRequest, ElicitRequestParams, ElicitationAction, ElicitationSchema,
    InputRequest, InputRequiredResult, ProtocolVersion,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::mcp::longop::run_long;
use crate::mcp::CodebServer;
use crate::ops::critical::CriticalPlan;
use crate::ops::lifecycle::{Caller, OpError};
use crate::ops::Ctx;
use crate::state::approvals::{self as rows, ApprovalRow, NewApproval};

/// How long a legacy client's human has to answer the elicitation.
const ELICIT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an input-required confirmation stays answerable.
const CONFIRMATION_TTL: Duration = Duration::from_secs(600);
/// Key of the confirmation in `inputRequests` / `inputResponses`.
const CONFIRM_KEY: &str = "confirm";

/// The plan as shown to callers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanView {
    /// What the operation will do.
    pub summary: String,
    /// SHA-256 of the plan; a confirmation binds to it.
    pub hash: String,
    /// Everything it will touch, as observed now.
    pub details: serde_json::Value,
}

impl From<&CriticalPlan> for PlanView {
    fn from(p: &CriticalPlan) -> Self {
        Self {
            summary: p.summary.clone(),
            hash: p.hash(),
            details: p.details.clone(),
        }
    }
}

impl From<&ApprovalRow> for PlanView {
    /// The plan an approval was requested for, with the hash it binds.
    fn from(r: &ApprovalRow) -> Self {
        Self {
            summary: r.summary.clone(),
            hash: r.plan_hash.clone(),
            details: r.plan.clone(),
        }
    }
}

/// Result of a critical tool or `approve`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CriticalResult {
    /// One line for the reader.
    pub summary: String,
    /// planned, pending_approval, executed, declined, would_execute or stale.
    pub status: String,
    /// The plan shown for confirmation.
    pub plan: Option<PlanView>,
    /// The approval to ask a second admin for (pending_approval).
    pub approval_id: Option<String>,
    /// When that approval expires (RFC 3339).
    pub expires_at: Option<String>,
    /// What the operation did (executed).
    pub outcome: Option<serde_json::Value>,
}

fn respond(r: CriticalResult) -> Result<CallToolResponse, String> {
    Json(r)
        .into_call_tool_result()
        .map_err(|e| format!("result could not be encoded: {}", e.message))
}

/// An error as text; database failures keep their "check health_check"
/// advice (`OpError::Db`).
fn db_err(e: impl Into<OpError>) -> String {
    e.into().to_string()
}

/// A critical call, validated and planned.
pub(crate) struct CriticalCall {
    /// Tool name.
    pub tool: &'static str,
    /// Its arguments without `dry_run` (stored with an approval).
    pub arguments: serde_json::Value,
    /// What the human types to confirm (the project or domain name).
    pub confirm_word: String,
    /// Only plan.
    pub dry_run: bool,
}

/// The backup id of stored backup_restore arguments.
fn backup_id(args: &serde_json::Value) -> Result<Uuid, OpError> {
    args.get("backup_id")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| {
            OpError::Invalid(
                "backup_id is not a UUID; backup_list shows the project's backups".into(),
            )
        })
}

/// The live plan of a critical call.
pub(crate) async fn plan_for(
    ctx: &Ctx,
    tool: &str,
    args: &serde_json::Value,
) -> Result<CriticalPlan, OpError> {
    let s = |k: &str| args.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    match tool {
        "domain_delete" => {
            crate::ops::domain_delete::domain_delete_plan(ctx, s("project"), s("domain")).await
        }
        "project_delete" => {
            crate::ops::project_delete::project_delete_plan(ctx, s("project")).await
        }
        "backup_restore" => {
            crate::ops::restore::backup_restore_plan(ctx, s("project"), backup_id(args)?).await
        }
        other => Err(OpError::Invalid(format!("{other} is not a critical tool"))),
    }
}

/// Runs a confirmed critical call with the hash of the plan that was
/// confirmed; the outcome as JSON with its summary.
pub(crate) async fn execute(
    ctx: Arc<Ctx>,
    caller: Caller,
    tool: String,
    args: serde_json::Value,
    approved_hash: String,
    context: &RequestContext<RoleServer>,
) -> Result<(String, serde_json::Value), OpError> {
    run_long(context, move |progress, _abort| async move {
        let s = |k: &str| {
            args.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let value = match tool.as_str() {
            "domain_delete" => serde_json::to_value(
                crate::ops::domain_delete::domain_delete(
                    &ctx,
                    &s("project"),
                    &s("domain"),
                    &approved_hash,
                    &caller,
                    progress,
                )
                .await?,
            ),
            "project_delete" => serde_json::to_value(
                crate::ops::project_delete::project_delete(
                    &ctx,
                    &s("project"),
                    &approved_hash,
                    &caller,
                    progress,
                )
                .await?,
            ),
            "backup_restore" => serde_json::to_value(
                crate::ops::restore::backup_restore(
                    &ctx,
                    &s("project"),
                    backup_id(&args)?,
                    &approved_hash,
                    &caller,
                    progress,
                )
                .await?,
            ),
            other => return Err(OpError::Invalid(format!("{other} is not a critical tool"))),
        }
        .map_err(|e| OpError::Refused(format!("result could not be encoded: {e}")))?;
        let summary = value
            .get("summary")
            .and_then(|v| v.as_str())
            .unwrap_or("done")
            .to_string();
        Ok((summary, value))
    })
    .await
}

/// Records a pending request of `kind` for `plan`, bound to the caller's
/// key, the tool and its arguments.
async fn insert_request(
    ctx: &Ctx,
    kind: &str,
    ttl: Duration,
    caller: &Caller,
    call: &CriticalCall,
    plan: &CriticalPlan,
) -> Result<ApprovalRow, String> {
    let pool = ctx.db.pool().await.map_err(db_err)?;
    rows::approval_insert(
        pool,
        &NewApproval {
            id: Uuid::new_v4(),
            kind,
            team: &caller.team,
            tool: call.tool,
            project: &plan.project,
            project_id: plan.project_id,
            arguments: &call.arguments,
            plan_hash: &plan.hash(),
            summary: &plan.summary,
            plan: &plan.details,
            requested_by: caller.key_id,
            requested_principal: &caller.principal,
            requester: &caller.holder,
            ttl,
        },
    )
    .await
    .map_err(db_err)
}

/// How this request can be confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// elicitation/create to a legacy client.
    Elicit,
    /// input-required result to a 2026-07-28 client.
    InputRequired,
    /// A pending approval for an admin key of a second principal.
    Approval,
}

fn channel(context: &RequestContext<RoleServer>) -> Channel {
    let modern = context
        .protocol_version()
        .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
    let form = context
        .client_capabilities()
        .and_then(|c| c.elicitation)
        .is_some_and(|e| e.form.is_some() || e.url.is_none());
    match (form, modern) {
        (false, _) => Channel::Approval,
        (true, true) => Channel::InputRequired,
        (true, false) => Channel::Elicit,
    }
}

/// The form the human answers: type the name to confirm.
fn confirmation_request(plan: &CriticalPlan, word: &str) -> ElicitRequestParams {
    let schema = ElicitationSchema::from_json_schema(
        serde_json::json!({
            "type": "object",
            "properties": {
                CONFIRM_KEY: {
                    "type": "string",
                    "title": format!("Type {word} to confirm"),
                    "description": "Anything else cancels; nothing is changed."
                }
            },
            "required": [CONFIRM_KEY]
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    )
    .unwrap_or_else(|_| ElicitationSchema::builder().build().expect("empty schema"));
    ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: format!(
            "codeb asks you (not the assistant) to confirm a critical operation: {}. Plan {}. This cannot be undone by codeb.",
            plan.summary,
            &plan.hash()[..12]
        ),
        requested_schema: schema,
    }
}

/// The human's answer: Ok(true) accepted with the right word, Ok(false)
/// declined or cancelled, Err(text) accepted with something else.
fn judge(
    action: &ElicitationAction,
    content: Option<&serde_json::Value>,
    word: &str,
) -> Result<bool, String> {
    match action {
        ElicitationAction::Accept => {
            let typed = content
                .and_then(|c| c.get(CONFIRM_KEY))
                .and_then(|v| v.as_str())
                .map(str::trim);
            if typed == Some(word) {
                Ok(true)
            } else {
                Err(format!(
                    "the confirmation typed was not {word:?}; nothing was changed. Call again to be asked again"
                ))
            }
        }
        _ => Ok(false),
    }
}

fn declined(tool: &str, project: &str, plan: PlanView) -> CriticalResult {
    CriticalResult {
        summary: format!("{tool} of {project} declined by the user; nothing was changed"),
        status: "declined".into(),
        plan: Some(plan),
        approval_id: None,
        expires_at: None,
        outcome: None,
    }
}

fn executed(plan: PlanView, summary: String, outcome: serde_json::Value) -> CriticalResult {
    CriticalResult {
        summary,
        status: "executed".into(),
        plan: Some(plan),
        approval_id: None,
        expires_at: None,
        outcome: Some(outcome),
    }
}

/// Whether `caller` is the very key (or keyless local operator) that made
/// the request: a confirmation is answered only by its requester.
fn same_key(row: &ApprovalRow, caller: &Caller) -> bool {
    match (row.requested_by, caller.key_id) {
        (Some(a), Some(b)) => a == b,
        (None, None) => row.requested_principal == caller.principal,
        _ => false,
    }
}

/// Why `caller` may not approve `row`: it is the requesting key, or
/// another key of the requesting principal (one person, two keys).
fn not_a_second_principal(row: &ApprovalRow, caller: &Caller) -> Option<String> {
    let id = row.id;
    if same_key(row, caller) {
        Some(format!(
            "approval {id} was requested with this same key ({}); an admin key of a different principal (another person) of team {} must approve it",
            row.requested_principal, caller.team
        ))
    } else if row.requester == caller.holder {
        let legacy = if caller.holder == crate::mcp::keys::LEGACY_PRINCIPAL {
            " (keys made before principals existed all count as one person: an owner mints keys of your own principal with key_create)"
        } else {
            ""
        };
        Some(format!(
            "approval {id} was requested by principal {}, and this key belongs to {} too{legacy}: nobody approves their own request, whichever key they use. An admin key of a different principal (another person) of team {} must approve it",
            row.requester, caller.holder, caller.team
        ))
    } else {
        None
    }
}

/// Why `row` no longer applies to the project of that name, if it does
/// not: the project was deleted (and perhaps created again, by this team
/// or another) since it was requested. Another team's project answers like
/// a missing one.
async fn binding_problem(pool: &sqlx::PgPool, row: &ApprovalRow) -> Result<Option<String>, String> {
    let live = crate::state::projects::project_by_name(pool, &row.project)
        .await
        .map_err(db_err)?;
    let (tool, project) = (&row.tool, &row.project);
    Ok(match (live, row.project_id) {
        (Some(p), Some(id)) if p.id == id && p.team_id == row.team_id => None,
        (Some(p), Some(_)) if p.team_id == row.team_id => Some(format!(
            "project {project} was deleted and created again since this {tool} was requested: \
             it is another project now, and a confirmation of the old one never applies to it. \
             Nothing was changed; call {tool} again to see the current plan"
        )),
        _ => Some(format!(
            "project {project} of this {tool} request no longer exists (deleted since it was \
             requested); nothing was changed"
        )),
    })
}

impl CodebServer {
    /// Plans a critical call and confirms it by the client's channel.
    pub(crate) async fn run_critical(
        &self,
        context: RequestContext<RoleServer>,
        state: Option<String>,
        responses: Option<rmcp::model::InputResponses>,
        call: CriticalCall,
    ) -> Result<CallToolResponse, String> {
        let ctx = self.ctx_arc();
        let caller = self.caller();
        if let Some(state) = state {
            return self
                .resume_confirmation(&context, &caller, &call, &state, responses)
                .await;
        }
        let plan = plan_for(&ctx, call.tool, &call.arguments)
            .await
            .map_err(db_err)?;
        let second_principal = ctx
            .config
            .auth
            .approval_required
            .second_principal_for(call.tool, &plan.environments);
        if call.dry_run {
            return respond(CriticalResult {
                summary: format!(
                    "dry run: {}; nothing changed. Without dry_run this needs {}",
                    plan.summary,
                    match second_principal {
                        Some(env) => format!(
                            "approval by a second person (auth.approval_required: {} in {env})",
                            call.tool
                        ),
                        None => "a confirmation by a human or a second person".to_string(),
                    }
                ),
                status: "planned".into(),
                plan: Some(PlanView::from(&plan)),
                approval_id: None,
                expires_at: None,
                outcome: None,
            });
        }
        if let Some(env) = second_principal {
            // The human's answer in this client does not count here: it
            // may be the model answering.
            let why = format!(
                "policy auth.approval_required: {} touching {env} needs a second person; a confirmation in your own client does not count here",
                call.tool
            );
            return self
                .request_approval(&caller, &call, &plan, Some(why))
                .await;
        }
        match channel(&context) {
            Channel::Elicit => {
                let answer = context
                    .peer
                    .create_elicitation_with_timeout(
                        confirmation_request(&plan, &call.confirm_word),
                        Some(ELICIT_TIMEOUT),
                    )
                    .await;
                let answer = match answer {
                    Ok(a) => a,
                    // The client could not ask (no answer in time, or it
                    // failed the request): a second admin decides instead.
                    Err(e) => {
                        let why = format!("the client could not ask the user ({e})");
                        return self
                            .request_approval(&caller, &call, &plan, Some(why))
                            .await;
                    }
                };
                if !judge(&answer.action, answer.content.as_ref(), &call.confirm_word)? {
                    return respond(declined(call.tool, &plan.project, PlanView::from(&plan)));
                }
                let (summary, outcome) = execute(
                    ctx.clone(),
                    caller,
                    call.tool.to_string(),
                    call.arguments.clone(),
                    plan.hash(),
                    &context,
                )
                .await
                .map_err(db_err)?;
                if call.tool == "project_delete" {
                    self.project_teams.forget(&plan.project);
                }
                respond(executed(PlanView::from(&plan), summary, outcome))
            }
            Channel::InputRequired => {
                let row = insert_request(
                    self.ctx(),
                    rows::KIND_CONFIRMATION,
                    CONFIRMATION_TTL,
                    &caller,
                    &call,
                    &plan,
                )
                .await?;
                let mut requests = rmcp::model::InputRequests::new();
                requests.insert(
                    CONFIRM_KEY.to_string(),
                    InputRequest::Elicitation(ElicitRequest::new(confirmation_request(
                        &plan,
                        &call.confirm_word,
                    ))),
                );
                Ok(CallToolResponse::InputRequired(InputRequiredResult::new(
                    Some(requests),
                    Some(row.id.to_string()),
                )))
            }
            Channel::Approval => self.request_approval(&caller, &call, &plan, None).await,
        }
    }

    /// Records a pending approval for an admin key of a second principal
    /// and says so.
    async fn request_approval(
        &self,
        caller: &Caller,
        call: &CriticalCall,
        plan: &CriticalPlan,
        why: Option<String>,
    ) -> Result<CallToolResponse, String> {
        let ctx = self.ctx();
        let ttl = Duration::from_secs(ctx.config.auth.approval_ttl_secs);
        let row = insert_request(ctx, rows::KIND_APPROVAL, ttl, caller, call, plan).await?;
        tracing::info!(approval = %row.id, tool = call.tool, project = %plan.project, by = %caller.principal, "approval requested");
        respond(CriticalResult {
            summary: format!(
                "{}not done yet: {} needs approval by a second person — an admin of team {} other than principal {} calls approve with approval_id {} before {}. Nothing was changed",
                why.map(|w| format!("{w}; ")).unwrap_or_default(),
                call.tool,
                caller.team,
                caller.holder,
                row.id,
                row.expires_at.to_rfc3339()
            ),
            status: "pending_approval".into(),
            plan: Some(PlanView::from(plan)),
            approval_id: Some(row.id.to_string()),
            expires_at: Some(row.expires_at.to_rfc3339()),
            outcome: None,
        })
    }

    /// The second round of an input-required confirmation.
    async fn resume_confirmation(
        &self,
        context: &RequestContext<RoleServer>,
        caller: &Caller,
        call: &CriticalCall,
        state: &str,
        responses: Option<rmcp::model::InputResponses>,
    ) -> Result<CallToolResponse, String> {
        let ctx = self.ctx_arc();
        let unknown = || {
            format!(
                "this confirmation is unknown, expired or already used; nothing was changed. Call {} again without requestState",
                call.tool
            )
        };
        let id = Uuid::parse_str(state).map_err(|_| unknown())?;
        let pool = ctx.db.pool().await.map_err(db_err)?;
        let row = rows::approval_get(pool, id, &caller.team)
            .await
            .map_err(db_err)?
            .filter(|r| {
                r.kind == rows::KIND_CONFIRMATION
                    && r.tool == call.tool
                    && r.arguments == call.arguments
                    && same_key(r, caller)
            })
            .ok_or_else(unknown)?;
        let answer = responses
            .as_ref()
            .and_then(|r| r.get(CONFIRM_KEY))
            .cloned()
            .and_then(|v| serde_json::from_value::<rmcp::model::ElicitResult>(v).ok())
            .ok_or_else(|| {
                "the retry carries no answer to the confirmation request; nothing was changed"
                    .to_string()
            })?;
        let by = format!(
            "{} (user of {})",
            caller.principal,
            context
                .client_info()
                .map(|i| i.name)
                .unwrap_or_else(|| "the client".into())
        );
        match judge(&answer.action, answer.content.as_ref(), &call.confirm_word) {
            Ok(true) => {}
            Ok(false) => {
                rows::approval_decline(pool, id, &by)
                    .await
                    .map_err(db_err)?;
                return respond(declined(call.tool, &row.project, PlanView::from(&row)));
            }
            Err(e) => {
                let _ = rows::approval_decline(pool, id, &by).await;
                return Err(e);
            }
        }
        if let Some(problem) = binding_problem(pool, &row).await? {
            let _ = rows::approval_refuse(pool, id, &problem).await;
            return Err(problem);
        }
        let decider = rows::Decider {
            key: None,
            recorded_as: &by,
            principal: &caller.holder,
        };
        let row = rows::approval_claim(pool, id, rows::KIND_CONFIRMATION, &decider)
            .await
            .map_err(db_err)?
            .ok_or_else(unknown)?;
        self.execute_claimed(context, caller.clone(), row).await
    }

    /// Executes a claimed approval or confirmation and records its end.
    async fn execute_claimed(
        &self,
        context: &RequestContext<RoleServer>,
        caller: Caller,
        row: ApprovalRow,
    ) -> Result<CallToolResponse, String> {
        let ctx = self.ctx_arc();
        // The approved operation's outputs are its project's (ops::redact).
        let r = crate::ops::redact::in_scope(
            crate::ops::redact::OwnedScope::project(&row.project),
            execute(
                ctx.clone(),
                caller,
                row.tool.clone(),
                row.arguments.clone(),
                row.plan_hash.clone(),
                context,
            ),
        )
        .await;
        let pool = ctx.db.pool().await.map_err(db_err)?;
        match r {
            Ok((summary, outcome)) => {
                if row.tool == "project_delete" {
                    self.project_teams.forget(&row.project);
                }
                let _ = rows::approval_finish(pool, row.id, "executed", None, Some(&outcome)).await;
                let mut result = executed(PlanView::from(&row), summary, outcome);
                result.approval_id = Some(row.id.to_string());
                respond(result)
            }
            Err(e @ OpError::Busy { .. }) => {
                // Nothing ran: the approval stays usable.
                let _ = rows::approval_release(pool, row.id).await;
                Err(if row.kind == rows::KIND_APPROVAL {
                    format!(
                        "{e}. Approval {} is still pending: approve it again once that operation has finished",
                        row.id
                    )
                } else {
                    format!("{e}. The confirmation is still valid: retry once that operation has finished")
                })
            }
            Err(e) => {
                let status = if matches!(e, OpError::Refused(_)) {
                    "refused"
                } else {
                    "failed"
                };
                let text = crate::ops::redact::redact_in(
                    crate::ops::redact::Scope::Project(&row.project),
                    &e.to_string(),
                );
                let _ = rows::approval_finish(pool, row.id, status, Some(&text), None).await;
                Err(text)
            }
        }
    }
}

/// Input of project_delete.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectDeleteParams {
    /// Project name.
    pub project: String,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// Input of backup_restore.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRestoreParams {
    /// Project name.
    pub project: String,
    /// Backup id (backup_list).
    pub backup_id: String,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// Input of domain_delete.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainDeleteParams {
    /// Project name.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// Input of approval_list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalListParams {
    /// Also decided ones.
    #[serde(default)]
    pub all: bool,
    /// Per page, 1-100 (default 20).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One approval request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalInfo {
    /// Approval id (approve takes it).
    pub id: String,
    /// The critical tool.
    pub tool: String,
    /// Project.
    pub project: String,
    /// Its arguments.
    pub arguments: serde_json::Value,
    /// pending, executed, failed, refused, expired.
    pub status: String,
    /// The plan it approves.
    pub plan: PlanView,
    /// Who asked: principal (key).
    pub requested_by: String,
    /// Who approved: principal (key).
    pub approved_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Why it failed or was refused.
    pub error: Option<String>,
}

/// Result of approval_list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalListResult {
    /// One line for the reader.
    pub summary: String,
    /// Newest first.
    pub approvals: Vec<ApprovalInfo>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// Input of approve.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveParams {
    /// Approval id (approval_list).
    pub approval_id: String,
    /// Only check whether it could run now.
    #[serde(default)]
    pub dry_run: bool,
}

#[tool_router(router = critical_router, vis = "pub(crate)")]
impl CodebServer {
    /// Critical: remove a domain's route and A/AAAA records; confirmed by the user or a second admin (approve).
    #[tool(
        name = "domain_delete",
        title = "Delete a domain",
        output_schema = rmcp::handler::server::common::schema_for_output::<CriticalResult>(),
        annotations(
            title = "Delete a domain",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn domain_delete(
        &self,
        Parameters(p): Parameters<DomainDeleteParams>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, String> {
        let domain = crate::model::normalize_domain(&p.domain, false).map_err(|e| e.0)?;
        crate::model::validate_project_name(&p.project).map_err(|e| e.0)?;
        self.run_critical(
            context,
            state,
            responses,
            CriticalCall {
                tool: "domain_delete",
                arguments: serde_json::json!({"project": p.project, "domain": domain}),
                confirm_word: domain.clone(),
                dry_run: p.dry_run,
            },
        )
        .await
    }

    /// Critical: delete a project's containers, routes, domains, env, databases and Redis data (backups kept); confirmed by the user or a second admin.
    #[tool(
        name = "project_delete",
        title = "Delete a project",
        output_schema = rmcp::handler::server::common::schema_for_output::<CriticalResult>(),
        annotations(
            title = "Delete a project",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn project_delete(
        &self,
        Parameters(p): Parameters<ProjectDeleteParams>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, String> {
        crate::model::validate_project_name(&p.project).map_err(|e| e.0)?;
        self.run_critical(
            context,
            state,
            responses,
            CriticalCall {
                tool: "project_delete",
                arguments: serde_json::json!({"project": p.project}),
                confirm_word: p.project.clone(),
                dry_run: p.dry_run,
            },
        )
        .await
    }

    /// Critical: replace an environment's database with a backup and report row counts; confirmed by the user or a second admin.
    #[tool(
        name = "backup_restore",
        title = "Restore a backup",
        output_schema = rmcp::handler::server::common::schema_for_output::<CriticalResult>(),
        annotations(
            title = "Restore a backup",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn backup_restore(
        &self,
        Parameters(p): Parameters<BackupRestoreParams>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, String> {
        crate::model::validate_project_name(&p.project).map_err(|e| e.0)?;
        let id = Uuid::parse_str(p.backup_id.trim()).map_err(|_| {
            "backup_id is not a UUID; backup_list shows the project's backups".to_string()
        })?;
        self.run_critical(
            context,
            state,
            responses,
            CriticalCall {
                tool: "backup_restore",
                arguments: serde_json::json!({"project": p.project, "backup_id": id.to_string()}),
                confirm_word: p.project.clone(),
                dry_run: p.dry_run,
            },
        )
        .await
    }

    /// Your team's pending approvals of critical operations, with plans.
    #[tool(
        name = "approval_list",
        title = "List approvals",
        annotations(
            title = "List approvals",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn approval_list(
        &self,
        Parameters(p): Parameters<ApprovalListParams>,
    ) -> Result<Json<ApprovalListResult>, String> {
        let caller = self.caller();
        let limit = crate::mcp::page_limit(p.limit, 20)?;
        let after = match p.cursor.as_deref() {
            None => None,
            Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
                "cursor is not one this server issued; omit it to start again".to_string()
            })?),
        };
        let pool = self.ctx().db.pool().await.map_err(db_err)?;
        rows::approvals_expire(pool, &caller.team)
            .await
            .map_err(db_err)?;
        let mut page = rows::approvals_page(pool, &caller.team, p.all, after, i64::from(limit) + 1)
            .await
            .map_err(db_err)?;
        let next_cursor = crate::mcp::take_page(&mut page, limit, |r| r.id.to_string());
        let approvals: Vec<ApprovalInfo> = page
            .into_iter()
            .map(|r| ApprovalInfo {
                id: r.id.to_string(),
                plan: PlanView::from(&r),
                tool: r.tool,
                project: r.project,
                arguments: r.arguments,
                status: r.status,
                requested_by: format!("{} ({})", r.requester, r.requested_principal),
                approved_by: r.approved_principal.map(|a| match &r.approver {
                    Some(who) => format!("{who} ({a})"),
                    None => a,
                }),
                created_at: r.created_at.to_rfc3339(),
                expires_at: r.expires_at.to_rfc3339(),
                error: r.error,
            })
            .collect();
        let pending = approvals.iter().filter(|a| a.status == "pending").count();
        Ok(Json(ApprovalListResult {
            summary: format!(
                "{} approval(s) of team {} ({pending} pending){}",
                approvals.len(),
                caller.team,
                if pending > 0 {
                    "; an admin of another principal than the requester runs one with approve"
                } else {
                    ""
                }
            ),
            approvals,
            next_cursor,
        }))
    }

    /// Run a pending critical operation of your team as a second person (not the requester): once, before expiry, while its plan matches.
    #[tool(
        name = "approve",
        title = "Approve a critical operation",
        output_schema = rmcp::handler::server::common::schema_for_output::<CriticalResult>(),
        annotations(
            title = "Approve a critical operation",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn approve(
        &self,
        Parameters(p): Parameters<ApproveParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, String> {
        let caller = self.caller();
        let id = Uuid::parse_str(p.approval_id.trim()).map_err(|_| {
            "approval_id is not a UUID; approval_list shows your team's pending approvals"
                .to_string()
        })?;
        let not_found = || {
            format!("approval {id} not found; approval_list shows your team's pending approvals")
        };
        let ctx = self.ctx_arc();
        let pool = ctx.db.pool().await.map_err(db_err)?;
        rows::approvals_expire(pool, &caller.team)
            .await
            .map_err(db_err)?;
        let row = rows::approval_get(pool, id, &caller.team)
            .await
            .map_err(db_err)?
            .filter(|r| r.kind == rows::KIND_APPROVAL)
            .ok_or_else(not_found)?;
        if row.status != "pending" {
            return Err(match row.status.as_str() {
                "expired" => format!(
                    "approval {id} expired at {}; nothing was changed. Ask for a new one (call {} again)",
                    row.expires_at.to_rfc3339(),
                    row.tool
                ),
                status => format!(
                    "approval {id} was already used ({status}{}); an approval runs at most once. Call {} again for a new one",
                    row.approved_principal
                        .as_deref()
                        .map(|p| format!(" by {p}"))
                        .unwrap_or_default(),
                    row.tool
                ),
            });
        }
        if let Some(refusal) = not_a_second_principal(&row, &caller) {
            return Err(refusal);
        }
        // The project must still be the one requested (finding 7): checked
        // here in words, and again by the plan hash under the lock.
        let binding = binding_problem(pool, &row).await?;
        if p.dry_run {
            let live = match &binding {
                Some(problem) => Err(OpError::Refused(problem.clone())),
                None => plan_for(&ctx, &row.tool, &row.arguments).await,
            };
            let matches = live.as_ref().is_ok_and(|l| l.hash() == row.plan_hash);
            return respond(CriticalResult {
                summary: if matches {
                    format!(
                        "dry run: approving {id} would now run {} on {}: {}",
                        row.tool, row.project, row.summary
                    )
                } else {
                    format!(
                        "dry run: approving {id} would be refused: the live state no longer matches its plan ({})",
                        match &live {
                            Ok(_) => "it changed".to_string(),
                            Err(e) => e.to_string(),
                        }
                    )
                },
                status: if matches { "would_execute" } else { "stale" }.into(),
                plan: Some(PlanView::from(&row)),
                approval_id: Some(id.to_string()),
                expires_at: Some(row.expires_at.to_rfc3339()),
                outcome: None,
            });
        }
        if let Some(problem) = binding {
            rows::approval_refuse(pool, id, &problem)
                .await
                .map_err(db_err)?;
            return Err(problem);
        }
        let decider = rows::Decider {
            key: caller.key_id,
            recorded_as: &caller.principal,
            principal: &caller.holder,
        };
        let row = rows::approval_claim(pool, id, rows::KIND_APPROVAL, &decider)
            .await
            .map_err(db_err)?
            .ok_or_else(|| {
                format!("approval {id} was used or expired just now; an approval runs at most once")
            })?;
        tracing::info!(approval = %id, tool = %row.tool, project = %row.project, by = %caller.principal, "approval granted");
        // The operation records both: who asked and who approved.
        let actor = Caller {
            principal: format!(
                "{} (approved by {})",
                row.requested_principal, caller.principal
            ),
            ..caller
        };
        self.execute_claimed(&context, actor, row).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pending approval requested with key `requested_by` (None: the
    /// local operator) by principal `requester`.
    fn row(requested_by: Option<Uuid>, requester: &str) -> ApprovalRow {
        ApprovalRow {
            id: Uuid::new_v4(),
            kind: rows::KIND_APPROVAL.into(),
            team_id: "default".into(),
            tool: "domain_delete".into(),
            project: "shop".into(),
            project_id: Some(1),
            arguments: serde_json::json!({}),
            plan_hash: "h".into(),
            summary: String::new(),
            plan: serde_json::json!({}),
            requested_by,
            requested_principal: requested_by
                .map_or_else(|| "local".to_string(), |k| format!("key:{k}")),
            requester: requester.into(),
            approved_by: None,
            approved_principal: None,
            approver: None,
            status: "pending".into(),
            created_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            decided_at: None,
            executed_at: None,
            error: None,
            result: None,
        }
    }

    #[test]
    fn only_another_principal_counts_as_the_second_person() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let caller = |key: Option<Uuid>, holder: &str| Caller {
            principal: key.map_or_else(|| "local".to_string(), |k| format!("key:{k}")),
            holder: holder.into(),
            key_id: key,
            ..Caller::local_owner()
        };
        // The same key, whatever principal it claims.
        assert!(not_a_second_principal(&row(Some(a), "alice"), &caller(Some(a), "bob")).is_some());
        // Another key of the same person: still one person (finding 4).
        let refusal = not_a_second_principal(&row(Some(a), "alice"), &caller(Some(b), "alice"))
            .expect("refused");
        assert!(refusal.contains("principal alice"), "{refusal}");
        // Another key of another person.
        assert!(not_a_second_principal(&row(Some(a), "alice"), &caller(Some(b), "bob")).is_none());
        // The local operator approving its own request, with or without a
        // key minted for it (principal `local`), is the same person.
        assert!(not_a_second_principal(&row(None, "local"), &caller(None, "local")).is_some());
        assert!(not_a_second_principal(&row(None, "local"), &caller(Some(b), "local")).is_some());
        assert!(not_a_second_principal(&row(None, "local"), &caller(Some(b), "bob")).is_none());
        // Keys made before principals are all one person.
        assert!(
            not_a_second_principal(&row(Some(a), "legacy"), &caller(Some(b), "legacy")).is_some()
        );
        // A confirmation belongs to the very key that asked.
        assert!(same_key(&row(Some(a), "alice"), &caller(Some(a), "alice")));
        assert!(!same_key(&row(Some(a), "alice"), &caller(Some(b), "alice")));
        assert!(!same_key(&row(Some(a), "x"), &caller(None, "x")));
    }

    #[test]
    fn only_the_exact_word_accepted_confirms() {
        let ok = serde_json::json!({"confirm": " shop "});
        assert_eq!(
            judge(&ElicitationAction::Accept, Some(&ok), "shop"),
            Ok(true)
        );
        for bad in [
            serde_json::json!({"confirm": "Shop"}),
            serde_json::json!({"confirm": "shop2"}),
            serde_json::json!({"confirm": true}),
            serde_json::json!({}),
        ] {
            assert!(judge(&ElicitationAction::Accept, Some(&bad), "shop").is_err());
        }
        assert!(judge(&ElicitationAction::Accept, None, "shop").is_err());
        assert_eq!(
            judge(&ElicitationAction::Decline, Some(&ok), "shop"),
            Ok(false)
        );
        assert_eq!(judge(&ElicitationAction::Cancel, None, "shop"), Ok(false));
    }

    #[test]
    fn the_confirmation_form_names_the_plan_and_the_word() {
        let plan = CriticalPlan {
            tool: "project_delete",
            project: "shop".into(),
            project_id: 1,
            team: "default".into(),
            environments: vec![],
            summary: "delete project shop".into(),
            details: serde_json::json!({"x": 1}),
        };
        let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = confirmation_request(&plan, "shop")
        else {
            panic!("a form")
        };
        assert!(message.contains("delete project shop"));
        assert!(message.contains(&plan.hash()[..12]));
        let schema = serde_json::to_value(&requested_schema).unwrap();
        assert_eq!(schema["required"], serde_json::json!([CONFIRM_KEY]));
        assert!(schema["properties"][CONFIRM_KEY]["title"]
            .as_str()
            .unwrap()
            .contains("shop"));
    }
}
