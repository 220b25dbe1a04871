//! `drift_report`: what differs between codeb's records and what the
//! servers run, one finding per object with a suggested fix. Read-only.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::ops::drift::{drift_report, DriftError};
use crate::plan::drift::Finding;

/// Most findings one answer lists; `findings_total` counts them all.
pub const DRIFT_FINDINGS_MAX: usize = 200;

/// Input of drift_report.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftReportParams {
    /// Only this project (default: your team's).
    #[serde(default)]
    pub project: Option<String>,
}

/// Result of drift_report.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DriftReportResult {
    /// One line for the reader.
    pub summary: String,
    /// Differences, one per object (at most 200).
    pub findings: Vec<Finding>,
    /// All differences found.
    pub findings_total: usize,
    /// Projects compared.
    pub projects: usize,
    /// Observations that failed; their checks were skipped.
    pub unobserved: Vec<String>,
    /// SSH commands + PowerDNS API calls + database queries: fixed, not per project.
    pub round_trips: u32,
    /// SSH commands (app server, run concurrently).
    pub ssh_commands: u32,
    /// PowerDNS API calls.
    pub pdns_calls: u32,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

#[tool_router(router = drift_report_router, vis = "pub(crate)")]
impl CodebServer {
    /// Compare codeb's records with what servers run (containers, routes, DNS, env files, Caddy config); each difference with a fix.
    #[tool(
        name = "drift_report",
        title = "Report drift",
        annotations(
            title = "Report drift",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn drift_report(
        &self,
        Parameters(p): Parameters<DriftReportParams>,
    ) -> Result<Json<DriftReportResult>, String> {
        let caller = self.caller();
        let r = drift_report(self.ctx(), p.project.as_deref(), &caller)
            .await
            .map_err(|e: DriftError| e.to_string())?;
        let round_trips = r.round_trips();
        let total = r.findings.len();
        let team_scope = format!("team {}", caller.team);
        let scope = p.project.as_deref().unwrap_or(&team_scope);
        let mut summary = if total == 0 {
            format!("{scope}: no drift ({} project(s) compared)", r.projects)
        } else {
            let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
            for f in &r.findings {
                *kinds.entry(f.kind.as_str()).or_default() += 1;
            }
            format!(
                "{scope}: {total} difference(s): {}",
                kinds
                    .iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if !r.unobserved.is_empty() {
            summary.push_str(&format!(
                "; INCOMPLETE, not checked: {}",
                r.unobserved.join("; ")
            ));
        }
        summary.push_str(&format!(
            "; {round_trips} round trips, {} ms",
            r.duration_ms
        ));
        let mut findings = r.findings;
        findings.truncate(DRIFT_FINDINGS_MAX);
        Ok(Json(DriftReportResult {
            summary,
            findings,
            findings_total: total,
            projects: r.projects,
            unobserved: r.unobserved,
            round_trips,
            ssh_commands: r.ssh_commands,
            pdns_calls: r.pdns_calls,
            duration_ms: r.duration_ms,
        }))
    }
}
