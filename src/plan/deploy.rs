//! Deploy planning (DESIGN §2): which slot to fill and the steps to fill
//! it. Pure: `plan_deploy(view, input)` is all there is.
//!
//! A container always runs an image by digest (`REPOSITORY@sha256:…`):
//! the pull reads the digest the reference was pulled as, and the run
//! names exactly that, so what runs is what was recorded — never what a
//! tag points at a moment later. A production deploy of a staged reference
//! pulls the digest staging ran (DESIGN §6).

use std::fmt;

use serde::Serialize;

use crate::model::{SlotName, SlotState};
use crate::plan::env::{other, EnvView, Refusal};
use crate::plan::podman;

/// Health gate defaults (DESIGN §2), named with their units.
pub const HEALTH_INTERVAL_MS: u64 = 1_000;
/// Time limit of one probe.
pub const HEALTH_PROBE_TIMEOUT_SECS: u32 = 5;
/// Give up on a slot that is not healthy by then.
pub const HEALTH_DEADLINE_SECS: u64 = 60;

/// What the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployInput {
    /// Image reference (validated).
    pub image: String,
    /// The digest staging ran healthy for it, which production deploys
    /// instead of whatever the reference names now (`plan::policy`).
    pub staged_digest: Option<String>,
}

/// One step of a deploy, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum DeployStep {
    /// podman pull, then read the digest it was pulled as.
    Pull {
        /// Image reference pulled (by digest when the digest is known).
        image: String,
    },
    /// Make sure the codeb network exists.
    EnsureNetwork,
    /// Remove the slot's old container (absent is fine).
    RemoveContainer {
        /// Container name.
        container: String,
    },
    /// Start the new container from the pulled digest.
    Run {
        /// Container name.
        container: String,
        /// Image reference pulled; the container runs its repository at
        /// the digest the pull read.
        image: String,
        /// Host port on the app server's loopback.
        host_port: u16,
    },
    /// Probe the slot directly until healthy or the deadline passes.
    HealthGate {
        /// Host port.
        port: u16,
        /// Path probed.
        path: String,
    },
    /// Record the slot as deployed.
    MarkDeployed,
    /// Route the slot's preview host name to it.
    PreviewRoute {
        /// Preview host name.
        host: String,
        /// Port.
        port: u16,
    },
}

impl fmt::Display for DeployStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pull { image } => write!(f, "pull {image} and read the digest it is pulled as"),
            Self::EnsureNetwork => write!(f, "ensure network {}", crate::plan::podman::NETWORK),
            Self::RemoveContainer { container } => write!(f, "remove container {container} if present"),
            Self::Run { container, image, host_port } => write!(
                f,
                "run {container} from {}@{} on 127.0.0.1:{host_port}",
                podman::image_repository(image),
                podman::image_ref_digest(image).unwrap_or("<the digest pulled>")
            ),
            Self::HealthGate { port, path } => write!(
                f,
                "probe http://127.0.0.1:{port}{path} every {HEALTH_INTERVAL_MS} ms until 200, at most {HEALTH_DEADLINE_SECS} s"
            ),
            Self::MarkDeployed => write!(f, "record the slot as deployed"),
            Self::PreviewRoute { host, port } => write!(f, "route preview host {host} to port {port}"),
        }
    }
}

/// A deploy plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployPlan {
    /// The slot to fill.
    pub slot: SlotName,
    /// Its host port.
    pub port: u16,
    /// Its container name.
    pub container: String,
    /// Its preview host name.
    pub preview_host: String,
    /// Steps in order.
    pub steps: Vec<DeployStep>,
    /// Things the caller should know (e.g. a grace slot is replaced).
    pub warnings: Vec<String>,
    /// The production policy's verdict (DESIGN §6), set by the operation
    /// once it has observed staging; `None` from the planner.
    pub policy: Option<String>,
    /// The digest the container will run, when known before the pull (a
    /// staged digest, or a reference by digest); the pull must match it.
    pub digest: Option<String>,
}

impl fmt::Display for DeployPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "deploy into {} (port {})", self.slot, self.port)?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {s}", i + 1)?;
        }
        for w in &self.warnings {
            writeln!(f, "  note: {w}")?;
        }
        Ok(())
    }
}

/// The slot a deploy fills: the one that is not active. With no active
/// slot, an unpromoted deployed slot is replaced, else blue.
pub fn target_slot(view: &EnvView) -> SlotName {
    if let Some(active) = view.in_state(SlotState::Active) {
        return other(active.slot);
    }
    view.in_state(SlotState::Deployed)
        .map(|s| s.slot)
        .unwrap_or(SlotName::Blue)
}

/// Plans a deploy of `input` into `view`.
pub fn plan_deploy(
    view: &EnvView,
    input: &DeployInput,
    preview_domain: &str,
) -> Result<DeployPlan, Refusal> {
    let slot = target_slot(view);
    let target = view.slot(slot);
    if target.state == SlotState::Active {
        return Err(Refusal(format!(
            "both slots of {} {} are active, which codeb never records; run drift_report",
            view.project, view.environment
        )));
    }
    let port = view.port(slot);
    let container = view.container(slot);
    let preview_host =
        crate::plan::dns::preview_hostname(&view.project, view.environment, slot, preview_domain);
    let mut warnings = Vec::new();
    if target.state == SlotState::Grace {
        warnings.push(format!(
            "the {slot} slot holds the grace release {}; deploying replaces it, so rollback to it will no longer be possible",
            target.image.as_deref().unwrap_or("?")
        ));
    }
    let (pull, digest) = match &input.staged_digest {
        Some(d) => (
            podman::pinned_image(&input.image, d).map_err(|e| Refusal(e.0))?,
            Some(d.clone()),
        ),
        None => (
            input.image.clone(),
            podman::image_ref_digest(&input.image).map(str::to_string),
        ),
    };
    let steps = vec![
        DeployStep::Pull {
            image: pull.clone(),
        },
        DeployStep::EnsureNetwork,
        DeployStep::RemoveContainer {
            container: container.clone(),
        },
        DeployStep::Run {
            container: container.clone(),
            image: pull,
            host_port: port,
        },
        DeployStep::HealthGate {
            port,
            path: view.health_path.clone(),
        },
        DeployStep::PreviewRoute {
            host: preview_host.clone(),
            port,
        },
        DeployStep::MarkDeployed,
    ];
    Ok(DeployPlan {
        slot,
        port,
        container,
        preview_host,
        steps,
        warnings,
        policy: None,
        digest,
    })
}

/// What undoing a failed deploy does, in order. The active slot is never
/// part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupStep {
    /// Remove the target slot's container.
    RemoveContainer(String),
    /// Delete the target slot's preview route.
    DeletePreviewRoute(String),
    /// Record the target slot as empty.
    MarkEmpty(SlotName),
}

impl fmt::Display for CleanupStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RemoveContainer(c) => write!(f, "remove container {c}"),
            Self::DeletePreviewRoute(h) => write!(f, "delete the preview route of {h}"),
            Self::MarkEmpty(s) => write!(f, "record slot {s} as empty"),
        }
    }
}

/// The undo of `plan` after a failure at any step (health gate included).
pub fn plan_failed_deploy_cleanup(plan: &DeployPlan) -> Vec<CleanupStep> {
    vec![
        CleanupStep::RemoveContainer(plan.container.clone()),
        CleanupStep::DeletePreviewRoute(plan.preview_host.clone()),
        CleanupStep::MarkEmpty(plan.slot),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Environment;
    use crate::plan::env::SlotView;

    pub(crate) fn view(blue: SlotState, green: SlotState) -> EnvView {
        let slot = |slot, state| SlotView {
            slot,
            state,
            image: (state != SlotState::Empty).then(|| format!("r/demo:{slot}")),
            grace_expires_at: None,
            env_version: None,
        };
        EnvView {
            project: "shop".into(),
            environment: Environment::Production,
            base_port: 4100,
            container_port: 3000,
            health_path: "/health".into(),
            memory: "512m".into(),
            cpus: "1".into(),
            slots: [slot(SlotName::Blue, blue), slot(SlotName::Green, green)],
        }
    }

    fn input() -> DeployInput {
        DeployInput {
            image: "10.77.0.12:5000/demo:v2".into(),
            staged_digest: None,
        }
    }

    const DIGEST: &str = "sha256:d21c66eebc64089c2ab1a06e9072299b00c4ec94de45bb8c8ead75e324f65098";

    #[test]
    fn first_deploy_goes_to_blue() {
        let p = plan_deploy(
            &view(SlotState::Empty, SlotState::Empty),
            &input(),
            "preview.codeb.test",
        )
        .unwrap();
        assert_eq!(
            p.to_string(),
            "deploy into blue (port 4100)
  1. pull 10.77.0.12:5000/demo:v2 and read the digest it is pulled as
  2. ensure network codeb-main
  3. remove container shop-production-blue if present
  4. run shop-production-blue from 10.77.0.12:5000/demo@<the digest pulled> on 127.0.0.1:4100
  5. probe http://127.0.0.1:4100/health every 1000 ms until 200, at most 60 s
  6. route preview host shop-production-blue.preview.codeb.test to port 4100
  7. record the slot as deployed
"
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn a_staged_digest_is_pulled_and_run_instead_of_the_tag() {
        let staged = DeployInput {
            staged_digest: Some(DIGEST.into()),
            ..input()
        };
        let p = plan_deploy(&view(SlotState::Empty, SlotState::Empty), &staged, "p.test").unwrap();
        let text = p.to_string();
        assert!(
            text.contains(&format!("1. pull 10.77.0.12:5000/demo@{DIGEST} and read")),
            "{text}"
        );
        assert!(
            text.contains(&format!("from 10.77.0.12:5000/demo@{DIGEST} on")),
            "{text}"
        );
        assert!(!text.contains("demo:v2"), "{text}");
        assert_eq!(p.digest.as_deref(), Some(DIGEST));
        // A reference by digest (tag and digest): that digest, the tag dropped.
        let by_digest = DeployInput {
            image: format!("10.77.0.12:5000/demo:v2@{DIGEST}"),
            staged_digest: None,
        };
        let p = plan_deploy(
            &view(SlotState::Empty, SlotState::Empty),
            &by_digest,
            "p.test",
        )
        .unwrap();
        assert_eq!(p.digest.as_deref(), Some(DIGEST));
        assert!(p
            .to_string()
            .contains(&format!("from 10.77.0.12:5000/demo@{DIGEST} on")));
        assert_eq!(
            plan_deploy(
                &view(SlotState::Empty, SlotState::Empty),
                &input(),
                "p.test"
            )
            .unwrap()
            .digest,
            None
        );
    }

    #[test]
    fn blue_active_deploys_to_green() {
        let p = plan_deploy(
            &view(SlotState::Active, SlotState::Empty),
            &input(),
            "p.test",
        )
        .unwrap();
        assert_eq!(
            (p.slot, p.port, p.container.as_str()),
            (SlotName::Green, 4101, "shop-production-green")
        );
        assert_eq!(p.preview_host, "shop-production-green.p.test");
    }

    #[test]
    fn grace_slot_is_replaced_with_a_warning() {
        let p = plan_deploy(
            &view(SlotState::Grace, SlotState::Active),
            &input(),
            "p.test",
        )
        .unwrap();
        assert_eq!(p.slot, SlotName::Blue);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("rollback"), "{}", p.warnings[0]);
    }

    #[test]
    fn failed_health_cleans_only_the_target() {
        let p = plan_deploy(
            &view(SlotState::Active, SlotState::Empty),
            &input(),
            "p.test",
        )
        .unwrap();
        let steps: Vec<String> = plan_failed_deploy_cleanup(&p)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            steps,
            [
                "remove container shop-production-green",
                "delete the preview route of shop-production-green.p.test",
                "record slot green as empty"
            ]
        );
    }

    #[test]
    fn unpromoted_deploy_is_replaced() {
        let p = plan_deploy(
            &view(SlotState::Empty, SlotState::Deployed),
            &input(),
            "p.test",
        )
        .unwrap();
        assert_eq!(p.slot, SlotName::Green);
        let p = plan_deploy(
            &view(SlotState::Active, SlotState::Deployed),
            &input(),
            "p.test",
        )
        .unwrap();
        assert_eq!(p.slot, SlotName::Green);
    }
}
