//! The MCP server: one file per tool (file name = tool name), handlers stay
//! thin and call `ops`. This module wires them into one `ServerHandler`.

// `logging/setLevel` is deprecated for 2026-07-28 (SEP-2577) but still part
// of 2025-06-18 and 2025-11-25, which codeb serves too.
#![allow(deprecated)]

pub mod audit_query;
pub mod backup_create;
pub mod backup_list;
pub mod compact;
pub mod critical;
pub mod deploy;
pub mod deployment_list;
pub mod domain_list;
pub mod domain_setup;
pub mod drift_report;
pub mod env;
pub mod health_check;
pub mod http;
pub mod keys;
pub mod logs;
pub mod longop;
pub mod project_create;
pub mod project_list;
pub mod promote;
pub mod prompts;
pub mod resources;
pub mod rollback;
pub mod slot_cleanup;
pub mod slot_status;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, CompletionInfo,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
    PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Reference, ServerCapabilities, ServerConfig, SetLevelRequestParams, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::auth::KeyVerifier;
use crate::ops::lifecycle::Caller;
use crate::ops::Ctx;

tokio::task_local! {
    /// The authenticated caller of the tool call being handled (set by
    /// `call_tool` around the handler; see `CodebServer::caller`).
    static CALLER: Caller;
}

/// A list tool's page size: `limit` or `default`, 1-100.
pub(crate) fn page_limit(limit: Option<u32>, default: u32) -> Result<u32, String> {
    let limit = limit.unwrap_or(default);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!("limit must be between 1 and 100, got {limit}"))
    }
}

/// Cuts `rows` (fetched with `limit + 1`) to `limit` and returns the cursor
/// of the next page: the key of the last row kept, when more rows exist.
pub(crate) fn take_page<T>(
    rows: &mut Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> String,
) -> Option<String> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if more {
        rows.last().map(key)
    } else {
        None
    }
}

/// Protocol versions codeb implements (DESIGN §5): both eras.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2026_07_28,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2025_06_18,
];

/// Text shown to the model at initialization.
pub const INSTRUCTIONS: &str = "codeb deploys projects blue-green on a four-server fleet. \
Start with health_check and project_list; slot_status shows what runs where. \
Every result carries a `summary`; errors say what to do next.";

/// The MCP server. Cheap to clone: the HTTP transport builds one per session
/// from shared state.
#[derive(Clone)]
pub struct CodebServer {
    ctx: Arc<Ctx>,
    tools: Arc<ToolRouter<CodebServer>>,
    /// Log level the client asked for (`logging/setLevel`), per session.
    log_level: Arc<std::sync::Mutex<Option<LoggingLevel>>>,
    /// The caller when a request carries none: the local operator (stdio,
    /// CLI) or the `CODEB_API_KEY` caller; None over HTTP, where every
    /// request carries the caller its key authenticated.
    default_caller: Option<Arc<Caller>>,
    /// The `CODEB_API_KEY` a stdio server acts with: verified again on
    /// every call, so a revoked or expired key stops working at once.
    stdio_key: Option<Arc<crate::auth::PresentedKey>>,
    /// Shared key verification (HTTP middleware and key tools).
    verifier: Arc<KeyVerifier>,
    /// Project name -> owning team, briefly cached (team scoping).
    pub(crate) project_teams: Arc<crate::mcp::keys::TeamCache>,
}

impl CodebServer {
    /// A server over shared context.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self::with_router(ctx, Arc::new(Self::all_tools()))
    }

    /// Shares the tool router of another instance (per-session construction).
    pub fn with_router(ctx: Arc<Ctx>, tools: Arc<ToolRouter<CodebServer>>) -> Self {
        let verifier = Arc::new(KeyVerifier::new(
            ctx.db.clone(),
            ctx.config.auth.unknown_key_lookups_per_minute,
        ));
        Self {
            ctx,
            tools,
            log_level: Arc::new(std::sync::Mutex::new(None)),
            default_caller: Some(Arc::new(Caller::local_owner())),
            stdio_key: None,
            verifier,
            project_teams: Arc::default(),
        }
    }

    /// This server acting for `caller` when a request carries none (stdio
    /// with `CODEB_API_KEY`), or for nobody (HTTP: None).
    pub fn with_default_caller(mut self, caller: Option<Caller>) -> Self {
        self.default_caller = caller.map(Arc::new);
        self
    }

    /// This (stdio) server acting with `key`, already verified as `caller`;
    /// every call verifies the key again.
    pub fn with_stdio_key(mut self, key: String, caller: Caller) -> Self {
        self.default_caller = Some(Arc::new(caller));
        self.stdio_key = Some(Arc::new(crate::auth::PresentedKey::new(key)));
        self
    }

    /// A server for one more HTTP session: shares router, key verifier and
    /// caches, has its own log level.
    pub fn session(&self) -> Self {
        Self {
            log_level: Arc::new(std::sync::Mutex::new(None)),
            ..self.clone()
        }
    }

    /// The shared key verifier.
    pub fn verifier(&self) -> Arc<KeyVerifier> {
        self.verifier.clone()
    }

    /// Every tool of codeb.
    pub fn all_tools() -> ToolRouter<CodebServer> {
        let mut compacted = ToolRouter::new();
        for mut route in Self::tool_routes() {
            compact::compact_tool(&mut route.attr);
            compacted.add_route(route);
        }
        compacted
    }

    fn tool_routes() -> ToolRouter<CodebServer> {
        Self::health_check_router()
            + Self::project_list_router()
            + Self::slot_status_router()
            + Self::drift_report_router()
            + Self::project_create_router()
            + Self::deploy_router()
            + Self::promote_router()
            + Self::rollback_router()
            + Self::slot_cleanup_router()
            + Self::deployment_list_router()
            + Self::logs_router()
            + Self::env_router()
            + Self::backup_create_router()
            + Self::backup_list_router()
            + Self::domain_setup_router()
            + Self::domain_list_router()
            + Self::keys_router()
            + Self::audit_query_router()
            + Self::critical_router()
    }

    /// The router, for sharing between sessions.
    pub fn router(&self) -> Arc<ToolRouter<CodebServer>> {
        self.tools.clone()
    }

    /// Tool definitions sorted by name (schema snapshots, `tools/list`).
    pub fn tool_definitions() -> Vec<Tool> {
        Self::all_tools().list_all()
    }

    /// The shared context.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// The shared context, owned (for operations that run in their own task).
    pub fn ctx_arc(&self) -> Arc<Ctx> {
        self.ctx.clone()
    }

    /// Who is calling: the caller `call_tool` authenticated for this call,
    /// else the server's default (local operator or `CODEB_API_KEY`), else
    /// an unauthenticated viewer of no team (sees nothing).
    pub fn caller(&self) -> Caller {
        CALLER
            .try_with(Clone::clone)
            .ok()
            .or_else(|| self.default_caller.as_deref().cloned())
            .unwrap_or_else(|| Caller {
                principal: "unauthenticated".into(),
                holder: "unauthenticated".into(),
                team: String::new(),
                role: crate::model::Role::Viewer,
                key_id: None,
            })
    }

    /// The caller's team.
    pub fn caller_team(&self) -> String {
        self.caller().team
    }

    /// Whether the caller is an owner (may change protected env keys).
    pub fn caller_is_owner(&self) -> bool {
        self.caller().role >= crate::model::Role::Owner
    }
}

impl ServerHandler for CodebServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_completions()
                .enable_logging()
                .build(),
        )
        .with_server_info(
            Implementation::new("codeb", env!("CARGO_PKG_VERSION"))
                .with_title("codeb deployment platform")
                .with_description("Blue-green deployments over SSH, driven through MCP"),
        )
        .with_instructions(INSTRUCTIONS)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(SUPPORTED_PROTOCOL_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // Only what the caller's role may call (DESIGN §6).
        let role = self.request_caller(&context).map(|c| c.role);
        let mut tools = self.tools.list_all();
        tools.retain(|t| role.is_some_and(|r| crate::auth::roles::may_call(r, &t.name)));
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.log_level.lock().expect("log level lock") = Some(request.level);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(prompts::prompt_list()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let args: Option<std::collections::BTreeMap<String, String>> = request.arguments.map(|a| {
            a.into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        });
        prompts::prompt_get(&request.name, args.as_ref()).map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        // Every codeb resource is reached through a template.
        Ok(ListResourcesResult::with_all_items(Vec::new()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        // A team sees only its own projects (DESIGN §6): another team's
        // project or deployment reads exactly like a missing one.
        let caller = self
            .request_caller(&context)
            .ok_or_else(|| resources::not_found(&uri, "not authenticated"))?;
        let text = match resources::parse(&uri)? {
            resources::ResourceRef::Slots {
                project,
                environment,
            } => {
                self.project_visible(&caller, &project)
                    .await
                    .map_err(|e| resources::not_found(&uri, &e))?;
                let r = self
                    .slot_status(rmcp::handler::server::wrapper::Parameters(
                        slot_status::SlotStatusParams {
                            project,
                            environment: Some(environment),
                        },
                    ))
                    .await
                    .map_err(|e| resources::not_found(&uri, &e))?;
                let json = serde_json::to_string_pretty(&r.0)
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                resources::contents(&uri, "application/json", json)
            }
            resources::ResourceRef::DeploymentLog(id) => {
                let pool = self
                    .ctx
                    .db
                    .pool()
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                let missing = || resources::not_found(&uri, "no deployment with this id");
                let team = crate::state::api_keys::deployment_team(pool, id)
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                if team.is_some_and(|t| t != caller.team) {
                    return Err(missing());
                }
                let (status, steps) = crate::state::deployments::deployment_journal(pool, id)
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
                    .ok_or_else(missing)?;
                let mut text = format!("deployment {id}: {status}\n");
                for s in steps {
                    text.push_str(&format!(
                        "{:>3} {} on {}: {} -> exit {} in {} ms\n",
                        s.seq,
                        s.step,
                        s.server.as_deref().unwrap_or("-"),
                        s.argv,
                        s.exit_status.map_or("-".to_string(), |c| c.to_string()),
                        s.duration_ms.unwrap_or(0)
                    ));
                    if let Some(tail) = s.stderr_tail.filter(|t| !t.is_empty()) {
                        text.push_str(&format!("    stderr: {tail}\n"));
                    }
                }
                resources::contents(&uri, "text/plain", text)
            }
        };
        Ok(ReadResourceResult::new(vec![text]).into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        // Project names of the caller's team only (DESIGN §6).
        let team = self.request_caller(&context).map(|c| c.team);
        let known_ref = match &request.r#ref {
            Reference::Resource(r) => {
                r.uri == resources::SLOTS_TEMPLATE || r.uri == resources::DEPLOYMENT_LOG_TEMPLATE
            }
            Reference::Prompt(p) => p.name == prompts::SHIP || p.name == prompts::INCIDENT_ROLLBACK,
            _ => false,
        };
        let value = request.argument.value.as_str();
        let values: Vec<String> = if !known_ref {
            Vec::new()
        } else {
            match request.argument.name.as_str() {
                "environment" => crate::model::Environment::ALL
                    .iter()
                    .map(|e| e.as_str().to_string())
                    .filter(|e| e.starts_with(value))
                    .collect(),
                "project" if value.len() <= 32 => match (&team, self.ctx.db.pool().await) {
                    (Some(team), Ok(pool)) => {
                        crate::state::deployments::project_names_with_prefix(pool, team, value, 100)
                            .await
                            .unwrap_or_default()
                    }
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            }
        };
        let info = CompletionInfo::new(values).map_err(|e| ErrorData::internal_error(e, None))?;
        Ok(CompleteResult::new(info))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let started = Instant::now();
        // Audit (DESIGN §6): every call — refused ones too — with the
        // caller as authenticated, arguments redacted, written off the
        // request path.
        let audit_caller = self.request_caller(&context).unwrap_or_else(|| Caller {
            principal: "unauthenticated".into(),
            holder: "unauthenticated".into(),
            team: String::new(),
            role: crate::model::Role::Viewer,
            key_id: None,
        });
        // Redaction scope (ops::redact): codeb's secrets, and those of the
        // project the call names when it is the caller's team's.
        let team = audit_caller.team.clone();
        let project = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("project"))
            .and_then(|p| p.as_str())
            .map(str::to_string);
        let scope = crate::ops::redact::OwnedScope::team_project(&team, project.as_deref());
        let audit =
            audit_query::CallAudit::begin(&self.ctx.audit, audit_caller, &request, &context);
        // Access control (DESIGN §6): role, then team of the project or handle.
        // Secrets stored before this process started are masked from the
        // first call on (stdio registers them here, not at start-up).
        crate::ops::env::register_stored_once(&self.ctx).await;
        let mut denied = false;
        let mut result = match self.authorize_call(&request, &context).await {
            Err(refusal) => {
                denied = true;
                Ok(CallToolResponse::Complete(refusal))
            }
            Ok(caller) => {
                let tcc = ToolCallContext::new(self, request, context);
                let call = CALLER.scope(caller, self.tools.call(tcc));
                crate::ops::redact::in_scope(scope.clone(), call).await
            }
        };
        // Error texts carry causes from servers and databases: scrub any
        // registered secret of the call's scope before they leave (DESIGN §3).
        if let Ok(CallToolResponse::Complete(r)) = &mut result {
            if r.is_error == Some(true) {
                for c in r.content.iter_mut() {
                    if let rmcp::model::ContentBlock::Text(t) = c {
                        t.text = bound_error_text(&scope.redact(&t.text));
                    }
                }
            }
        }
        let outcome = match &result {
            _ if denied => "denied",
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(_) => "protocol_error",
        };
        if denied {
            audit.finish_denied(&result);
        } else {
            audit.finish(&result);
        }
        tracing::info!(
            tool = ?name,
            outcome,
            ms = started.elapsed().as_millis() as u64,
            "tool call"
        );
        result
    }
}

/// Longest error text a tool call returns. rmcp's own refusal of
/// arguments of the wrong type quotes the value whole (`invalid type:
/// string "…", expected a boolean`), so a 10 MiB string sent for a flag
/// would come back as a 10 MiB error; codeb's own messages stay far below.
pub const ERROR_TEXT_MAX_BYTES: usize = 4096;

/// `text` cut to `ERROR_TEXT_MAX_BYTES` at a character boundary, saying
/// how much was left out.
fn bound_error_text(text: &str) -> String {
    if text.len() <= ERROR_TEXT_MAX_BYTES {
        return text.to_string();
    }
    let mut end = ERROR_TEXT_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes left out)",
        &text[..end],
        text.len() - end
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::exec::fake::FakeRemote;
    use crate::exec::{Fleet, Remote};
    use crate::mcp::health_check::HealthCheckParams;
    use crate::mcp::slot_status::SlotStatusParams;
    use crate::state::Db;
    use rmcp::handler::server::wrapper::Parameters;

    #[test]
    fn error_texts_are_bounded() {
        assert_eq!(bound_error_text("short"), "short");
        let long = format!("failed: {}", "é".repeat(ERROR_TEXT_MAX_BYTES));
        let cut = bound_error_text(&long);
        assert!(cut.len() < ERROR_TEXT_MAX_BYTES + 64, "{}", cut.len());
        assert!(cut.ends_with(" more bytes left out)"), "{cut}");
    }

    fn server_with_fake() -> (CodebServer, Arc<FakeRemote>) {
        let config: Config = toml::from_str(crate::config::TEST_LOCAL_CONFIG).unwrap();
        let fake = Arc::new(FakeRemote::new("app", vec![]));
        let fleet = Fleet::from_parts(vec![(
            config.servers[0].clone(),
            fake.clone() as Arc<dyn Remote>,
        )]);
        let db = Db::from_config(&config);
        (
            CodebServer::new(Arc::new(Ctx::from_parts(config, fleet, db))),
            fake,
        )
    }

    #[tokio::test]
    async fn bad_input_executes_nothing() {
        let (server, fake) = server_with_fake();
        let huge = "x".repeat(1 << 20);
        for project in [
            "",
            "-rf",
            "a\nb",
            "$(id)",
            "`id`",
            "../etc",
            "shop;ls",
            huge.as_str(),
        ] {
            let e = server
                .slot_status(Parameters(SlotStatusParams {
                    project: project.to_string(),
                    environment: None,
                }))
                .await
                .err()
                .expect("refused");
            assert!(e.contains("project name"), "{e}");
        }
        for name in ["-oProxyCommand=x", "", "nope", "app\n"] {
            let e = server
                .health_check(Parameters(HealthCheckParams {
                    server: Some(name.to_string()),
                }))
                .await
                .err()
                .expect("refused");
            assert!(e.contains("unknown server"), "{e}");
        }
        assert!(
            fake.calls.lock().unwrap().is_empty(),
            "no command ran: {:?}",
            fake.calls.lock().unwrap()
        );
    }

    /// The lifecycle tools refuse bad input before any command runs or the
    /// database is touched (the fake database address would fail loudly).
    #[tokio::test]
    async fn lifecycle_tools_refuse_bad_input_before_running_anything() {
        use crate::model::Environment;
        use crate::ops::lifecycle::{self, Caller, OpError};
        use tokio_util::sync::CancellationToken;
        let (server, fake) = server_with_fake();
        let ctx = server.ctx_arc();
        let caller = Caller {
            principal: "test".into(),
            ..Caller::local_owner()
        };
        let huge = "a".repeat(10_000_000);
        let image = "10.77.0.12:5000/demo:v1";
        let bad_names = ["", "-rf", "shop\nrm", "$(id)", huge.as_str()];
        let progress = || tokio::sync::mpsc::unbounded_channel().0;
        let invalid = |r: Result<(), OpError>, what: &str| match r {
            Err(OpError::Invalid(msg)) => assert!(msg.len() < 500, "{what}: bounded message"),
            other => panic!("{what}: expected Invalid, got {other:?}"),
        };
        for name in bad_names {
            let env = Environment::Production;
            let r = lifecycle::deploy(
                &ctx,
                name,
                env,
                image,
                None,
                None,
                false,
                &caller,
                progress(),
                CancellationToken::new(),
            )
            .await;
            invalid(r.map(|_| ()), "deploy project");
            let r = lifecycle::promote(
                &ctx,
                name,
                env,
                false,
                &caller,
                progress(),
                CancellationToken::new(),
            )
            .await;
            invalid(r.map(|_| ()), "promote project");
            let r = lifecycle::rollback(
                &ctx,
                name,
                env,
                None,
                false,
                &caller,
                progress(),
                CancellationToken::new(),
            )
            .await;
            invalid(r.map(|_| ()), "rollback project");
            let r =
                lifecycle::slot_cleanup(&ctx, Some(name), None, false, &caller, progress()).await;
            invalid(r.map(|_| ()), "slot_cleanup project");
            let r = lifecycle::deploy(
                &ctx,
                "shop",
                env,
                name,
                None,
                None,
                false,
                &caller,
                progress(),
                CancellationToken::new(),
            )
            .await;
            invalid(r.map(|_| ()), "deploy image");
            let r = lifecycle::deploy(
                &ctx,
                "shop",
                env,
                image,
                Some(name),
                None,
                false,
                &caller,
                progress(),
                CancellationToken::new(),
            )
            .await;
            if !name.is_empty() && !name.contains(['\n', ' ']) && name.len() <= 128 {
                // "-rf" and "$(id)" are acceptable idempotency keys: they are
                // only ever bound as SQL parameters; the project then fails.
                assert!(r.is_err());
            } else {
                invalid(r.map(|_| ()), "deploy idempotency_key");
            }
            let r = lifecycle::rollback(
                &ctx,
                "shop",
                env,
                Some(&huge),
                false,
                &caller,
                progress(),
                CancellationToken::new(),
            )
            .await;
            invalid(r.map(|_| ()), "rollback reason");
            use crate::mcp::deployment_list::{DeploymentGetParams, DeploymentListParams};
            use crate::mcp::logs::LogsParams;
            use crate::mcp::project_create::ProjectCreateParams;
            use rmcp::handler::server::wrapper::Parameters;
            let e = server
                .project_create(Parameters(ProjectCreateParams {
                    project: name.into(),
                    kind: None,
                    dry_run: false,
                }))
                .await
                .err()
                .expect("project_create refuses");
            assert!(e.contains("project name"), "{e}");
            let e = server
                .logs(Parameters(LogsParams {
                    project: name.into(),
                    environment: env,
                    slot: None,
                    lines: None,
                }))
                .await
                .err()
                .expect("logs refuses");
            assert!(e.contains("project name"), "{e}");
            let e = server
                .deployment_get(Parameters(DeploymentGetParams { id: name.into() }))
                .await
                .err()
                .expect("deployment_get refuses");
            assert!(e.contains("UUID"), "{e}");
            let e = server
                .deployment_list(Parameters(DeploymentListParams {
                    project: Some(name.into()),
                    environment: None,
                    limit: None,
                    cursor: None,
                }))
                .await
                .err()
                .expect("deployment_list refuses");
            assert!(e.contains("project name"), "{e}");
        }
        assert!(
            fake.calls.lock().unwrap().is_empty(),
            "no command ran: {:?}",
            fake.calls.lock().unwrap()
        );
    }

    #[test]
    fn server_info_is_codeb() {
        let (server, _) = server_with_fake();
        let info = server.get_info();
        assert_eq!(info.server_info.name, "codeb");
        assert!(info.capabilities.tools.is_some());
        assert_eq!(
            server
                .supported_protocol_versions()
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>(),
            ["2026-07-28", "2025-11-25", "2025-06-18"]
        );
    }
}
