//! Database backups end to end on the testbed, through MCP over HTTP:
//! project_create, a project database with rows, backup_create with
//! progress, the dump file read back from the backup server and checked
//! against the record, a restore with `pg_restore` compared row by row,
//! and two failures (no database; a database that refuses connections).
//!
//! codeb's own state lives in a private database for this test (its
//! migrations may be ahead of other branches sharing the testbed's `codeb`
//! database); the project databases are ordinary ones in the same cluster.

use std::process::Command;

use rmcp::ServiceExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection};

use super::common::{error_text, structured, testbed, unique_project, HttpServer, FAULT_LOCK};
use super::lifecycle::{call_with_progress, Recorder};

/// Rows put into the project database before the backup.
const ROWS: i64 = 50_000;

/// The testbed's database URL pointing at database `name`.
fn url_for(name: &str) -> String {
    let base = testbed().database_url();
    let (server, _) = base.rsplit_once('/').expect("url has a database");
    format!("{server}/{name}")
}

async fn connect(name: &str) -> PgConnection {
    PgConnection::connect(&url_for(name))
        .await
        .unwrap_or_else(|e| panic!("connect to {name}: {e}"))
}

/// Creates database `name` (owned by codeb) unless it exists.
async fn create_database(admin: &mut PgConnection, name: &str) {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *admin)
            .await
            .unwrap();
    if !exists {
        // The name is made by the test from [a-z0-9_] only.
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
    }
}

/// Drops database `name` if it exists; a failure is reported, not fatal
/// (it only leaves a test database behind).
async fn drop_database(admin: &mut PgConnection, name: &str) {
    if let Err(e) = admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
    {
        eprintln!("could not drop test database {name}: {e}");
    }
}

/// Runs a program on a testbed host over SSH with the testbed key.
fn ssh(host: &str, argv: &[&str]) -> std::process::Output {
    let dir = "/var/lib/codeb-testbed/ssh";
    Command::new("ssh")
        .args(["-i", &format!("{dir}/id_ed25519")])
        .args(["-o", &format!("UserKnownHostsFile={dir}/known_hosts")])
        .args(["-o", "BatchMode=yes"])
        .arg(format!("root@{host}"))
        .args(argv)
        .output()
        .expect("run ssh")
}

fn backup_host() -> String {
    testbed().status["hosts"]["backup"]["address"]
        .as_str()
        .unwrap_or("10.77.0.14")
        .to_string()
}

/// Every row of the test table, in order.
async fn table_rows(db: &str) -> Vec<(i64, String)> {
    let mut c = connect(db).await;
    sqlx::query_as("SELECT id, body FROM items ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_create_streams_a_verified_dump_that_restores() {
    let _guard = FAULT_LOCK.read().await;
    let mut admin = connect("codeb").await;
    let state_db = format!(
        "codeb_bk_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    create_database(&mut admin, &state_db).await;
    let server = HttpServer::start_with(
        &testbed().config,
        &[(
            "CODEB_DATABASE__URL",
            &format!("postgres://codeb@10.77.0.12:5432/{state_db}"),
        )],
    )
    .await;
    let transport = server.transport();
    let client = Recorder::default()
        .serve(transport)
        .await
        .expect("initialize");

    // A project with a database holding ROWS rows.
    let p = unique_project("bk");
    let r = call_with_progress(&client, "project_create", json!({"project": p}))
        .await
        .0;
    structured(&r);
    let db = format!("{}_production", p.replace('-', "_"));
    let restored = format!("{db}_restored");
    create_database(&mut admin, &db).await;
    {
        // As the application makes it: owned by the project's role (the
        // backup logs in as that role, never as a superuser).
        let mut c = connect(&db).await;
        c.execute(format!("SET ROLE {db}").as_str()).await.unwrap();
        c.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO items SELECT g, md5(g::text) || repeat('x', (g % 50)::int) FROM generate_series(1, $1) g",
        )
        .bind(ROWS)
        .execute(&mut c)
        .await
        .unwrap();
    }

    // Dry run: a plan, no file, no record.
    let r = call_with_progress(
        &client,
        "backup_create",
        json!({"project": p, "environment": "production", "dry_run": true}),
    )
    .await
    .0;
    let v = structured(&r);
    assert_eq!(v["dry_run"], json!(true));
    assert!(v["plan"].as_array().unwrap().len() >= 6, "{v}");
    assert!(
        v["plan"].to_string().contains("pg_dump --format=custom"),
        "{v}"
    );

    // The backup, with progress for every phase.
    let started = std::time::Instant::now();
    let (r, progress) = call_with_progress(
        &client,
        "backup_create",
        json!({"project": p, "environment": "production"}),
    )
    .await;
    let took = started.elapsed();
    let v = structured(&r).clone();
    let path = v["path"].as_str().unwrap().to_string();
    let size = v["size_bytes"].as_u64().unwrap();
    let sha = v["sha256"].as_str().unwrap().to_string();
    let id = v["backup_id"].as_str().unwrap().to_string();
    eprintln!(
        "backup of {ROWS} rows: {size} bytes in {} ms; {} progress notifications",
        took.as_millis(),
        progress.len()
    );
    for n in &progress {
        eprintln!("  {:.3} {}", n.progress, n.message.as_deref().unwrap_or(""));
    }
    assert!(v["summary"].as_str().unwrap().contains("verified"), "{v}");
    assert!(
        path.starts_with(&format!("/opt/codeb/backups/{p}/production/")) && path.ends_with(".dump"),
        "{path}"
    );
    let phases: std::collections::BTreeSet<u32> =
        progress.iter().map(|n| n.progress.floor() as u32).collect();
    assert_eq!(
        phases,
        (1..=5).collect(),
        "a notification for every phase: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[1].progress > w[0].progress));

    // The file on the backup server is the recorded one, owner-only, in
    // owner-only directories, and no partial file is left.
    let out = ssh(&backup_host(), &["cat", "--", &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = out.stdout;
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
    assert!(bytes.starts_with(b"PGDMP"), "custom-format dump");
    let dir = path.rsplit_once('/').unwrap().0.to_string();
    let project_dir = dir.rsplit_once('/').unwrap().0.to_string();
    let out = ssh(
        &backup_host(),
        &["stat", "--format=%a", "--", &path, &dir, &project_dir],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "600\n700\n700\n");
    let out = ssh(&backup_host(), &["ls", "-A", "--", &dir]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!listing.contains(".partial"), "{listing}");

    // backup_list shows the same record.
    let r = call_with_progress(&client, "backup_list", json!({"project": p}))
        .await
        .0;
    let v = structured(&r);
    let b = &v["backups"][0];
    assert_eq!(b["id"], json!(id));
    assert_eq!(b["status"], json!("succeeded"));
    assert_eq!(b["path"], json!(path));
    assert_eq!(b["size_bytes"], json!(size));
    assert_eq!(b["sha256"], json!(sha));
    assert!(b["finished_at"].is_string());

    // Restore into a fresh database and compare every row.
    drop_database(&mut admin, &restored).await;
    create_database(&mut admin, &restored).await;
    let dump_file = std::env::temp_dir().join(format!("{id}.dump"));
    std::fs::write(&dump_file, &bytes).unwrap();
    let out = Command::new("pg_restore")
        .args(["--no-owner", "--no-privileges", "--exit-on-error"])
        .arg(format!("--dbname={}", url_for(&restored)))
        .arg(&dump_file)
        .output()
        .expect("run pg_restore");
    let _ = std::fs::remove_file(&dump_file);
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = table_rows(&db).await;
    assert_eq!(original.len() as i64, ROWS);
    assert_eq!(table_rows(&restored).await, original);

    // A second backup lists first; pages of one follow the cursor.
    let r = call_with_progress(
        &client,
        "backup_create",
        json!({"project": p, "environment": "production"}),
    )
    .await
    .0;
    let second = structured(&r)["backup_id"].as_str().unwrap().to_string();
    let r = call_with_progress(&client, "backup_list", json!({"project": p, "limit": 1}))
        .await
        .0;
    let v = structured(&r).clone();
    assert_eq!(v["backups"][0]["id"], json!(second));
    let cursor = v["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let r = call_with_progress(
        &client,
        "backup_list",
        json!({"project": p, "limit": 1, "cursor": cursor}),
    )
    .await
    .0;
    let v = structured(&r).clone();
    assert_eq!(v["backups"][0]["id"], json!(id));
    assert_eq!(v["next_cursor"], Value::Null);

    // A database that refuses connections: pg_dump fails after the record
    // exists; the record is failed, names the step, and no file is left.
    admin
        .execute(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false").as_str())
        .await
        .unwrap();
    let r = call_with_progress(
        &client,
        "backup_create",
        json!({"project": p, "environment": "production"}),
    )
    .await
    .0;
    let e = error_text(&r);
    assert!(e.contains("dumping the database"), "{e}");
    assert!(e.contains("not currently accepting connections"), "{e}");
    assert!(e.contains("recorded as failed"), "{e}");
    let r = call_with_progress(&client, "backup_list", json!({"project": p}))
        .await
        .0;
    let v = structured(&r).clone();
    let failed = &v["backups"][0];
    assert_eq!(failed["status"], json!("failed"), "{v}");
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("dumping the database"));
    let failed_path = failed["path"].as_str().unwrap().to_string();
    for leftover in [failed_path.clone(), format!("{failed_path}.partial")] {
        let out = ssh(&backup_host(), &["test", "-e", &leftover]);
        assert_eq!(out.status.code(), Some(1), "{leftover} must not exist");
    }

    // A project without a database: a clear error before anything starts;
    // no record, no directory.
    let q = unique_project("bk");
    structured(
        &call_with_progress(&client, "project_create", json!({"project": q}))
            .await
            .0,
    );
    let q_db = format!("{}_staging", q.replace('-', "_"));
    drop_database(&mut admin, &q_db).await;
    let r = call_with_progress(
        &client,
        "backup_create",
        json!({"project": q, "environment": "staging"}),
    )
    .await
    .0;
    let e = error_text(&r);
    assert!(
        e.contains(&format!("project {q} has no database for staging yet")),
        "{e}"
    );
    assert!(e.contains("nothing was backed up"), "{e}");
    let r = call_with_progress(&client, "backup_list", json!({"project": q}))
        .await
        .0;
    assert_eq!(structured(&r)["backups"], json!([]));
    let out = ssh(
        &backup_host(),
        &["test", "-e", &format!("/opt/codeb/backups/{q}")],
    );
    assert_eq!(out.status.code(), Some(1), "no directory for {q}");

    // Clean up: files, project databases, the private state database.
    client.cancel().await.ok();
    drop(server);
    let _ = ssh(
        &backup_host(),
        &["rm", "-rf", "--", &format!("/opt/codeb/backups/{p}")],
    );
    for name in [&db, &restored, &state_db] {
        drop_database(&mut admin, name).await;
    }
}
