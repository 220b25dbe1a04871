//! Environment variables end to end on the testbed, through MCP over HTTP:
//! env_set → deploy → the container sees the exact values; the env file on
//! the app server (0600) and the backup copy; rollback names the changed
//! keys; a canary value never leaves codeb; the master key is required.

use std::collections::BTreeMap;
use std::sync::Arc;

use codeb::exec::{Fleet, Remote};
use codeb::model::ServerRole;
use codeb::plan::cmd::RemoteCmd;
use rmcp::ServiceExt;
use serde_json::{json, Value};

use super::app_host::run_ok;
use super::common::{db, error_text, structured, testbed, unique_project, HttpServer, FAULT_LOCK};
use super::lifecycle::{call_with_progress, image, Recorder};

fn remote(fleet: &Fleet, role: ServerRole) -> Arc<dyn Remote> {
    fleet.for_role(role).expect("role in testbed").1.clone()
}

/// The value of `key` inside `container`, exactly (printf %s adds nothing).
async fn value_in_container(app: &dyn Remote, container: &str, key: &str) -> Vec<u8> {
    let cmd = RemoteCmd::new("podman").args([
        "exec",
        container,
        "/bin/busybox",
        "sh",
        "-c",
        &format!("printf %s \"${key}\""),
    ]);
    run_ok(app, &cmd).await.stdout
}

async fn file_mode_and_text(server: &dyn Remote, path: &str) -> (String, String) {
    let mode = run_ok(
        server,
        &RemoteCmd::new("stat").args(["-c", "%a", "--", path]),
    )
    .await
    .stdout_text();
    let text = run_ok(server, &RemoteCmd::new("cat").args(["--", path]))
        .await
        .stdout_text();
    (mode.trim().to_string(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn env_values_reach_the_container_exactly_and_never_leak() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start_with(
        &testbed().config,
        &[
            ("CODEB_LOG", "debug"),
            ("CODEB_LIFECYCLE__HEALTH_DEADLINE_SECS", "10"),
        ],
    )
    .await;
    let transport = server.transport();
    let client = Recorder::default()
        .serve(transport)
        .await
        .expect("initialize");
    let mut seen: Vec<String> = Vec::new();
    let call = |tool: &'static str, args: Value| {
        let client = &client;
        async move { call_with_progress(client, tool, args).await }
    };
    let p = unique_project("env");
    let env = "staging";
    let canary = format!("canary-env-{}", uuid::Uuid::new_v4().simple());

    let (r, _) = call("project_create", json!({"project": p})).await;
    structured(&r);
    seen.push(serde_json::to_string(&r).unwrap());
    let (r, _) = call("env_get", json!({"project": p, "environment": env})).await;
    let before = structured(&r)["version"].as_i64().unwrap();

    // Invalid names are refused and store nothing.
    for bad in ["1BAD", "A-B", "A B", "", "$(id)", "A=B"] {
        let (r, _) = call(
            "env_set",
            json!({"project": p, "environment": env, "set": {bad: "x"}}),
        )
        .await;
        let text = error_text(&r);
        assert!(text.contains("not a valid variable name"), "{bad}: {text}");
    }
    let (r, _) = call(
        "env_set",
        json!({"project": p, "environment": env, "set": {"NUL": "a\u{0}b"}}),
    )
    .await;
    assert!(error_text(&r).contains("NUL"));

    // The corpus: every kind of value round-trips exactly.
    let corpus: BTreeMap<&str, String> = [
        ("CANARY", canary.clone()),
        ("EQUALS", "a=b==c=".to_string()),
        ("QUOTES", "it's \"quoted\" 'twice'".to_string()),
        ("SPACES", "  leading and trailing  ".to_string()),
        ("DOLLAR", "$HOME ${PATH} $(id) `id` \\n".to_string()),
        ("UNICODE", "ünïcødé 🦀 日本語".to_string()),
        ("MULTI", format!("line1\nline2 \"q\" $X\n\n{canary}\n")),
        ("CRLF", "a\r\nb".to_string()),
        ("EMPTY", String::new()),
        ("HASH", "#not a comment".to_string()),
        ("EQ_REMOVED_LATER", "soon gone".to_string()),
    ]
    .into_iter()
    .collect();
    let (r, _) = call(
        "env_set",
        json!({"project": p, "environment": env, "set": corpus}),
    )
    .await;
    let v = structured(&r).clone();
    seen.push(serde_json::to_string(&r).unwrap());
    let v1 = v["version"].as_i64().unwrap();
    assert_eq!(v1, before + 1, "{v}");
    assert_eq!(
        v["changes"].as_array().unwrap().len(),
        corpus.len(),
        "every key added: {v}"
    );
    let (r, _) = call("env_get", json!({"project": p, "environment": env})).await;
    let g = structured(&r).clone();
    seen.push(serde_json::to_string(&r).unwrap());
    let canary_key = g["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "CANARY")
        .expect("CANARY listed")
        .clone();
    assert_eq!(canary_key["fingerprint"].as_str().unwrap().len(), 12);
    assert_eq!(canary_key["protected"], json!(false));
    assert!(g["synced_at"].is_null(), "not synced yet: {g}");

    // Deploy: syncs first, runs with that version.
    let (r, progress) = call(
        "deploy",
        json!({"project": p, "environment": env, "image": image("tools")}),
    )
    .await;
    let d1 = structured(&r).clone();
    seen.push(serde_json::to_string(&r).unwrap());
    seen.extend(progress.iter().map(|x| format!("{x:?}")));
    assert_eq!(d1["env_version"], json!(v1), "{d1}");
    let container = format!("{p}-{env}-{}", d1["slot"].as_str().unwrap());

    let config = codeb::config::Config::load(&testbed().config).unwrap();
    let fleet = Fleet::from_config(&config);
    let app = remote(&fleet, ServerRole::App);
    let backup = remote(&fleet, ServerRole::Backup);
    for (k, want) in &corpus {
        let got = value_in_container(app.as_ref(), &container, k).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            *want,
            "{k} inside the container"
        );
    }
    // The env file: 0600, the exact version, the multi-line value as a secret.
    let app_path = format!("/opt/codeb/env/{p}/.env.{env}");
    let (mode, text) = file_mode_and_text(app.as_ref(), &app_path).await;
    assert_eq!(mode, "600");
    assert!(
        text.starts_with(&format!("# codeb env {p}/{env} v{v1}.")),
        "{text:.80}"
    );
    let parsed = codeb::plan::envvars::parse_env_file(&text).expect("file parses");
    for (k, want) in &corpus {
        assert_eq!(parsed.get(*k), Some(want), "{k} in the env file");
    }
    let listed: Vec<String> = g["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(parsed.keys().cloned().collect::<Vec<_>>(), listed);
    let secrets = run_ok(
        app.as_ref(),
        &RemoteCmd::new("podman").args(["secret", "ls", "--format", "{{.Name}}"]),
    )
    .await
    .stdout_text();
    assert!(
        secrets
            .lines()
            .any(|l| l == format!("{container}-env-MULTI")),
        "{secrets}"
    );
    // The backup copy.
    let (mode, backup_text) = file_mode_and_text(
        backup.as_ref(),
        &format!("/opt/codeb/env-backup/{p}/{env}/v{v1}.env"),
    )
    .await;
    assert_eq!(mode, "600");
    assert_eq!(backup_text, text);
    let (r, _) = call("env_get", json!({"project": p, "environment": env})).await;
    assert!(structured(&r)["synced_at"].is_string());

    // promote v1; change env; deploy v2; promote; rollback names the keys.
    let (r, progress) = call("promote", json!({"project": p, "environment": env})).await;
    seen.push(serde_json::to_string(&r).unwrap());
    seen.extend(progress.iter().map(|x| format!("{x:?}")));
    structured(&r);
    let (r, _) = call(
        "env_set",
        json!({"project": p, "environment": env, "set": {"FEATURE_X": "on", "QUOTES": "changed"}, "unset": ["EQ_REMOVED_LATER"]}),
    )
    .await;
    let v = structured(&r).clone();
    seen.push(serde_json::to_string(&r).unwrap());
    let v2 = v["version"].as_i64().unwrap();
    assert_eq!(v2, v1 + 1);
    let kinds: Vec<(String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().into(),
                c["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("EQ_REMOVED_LATER".to_string(), "removed".to_string()),
            ("FEATURE_X".into(), "added".into()),
            ("QUOTES".into(), "changed".into())
        ]
    );
    // env_sync on its own writes the new version.
    let (r, progress) = call("env_sync", json!({"project": p, "environment": env})).await;
    let s = structured(&r).clone();
    seen.push(serde_json::to_string(&r).unwrap());
    seen.extend(progress.iter().map(|x| format!("{x:?}")));
    assert_eq!(s["version"], json!(v2), "{s}");
    let (_, text2) = file_mode_and_text(app.as_ref(), &app_path).await;
    assert!(text2.contains("FEATURE_X=on\n"));
    assert!(!text2.contains("EQ_REMOVED_LATER"));

    let (r, progress) = call(
        "deploy",
        json!({"project": p, "environment": env, "image": image("v2")}),
    )
    .await;
    let d2 = structured(&r).clone();
    seen.push(serde_json::to_string(&r).unwrap());
    seen.extend(progress.iter().map(|x| format!("{x:?}")));
    assert_eq!(d2["env_version"], json!(v2));
    let (r, _) = call("promote", json!({"project": p, "environment": env})).await;
    let pr = structured(&r).clone();
    seen.push(serde_json::to_string(&r).unwrap());
    assert_eq!(pr["env_version"], json!(v2), "{pr}");
    let (r, progress) = call(
        "rollback",
        json!({"project": p, "environment": env, "reason": "env test"}),
    )
    .await;
    let rb = structured(&r).clone();
    seen.push(serde_json::to_string(&r).unwrap());
    seen.extend(progress.iter().map(|x| format!("{x:?}")));
    assert_eq!(rb["env_version"], json!(v1), "{rb}");
    let changed: Vec<(String, String)> = rb["env_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().into(),
                c["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            ("EQ_REMOVED_LATER".to_string(), "added".to_string()),
            ("FEATURE_X".into(), "removed".into()),
            ("QUOTES".into(), "changed".into())
        ],
        "{rb}"
    );
    let summary = rb["summary"].as_str().unwrap();
    for k in ["EQ_REMOVED_LATER", "FEATURE_X", "QUOTES"] {
        assert!(summary.contains(k), "{summary}");
    }

    // Journals of every operation.
    for id in [
        &d1["deployment_id"],
        &d2["deployment_id"],
        &rb["deployment_id"],
        &s["deployment_id"],
    ] {
        let (r, _) = call("deployment_get", json!({"id": id})).await;
        let j = structured(&r).clone();
        assert!(!j["steps"].as_array().unwrap().is_empty(), "{j}");
        seen.push(serde_json::to_string(&r).unwrap());
    }
    let (r, _) = call("deployment_list", json!({"project": p})).await;
    seen.push(serde_json::to_string(&r).unwrap());

    // The canary: in no result, progress message, journal or log.
    for s in &seen {
        assert!(
            !s.contains(&canary),
            "canary leaked into MCP output: {s:.300}"
        );
    }
    let log = server.log.lock().unwrap().clone();
    assert!(log.len() > 1000, "debug log captured ({} bytes)", log.len());
    let leaks: Vec<String> = log
        .lines()
        .filter(|l| l.contains(&canary))
        .map(|l| l.replace(&canary, "<CANARY>").chars().take(300).collect())
        .collect();
    assert!(
        leaks.is_empty(),
        "canary leaked into codeb's log: {leaks:#?}"
    );
    // The raw rows: env versions (encrypted), journals, audit.
    let pool = db().await;
    for table in [
        "env_versions",
        "deployments",
        "deployment_steps",
        "audit_log",
    ] {
        let hits: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} t WHERE strpos(row_to_json(t)::text, $1) > 0"
        ))
        .bind(&canary)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(hits, 0, "canary in plaintext in {table}");
    }
    let raw_hits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM env_versions WHERE position(convert_to($1, 'UTF8') IN ciphertext) > 0",
    )
    .bind(&canary)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(raw_hits, 0, "canary bytes in a ciphertext");
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM env_versions v JOIN projects p ON p.id = v.project_id WHERE p.name = $1 AND v.environment = $2",
    )
    .bind(&p)
    .bind(env)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, v2, "every version kept");
    client.cancel().await.unwrap();
    fleet.close().await;
}

/// With env data stored, codeb refuses to serve without the master key, or
/// with another one, and says which.
#[tokio::test(flavor = "multi_thread")]
async fn master_key_is_required_once_env_data_exists() {
    let _guard = FAULT_LOCK.read().await;
    // Make sure env data exists.
    let server = HttpServer::start().await;
    let client = ().serve(server.transport()).await.unwrap();
    let p = unique_project("envkey");
    let r = super::common::call(&client, "project_create", json!({"project": p})).await;
    structured(&r);
    let r = super::common::call(
        &client,
        "env_set",
        json!({"project": p, "environment": "preview", "set": {"A": "b"}}),
    )
    .await;
    structured(&r);
    client.cancel().await.unwrap();

    let text = std::fs::read_to_string(&testbed().config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("master_key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = std::env::temp_dir().join(format!("codeb-nokey-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("codeb.toml");
    std::fs::write(&cfg, without).unwrap();
    let serve = |extra: Option<&str>| {
        let mut c = std::process::Command::new(super::common::codeb_bin());
        c.arg("--config")
            .arg(&cfg)
            .args(["serve", "--http", "127.0.0.1:0"])
            .env_remove("CODEB_MASTER_KEY")
            .stdin(std::process::Stdio::null());
        if let Some(k) = extra {
            c.env("CODEB_MASTER_KEY", k);
        }
        c.output().unwrap()
    };
    let out = serve(None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no master key is configured"), "{err}");
    let out = serve(Some(&"ab".repeat(32)));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("configured key is"), "{err}");
    let out = serve(Some("not-hex"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed key is a config error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CODEB_MASTER_KEY") && err.contains("64 hex digits"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A deployed container reaches its own database with the credentials
/// codeb generated and gave it, and nothing of another project: not its
/// database, not its Redis keys (psql and redis-cli run inside the
/// container, demo:tools).
#[tokio::test(flavor = "multi_thread")]
async fn container_reaches_only_its_own_database_and_keys() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let transport = server.transport();
    let client = Recorder::default()
        .serve(transport)
        .await
        .expect("initialize");
    let (a, b) = (unique_project("isoa"), unique_project("isob"));
    let env = "preview";
    for p in [&a, &b] {
        let (r, _) = call_with_progress(&client, "project_create", json!({"project": p})).await;
        structured(&r);
    }
    let (r, _) = call_with_progress(
        &client,
        "deploy",
        json!({"project": a, "environment": env, "image": image("tools")}),
    )
    .await;
    let d = structured(&r).clone();
    let container = format!("{a}-{env}-{}", d["slot"].as_str().unwrap());
    let b_db = format!("{}_{env}", b.replace('-', "_"));
    let b_prefix = format!("{b}:{env}:");

    let config = codeb::config::Config::load(&testbed().config).unwrap();
    let fleet = Fleet::from_config(&config);
    let app = remote(&fleet, ServerRole::App);
    let in_container = |script: String| {
        let app = app.clone();
        let container = container.clone();
        async move {
            app.run(&RemoteCmd::new("podman").args([
                "exec",
                &container,
                "/bin/busybox",
                "sh",
                "-c",
                &script,
            ]))
            .await
            .expect("podman exec runs")
        }
    };
    // Its own database: log in with DATABASE_URL, create, write, read.
    let out = in_container(
        "psql -X -v ON_ERROR_STOP=1 -tA \"$DATABASE_URL\" -c 'CREATE TABLE t (x int)' -c 'INSERT INTO t VALUES (42)' -c 'SELECT sum(x) FROM t'".into(),
    )
    .await;
    assert!(out.success(), "own database: {}", out.stderr_tail());
    assert!(
        out.stdout_text().lines().any(|l| l == "42"),
        "{}",
        out.stdout_text()
    );
    // Another project's database with the same credentials: refused.
    let out = in_container(format!(
        "psql -X -tA \"${{DATABASE_URL%/*}}/{b_db}\" -c 'SELECT 1'"
    ))
    .await;
    assert!(
        !out.success(),
        "B's database must refuse A: {}",
        out.stdout_text()
    );
    assert!(
        out.stderr_tail().contains("permission denied for database"),
        "{}",
        out.stderr_tail()
    );
    // Redis: its prefix works, another project's key is NOPERM.
    let admin_pw = std::fs::read_to_string(
        testbed().status["redis_admin_password_file"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let storage = testbed().status["hosts"]["storage"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let set_b = std::process::Command::new("redis-cli")
        .args([
            "-h",
            &storage,
            "SET",
            &format!("{b_prefix}secret"),
            "b-only",
        ])
        .env("REDISCLI_AUTH", admin_pw.trim())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&set_b.stdout).trim(), "OK");
    let out = in_container(
        "redis-cli --no-auth-warning -u \"$REDIS_URL\" SET \"${REDIS_PREFIX}k\" mine && redis-cli --no-auth-warning -u \"$REDIS_URL\" GET \"${REDIS_PREFIX}k\"".into(),
    )
    .await;
    assert_eq!(
        out.stdout_text().lines().collect::<Vec<_>>(),
        ["OK", "mine"],
        "{}",
        out.stderr_tail()
    );
    let out = in_container(format!(
        "redis-cli --no-auth-warning -u \"$REDIS_URL\" GET '{b_prefix}secret'"
    ))
    .await;
    let text = out.stdout_text();
    assert!(text.contains("NOPERM"), "A must not read B's key: {text}");
    assert!(!text.contains("b-only"));
    // Without credentials nothing is readable at all.
    let out = in_container(format!("redis-cli -h {storage} GET '{b_prefix}secret'")).await;
    assert!(
        out.stdout_text().contains("NOAUTH"),
        "{}",
        out.stdout_text()
    );
    client.cancel().await.unwrap();
    fleet.close().await;
}
