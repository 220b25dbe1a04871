//! The access-control matrix (DESIGN §5 table, §6): every tool, called
//! through `tools/call` over HTTP with real keys of every role, on a
//! project of the caller's own team and on one of another team. A call
//! succeeds exactly where DESIGN allows it; `tools/list` shows each role
//! exactly the tools it may call, and a viewer's list no mutating tool.
//! (Listing alone is not enforcement: every call is made, listed or not.)
//!
//! Team A has a key of every role, team B an owner; each team has a
//! project (its rows inserted directly: project_create would also make
//! databases and Redis users that nothing could remove yet), a finished
//! deployment and throwaway keys. Each key calls each tool on its own
//! team's project (or deployment, key) and on the other team's; tools that
//! name nothing of a team's are called once per key. Where the role allows
//! the call, the same tool is also called on a name that does not exist:
//! the other team's answer must be exactly that answer. Allowed means not
//! refused by access control — a success, or an isError about something
//! else (rows with `own_succeeds` must succeed outright); refused for the
//! role means "TOOL needs the ROLE role".
//!
//! The expected outcomes come from the table below, written from DESIGN
//! independently of `codeb::auth::roles` — the test would not be able to
//! fail if it asked the code what the code allows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::StreamExt;
use rmcp::model::{CallToolRequestParams, Tool};
use rmcp::service::RunningService;
use rmcp::RoleClient;
use serde_json::{json, Value};

use super::app_host::with_cleanup;
use super::common::{
    db, delete_teams, insert_project_of, mint_key, unique_project, unique_team, HttpServer,
    FAULT_LOCK,
};

/// Roles from least to most (DESIGN §6).
const ROLES: [&str; 4] = ["viewer", "member", "admin", "owner"];

fn rank(role: &str) -> usize {
    ROLES
        .iter()
        .position(|r| *r == role)
        .expect("a role of ROLES")
}

/// What a tool names, which decides whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// Nothing of any team's (or only the caller's own things): called
    /// once per key.
    Nothing,
    /// A project (`project`): another team's answers exactly like a
    /// missing one.
    Project,
    /// A project to create: the own-team call names a free name; another
    /// team's project name is refused.
    NewProject,
    /// A deployment id: another team's answers like a missing one.
    Deployment,
    /// An API key id: another team's answers like a missing one.
    Key,
}

/// The thing a call names: the caller's own, another team's, or one
/// that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Own,
    Other,
    Missing,
}

/// What a call's arguments are built from.
struct Subject<'a> {
    project: &'a str,
    deployment: &'a str,
    key: &'a str,
}

/// One row of the table: a tool, the least role DESIGN lets call it, what
/// it names, whether the own-team call must succeed outright (not only
/// get past access control), and harmless, fast arguments (dry runs,
/// handles that do not exist).
struct Row {
    tool: &'static str,
    role: &'static str,
    names: Names,
    own_succeeds: bool,
    args: fn(&Subject) -> Value,
}

/// A host name no test sets up.
const NO_DOMAIN: &str = "matrix-none.example.test";
/// An image reference in the testbed registry that was never pushed.
const NO_IMAGE: &str = "10.77.0.12:5000/codeb-matrix-none:v1";

/// DESIGN §5, one row per tool. Tools another change adds (backup_restore,
/// project_delete, ...) have rows already; rows of tools the server does
/// not list are skipped, and a listed tool without a row fails the test.
#[rustfmt::skip]
const TABLE: &[Row] = &[
    // Viewer: read-only.
    Row { tool: "project_list", role: "viewer", names: Names::Nothing, own_succeeds: true,
          args: |_| json!({}) },
    Row { tool: "slot_status", role: "viewer", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project}) },
    Row { tool: "deployment_list", role: "viewer", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project}) },
    Row { tool: "deployment_get", role: "viewer", names: Names::Deployment, own_succeeds: true,
          args: |s| json!({"id": s.deployment}) },
    Row { tool: "logs", role: "viewer", names: Names::Project, own_succeeds: false,
          args: |s| json!({"project": s.project, "environment": "staging", "lines": 1}) },
    Row { tool: "env_get", role: "viewer", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project, "environment": "staging"}) },
    Row { tool: "domain_list", role: "viewer", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project}) },
    Row { tool: "health_check", role: "viewer", names: Names::Nothing, own_succeeds: true,
          args: |_| json!({"server": "app"}) },
    Row { tool: "drift_report", role: "viewer", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project}) },
    // Not in DESIGN's table: a read-only listing of a project's records,
    // like deployment_list, so a viewer's.
    Row { tool: "backup_list", role: "viewer", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project}) },
    // Admin, read-only.
    // The tool filter matches no row, so that the answers about own, other
    // and missing projects do not depend on which calls ran before.
    Row { tool: "audit_query", role: "admin", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project, "tool": "matrix_none", "limit": 1}) },
    Row { tool: "key_list", role: "admin", names: Names::Nothing, own_succeeds: true,
          args: |_| json!({}) },
    // Member: medium.
    Row { tool: "deploy", role: "member", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project, "environment": "staging", "image": NO_IMAGE, "dry_run": true}) },
    Row { tool: "promote", role: "member", names: Names::Project, own_succeeds: false,
          args: |s| json!({"project": s.project, "environment": "staging", "dry_run": true}) },
    Row { tool: "rollback", role: "member", names: Names::Project, own_succeeds: false,
          args: |s| json!({"project": s.project, "environment": "staging", "reason": "matrix test", "dry_run": true}) },
    Row { tool: "env_set", role: "member", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project, "environment": "staging", "set": {"MATRIX_TEST": "1"}, "dry_run": true}) },
    Row { tool: "env_sync", role: "member", names: Names::Project, own_succeeds: false,
          args: |s| json!({"project": s.project, "environment": "staging", "dry_run": true}) },
    Row { tool: "domain_setup", role: "member", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project, "environment": "staging", "domain": NO_DOMAIN, "dry_run": true}) },
    Row { tool: "backup_create", role: "member", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project, "environment": "staging", "dry_run": true}) },
    // Admin: medium.
    Row { tool: "project_create", role: "admin", names: Names::NewProject, own_succeeds: true,
          args: |s| json!({"project": s.project, "dry_run": true}) },
    Row { tool: "slot_cleanup", role: "admin", names: Names::Project, own_succeeds: true,
          args: |s| json!({"project": s.project, "dry_run": true}) },
    // Creates a real key (of the caller's team, expiring in a day; the
    // cleanup deletes the test teams' keys).
    Row { tool: "key_create", role: "admin", names: Names::Nothing, own_succeeds: true,
          args: |_| json!({"role": "viewer", "label": "matrix", "expires_in_days": 1}) },
    // Revokes a throwaway key of the caller's team (the other team's is
    // checked to be still valid afterwards).
    Row { tool: "key_revoke", role: "admin", names: Names::Key, own_succeeds: true,
          args: |s| json!({"id": s.key}) },
    // Critical: admin ("admin/owner" in DESIGN: admins may ask, a second
    // admin or the human confirms), always as dry runs here.
    Row { tool: "domain_delete", role: "admin", names: Names::Project, own_succeeds: false,
          args: |s| json!({"project": s.project, "domain": NO_DOMAIN, "dry_run": true}) },
    Row { tool: "backup_restore", role: "admin", names: Names::Project, own_succeeds: false,
          args: |s| json!({"project": s.project, "backup_id": "00000000-0000-4000-8000-0000000000b1", "dry_run": true}) },
    Row { tool: "project_delete", role: "admin", names: Names::Project, own_succeeds: false,
          args: |s| json!({"project": s.project, "dry_run": true}) },
    // Approvals: admin.
    Row { tool: "approval_list", role: "admin", names: Names::Nothing, own_succeeds: true,
          args: |_| json!({}) },
    Row { tool: "approve", role: "admin", names: Names::Nothing, own_succeeds: false,
          args: |_| json!({"approval_id": "00000000-0000-4000-8000-00000000a11e", "dry_run": true}) },
];

/// One caller: a key of a team and role.
struct Caller {
    label: String,
    team: usize,
    role: &'static str,
    client: RunningService<RoleClient, ()>,
}

/// What one team has for the calls to name.
struct TeamThings {
    name: String,
    project: String,
    deployment: String,
    /// A throwaway key its own admins revoke.
    revocable_key: String,
    /// A key the other team tries to revoke: still valid afterwards.
    victim_key: String,
}

/// How a call ended: its structured result, an isError text, or a
/// protocol error.
#[derive(Debug, Clone)]
enum Outcome {
    Ok(Value),
    ToolError(String),
    Protocol(String),
}

impl Outcome {
    fn text(&self) -> &str {
        match self {
            Outcome::Ok(_) => "",
            Outcome::ToolError(t) | Outcome::Protocol(t) => t,
        }
    }

    /// The answer with `token` (the name or id the call named) replaced,
    /// to compare answers about different names.
    fn generic(&self, token: &str) -> String {
        match self {
            Outcome::Ok(v) => format!("ok {}", v.to_string().replace(token, "{X}")),
            Outcome::ToolError(t) => format!("error {}", t.replace(token, "{X}")),
            Outcome::Protocol(t) => format!("protocol error {t}"),
        }
    }
}

/// At most 300 characters of `text`, for readable failure lists.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn is_access_denial(text: &str) -> bool {
    (text.contains(" needs the ") && text.contains(" role")) || text.contains("not authenticated")
}

async fn call_outcome(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> Outcome {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    match client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map))
        .await
    {
        Ok(r) if r.is_error == Some(true) => Outcome::ToolError(
            r.content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Ok(r) => Outcome::Ok(r.structured_content.unwrap_or_default()),
        Err(e) => Outcome::Protocol(e.to_string()),
    }
}

fn read_only(t: &Tool) -> bool {
    t.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true)
}

/// The row's arguments fit the tool's input schema: no unknown field, every
/// required one (so a call is refused for access, never for its shape).
fn check_args_fit(row: &Row, tool: &Tool, sample: &Subject, problems: &mut Vec<String>) {
    let args = (row.args)(sample);
    let schema = Value::Object((*tool.input_schema).clone());
    let props = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for k in args.as_object().unwrap().keys() {
        if !props.contains_key(k) {
            problems.push(format!("row {}: the tool takes no field {k:?}", row.tool));
        }
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        let r = r.as_str().unwrap_or_default();
        if args.get(r).is_none() {
            problems.push(format!("row {}: required field {r:?} missing", row.tool));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tool_with_every_role_on_own_and_other_teams_projects() {
    let _guard = FAULT_LOCK.read().await;
    let started = Instant::now();
    let server = HttpServer::start().await;
    let pool = db().await;
    let team_names = [unique_team("ma"), unique_team("mb")];
    // Keys: every role of team A, an owner of team B (minting creates the team).
    let mut callers = Vec::new();
    for (team, role) in [
        (0, "viewer"),
        (0, "member"),
        (0, "admin"),
        (0, "owner"),
        (1, "owner"),
    ] {
        let key = mint_key(&team_names[team], role);
        callers.push(Caller {
            label: format!("{role} of team {}", ["A", "B"][team]),
            team,
            role,
            client: server.client_with_key(&key).await,
        });
    }
    let teams_to_delete: Vec<&str> = team_names.iter().map(String::as_str).collect();
    let body = async {
        // Each team's project, a finished deployment of it, two throwaway keys.
        let mut teams = Vec::new();
        for name in &team_names {
            let project = unique_project("matrix");
            let pid = insert_project_of(&pool, &project, name).await;
            let deployment = uuid::Uuid::new_v4();
            sqlx::query(
                "INSERT INTO deployments (id, project_id, environment, operation, status, principal, finished_at)
                 VALUES ($1, $2, 'staging', 'deploy', 'succeeded', 'matrix', now())",
            )
            .bind(deployment)
            .bind(pid)
            .execute(&pool)
            .await
            .unwrap();
            let mut throwaway = Vec::new();
            for label in ["matrix revocable", "matrix victim"] {
                let spec = codeb::mcp::keys::KeySpec {
                    team: name,
                    role: codeb::model::Role::Viewer,
                    principal: "matrix-throwaway",
                    label,
                    expires_in_days: Some(1),
                    created_by: None,
                    created_by_principal: "local",
                };
                let (_, row) = codeb::mcp::keys::create_key(&pool, &spec)
                    .await
                    .expect("create a throwaway key");
                throwaway.push(row.id.to_string());
            }
            teams.push(TeamThings {
                name: name.clone(),
                project,
                deployment: deployment.to_string(),
                revocable_key: throwaway[0].clone(),
                victim_key: throwaway[1].clone(),
            });
        }
        let missing = TeamThings {
            name: String::new(),
            project: unique_project("nosuch"),
            deployment: uuid::Uuid::new_v4().to_string(),
            revocable_key: uuid::Uuid::new_v4().to_string(),
            victim_key: String::new(),
        };
        let mut problems: Vec<String> = Vec::new();

        // tools/list: the owner's names every tool; each is in the table.
        let owner_tools = callers[3].client.list_all_tools().await.unwrap();
        let by_name: BTreeMap<&str, &Tool> =
            owner_tools.iter().map(|t| (t.name.as_ref(), t)).collect();
        let rows: BTreeMap<&str, &Row> = TABLE.iter().map(|r| (r.tool, r)).collect();
        assert_eq!(rows.len(), TABLE.len(), "one row per tool");
        for name in by_name.keys() {
            if !rows.contains_key(name) {
                problems.push(format!(
                    "tool {name} has no row in the matrix table: add one (role from DESIGN §5)"
                ));
            }
        }
        let present: Vec<&Row> = TABLE
            .iter()
            .filter(|r| by_name.contains_key(r.tool))
            .collect();
        let skipped: Vec<&str> = TABLE
            .iter()
            .filter(|r| !by_name.contains_key(r.tool))
            .map(|r| r.tool)
            .collect();
        let sample = Subject {
            project: &teams[0].project,
            deployment: &teams[0].deployment,
            key: &teams[0].revocable_key,
        };
        for row in &present {
            check_args_fit(row, by_name[row.tool], &sample, &mut problems);
        }
        // Each role lists exactly what it may call; a viewer nothing mutating.
        for c in &callers {
            let listed: BTreeSet<String> = c
                .client
                .list_all_tools()
                .await
                .unwrap()
                .iter()
                .map(|t| {
                    if c.role == "viewer" && !read_only(t) {
                        problems.push(format!("a viewer's tools/list has mutating {}", t.name));
                    }
                    t.name.to_string()
                })
                .collect();
            let allowed: BTreeSet<String> = present
                .iter()
                .filter(|r| rank(c.role) >= rank(r.role))
                .map(|r| r.tool.to_string())
                .collect();
            if listed != allowed {
                problems.push(format!(
                    "{}: tools/list shows {:?} too many and lacks {:?}",
                    c.label,
                    listed.difference(&allowed).collect::<Vec<_>>(),
                    allowed.difference(&listed).collect::<Vec<_>>()
                ));
            }
        }

        // tools/call: every tool, every key, own and other team's (and,
        // where allowed, a missing one to compare the other team's answer with).
        struct Call<'a> {
            caller: usize,
            row: &'a Row,
            target: Target,
            /// The name or id the call names (replaced when comparing texts).
            token: String,
            args: Value,
        }
        let mut calls: Vec<Call> = Vec::new();
        for (i, c) in callers.iter().enumerate() {
            let own = &teams[c.team];
            let other = &teams[1 - c.team];
            for row in &present {
                let allowed = rank(c.role) >= rank(row.role);
                let targets: &[Target] = match row.names {
                    Names::Nothing => &[Target::Own],
                    Names::NewProject => &[Target::Own, Target::Other],
                    _ if allowed => &[Target::Own, Target::Other, Target::Missing],
                    _ => &[Target::Own, Target::Other],
                };
                for &target in targets {
                    let things = match target {
                        Target::Own => own,
                        Target::Other => other,
                        Target::Missing => &missing,
                    };
                    let fresh = unique_project("matrixnew");
                    let subject = Subject {
                        project: if row.names == Names::NewProject && target == Target::Own {
                            &fresh
                        } else {
                            &things.project
                        },
                        deployment: &things.deployment,
                        key: if target == Target::Other {
                            &things.victim_key
                        } else {
                            &things.revocable_key
                        },
                    };
                    let token = match row.names {
                        Names::Deployment => subject.deployment.to_string(),
                        Names::Key => subject.key.to_string(),
                        _ => subject.project.to_string(),
                    };
                    calls.push(Call {
                        caller: i,
                        row,
                        target,
                        token,
                        args: (row.args)(&subject),
                    });
                }
            }
        }
        let calls_started = Instant::now();
        let outcomes: Vec<Outcome> = futures::stream::iter(
            calls
                .iter()
                .map(|c| call_outcome(&callers[c.caller].client, c.row.tool, c.args.clone())),
        )
        .buffered(8)
        .collect()
        .await;
        let calls_took = calls_started.elapsed();

        // Judge each call against the table.
        let mut results: BTreeMap<(usize, &str, Target), (&Call, &Outcome)> = BTreeMap::new();
        for (c, o) in calls.iter().zip(&outcomes) {
            results.insert((c.caller, c.row.tool, c.target), (c, o));
        }
        let mut allowed_calls = 0;
        let mut denied_calls = 0;
        for ((caller, tool, target), (call, outcome)) in &results {
            let c = &callers[*caller];
            let row = call.row;
            let who = format!("{tool} by the {} on {target:?}", c.label);
            if let Outcome::Protocol(e) = outcome {
                problems.push(format!(
                    "{who}: protocol error {e} (arguments {})",
                    call.args
                ));
                continue;
            }
            let text = outcome.text();
            if rank(c.role) < rank(row.role) {
                denied_calls += 1;
                let want = format!("{tool} needs the {} role", row.role);
                if !text.contains(&want) {
                    problems.push(format!(
                        "{who}: expected \"{want}\", got {}",
                        bounded(&format!("{outcome:?}"))
                    ));
                }
                continue;
            }
            if *target == Target::Missing {
                continue;
            }
            if is_access_denial(text) {
                problems.push(format!("{who}: refused for its role: {text}"));
                continue;
            }
            let missing = results.get(&(*caller, *tool, Target::Missing));
            let missing_answer = missing.map(|(m, mo)| mo.generic(&m.token));
            let answer = outcome.generic(&call.token);
            match (target, row.names) {
                (Target::Own, _) | (_, Names::Nothing) => {
                    allowed_calls += 1;
                    if row.own_succeeds && !matches!(outcome, Outcome::Ok(_)) {
                        problems.push(format!(
                            "{who}: expected success, got {}",
                            bounded(&format!("{outcome:?}"))
                        ));
                    }
                    let missing_refused =
                        missing.is_some_and(|(_, mo)| matches!(mo, Outcome::ToolError(_)));
                    if missing_refused && missing_answer.as_deref() == Some(answer.as_str()) {
                        problems.push(format!(
                            "{who}: the caller's own team's answered like a missing one: {text}"
                        ));
                    }
                }
                (Target::Other, Names::NewProject) => {
                    denied_calls += 1;
                    let other = &teams[1 - c.team];
                    if !matches!(outcome, Outcome::ToolError(_)) || text.contains(&other.name) {
                        problems.push(format!(
                            "{who}: another team's project name must be refused without naming the team, got {}",
                            bounded(&format!("{outcome:?}"))
                        ));
                    }
                }
                (Target::Other, _) => {
                    denied_calls += 1;
                    if missing_answer.as_deref() != Some(answer.as_str()) {
                        problems.push(format!(
                            "{who}: another team's must answer exactly like a missing one: got {:?}, missing answered {:?}",
                            bounded(&answer),
                            missing_answer.as_deref().map(bounded)
                        ));
                    }
                }
                (Target::Missing, _) => unreachable!(),
            }
        }

        // The other team's keys were not revoked.
        for t in &teams {
            let revoked: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT revoked_at FROM api_keys WHERE id = $1::uuid")
                    .bind(&t.victim_key)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            if revoked.is_some() {
                problems.push(format!(
                    "team {}'s key was revoked by the other team",
                    t.name
                ));
            }
        }
        eprintln!(
            "matrix: {} tools ({} rows skipped, not served: {skipped:?}), {} keys, {} calls \
             ({allowed_calls} allowed, {denied_calls} refused, the rest missing-handle references) \
             in {calls_took:?}; whole test {:?}",
            present.len(),
            skipped.len(),
            callers.len(),
            calls.len(),
            started.elapsed()
        );
        assert!(
            problems.is_empty(),
            "{} access-control problems:\n{}",
            problems.len(),
            problems.join("\n")
        );
        assert!(present.len() >= 23 && allowed_calls > 0 && denied_calls > 0);
    };
    with_cleanup(body, delete_teams(&pool, &teams_to_delete)).await;
}
