//! Environment variables (DESIGN §3): encrypted, versioned storage, the
//! protected keys codeb owns, and syncing a version to the servers.
//!
//! Values are encrypted with XChaCha20-Poly1305 under the master key (a
//! random 24-byte nonce per version; the associated data binds a
//! ciphertext to its project, environment and version, so rows cannot be
//! swapped). What leaves codeb are key names and fingerprints: the first
//! 12 hex digits of HMAC-SHA-256 of the value under a key derived from the
//! master key, so equal values match but a short value cannot be guessed
//! from its fingerprint.

use std::collections::BTreeMap;
use std::time::Instant;

use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::model::{validate_project_name, Environment, ServerRole};
use crate::ops::lifecycle::{self, Caller, OpError, ProgressTx};
use crate::ops::redact::{self, ProjectRef, Registration};
use crate::ops::Ctx;
use crate::plan::envvars::{self, EnvChange, KeyChange, KeyInfo};
use crate::plan::files::write_file_atomic;
use crate::state::envvars::{self as store, EnvVersionRow, NewVersion};
use crate::state::slots;

/// Mode of env files on the servers.
pub const ENV_FILE_MODE: u32 = 0o600;
/// Attempts at writing a version when concurrent changes take the number.
const VERSION_ATTEMPTS: usize = 10;

/// The master key: encrypts values and keys fingerprints.
pub struct EnvKey {
    cipher: XChaCha20Poly1305,
    fingerprint_key: [u8; 32],
    /// Short public id of the key (recorded with every version).
    pub id: String,
}

impl std::fmt::Debug for EnvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvKey {{ id: {} }}", self.id)
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

impl EnvKey {
    /// Parses 64 hex digits (32 bytes); surrounding whitespace is ignored.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                "the master key must be 64 hex digits (32 random bytes), e.g. from `openssl rand -hex 32`"
                    .to_string()
            })?;
        let fingerprint_key = hmac(&bytes, b"codeb env fingerprint v1");
        let id = hex::encode(&hmac(&bytes, b"codeb master key id v1")[..8]);
        Ok(Self {
            cipher: XChaCha20Poly1305::new_from_slice(&bytes).expect("32-byte key"),
            fingerprint_key,
            id,
        })
    }

    /// The configured key (`CODEB_MASTER_KEY` or `secrets.master_key_file`), if any.
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        match config.master_key_text()? {
            None => Ok(None),
            Some(t) => Self::from_text(&t).map(Some).map_err(|e| {
                ConfigError::new(
                    if std::env::var("CODEB_MASTER_KEY").is_ok_and(|v| !v.is_empty()) {
                        "CODEB_MASTER_KEY"
                    } else {
                        "secrets.master_key_file"
                    },
                    e,
                )
            }),
        }
    }

    /// Short fingerprint of a value.
    pub fn fingerprint(&self, value: &str) -> String {
        hex::encode(&hmac(&self.fingerprint_key, value.as_bytes())[..6])
    }

    fn aad(project_id: i64, environment: &str, version: i32) -> Vec<u8> {
        format!("codeb-env-v1\0{project_id}\0{environment}\0{version}").into_bytes()
    }

    /// Encrypts the values of one version; returns (ciphertext, nonce).
    pub fn seal(
        &self,
        project_id: i64,
        environment: &str,
        version: i32,
        vars: &BTreeMap<String, String>,
    ) -> (Vec<u8>, Vec<u8>) {
        let plaintext = serde_json::to_vec(vars).expect("a map of strings serializes");
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: &Self::aad(project_id, environment, version),
                },
            )
            .expect("encryption of a bounded message cannot fail");
        (ct, nonce.to_vec())
    }

    /// Decrypts a stored version.
    pub fn open(
        &self,
        project_id: i64,
        environment: &str,
        row: &EnvVersionRow,
    ) -> Result<BTreeMap<String, String>, String> {
        if !row.key_id.is_empty() && row.key_id != self.id {
            return Err(format!(
                "env v{} was encrypted with master key {} but codeb runs with key {}; start codeb with the key that wrote it",
                row.version, row.key_id, self.id
            ));
        }
        if row.nonce.len() != 24 {
            return Err(format!("env v{} has a malformed nonce", row.version));
        }
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(&row.nonce),
                Payload {
                    msg: &row.ciphertext,
                    aad: &Self::aad(project_id, environment, row.version),
                },
            )
            .map_err(|_| {
                format!(
                    "env v{} cannot be decrypted: wrong master key or tampered data",
                    row.version
                )
            })?;
        serde_json::from_slice(&plaintext)
            .map_err(|_| format!("env v{} decrypted to malformed data", row.version))
    }

    /// Key infos of a set of values.
    pub fn key_infos(
        &self,
        vars: &BTreeMap<String, String>,
        extra_protected: &[String],
    ) -> Vec<KeyInfo> {
        vars.iter()
            .map(|(k, v)| KeyInfo {
                key: k.clone(),
                fingerprint: self.fingerprint(v),
                protected: envvars::is_protected(k, extra_protected),
            })
            .collect()
    }
}

/// The key, or the error to show when none is configured.
fn key(ctx: &Ctx) -> Result<&EnvKey, OpError> {
    ctx.env_key.as_deref().ok_or_else(|| {
        OpError::Refused(
            "no master key is configured, so env values cannot be stored or read: set CODEB_MASTER_KEY or secrets.master_key_file (64 hex digits) and restart codeb"
                .into(),
        )
    })
}

/// Refuses to run when env data exists but no key, or another key, is
/// configured (called at start-up where the database is at hand).
pub async fn check_master_key(ctx: &Ctx) -> Result<(), String> {
    let pool = ctx.db.pool().await.map_err(|e| e.to_string())?;
    let ids = store::key_ids_in_use(pool)
        .await
        .map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Ok(());
    }
    match &ctx.env_key {
        None => Err(format!(
            "env data exists ({} master key id(s): {}) but no master key is configured; set CODEB_MASTER_KEY or secrets.master_key_file",
            ids.len(),
            ids.join(", ")
        )),
        Some(k) if ids.iter().all(|id| id.is_empty() || *id == k.id) => Ok(()),
        Some(k) => Err(format!(
            "env data was encrypted with master key id(s) {} but the configured key is {}; configure the key that wrote it",
            ids.join(", "),
            k.id
        )),
    }
}

/// A (project, environment) resolved for env work.
struct Target {
    project_id: i64,
    project: String,
    team: String,
}

impl Target {
    fn project_ref(&self) -> ProjectRef<'_> {
        ProjectRef {
            name: &self.project,
            id: self.project_id,
            team: &self.team,
        }
    }
}

/// Registers the values of env version `version` of `p`'s `environment`
/// for redaction in `p`'s outputs (after the version was written, or when
/// it was read and is newer than what is registered). The matcher is
/// rebuilt on a blocking thread.
pub async fn register_version(
    p: ProjectRef<'_>,
    environment: Environment,
    version: i32,
    vars: &BTreeMap<String, String>,
) {
    if redact::registered_version(&p, environment.as_str()) == Some(version) {
        return;
    }
    let registration = Registration {
        project: p.name.to_string(),
        project_id: p.id,
        team: p.team.to_string(),
        source: environment.as_str().to_string(),
        version: Some(version),
        values: redact::env_candidates(p.name, vars),
    };
    let _ = tokio::task::spawn_blocking(move || redact::set_current_all(vec![registration])).await;
}

/// Registers the values of the latest env version of `p`'s `environment`
/// unless they are registered already (another codeb replica may have
/// written it). For `logs`, whose output is a container's.
pub async fn ensure_registered(
    ctx: &Ctx,
    p: ProjectRef<'_>,
    environment: Environment,
) -> Result<(), OpError> {
    let pool = ctx.db.pool().await?;
    let Some(latest) = store::latest_version_number(pool, p.id, environment.as_str()).await? else {
        return Ok(());
    };
    if redact::registered_version(&p, environment.as_str()) == Some(latest) {
        return Ok(());
    }
    let Some(row) = store::version_get(pool, p.id, environment.as_str(), Some(latest)).await?
    else {
        return Ok(());
    };
    let vars = key(ctx)?
        .open(p.id, environment.as_str(), &row)
        .map_err(OpError::Refused)?;
    register_version(p, environment, row.version, &vars).await;
    Ok(())
}

/// `register_stored` once per process, the first time it is needed: at
/// start for HTTP, before the first tool call over stdio (which opens no
/// connection before a tool needs one). A failure is logged and not
/// retried: `logs` registers a project's latest version itself.
pub async fn register_stored_once(ctx: &Ctx) {
    ctx.stored_secrets_registered
        .get_or_init(|| async {
            match register_stored(ctx).await {
                Ok(n) => tracing::info!(versions = n, "env secrets registered for redaction"),
                Err(e) => {
                    tracing::warn!(error = %e, "env secrets not registered for redaction at start")
                }
            }
        })
        .await;
}

/// Registers, at start-up, the values of every live project's current env
/// versions and of the versions its slots run, so container output
/// (`logs`) is redacted after a restart too. Returns how many versions
/// were registered; versions that cannot be decrypted are skipped (the
/// master key check at start names the problem).
pub async fn register_stored(ctx: &Ctx) -> Result<usize, String> {
    let Some(key) = ctx.env_key.as_deref() else {
        return Ok(0);
    };
    let pool = ctx.db.pool().await.map_err(|e| e.to_string())?;
    let rows = store::versions_in_use(pool)
        .await
        .map_err(|e| e.to_string())?;
    let mut registrations = Vec::with_capacity(rows.len());
    for r in rows {
        let Ok(vars) = key.open(r.project_id, &r.environment, &r.row) else {
            continue;
        };
        registrations.push(Registration {
            values: redact::env_candidates(&r.project, &vars),
            project: r.project,
            project_id: r.project_id,
            team: r.team,
            source: r.environment,
            version: Some(r.row.version),
        });
    }
    let n = registrations.len();
    tokio::task::spawn_blocking(move || redact::set_current_all(registrations))
        .await
        .map_err(|e| e.to_string())?;
    Ok(n)
}

async fn target(ctx: &Ctx, project: &str, environment: Environment) -> Result<Target, OpError> {
    validate_project_name(project).map_err(|e| OpError::Invalid(e.0))?;
    let pool = ctx.db.pool().await?;
    let row = slots::env_view(pool, project, environment)
        .await?
        .ok_or_else(|| OpError::NotFound(project.to_string()))?;
    Ok(Target {
        project_id: row.project_id,
        project: project.to_string(),
        team: row.team_id,
    })
}

/// What env_get returns.
#[derive(Debug, Clone, Serialize)]
pub struct EnvSnapshot {
    /// Version shown (0: no variables yet).
    pub version: i32,
    /// The latest version.
    pub latest: i32,
    /// Keys with fingerprints.
    pub keys: Vec<KeyInfo>,
    /// Author of the version.
    pub created_by: Option<String>,
    /// When it was made (RFC 3339).
    pub created_at: Option<String>,
    /// When it was last written to the servers.
    pub synced_at: Option<String>,
}

/// env_get: key names, fingerprints and flags of a version; never values.
pub async fn get(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    version: Option<i32>,
) -> Result<EnvSnapshot, OpError> {
    if version.is_some_and(|v| v < 1) {
        return Err(OpError::Invalid("version must be 1 or more".into()));
    }
    let t = target(ctx, project, environment).await?;
    let pool = ctx.db.pool().await?;
    let latest = store::version_get(pool, t.project_id, environment.as_str(), None)
        .await?
        .map_or(0, |r| r.version);
    let row = match version {
        None => store::version_get(pool, t.project_id, environment.as_str(), None).await?,
        Some(v) => Some(
            store::version_get(pool, t.project_id, environment.as_str(), Some(v))
                .await?
                .ok_or_else(|| {
                    OpError::Invalid(format!(
                        "{project} {environment} has no env version {v}; the latest is {latest}"
                    ))
                })?,
        ),
    };
    Ok(match row {
        None => EnvSnapshot {
            version: 0,
            latest,
            keys: Vec::new(),
            created_by: None,
            created_at: None,
            synced_at: None,
        },
        Some(r) => EnvSnapshot {
            version: r.version,
            latest,
            keys: r.keys,
            created_by: Some(r.created_by),
            created_at: Some(r.created_at.to_rfc3339()),
            synced_at: r.synced_at.map(|t| t.to_rfc3339()),
        },
    })
}

/// What env_set did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct EnvSetOutcome {
    /// The version before.
    pub previous: i32,
    /// The new version (equal to `previous` when nothing changed or in a dry run).
    pub version: i32,
    /// Key-level changes.
    pub changes: Vec<KeyChange>,
    /// Keys in the new version.
    pub key_count: usize,
}

/// env_set: a new version with `change` applied. `may_change_protected`
/// is true only for owners (and codeb itself).
pub async fn set(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    change: &EnvChange,
    dry_run: bool,
    may_change_protected: bool,
    caller: &Caller,
) -> Result<EnvSetOutcome, OpError> {
    // Values are registered for redaction only once they are written
    // (below): a refused value, a dry run or a missing project registers
    // nothing, and refusals never echo values.
    envvars::validate_change(change, &ctx.config.env.protected_keys, may_change_protected)
        .map_err(|e| OpError::Invalid(e.0))?;
    let t = target(ctx, project, environment).await?;
    let key = key(ctx)?;
    let pool = ctx.db.pool().await?;
    for _ in 0..VERSION_ATTEMPTS {
        let current = store::version_get(pool, t.project_id, environment.as_str(), None).await?;
        let (previous, values, old_keys) = match &current {
            None => (0, BTreeMap::new(), Vec::new()),
            Some(r) => (
                r.version,
                key.open(t.project_id, environment.as_str(), r)
                    .map_err(OpError::Refused)?,
                r.keys.clone(),
            ),
        };
        let next = envvars::apply_change(&values, change).map_err(|e| OpError::Invalid(e.0))?;
        let keys = key.key_infos(&next, &ctx.config.env.protected_keys);
        let changes = envvars::diff(&old_keys, &keys);
        // Every value of the new version stays masked while it is in use,
        // so a version too large for the redaction budget is refused
        // (a dry run says so too).
        let secrets = redact::env_candidates(project, &next);
        if !changes.is_empty() {
            redact::check_budget(&t.project_ref(), environment.as_str(), &secrets)
                .map_err(|e| OpError::Refused(e.0))?;
        }
        if dry_run || changes.is_empty() {
            return Ok(EnvSetOutcome {
                previous,
                version: previous,
                changes,
                key_count: keys.len(),
            });
        }
        let version = previous + 1;
        let (ct, nonce) = key.seal(t.project_id, environment.as_str(), version, &next);
        let inserted = store::version_insert(
            pool,
            &NewVersion {
                project_id: t.project_id,
                environment: environment.as_str(),
                version,
                ciphertext: &ct,
                nonce: &nonce,
                keys: &keys,
                key_id: &key.id,
                created_by: &caller.principal,
            },
        )
        .await?;
        if inserted {
            register_version(t.project_ref(), environment, version, &next).await;
            return Ok(EnvSetOutcome {
                previous,
                version,
                changes,
                key_count: keys.len(),
            });
        }
    }
    Err(OpError::Refused(format!(
        "{project} {environment}: env changed concurrently {VERSION_ATTEMPTS} times in a row; try again"
    )))
}

/// Stores codeb's protected variables (DATABASE_URL, ...) for a fresh
/// (project, environment) as a new env version, as codeb itself; returns
/// the version number. Values are registered for redaction once written.
pub async fn init_protected(
    ctx: &Ctx,
    project: ProjectRef<'_>,
    environment: Environment,
    vars: &BTreeMap<String, String>,
    principal: &str,
) -> Result<i32, String> {
    let project_id = project.id;
    for (k, v) in vars {
        envvars::validate_key(k).map_err(|e| e.0)?;
        envvars::validate_value(k, v).map_err(|e| e.0)?;
    }
    let key = key(ctx).map_err(|e| e.to_string())?;
    let pool = ctx.db.pool().await.map_err(|e| e.to_string())?;
    for _ in 0..VERSION_ATTEMPTS {
        let current = store::version_get(pool, project_id, environment.as_str(), None)
            .await
            .map_err(|e| e.to_string())?;
        let mut next = match &current {
            None => BTreeMap::new(),
            Some(r) => key.open(project_id, environment.as_str(), r)?,
        };
        next.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        let version = current.as_ref().map_or(0, |r| r.version) + 1;
        let keys = key.key_infos(&next, &ctx.config.env.protected_keys);
        let (ct, nonce) = key.seal(project_id, environment.as_str(), version, &next);
        let inserted = store::version_insert(
            pool,
            &NewVersion {
                project_id,
                environment: environment.as_str(),
                version,
                ciphertext: &ct,
                nonce: &nonce,
                keys: &keys,
                key_id: &key.id,
                created_by: principal,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        if inserted {
            register_version(project, environment, version, &next).await;
            return Ok(version);
        }
    }
    Err("env changed concurrently too often; try again".into())
}

/// A version decrypted and rendered for the servers.
pub struct Rendered {
    /// Version number.
    pub version: i32,
    /// The values (secret).
    pub vars: BTreeMap<String, String>,
    /// The env file text (secret).
    pub file: String,
    /// SHA-256 of the file, hex (not secret: keyed by the whole content).
    pub file_sha256: String,
    /// Whether it was synced before.
    pub synced: bool,
}

/// The latest version of a (project, environment), decrypted and rendered
/// (and registered for redaction if it is not yet: another codeb replica
/// may have written it); `None` when it has no variables yet.
pub async fn latest_rendered(
    ctx: &Ctx,
    project_id: i64,
    project: &str,
    environment: Environment,
) -> Result<Option<Rendered>, OpError> {
    let pool = ctx.db.pool().await?;
    let Some(row) = store::version_get(pool, project_id, environment.as_str(), None).await? else {
        return Ok(None);
    };
    let key = key(ctx)?;
    let vars = key
        .open(project_id, environment.as_str(), &row)
        .map_err(OpError::Refused)?;
    let unregistered = ProjectRef {
        name: project,
        id: project_id,
        team: "",
    };
    if redact::registered_version(&unregistered, environment.as_str()) != Some(row.version) {
        if let Some(team) = store::project_team(pool, project_id).await? {
            let p = ProjectRef {
                team: &team,
                ..unregistered
            };
            register_version(p, environment, row.version, &vars).await;
        }
    }
    let file = envvars::render_env_file(project, environment, row.version, &vars);
    let file_sha256 = hex::encode(Sha256::digest(file.as_bytes()));
    Ok(Some(Rendered {
        version: row.version,
        vars,
        file,
        file_sha256,
        synced: row.synced_at.is_some(),
    }))
}

/// Writes `data` atomically to `path` on `server` for operation `op`,
/// journaling each command as `step`; stops at the first failure.
async fn write_remote(
    op: &lifecycle::OpHandle<'_>,
    server: &std::sync::Arc<dyn crate::exec::Remote>,
    path: &str,
    data: &[u8],
    step: &str,
) -> Result<(), String> {
    let cmds = write_file_atomic(path, data.to_vec(), ENV_FILE_MODE).map_err(|e| e.0)?;
    for cmd in cmds {
        op.run_ok_on(server, step, &cmd)
            .await
            .map_err(|e| format!("{e} (writing {path})"))?;
    }
    Ok(())
}

/// Writes a rendered version's env file to the app server and, when
/// `with_backup`, its copy to the backup server (concurrently), journaled
/// as `env_app` / `env_backup`; a version written to both is marked
/// synced. Used by env_sync and by deploy. On failure: (step, message).
pub(crate) async fn write_env_files(
    op: &lifecycle::OpHandle<'_>,
    project_id: i64,
    project: &str,
    environment: Environment,
    r: &Rendered,
    with_backup: bool,
) -> Result<(), (String, String)> {
    let app = op
        .server(ServerRole::App)
        .map_err(|e| ("env_app".to_string(), e))?;
    let app_path = envvars::app_env_path(project, environment);
    let data = r.file.as_bytes();
    let write_app = write_remote(op, &app, &app_path, data, "env_app");
    if !with_backup {
        return write_app.await.map_err(|e| ("env_app".to_string(), e));
    }
    let backup = op
        .server(ServerRole::Backup)
        .map_err(|e| ("env_backup".to_string(), e))?;
    let backup_path = envvars::backup_env_path(project, environment, r.version);
    let (a, b) = tokio::join!(
        write_app,
        write_remote(op, &backup, &backup_path, data, "env_backup")
    );
    a.map_err(|e| ("env_app".to_string(), e))?;
    b.map_err(|e| ("env_backup".to_string(), e))?;
    if let Ok(pool) = op.ctx().db.pool().await {
        let _ = store::mark_synced(pool, project_id, environment.as_str(), r.version).await;
    }
    Ok(())
}

/// What env_sync did.
#[derive(Debug, Clone, Serialize)]
pub struct EnvSyncOutcome {
    /// Operation id (deployment_get shows the journal); none in a dry run.
    pub deployment_id: Option<String>,
    /// Version written.
    pub version: i32,
    /// Path on the app server.
    pub app_path: String,
    /// Path on the backup server.
    pub backup_path: String,
    /// First 12 hex digits of the file's SHA-256.
    pub file_sha256: String,
    /// Keys in the file.
    pub key_count: usize,
    /// Time taken in milliseconds.
    pub duration_ms: u64,
}

/// env_sync: writes the latest version to the app server and a copy to the
/// backup server, under the (project, environment) operation lock.
pub async fn sync(
    ctx: &Ctx,
    project: &str,
    environment: Environment,
    dry_run: bool,
    caller: &Caller,
    progress: ProgressTx,
) -> Result<EnvSyncOutcome, OpError> {
    let started = Instant::now();
    let t = target(ctx, project, environment).await?;
    let rendered = latest_rendered(ctx, t.project_id, &t.project, environment)
        .await?
        .ok_or_else(|| {
            OpError::Refused(format!(
                "{project} {environment} has no env variables yet; env_set some first"
            ))
        })?;
    let app_path = envvars::app_env_path(project, environment);
    let backup_path = envvars::backup_env_path(project, environment, rendered.version);
    let short = rendered.file_sha256[..12].to_string();
    if dry_run {
        return Ok(EnvSyncOutcome {
            deployment_id: None,
            version: rendered.version,
            app_path,
            backup_path,
            file_sha256: short,
            key_count: rendered.vars.len(),
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
    let mut op = lifecycle::begin_op(
        ctx,
        "env_sync",
        project,
        environment,
        caller,
        progress,
        2,
        CancellationToken::new(),
    )
    .await?;
    op.phase(format!(
        "writing env v{} to the app and backup servers",
        rendered.version
    ));
    let r = write_env_files(&op, t.project_id, &t.project, environment, &rendered, true).await;
    if r.is_ok() {
        op.phase(format!("env v{} written", rendered.version));
    }
    match r {
        Ok(()) => {
            let outcome = EnvSyncOutcome {
                deployment_id: Some(op.id().to_string()),
                version: rendered.version,
                app_path,
                backup_path,
                file_sha256: short,
                key_count: rendered.vars.len(),
                duration_ms: started.elapsed().as_millis() as u64,
            };
            op.set_env_version(rendered.version).await;
            let result = serde_json::to_value(&outcome).ok();
            op.finish_ok(result.as_ref()).await?;
            Ok(outcome)
        }
        Err((step, message)) => {
            let id = op.id();
            let err = OpError::Failed {
                operation: "env_sync",
                deployment_id: id,
                step,
                message,
                aftermath: "The version stays unsynced; files already written are complete (atomic) and deploys still sync before they run.".into(),
            };
            op.finish_err(&err.to_string()).await?;
            Err(err)
        }
    }
}

/// The env changes between the versions two slots run (for rollback).
pub async fn version_diff(
    ctx: &Ctx,
    project_id: i64,
    environment: Environment,
    from: Option<i32>,
    to: Option<i32>,
) -> Result<Vec<KeyChange>, OpError> {
    if from == to {
        return Ok(Vec::new());
    }
    let pool = ctx.db.pool().await?;
    let wanted: Vec<i32> = [from, to].into_iter().flatten().collect();
    let found = store::keys_of(pool, project_id, environment.as_str(), &wanted).await?;
    let keys_of = |v: Option<i32>| -> Vec<KeyInfo> {
        v.and_then(|v| found.iter().find(|(n, _)| *n == v).map(|(_, k)| k.clone()))
            .unwrap_or_default()
    };
    Ok(envvars::diff(&keys_of(from), &keys_of(to)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn key_text_must_be_32_hex_bytes() {
        assert!(EnvKey::from_text(KEY).is_ok());
        assert!(EnvKey::from_text(&format!(" {KEY}\n")).is_ok());
        for bad in [
            "",
            "abc",
            &KEY[..62],
            &format!("{KEY}00"),
            &KEY.replace('0', "g"),
        ] {
            let e = EnvKey::from_text(bad).unwrap_err();
            assert!(e.contains("64 hex digits"), "{e}");
        }
        assert!(!format!("{:?}", EnvKey::from_text(KEY).unwrap()).contains(KEY));
    }

    #[test]
    fn seal_open_round_trip_bound_to_its_row() {
        let k = EnvKey::from_text(KEY).unwrap();
        let vars: BTreeMap<String, String> = [
            ("A".to_string(), "canary-seal-value".to_string()),
            ("B".to_string(), "line1\nline2 \"q\" $X ü".to_string()),
        ]
        .into();
        let (ct, nonce) = k.seal(7, "production", 3, &vars);
        assert!(!String::from_utf8_lossy(&ct).contains("canary-seal-value"));
        let row = |version: i32, key_id: &str| EnvVersionRow {
            version,
            ciphertext: ct.clone(),
            nonce: nonce.clone(),
            keys: vec![],
            key_id: key_id.into(),
            created_by: "t".into(),
            created_at: chrono::Utc::now(),
            synced_at: None,
        };
        assert_eq!(k.open(7, "production", &row(3, &k.id)).unwrap(), vars);
        // Another row's identity: refused.
        assert!(k.open(8, "production", &row(3, &k.id)).is_err());
        assert!(k.open(7, "staging", &row(3, &k.id)).is_err());
        assert!(k.open(7, "production", &row(4, &k.id)).is_err());
        // Another key: named as such.
        let other = EnvKey::from_text(&KEY.replace("1f", "ff")).unwrap();
        assert_ne!(other.id, k.id);
        let e = other.open(7, "production", &row(3, &k.id)).unwrap_err();
        assert!(e.contains("master key"), "{e}");
        let e = other.open(7, "production", &row(3, "")).unwrap_err();
        assert!(e.contains("wrong master key"), "{e}");
    }

    #[test]
    fn fingerprints_are_keyed_short_and_stable() {
        let k = EnvKey::from_text(KEY).unwrap();
        let fp = k.fingerprint("true");
        assert_eq!(fp.len(), 12);
        assert_eq!(fp, k.fingerprint("true"));
        assert_ne!(fp, k.fingerprint("false"));
        // Not a plain SHA-256 of the value.
        assert!(!hex::encode(Sha256::digest(b"true")).starts_with(&fp));
        let other = EnvKey::from_text(&KEY.replace("1f", "ff")).unwrap();
        assert_ne!(fp, other.fingerprint("true"));
    }
}
