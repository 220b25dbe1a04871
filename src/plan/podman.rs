//! podman commands (DESIGN §2) and the parsing of their output.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{validate_project_name, Invalid};
use crate::plan::cmd::RemoteCmd;

/// The podman network every codeb container joins.
pub const NETWORK: &str = "codeb-main";
/// Label naming the project a container belongs to.
pub const LABEL_PROJECT: &str = "codeb.project";
/// Label naming the environment.
pub const LABEL_ENVIRONMENT: &str = "codeb.environment";
/// Label naming the slot.
pub const LABEL_SLOT: &str = "codeb.slot";
/// Label naming the deployment id.
pub const LABEL_DEPLOYMENT: &str = "codeb.deployment";
/// Time limit of a listing.
pub const PODMAN_PS_TIMEOUT: Duration = Duration::from_secs(15);

/// Lists every codeb container, or only one project's (`podman ps -a`).
pub fn ps(project: Option<&str>) -> Result<RemoteCmd, Invalid> {
    let filter = match project {
        Some(p) => {
            validate_project_name(p)?;
            format!("label={LABEL_PROJECT}={p}")
        }
        None => format!("label={LABEL_PROJECT}"),
    };
    Ok(RemoteCmd::new("podman")
        .args(["ps", "-a", "--format", "json", "--filter"])
        .arg(filter)
        .timeout(PODMAN_PS_TIMEOUT))
}

/// One container as `podman ps --format json` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// Human status (`Up 3 minutes`).
    pub status: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Host ports published.
    pub host_ports: Vec<u16>,
}

#[derive(Deserialize)]
struct PsEntry {
    #[serde(rename = "Names", default)]
    names: Vec<String>,
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "State", default)]
    state: String,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Ports", default)]
    ports: Option<Vec<PsPort>>,
}

#[derive(Deserialize)]
struct PsPort {
    #[serde(default)]
    host_port: u16,
}

/// Parses `podman ps --format json` output.
pub fn parse_ps(stdout: &str) -> Result<Vec<Container>, String> {
    let trimmed = stdout.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(Vec::new());
    }
    let entries: Vec<PsEntry> =
        serde_json::from_str(trimmed).map_err(|e| format!("unexpected podman ps output: {e}"))?;
    Ok(entries
        .into_iter()
        .map(|e| Container {
            name: e.names.into_iter().next().unwrap_or_default(),
            image: e.image,
            state: e.state,
            status: e.status,
            labels: e.labels.unwrap_or_default(),
            host_ports: e
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.host_port)
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_ps() {
        assert_eq!(
            ps(Some("shop")).unwrap().argv(),
            vec![
                "podman",
                "ps",
                "-a",
                "--format",
                "json",
                "--filter",
                "label=codeb.project=shop"
            ]
        );
        assert_eq!(
            ps(None).unwrap().argv(),
            vec![
                "podman",
                "ps",
                "-a",
                "--format",
                "json",
                "--filter",
                "label=codeb.project"
            ]
        );
    }

    #[test]
    fn ps_refuses_bad_project() {
        for bad in ["-rm", "a,b", "shop\n", ""] {
            assert!(ps(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_podman_json() {
        let out = r#"[{"Id":"abc","Names":["shop-production-blue"],"Image":"10.77.0.12:5000/demo:v1",
            "State":"running","Status":"Up 2 minutes","Labels":{"codeb.project":"shop","codeb.slot":"blue"},
            "Ports":[{"host_ip":"127.0.0.1","container_port":3000,"host_port":4100,"range":1,"protocol":"tcp"}]}]"#;
        let c = parse_ps(out).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "shop-production-blue");
        assert_eq!(c[0].host_ports, vec![4100]);
        assert_eq!(
            c[0].labels.get(LABEL_SLOT).map(String::as_str),
            Some("blue")
        );
        assert_eq!(parse_ps("[]\n").unwrap(), vec![]);
        assert_eq!(parse_ps("").unwrap(), vec![]);
        assert!(parse_ps("not json").is_err());
    }
}
