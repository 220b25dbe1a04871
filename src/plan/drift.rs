//! PURE: drift between what the database records and what the servers run
//! (DESIGN §7). `ops::drift` observes — one container listing, one hash
//! listing of the env files, one read of the Caddy config, one PowerDNS
//! record listing — and hands the observations here; `drift_findings`
//! turns (recorded, observed) into findings, one per differing object.
//!
//! Route expectations follow what the lifecycle writes (`plan::switch`,
//! `ops::lifecycle`): an environment's hostnames (and its custom domains)
//! route to the active slot at `PRIORITY_ACTIVE`; a grace slot is always
//! the fallback at `PRIORITY_FALLBACK` (promote wrote it); a deployed slot
//! may be the fallback or not (rollback lists it, a later deploy into the
//! grace slot leaves it there, a deploy next to a lone active slot does not
//! add it); an empty slot is never listed. Without an active slot there is
//! no route. Every non-empty slot's preview hostname routes to that slot
//! alone; an empty slot's preview hostname has no route.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Environment, SlotName, SlotState};
use crate::plan::cmd::RemoteCmd;
use crate::plan::dns::{
    absolute_name, env_hostnames, parse_srv_content, preview_hostname, route_rrset_name, SrvTarget,
    PRIORITY_ACTIVE, PRIORITY_FALLBACK,
};
use crate::plan::envvars::{app_env_path, APP_ENV_ROOT};
use crate::plan::files::validate_remote_path;
use crate::plan::podman::{
    Container, LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_PROJECT, LABEL_SLOT, PUBLISH_ADDRESS,
};

/// Time limit of the remote listings drift_report runs.
pub const DRIFT_LISTING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Hex digits of a SHA-256 shown in findings.
const SHORT_HASH: usize = 12;

/// One difference between the record and the servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Finding {
    /// What differs: container_missing, container_image, container_labels,
    /// container_port, container_stopped, container_stale, container_orphan,
    /// route_missing, route_mismatch, route_stale, route_orphan,
    /// dns_missing, dns_mismatch, env_file_missing, env_file_edited,
    /// caddy_config_missing, caddy_config.
    pub kind: String,
    /// The object: a container name, an rrset name, a file path.
    pub object: String,
    /// Project it belongs to, when it belongs to one.
    pub project: Option<String>,
    /// What the database says should be there (no secret values).
    pub expected: String,
    /// What the server has.
    pub found: String,
    /// What to do about it.
    pub fix: String,
}

/// One slot as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSlot {
    /// blue or green.
    pub slot: SlotName,
    /// Recorded state.
    pub state: SlotState,
    /// Recorded image.
    pub image: Option<String>,
    /// Deployment that filled it (the `codeb.deployment` label).
    pub deployment_id: Option<String>,
}

/// One (project, environment) as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEnv {
    /// Project name (validated by the database's check constraint).
    pub project: String,
    /// Environment.
    pub environment: Environment,
    /// Even base port of the pair.
    pub base_port: u16,
    /// Blue then green.
    pub slots: [RecordedSlot; 2],
    /// Latest synced env version and the SHA-256 (hex) of its rendered
    /// file; `None` when no version was ever written to the app server.
    pub env_file: Option<(i32, String)>,
}

/// One row of the domains table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDomain {
    /// Hostname.
    pub hostname: String,
    /// Project name.
    pub project: String,
    /// Environment it routes to.
    pub environment: Environment,
    /// managed, custom or preview.
    pub kind: String,
    /// DNS state (`pending`, `failed`, or a set-up state).
    pub dns_state: String,
    /// Route state (`pending`, `failed`, or a set-up state).
    pub route_state: String,
}

/// Whether a domain's DNS or route state says it was set up: every state
/// except `pending` (nothing done yet) and `failed` (domain_setup reverted).
pub fn domain_state_is_set_up(state: &str) -> bool {
    !matches!(state, "pending" | "failed")
}

/// Names the checks need.
#[derive(Debug, Clone)]
pub struct DriftNames {
    /// Zone of the route rrsets.
    pub route_zone: String,
    /// Base domain of environment hostnames.
    pub base_domain: String,
    /// Domain of preview hostnames.
    pub preview_domain: String,
    /// Address domain A records must hold (the app server's), if known.
    pub app_address: Option<String>,
    /// Path of the Caddy config on the app server.
    pub caddy_path: String,
    /// The Caddy config `caddy-install` would write, if it can be rendered.
    pub caddy_expected: Option<String>,
}

/// What the servers were seen to run; `None` where the observation failed
/// (its checks are skipped and the report says so).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every codeb-labelled container on the app server.
    pub containers: Option<Vec<Container>>,
    /// SHA-256 (hex) of every env file on the app server, by path.
    pub env_files: Option<BTreeMap<String, String>>,
    /// The Caddy config's content; `Some(None)` when the file is absent.
    pub caddy: Option<Option<String>>,
    /// Every enabled DNS record PowerDNS serves: (absolute name, type,
    /// content, absolute zone).
    pub records: Option<Vec<(String, String, String, String)>>,
}

/// `find /opt/codeb/env -type f -name '.env.*' -exec sha256sum -- {} +`:
/// the SHA-256 of every env file on the app server in one command (no
/// shell; `find` passes the names to `sha256sum` itself).
pub fn env_file_hashes_cmd() -> RemoteCmd {
    RemoteCmd::new("find")
        .args([APP_ENV_ROOT, "-type", "f", "-name", ".env.*"])
        .args(["-exec", "sha256sum", "--", "{}", "+"])
        .timeout(DRIFT_LISTING_TIMEOUT)
}

/// Parses `sha256sum` output into path → hex hash. Lines of escaped names
/// (starting with `\`) cannot be env files of valid projects and are
/// skipped, as is anything not `HASH  PATH`.
pub fn parse_sha256sum(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .filter_map(|l| {
            let (hash, path) = l.split_once("  ")?;
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (path.to_string(), hash.to_ascii_lowercase()))
        })
        .collect()
}

/// `cat -- PATH`: the Caddy config (not secret; a few hundred bytes).
pub fn caddy_read_cmd(path: &str) -> Result<RemoteCmd, crate::model::Invalid> {
    validate_remote_path(path)?;
    Ok(RemoteCmd::new("cat")
        .arg("--")
        .arg(path)
        .timeout(DRIFT_LISTING_TIMEOUT))
}

/// The lines of a Caddyfile that configure something: comments and blank
/// lines dropped, trailing whitespace trimmed. Two configs with the same
/// directives behave the same, so only these are compared.
pub fn caddy_directives(caddyfile: &str) -> String {
    caddyfile
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn short_sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..SHORT_HASH].to_string()
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(SHORT_HASH)]
}

fn targets_text(t: &Option<Vec<SrvTarget>>) -> String {
    match t {
        None => "no rrset".into(),
        Some(t) if t.is_empty() => "an empty rrset".into(),
        Some(t) => t
            .iter()
            .map(|t| format!("priority {} port {}", t.priority, t.port))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// One expected route rrset.
struct RouteExpectation {
    project: String,
    /// Acceptable target lists (sorted by priority, port); `None` = absent.
    accepted: Vec<Option<Vec<SrvTarget>>>,
    /// What rewrites it.
    fix: String,
}

fn env_route(env: &RecordedEnv) -> (Vec<Option<Vec<SrvTarget>>>, String) {
    let port = |s: SlotName| s.port(env.base_port);
    let Some(active) = env.slots.iter().find(|s| s.state == SlotState::Active) else {
        return (
            vec![None],
            "no slot is active, so the route should not exist: delete the rrset (promote writes it)"
                .into(),
        );
    };
    let primary = SrvTarget {
        priority: PRIORITY_ACTIVE,
        port: port(active.slot),
    };
    let other = env
        .slots
        .iter()
        .find(|s| s.slot != active.slot)
        .expect("two slots");
    let with_fallback = Some(vec![
        primary,
        SrvTarget {
            priority: PRIORITY_FALLBACK,
            port: port(other.slot),
        },
    ]);
    let alone = Some(vec![primary]);
    let accepted = match other.state {
        SlotState::Grace => vec![with_fallback],
        SlotState::Deployed => vec![with_fallback, alone],
        _ => vec![alone],
    };
    (
        accepted,
        format!(
            "PATCH the rrset back to the expected records ({} is active); promote and rollback write it",
            active.slot
        ),
    )
}

/// Names that projects of other teams own on the servers: their
/// containers and route rrsets are theirs, never this team's orphans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtherTeams {
    /// Project names.
    pub projects: BTreeSet<String>,
    /// Slot container names (`{project}-{environment}-{slot}`).
    pub containers: BTreeSet<String>,
    /// Absolute route rrset names (environment, preview and domain hosts).
    pub rrsets: BTreeSet<String>,
}

impl OtherTeams {
    /// No other team owns anything.
    pub const NONE: OtherTeams = OtherTeams {
        projects: BTreeSet::new(),
        containers: BTreeSet::new(),
        rrsets: BTreeSet::new(),
    };

    /// From (project, environment, domain host name) rows: every slot
    /// container and every route rrset name of those environments and
    /// domains, whatever their state.
    pub fn from_rows(rows: &[(String, Environment, Option<String>)], names: &DriftNames) -> Self {
        let mut o = Self::default();
        for (project, env, domain) in rows {
            o.projects.insert(project.clone());
            let hosts = match domain {
                Some(h) => vec![h.clone()],
                None => {
                    let mut hosts = env_hostnames(project, *env, &names.base_domain);
                    for slot in SlotName::ALL {
                        o.containers.insert(format!("{project}-{env}-{slot}"));
                        hosts.push(preview_hostname(project, *env, slot, &names.preview_domain));
                    }
                    hosts
                }
            };
            o.rrsets
                .extend(hosts.iter().map(|h| route_rrset_name(h, &names.route_zone)));
        }
        o
    }
}

/// What a report covers (DESIGN §6: a team sees only its own projects).
/// The recorded environments and domains handed to `drift_findings` are
/// already those of the scope; this decides which findings about objects
/// outside them are listed.
#[derive(Debug, Clone, Copy)]
pub struct DriftScope<'a> {
    /// One project; None: every project of the caller's team (all of them
    /// in the recorded environments).
    pub project: Option<&'a str>,
    /// Set only for an owner, who alone sees findings that belong to no
    /// project: the Caddy config always; without `project` also containers
    /// labelled with no project of the team and SRV rrsets no environment
    /// of the team routes — except what these other teams' projects own
    /// (theirs, not orphans, and never shown).
    pub unowned: Option<&'a OtherTeams>,
}

impl DriftScope<'static> {
    /// An owner's report over every project when no other team owns any.
    pub const ALL: DriftScope<'static> = DriftScope {
        project: None,
        unowned: Some(&OtherTeams::NONE),
    };
}

/// The findings: one per differing object, sorted by object within kind
/// groups (containers, routes, DNS, env files, Caddy). `scope` decides
/// which orphans are listed: a project's report lists only containers
/// labelled with it and no orphan rrsets (their owner cannot be told from
/// the name alone); a team's lists containers labelled with its projects,
/// and, for an owner, what belongs to no project (see `DriftScope`).
pub fn drift_findings(
    envs: &[RecordedEnv],
    domains: &[RecordedDomain],
    names: &DriftNames,
    observed: &Observed,
    scope: &DriftScope<'_>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(containers) = &observed.containers {
        container_findings(envs, containers, scope, &mut out);
    }
    if let Some(records) = &observed.records {
        route_findings(envs, domains, names, records, scope, &mut out);
        dns_findings(domains, names, records, &mut out);
    }
    if let Some(files) = &observed.env_files {
        env_file_findings(envs, files, &mut out);
    }
    if let (Some(found), Some(expected), Some(_)) =
        (&observed.caddy, &names.caddy_expected, scope.unowned)
    {
        caddy_findings(expected, found, names, &mut out);
    }
    out
}

fn container_findings(
    envs: &[RecordedEnv],
    containers: &[Container],
    scope: &DriftScope<'_>,
    out: &mut Vec<Finding>,
) {
    let own_projects: BTreeSet<&str> = envs.iter().map(|e| e.project.as_str()).collect();
    let by_name: BTreeMap<&str, &Container> =
        containers.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut slot_names = BTreeSet::new();
    for env in envs {
        for s in &env.slots {
            let name = format!("{}-{}-{}", env.project, env.environment, s.slot);
            let found = by_name.get(name.as_str()).copied();
            slot_names.insert(name.clone());
            let finding = |kind: &str, expected: String, found: String, fix: String| Finding {
                kind: kind.into(),
                object: name.clone(),
                project: Some(env.project.clone()),
                expected,
                found,
                fix,
            };
            if s.state == SlotState::Empty {
                if let Some(c) = found {
                    out.push(finding(
                        "container_stale",
                        format!("no container ({} {} is empty)", env.environment, s.slot),
                        format!("{} container of {}", c.state, c.image),
                        format!("remove it on the app server: podman rm -f {name}"),
                    ));
                }
                continue;
            }
            let redeploy = match s.state {
                SlotState::Active => "deploy again and promote (or rollback to the grace slot)",
                SlotState::Grace => "slot_cleanup once the grace period ends, or deploy again",
                _ => "deploy again",
            };
            let Some(c) = found else {
                out.push(finding(
                    "container_missing",
                    format!(
                        "container of {} ({})",
                        s.image.as_deref().unwrap_or("?"),
                        s.state.as_str()
                    ),
                    "no container".into(),
                    redeploy.into(),
                ));
                continue;
            };
            let port = s.slot.port(env.base_port);
            let mut problems: Vec<(&str, String, String)> = Vec::new();
            if let Some(image) = &s.image {
                if &c.image != image {
                    problems.push((
                        "container_image",
                        format!("image {image}"),
                        format!("image {}", c.image),
                    ));
                }
            }
            let env_name = env.environment.to_string();
            let slot_name = s.slot.to_string();
            let mut want_labels = vec![
                (LABEL_PROJECT, env.project.as_str()),
                (LABEL_ENVIRONMENT, env_name.as_str()),
                (LABEL_SLOT, slot_name.as_str()),
            ];
            if let Some(d) = &s.deployment_id {
                want_labels.push((LABEL_DEPLOYMENT, d.as_str()));
            }
            for (k, v) in want_labels {
                let got = c.labels.get(k).map(String::as_str);
                if got != Some(v) {
                    problems.push((
                        "container_labels",
                        format!("label {k}={v}"),
                        format!("label {k}={}", got.unwrap_or("(none)")),
                    ));
                }
            }
            let published = c
                .host_ports
                .iter()
                .zip(
                    c.host_ips
                        .iter()
                        .map(String::as_str)
                        .chain(std::iter::repeat("")),
                )
                .any(|(p, ip)| *p == port && ip == PUBLISH_ADDRESS);
            if !published {
                let seen: Vec<String> = c
                    .host_ports
                    .iter()
                    .zip(
                        c.host_ips
                            .iter()
                            .map(String::as_str)
                            .chain(std::iter::repeat("")),
                    )
                    .map(|(p, ip)| format!("{ip}:{p}"))
                    .collect();
                problems.push((
                    "container_port",
                    format!("publishes {PUBLISH_ADDRESS}:{port}"),
                    if seen.is_empty() {
                        "publishes no port".into()
                    } else {
                        format!("publishes {}", seen.join(", "))
                    },
                ));
            }
            if c.state != "running" {
                problems.push((
                    "container_stopped",
                    "running".into(),
                    format!("{} ({})", c.state, c.status),
                ));
            }
            if let Some((kind, _, _)) = problems.first() {
                let kind = kind.to_string();
                let fix = if kind == "container_stopped" {
                    format!("start it (podman start {name} on the app server) or {redeploy}")
                } else {
                    redeploy.to_string()
                };
                let expected = problems
                    .iter()
                    .map(|p| p.1.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let found = problems
                    .iter()
                    .map(|p| p.2.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                out.push(finding(&kind, expected, found, fix));
            }
        }
    }
    for c in containers {
        if slot_names.contains(&c.name) {
            continue;
        }
        let project = c.labels.get(LABEL_PROJECT).cloned();
        let label = project.as_deref();
        let listed = match (scope.project, scope.unowned) {
            (Some(p), _) => label == Some(p),
            _ if label.is_some_and(|l| own_projects.contains(l)) => true,
            (None, None) => false,
            (None, Some(others)) => {
                !others.containers.contains(&c.name)
                    && !label.is_some_and(|l| others.projects.contains(l))
            }
        };
        if !listed {
            continue;
        }
        out.push(Finding {
            kind: "container_orphan".into(),
            object: c.name.clone(),
            project,
            expected: "no container: no recorded slot has this name".into(),
            found: format!("{} container of {} with codeb labels", c.state, c.image),
            fix: format!(
                "if nothing needs it, remove it on the app server: podman rm -f {}",
                c.name
            ),
        });
    }
}

/// SRV rrsets of the route zone: absolute name → targets sorted by
/// (priority, port). Records that do not parse become an empty list.
fn route_rrsets(
    records: &[(String, String, String, String)],
    route_zone: &str,
) -> BTreeMap<String, Vec<SrvTarget>> {
    let zone = absolute_name(route_zone);
    let mut out: BTreeMap<String, Vec<SrvTarget>> = BTreeMap::new();
    for (name, rtype, content, z) in records {
        if rtype == "SRV" && *z == zone {
            let entry = out.entry(name.clone()).or_default();
            if let Some(t) = parse_srv_content(content) {
                entry.push(t);
            }
        }
    }
    for t in out.values_mut() {
        t.sort_by_key(|t| (t.priority, t.port));
    }
    out
}

fn route_findings(
    envs: &[RecordedEnv],
    domains: &[RecordedDomain],
    names: &DriftNames,
    records: &[(String, String, String, String)],
    scope: &DriftScope<'_>,
    out: &mut Vec<Finding>,
) {
    let zone = &names.route_zone;
    let mut expected: BTreeMap<String, RouteExpectation> = BTreeMap::new();
    for env in envs {
        let (accepted, fix) = env_route(env);
        let mut hosts = env_hostnames(&env.project, env.environment, &names.base_domain);
        hosts.extend(
            domains
                .iter()
                .filter(|d| {
                    d.project == env.project
                        && d.environment == env.environment
                        && d.kind != "preview"
                        && domain_state_is_set_up(&d.route_state)
                })
                .map(|d| d.hostname.clone()),
        );
        for h in hosts {
            expected
                .entry(route_rrset_name(&h, zone))
                .or_insert(RouteExpectation {
                    project: env.project.clone(),
                    accepted: accepted.clone(),
                    fix: fix.clone(),
                });
        }
        for s in &env.slots {
            let host =
                preview_hostname(&env.project, env.environment, s.slot, &names.preview_domain);
            let (accepted, fix) = if s.state == SlotState::Empty {
                (
                    vec![None],
                    format!("{} is empty: delete the preview rrset", s.slot),
                )
            } else {
                (
                    vec![Some(vec![SrvTarget {
                        priority: PRIORITY_ACTIVE,
                        port: s.slot.port(env.base_port),
                    }])],
                    format!(
                        "PATCH the preview rrset to port {} (a deploy into {} writes it)",
                        s.slot.port(env.base_port),
                        s.slot
                    ),
                )
            };
            expected
                .entry(route_rrset_name(&host, zone))
                .or_insert(RouteExpectation {
                    project: env.project.clone(),
                    accepted,
                    fix,
                });
        }
    }
    let found = route_rrsets(records, zone);
    for (name, exp) in &expected {
        let got = found.get(name).cloned();
        if exp.accepted.contains(&got) {
            continue;
        }
        let want = exp.accepted.first().cloned().flatten();
        let kind = match (&want, &got) {
            (Some(_), None) => "route_missing",
            (None, Some(_)) => "route_stale",
            _ => "route_mismatch",
        };
        let expected_text = exp
            .accepted
            .iter()
            .map(targets_text)
            .collect::<Vec<_>>()
            .join(" or ");
        out.push(Finding {
            kind: kind.into(),
            object: name.clone(),
            project: Some(exp.project.clone()),
            expected: expected_text,
            found: targets_text(&got),
            fix: exp.fix.clone(),
        });
    }
    if let (None, Some(others)) = (scope.project, scope.unowned) {
        for (name, targets) in &found {
            if expected.contains_key(name) || others.rrsets.contains(name) {
                continue;
            }
            out.push(Finding {
                kind: "route_orphan".into(),
                object: name.clone(),
                project: None,
                expected: "no rrset: no project, slot or domain routes this name".into(),
                found: targets_text(&Some(targets.clone())),
                fix: "if nothing needs it, delete the rrset in PowerDNS".into(),
            });
        }
    }
}

fn dns_findings(
    domains: &[RecordedDomain],
    names: &DriftNames,
    records: &[(String, String, String, String)],
    out: &mut Vec<Finding>,
) {
    for d in domains {
        if d.kind == "preview" || !domain_state_is_set_up(&d.dns_state) {
            continue;
        }
        let name = absolute_name(&d.hostname);
        let found: BTreeSet<&str> = records
            .iter()
            .filter(|(n, t, _, _)| *n == name && t == "A")
            .map(|(_, _, c, _)| c.as_str())
            .collect();
        let want = names.app_address.as_deref();
        let (kind, expected) = match want {
            _ if found.is_empty() => (
                "dns_missing",
                format!("A record {}", want.unwrap_or("(the app server)")),
            ),
            Some(a) if found.len() != 1 || !found.contains(a) => {
                ("dns_mismatch", format!("A record {a}"))
            }
            _ => continue,
        };
        out.push(Finding {
            kind: kind.into(),
            object: name,
            project: Some(d.project.clone()),
            expected,
            found: if found.is_empty() {
                "no A record".into()
            } else {
                format!("A {}", found.into_iter().collect::<Vec<_>>().join(", "))
            },
            fix: format!("run domain_setup for {} again", d.hostname),
        });
    }
}

fn env_file_findings(
    envs: &[RecordedEnv],
    files: &BTreeMap<String, String>,
    out: &mut Vec<Finding>,
) {
    for env in envs {
        let Some((version, want)) = &env.env_file else {
            continue;
        };
        let path = app_env_path(&env.project, env.environment);
        let finding = |kind: &str, found: String| Finding {
            kind: kind.into(),
            object: path.clone(),
            project: Some(env.project.clone()),
            expected: format!("env v{version}, sha256 {}", short(want)),
            found,
            fix: format!(
                "env_sync {} {} rewrites it from the database",
                env.project, env.environment
            ),
        };
        match files.get(&path) {
            None => out.push(finding("env_file_missing", "no file".into())),
            Some(got) if !got.eq_ignore_ascii_case(want) => {
                out.push(finding("env_file_edited", format!("sha256 {}", short(got))))
            }
            Some(_) => {}
        }
    }
}

fn caddy_findings(
    expected: &str,
    found: &Option<String>,
    names: &DriftNames,
    out: &mut Vec<Finding>,
) {
    let want = short_sha(&caddy_directives(expected));
    let fix = "codeb caddy-install (validates, keeps a .bak) on the app server".to_string();
    match found {
        None => out.push(Finding {
            kind: "caddy_config_missing".into(),
            object: names.caddy_path.clone(),
            project: None,
            expected: format!("directives sha256 {want}"),
            found: "no file".into(),
            fix,
        }),
        Some(text) => {
            let got = short_sha(&caddy_directives(text));
            if got != want {
                out.push(Finding {
                    kind: "caddy_config".into(),
                    object: names.caddy_path.clone(),
                    project: None,
                    expected: format!("directives sha256 {want}"),
                    found: format!("directives sha256 {got}"),
                    fix,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "0b6f3c2e-0000-4000-8000-000000000001";

    fn names() -> DriftNames {
        DriftNames {
            route_zone: "route.codeb.test".into(),
            base_domain: "codeb.test".into(),
            preview_domain: "preview.codeb.test".into(),
            app_address: Some("10.77.0.11".into()),
            caddy_path: "/etc/caddy/Caddyfile".into(),
            caddy_expected: Some("# comment\n:80 {\n\treverse_proxy\n}\n".into()),
        }
    }

    fn slot(slot: SlotName, state: SlotState, image: &str) -> RecordedSlot {
        RecordedSlot {
            slot,
            state,
            image: (state != SlotState::Empty).then(|| image.to_string()),
            deployment_id: (state != SlotState::Empty).then(|| DEP.to_string()),
        }
    }

    /// shop production: blue active (v1), green `green`.
    fn env(green: SlotState) -> RecordedEnv {
        RecordedEnv {
            project: "shop".into(),
            environment: Environment::Production,
            base_port: 4100,
            slots: [
                slot(SlotName::Blue, SlotState::Active, "r/demo:v1"),
                slot(SlotName::Green, green, "r/demo:v2"),
            ],
            env_file: Some((3, "ab".repeat(32))),
        }
    }

    fn container(slot: SlotName, image: &str, port: u16) -> Container {
        Container {
            name: format!("shop-production-{slot}"),
            image: image.into(),
            state: "running".into(),
            status: "Up".into(),
            labels: [
                (LABEL_PROJECT, "shop"),
                (LABEL_ENVIRONMENT, "production"),
                (LABEL_SLOT, slot.as_str()),
                (LABEL_DEPLOYMENT, DEP),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            host_ports: vec![port],
            host_ips: vec![PUBLISH_ADDRESS.into()],
        }
    }

    fn srv(host: &str, targets: &[(u16, u16)]) -> Vec<(String, String, String, String)> {
        targets
            .iter()
            .map(|(prio, port)| {
                (
                    route_rrset_name(host, "route.codeb.test"),
                    "SRV".to_string(),
                    format!("{prio} 0 {port} app.route.codeb.test."),
                    "route.codeb.test.".to_string(),
                )
            })
            .collect()
    }

    /// What the servers run when everything matches `env(Deployed)`.
    fn in_line() -> Observed {
        let mut records = srv("shop.codeb.test", &[(0, 4100), (10, 4101)]);
        records.extend(srv("shop-production-blue.preview.codeb.test", &[(0, 4100)]));
        records.extend(srv(
            "shop-production-green.preview.codeb.test",
            &[(0, 4101)],
        ));
        Observed {
            containers: Some(vec![
                container(SlotName::Blue, "r/demo:v1", 4100),
                container(SlotName::Green, "r/demo:v2", 4101),
            ]),
            env_files: Some(
                [(
                    "/opt/codeb/env/shop/.env.production".to_string(),
                    "ab".repeat(32),
                )]
                .into(),
            ),
            caddy: Some(Some(":80 {\n\treverse_proxy\n}\n# other comment\n".into())),
            records: Some(records),
        }
    }

    /// An owner's report of project shop.
    fn shop() -> DriftScope<'static> {
        DriftScope {
            project: Some("shop"),
            ..DriftScope::ALL
        }
    }

    fn kinds(f: &[Finding]) -> Vec<(&str, &str)> {
        f.iter()
            .map(|f| (f.kind.as_str(), f.object.as_str()))
            .collect()
    }

    #[test]
    fn matching_servers_have_no_drift() {
        let f = drift_findings(
            &[env(SlotState::Deployed)],
            &[],
            &names(),
            &in_line(),
            &DriftScope::ALL,
        );
        assert_eq!(f, vec![]);
        // A deployed slot may be listed as fallback or not.
        let mut o = in_line();
        let records = o.records.as_mut().unwrap();
        records.retain(|r| !r.2.starts_with("10 "));
        let f = drift_findings(&[env(SlotState::Deployed)], &[], &names(), &o, &shop());
        assert_eq!(f, vec![]);
    }

    #[test]
    fn a_grace_slot_must_be_the_fallback() {
        let mut o = in_line();
        o.records
            .as_mut()
            .unwrap()
            .retain(|r| !r.2.starts_with("10 "));
        let f = drift_findings(
            &[env(SlotState::Grace)],
            &[],
            &names(),
            &o,
            &DriftScope::ALL,
        );
        assert_eq!(
            kinds(&f),
            [(
                "route_mismatch",
                "_http._tcp.shop.codeb.test.route.codeb.test."
            )]
        );
        assert_eq!(f[0].expected, "priority 0 port 4100, priority 10 port 4101");
        assert_eq!(f[0].found, "priority 0 port 4100");
    }

    #[test]
    fn each_container_difference_is_one_finding() {
        let mut o = in_line();
        let c = o.containers.as_mut().unwrap();
        c.retain(|c| c.name != "shop-production-green");
        let f = drift_findings(
            &[env(SlotState::Deployed)],
            &[],
            &names(),
            &o,
            &DriftScope::ALL,
        );
        assert_eq!(kinds(&f), [("container_missing", "shop-production-green")]);

        let mut o = in_line();
        let c = &mut o.containers.as_mut().unwrap()[1];
        c.image = "r/demo:v1".into();
        c.state = "exited".into();
        c.host_ips = vec!["0.0.0.0".into()];
        let f = drift_findings(
            &[env(SlotState::Deployed)],
            &[],
            &names(),
            &o,
            &DriftScope::ALL,
        );
        assert_eq!(kinds(&f), [("container_image", "shop-production-green")]);
        assert_eq!(
            f[0].found,
            "image r/demo:v1; publishes 0.0.0.0:4101; exited (Up)"
        );

        let mut o = in_line();
        let c = &mut o.containers.as_mut().unwrap()[0];
        c.labels.insert(LABEL_DEPLOYMENT.into(), "other".into());
        let f = drift_findings(
            &[env(SlotState::Deployed)],
            &[],
            &names(),
            &o,
            &DriftScope::ALL,
        );
        assert_eq!(kinds(&f), [("container_labels", "shop-production-blue")]);
    }

    #[test]
    fn empty_slots_and_unknown_containers() {
        let mut o = in_line();
        o.records
            .as_mut()
            .unwrap()
            .retain(|r| !r.2.starts_with("10 ") && !r.0.contains("green"));
        let mut stray = container(SlotName::Blue, "r/x", 4900);
        stray.name = "gone-production-blue".into();
        stray.labels.insert(LABEL_PROJECT.into(), "gone".into());
        o.containers.as_mut().unwrap().push(stray);
        let f = drift_findings(
            &[env(SlotState::Empty)],
            &[],
            &names(),
            &o,
            &DriftScope::ALL,
        );
        assert_eq!(
            kinds(&f),
            [
                ("container_stale", "shop-production-green"),
                ("container_orphan", "gone-production-blue")
            ]
        );
        // Scoped to shop, other projects' containers are not its business.
        let f = drift_findings(&[env(SlotState::Empty)], &[], &names(), &o, &shop());
        assert_eq!(kinds(&f), [("container_stale", "shop-production-green")]);
    }

    #[test]
    fn routes_without_a_record_are_orphans_only_fleet_wide() {
        let mut o = in_line();
        o.records
            .as_mut()
            .unwrap()
            .extend(srv("old.codeb.test", &[(0, 4200)]));
        let e = [env(SlotState::Deployed)];
        let f = drift_findings(&e, &[], &names(), &o, &DriftScope::ALL);
        assert_eq!(
            kinds(&f),
            [(
                "route_orphan",
                "_http._tcp.old.codeb.test.route.codeb.test."
            )]
        );
        assert_eq!(drift_findings(&e, &[], &names(), &o, &shop()), vec![]);
        // Without an active slot the environment has no route.
        let mut idle = env(SlotState::Deployed);
        idle.slots[0] = slot(SlotName::Blue, SlotState::Empty, "");
        o.containers.as_mut().unwrap().remove(0);
        o.records
            .as_mut()
            .unwrap()
            .retain(|r| !r.0.contains("blue"));
        let f = drift_findings(&[idle], &[], &names(), &o, &shop());
        assert_eq!(
            kinds(&f),
            [(
                "route_stale",
                "_http._tcp.shop.codeb.test.route.codeb.test."
            )]
        );
    }

    #[test]
    fn a_team_sees_only_its_own_and_an_owner_also_what_nobody_owns() {
        let mut o = in_line();
        o.caddy = Some(None);
        o.records
            .as_mut()
            .unwrap()
            .extend(srv("old.codeb.test", &[(0, 4200)]));
        o.records
            .as_mut()
            .unwrap()
            .extend(srv("theirs-staging.codeb.test", &[(0, 4300)]));
        let stray = |name: &str, project: &str| {
            let mut c = container(SlotName::Blue, "r/x", 4900);
            c.name = name.into();
            c.labels.insert(LABEL_PROJECT.into(), project.into());
            c
        };
        o.containers.as_mut().unwrap().extend([
            stray("shop-old", "shop"),
            stray("gone-production-blue", "gone"),
            stray("theirs-staging-blue", "theirs"),
            stray("theirs-tmp", "theirs"),
        ]);
        let e = [env(SlotState::Deployed)];
        // Not an owner: only what belongs to the team's projects.
        let member = DriftScope {
            project: None,
            unowned: None,
        };
        let f = drift_findings(&e, &[], &names(), &o, &member);
        assert_eq!(kinds(&f), [("container_orphan", "shop-old")]);
        // An owner also sees what no project owns, never another team's.
        let others =
            OtherTeams::from_rows(&[("theirs".into(), Environment::Staging, None)], &names());
        assert!(others.containers.contains("theirs-staging-green"));
        let owner = DriftScope {
            project: None,
            unowned: Some(&others),
        };
        let f = drift_findings(&e, &[], &names(), &o, &owner);
        assert_eq!(
            kinds(&f),
            [
                ("container_orphan", "shop-old"),
                ("container_orphan", "gone-production-blue"),
                (
                    "route_orphan",
                    "_http._tcp.old.codeb.test.route.codeb.test."
                ),
                ("caddy_config_missing", "/etc/caddy/Caddyfile")
            ]
        );
        assert!(!format!("{f:?}").contains("theirs"));
        // A project's report: its own containers; Caddy for owners only.
        let f = drift_findings(&e, &[], &names(), &o, &shop());
        assert_eq!(
            kinds(&f),
            [
                ("container_orphan", "shop-old"),
                ("caddy_config_missing", "/etc/caddy/Caddyfile")
            ]
        );
        let viewer = DriftScope {
            project: Some("shop"),
            unowned: None,
        };
        let f = drift_findings(&e, &[], &names(), &o, &viewer);
        assert_eq!(kinds(&f), [("container_orphan", "shop-old")]);
    }

    #[test]
    fn domains_need_their_a_record_and_route() {
        let domain = RecordedDomain {
            hostname: "www.shop.test".into(),
            project: "shop".into(),
            environment: Environment::Production,
            kind: "custom".into(),
            dns_state: "ok".into(),
            route_state: "ok".into(),
        };
        let e = [env(SlotState::Deployed)];
        let mut o = in_line();
        let f = drift_findings(
            &e,
            std::slice::from_ref(&domain),
            &names(),
            &o,
            &DriftScope::ALL,
        );
        assert_eq!(
            kinds(&f),
            [
                (
                    "route_missing",
                    "_http._tcp.www.shop.test.route.codeb.test."
                ),
                ("dns_missing", "www.shop.test.")
            ]
        );
        let records = o.records.as_mut().unwrap();
        records.extend(srv("www.shop.test", &[(0, 4100)]));
        records.push((
            "www.shop.test.".into(),
            "A".into(),
            "10.0.0.9".into(),
            "shop.test.".into(),
        ));
        let f = drift_findings(
            &e,
            std::slice::from_ref(&domain),
            &names(),
            &o,
            &DriftScope::ALL,
        );
        assert_eq!(kinds(&f), [("dns_mismatch", "www.shop.test.")]);
        assert_eq!(f[0].found, "A 10.0.0.9");
        // Pending domains are not checked.
        let pending = RecordedDomain {
            dns_state: "pending".into(),
            route_state: "pending".into(),
            ..domain
        };
        let f = drift_findings(&e, &[pending], &names(), &in_line(), &DriftScope::ALL);
        assert_eq!(f, vec![]);
    }

    #[test]
    fn env_files_and_caddy() {
        let e = [env(SlotState::Deployed)];
        let mut o = in_line();
        o.env_files = Some(
            [(
                "/opt/codeb/env/shop/.env.production".to_string(),
                "cd".repeat(32),
            )]
            .into(),
        );
        o.caddy = Some(Some(":80 {\n\treverse_proxy other\n}\n".into()));
        let f = drift_findings(&e, &[], &names(), &o, &DriftScope::ALL);
        assert_eq!(
            kinds(&f),
            [
                ("env_file_edited", "/opt/codeb/env/shop/.env.production"),
                ("caddy_config", "/etc/caddy/Caddyfile")
            ]
        );
        assert_eq!(f[0].expected, "env v3, sha256 abababababab");
        assert_eq!(f[0].found, "sha256 cdcdcdcdcdcd");
        o.env_files = Some(BTreeMap::new());
        o.caddy = Some(None);
        let f = drift_findings(&e, &[], &names(), &o, &DriftScope::ALL);
        assert_eq!(
            kinds(&f),
            [
                ("env_file_missing", "/opt/codeb/env/shop/.env.production"),
                ("caddy_config_missing", "/etc/caddy/Caddyfile")
            ]
        );
        // Failed observations skip their checks.
        let f = drift_findings(&e, &[], &names(), &Observed::default(), &DriftScope::ALL);
        assert_eq!(f, vec![]);
    }

    #[test]
    fn listing_commands_and_parsing() {
        assert_eq!(
            env_file_hashes_cmd().argv(),
            [
                "find",
                "/opt/codeb/env",
                "-type",
                "f",
                "-name",
                ".env.*",
                "-exec",
                "sha256sum",
                "--",
                "{}",
                "+"
            ]
        );
        assert_eq!(
            caddy_read_cmd("/etc/caddy/Caddyfile").unwrap().argv(),
            ["cat", "--", "/etc/caddy/Caddyfile"]
        );
        assert!(caddy_read_cmd("relative").is_err());
        let h = "0123456789abcdef".repeat(4);
        let out = format!(
            "{h}  /opt/codeb/env/shop/.env.staging\n\\{h}  /opt/codeb/env/a\\nb\nnonsense\n"
        );
        let parsed = parse_sha256sum(&out);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed["/opt/codeb/env/shop/.env.staging"], h);
    }
}
