//! Configuration: one TOML file (`codeb.toml`) merged with `CODEB_*`
//! environment overrides, then validated.
//!
//! Secrets (database password, PowerDNS API key, master key) never come from
//! the TOML itself: the file may only name a file holding them, or the value
//! comes from an environment variable. Every validation error names the field
//! it is about, so `codeb` can print one line and exit with code 2.
//!
//! Environment overrides use a double underscore for nesting:
//! `CODEB_DATABASE__URL`, `CODEB_SSH__CONNECT_TIMEOUT_SECS`, ... Variables
//! without a double underscore (`CODEB_CONFIG`, `CODEB_DATABASE_PASSWORD`,
//! `CODEB_PDNS_API_KEY`, `CODEB_MASTER_KEY`, `CODEB_API_KEY`, `CODEB_LOG`)
//! are read directly by the code that needs them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::model::{validate_hostname, ServerRole};

/// Default path of the config file when neither `--config` nor `CODEB_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/codeb/codeb.toml";

/// A configuration problem, always about one named field.
#[derive(Debug, thiserror::Error)]
#[error("config error: {field}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending field (`servers[1].address`), or `file`.
    pub field: String,
    /// What is wrong and, where useful, what to do.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration, as read from `codeb.toml` plus overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// MCP transport settings.
    #[serde(default)]
    pub mcp: McpConfig,
    /// codeb's own state database.
    pub database: DatabaseConfig,
    /// Route zone and the domains routed hostnames are built from.
    pub routing: RoutingConfig,
    /// PowerDNS HTTP API on the app server.
    pub pdns: PdnsConfig,
    /// Caddy on the app server.
    #[serde(default)]
    pub caddy: CaddyConfig,
    /// Image registry on the storage server.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// SSH connection settings shared by every server.
    #[serde(default)]
    pub ssh: SshConfig,
    /// The fleet.
    pub servers: Vec<ServerConfig>,
    /// Streaming server (Centrifugo) settings.
    #[serde(default)]
    pub streaming: StreamingConfig,
    /// Blue-green lifecycle settings.
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// Per-project resources on the storage server (databases, Redis users, dumps).
    #[serde(default)]
    pub storage: StorageConfig,
    /// Where codeb's own secrets come from (files; values never in the TOML).
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// Environment variable settings.
    #[serde(default)]
    pub env: EnvConfig,
    /// Public DNS of domains set up with domain_setup (DESIGN §4).
    #[serde(default)]
    pub dns: DnsConfig,
    /// Access control of the HTTP transport (DESIGN §6).
    #[serde(default)]
    pub auth: AuthConfig,
}

/// Access control of the HTTP transport (DESIGN §6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Requests one API key may make per minute (burst of the same size,
    /// refilled evenly); the next one gets HTTP 429 with Retry-After.
    #[serde(default = "default_rate_limit_per_minute")]
    pub rate_limit_per_minute: u32,
    /// How long a pending approval of a critical operation stays usable,
    /// in seconds (input-required confirmations have their own 10 minutes).
    #[serde(default = "default_approval_ttl_secs")]
    pub approval_ttl_secs: u64,
    /// Database lookups per minute of API keys this server never verified
    /// (burst of the same size): a flood of guessed keys gets 429 once
    /// they are spent, while keys verified before keep working.
    #[serde(default = "default_unknown_key_lookups_per_minute")]
    pub unknown_key_lookups_per_minute: u32,
    /// Per critical tool, the environments where only an approval by a
    /// second principal counts as its confirmation (DESIGN §6).
    #[serde(default)]
    pub approval_required: ApprovalPolicy,
    /// `project_delete` of an environment whose database holds data needs
    /// a verified backup of it younger than this many hours; 0 disables.
    #[serde(default = "default_delete_backup_max_age_hours")]
    pub delete_backup_max_age_hours: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: default_rate_limit_per_minute(),
            approval_ttl_secs: default_approval_ttl_secs(),
            unknown_key_lookups_per_minute: default_unknown_key_lookups_per_minute(),
            approval_required: ApprovalPolicy::default(),
            delete_backup_max_age_hours: default_delete_backup_max_age_hours(),
        }
    }
}

/// Which confirmations count, per critical tool (DESIGN §6): in the
/// environments listed for a tool, the human's confirmation in the
/// requesting client (elicitation) is not enough — the call becomes a
/// pending approval that another principal of the team must `approve`.
/// Elsewhere elicitation suffices. Each tool has its own default, so
/// setting one keeps the others'.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Environments of `project_delete` (default production). A project
    /// delete acts on every environment that holds something: a deployed
    /// slot, a domain, or a database with data.
    #[serde(default = "production_only")]
    pub project_delete: Vec<String>,
    /// Environments of `backup_restore` (default production): the
    /// environment of the backup restored.
    #[serde(default = "production_only")]
    pub backup_restore: Vec<String>,
    /// Environments of `domain_delete` (default none): the environment the
    /// domain routes to.
    #[serde(default)]
    pub domain_delete: Vec<String>,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            project_delete: production_only(),
            backup_restore: production_only(),
            domain_delete: Vec::new(),
        }
    }
}

impl ApprovalPolicy {
    /// The environments listed for `tool` (none for any other tool).
    pub fn environments(&self, tool: &str) -> &[String] {
        match tool {
            "project_delete" => &self.project_delete,
            "backup_restore" => &self.backup_restore,
            "domain_delete" => &self.domain_delete,
            _ => &[],
        }
    }

    /// The first of `touched` for which `tool` needs a second principal.
    pub fn second_principal_for(
        &self,
        tool: &str,
        touched: &[crate::model::Environment],
    ) -> Option<crate::model::Environment> {
        let listed = self.environments(tool);
        touched
            .iter()
            .copied()
            .find(|e| listed.iter().any(|l| l == e.as_str()))
    }
}

fn production_only() -> Vec<String> {
    vec!["production".into()]
}

fn default_unknown_key_lookups_per_minute() -> u32 {
    600
}

fn default_delete_backup_max_age_hours() -> u32 {
    24
}

fn default_approval_ttl_secs() -> u64 {
    3600
}

fn default_rate_limit_per_minute() -> u32 {
    100
}

/// Public DNS records of domains (DESIGN §4).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Zones codeb may create in PowerDNS when a domain under them is set up
    /// (e.g. `["example.com"]`). Domains in zones PowerDNS already holds
    /// work without being listed.
    #[serde(default)]
    pub managed_zones: Vec<String>,
    /// IPv4 address A records point at; default: the app server's address
    /// when it is an IPv4 address.
    #[serde(default)]
    pub app_ipv4: Option<std::net::Ipv4Addr>,
    /// IPv6 address AAAA records point at; none when unset.
    #[serde(default)]
    pub app_ipv6: Option<std::net::Ipv6Addr>,
    /// Authoritative DNS server codeb asks to verify records
    /// (`address:port`); default: the app server's address, port 53.
    #[serde(default)]
    pub authoritative: Option<std::net::SocketAddr>,
    /// Name servers of zones codeb creates; default `ns1.{routing.base_domain}`.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

impl Config {
    /// The IPv4 address domains point at: `dns.app_ipv4`, else the app
    /// server's address when it is an IPv4 address.
    pub fn domain_ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.dns.app_ipv4.or_else(|| {
            self.app_server()
                .and_then(|s| s.address.parse::<std::net::Ipv4Addr>().ok())
        })
    }

    /// The authoritative DNS server to verify records with:
    /// `dns.authoritative`, else the app server's address on port 53.
    pub fn dns_authoritative(&self) -> Option<std::net::SocketAddr> {
        self.dns.authoritative.or_else(|| {
            self.app_server()
                .and_then(|s| s.address.parse::<IpAddr>().ok())
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
    }

    /// Name servers given to zones codeb creates.
    pub fn dns_nameservers(&self) -> Vec<String> {
        if self.dns.nameservers.is_empty() {
            vec![format!(
                "ns1.{}",
                self.routing.base_domain.trim_end_matches('.')
            )]
        } else {
            self.dns.nameservers.clone()
        }
    }

    fn app_server(&self) -> Option<&ServerConfig> {
        self.servers
            .iter()
            .find(|s| s.roles.contains(&crate::model::ServerRole::App))
    }
}

/// Environment variable settings (DESIGN §3).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Keys protected like DATABASE_URL (only owners may change them), besides the built-in five.
    #[serde(default)]
    pub protected_keys: Vec<String>,
}

/// Per-project resources on the storage server (DESIGN §1, §3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Address containers use to reach PostgreSQL and Redis on the storage
    /// server (in DATABASE_URL / REDIS_URL); default: the storage server's address.
    #[serde(default)]
    pub app_host: Option<String>,
    /// PostgreSQL port on the storage server.
    #[serde(default = "default_pg_port")]
    pub postgres_port: u16,
    /// Redis port on the storage server.
    #[serde(default = "default_redis_port")]
    pub redis_port: u16,
    /// File holding the password of Redis's admin (default) user; also
    /// `CODEB_REDIS_ADMIN_PASSWORD`. None: Redis has no admin password.
    #[serde(default)]
    pub redis_admin_password_file: Option<PathBuf>,
    /// OS user on the storage server that runs PostgreSQL's client tools;
    /// its peer authentication over the unix socket is the superuser that
    /// reads the catalogue in the `postgres` database (PostgreSQL's
    /// superuser account).
    #[serde(default = "default_pg_os_user")]
    pub pg_os_user: String,
    /// PostgreSQL's unix socket directory on the storage server.
    #[serde(default = "default_pg_socket_dir")]
    pub pg_socket_dir: String,
    /// Address on the storage server where `pg_dump`, the restore and the
    /// row counts log in to a project's database as the project's own role
    /// (password authentication over TCP): pg_hba.conf must allow
    /// scram-sha-256 logins from here. Default `127.0.0.1`.
    #[serde(default = "default_tenant_pg_host")]
    pub tenant_pg_host: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            app_host: None,
            postgres_port: default_pg_port(),
            redis_port: default_redis_port(),
            redis_admin_password_file: None,
            pg_os_user: default_pg_os_user(),
            pg_socket_dir: default_pg_socket_dir(),
            tenant_pg_host: default_tenant_pg_host(),
        }
    }
}

fn default_pg_port() -> u16 {
    5432
}
fn default_redis_port() -> u16 {
    6379
}
fn default_pg_os_user() -> String {
    "postgres".into()
}
fn default_pg_socket_dir() -> String {
    "/run/postgresql".into()
}
fn default_tenant_pg_host() -> String {
    "127.0.0.1".into()
}

/// Where codeb's own secrets come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// File holding the 32-byte env master key as 64 hex digits; also
    /// `CODEB_MASTER_KEY`. Env values are encrypted with it (DESIGN §3).
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
}

/// Blue-green lifecycle settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// How long a replaced release stays available for rollback, in seconds (default 48 h).
    #[serde(default = "default_grace_secs")]
    pub grace_period_secs: u64,
    /// How long a new slot may take to answer its health check, in seconds.
    #[serde(default = "default_health_deadline_secs")]
    pub health_deadline_secs: u64,
    /// How long a running operation's lease lasts without a heartbeat, in
    /// seconds (default 60, at least 3). The heartbeat renews it every third
    /// of this; when a codeb dies, its operation is recovered by the next
    /// operation on the same project environment once the lease has expired.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            grace_period_secs: default_grace_secs(),
            health_deadline_secs: default_health_deadline_secs(),
            lease_secs: default_lease_secs(),
        }
    }
}

impl LifecycleConfig {
    /// The lease of a running operation.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
    /// How often a running operation renews its lease: a third of it, so
    /// two heartbeats may be missed before it expires.
    pub fn lease_heartbeat(&self) -> Duration {
        self.lease() / 3
    }
}

/// Shortest accepted `lifecycle.lease_secs`: a heartbeat every second.
pub const MIN_LEASE_SECS: u64 = 3;
/// Longest accepted `lifecycle.lease_secs` (a day): a crashed codeb's
/// operation blocks its project environment for that long.
pub const MAX_LEASE_SECS: u64 = 24 * 3600;

fn default_lease_secs() -> u64 {
    60
}

fn default_health_deadline_secs() -> u64 {
    crate::plan::deploy::HEALTH_DEADLINE_SECS
}

fn default_grace_secs() -> u64 {
    48 * 3600
}

/// MCP transport settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// `Host` header values the HTTP transport accepts (host or host:port).
    #[serde(default = "default_allowed_hosts")]
    pub allowed_hosts: Vec<String>,
    /// `Origin` header values the HTTP transport accepts (scheme://host:port).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest accepted HTTP request body, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: default_allowed_hosts(),
            allowed_origins: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

fn default_allowed_hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

/// codeb's state database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/db` without a password.
    pub url: String,
    /// File holding the password (else `CODEB_DATABASE_PASSWORD`).
    pub password_file: Option<PathBuf>,
    /// Connections in the pool.
    #[serde(default = "default_pool_size")]
    pub max_connections: u32,
    /// How long to wait for a database connection before failing, in seconds.
    #[serde(default = "default_db_timeout")]
    pub connect_timeout_secs: u64,
}

fn default_pool_size() -> u32 {
    8
}
fn default_db_timeout() -> u64 {
    5
}

/// Route zone and domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// PowerDNS zone that holds the SRV route rrsets.
    pub route_zone: String,
    /// Target name of the SRV records (resolves to the app server's loopback).
    pub route_target: String,
    /// Production is `{project}.{base_domain}`.
    pub base_domain: String,
    /// Preview hosts are `{project}-{env}-{slot}.{preview_domain}`.
    pub preview_domain: String,
    /// Where Caddy answers HTTP, as seen from codeb (used to verify routes).
    pub public_http: String,
}

/// PowerDNS HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdnsConfig {
    /// API base URL as seen on the app server (reached through an SSH forward).
    pub api_url: String,
    /// File holding the API key (else `CODEB_PDNS_API_KEY`).
    pub api_key_file: Option<PathBuf>,
    /// PowerDNS server id, normally `localhost`.
    #[serde(default = "default_pdns_server_id")]
    pub server_id: String,
}

fn default_pdns_server_id() -> String {
    "localhost".into()
}

/// Caddy on the app server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaddyConfig {
    /// Caddy admin API address on the app server's loopback.
    #[serde(default = "default_caddy_admin")]
    pub admin_addr: String,
    /// Path of Caddy's one static config on the app server.
    #[serde(default = "default_caddy_config_path")]
    pub config_path: String,
}

impl Default for CaddyConfig {
    fn default() -> Self {
        Self {
            admin_addr: default_caddy_admin(),
            config_path: default_caddy_config_path(),
        }
    }
}

fn default_caddy_admin() -> String {
    "127.0.0.1:2019".into()
}
fn default_caddy_config_path() -> String {
    "/etc/caddy/Caddyfile".into()
}

/// Image registry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host:port` of the registry images are pulled from.
    #[serde(default)]
    pub address: String,
}

/// SSH settings shared by every server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// Seconds to wait for a TCP/SSH connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Default upper bound for one remote command, in seconds.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
    /// Concurrent channels per server.
    #[serde(default = "default_max_channels")]
    pub max_channels: usize,
    /// Seconds between SSH keepalives on the master connection.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: default_connect_timeout(),
            command_timeout_secs: default_command_timeout(),
            max_channels: default_max_channels(),
            keepalive_secs: default_keepalive(),
        }
    }
}

fn default_connect_timeout() -> u64 {
    5
}
fn default_command_timeout() -> u64 {
    60
}
fn default_max_channels() -> usize {
    8
}
fn default_keepalive() -> u64 {
    5
}

impl SshConfig {
    /// Connect timeout as a `Duration`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    /// Command timeout as a `Duration`.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
}

/// One server of the fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unique short name (`app`, `storage`, ...).
    pub name: String,
    /// Roles this server holds.
    pub roles: Vec<ServerRole>,
    /// IP address or DNS name; `local` runs commands as local processes.
    pub address: String,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    /// SSH user.
    #[serde(default = "default_ssh_user")]
    pub ssh_user: String,
    /// Private key file for SSH.
    pub ssh_key_file: Option<PathBuf>,
    /// Pinned known_hosts file (strict checking is always on).
    pub known_hosts_file: Option<PathBuf>,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_ssh_user() -> String {
    "root".into()
}

impl ServerConfig {
    /// True when codeb runs on this server itself.
    pub fn is_local(&self) -> bool {
        self.address == "local"
    }
}

/// Streaming server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingConfig {
    /// Health URL as seen on the streaming server.
    #[serde(default = "default_streaming_health")]
    pub health_url: String,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            health_url: default_streaming_health(),
        }
    }
}

fn default_streaming_health() -> String {
    "http://127.0.0.1:8000/health".into()
}

impl Config {
    /// Reads `path`, merges `CODEB_*__*` overrides from `env`, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, Env::prefixed("CODEB_"))
    }

    fn load_with_env(path: &Path, env: Env) -> Result<Self, ConfigError> {
        // figment treats a missing file as empty; an operator who names a
        // file that is not there wants to hear about it.
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(ConfigError::new(
                    "file",
                    format!("{} is not a regular file", path.display()),
                ))
            }
            Err(e) => {
                return Err(ConfigError::new(
                    "file",
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        }
        if let Err(e) = std::fs::read_to_string(path) {
            return Err(ConfigError::new(
                "file",
                format!("cannot read {}: {e}", path.display()),
            ));
        }
        let env = env.filter(|k| k.as_str().contains("__")).split("__");
        let config: Config = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(env)
            .extract()
            .map_err(figment_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field that deserialization cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.rate_limit_per_minute == 0 {
            return Err(ConfigError::new(
                "auth.rate_limit_per_minute",
                "must be at least 1 (requests per minute per API key)",
            ));
        }
        if !(60..=7 * 24 * 3600).contains(&self.auth.approval_ttl_secs) {
            return Err(ConfigError::new(
                "auth.approval_ttl_secs",
                "must be between 60 (one minute) and 604800 (one week)",
            ));
        }
        if self.auth.unknown_key_lookups_per_minute == 0 {
            return Err(ConfigError::new(
                "auth.unknown_key_lookups_per_minute",
                "must be at least 1 (database lookups per minute of keys never verified)",
            ));
        }
        for (tool, envs) in [
            (
                "project_delete",
                &self.auth.approval_required.project_delete,
            ),
            (
                "backup_restore",
                &self.auth.approval_required.backup_restore,
            ),
            ("domain_delete", &self.auth.approval_required.domain_delete),
        ] {
            if let Some(bad) = envs
                .iter()
                .find(|e| crate::model::Environment::parse(e).is_none())
            {
                return Err(ConfigError::new(
                    format!("auth.approval_required.{tool}"),
                    format!(
                        "{} is not an environment; use production, staging or preview",
                        crate::model::describe_input(bad)
                    ),
                ));
            }
        }
        if self.auth.delete_backup_max_age_hours > 24 * 365 {
            return Err(ConfigError::new(
                "auth.delete_backup_max_age_hours",
                "must be at most 8760 (one year); 0 turns the backup check off",
            ));
        }
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return Err(ConfigError::new(
                "database.url",
                "must start with postgres:// or postgresql://",
            ));
        }
        if self.database.url.contains(':') {
            // A password in the URL would put a secret into the TOML file.
            if let Some(userinfo) = self
                .database
                .url
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split('@').next().filter(|_| rest.contains('@')))
            {
                if userinfo.contains(':') {
                    return Err(ConfigError::new(
                        "database.url",
                        "must not contain a password; use database.password_file or CODEB_DATABASE_PASSWORD",
                    ));
                }
            }
        }
        if let Some(p) = &self.database.password_file {
            check_readable("database.password_file", p)?;
        }
        if let Some(p) = &self.pdns.api_key_file {
            check_readable("pdns.api_key_file", p)?;
        }
        if let Some(p) = &self.storage.redis_admin_password_file {
            check_readable("storage.redis_admin_password_file", p)?;
        }
        if let Some(p) = &self.secrets.master_key_file {
            check_readable("secrets.master_key_file", p)?;
        }
        crate::ops::env::EnvKey::from_config(self)?;
        for (i, k) in self.env.protected_keys.iter().enumerate() {
            crate::plan::envvars::validate_key(k)
                .map_err(|e| ConfigError::new(format!("env.protected_keys[{i}]"), e.0))?;
        }
        if let Some(h) = &self.storage.app_host {
            if h.parse::<IpAddr>().is_err() {
                validate_hostname(h).map_err(|e| ConfigError::new("storage.app_host", e))?;
            }
        }
        let h = &self.storage.tenant_pg_host;
        if h.parse::<IpAddr>().is_err() {
            validate_hostname(h).map_err(|e| ConfigError::new("storage.tenant_pg_host", e))?;
        }
        if self.storage.pg_os_user.is_empty()
            || self.storage.pg_os_user.starts_with('-')
            || !self
                .storage
                .pg_os_user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::new(
                "storage.pg_os_user",
                "must be a plain user name",
            ));
        }
        if !self.storage.pg_socket_dir.starts_with('/')
            || !self
                .storage
                .pg_socket_dir
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b))
            || self.storage.pg_socket_dir.contains("..")
        {
            return Err(ConfigError::new(
                "storage.pg_socket_dir",
                "must be an absolute plain path",
            ));
        }
        for (field, value) in [
            ("routing.route_zone", &self.routing.route_zone),
            ("routing.route_target", &self.routing.route_target),
            ("routing.base_domain", &self.routing.base_domain),
            ("routing.preview_domain", &self.routing.preview_domain),
        ] {
            validate_hostname(value).map_err(|e| ConfigError::new(field, e))?;
        }
        for (i, z) in self.dns.managed_zones.iter().enumerate() {
            crate::model::normalize_domain(z, false)
                .map_err(|e| ConfigError::new(format!("dns.managed_zones[{i}]"), e.0))?;
        }
        for (i, n) in self.dns.nameservers.iter().enumerate() {
            crate::model::normalize_domain(n, false)
                .map_err(|e| ConfigError::new(format!("dns.nameservers[{i}]"), e.0))?;
        }
        if self.servers.is_empty() {
            return Err(ConfigError::new("servers", "at least one server is needed"));
        }
        if self.ssh.max_channels == 0 || self.ssh.max_channels > 64 {
            return Err(ConfigError::new(
                "ssh.max_channels",
                "must be between 1 and 64",
            ));
        }
        if self.ssh.connect_timeout_secs == 0 || self.ssh.command_timeout_secs == 0 {
            return Err(ConfigError::new(
                "ssh",
                "connect_timeout_secs and command_timeout_secs must be at least 1",
            ));
        }
        if !(MIN_LEASE_SECS..=MAX_LEASE_SECS).contains(&self.lifecycle.lease_secs) {
            return Err(ConfigError::new(
                "lifecycle.lease_secs",
                format!(
                    "must be from {MIN_LEASE_SECS} to {MAX_LEASE_SECS} (the heartbeat runs every third of it)"
                ),
            ));
        }
        let mut names = BTreeSet::new();
        let mut roles = BTreeSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            let f = |name: &str| format!("servers[{i}].{name}");
            if !crate::model::is_valid_server_name(&s.name) {
                return Err(ConfigError::new(
                    f("name"),
                    format!(
                        "{:?} is not a valid server name (lowercase letters, digits, '-')",
                        s.name
                    ),
                ));
            }
            if !names.insert(s.name.clone()) {
                return Err(ConfigError::new(
                    f("name"),
                    format!("duplicate server name {:?}", s.name),
                ));
            }
            if s.roles.is_empty() {
                return Err(ConfigError::new(f("roles"), "at least one role is needed"));
            }
            roles.extend(s.roles.iter().copied());
            if !s.is_local() {
                if s.address.parse::<IpAddr>().is_err() {
                    validate_hostname(&s.address).map_err(|e| {
                        ConfigError::new(
                            f("address"),
                            format!("{:?} is not an IP address or host name: {e}", s.address),
                        )
                    })?;
                }
                if !crate::model::is_valid_ssh_user(&s.ssh_user) {
                    return Err(ConfigError::new(
                        f("ssh_user"),
                        format!("{:?} is not a valid user name", s.ssh_user),
                    ));
                }
                let key = s.ssh_key_file.as_ref().ok_or_else(|| {
                    ConfigError::new(f("ssh_key_file"), "required for a server that is not local")
                })?;
                check_readable(&f("ssh_key_file"), key)?;
                let kh = s.known_hosts_file.as_ref().ok_or_else(|| {
                    ConfigError::new(
                        f("known_hosts_file"),
                        "required: host keys are always checked strictly",
                    )
                })?;
                check_readable(&f("known_hosts_file"), kh)?;
            }
        }
        for role in ServerRole::ALL {
            if !roles.contains(&role) {
                return Err(ConfigError::new(
                    "servers",
                    format!("no server holds the {role} role"),
                ));
            }
        }
        Ok(())
    }

    /// The first server holding `role`.
    pub fn server_for(&self, role: ServerRole) -> &ServerConfig {
        self.servers
            .iter()
            .find(|s| s.roles.contains(&role))
            .expect("validate() guarantees every role has a server")
    }

    /// The database password, from `CODEB_DATABASE_PASSWORD` or the password file.
    pub fn database_password(&self) -> Result<Option<String>, ConfigError> {
        secret_from(
            "CODEB_DATABASE_PASSWORD",
            "database.password_file",
            self.database.password_file.as_deref(),
        )
    }

    /// Redis's admin password, from `CODEB_REDIS_ADMIN_PASSWORD` or the file.
    pub fn redis_admin_password(&self) -> Result<Option<String>, ConfigError> {
        secret_from(
            "CODEB_REDIS_ADMIN_PASSWORD",
            "storage.redis_admin_password_file",
            self.storage.redis_admin_password_file.as_deref(),
        )
    }

    /// The env master key text, from `CODEB_MASTER_KEY` or the key file.
    pub fn master_key_text(&self) -> Result<Option<String>, ConfigError> {
        secret_from(
            "CODEB_MASTER_KEY",
            "secrets.master_key_file",
            self.secrets.master_key_file.as_deref(),
        )
    }

    /// The address containers use to reach the storage server's databases.
    pub fn storage_app_host(&self) -> String {
        self.storage
            .app_host
            .clone()
            .unwrap_or_else(|| self.server_for(ServerRole::Storage).address.clone())
    }

    /// The PowerDNS API key, from `CODEB_PDNS_API_KEY` or the key file.
    pub fn pdns_api_key(&self) -> Result<Option<String>, ConfigError> {
        secret_from(
            "CODEB_PDNS_API_KEY",
            "pdns.api_key_file",
            self.pdns.api_key_file.as_deref(),
        )
    }
}

fn secret_from(var: &str, field: &str, file: Option<&Path>) -> Result<Option<String>, ConfigError> {
    if let Ok(v) = std::env::var(var) {
        if !v.is_empty() {
            return Ok(Some(v));
        }
    }
    match file {
        None => Ok(None),
        Some(p) => std::fs::read_to_string(p)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| ConfigError::new(field, format!("cannot read {}: {e}", p.display()))),
    }
}

fn check_readable(field: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| ConfigError::new(field, format!("cannot read {}: {e}", path.display())))
}

fn figment_error(e: figment::Error) -> ConfigError {
    // figment keeps the path of the failing key; report it as the field.
    let field = if e.path.is_empty() {
        "file".to_string()
    } else {
        e.path.join(".")
    };
    let message = match &e.kind {
        figment::error::Kind::UnknownField(name, _) => format!("unknown field `{name}`"),
        figment::error::Kind::MissingField(name) => format!("missing field `{name}`"),
        other => other.to_string(),
    };
    let named: Option<String> = match &e.kind {
        figment::error::Kind::UnknownField(name, _) => Some(name.to_string()),
        figment::error::Kind::MissingField(name) => Some(name.to_string()),
        _ => None,
    };
    let field = match named {
        Some(name) if field == "file" => name,
        Some(name) if !field.ends_with(name.as_str()) => format!("{field}.{name}"),
        _ => field,
    };
    ConfigError::new(field, message.replace('\n', " "))
}

/// A minimal config for unit tests: one local server with every role and
/// a state database nothing answers at (127.0.0.1:1).
#[cfg(test)]
pub(crate) const TEST_LOCAL_CONFIG: &str = r#"
[database]
url = "postgres://codeb@127.0.0.1:1/codeb"
[routing]
route_zone = "route.codeb.test"
route_target = "app.route.codeb.test"
base_domain = "codeb.test"
preview_domain = "preview.codeb.test"
public_http = "http://127.0.0.1:80"
[pdns]
api_url = "http://127.0.0.1:8081"
[[servers]]
name = "app"
roles = ["app", "storage", "streaming", "backup"]
address = "local"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_fixture(dir: &Path, body: &str) -> PathBuf {
        let key = dir.join("key");
        std::fs::write(&key, "k").unwrap();
        let kh = dir.join("known_hosts");
        std::fs::write(&kh, "").unwrap();
        let path = dir.join("codeb.toml");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(
            body.replace("KEY", key.to_str().unwrap())
                .replace("KH", kh.to_str().unwrap())
                .as_bytes(),
        )
        .unwrap();
        path
    }

    const GOOD: &str = r#"
[database]
url = "postgres://codeb@10.0.0.2:5432/codeb"
[routing]
route_zone = "route.codeb.test"
route_target = "app.route.codeb.test"
base_domain = "codeb.test"
preview_domain = "preview.codeb.test"
public_http = "http://10.0.0.1:80"
[pdns]
api_url = "http://127.0.0.1:8081"
[[servers]]
name = "app"
roles = ["app", "streaming", "backup"]
address = "10.0.0.1"
ssh_key_file = "KEY"
known_hosts_file = "KH"
[[servers]]
name = "storage"
roles = ["storage"]
address = "storage.example.org"
ssh_key_file = "KEY"
known_hosts_file = "KH"
"#;

    fn load(body: &str) -> Result<Config, ConfigError> {
        let dir = tempdir();
        let path = write_fixture(&dir, body);
        Config::load_with_env(&path, Env::prefixed("CODEB_TEST_NOTHING_"))
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("codeb-config-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.ssh.max_channels, 8);
        assert_eq!(c.mcp.max_body_bytes, 1024 * 1024);
        assert_eq!(c.server_for(ServerRole::Storage).name, "storage");
        assert_eq!(c.lifecycle.lease_secs, 60);
        assert_eq!(c.lifecycle.lease_heartbeat(), Duration::from_secs(20));
    }

    #[test]
    fn the_confirmation_policy_defaults_per_tool_and_names_bad_environments() {
        use crate::model::Environment::{Preview, Production, Staging};
        let c = load(GOOD).unwrap();
        let policy = &c.auth.approval_required;
        assert_eq!(
            policy.second_principal_for("project_delete", &[Staging, Production]),
            Some(Production)
        );
        assert_eq!(
            policy.second_principal_for("project_delete", &[Staging]),
            None
        );
        assert_eq!(
            policy.second_principal_for("domain_delete", &[Production]),
            None
        );
        assert_eq!(c.auth.delete_backup_max_age_hours, 24);
        // Setting one tool keeps the others' defaults.
        let c = load(&format!(
            "{GOOD}[auth.approval_required]\ndomain_delete = [\"production\", \"preview\"]\n"
        ))
        .unwrap();
        let policy = &c.auth.approval_required;
        assert_eq!(
            policy.second_principal_for("domain_delete", &[Preview]),
            Some(Preview)
        );
        assert_eq!(
            policy.second_principal_for("backup_restore", &[Production]),
            Some(Production)
        );
        let e = load(&format!(
            "{GOOD}[auth.approval_required]\nproject_delete = [\"prod\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.field, "auth.approval_required.project_delete", "{e}");
        let e = load(&format!(
            "{GOOD}[auth.approval_required]\nproject_remove = []\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("project_remove"), "{e}");
        let e = load(&format!(
            "{GOOD}[auth]\nunknown_key_lookups_per_minute = 0\n"
        ))
        .unwrap_err();
        assert_eq!(e.field, "auth.unknown_key_lookups_per_minute", "{e}");
    }

    #[test]
    fn lease_is_configurable_and_bounded() {
        let c = load(&format!("{GOOD}\n[lifecycle]\nlease_secs = 6\n")).unwrap();
        assert_eq!(c.lifecycle.lease(), Duration::from_secs(6));
        assert_eq!(c.lifecycle.lease_heartbeat(), Duration::from_secs(2));
        let e = load(&format!("{GOOD}\n[lifecycle]\nlease_secs = 2\n")).unwrap_err();
        assert_eq!(e.field, "lifecycle.lease_secs", "{e}");
    }

    #[test]
    fn missing_file_names_the_file() {
        let e = Config::load(Path::new("/nonexistent/codeb.toml")).unwrap_err();
        assert_eq!(e.field, "file");
        assert!(e.to_string().contains("/nonexistent/codeb.toml"), "{e}");
    }

    #[test]
    fn unknown_field_is_named() {
        let e = load(&GOOD.replace("[pdns]", "[pdns]\nbogus = 1")).unwrap_err();
        assert_eq!(e.field, "pdns.bogus", "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn invalid_host_is_named() {
        let e = load(&GOOD.replace("storage.example.org", "-bad host")).unwrap_err();
        assert_eq!(e.field, "servers[1].address", "{e}");
    }

    #[test]
    fn unreadable_key_is_named() {
        let dir = tempdir();
        let path = write_fixture(&dir, GOOD);
        std::fs::remove_file(dir.join("key")).unwrap();
        let e = Config::load_with_env(&path, Env::prefixed("CODEB_TEST_NOTHING_")).unwrap_err();
        assert_eq!(e.field, "servers[0].ssh_key_file", "{e}");
    }

    #[test]
    fn password_in_url_is_refused() {
        let e = load(&GOOD.replace("codeb@", "codeb:hunter2@")).unwrap_err();
        assert_eq!(e.field, "database.url");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn missing_role_is_refused() {
        let e = load(&GOOD.replace(
            r#"roles = ["app", "streaming", "backup"]"#,
            r#"roles = ["app"]"#,
        ))
        .unwrap_err();
        assert_eq!(e.field, "servers");
        assert!(e.message.contains("streaming"), "{e}");
    }

    #[test]
    fn env_override_with_double_underscore() {
        let dir = tempdir();
        let path = write_fixture(&dir, GOOD);
        // A dedicated prefix keeps this test independent of the real environment.
        std::env::set_var("CODEBTEST1_SSH__MAX_CHANNELS", "3");
        let c = Config::load_with_env(&path, Env::prefixed("CODEBTEST1_")).unwrap();
        assert_eq!(c.ssh.max_channels, 3);
        std::env::set_var("CODEBTEST1_SSH__MAX_CHANNELS", "0");
        let e = Config::load_with_env(&path, Env::prefixed("CODEBTEST1_")).unwrap_err();
        assert_eq!(e.field, "ssh.max_channels");
        std::env::remove_var("CODEBTEST1_SSH__MAX_CHANNELS");
    }

    #[test]
    fn unknown_role_is_named() {
        let e = load(&GOOD.replace(r#"roles = ["storage"]"#, r#"roles = ["storag"]"#)).unwrap_err();
        assert!(e.field.starts_with("servers"), "{e}");
        assert!(e.message.contains("storag"), "{e}");
    }
}
