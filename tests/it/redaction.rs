//! Redaction is bounded and scoped (ops::redact): env values are
//! registered only once written by an authorized caller — never by a dry
//! run or for a missing project — so nobody can grow the matcher; one
//! team's values never mask text in another team's audit rows; and the
//! values of stored env versions are registered at start, so an app's
//! output shown by `logs` stays scrubbed after a restart.

use std::time::Duration;

use codeb::plan::cmd::RemoteCmd;
use serde_json::{json, Value};

use super::app_host::{app_remote, run_ok, with_cleanup};
use super::common::{
    call, db, error_text, insert_project_of, mint_key, structured, unique_project, unique_team,
    HttpServer, FAULT_LOCK,
};
use super::lifecycle::image;

/// Bytes of env values per dry run: 16 values of 62,500 bytes (1 MB),
/// each under the 64 KiB value limit, the whole JSON body under the 1 MiB
/// HTTP body limit.
const VALUES_PER_CALL: usize = 16;
const VALUE_BYTES: usize = 62_500;
const DRY_RUNS: usize = 100;

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A gauge from codeb's `/metrics`.
async fn metric(server: &HttpServer, name: &str) -> u64 {
    let url = server.url.replace("/mcp", "/metrics");
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{body}"))
}

/// Every audit entry of `tool` the client's team sees (newest first).
async fn audit_rows<H: rmcp::service::Service<rmcp::RoleClient>>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, H>,
    tool: &str,
) -> Vec<Value> {
    let r = call(client, "audit_query", json!({"tool": tool, "limit": 100})).await;
    structured(&r)["entries"].as_array().unwrap().clone()
}

/// The text of an audit row as audit_query shows it.
fn row_text(row: &Value) -> String {
    serde_json::to_string(row).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn env_set_dry_runs_and_missing_projects_register_nothing() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = server.client().await;
    let pool = db().await;
    let own = unique_project("rdx");
    insert_project_of(&pool, &own, "default").await;
    let missing = unique_project("rdx-missing");
    let canary = format!("canary-dry-{}", uuid::Uuid::new_v4().simple());
    let own_canary = format!("canary-own-dry-{}", uuid::Uuid::new_v4().simple());

    let body = async {
        // A dry run against a missing project and one against an existing
        // project: refused / planned, and neither value is a secret now.
        let r = call(
            &client,
            "env_set",
            json!({"project": missing, "environment": "staging", "set": {"TOKEN": canary}, "dry_run": true}),
        )
        .await;
        assert!(error_text(&r).contains("not found"), "{r:?}");
        let r = call(
            &client,
            "env_set",
            json!({"project": own, "environment": "staging", "set": {"TOKEN": own_canary}, "dry_run": true}),
        )
        .await;
        assert_eq!(structured(&r)["version"], json!(0), "{r:?}");
        // Echo both in the arguments of calls that fail: the audit rows
        // keep them as they were sent, scrubbed of registered secrets only.
        let r = call(&client, "slot_status", json!({"project": canary})).await;
        error_text(&r);
        let r = call(
            &client,
            "rollback",
            json!({"project": own, "environment": "staging", "reason": format!("because {own_canary}")}),
        )
        .await;
        error_text(&r);
        let status_rows = audit_rows(&client, "slot_status").await;
        let row = status_rows
            .iter()
            .find(|e| row_text(e).contains(&canary))
            .unwrap_or_else(|| {
                panic!("a dry run's value was registered: slot_status's audit row masks it: {status_rows:#?}")
            });
        assert_eq!(row["project"], json!(canary), "{row}");
        let rollback_rows = audit_rows(&client, "rollback").await;
        assert!(
            rollback_rows
                .iter()
                .any(|e| e["project"] == json!(own) && row_text(e).contains(&own_canary)),
            "a dry run's value was registered: rollback's audit row masks it: {rollback_rows:#?}"
        );

        // 100 dry runs of 1 MB of distinct values each against a missing
        // project: nothing is registered, and memory stays where it was.
        let pid = server.pid();
        let values_before = metric(&server, "codeb_redaction_values").await;
        let rss_before = rss_kib(pid);
        for i in 0..DRY_RUNS {
            let set: serde_json::Map<String, Value> = (0..VALUES_PER_CALL)
                .map(|k| {
                    let head = format!("dry-{i}-{k}-");
                    let fill = char::from(b'a' + ((i * VALUES_PER_CALL + k) % 26) as u8);
                    let value = format!(
                        "{head}{}",
                        fill.to_string().repeat(VALUE_BYTES - head.len())
                    );
                    (format!("BULK_{k}"), Value::String(value))
                })
                .collect();
            let r = call(
                &client,
                "env_set",
                json!({"project": missing, "environment": "production", "set": set, "dry_run": true}),
            )
            .await;
            assert!(error_text(&r).contains("not found"), "call {i}");
        }
        let rss_after = rss_kib(pid);
        let values_after = metric(&server, "codeb_redaction_values").await;
        eprintln!(
            "{DRY_RUNS} env_set dry runs of {} bytes each: codeb RSS {rss_before} KiB before, {rss_after} KiB after ({:+} KiB); registered values {values_before} -> {values_after}",
            VALUES_PER_CALL * VALUE_BYTES,
            rss_after as i64 - rss_before as i64
        );
        assert_eq!(
            values_after, values_before,
            "dry runs against a missing project registered values for redaction"
        );
    };
    with_cleanup(body, async {
        super::common::delete_project(&pool, &own).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_teams_env_values_never_mask_a_teams_audit_rows() {
    let _guard = FAULT_LOCK.read().await;
    let pool = db().await;
    let (team_a, team_b) = (unique_team("rda"), unique_team("rdb"));
    let key_a = mint_key(&team_a, "admin");
    let key_b = mint_key(&team_b, "admin");
    let (proj_a, proj_b) = (unique_project("rda"), unique_project("rdb"));
    insert_project_of(&pool, &proj_a, &team_a).await;
    insert_project_of(&pool, &proj_b, &team_b).await;
    let server = HttpServer::start().await;
    let a = server.client_with_key(&key_a).await;
    let b = server.client_with_key(&key_b).await;

    let body = async {
        // Team A works on its project; its principal is in its rows.
        let r = call(&a, "slot_status", json!({"project": proj_a})).await;
        structured(&r);
        let rows = audit_rows(&a, "slot_status").await;
        let principal_a = rows[0]["principal"].as_str().unwrap().to_string();
        assert!(principal_a.len() >= 6, "{principal_a}");

        // Team B writes A's project name and principal as env values of
        // its own project (a real write, not a dry run).
        let r = call(
            &b,
            "env_set",
            json!({"project": proj_b, "environment": "staging",
                   "set": {"OTHER_PROJECT": proj_a, "OTHER_PRINCIPAL": principal_a}}),
        )
        .await;
        assert_eq!(structured(&r)["version"], json!(1), "{r:?}");

        // Team A's calls naming both: its rows show them as they are.
        let r = call(&a, "slot_status", json!({"project": proj_a})).await;
        structured(&r);
        let reason = format!("asked by {principal_a} for {proj_a}");
        let r = call(
            &a,
            "rollback",
            json!({"project": proj_a, "environment": "staging", "reason": reason}),
        )
        .await;
        let e = error_text(&r);
        assert!(e.contains(&proj_a), "{e}");
        let rows = audit_rows(&a, "rollback").await;
        let row = rows
            .iter()
            .find(|r| r["arguments"]["reason"] == json!(reason))
            .unwrap_or_else(|| panic!("team B's env values masked team A's audit row: {rows:#?}"));
        assert_eq!(row["project"], json!(proj_a), "{row}");
        assert_eq!(row["principal"], json!(principal_a), "{row}");
        assert!(
            row["error"].as_str().unwrap().contains(&proj_a),
            "team B's env values masked team A's error text: {row}"
        );
        assert!(!row_text(row).contains("[redacted]"), "{row}");
        let rows = audit_rows(&a, "slot_status").await;
        assert!(
            rows.iter()
                .filter(|r| r["project"] == json!(proj_a))
                .count()
                >= 2,
            "{rows:#?}"
        );

        // In team B's own rows about its project, its values are secrets.
        let r = call(
            &b,
            "rollback",
            json!({"project": proj_b, "environment": "staging", "reason": format!("see {proj_a}")}),
        )
        .await;
        error_text(&r);
        let rows = audit_rows(&b, "rollback").await;
        let row = rows
            .iter()
            .find(|r| r["project"] == json!(proj_b))
            .expect("team B's rollback row");
        assert_eq!(row["arguments"]["reason"], json!("see [redacted]"), "{row}");
    };
    with_cleanup(body, async {
        super::common::delete_teams(&pool, &[&team_a, &team_b]).await;
    })
    .await;
}

/// Makes the container's main process print `text` (its stdout is what
/// `podman logs` shows): `podman exec C sh -c 'echo ... >/proc/1/fd/1'`,
/// the value taken from the container's own environment.
fn print_env_in_container(container: &str, var: &str) -> RemoteCmd {
    RemoteCmd::new("podman")
        .args(["exec", container, "sh", "-c"])
        .arg(format!("echo \"app says {var}=${var}\" >/proc/1/fd/1"))
}

/// `logs` of the project's staging slot, as the caller sees it.
async fn logs_text<H: rmcp::service::Service<rmcp::RoleClient>>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, H>,
    project: &str,
) -> String {
    let r = call(
        client,
        "logs",
        json!({"project": project, "environment": "staging", "lines": 50}),
    )
    .await;
    structured(&r)["content"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_stay_redacted_after_a_restart() {
    let _guard = FAULT_LOCK.read().await;
    let pool = db().await;
    let p = unique_project("rdl");
    insert_project_of(&pool, &p, "default").await;
    let container = format!("{p}-staging-blue");
    let secret = format!("canary-logs-{}", uuid::Uuid::new_v4().simple());
    let (fleet, app) = app_remote();

    let body = async {
        let mut server = HttpServer::start().await;
        let client = server.client().await;
        let r = call(
            &client,
            "env_set",
            json!({"project": p, "environment": "staging", "set": {"APP_SECRET": secret}}),
        )
        .await;
        structured(&r);
        let r = call(
            &client,
            "deploy",
            json!({"project": p, "environment": "staging", "image": image("v1")}),
        )
        .await;
        structured(&r);
        // The app prints its secret.
        run_ok(
            app.as_ref(),
            &print_env_in_container(&container, "APP_SECRET"),
        )
        .await;
        // Bounded wait until podman's log shows the line.
        let mut text = String::new();
        for _ in 0..50 {
            text = logs_text(&client, &p).await;
            if text.contains("app says APP_SECRET=") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(text.contains("app says APP_SECRET=[redacted]"), "{text}");
        assert!(!text.contains(&secret), "{text}");
        drop(client);

        // A new codeb process: it knows the secret from the stored version.
        server.kill().await;
        let server = HttpServer::start().await;
        let client = server.client().await;
        let text = logs_text(&client, &p).await;
        assert!(text.contains("app says APP_SECRET="), "{text}");
        assert!(
            !text.contains(&secret),
            "after a restart, logs shows the app's secret: {text}"
        );
        assert!(text.contains("app says APP_SECRET=[redacted]"), "{text}");
    };
    with_cleanup(body, async {
        if let Ok(cmd) = codeb::plan::podman::rm_force(&container) {
            let _ = app.run(&cmd).await;
        }
        super::common::delete_project(&pool, &p).await;
    })
    .await;
    fleet.close().await;
}
