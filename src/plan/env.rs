//! The observed state of one (project, environment) that the lifecycle
//! planners work from: its slots as recorded, the containers podman runs,
//! and the settings that shape commands. Plain data.

use chrono::{DateTime, Utc};
use std::fmt;

use crate::model::{Environment, SlotName, SlotState};

/// One slot as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// blue or green.
    pub slot: SlotName,
    /// Recorded state.
    pub state: SlotState,
    /// Image it runs.
    pub image: Option<String>,
    /// Grace expiry.
    pub grace_expires_at: Option<DateTime<Utc>>,
    /// Env version it runs with.
    pub env_version: Option<i32>,
}

/// One (project, environment) with both slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvView {
    /// Project name (validated).
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Even base port of the pair.
    pub base_port: u16,
    /// Port the app listens on inside the container.
    pub container_port: u16,
    /// Health check path.
    pub health_path: String,
    /// podman --memory.
    pub memory: String,
    /// podman --cpus.
    pub cpus: String,
    /// Blue then green.
    pub slots: [SlotView; 2],
}

impl EnvView {
    /// The slot record of `slot`.
    pub fn slot(&self, slot: SlotName) -> &SlotView {
        &self.slots[match slot {
            SlotName::Blue => 0,
            SlotName::Green => 1,
        }]
    }

    /// The slot in `state`, if any (blue first).
    pub fn in_state(&self, state: SlotState) -> Option<&SlotView> {
        self.slots.iter().find(|s| s.state == state)
    }

    /// Host port of `slot`.
    pub fn port(&self, slot: SlotName) -> u16 {
        slot.port(self.base_port)
    }

    /// Container name of `slot` (DESIGN §2).
    pub fn container(&self, slot: SlotName) -> String {
        format!("{}-{}-{}", self.project, self.environment, slot)
    }
}

/// The other slot.
pub fn other(slot: SlotName) -> SlotName {
    match slot {
        SlotName::Blue => SlotName::Green,
        SlotName::Green => SlotName::Blue,
    }
}

/// Why a lifecycle step cannot be planned; the text says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
