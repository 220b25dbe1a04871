//! Operations: observe state and servers, plan, apply. Tool handlers call
//! these; these call `state`, `plan` and `exec`.

pub mod audit;
pub mod backup;
pub mod caddy;
pub mod critical;
pub mod domain_delete;
pub mod domains;
pub mod drift;
pub mod env;
pub mod health;
pub mod lease;
pub mod lifecycle;
pub mod observe;
pub mod pdns;
pub mod probe;
pub mod project;
pub mod project_delete;
pub mod redact;
pub mod restore;
pub mod slots;
pub mod storage;

use std::sync::Arc;

use crate::config::Config;
use crate::exec::Fleet;
use crate::state::Db;

/// Shared context of a running codeb: built once, cloned into every
/// MCP session.
pub struct Ctx {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Executors per server.
    pub fleet: Fleet,
    /// State database.
    pub db: Db,
    /// Briefly cached observations of the servers.
    pub observer: observe::Observer,
    /// This process's identity as a lease owner.
    pub instance_id: String,
    /// Set once the codeb podman network is known to exist on the app
    /// server, so deploys skip asking again.
    pub app_network_ready: std::sync::atomic::AtomicBool,
    /// The PowerDNS API client last handed out (see `pdns::pdns_client`).
    pub pdns: pdns::PdnsCache,
    /// The env master key, when configured (config validation checked it).
    pub env_key: Option<Arc<env::EnvKey>>,
    /// The audit log of tool calls (one writer per process).
    pub audit: audit::AuditLog,
    /// Set once the stored env secrets were registered for redaction
    /// (`env::register_stored_once`).
    pub stored_secrets_registered: tokio::sync::OnceCell<()>,
}

impl Ctx {
    /// Context from config; opens no connection.
    pub fn new(config: Config) -> Self {
        // codeb's own credentials never appear in output.
        for secret in [
            config.database_password(),
            config.pdns_api_key(),
            config.redis_admin_password(),
            config.master_key_text(),
        ]
        .into_iter()
        .flatten()
        .flatten()
        {
            redact::register(&secret);
        }
        let fleet = Fleet::from_config(&config);
        let db = Db::from_config(&config);
        Self::from_parts(config, fleet, db)
    }

    /// Context from given parts (tests use a fake fleet).
    pub fn from_parts(config: Config, fleet: Fleet, db: Db) -> Self {
        let env_key = env::EnvKey::from_config(&config)
            .ok()
            .flatten()
            .map(Arc::new);
        let audit = audit::AuditLog::new(db.clone());
        Self {
            config: Arc::new(config),
            fleet,
            db,
            audit,
            observer: observe::Observer::default(),
            instance_id: format!(
                "codeb-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            pdns: pdns::PdnsCache::default(),
            app_network_ready: std::sync::atomic::AtomicBool::new(false),
            env_key,
            stored_secrets_registered: tokio::sync::OnceCell::new(),
        }
    }

    /// How long a replaced release stays in grace.
    pub fn grace_period(&self) -> chrono::Duration {
        chrono::Duration::seconds(
            self.config
                .lifecycle
                .grace_period_secs
                .min(i64::MAX as u64 / 2) as i64,
        )
    }
}
