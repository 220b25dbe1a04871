//! PURE: deleting a project for good (DESIGN §6, a critical operation).
//!
//! `plan_project_delete` turns what was observed in the database into the
//! deterministic details a human confirms (their hash binds the
//! confirmation), and the functions below name everything the deletion
//! removes: containers, route rrsets, address records, env directories,
//! and the Redis script that deletes the project's keys. Nothing here
//! touches a server.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::model::{validate_project_name, Environment, Invalid, SlotName, StorageNames};
use crate::plan::cmd::RemoteCmd;
use crate::plan::dns::{env_hostnames, preview_hostname, route_rrset_name, RrsetChange};
use crate::plan::envvars::{APP_ENV_ROOT, BACKUP_ENV_ROOT};
use crate::plan::files::{validate_remote_path, FILE_CMD_TIMEOUT};
use crate::plan::storage::{redis_quote, RedisReply};

/// Keys one `EVAL` of `REDIS_UNLINK_SCRIPT` looks at, at most: bounds
/// how long one call blocks Redis (about a millisecond per thousand keys).
pub const REDIS_UNLINK_KEYS_PER_CALL: u32 = 20_000;
/// `SCAN ... COUNT` inside the script.
pub const REDIS_SCAN_COUNT: u32 = 1_000;
/// Longest run of `EVAL` calls before codeb gives up (a keyspace of
/// `REDIS_UNLINK_KEYS_PER_CALL` × this many keys).
pub const REDIS_UNLINK_MAX_CALLS: u32 = 100_000;

/// Deletes the keys matching `ARGV[2]` server-side, starting at cursor
/// `ARGV[1]`: SCAN steps of `ARGV[3]` keys until `ARGV[4]` keys were looked
/// at or the scan is complete; returns `{next cursor, keys deleted}`.
/// UNLINK frees values in the background. Run once per cursor until the
/// cursor is "0".
pub const REDIS_UNLINK_SCRIPT: &str = "local cursor = ARGV[1] \
local deleted = 0 \
local seen = 0 \
repeat \
local r = redis.call('SCAN', cursor, 'MATCH', ARGV[2], 'COUNT', ARGV[3]) \
cursor = r[1] \
for _, k in ipairs(r[2]) do deleted = deleted + redis.call('UNLINK', k) end \
seen = seen + tonumber(ARGV[3]) \
until cursor == '0' or seen >= tonumber(ARGV[4]) \
return {cursor, deleted}";

/// One slot as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSlot {
    /// blue or green.
    pub slot: SlotName,
    /// Recorded state (`empty`, `deployed`, `active`, `grace`).
    pub state: String,
    /// Image it runs.
    pub image: Option<String>,
    /// Env version it runs with.
    pub env_version: Option<i32>,
}

/// One environment of the project as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedEnvironment {
    /// Environment.
    pub environment: Environment,
    /// Even base port of its pair.
    pub base_port: u16,
    /// Its slots (any order).
    pub slots: Vec<ObservedSlot>,
    /// Latest env version, if any.
    pub latest_env_version: Option<i32>,
    /// Domains routed to it: (host name, kind from the domains table).
    pub domains: Vec<(String, String)>,
    /// Whether its PostgreSQL database holds data (`databases_with_data`).
    pub database_has_data: bool,
}

/// The project as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedProject {
    /// Name (validated).
    pub project: String,
    /// Its environments (any order).
    pub environments: Vec<ObservedEnvironment>,
    /// Succeeded backups, whose dump files are kept.
    pub backups_kept: i64,
}

/// One slot in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotDetails {
    /// blue or green.
    pub slot: SlotName,
    /// Its container name.
    pub container: String,
    /// Recorded state.
    pub state: String,
    /// Image it runs.
    pub image: Option<String>,
    /// Env version it runs with.
    pub env_version: Option<i32>,
}

/// One routed host name in the plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct HostDetails {
    /// Host name.
    pub hostname: String,
    /// `env` (the environment's own name), `preview` (a slot's preview
    /// host), or the domains table's kind (`managed`, `custom`).
    pub kind: String,
}

/// The storage objects named after one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageDetails {
    /// PostgreSQL database.
    pub database: String,
    /// PostgreSQL login role owning it.
    pub role: String,
    /// Redis ACL user.
    pub redis_user: String,
    /// Redis key prefix.
    pub redis_prefix: String,
}

/// One environment in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentDetails {
    /// Environment.
    pub environment: Environment,
    /// Blue and green host ports, freed by the deletion.
    pub ports: [u16; 2],
    /// Blue then green.
    pub slots: Vec<SlotDetails>,
    /// Latest env version (None: no variables).
    pub env_version: Option<i32>,
    /// Host names routed to it, sorted.
    pub hostnames: Vec<HostDetails>,
    /// Its storage.
    pub storage: StorageDetails,
    /// Whether its database holds data (a table, index or sequence with
    /// content): then a recent verified backup must exist.
    pub database_has_data: bool,
}

impl EnvironmentDetails {
    /// Whether deleting removes something of this environment beyond what
    /// `project_create` made: a deployed slot, a domain, or data in its
    /// database. Those environments decide the confirmation policy.
    pub fn holds_something(&self) -> bool {
        self.slots.iter().any(|s| s.state != "empty")
            || self
                .hostnames
                .iter()
                .any(|h| h.kind == "managed" || h.kind == "custom")
            || self.database_has_data
    }
}

/// What a project deletion removes, as confirmed: deterministic (fixed
/// environment order, sorted lists, no timestamps), names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectDeleteDetails {
    /// Environments in `Environment::ALL` order.
    pub environments: Vec<EnvironmentDetails>,
    /// Succeeded backups; their dump files stay on the backup server.
    pub backups_kept: i64,
}

impl ProjectDeleteDetails {
    /// As JSON, for `CriticalPlan::details`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("plan details serialize")
    }
}

/// The details of deleting `observed`, and a summary for humans.
pub fn plan_project_delete(
    observed: &ObservedProject,
    base_domain: &str,
    preview_domain: &str,
) -> Result<(String, ProjectDeleteDetails), Invalid> {
    let p = &observed.project;
    validate_project_name(p)?;
    let mut environments = Vec::new();
    for env in Environment::ALL {
        let Some(o) = observed.environments.iter().find(|e| e.environment == env) else {
            continue;
        };
        let mut slots = Vec::new();
        let mut hostnames: BTreeSet<HostDetails> = env_hostnames(p, env, base_domain)
            .into_iter()
            .map(|hostname| HostDetails {
                hostname,
                kind: "env".into(),
            })
            .collect();
        for slot in SlotName::ALL {
            let recorded = o.slots.iter().find(|s| s.slot == slot);
            let state = recorded.map_or("empty".to_string(), |s| s.state.clone());
            if state != "empty" {
                hostnames.insert(HostDetails {
                    hostname: preview_hostname(p, env, slot, preview_domain),
                    kind: "preview".into(),
                });
            }
            slots.push(SlotDetails {
                slot,
                container: container_name(p, env, slot),
                state,
                image: recorded.and_then(|s| s.image.clone()),
                env_version: recorded.and_then(|s| s.env_version),
            });
        }
        hostnames.extend(o.domains.iter().map(|(h, k)| HostDetails {
            hostname: h.clone(),
            kind: k.clone(),
        }));
        let names = StorageNames::new(p, env)?;
        environments.push(EnvironmentDetails {
            environment: env,
            ports: [
                SlotName::Blue.port(o.base_port),
                SlotName::Green.port(o.base_port),
            ],
            slots,
            env_version: o.latest_env_version,
            hostnames: hostnames.into_iter().collect(),
            storage: StorageDetails {
                database: names.pg.clone(),
                role: names.pg,
                redis_user: names.redis_user,
                redis_prefix: names.redis_prefix,
            },
            database_has_data: o.database_has_data,
        });
    }
    let running = environments
        .iter()
        .flat_map(|e| &e.slots)
        .filter(|s| s.state != "empty")
        .count();
    let hosts = environments
        .iter()
        .map(|e| e.hostnames.len())
        .sum::<usize>();
    let with_data: Vec<&str> = environments
        .iter()
        .filter(|e| e.database_has_data)
        .map(|e| e.environment.as_str())
        .collect();
    let summary = format!(
        "Delete project {p} for good: {running} deployed slot(s) and their containers, \
         the routes of {hosts} host name(s), its env variables and env files, and the \
         PostgreSQL databases, roles, Redis users and Redis keys of all {} environments \
         (databases holding data: {}). Its {} backup(s) and the deployment history are kept.",
        environments.len(),
        if with_data.is_empty() {
            "none".to_string()
        } else {
            with_data.join(", ")
        },
        observed.backups_kept
    );
    Ok((
        summary,
        ProjectDeleteDetails {
            environments,
            backups_kept: observed.backups_kept,
        },
    ))
}

impl ProjectDeleteDetails {
    /// The environments that hold something (`holds_something`), in
    /// `Environment::ALL` order.
    pub fn environments_holding_something(&self) -> Vec<Environment> {
        self.environments
            .iter()
            .filter(|e| e.holds_something())
            .map(|e| e.environment)
            .collect()
    }

    /// The environments whose database holds data but has no verified
    /// backup finished within `max_age` before `now`; `latest` is the last
    /// verified backup's finish time per environment. None when
    /// `max_age` is zero (the check is off).
    pub fn environments_missing_backup(
        &self,
        latest: &[(Environment, DateTime<Utc>)],
        now: DateTime<Utc>,
        max_age: chrono::Duration,
    ) -> Vec<Environment> {
        if max_age <= chrono::Duration::zero() {
            return Vec::new();
        }
        self.environments
            .iter()
            .filter(|e| e.database_has_data)
            .filter(|e| {
                !latest
                    .iter()
                    .any(|(env, at)| *env == e.environment && now - *at <= max_age)
            })
            .map(|e| e.environment)
            .collect()
    }
}

/// Why project_delete is refused without recent backups, with the exact
/// `backup_create` calls that fix it.
pub fn missing_backup_message(
    project: &str,
    missing: &[Environment],
    max_age_hours: u32,
) -> String {
    let calls: Vec<String> = missing
        .iter()
        .map(|e| format!("backup_create {{\"project\": \"{project}\", \"environment\": \"{e}\"}}"))
        .collect();
    let names: Vec<&str> = missing.iter().map(|e| e.as_str()).collect();
    format!(
        "project_delete of {project} refused: the {} database(s) hold data and have no verified \
         backup younger than {max_age_hours} h (auth.delete_backup_max_age_hours). Nothing was \
         changed. Take one first — {} — then call project_delete again",
        names.join(", "),
        calls.join(", then ")
    )
}

/// PostgreSQL's first OID (and file node) for objects made after initdb:
/// files of relations users made are named from here up.
pub const FIRST_USER_FILENODE: u32 = 16384;

/// Which of `databases` hold data, asked of the cluster from the
/// maintenance database `postgres` (tenants cannot create objects there)
/// with `search_path = pg_catalog` and qualified names — nothing runs in
/// the tenants' databases. A database holds data when its directory has a
/// non-empty file of a relation made after initdb (file node ≥ 16384:
/// tables with rows, indexes, sequences; an empty table without indexes
/// does not count), or when it lives outside the default tablespace (then
/// it is assumed to). Rewriting a catalogue (VACUUM FULL) also counts:
/// the check errs on the side of asking for a backup. Output: one line
/// `name|t` or `name|f` per existing database (`parse_databases_with_data`).
pub fn databases_with_data(
    storage: &crate::config::StorageConfig,
    databases: &[String],
) -> Result<RemoteCmd, Invalid> {
    for d in databases {
        crate::plan::backup::validate_database_name(d)?;
    }
    // Validated names are [a-z0-9_] only: safe inside a literal.
    let list = databases
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let list = if list.is_empty() {
        "NULL".to_string()
    } else {
        list
    };
    let sql = format!(
        "SELECT d.datname, \
           d.dattablespace OPERATOR(pg_catalog.<>) (SELECT t.oid FROM pg_catalog.pg_tablespace t \
             WHERE t.spcname OPERATOR(pg_catalog.=) 'pg_default') \
           OR COALESCE((SELECT pg_catalog.sum((pg_catalog.pg_stat_file(\
               'base/' OPERATOR(pg_catalog.||) d.oid::pg_catalog.text OPERATOR(pg_catalog.||) '/' \
               OPERATOR(pg_catalog.||) f, true)).size) \
             FROM pg_catalog.pg_ls_dir('base/' OPERATOR(pg_catalog.||) d.oid::pg_catalog.text, true, false) AS f \
             WHERE f OPERATOR(pg_catalog.~) '^[0-9]+' \
               AND pg_catalog.substring(f, '^[0-9]+')::pg_catalog.int8 OPERATOR(pg_catalog.>=) {FIRST_USER_FILENODE}), 0) \
             OPERATOR(pg_catalog.>) 0 \
         FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) ANY (ARRAY[{list}]::pg_catalog.text[]) \
         ORDER BY 1"
    );
    Ok(crate::plan::backup::as_pg_user(storage, "psql")
        .args([
            "--no-psqlrc",
            "--no-password",
            "--quiet",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
        ])
        .arg(format!("--host={}", storage.pg_socket_dir))
        .arg(format!("--port={}", storage.postgres_port))
        .arg(format!("--dbname={MAINTENANCE_DATABASE}"))
        .arg("--command=SET search_path = pg_catalog")
        .arg(format!("--command={sql}"))
        .timeout(DATA_CHECK_TIMEOUT))
}

/// The database codeb's catalogue queries connect to.
pub const MAINTENANCE_DATABASE: &str = "postgres";
/// Time limit of `databases_with_data`.
pub const DATA_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads `databases_with_data` output: database name → holds data. None
/// when a line is not `name|t` or `name|f`.
pub fn parse_databases_with_data(output: &str) -> Option<Vec<(String, bool)>> {
    output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, flag) = l.split_once('|')?;
            let flag = match flag {
                "t" => true,
                "f" => false,
                _ => return None,
            };
            crate::plan::backup::validate_database_name(name).ok()?;
            Some((name.to_string(), flag))
        })
        .collect()
}

/// `{project}-{environment}-{slot}` (DESIGN §2).
pub fn container_name(project: &str, env: Environment, slot: SlotName) -> String {
    format!("{project}-{env}-{slot}")
}

/// Every route rrset that may exist for the project, to delete in one
/// PATCH: the planned host names plus the preview hosts of every slot
/// (a leftover of a crashed deploy is removed too). Sorted, no duplicates.
pub fn route_deletions(
    project: &str,
    details: &ProjectDeleteDetails,
    route_zone: &str,
    preview_domain: &str,
) -> Vec<RrsetChange> {
    let mut names = BTreeSet::new();
    for e in &details.environments {
        for h in &e.hostnames {
            names.insert(route_rrset_name(&h.hostname, route_zone));
        }
        for slot in SlotName::ALL {
            let host = preview_hostname(project, e.environment, slot, preview_domain);
            names.insert(route_rrset_name(&host, route_zone));
        }
    }
    names
        .into_iter()
        .map(|name| RrsetChange::Delete { name })
        .collect()
}

/// The domains whose A/AAAA records codeb set (domain_setup), sorted.
pub fn address_domains(details: &ProjectDeleteDetails) -> Vec<String> {
    let set: BTreeSet<String> = details
        .environments
        .iter()
        .flat_map(|e| &e.hostnames)
        .filter(|h| h.kind == "managed" || h.kind == "custom")
        .map(|h| h.hostname.clone())
        .collect();
    set.into_iter().collect()
}

/// Whether an address rrset holds only what codeb set (`ours`), so the
/// deletion may remove it; `None` (absent) needs no removal.
pub fn address_rrset_is_ours(contents: Option<&[String]>, ours: Option<&str>) -> bool {
    match (contents, ours) {
        (Some(c), Some(o)) => !c.is_empty() && c.iter().all(|x| x == o),
        _ => false,
    }
}

/// The PATCH body deleting the A and/or AAAA rrset of `name`.
pub fn address_delete_body(name: &str, a: bool, aaaa: bool) -> Value {
    let name = crate::plan::dns::absolute_name(name);
    let rrsets: Vec<Value> = [("A", a), ("AAAA", aaaa)]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(t, _)| json!({"name": name, "type": t, "changetype": "DELETE"}))
        .collect();
    json!({ "rrsets": rrsets })
}

/// The project's env directory under `root` (`APP_ENV_ROOT` on the app
/// server, `BACKUP_ENV_ROOT` on the backup server).
pub fn env_dir(root: &str, project: &str) -> Result<String, Invalid> {
    validate_project_name(project)?;
    if root != APP_ENV_ROOT && root != BACKUP_ENV_ROOT {
        return Err(Invalid(format!(
            "{root} is not an env file root; only {APP_ENV_ROOT} and {BACKUP_ENV_ROOT} are"
        )));
    }
    let dir = format!("{root}/{project}");
    validate_remote_path(&dir)?;
    Ok(dir)
}

/// Removes the project's env directory under `root` with everything in it,
/// succeeding when it is absent: `rm -rf --one-file-system -- ROOT/PROJECT`.
/// Only the two env roots are accepted, and the project name is validated,
/// so nothing else can be named.
pub fn remove_env_dir(root: &str, project: &str) -> Result<RemoteCmd, Invalid> {
    let dir = env_dir(root, project)?;
    Ok(RemoteCmd::new("rm")
        .args(["-rf", "--one-file-system", "--"])
        .arg(dir)
        .timeout(FILE_CMD_TIMEOUT))
}

/// The key pattern of every key of the project: `{project}:*`. Project
/// names hold no glob characters, and the `:` keeps `shop` from matching
/// `shop-x`'s keys.
pub fn redis_key_pattern(project: &str) -> Result<String, Invalid> {
    validate_project_name(project)?;
    Ok(format!("{project}:*"))
}

/// One `EVAL` line for `redis_cli_session`: deletes the next batch of the
/// project's keys starting at `cursor` (a decimal SCAN cursor).
pub fn redis_unlink_line(project: &str, cursor: &str) -> Result<String, Invalid> {
    let pattern = redis_key_pattern(project)?;
    if cursor.is_empty() || cursor.len() > 20 || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid(format!(
            "SCAN cursor {} is not a decimal number",
            crate::model::describe_input(cursor)
        )));
    }
    Ok(format!(
        "EVAL {} 0 {cursor} {} {REDIS_SCAN_COUNT} {REDIS_UNLINK_KEYS_PER_CALL}",
        redis_quote(REDIS_UNLINK_SCRIPT),
        redis_quote(&pattern)
    ))
}

/// The script's reply: (next cursor, keys deleted).
pub fn parse_unlink_reply(reply: &RedisReply) -> Result<(String, u64), String> {
    match reply {
        RedisReply::Value(Value::Array(v)) if v.len() == 2 => {
            let cursor = match &v[0] {
                Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                    s.clone()
                }
                other => return Err(format!("unexpected cursor {other}")),
            };
            let n = v[1]
                .as_u64()
                .ok_or_else(|| format!("unexpected count {}", v[1]))?;
            Ok((cursor, n))
        }
        RedisReply::Error(e) => Err(format!("Redis refused the script: {e}")),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed() -> ObservedProject {
        ObservedProject {
            project: "shop".into(),
            environments: vec![
                ObservedEnvironment {
                    environment: Environment::Staging,
                    base_port: 4500,
                    slots: vec![
                        ObservedSlot {
                            slot: SlotName::Green,
                            state: "empty".into(),
                            image: None,
                            env_version: None,
                        },
                        ObservedSlot {
                            slot: SlotName::Blue,
                            state: "active".into(),
                            image: Some("10.77.0.12:5000/demo:v1".into()),
                            env_version: Some(2),
                        },
                    ],
                    latest_env_version: Some(3),
                    domains: vec![
                        ("www.shop.example.test".into(), "managed".into()),
                        ("a.other.test".into(), "custom".into()),
                    ],
                    database_has_data: true,
                },
                ObservedEnvironment {
                    environment: Environment::Production,
                    base_port: 4100,
                    slots: vec![],
                    latest_env_version: Some(1),
                    domains: vec![],
                    database_has_data: false,
                },
            ],
            backups_kept: 2,
        }
    }

    #[test]
    fn details_are_ordered_and_name_everything() {
        let (summary, d) =
            plan_project_delete(&observed(), "codeb.test", "preview.codeb.test").expect("plans");
        assert!(summary.contains("1 deployed slot"), "{summary}");
        assert!(summary.contains("2 backup(s)"), "{summary}");
        assert!(
            summary.contains("databases holding data: staging"),
            "{summary}"
        );
        let v = d.to_value();
        assert_eq!(
            v,
            json!({
                "backups_kept": 2,
                "environments": [
                    {
                        "environment": "production",
                        "ports": [4100, 4101],
                        "env_version": 1,
                        "slots": [
                            {"slot": "blue", "container": "shop-production-blue", "state": "empty", "image": null, "env_version": null},
                            {"slot": "green", "container": "shop-production-green", "state": "empty", "image": null, "env_version": null},
                        ],
                        "hostnames": [{"hostname": "shop.codeb.test", "kind": "env"}],
                        "storage": {"database": "shop_production", "role": "shop_production",
                                    "redis_user": "shop-production", "redis_prefix": "shop:production:"},
                        "database_has_data": false,
                    },
                    {
                        "environment": "staging",
                        "ports": [4500, 4501],
                        "env_version": 3,
                        "slots": [
                            {"slot": "blue", "container": "shop-staging-blue", "state": "active",
                             "image": "10.77.0.12:5000/demo:v1", "env_version": 2},
                            {"slot": "green", "container": "shop-staging-green", "state": "empty", "image": null, "env_version": null},
                        ],
                        "hostnames": [
                            {"hostname": "a.other.test", "kind": "custom"},
                            {"hostname": "shop-staging-blue.preview.codeb.test", "kind": "preview"},
                            {"hostname": "shop-staging.codeb.test", "kind": "env"},
                            {"hostname": "www.shop.example.test", "kind": "managed"},
                        ],
                        "storage": {"database": "shop_staging", "role": "shop_staging",
                                    "redis_user": "shop-staging", "redis_prefix": "shop:staging:"},
                        "database_has_data": true,
                    },
                ],
            })
        );
        // Input order does not matter.
        let mut shuffled = observed();
        shuffled.environments.reverse();
        shuffled.environments[1].domains.reverse();
        let (_, again) =
            plan_project_delete(&shuffled, "codeb.test", "preview.codeb.test").unwrap();
        assert_eq!(again, d);
        assert_eq!(
            address_domains(&d),
            vec!["a.other.test", "www.shop.example.test"]
        );
        let routes = route_deletions("shop", &d, "route.codeb.test", "preview.codeb.test");
        let names: Vec<String> = routes
            .iter()
            .map(|c| match c {
                RrsetChange::Delete { name } => name.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        // 2 env hosts, 2 domains, 4 preview hosts (every slot, deduplicated).
        assert_eq!(names.len(), 8, "{names:?}");
        assert!(names.contains(
            &"_http._tcp.shop-production-green.preview.codeb.test.route.codeb.test.".to_string()
        ));
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        let mut bad = observed();
        bad.project = "-rf".into();
        assert!(plan_project_delete(&bad, "codeb.test", "preview.codeb.test").is_err());
    }

    #[test]
    fn only_environments_holding_something_count_and_data_needs_a_fresh_backup() {
        let (_, d) = plan_project_delete(&observed(), "codeb.test", "preview.codeb.test").unwrap();
        // Staging runs a slot, has domains and data; production is as
        // project_create made it.
        assert_eq!(
            d.environments_holding_something(),
            vec![Environment::Staging]
        );
        let mut o = observed();
        o.environments[1].database_has_data = true;
        let (_, with_prod_data) =
            plan_project_delete(&o, "codeb.test", "preview.codeb.test").unwrap();
        assert_eq!(
            with_prod_data.environments_holding_something(),
            vec![Environment::Production, Environment::Staging]
        );
        let now = chrono::DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = chrono::Duration::hours(24);
        let hours_ago = |h: i64| now - chrono::Duration::hours(h);
        // No backup at all: staging (the one with data) is missing.
        assert_eq!(
            d.environments_missing_backup(&[], now, day),
            vec![Environment::Staging]
        );
        // A fresh one of staging; one of production does not count for it.
        assert!(d
            .environments_missing_backup(&[(Environment::Staging, hours_ago(23))], now, day)
            .is_empty());
        assert_eq!(
            d.environments_missing_backup(&[(Environment::Production, hours_ago(1))], now, day),
            vec![Environment::Staging]
        );
        // Too old.
        assert_eq!(
            d.environments_missing_backup(&[(Environment::Staging, hours_ago(25))], now, day),
            vec![Environment::Staging]
        );
        // 0 turns the check off.
        assert!(d
            .environments_missing_backup(&[], now, chrono::Duration::zero())
            .is_empty());
        let msg = missing_backup_message("shop", &[Environment::Staging], 24);
        assert!(
            msg.contains(r#"backup_create {"project": "shop", "environment": "staging"}"#),
            "{msg}"
        );
        assert!(
            msg.contains("24 h") && msg.contains("Nothing was changed"),
            "{msg}"
        );
    }

    #[test]
    fn the_data_check_is_one_catalogue_query_outside_the_tenant_databases() {
        let storage = crate::config::StorageConfig::default();
        let cmd = databases_with_data(
            &storage,
            &["shop_production".to_string(), "shop_staging".to_string()],
        )
        .unwrap();
        let argv = cmd.argv();
        assert_eq!(&argv[..4], ["runuser", "-u", "postgres", "--"]);
        assert!(argv.contains(&"--dbname=postgres".to_string()), "{argv:?}");
        assert!(argv.contains(&"--command=SET search_path = pg_catalog".to_string()));
        let sql = argv.last().unwrap();
        assert!(
            sql.contains("ARRAY['shop_production', 'shop_staging']"),
            "{sql}"
        );
        // Nothing but validated names reaches the SQL.
        for bad in ["x'; DROP DATABASE codeb; --", "Shop", "", "-d"] {
            assert!(
                databases_with_data(&storage, &[bad.to_string()]).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            parse_databases_with_data("shop_production|f\nshop_staging|t\n"),
            Some(vec![
                ("shop_production".to_string(), false),
                ("shop_staging".to_string(), true)
            ])
        );
        assert_eq!(parse_databases_with_data(""), Some(vec![]));
        assert_eq!(parse_databases_with_data("shop|maybe"), None);
        assert_eq!(parse_databases_with_data("could not connect"), None);
    }

    #[test]
    fn env_dirs_are_only_the_projects() {
        assert_eq!(
            remove_env_dir(APP_ENV_ROOT, "shop").unwrap().argv(),
            vec![
                "rm",
                "-rf",
                "--one-file-system",
                "--",
                "/opt/codeb/env/shop"
            ]
        );
        assert_eq!(
            remove_env_dir(BACKUP_ENV_ROOT, "shop").unwrap().argv(),
            vec![
                "rm",
                "-rf",
                "--one-file-system",
                "--",
                "/opt/codeb/env-backup/shop"
            ]
        );
        for (root, p) in [
            ("/", "shop"),
            ("/opt/codeb", "shop"),
            (APP_ENV_ROOT, ".."),
            (APP_ENV_ROOT, ""),
            (APP_ENV_ROOT, "a/b"),
            (BACKUP_ENV_ROOT, "-rf"),
        ] {
            assert!(remove_env_dir(root, p).is_err(), "{root} {p}");
        }
    }

    #[test]
    fn address_records_are_removed_only_when_they_are_codebs() {
        let ours = ["10.77.0.11".to_string()];
        assert!(address_rrset_is_ours(Some(&ours), Some("10.77.0.11")));
        assert!(!address_rrset_is_ours(Some(&ours), Some("10.0.0.1")));
        assert!(!address_rrset_is_ours(None, Some("10.77.0.11")));
        assert!(!address_rrset_is_ours(Some(&[]), Some("10.77.0.11")));
        let mixed = ["10.77.0.11".to_string(), "10.0.0.9".to_string()];
        assert!(!address_rrset_is_ours(Some(&mixed), Some("10.77.0.11")));
        assert_eq!(
            address_delete_body("www.shop.example.test", true, false),
            json!({"rrsets": [{"name": "www.shop.example.test.", "type": "A", "changetype": "DELETE"}]})
        );
        assert_eq!(
            address_delete_body("x.test", true, true)["rrsets"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn redis_unlink_line_is_one_quoted_script_and_plain_arguments() {
        let line = redis_unlink_line("shop", "0").unwrap();
        assert!(line.starts_with("EVAL \"local cursor = ARGV[1] "), "{line}");
        assert!(line.ends_with("\" 0 0 \"shop:*\" 1000 20000"), "{line}");
        // The script holds no character that would end the quoted argument.
        let quoted = redis_quote(REDIS_UNLINK_SCRIPT);
        assert!(!quoted[1..quoted.len() - 1].contains('"'));
        assert!(redis_unlink_line("shop", "12345").is_ok());
        for bad in ["", "1 2", "-1", "1\n", "x"] {
            assert!(redis_unlink_line("shop", bad).is_err(), "{bad:?}");
        }
        assert!(redis_unlink_line("Shop*", "0").is_err());
        assert_eq!(
            parse_unlink_reply(&RedisReply::Value(json!(["17", 5]))).unwrap(),
            ("17".to_string(), 5)
        );
        assert!(parse_unlink_reply(&RedisReply::Value(json!(["x", 5]))).is_err());
        assert!(parse_unlink_reply(&RedisReply::Error("NOSCRIPT".into())).is_err());
        assert!(parse_unlink_reply(&RedisReply::Value(json!(null))).is_err());
    }
}
