//! Environment variables (DESIGN §3): encrypted, versioned storage, the
//! protected keys codeb owns, and syncing a version to the app server.

use std::collections::BTreeMap;

use crate::model::Environment;
use crate::ops::Ctx;

/// Stores codeb's protected variables (DATABASE_URL, ...) for a fresh
/// (project, environment) as a new env version, as codeb itself; returns
/// the version number. Values are registered for redaction.
pub async fn init_protected(
    ctx: &Ctx,
    project_id: i64,
    environment: Environment,
    vars: &BTreeMap<String, String>,
    principal: &str,
) -> Result<i32, String> {
    let _ = (ctx, project_id, environment, vars, principal);
    Err("env storage is not built yet".into())
}
