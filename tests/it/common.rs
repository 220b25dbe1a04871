//! Shared test helpers: the testbed's facts, spawning codeb, MCP clients.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::RoleClient;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Tests that cut links or stop services take this for writing; every test
/// that needs a healthy testbed takes it for reading.
pub static FAULT_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// What `tools/testbed status --json` reports.
#[derive(Debug, Clone)]
pub struct Testbed {
    /// Generated codeb.toml.
    pub config: PathBuf,
    /// The whole status document.
    pub status: Value,
}

impl Testbed {
    /// postgres URL with password, for direct access from tests: codeb's
    /// state database — the testbed's, or the one `CODEB_DATABASE__URL`
    /// (the override codeb itself reads) points every codeb under test at.
    pub fn database_url(&self) -> String {
        let url = std::env::var(STATE_DB_VAR)
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                self.status["database_url"]
                    .as_str()
                    .expect("database_url")
                    .to_string()
            });
        let pw_file = self.status["database_password_file"]
            .as_str()
            .expect("password file");
        let pw = std::fs::read_to_string(pw_file).expect("read db password");
        url.replacen("codeb@", &format!("codeb:{}@", pw.trim()), 1)
    }
}

/// Overrides the config's state database (codeb reads it as
/// `database.url`); a test run may point at its own database with it.
pub const STATE_DB_VAR: &str = "CODEB_DATABASE__URL";

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The testbed, which must be up (`tools/test` brings it up).
pub fn testbed() -> &'static Testbed {
    static TB: OnceLock<Testbed> = OnceLock::new();
    TB.get_or_init(|| {
        let out = std::process::Command::new(repo().join("tools/testbed"))
            .args(["status", "--json"])
            .output()
            .expect("run tools/testbed status --json");
        let status: Value = serde_json::from_slice(&out.stdout).expect("testbed status is JSON");
        assert_eq!(
            status["up"],
            json!(true),
            "the testbed is not up: run `tools/testbed up` (tools/test does this)"
        );
        Testbed {
            config: PathBuf::from(status["config"].as_str().expect("config path")),
            status,
        }
    })
}

/// Runs `tools/testbed ARGS` and asserts success.
pub fn testbed_cmd(args: &[&str]) {
    let out = std::process::Command::new(repo().join("tools/testbed"))
        .args(args)
        .output()
        .expect("run tools/testbed");
    assert!(
        out.status.success(),
        "tools/testbed {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The codeb binary under test.
pub fn codeb_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_codeb"))
}

/// A direct database pool (for fixtures).
pub async fn db() -> sqlx::PgPool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&testbed().database_url())
        .await
        .expect("connect to the testbed database");
    codeb::state::MIGRATOR.run(&pool).await.expect("migrate");
    pool
}

/// A unique project name for one test.
pub fn unique_project(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// An MCP client over stdio to a fresh `codeb serve`.
pub async fn stdio_client() -> RunningService<RoleClient, ()> {
    stdio_client_as(()).await
}

/// An MCP client over stdio to a fresh `codeb serve`, answering the
/// server's requests (elicitation) with `handler`.
pub async fn stdio_client_as<H: rmcp::ClientHandler>(handler: H) -> RunningService<RoleClient, H> {
    use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
    use rmcp::ServiceExt;
    let config = testbed().config.clone();
    let transport =
        TokioChildProcess::new(tokio::process::Command::new(codeb_bin()).configure(|c| {
            c.arg("--config")
                .arg(&config)
                .arg("serve")
                .env("CODEB_LOG", "warn");
        }))
        .expect("spawn codeb serve");
    handler.serve(transport).await.expect("stdio initialize")
}

/// A running `codeb serve --http 127.0.0.1:0`; killed on drop.
pub struct HttpServer {
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    /// Everything codeb wrote to stderr (its log) so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    /// An owner key of the `default` team, minted for this server.
    pub key: String,
    child: tokio::process::Child,
}

/// Mints a key with `codeb key create` against the database `config` and
/// `env` select (the same one a server started with them uses), for a
/// principal of its own (each key minted here is another person).
pub fn mint_key_with(config: &Path, env: &[(&str, &str)], team: &str, role: &str) -> String {
    let principal = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    mint_key_for_with(config, env, team, role, &principal)
}

/// Mints a key of `principal` (a person holding several keys).
pub fn mint_key_for_with(
    config: &Path,
    env: &[(&str, &str)],
    team: &str,
    role: &str,
    principal: &str,
) -> String {
    let mut cmd = std::process::Command::new(codeb_bin());
    cmd.arg("--config")
        .arg(config)
        .args([
            "key",
            "create",
            "--team",
            team,
            "--role",
            role,
            "--principal",
            principal,
            "--label",
            "test",
        ])
        .env("CODEB_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run codeb key create");
    assert!(
        out.status.success(),
        "codeb key create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("key is UTF-8")
        .trim()
        .to_string()
}

/// Mints a key in the testbed database, for a principal of its own.
pub fn mint_key(team: &str, role: &str) -> String {
    mint_key_with(&testbed().config, &[], team, role)
}

/// Mints a key of `principal` in the testbed database.
pub fn mint_key_for(team: &str, role: &str, principal: &str) -> String {
    mint_key_for_with(&testbed().config, &[], team, role, principal)
}

/// A streamable HTTP client transport sending `key` as a bearer token.
pub fn http_transport(
    url: &str,
    key: &str,
) -> rmcp::transport::StreamableHttpClientTransport<rmcp_reqwest::Client> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    rmcp::transport::StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string()),
    )
}

/// The per-key rate limit override (config `auth.rate_limit_per_minute`).
pub const RATE_LIMIT_VAR: &str = "CODEB_AUTH__RATE_LIMIT_PER_MINUTE";

impl HttpServer {
    /// Starts codeb over HTTP with the testbed config and waits until it listens.
    pub async fn start() -> Self {
        Self::start_with(&testbed().config, &[]).await
    }

    /// Starts codeb over HTTP with `config` and extra environment. Tests
    /// drive hundreds of calls with one key, so the per-key rate limit is
    /// raised unless `env` sets it (`start_with_default_limits` keeps it).
    pub async fn start_with(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut all: Vec<(&str, &str)> = env.to_vec();
        if !env.iter().any(|(k, _)| *k == RATE_LIMIT_VAR) {
            all.push((RATE_LIMIT_VAR, "1000000"));
        }
        Self::start_exactly(config, &all).await
    }

    /// Starts codeb over HTTP with the testbed config and the configured
    /// (default) rate limit.
    pub async fn start_with_default_limits() -> Self {
        Self::start_exactly(&testbed().config, &[]).await
    }

    async fn start_exactly(config: &Path, env: &[(&str, &str)]) -> Self {
        let key = mint_key_with(config, env, "default", "owner");
        let mut cmd = tokio::process::Command::new(codeb_bin());
        cmd.arg("--config")
            .arg(config)
            .args(["serve", "--http", "127.0.0.1:0"])
            .env("CODEB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn codeb serve --http");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                if let Some(rest) = line.strip_prefix("codeb: serving MCP at ") {
                    return rest.trim().to_string();
                }
            }
            panic!("codeb exited before listening");
        })
        .await
        .expect("codeb listens within 30 s");
        // Keep draining stderr (kept as the log) so the child never blocks
        // on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self {
            url,
            log,
            key,
            child,
        }
    }

    /// Kills codeb with SIGKILL — no shutdown of any kind, as in a crash —
    /// and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The codeb process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("codeb is running")
    }

    /// An rmcp client over streamable HTTP.
    pub async fn client(&self) -> RunningService<RoleClient, ()> {
        self.client_with_key(&self.key).await
    }

    /// An rmcp client over streamable HTTP sending `key`.
    pub async fn client_with_key(&self, key: &str) -> RunningService<RoleClient, ()> {
        use rmcp::ServiceExt;
        ().serve(http_transport(&self.url, key))
            .await
            .expect("http initialize")
    }

    /// An rmcp client over streamable HTTP sending `key`, answering the
    /// server's requests (elicitation) with `handler`.
    pub async fn client_as<H: rmcp::ClientHandler>(
        &self,
        key: &str,
        handler: H,
    ) -> RunningService<RoleClient, H> {
        use rmcp::ServiceExt;
        handler
            .serve(http_transport(&self.url, key))
            .await
            .expect("http initialize")
    }

    /// A transport for this server with its owner key.
    pub fn transport(
        &self,
    ) -> rmcp::transport::StreamableHttpClientTransport<rmcp_reqwest::Client> {
        http_transport(&self.url, &self.key)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Calls a tool and returns the result (tool errors included).
pub async fn call<H: rmcp::service::Service<RoleClient>>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool} failed at the protocol level: {e}"))
}

/// The structured result of a successful call.
pub fn structured(r: &CallToolResult) -> &Value {
    assert_ne!(
        r.is_error,
        Some(true),
        "tool returned an error: {:?}",
        r.content
    );
    r.structured_content.as_ref().expect("structured content")
}

/// The text of an error result.
pub fn error_text(r: &CallToolResult) -> String {
    assert_eq!(
        r.is_error,
        Some(true),
        "expected isError, got {:?}",
        r.structured_content
    );
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Registers a project directly in the database (project_create arrives in issue [2]).
pub async fn insert_project(pool: &sqlx::PgPool, name: &str) -> i64 {
    codeb::state::projects::project_insert(pool, name, "default", "node")
        .await
        .expect("insert project")
}

/// Removes a test project.
pub async fn delete_project(pool: &sqlx::PgPool, name: &str) {
    sqlx::query("DELETE FROM projects WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .expect("delete project");
}

/// A fresh state database of codeb's on the testbed's PostgreSQL, so a test
/// neither sees nor disturbs the shared `codeb` database. Drop it with
/// `drop` (also when the test fails).
pub struct FreshStateDb {
    /// Database name, `codeb_{prefix}_{12 hex digits}`.
    pub name: String,
    /// URL without password (the config's password file supplies it).
    pub url: String,
    maintenance: sqlx::PgPool,
}

impl FreshStateDb {
    /// Creates `codeb_{prefix}_{random}`; codeb migrates it at start.
    pub async fn create(prefix: &str) -> Self {
        let tb = testbed();
        let full = tb.database_url();
        let maintenance = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/postgres", full.rsplit_once('/').unwrap().0))
            .await
            .expect("connect to the testbed PostgreSQL");
        let name = format!(
            "codeb_{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&maintenance)
            .await
            .expect("create a fresh state database");
        let base = tb.status["database_url"].as_str().unwrap();
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        Self {
            name,
            url,
            maintenance,
        }
    }

    /// The testbed config pointed at this database.
    pub fn config(&self) -> codeb::config::Config {
        let mut c =
            codeb::config::Config::load(&testbed().config).expect("load the testbed config");
        c.database.url = self.url.clone();
        c
    }

    /// Drops the database (closing its sessions).
    /// PostgreSQL 15 refuses `WITH (FORCE)` to a non-superuser while an
    /// autovacuum worker (a process of no role) is in the database; that
    /// worker leaves on its own, so the drop is tried again a few times.
    pub async fn drop(&self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let mut attempts = 0;
        loop {
            match sqlx::raw_sql(&sql).execute(&self.maintenance).await {
                Ok(_) => return,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("42501") && attempts < 40 =>
                {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => panic!("drop the fresh state database: {e}"),
            }
        }
    }
}

/// A fresh team name for one test (teams are created by minting their
/// first key: `mint_key`).
pub fn unique_team(prefix: &str) -> String {
    unique_project(prefix)
}

/// Registers a project of `team` directly in the database (the team must
/// exist: mint a key of it first).
pub async fn insert_project_of(pool: &sqlx::PgPool, name: &str, team: &str) -> i64 {
    codeb::state::projects::project_insert(pool, name, team, "node")
        .await
        .expect("insert project")
}

/// Removes test teams with their projects (and, by cascade, everything
/// recorded about those), keys and approvals. Best effort: for cleanups.
pub async fn delete_teams(pool: &sqlx::PgPool, teams: &[&str]) {
    let teams: Vec<String> = teams.iter().map(|t| t.to_string()).collect();
    for table in ["approvals", "projects", "api_keys", "teams"] {
        let column = if table == "teams" { "id" } else { "team_id" };
        let r = sqlx::query(&format!("DELETE FROM {table} WHERE {column} = ANY($1)"))
            .bind(&teams)
            .execute(pool)
            .await;
        if let Err(e) = r {
            eprintln!("cleanup: deleting {table} of {teams:?}: {e}");
        }
    }
}
