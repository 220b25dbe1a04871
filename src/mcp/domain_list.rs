//! `domain_list`: domains with their DNS and route states and the slot
//! they route to. Read-only.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::ops::domains::{self, DomainInfo};

/// Input of domain_list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainListParams {
    /// Only this project.
    #[serde(default)]
    pub project: Option<String>,
    /// Domains per page, 1-100 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Result of domain_list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DomainListResult {
    /// One line for the reader.
    pub summary: String,
    /// Sorted by name.
    pub domains: Vec<DomainInfo>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[tool_router(router = domain_list_router, vis = "pub(crate)")]
impl CodebServer {
    /// List domains with their environment, DNS and route state and the slot/port they route to. Paginated.
    #[tool(
        name = "domain_list",
        title = "List domains",
        annotations(
            title = "List domains",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn domain_list(
        &self,
        Parameters(p): Parameters<DomainListParams>,
    ) -> Result<Json<DomainListResult>, String> {
        let limit = crate::mcp::page_limit(p.limit, 50)?;
        let (domains, next_cursor) = domains::domain_list(
            self.ctx(),
            &self.caller_team(),
            p.project.as_deref(),
            p.cursor.as_deref(),
            limit,
        )
        .await
        .map_err(|e| e.to_string())?;
        let pending = domains
            .iter()
            .filter(|d| d.dns_state != "ok" || d.route_state != "ok")
            .count();
        let summary = if domains.is_empty() {
            "no domains".to_string()
        } else {
            format!(
                "{} domain(s){}; {pending} not fully set up",
                domains.len(),
                if next_cursor.is_some() {
                    " (more follow)"
                } else {
                    ""
                }
            )
        };
        Ok(Json(DomainListResult {
            summary,
            domains,
            next_cursor,
        }))
    }
}
