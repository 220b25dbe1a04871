//! `audit_query` (admin, read-only): the audit log of tool calls, newest
//! first. Also `CallAudit`, which `call_tool` uses to record every call.

use std::time::Instant;

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, ErrorData, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::model::validate_project_name;
use crate::ops::audit::{
    sanitize_arguments, sanitize_text, AuditLog, AuditOutcome, AUDIT_ERROR_MAX_BYTES,
    AUDIT_NAME_MAX_BYTES,
};
use crate::ops::lifecycle::Caller;
use crate::ops::redact::{self, OwnedScope};
use crate::state::audit::{audit_page, AuditFilter, AuditRecord, AuditRow};

/// How long `audit_query` waits for this process's queued rows first.
const QUERY_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One call being audited: taken before dispatch, finished with the result.
/// Dropped unfinished (the call's future was cancelled: the client went
/// away or codeb is stopping), it records a `protocol_error` saying so.
pub struct CallAudit {
    log: AuditLog,
    call: Option<Call>,
}

struct Call {
    at: chrono::DateTime<chrono::Utc>,
    started: Instant,
    tool: String,
    arguments: serde_json::Value,
    project: Option<String>,
    environment: Option<String>,
    caller: Caller,
    client_name: Option<String>,
    client_version: Option<String>,
    request_id: String,
    scope: OwnedScope,
}

/// The text blocks of a tool result, joined.
fn error_text(r: &CallToolResult) -> String {
    let text: Vec<&str> = r
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect();
    text.join("\n")
}

impl CallAudit {
    /// Captures who calls what (arguments redacted and bounded now, so no
    /// secret is held in the queue).
    pub fn begin(
        log: &AuditLog,
        caller: Caller,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Self {
        let args = request.arguments.as_ref();
        let project = args.and_then(|a| a.get("project")).and_then(|p| p.as_str());
        // The row is the caller's team's: scrubbed of codeb's secrets and
        // of the named project's only when it is that team's (ops::redact),
        // so no other team's env values can mask anything in it.
        let scope = OwnedScope::team_project(&caller.team, project);
        let call = redact::within(scope.clone(), || {
            let tool = sanitize_text(&request.name, AUDIT_NAME_MAX_BYTES);
            let environment = args
                .and_then(|a| a.get("environment"))
                .and_then(|p| p.as_str())
                .map(|p| sanitize_text(p, AUDIT_NAME_MAX_BYTES));
            // Legacy sessions: the initialize request's clientInfo; 2026-07-28
            // stateless requests: `_meta` "io.modelcontextprotocol/clientInfo".
            let client = context.client_info();
            Call {
                at: chrono::Utc::now(),
                started: Instant::now(),
                arguments: sanitize_arguments(&tool, args),
                tool,
                project: project.map(|p| sanitize_text(p, AUDIT_NAME_MAX_BYTES)),
                environment,
                caller,
                client_name: client
                    .as_ref()
                    .map(|c| sanitize_text(&c.name, AUDIT_NAME_MAX_BYTES)),
                client_version: client.map(|c| sanitize_text(&c.version, AUDIT_NAME_MAX_BYTES)),
                request_id: sanitize_text(&context.id.to_string(), AUDIT_NAME_MAX_BYTES),
                scope: scope.clone(),
            }
        });
        Self {
            log: log.clone(),
            call: Some(call),
        }
    }

    /// Queues the row for `result` (never waits).
    pub fn finish(self, result: &Result<CallToolResponse, ErrorData>) {
        let (outcome, error) = match result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => {
                (AuditOutcome::ToolError, Some(error_text(r)))
            }
            Ok(_) => (AuditOutcome::Ok, None),
            Err(e) => (AuditOutcome::ProtocolError, Some(e.message.to_string())),
        };
        self.finish_with(outcome, error.as_deref());
    }

    /// Queues the row of a call access control refused (`result` is the
    /// refusal it answered with).
    pub fn finish_denied(self, result: &Result<CallToolResponse, ErrorData>) {
        let error = match result {
            Ok(CallToolResponse::Complete(r)) => Some(error_text(r)),
            Ok(_) => None,
            Err(e) => Some(e.message.to_string()),
        };
        self.finish_with(AuditOutcome::Denied, error.as_deref());
    }

    /// Queues the row with an explicit outcome (e.g. `Denied` by access
    /// control before dispatch).
    pub fn finish_with(mut self, outcome: AuditOutcome, error: Option<&str>) {
        self.record(outcome, error);
    }

    fn record(&mut self, outcome: AuditOutcome, error: Option<&str>) {
        let Some(c) = self.call.take() else {
            return;
        };
        let duration_ms = c.started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        tracing::debug!(request_id = %c.request_id, tool = %c.tool, "audited");
        self.log.record(AuditRecord {
            at: c.at,
            tool: c.tool,
            arguments: c.arguments,
            principal: c.caller.principal,
            team: c.caller.team,
            role: c.caller.role.as_str().to_string(),
            client_name: c.client_name,
            client_version: c.client_version,
            project: c.project,
            environment: c.environment,
            request_id: Some(c.request_id),
            outcome: outcome.as_str(),
            error: error
                .map(|e| redact::within(c.scope, || sanitize_text(e, AUDIT_ERROR_MAX_BYTES))),
            duration_ms,
        });
    }
}

impl Drop for CallAudit {
    fn drop(&mut self) {
        self.record(
            AuditOutcome::ProtocolError,
            Some("the call was cancelled before it finished (client went away or codeb stopped)"),
        );
    }
}

/// Input of audit_query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQueryParams {
    /// Only calls naming this project.
    #[serde(default)]
    pub project: Option<String>,
    /// Only calls of this tool.
    #[serde(default)]
    pub tool: Option<String>,
    /// Only calls by this principal.
    #[serde(default)]
    pub principal: Option<String>,
    /// Only calls at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Entries per page, 1-100 (default 20).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One audited call.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditEntry {
    /// Entry id.
    pub id: i64,
    /// When the call arrived (RFC 3339).
    pub at: String,
    /// Tool.
    pub tool: String,
    /// ok, tool_error, denied or protocol_error.
    pub outcome: String,
    /// Who called.
    pub principal: String,
    /// The caller's team.
    pub team: Option<String>,
    /// The caller's role.
    pub role: Option<String>,
    /// Client name.
    pub client_name: Option<String>,
    /// Client version.
    pub client_version: Option<String>,
    /// Project argument.
    pub project: Option<String>,
    /// Environment argument.
    pub environment: Option<String>,
    /// JSON-RPC request id of the call.
    pub request_id: Option<String>,
    /// Arguments, secrets redacted, bounded.
    pub arguments: serde_json::Value,
    /// Error text, redacted, bounded.
    pub error: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: i32,
}

fn entry(r: AuditRow) -> AuditEntry {
    AuditEntry {
        id: r.id,
        at: r.at.to_rfc3339(),
        tool: r.tool,
        outcome: r.outcome,
        principal: r.principal,
        team: r.team_id,
        role: r.role,
        client_name: r.client_name,
        client_version: r.client_version,
        project: r.project,
        environment: r.environment,
        request_id: r.request_id,
        arguments: r.arguments,
        error: r.error,
        duration_ms: r.duration_ms,
    }
}

/// Result of audit_query.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditQueryResult {
    /// One line for the reader.
    pub summary: String,
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn validate_tool_name(tool: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&tool.len())
        && tool.starts_with(|c: char| c.is_ascii_lowercase())
        && tool
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err("tool must be a tool name such as deploy or env_set (a-z, 0-9, _)".into())
    }
}

/// Principals are `local`, `unauthenticated` or `key:<uuid>`.
fn validate_principal(principal: &str) -> Result<(), String> {
    let ok = principal.len() <= AUDIT_NAME_MAX_BYTES
        && (principal == "local"
            || principal == "unauthenticated"
            || principal
                .strip_prefix("key:")
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "principal {} is invalid: use local, unauthenticated or key:<key id> (key_list shows ids)",
            crate::model::describe_input(principal)
        ))
    }
}

#[tool_router(router = audit_query_router, vis = "pub(crate)")]
impl CodebServer {
    /// Admin: audit log of tool calls (redacted arguments, caller, client, outcome, duration), newest first, paginated.
    #[tool(
        name = "audit_query",
        title = "Query the audit log",
        annotations(
            title = "Query the audit log",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn audit_query(
        &self,
        Parameters(p): Parameters<AuditQueryParams>,
    ) -> Result<Json<AuditQueryResult>, String> {
        if let Some(pr) = &p.project {
            validate_project_name(pr).map_err(|e| e.0)?;
        }
        if let Some(t) = &p.tool {
            validate_tool_name(t)?;
        }
        if let Some(pr) = &p.principal {
            validate_principal(pr)?;
        }
        let since = p
            .since
            .as_deref()
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| {
                        "since must be an RFC 3339 time such as 2026-01-31T12:00:00Z".to_string()
                    })
            })
            .transpose()?;
        let limit = crate::mcp::page_limit(p.limit, 20)?;
        let after = p
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    "cursor is not one this server issued; omit it to start again".to_string()
                })
            })
            .transpose()?;
        // This process's own queued rows first, so a caller sees its
        // earlier calls; a slow database only delays that, it is no error.
        if let Err(e) = self.ctx().audit.flush(QUERY_FLUSH_TIMEOUT).await {
            tracing::warn!(error = %e, "audit_query: queued rows not flushed");
        }
        let pool = self
            .ctx()
            .db
            .pool()
            .await
            .map_err(|e| format!("{e}; check health_check"))?;
        let team = self.caller_team();
        let filter = AuditFilter {
            team: Some(&team),
            project: p.project.as_deref(),
            tool: p.tool.as_deref(),
            principal: p.principal.as_deref(),
            since,
        };
        let mut rows = audit_page(pool, &filter, after, i64::from(limit) + 1)
            .await
            .map_err(|e| e.to_string())?;
        let next_cursor = crate::mcp::take_page(&mut rows, limit, |r| r.id.to_string());
        let entries: Vec<AuditEntry> = rows.into_iter().map(entry).collect();
        let summary = match entries.first() {
            None => "no audit entries".to_string(),
            Some(e) => format!(
                "{} entr{}{}; latest: {} {} by {} at {}",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" },
                if next_cursor.is_some() {
                    " (more follow)"
                } else {
                    ""
                },
                e.tool,
                e.outcome,
                e.principal,
                e.at
            ),
        };
        Ok(Json(AuditQueryResult {
            summary,
            entries,
            next_cursor,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        assert!(validate_tool_name("env_set").is_ok());
        for bad in ["", "Deploy", "1x", "a b", "x;y", &"a".repeat(65)] {
            assert!(validate_tool_name(bad).is_err(), "{bad}");
        }
        assert!(validate_principal("local").is_ok());
        assert!(validate_principal("key:5a1d4c7e-1f4b-4a8e-9d3c-2b6f0e1a7c9d").is_ok());
        assert!(validate_principal("-rf").is_err());
        assert!(validate_principal("key:x").is_err());
        assert!(validate_principal("a\nb").is_err());
        assert!(validate_principal("").is_err());
    }
}
