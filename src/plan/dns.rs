//! TEMPORARY STUB — replaced by the dns branch (same API).
use crate::model::{Environment, SlotName};
pub const ROUTE_TTL: u32 = 1;
pub const PRIORITY_ACTIVE: u16 = 0;
pub const PRIORITY_FALLBACK: u16 = 10;
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SrvTarget {
    pub priority: u16,
    pub port: u16,
}
pub fn route_rrset_name(host: &str, route_zone: &str) -> String {
    format!(
        "_http._tcp.{}.{}.",
        host.trim_end_matches('.'),
        route_zone.trim_end_matches('.')
    )
}
pub fn env_hostnames(project: &str, env: Environment, base_domain: &str) -> Vec<String> {
    match env {
        Environment::Production => vec![format!("{project}.{base_domain}")],
        e => vec![format!("{project}-{e}.{base_domain}")],
    }
}
pub fn preview_hostname(
    project: &str,
    env: Environment,
    slot: SlotName,
    preview_domain: &str,
) -> String {
    format!("{project}-{env}-{slot}.{preview_domain}")
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RrsetChange {
    Replace {
        name: String,
        targets: Vec<SrvTarget>,
    },
    Delete {
        name: String,
    },
}
