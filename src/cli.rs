//! The command line. stdout is reserved for the stdio MCP transport when
//! serving; logs go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::mcp::CodebServer;
use crate::ops::Ctx;

/// Exit code for configuration errors.
pub const EXIT_CONFIG: u8 = 2;

/// codeb — blue-green deployments over SSH, driven through MCP.
#[derive(Debug, Parser)]
#[command(name = "codeb", version, about)]
pub struct Cli {
    /// Path of codeb.toml.
    #[arg(long, global = true, env = "CODEB_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log as JSON lines (to stderr).
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over stdio, or over streamable HTTP with --http.
    Serve {
        /// Listen address for streamable HTTP (path /mcp), e.g. 127.0.0.1:9101.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Check the fleet's health and print it.
    Health {
        /// Print the full JSON result.
        #[arg(long)]
        json: bool,
    },
    /// Show a project's slots.
    Status {
        /// Project name.
        project: String,
    },
    /// Write Caddy's one static config on the app server (server setup):
    /// validated with `caddy validate` before it replaces the old one, the
    /// old one kept as `.bak`, then Caddy reloaded. Never part of a deploy.
    CaddyInstall {
        /// Install this file instead of the config rendered from codeb.toml.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The on-demand TLS `ask` URL (HTTPS setups); plain HTTP when omitted.
        #[arg(long)]
        tls_ask_url: Option<String>,
        /// Do not reload Caddy after installing.
        #[arg(long)]
        no_reload: bool,
    },
    /// Manage API keys (DESIGN §6).
    Key {
        /// What to do with keys.
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print the tool schema snapshots, or write them into a directory.
    Schemas {
        /// Write `<tool>.json` files into this directory.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

/// `codeb key ...`
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Create a key and print it once (stdout); the team is created if new.
    Create {
        /// Team the key acts for.
        #[arg(long)]
        team: String,
        /// viewer, member, admin or owner.
        #[arg(long)]
        role: String,
        /// The person or CI system the key is for (lowercase, e.g.
        /// alice@example.com). Approvals of critical operations need two
        /// different principals. Default `local`: the operator at this
        /// machine, the same person as the stdio caller.
        #[arg(long, default_value = crate::ops::lifecycle::LOCAL_PRINCIPAL)]
        principal: String,
        /// Label to recognise the key by.
        #[arg(long, default_value = "")]
        label: String,
        /// Expire after this many days (never when omitted).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (never the keys themselves).
    List {
        /// Only this team's keys.
        #[arg(long)]
        team: Option<String>,
    },
    /// Revoke a key by id.
    Revoke {
        /// Key id from `codeb key list`.
        id: uuid::Uuid,
    },
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    if let Command::Schemas { write } = &cli.command {
        return match schemas(write.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("codeb: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("codeb: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("codeb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CODEB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // rmcp logs whole requests at debug, arguments included — env values
    // among them, before codeb has seen them. Its debug and trace events
    // are dropped whatever CODEB_LOG says; its other levels follow CODEB_LOG.
    let no_rmcp_debug = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("rmcp") && *meta.level() > tracing::Level::INFO)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::ops::redact::RedactingStderr);
    if json {
        builder.json().finish().with(no_rmcp_debug).init();
    } else {
        builder.finish().with(no_rmcp_debug).init();
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    let ctx = Arc::new(Ctx::new(config));
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            cancel.cancel();
        });
    }
    let result = match command {
        Command::Serve { http: None } => {
            // No SSH or database connection is opened before `initialize`
            // is answered: both connect lazily on first use — unless a key
            // in CODEB_API_KEY must be verified first.
            let mut server = CodebServer::new(ctx.clone());
            if let Ok(key) = std::env::var("CODEB_API_KEY") {
                let caller = match server.verifier().verify(key.trim()).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("codeb: CODEB_API_KEY: {e}");
                        return Ok(ExitCode::from(EXIT_CONFIG));
                    }
                };
                server = server.with_stdio_key(key.trim().to_string(), caller);
            }
            let server = server.serve(rmcp::transport::stdio()).await?;
            tokio::select! {
                r = server.waiting() => { r?; }
                _ = cancel.cancelled() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { http: Some(addr) } => {
            if let Err(e) = crate::mcp::http::check_bind_address(&addr, &ctx.config.mcp) {
                eprintln!("codeb: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            let n = ctx.db.migrate().await?;
            tracing::info!(migrations = n, "database ready");
            // Env data without its key would make every deploy fail later:
            // refuse now, saying why.
            crate::ops::env::check_master_key(&ctx)
                .await
                .map_err(anyhow::Error::msg)?;
            crate::ops::env::register_stored_once(&ctx).await;
            crate::mcp::http::serve(ctx.clone(), addr, cancel.clone()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let n = ctx.db.migrate().await?;
            println!("{n} migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { json } => {
            let server = CodebServer::new(ctx.clone());
            let r = server
                .health_check(rmcp::handler::server::wrapper::Parameters(
                    crate::mcp::health_check::HealthCheckParams { server: None },
                ))
                .await
                .map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r.0)?);
            } else {
                println!("{}", r.0.summary);
                for s in &r.0.servers {
                    println!(
                        "  {:<10} {}",
                        s.name,
                        if s.healthy { "healthy" } else { "UNHEALTHY" }
                    );
                    for svc in &s.services {
                        println!(
                            "    {:<18} {:<9} {}",
                            svc.service,
                            if svc.healthy { "ok" } else { "FAIL" },
                            svc.detail
                        );
                    }
                    if let Some(e) = &s.error {
                        println!("    {e}");
                    }
                }
            }
            Ok(if r.0.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { project } => {
            let server = CodebServer::new(ctx.clone());
            let r = server
                .slot_status(rmcp::handler::server::wrapper::Parameters(
                    crate::mcp::slot_status::SlotStatusParams {
                        project,
                        environment: None,
                    },
                ))
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&r.0)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::CaddyInstall {
            file,
            tls_ask_url,
            no_reload,
        } => caddy_install(&ctx, file, tls_ask_url, no_reload).await,
        Command::Key { action } => key_command(&ctx, action).await,
        Command::Schemas { .. } => unreachable!("handled before config is loaded"),
    };
    // Audit rows queued by the last calls reach the database before exit
    // (bounded wait; what cannot be written is logged, see ops::audit).
    ctx.audit
        .shutdown(crate::ops::audit::AUDIT_SHUTDOWN_TIMEOUT)
        .await;
    ctx.fleet.close().await;
    result
}

async fn caddy_install(
    ctx: &Ctx,
    file: Option<PathBuf>,
    tls_ask_url: Option<String>,
    no_reload: bool,
) -> anyhow::Result<ExitCode> {
    use crate::plan::caddy::{render_caddyfile, CaddySiteConfig, CaddyTls};
    let content = match file {
        Some(f) => std::fs::read_to_string(&f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
        None => {
            let site = CaddySiteConfig {
                admin_addr: ctx.config.caddy.admin_addr.clone(),
                route_zone: ctx.config.routing.route_zone.clone(),
                resolver: "127.0.0.1:53".into(),
                tls: match tls_ask_url {
                    Some(ask_url) => CaddyTls::OnDemand { ask_url },
                    None => CaddyTls::Off,
                },
            };
            site.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            render_caddyfile(&site)
        }
    };
    let (_, app) = ctx
        .fleet
        .for_role(crate::model::ServerRole::App)
        .ok_or_else(|| anyhow::anyhow!("no app server configured"))?;
    let path = ctx.config.caddy.config_path.clone();
    crate::ops::caddy::install_caddy_config(app.as_ref(), &path, content).await?;
    eprintln!(
        "installed {path} on {} (previous config kept as {path}.bak)",
        app.name()
    );
    if !no_reload {
        let cmd = crate::plan::cmd::RemoteCmd::new("caddy")
            .args(["reload", "--config"])
            .arg(path.clone())
            .args(["--adapter", "caddyfile", "--address"])
            .arg(ctx.config.caddy.admin_addr.clone())
            .timeout(std::time::Duration::from_secs(30));
        let out = app.run(&cmd).await?;
        if !out.success() {
            anyhow::bail!("caddy reload failed: {}", out.stderr_tail());
        }
        eprintln!("Caddy reloaded");
    }
    Ok(ExitCode::SUCCESS)
}

async fn key_command(ctx: &Ctx, action: KeyAction) -> anyhow::Result<ExitCode> {
    use crate::state::api_keys;
    let pool = ctx.db.pool().await?;
    crate::state::MIGRATOR.run(pool).await?;
    match action {
        KeyAction::Create {
            team,
            role,
            principal,
            label,
            expires_in_days,
        } => {
            let role = crate::model::Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("--role must be viewer, member, admin or owner, got {role:?}")
            })?;
            // The operator at this machine (the root of trust) may mint
            // any role for anyone.
            let (key, row) = crate::mcp::keys::create_key(
                pool,
                &crate::mcp::keys::KeySpec {
                    team: &team,
                    role,
                    principal: &principal,
                    label: &label,
                    expires_in_days,
                    created_by: None,
                    created_by_principal: crate::ops::lifecycle::LOCAL_PRINCIPAL,
                },
            )
            .await
            .map_err(anyhow::Error::msg)?;
            eprintln!(
                "created {} key {} of principal {} for team {}; it is printed once, below",
                row.role, row.id, row.principal, row.team_id
            );
            println!("{key}");
        }
        KeyAction::List { team } => {
            let rows = api_keys::api_keys_list(pool, team.as_deref()).await?;
            println!(
                "{:<36}  {:<12} {:<6}  {:<20} {:<20} {:<10} {:<10} label",
                "id", "team", "role", "principal", "created", "expires", "state"
            );
            for r in rows {
                let state = if r.revoked_at.is_some() {
                    "revoked"
                } else if r.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<36}  {:<12} {:<6}  {:<20} {:<20} {:<10} {:<10} {}",
                    r.id,
                    r.team_id,
                    r.role,
                    r.principal,
                    r.created_at.format("%Y-%m-%d %H:%M:%S"),
                    r.expires_at
                        .map_or("never".into(), |e| e.format("%Y-%m-%d").to_string()),
                    state,
                    r.label
                );
            }
        }
        KeyAction::Revoke { id } => match api_keys::api_key_revoke(pool, id, None).await? {
            Some(r) => println!("revoked key {id} ({} of team {})", r.role, r.team_id),
            None => anyhow::bail!("no key with id {id}; `codeb key list` shows them"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The snapshot of one tool: exactly what `tools/list` shows.
pub fn tool_snapshot(tool: &rmcp::model::Tool) -> String {
    let mut s = serde_json::to_string_pretty(tool).expect("tools serialize");
    s.push('\n');
    s
}

fn schemas(write: Option<&std::path::Path>) -> anyhow::Result<()> {
    let tools = CodebServer::tool_definitions();
    match write {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for t in &tools {
                std::fs::write(dir.join(format!("{}.json", t.name)), tool_snapshot(t))?;
            }
            eprintln!("wrote {} snapshots to {}", tools.len(), dir.display());
        }
        None => println!("{}", serde_json::to_string_pretty(&tools)?),
    }
    Ok(())
}
