//! `slot_status`: a project's blue/green slots as recorded, joined with the
//! containers podman really runs.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::CodebServer;
use crate::model::{Environment, SlotName};
use crate::ops::slots::{slot_status, SlotStatusError};

/// Input of slot_status.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotStatusParams {
    /// Project name.
    pub project: String,
    /// Only this environment.
    #[serde(default)]
    pub environment: Option<Environment>,
}

/// The container podman runs for a slot.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Image it runs.
    pub image: String,
    /// podman state (running, exited, ...).
    pub state: String,
    /// podman status text.
    pub status: String,
}

/// One slot.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SlotInfo {
    /// Environment.
    pub environment: Environment,
    /// blue or green.
    pub slot: SlotName,
    /// Recorded state: empty, deployed, active or grace.
    pub state: String,
    /// Host port on the app server's loopback.
    pub port: u16,
    /// Image recorded for the slot.
    pub image: Option<String>,
    /// Env version the slot runs with.
    pub env_version: Option<i32>,
    /// When a grace slot expires (RFC 3339).
    pub grace_expires_at: Option<String>,
    /// What podman runs for this slot; absent when no container exists.
    pub container: Option<ContainerView>,
    /// A difference between the record and the server, if any.
    pub mismatch: Option<String>,
}

/// Result of slot_status.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SlotStatusResult {
    /// One line for the reader.
    pub summary: String,
    /// Project name.
    pub project: String,
    /// Slots, by environment then slot.
    pub slots: Vec<SlotInfo>,
    /// Set when the app server could not be asked; `container` is then unknown.
    pub observe_error: Option<String>,
}

#[tool_router(router = slot_status_router, vis = "pub(crate)")]
impl CodebServer {
    /// Show a project's slots per environment (state, port, image, env version, grace expiry) next to what podman runs, flagging mismatches.
    #[tool(
        name = "slot_status",
        title = "Show slot status",
        annotations(
            title = "Show slot status",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn slot_status(
        &self,
        Parameters(p): Parameters<SlotStatusParams>,
    ) -> Result<Json<SlotStatusResult>, String> {
        let status = slot_status(self.ctx(), &p.project, p.environment)
            .await
            .map_err(|e| match e {
                SlotStatusError::Db(e) => format!("{e}; check health_check"),
                other => other.to_string(),
            })?;
        let slots: Vec<SlotInfo> = status
            .slots
            .into_iter()
            .map(|s| SlotInfo {
                environment: s.environment,
                slot: s.slot,
                state: s.state,
                port: s.port,
                image: s.image,
                env_version: s.env_version,
                grace_expires_at: s.grace_expires_at,
                container: s.container.map(|c| ContainerView {
                    name: c.name,
                    image: c.image,
                    state: c.state,
                    status: c.status,
                }),
                mismatch: s.mismatch,
            })
            .collect();
        let active: Vec<String> = slots
            .iter()
            .filter(|s| s.state == "active")
            .map(|s| {
                format!(
                    "{} {} ({})",
                    s.environment,
                    s.slot,
                    s.image.as_deref().unwrap_or("?")
                )
            })
            .collect();
        let mismatches = slots.iter().filter(|s| s.mismatch.is_some()).count();
        let mut summary = format!(
            "{}: {} slots, active: {}",
            p.project,
            slots.len(),
            if active.is_empty() {
                "none".to_string()
            } else {
                active.join(", ")
            }
        );
        if mismatches > 0 {
            summary.push_str(&format!("; {mismatches} slot(s) differ from the server"));
        }
        if let Some(e) = &status.observe_error {
            summary.push_str(&format!("; containers unknown: {e}"));
        }
        Ok(Json(SlotStatusResult {
            summary,
            project: p.project,
            slots,
            observe_error: status.observe_error,
        }))
    }
}
