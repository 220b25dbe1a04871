//! drift_report (DESIGN §7): reads the records in a fixed number of
//! queries, observes the servers in a fixed number of round trips — all
//! at once — and lets `plan::drift` compare. Nothing is changed anywhere.
//!
//! Per report, whatever the number of projects:
//! - app server, three SSH commands run concurrently over its one master:
//!   `podman ps -a --format json --filter label=codeb.project`,
//!   `find /opt/codeb/env -type f -name .env.* -exec sha256sum -- {} +`,
//!   `cat -- /etc/caddy/Caddyfile`;
//! - PowerDNS, one API call: `search-data?q=*&object_type=record` (every
//!   record of every zone; retried once through a fresh forward if the
//!   API was unreachable, and that retry is counted);
//! - state database, three queries (slots, synced env versions, domains),
//!   and a fourth for an owner's report without `project` (the names other
//!   teams' projects own, to tell them from orphans).
//!
//! A report covers the caller's team only (DESIGN §6): the records are
//! read for that team's projects (or the one `project`), and findings that
//! belong to no project — orphan containers and rrsets, the Caddy config —
//! are listed to owners only (see `plan::drift::DriftScope`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::exec::Remote;
use crate::model::{validate_project_name, Environment, Role, ServerRole, SlotName, SlotState};
use crate::ops::lifecycle::Caller;
use crate::ops::Ctx;
use crate::plan::caddy::{render_caddyfile, CaddySiteConfig, CaddyTls};
use crate::plan::cmd::RemoteCmd;
use crate::plan::drift::{
    caddy_read_cmd, drift_findings, env_file_hashes_cmd, parse_sha256sum, DriftNames, DriftScope,
    Finding, Observed, OtherTeams, RecordedDomain, RecordedEnv, RecordedSlot,
};
use crate::plan::envvars::render_env_file;
use crate::plan::podman;
use crate::state::drift as store;
use crate::state::DbError;

/// Most records one PowerDNS listing may return before the report refuses
/// to guess.
pub const DNS_LISTING_MAX: usize = 200_000;
/// Resolver the static Caddy config names (as `caddy-install` renders it).
const CADDY_RESOLVER: &str = "127.0.0.1:53";
/// Database queries per report (one more for an owner's report over the
/// whole team).
const DB_QUERIES: u32 = 3;

/// Why no report could be made at all.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such project.
    #[error("project {0:?} not found; project_list shows the registered projects")]
    NotFound(String),
    /// The state database could not be read.
    #[error("cannot read the state database: {0}; check health_check")]
    Db(#[from] DbError),
}

/// A drift report.
#[derive(Debug, Clone)]
pub struct DriftReport {
    /// Every difference found, one per object.
    pub findings: Vec<Finding>,
    /// Projects compared.
    pub projects: usize,
    /// (project, environment) pairs compared.
    pub environments: usize,
    /// Observations that failed: their checks were skipped.
    pub unobserved: Vec<String>,
    /// SSH commands run (all on the app server, concurrently).
    pub ssh_commands: u32,
    /// PowerDNS API calls made.
    pub pdns_calls: u32,
    /// State database queries.
    pub db_queries: u32,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl DriftReport {
    /// SSH commands + PowerDNS calls + database queries.
    pub fn round_trips(&self) -> u32 {
        self.ssh_commands + self.pdns_calls + self.db_queries
    }
}

async fn run_listing(
    app: Option<&dyn Remote>,
    cmd: Result<RemoteCmd, String>,
    count: &AtomicU32,
) -> Result<crate::exec::CmdOutput, String> {
    let app = app.ok_or("no server has the role \"app\": add it to [[servers]]")?;
    let cmd = cmd?;
    count.fetch_add(1, Ordering::Relaxed);
    app.run(&cmd)
        .await
        .map_err(|e| format!("`{cmd}` on {}: {e}", app.name()))
}

/// Whether stderr says only that a path does not exist.
fn only_missing(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.contains("No such file or directory"))
}

/// Compares the records of every live project of the caller's team, or of
/// `project`, with the servers. Observation failures do not fail the
/// report: they are listed in `unobserved` and their checks skipped.
/// Access control has checked that `project` is not another team's.
pub async fn drift_report(
    ctx: &Ctx,
    project: Option<&str>,
    caller: &Caller,
) -> Result<DriftReport, DriftError> {
    let started = Instant::now();
    if let Some(p) = project {
        validate_project_name(p).map_err(|e| DriftError::Invalid(e.0))?;
    }
    let config = &ctx.config;
    let app = ctx.fleet.for_role(ServerRole::App).map(|(_, r)| r.clone());
    let ssh = AtomicU32::new(0);
    let pdns_calls = AtomicU32::new(0);

    let team = Some(caller.team.as_str());
    let owner = caller.role >= Role::Owner;
    // Other teams' names matter only where orphans are listed.
    let with_others = owner && project.is_none();
    let records = async {
        let pool = ctx.db.pool().await?;
        let others = async {
            if with_others {
                store::drift_other_teams_names(pool, &caller.team).await
            } else {
                Ok(Vec::new())
            }
        };
        let (slots, versions, domains, others) = tokio::try_join!(
            store::drift_slots(pool, team, project),
            store::drift_synced_env_versions(pool, team, project),
            store::drift_domains(pool, team, project),
            others,
        )?;
        Ok::<_, DbError>((slots, versions, domains, others))
    };
    let containers = run_listing(app.as_deref(), podman::ps(None).map_err(|e| e.0), &ssh);
    let env_files = run_listing(app.as_deref(), Ok(env_file_hashes_cmd()), &ssh);
    let caddy = run_listing(
        app.as_deref(),
        caddy_read_cmd(&config.caddy.config_path).map_err(|e| e.0),
        &ssh,
    );
    let dns = crate::ops::pdns::with_pdns(ctx, |client| {
        pdns_calls.fetch_add(1, Ordering::Relaxed);
        async move { client.all_records(DNS_LISTING_MAX).await }
    });
    let (records, containers, env_files, caddy, dns) =
        tokio::join!(records, containers, env_files, caddy, dns);
    let (slot_rows, version_rows, domain_rows, other_rows) = records?;

    let mut unobserved = Vec::new();
    let mut observed = Observed::default();
    match containers {
        Ok(out) if out.success() => match podman::parse_ps(&out.stdout_text()) {
            Ok(c) => observed.containers = Some(c),
            Err(e) => unobserved.push(format!("containers: {e}")),
        },
        Ok(out) => unobserved.push(format!(
            "containers: podman ps failed: {}",
            out.stderr_tail()
        )),
        Err(e) => unobserved.push(format!("containers: {e}")),
    }
    match env_files {
        // find exits 1 when the env directory does not exist yet.
        Ok(out) if out.success() || only_missing(&out.stderr_tail()) => {
            observed.env_files = Some(parse_sha256sum(&out.stdout_text()));
        }
        Ok(out) => unobserved.push(format!("env files: listing failed: {}", out.stderr_tail())),
        Err(e) => unobserved.push(format!("env files: {e}")),
    }
    match caddy {
        Ok(out) if out.success() => observed.caddy = Some(Some(out.stdout_text())),
        Ok(out) if only_missing(&out.stderr_tail()) => observed.caddy = Some(None),
        Ok(out) => unobserved.push(format!("Caddy config: {}", out.stderr_tail())),
        Err(e) => unobserved.push(format!("Caddy config: {e}")),
    }
    match dns {
        Ok(r) => {
            observed.records = Some(
                r.into_iter()
                    .map(|r| (r.name, r.rtype, r.content, r.zone))
                    .collect(),
            )
        }
        Err(e) => unobserved.push(format!("routes and DNS records: {e}")),
    }

    // Expected env file hashes: the latest synced version, rendered.
    let mut env_hashes: BTreeMap<(i64, String), (i32, String)> = BTreeMap::new();
    let mut undecryptable = 0usize;
    if !version_rows.is_empty() {
        match &ctx.env_key {
            None => unobserved.push(
                "env files: no master key configured (secrets.master_key_file or CODEB_MASTER_KEY), so their expected content is unknown".into(),
            ),
            Some(key) => {
                let names: BTreeMap<i64, &str> = slot_rows
                    .iter()
                    .map(|r| (r.project_id, r.project.as_str()))
                    .collect();
                for (project_id, env, row) in &version_rows {
                    let (Some(name), Some(environment)) =
                        (names.get(project_id), Environment::parse(env))
                    else {
                        continue;
                    };
                    match key.open(*project_id, env, row) {
                        Ok(vars) => {
                            let file = render_env_file(name, environment, row.version, &vars);
                            env_hashes.insert(
                                (*project_id, env.clone()),
                                (row.version, hex::encode(Sha256::digest(file.as_bytes()))),
                            );
                        }
                        Err(_) => undecryptable += 1,
                    }
                }
            }
        }
    }
    if undecryptable > 0 {
        unobserved.push(format!(
            "env files: {undecryptable} env version(s) cannot be decrypted with this master key; env_get names them"
        ));
    }

    // Recorded environments.
    let mut envs: BTreeMap<(i64, String), RecordedEnv> = BTreeMap::new();
    for r in &slot_rows {
        let Some(environment) = Environment::parse(&r.environment) else {
            continue;
        };
        let e = envs
            .entry((r.project_id, r.environment.clone()))
            .or_insert_with(|| RecordedEnv {
                project: r.project.clone(),
                environment,
                base_port: r.base_port as u16,
                slots: SlotName::ALL.map(|slot| RecordedSlot {
                    slot,
                    state: SlotState::Empty,
                    image: None,
                    deployment_id: None,
                }),
                env_file: env_hashes
                    .get(&(r.project_id, r.environment.clone()))
                    .cloned(),
            });
        if let Some(slot) = r.slot.as_deref().and_then(SlotName::parse) {
            let s = &mut e.slots[SlotName::ALL.iter().position(|x| *x == slot).unwrap_or(0)];
            s.state = r
                .state
                .as_deref()
                .and_then(SlotState::parse)
                .unwrap_or(SlotState::Empty);
            s.image = r.image.clone();
            s.deployment_id = r.deployment_id.map(|d| d.to_string());
        }
    }
    let projects: std::collections::BTreeSet<i64> =
        slot_rows.iter().map(|r| r.project_id).collect();
    if let Some(p) = project {
        if projects.is_empty() {
            let exists = crate::state::projects::project_by_name(ctx.db.pool().await?, p)
                .await?
                .is_some_and(|r| r.team_id == caller.team);
            if !exists {
                return Err(DriftError::NotFound(p.to_string()));
            }
        }
    }
    let envs: Vec<RecordedEnv> = envs.into_values().collect();
    let domains: Vec<RecordedDomain> = domain_rows
        .into_iter()
        .filter_map(|d| {
            Some(RecordedDomain {
                environment: Environment::parse(&d.environment)?,
                hostname: d.hostname,
                project: d.project,
                kind: d.kind,
                dns_state: d.dns_state,
                route_state: d.route_state,
            })
        })
        .collect();

    let app_address = config
        .servers
        .iter()
        .find(|s| s.roles.contains(&ServerRole::App))
        .and_then(|s| s.address.parse::<IpAddr>().ok())
        .map(|a| a.to_string());
    let site = CaddySiteConfig {
        admin_addr: config.caddy.admin_addr.clone(),
        route_zone: config.routing.route_zone.clone(),
        resolver: CADDY_RESOLVER.into(),
        tls: CaddyTls::Off,
    };
    let names = DriftNames {
        route_zone: config.routing.route_zone.clone(),
        base_domain: config.routing.base_domain.clone(),
        preview_domain: config.routing.preview_domain.clone(),
        app_address,
        caddy_path: config.caddy.config_path.clone(),
        caddy_expected: site.validate().is_ok().then(|| render_caddyfile(&site)),
    };
    let other_rows: Vec<(String, Environment, Option<String>)> = other_rows
        .into_iter()
        .filter_map(|(p, e, d)| Some((p, Environment::parse(&e)?, d)))
        .collect();
    let others = OtherTeams::from_rows(&other_rows, &names);
    let scope = DriftScope {
        project,
        unowned: owner.then_some(&others),
    };
    let findings = drift_findings(&envs, &domains, &names, &observed, &scope);
    Ok(DriftReport {
        findings,
        projects: projects.len(),
        environments: envs.len(),
        unobserved,
        ssh_commands: ssh.load(Ordering::Relaxed),
        pdns_calls: pdns_calls.load(Ordering::Relaxed),
        db_queries: DB_QUERIES + u32::from(with_others),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}
