//! backup_restore on the testbed, through the operations layer (the MCP
//! tool and its confirmation live elsewhere): a project's database with
//! rows in two schemas is backed up, changed, and restored with the plan's
//! hash — exactly the backed-up tables and rows come back, owned by the
//! project's role, which can still use them. Refusals change nothing: a
//! wrong hash, a stale plan (the database was made again since), a backup
//! file that no longer matches its SHA-256, and a restore that fails inside
//! its transaction.
//!
//! codeb's state lives in a fresh database (`FreshStateDb`); project
//! databases are ordinary ones on the testbed's PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use codeb::exec::Remote;
use codeb::model::{Environment, ServerRole, StorageNames};
use codeb::ops::backup::{backup_create, BackupOutcome};
use codeb::ops::lifecycle::{Caller, OpError, Progress};
use codeb::ops::restore::{backup_restore, backup_restore_plan};
use codeb::ops::Ctx;
use codeb::plan::cmd::RemoteCmd;
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::app_host::with_cleanup;
use super::common::{testbed, unique_project, FreshStateDb, FAULT_LOCK};

/// Rows in `public.items` at backup time.
const ITEMS: i64 = 2_000;
/// Rows in `audit.log` at backup time.
const AUDIT: i64 = 7;

fn progress() -> (UnboundedSender<Progress>, UnboundedReceiver<Progress>) {
    unbounded_channel()
}

/// The testbed's database URL (as codeb) pointing at database `name`.
fn admin_url(name: &str) -> String {
    let base = testbed().database_url();
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

async fn admin(name: &str) -> PgConnection {
    PgConnection::connect(&admin_url(name))
        .await
        .unwrap_or_else(|e| panic!("connect to {name} as codeb: {e}"))
}

/// Exact rows per table, as codeb (a member of the project's role) sees them.
async fn snapshot(db: &str) -> BTreeMap<String, i64> {
    let mut c = admin(db).await;
    let text: String = sqlx::query_scalar(&format!(
        "SELECT ({})::text",
        codeb::plan::restore::ROW_COUNT_SQL
    ))
    .fetch_one(&mut c)
    .await
    .unwrap();
    codeb::plan::restore::parse_row_counts(&text).unwrap()
}

async fn items(db: &str) -> Vec<(i64, String)> {
    let mut c = admin(db).await;
    sqlx::query_as("SELECT id, body FROM public.items ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

fn remote(ctx: &Ctx, role: ServerRole) -> Arc<dyn Remote> {
    ctx.fleet.for_role(role).expect("server").1.clone()
}

async fn run_ok(r: &dyn Remote, cmd: &RemoteCmd) -> Vec<u8> {
    let out = r.run(cmd).await.expect("run");
    assert!(out.success(), "`{cmd}`: {}", out.stderr_tail());
    out.stdout
}

/// Writes `data` to `path` on the backup server (owner-only).
async fn write_backup_file(ctx: &Ctx, path: &str, data: Vec<u8>) {
    let cmd = RemoteCmd::new("install")
        .args(["-T", "-m", "0600", "--", "/dev/stdin", path])
        .stdin(data);
    run_ok(&*remote(ctx, ServerRole::Backup), &cmd).await;
}

fn refused(r: Result<codeb::ops::restore::RestoreOutcome, OpError>) -> String {
    match r {
        Err(OpError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_restore_puts_back_exactly_the_backup_and_refusals_change_nothing() {
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("rs").await;
    let ctx = Ctx::new(state.config());
    let caller = Caller::local_owner();
    let p = unique_project("rs");
    let db = StorageNames::new(&p, Environment::Production).unwrap().pg;
    let body = async {
        let created = codeb::ops::project::create_project(&ctx, &p, "default", "node", "test")
            .await
            .expect("project_create");
        let rendered =
            codeb::ops::env::latest_rendered(&ctx, created.id, &p, Environment::Production)
                .await
                .unwrap()
                .expect("protected env");
        let app_url = rendered.vars["DATABASE_URL"].clone();
        let password = rendered.vars["POSTGRES_PASSWORD"].clone();

        // The application (its own role) makes tables in two schemas.
        let mut app = PgConnection::connect(&app_url).await.expect("app login");
        app.execute(
            "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);
             CREATE SCHEMA audit;
             CREATE TABLE audit.log (at INT, note TEXT);",
        )
        .await
        .unwrap();
        sqlx::query("INSERT INTO items (body) SELECT md5(g::text) FROM generate_series(1, $1) g")
            .bind(ITEMS)
            .execute(&mut app)
            .await
            .unwrap();
        sqlx::query("INSERT INTO audit.log SELECT g, 'n' || g FROM generate_series(1, $1) g")
            .bind(AUDIT)
            .execute(&mut app)
            .await
            .unwrap();
        app.close().await.unwrap();
        let backed_up = snapshot(&db).await;
        assert_eq!(
            backed_up,
            BTreeMap::from([
                ("audit.log".to_string(), AUDIT),
                ("public.items".to_string(), ITEMS)
            ])
        );
        let backed_up_items = items(&db).await;

        let done = match backup_create(
            &ctx,
            &p,
            Environment::Production,
            false,
            &caller,
            progress().0,
        )
        .await
        .expect("backup_create")
        {
            BackupOutcome::Done(d) => d,
            other => panic!("{other:?}"),
        };

        // The plan names the backup and the database it replaces.
        let plan = backup_restore_plan(&ctx, &p, done.id).await.expect("plan");
        let d = &plan.details;
        assert_eq!(plan.tool, "backup_restore");
        assert_eq!(d["backup_id"], done.id.to_string());
        assert_eq!(d["environment"], "production");
        assert_eq!(d["path"], done.path);
        assert_eq!(d["size_bytes"], done.size_bytes);
        assert_eq!(d["sha256"], done.sha256);
        assert_eq!(d["database"], db);
        assert_eq!(d["owner"], db);
        assert!(d["database_oid"].as_u64().unwrap() > 0, "{d}");
        assert!(plan.summary.contains("is lost"), "{}", plan.summary);
        assert!(!d.to_string().contains(&password));
        assert_eq!(
            backup_restore_plan(&ctx, &p, done.id).await.unwrap().hash(),
            plan.hash()
        );
        // A backup that is not the project's.
        match backup_restore_plan(&ctx, &p, uuid::Uuid::new_v4()).await {
            Err(OpError::Refused(m)) if m.contains("not found for project") => {}
            other => panic!("expected a refusal naming the backup, got {other:?}"),
        }

        // Stale: the database was made again after the plan (another OID).
        {
            let mut c = admin("postgres").await;
            for sql in [
                format!("DROP DATABASE \"{db}\" WITH (FORCE)"),
                format!("CREATE DATABASE \"{db}\" OWNER \"{db}\" ENCODING 'UTF8'"),
                format!("REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC"),
            ] {
                c.execute(sql.as_str()).await.unwrap();
            }
        }
        let e =
            refused(backup_restore(&ctx, &p, done.id, &plan.hash(), &caller, progress().0).await);
        assert!(e.contains("no longer matches"), "{e}");
        assert_eq!(
            snapshot(&db).await,
            BTreeMap::new(),
            "the new database stays empty"
        );

        // The application changes its data: rows deleted, a table added.
        let mut app = PgConnection::connect(&app_url).await.expect("app login");
        app.execute(
            "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO items (body) SELECT 'changed' FROM generate_series(1, 300);
             DELETE FROM items WHERE id <= 100;
             CREATE TABLE extra (x INT);
             INSERT INTO extra VALUES (1), (2);",
        )
        .await
        .unwrap();
        app.close().await.unwrap();
        let changed = snapshot(&db).await;
        assert_eq!(
            changed,
            BTreeMap::from([
                ("public.extra".to_string(), 2),
                ("public.items".to_string(), 200)
            ])
        );
        let plan = backup_restore_plan(&ctx, &p, done.id).await.unwrap();

        // A wrong hash.
        let e = refused(
            backup_restore(&ctx, &p, done.id, &"0".repeat(64), &caller, progress().0).await,
        );
        assert!(e.contains("no longer matches"), "{e}");
        assert_eq!(snapshot(&db).await, changed);

        // A backup file that is no longer what was recorded.
        let backup = remote(&ctx, ServerRole::Backup);
        let original = run_ok(
            &*backup,
            &codeb::plan::restore::read_backup_file(&done.path).unwrap(),
        )
        .await;
        let mut tampered = original.clone();
        let mid = tampered.len() / 2;
        tampered[mid] ^= 0xff;
        write_backup_file(&ctx, &done.path, tampered).await;
        let e =
            refused(backup_restore(&ctx, &p, done.id, &plan.hash(), &caller, progress().0).await);
        assert!(
            e.contains("SHA-256") && e.contains("changed or damaged"),
            "{e}"
        );
        assert!(e.contains("nothing was restored"), "{e}");
        assert_eq!(snapshot(&db).await, changed);
        write_backup_file(&ctx, &done.path, original).await;

        // A restore that fails inside its transaction (the role may not
        // create schemas for a moment): rolled back, nothing changed.
        let mut c = admin("postgres").await;
        c.execute(
            format!(
                "SET ROLE \"{db}\"; REVOKE CREATE ON DATABASE \"{db}\" FROM \"{db}\"; RESET ROLE"
            )
            .as_str(),
        )
        .await
        .unwrap();
        match backup_restore(&ctx, &p, done.id, &plan.hash(), &caller, progress().0).await {
            Err(e @ OpError::Failed { .. }) => {
                let text = e.to_string();
                assert!(text.contains("permission denied"), "{text}");
                assert!(text.contains("database is unchanged"), "{text}");
                assert!(!text.contains(&password), "{text}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(snapshot(&db).await, changed);
        c.execute(
            format!("SET ROLE \"{db}\"; GRANT CREATE ON DATABASE \"{db}\" TO \"{db}\"; RESET ROLE")
                .as_str(),
        )
        .await
        .unwrap();

        // The restore: exactly the backed-up tables and rows, with progress.
        let (tx, mut rx) = progress();
        let started = Instant::now();
        let out = backup_restore(&ctx, &p, done.id, &plan.hash(), &caller, tx)
            .await
            .expect("restore");
        eprintln!(
            "restored {} bytes in {} ms: {:?}",
            out.bytes_restored,
            started.elapsed().as_millis(),
            out.tables
        );
        assert_eq!(out.tables, backed_up);
        assert_eq!(
            snapshot(&db).await,
            backed_up,
            "the added table is gone too"
        );
        assert_eq!(items(&db).await, backed_up_items);
        assert_eq!(out.sha256, done.sha256);
        assert_eq!(out.bytes_restored, done.size_bytes);
        assert!(out.summary.contains("Restored backup"), "{}", out.summary);
        let mut phases = std::collections::BTreeSet::new();
        while let Ok(p) = rx.try_recv() {
            assert_eq!(p.total, 4);
            phases.insert(p.phase);
        }
        assert_eq!(phases, (1..=4).collect());

        // The application still owns and uses its tables.
        let mut app = PgConnection::connect(&app_url).await.expect("app login");
        let owners: Vec<(String, String)> = sqlx::query_as(
            "SELECT n.nspname || '.' || c.relname, pg_get_userbyid(c.relowner)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'S') AND n.nspname IN ('public', 'audit') ORDER BY 1",
        )
        .fetch_all(&mut app)
        .await
        .unwrap();
        assert_eq!(owners.len(), 3, "{owners:?}");
        assert!(owners.iter().all(|(_, o)| *o == db), "{owners:?}");
        sqlx::query("INSERT INTO items (body) VALUES ('after restore')")
            .execute(&mut app)
            .await
            .unwrap();
        app.execute("UPDATE audit.log SET note = 'x' WHERE at = 1; CREATE TABLE later (y INT);")
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
            .fetch_one(&mut app)
            .await
            .unwrap();
        assert_eq!(n, ITEMS + 1);
        let next: i64 = sqlx::query_scalar("SELECT max(id) FROM items")
            .fetch_one(&mut app)
            .await
            .unwrap();
        assert_eq!(next, ITEMS + 1, "the sequence was restored too");
        app.close().await.unwrap();

        // The journal: the three streamed commands, no secret.
        let pool = ctx.db.pool().await.unwrap();
        let steps: Vec<(String, String)> = sqlx::query_as(
            "SELECT step, argv::text || ' ' || coalesce(stderr_tail, '') FROM deployment_steps
              WHERE deployment_id = $1::uuid ORDER BY seq",
        )
        .bind(&out.deployment_id)
        .fetch_all(pool)
        .await
        .unwrap();
        let names: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
        for want in [
            "check_sha256",
            "check_size",
            "read_backup",
            "pg_restore",
            "psql",
            "restore",
            "row_counts",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        assert!(steps.iter().all(|(_, t)| !t.contains(&password)));
        let statuses: Vec<String> = sqlx::query_scalar(
            "SELECT status FROM deployments WHERE operation = 'backup_restore' ORDER BY created_at",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(
            statuses,
            ["failed", "failed", "failed", "failed", "succeeded"]
        );
    };
    let cleanup = async {
        let backup = remote(&ctx, ServerRole::Backup);
        let dir = format!("/opt/codeb/backups/{p}");
        let _ = backup
            .run(&RemoteCmd::new("rm").args(["-rf", "--", dir.as_str()]))
            .await;
        match codeb::ops::storage::drop_project_storage(&ctx, &p).await {
            Ok(r) if r.is_clean() => {}
            other => eprintln!("storage of {p} not fully dropped: {other:?}"),
        }
        if let Ok(pool) = ctx.db.pool().await {
            pool.close().await;
        }
        state.drop().await;
    };
    with_cleanup(body, cleanup).await;
}
