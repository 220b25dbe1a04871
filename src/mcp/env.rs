//! `env_get`, `env_set`, `env_sync`: versioned, encrypted environment
//! variables (DESIGN §3). Values go in; only key names, versions and
//! fingerprints come out.

use std::collections::BTreeMap;

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::longop::run_long;
use crate::mcp::CodebServer;
use crate::model::Environment;
use crate::ops::env;
use crate::plan::envvars::{EnvChange, KeyChange, KeyInfo};

/// Input of env_get.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvGetParams {
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Version to show (default: the latest).
    #[serde(default)]
    pub version: Option<i32>,
}

/// Result of env_get.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvGetResult {
    /// One line for the reader.
    pub summary: String,
    /// Version shown (0: no variables yet).
    pub version: i32,
    /// Latest version.
    pub latest: i32,
    /// Keys with value fingerprints and protected flags; never values.
    pub keys: Vec<KeyInfo>,
    /// Who made this version.
    pub created_by: Option<String>,
    /// When (RFC 3339).
    pub created_at: Option<String>,
    /// When it was last written to the servers (absent: never).
    pub synced_at: Option<String>,
}

/// Input of env_set.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSetParams {
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// NAME -> value to set (any text without NUL, ≤ 64 KiB).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Variable names to remove.
    #[serde(default)]
    pub unset: Vec<String>,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// Result of env_set.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvSetResult {
    /// One line for the reader.
    pub summary: String,
    /// True when only checked.
    pub dry_run: bool,
    /// Version before.
    pub previous: i32,
    /// Version now (unchanged in a dry run or when nothing differs).
    pub version: i32,
    /// Key-level diff with fingerprints; never values.
    pub changes: Vec<KeyChange>,
    /// Keys in the version.
    pub key_count: usize,
}

/// Input of env_sync.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSyncParams {
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Plan only (dry run).
    #[serde(default)]
    pub dry_run: bool,
}

/// Result of env_sync.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvSyncResult {
    /// One line for the reader.
    pub summary: String,
    /// True when only checked.
    pub dry_run: bool,
    /// Operation id (deployment_get shows the journal).
    pub deployment_id: Option<String>,
    /// Version written.
    pub version: i32,
    /// Env file on the app server.
    pub app_path: String,
    /// Copy on the backup server.
    pub backup_path: String,
    /// First 12 hex digits of the file's SHA-256.
    pub file_sha256: String,
    /// Keys written.
    pub key_count: usize,
}

#[tool_router(router = env_router, vis = "pub(crate)")]
impl CodebServer {
    /// Show an environment's variables: key names, fingerprints, protected flags. Never values.
    #[tool(
        name = "env_get",
        title = "Show env keys",
        annotations(
            title = "Show env keys",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn env_get(
        &self,
        Parameters(p): Parameters<EnvGetParams>,
    ) -> Result<Json<EnvGetResult>, String> {
        let s = env::get(self.ctx(), &p.project, p.environment, p.version)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(EnvGetResult {
            summary: if s.version == 0 {
                format!("{} {} has no env variables yet", p.project, p.environment)
            } else {
                format!(
                    "{} {} env v{} (latest v{}): {} keys{}",
                    p.project,
                    p.environment,
                    s.version,
                    s.latest,
                    s.keys.len(),
                    if s.synced_at.is_some() {
                        ", synced"
                    } else {
                        ", not synced yet (env_sync or the next deploy writes it)"
                    }
                )
            },
            version: s.version,
            latest: s.latest,
            keys: s.keys,
            created_by: s.created_by,
            created_at: s.created_at,
            synced_at: s.synced_at,
        }))
    }

    /// Set/unset env variables as a new encrypted version; returns the key diff (fingerprints, never values). Protected keys: owner only. env_sync or the next deploy applies it.
    #[tool(
        name = "env_set",
        title = "Change env variables",
        annotations(
            title = "Change env variables",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn env_set(
        &self,
        Parameters(p): Parameters<EnvSetParams>,
    ) -> Result<Json<EnvSetResult>, String> {
        let change = EnvChange {
            set: p.set,
            unset: p.unset,
        };
        let o = env::set(
            self.ctx(),
            &p.project,
            p.environment,
            &change,
            p.dry_run,
            self.caller_is_owner(),
            &self.caller(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let list = |kind: &str| -> String {
            let keys: Vec<&str> = o
                .changes
                .iter()
                .filter(|c| c.change == kind)
                .map(|c| c.key.as_str())
                .collect();
            if keys.is_empty() {
                String::new()
            } else {
                format!(" {kind} {}", keys.join(", "))
            }
        };
        let what = format!("{}{}{}", list("added"), list("changed"), list("removed"));
        Ok(Json(EnvSetResult {
            summary: if o.changes.is_empty() {
                format!(
                    "nothing changed: {} {} stays at env v{}",
                    p.project, p.environment, o.version
                )
            } else if p.dry_run {
                format!(
                    "dry run: v{} would become v{}:{what}; nothing stored",
                    o.previous,
                    o.previous + 1
                )
            } else {
                format!(
                    "{} {} env v{} ->  v{}:{what}. Not on the servers yet: env_sync, or deploy (which syncs first)",
                    p.project, p.environment, o.previous, o.version
                )
            },
            dry_run: p.dry_run,
            previous: o.previous,
            version: o.version,
            changes: o.changes,
            key_count: o.key_count,
        }))
    }

    /// Write the latest env version to the app server (0600, atomic) and the backup server. Deploy does this itself.
    #[tool(
        name = "env_sync",
        title = "Write env files to servers",
        annotations(
            title = "Write env files to servers",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn env_sync(
        &self,
        Parameters(p): Parameters<EnvSyncParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<EnvSyncResult>, String> {
        let ctx = self.ctx_arc();
        let caller = self.caller();
        let (project, environment, dry_run) = (p.project.clone(), p.environment, p.dry_run);
        let o = run_long(&context, move |progress, _abort| async move {
            env::sync(
                &ctx,
                &p.project,
                p.environment,
                p.dry_run,
                &caller,
                progress,
            )
            .await
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(Json(EnvSyncResult {
            summary: format!(
                "{}{project} {environment} env v{} ({} keys, sha256 {}) {} {} and {}",
                if dry_run { "dry run: " } else { "" },
                o.version,
                o.key_count,
                o.file_sha256,
                if dry_run {
                    "would be written to"
                } else {
                    "written to"
                },
                o.app_path,
                o.backup_path
            ),
            dry_run,
            deployment_id: o.deployment_id,
            version: o.version,
            app_path: o.app_path,
            backup_path: o.backup_path,
            file_sha256: o.file_sha256,
            key_count: o.key_count,
        }))
    }
}
