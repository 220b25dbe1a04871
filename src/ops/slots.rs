//! slot_status: the database's view of a project's slots joined with what
//! podman really runs on the app server.

use crate::model::{validate_project_name, Environment, Invalid, SlotName};
use crate::ops::Ctx;
use crate::plan::podman::Container;
use crate::state::{self, DbError};

/// One slot as recorded and as observed.
#[derive(Debug, Clone)]
pub struct SlotView {
    /// Environment.
    pub environment: Environment,
    /// Slot.
    pub slot: SlotName,
    /// Recorded state.
    pub state: String,
    /// Host port.
    pub port: u16,
    /// Container name `{project}-{environment}-{slot}`.
    pub container_name: String,
    /// Recorded image.
    pub image: Option<String>,
    /// Recorded env version.
    pub env_version: Option<i32>,
    /// Grace expiry (RFC 3339).
    pub grace_expires_at: Option<String>,
    /// What podman reports for the container, if it exists.
    pub container: Option<Container>,
    /// A difference between record and reality, in words.
    pub mismatch: Option<String>,
}

/// Why slot_status could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SlotStatusError {
    /// Bad input.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such project.
    #[error("project {0:?} not found; project_list shows the registered projects")]
    NotFound(String),
    /// Database trouble.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Result of slot_status.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// Slots in environment/slot order.
    pub slots: Vec<SlotView>,
    /// Set when the app server could not be asked; slots then lack `container`.
    pub observe_error: Option<String>,
}

/// The container name of a slot (DESIGN §2).
pub fn container_name(project: &str, env: Environment, slot: SlotName) -> String {
    format!("{project}-{env}-{slot}")
}

/// Reads the slots of `project` (optionally one environment) and what podman runs.
pub async fn slot_status(
    ctx: &Ctx,
    project: &str,
    environment: Option<Environment>,
) -> Result<SlotStatus, SlotStatusError> {
    validate_project_name(project)?;
    let pool = ctx.db.pool().await?;
    let env_name = environment.map(Environment::as_str);
    let (rows, observed) = tokio::join!(
        state::slots::slots_for_project_name(pool, project, env_name),
        ctx.observer.containers(&ctx.fleet)
    );
    let rows = rows?;
    if rows.is_empty()
        && state::projects::project_by_name(pool, project)
            .await?
            .is_none()
    {
        return Err(SlotStatusError::NotFound(project.to_string()));
    }
    let (containers, observe_error) = match observed {
        Ok(snapshot) => (snapshot.containers, None),
        Err(e) => (Default::default(), Some(e)),
    };

    let mut slots = Vec::new();
    for r in rows {
        let (Some(env), Some(slot)) =
            (Environment::parse(&r.environment), SlotName::parse(&r.slot))
        else {
            continue;
        };
        let name = container_name(project, env, slot);
        let container = containers.iter().find(|c| c.name == name).cloned();
        let mismatch = if observe_error.is_some() {
            None
        } else {
            describe_mismatch(&r.state, r.image.as_deref(), container.as_ref())
        };
        slots.push(SlotView {
            environment: env,
            slot,
            state: r.state,
            port: slot.port(r.base_port as u16),
            container_name: name,
            image: r.image,
            env_version: r.env_version,
            grace_expires_at: r.grace_expires_at.map(|t| t.to_rfc3339()),
            container,
            mismatch,
        });
    }
    Ok(SlotStatus {
        slots,
        observe_error,
    })
}

/// Compares a slot's record with its container. Pure.
pub fn describe_mismatch(
    state: &str,
    image: Option<&str>,
    container: Option<&Container>,
) -> Option<String> {
    match (state, container) {
        ("empty", None) => None,
        ("empty", Some(c)) => Some(format!(
            "slot is empty but container {} exists ({})",
            c.name, c.state
        )),
        (_, None) => Some(format!("slot is {state} but no container exists")),
        (_, Some(c)) if c.state != "running" => {
            Some(format!("slot is {state} but its container is {}", c.state))
        }
        (_, Some(c)) => match image {
            Some(i) if i != c.image => Some(format!(
                "recorded image {i} but the container runs {}",
                c.image
            )),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: &str, image: &str) -> Container {
        Container {
            name: "shop-production-blue".into(),
            image: image.into(),
            state: state.into(),
            status: String::new(),
            labels: Default::default(),
            host_ports: vec![4100],
            host_ips: vec!["127.0.0.1".into()],
        }
    }

    #[test]
    fn mismatches() {
        assert_eq!(describe_mismatch("empty", None, None), None);
        assert!(describe_mismatch("empty", None, Some(&c("running", "a"))).is_some());
        assert!(describe_mismatch("active", Some("a"), None)
            .unwrap()
            .contains("no container"));
        assert!(
            describe_mismatch("active", Some("a"), Some(&c("exited", "a")))
                .unwrap()
                .contains("exited")
        );
        assert!(
            describe_mismatch("active", Some("a"), Some(&c("running", "b")))
                .unwrap()
                .contains("runs b")
        );
        assert_eq!(
            describe_mismatch("active", Some("a"), Some(&c("running", "a"))),
            None
        );
        assert_eq!(
            container_name("shop", Environment::Staging, SlotName::Green),
            "shop-staging-green"
        );
    }
}
