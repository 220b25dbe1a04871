//! Per-project storage (issue [3]): project_create makes a PostgreSQL role
//! and database and a Redis ACL user per environment on the testbed's
//! storage server, isolated from other projects, and undoes all of it when
//! any step fails.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};

use async_trait::async_trait;
use codeb::exec::{CmdOutput, ExecError, Fleet, Remote};
use codeb::model::{Environment, ServerRole, StorageNames};
use codeb::ops::storage::{
    drop_project_storage, provision_project_storage, revert_project_storage, ProjectStorage,
    StorageError,
};
use codeb::ops::Ctx;
use codeb::plan::cmd::RemoteCmd;
use codeb::plan::storage::{parse_redis_replies, redis_cli_session, redis_quote, RedisReply};
use codeb::state::Db;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use super::common::{
    call, error_text, structured, testbed, unique_project, FreshStateDb, HttpServer, FAULT_LOCK,
};

/// Runs `body`; then, whether or not it panicked, drops every storage
/// object named after `projects` and the fresh state database, so a
/// failing test leaves nothing on the shared testbed.
async fn with_cleanup(
    ctx: &Ctx,
    state: &FreshStateDb,
    projects: &[&str],
    body: impl Future<Output = ()>,
) {
    let result = AssertUnwindSafe(body).catch_unwind().await;
    let t = Instant::now();
    let reports: Vec<_> = futures::stream::iter(projects)
        .map(|p| drop_project_storage(ctx, p))
        .buffer_unordered(8)
        .collect()
        .await;
    if projects.len() > 10 {
        eprintln!(
            "dropping the storage of {} projects took {:?}",
            projects.len(),
            t.elapsed()
        );
    }
    if result.is_ok() {
        for report in reports {
            let report = report.expect("drop storage");
            assert!(report.is_clean(), "{report}");
        }
        for p in projects.iter().take(3) {
            assert_storage_gone(ctx, p).await;
        }
    }
    if let Ok(pool) = ctx.db.pool().await {
        pool.close().await;
    }
    state.drop().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Whether a PostgreSQL role and a database of this name exist.
async fn pg_objects(ctx: &Ctx, name: &str) -> (bool, bool) {
    let pool = ctx.db.pool().await.expect("state pool");
    sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
                EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .expect("query pg catalogs")
}

fn storage_remote(ctx: &Ctx) -> Arc<dyn Remote> {
    ctx.fleet
        .for_role(ServerRole::Storage)
        .expect("storage server")
        .1
        .clone()
}

/// Runs redis-cli lines on the storage server, authenticated as `user`
/// (`None`: the admin), and returns the replies after AUTH's.
async fn redis_as(ctx: &Ctx, user: Option<(&str, &str)>, lines: &[&str]) -> Vec<RedisReply> {
    let mut all = Vec::new();
    match user {
        Some((u, pw)) => all.push(format!("AUTH {u} {}", redis_quote(pw))),
        None => {
            let pw = ctx
                .config
                .redis_admin_password()
                .unwrap()
                .expect("admin pw");
            all.push(format!("AUTH {}", redis_quote(&pw)));
        }
    }
    all.extend(lines.iter().map(|l| l.to_string()));
    let cmd = redis_cli_session(ctx.config.storage.redis_port, None, &all);
    let out = storage_remote(ctx).run(&cmd).await.expect("run redis-cli");
    assert!(out.success(), "redis-cli failed: {}", out.stderr_tail());
    let mut replies = parse_redis_replies(&out.stdout_text());
    assert_eq!(replies.len(), all.len(), "{replies:?}");
    let auth = replies.remove(0);
    assert!(auth.is_ok(), "AUTH refused: {auth:?}");
    replies
}

async fn redis_user_exists(ctx: &Ctx, user: &str) -> bool {
    let r = redis_as(ctx, None, &[&format!("ACL GETUSER {user}")]).await;
    !matches!(r[0], RedisReply::Value(Value::Null))
}

/// Asserts that nothing named after `project` exists on the storage server.
async fn assert_storage_gone(ctx: &Ctx, project: &str) {
    for env in Environment::ALL {
        let n = StorageNames::new(project, env).unwrap();
        assert_eq!(pg_objects(ctx, &n.pg).await, (false, false), "{}", n.pg);
        assert!(
            !redis_user_exists(ctx, &n.redis_user).await,
            "{}",
            n.redis_user
        );
    }
}

fn is_noperm(r: &RedisReply) -> bool {
    matches!(r, RedisReply::Error(e) if e.starts_with("NOPERM"))
}

async fn connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    sqlx::PgConnection::connect(url).await
}

fn database_url(ctx: &Ctx, s: &ProjectStorage, env: usize) -> String {
    let c = &s.environments[env];
    codeb::plan::storage::storage_env_vars(
        &c.names,
        c.password(),
        &codeb::ops::storage::storage_endpoint(ctx),
    )["DATABASE_URL"]
        .clone()
}

/// In process against the real storage server: the credentials work,
/// projects cannot reach each other's database or keys, a leftover is
/// refused untouched, and revert removes everything.
#[tokio::test(flavor = "multi_thread")]
async fn provisioned_storage_is_isolated_and_reverts() {
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("st").await;
    let ctx = Ctx::new(state.config());
    let a = unique_project("sta");
    let b = unique_project("stb");
    with_cleanup(&ctx, &state, &[&a, &b], async {
        let t = Instant::now();
        let sa = provision_project_storage(&ctx, &a)
            .await
            .expect("provision A");
        eprintln!("provisioned 3 environments in {:?}", t.elapsed());
        let sb = provision_project_storage(&ctx, &b)
            .await
            .expect("provision B");
        assert_eq!(sa.environments.len(), 3);
        assert!(format!("{sa:?}").contains("[redacted]"));
        assert!(!format!("{sa:?}").contains(sa.environments[0].password()));
        for c in &sa.environments {
            assert_eq!(c.password().len(), 32);
            assert!(c.password().bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(pg_objects(&ctx, &c.names.pg).await, (true, true));
            assert!(redis_user_exists(&ctx, &c.names.redis_user).await);
        }
        let passwords: std::collections::HashSet<&str> = sa
            .environments
            .iter()
            .chain(&sb.environments)
            .map(|c| c.password())
            .collect();
        assert_eq!(passwords.len(), 6, "every environment has its own password");

        // A's DATABASE_URL logs in (SCRAM verifier computed by codeb) and may
        // create tables in its own database.
        let mut conn = connect(&database_url(&ctx, &sa, 0))
            .await
            .expect("log in as A production");
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text)")
            .await
            .expect("create a table");
        conn.execute("INSERT INTO orders (note) VALUES ('x')")
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1);
        conn.close().await.unwrap();

        // A's role cannot connect to B's database, nor A production to A staging.
        let a_prod = &sa.environments[0];
        for other in [&sb.environments[0].names.pg, &sa.environments[1].names.pg] {
            let own = database_url(&ctx, &sa, 0);
            let url = format!("{}/{other}", own.rsplit_once('/').unwrap().0);
            let e = connect(&url).await.expect_err("must not connect");
            assert!(
                e.to_string().contains("permission denied for database"),
                "{e}"
            );
        }
        // A wrong password is refused.
        let wrong = database_url(&ctx, &sa, 0)
            .replace(a_prod.password(), "WrongPassword0000000000000000000");
        let e = connect(&wrong).await.expect_err("wrong password");
        assert!(
            e.to_string().contains("password authentication failed"),
            "{e}"
        );

        // Redis: A's user works under its prefix only.
        let pa = &a_prod.names.redis_prefix;
        let pb = &sb.environments[0].names.redis_prefix;
        let r = redis_as(
            &ctx,
            Some((&a_prod.names.redis_user, a_prod.password())),
            &[
                &format!("SET {pa}k hello"),
                &format!("GET {pa}k"),
                &format!("SET {pb}k evil"),
                &format!("GET {pb}k"),
                "SET unprefixed x",
                "FLUSHALL",
                "KEYS *",
                "SCAN 0",
                "CONFIG GET requirepass",
                &format!("PUBLISH {pa}chan hi"),
                &format!("PUBLISH {pb}chan hi"),
            ],
        )
        .await;
        assert!(r[0].is_ok(), "{r:?}");
        assert_eq!(r[1], RedisReply::Value(json!("hello")));
        for (i, reply) in r.iter().enumerate().skip(2).take(7) {
            assert!(is_noperm(reply), "reply {i}: {reply:?}");
        }
        assert_eq!(r[9], RedisReply::Value(json!(0)));
        assert!(is_noperm(&r[10]), "{:?}", r[10]);
        // A wrong password is refused.
        let mut all = vec![format!(
            "AUTH {} {}",
            a_prod.names.redis_user,
            redis_quote("WrongPassword")
        )];
        all.push("PING".into());
        let out = storage_remote(&ctx)
            .run(&redis_cli_session(
                ctx.config.storage.redis_port,
                None,
                &all,
            ))
            .await
            .unwrap();
        let replies = parse_redis_replies(&out.stdout_text());
        assert!(
            matches!(&replies[0], RedisReply::Error(e) if e.starts_with("WRONGPASS")),
            "{replies:?}"
        );

        // A second provisioning of A finds the leftovers and changes nothing.
        let e = provision_project_storage(&ctx, &a)
            .await
            .expect_err("leftovers");
        assert!(matches!(e.error, StorageError::Leftover { .. }), "{e}");
        assert!(e.revert.reverted.is_empty() && e.revert.is_clean(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("PostgreSQL role {}", a_prod.names.pg)),
            "{text}"
        );
        assert!(
            text.contains(&format!("Redis user {}", a_prod.names.redis_user)),
            "{text}"
        );
        let mut conn = connect(&database_url(&ctx, &sa, 0))
            .await
            .expect("A still logs in after the refused second provisioning");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1, "A's data is untouched");
        conn.close().await.unwrap();

        // Revert removes everything, even with a session still open.
        let mut open = connect(&database_url(&ctx, &sa, 2)).await.unwrap();
        let report = revert_project_storage(&ctx, &sa).await;
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.reverted.len(), 7, "{report}");
        assert!(open.execute("SELECT 1").await.is_err());
        assert_storage_gone(&ctx, &a).await;
        let e = connect(&database_url(&ctx, &sa, 0))
            .await
            .expect_err("gone");
        assert!(
            e.to_string().contains("password authentication failed"),
            "{e}"
        );

        let report = revert_project_storage(&ctx, &sb).await;
        assert!(report.is_clean(), "{report}");
        assert_storage_gone(&ctx, &b).await;
    })
    .await;
}

/// A leftover role of one environment stops provisioning before anything
/// is created, and the leftover survives.
#[tokio::test(flavor = "multi_thread")]
async fn leftover_role_is_refused_and_kept() {
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("st").await;
    let ctx = Ctx::new(state.config());
    let p = unique_project("stl");
    with_cleanup(&ctx, &state, &[&p], async {
        let staging = StorageNames::new(&p, Environment::Staging).unwrap();
        let pool = ctx.db.pool().await.unwrap();
        sqlx::raw_sql(&format!("CREATE ROLE \"{}\" NOLOGIN", staging.pg))
            .execute(pool)
            .await
            .unwrap();
        let e = provision_project_storage(&ctx, &p)
            .await
            .expect_err("leftover");
        let text = e.to_string();
        assert!(
            text.contains(&format!("PostgreSQL role {} already exists", staging.pg)),
            "{text}"
        );
        assert_eq!(pg_objects(&ctx, &staging.pg).await, (true, false));
        let prod = StorageNames::new(&p, Environment::Production).unwrap();
        assert_eq!(pg_objects(&ctx, &prod.pg).await, (false, false));
        assert!(!redis_user_exists(&ctx, &prod.redis_user).await);
        sqlx::raw_sql(&format!("DROP ROLE \"{}\"", staging.pg))
            .execute(pool)
            .await
            .unwrap();
        assert_storage_gone(&ctx, &p).await;
    })
    .await;
}

/// The storage server's executor, except that the session creating Redis
/// users fails — after the PostgreSQL objects exist.
struct RedisCreateFails(Arc<dyn Remote>);

#[async_trait]
impl Remote for RedisCreateFails {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn run(&self, cmd: &RemoteCmd) -> Result<CmdOutput, ExecError> {
        let creates = cmd
            .stdin
            .as_deref()
            .is_some_and(|s| String::from_utf8_lossy(s).contains("ACL SETUSER"));
        if creates {
            return Err(ExecError::Transport {
                server: self.name().into(),
                program: cmd.program.into(),
                message: "injected failure".into(),
            });
        }
        self.0.run(cmd).await
    }
    async fn close(&self) {
        self.0.close().await
    }
    async fn forward_tcp(
        &self,
        remote: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr, ExecError> {
        self.0.forward_tcp(remote).await
    }
    async fn spawn(&self, cmd: &RemoteCmd) -> Result<Box<dyn codeb::exec::RunningCmd>, ExecError> {
        self.0.spawn(cmd).await
    }
}

/// A failure after the databases were made drops them again and says so.
#[tokio::test(flavor = "multi_thread")]
async fn failure_after_databases_reverts_them() {
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("st").await;
    let config = state.config();
    let real = Fleet::from_config(&config);
    let parts = real
        .servers()
        .map(|(s, r)| {
            let r: Arc<dyn Remote> = if s.roles.contains(&ServerRole::Storage) {
                Arc::new(RedisCreateFails(r.clone()))
            } else {
                r.clone()
            };
            (s.clone(), r)
        })
        .collect();
    let db = Db::from_config(&config);
    let ctx = Ctx::from_parts(config, Fleet::from_parts(parts), db);
    let p = unique_project("stf");
    with_cleanup(&ctx, &state, &[&p], async {
        let e = provision_project_storage(&ctx, &p)
            .await
            .expect_err("injected failure");
        let text = e.to_string();
        assert!(text.contains("create Redis users failed"), "{text}");
        assert!(text.contains("injected failure"), "{text}");
        for env in Environment::ALL {
            let n = StorageNames::new(&p, env).unwrap();
            assert!(text.contains(&format!("database {}", n.pg)), "{text}");
            assert!(
                text.contains(&format!("PostgreSQL role {}", n.pg)),
                "{text}"
            );
        }
        assert!(e.revert.is_clean(), "{text}");
        assert_storage_gone(&ctx, &p).await;
    })
    .await;
}

fn ports_of(v: &Value) -> Vec<u64> {
    v["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["blue_port"].as_u64().expect("blue port"))
        .collect()
}

/// Through MCP: dry run touches nothing; two concurrent creations of one
/// name — exactly one wins, the other is a clear isError — and nothing of
/// the loser (or of a failed winner) is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_project_create_one_wins() {
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("st").await;
    let ctx = Ctx::new(state.config());
    let server =
        HttpServer::start_with(&testbed().config, &[("CODEB_DATABASE__URL", &state.url)]).await;
    let c1 = server.client().await;
    let c2 = server.client().await;
    let p = unique_project("stc");
    with_cleanup(&ctx, &state, &[&p], async {
        let r = call(
            &c1,
            "project_create",
            json!({"project": p, "dry_run": true}),
        )
        .await;
        let v = structured(&r);
        assert_eq!(v["dry_run"], json!(true));
        assert!(
            v["summary"].as_str().unwrap().contains("nothing changed"),
            "{v}"
        );
        let envs = v["environments"].as_array().unwrap();
        assert_eq!(envs.len(), 3);
        assert_eq!(
            envs[0]["database"],
            json!(format!("{}_production", p.replace('-', "_")))
        );
        assert!(envs[0]["env_local"].as_str().unwrap().contains("localhost"));
        assert_storage_gone(&ctx, &p).await;

        let args = json!({"project": p});
        let (r1, r2) = tokio::join!(
            call(&c1, "project_create", args.clone()),
            call(&c2, "project_create", args.clone())
        );
        let results = [r1, r2];
        let conflicts: Vec<String> = results
            .iter()
            .filter(|r| r.is_error == Some(true))
            .map(error_text)
            .filter(|t| t.contains("already exists"))
            .collect();
        assert_eq!(
            conflicts.len(),
            1,
            "exactly one loses on the name: {results:?}"
        );
        assert!(conflicts[0].contains(&p), "{}", conflicts[0]);
        let other = results
            .iter()
            .find(|r| !(r.is_error == Some(true) && error_text(r).contains("already exists")))
            .unwrap();
        let serialized = serde_json::to_string(other).unwrap();
        // .env.local points at localhost; no URL of the real servers leaves codeb.
        let storage = testbed().status["hosts"]["storage"]["address"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            !serialized.contains(&format!("@{storage}")),
            "no server URL leaves codeb: {serialized}"
        );
        {
            let v = structured(other);
            assert_eq!(ports_of(v).len(), 3);
            for e in v["environments"].as_array().unwrap() {
                assert_eq!(
                    e["env_keys"],
                    json!([
                        "DATABASE_URL",
                        "DIRECT_URL",
                        "POSTGRES_PASSWORD",
                        "POSTGRES_USER",
                        "REDIS_PREFIX",
                        "REDIS_URL"
                    ])
                );
                assert!(e["env_version"].as_i64().is_some(), "{e}");
            }
            let report = drop_project_storage(&ctx, &p).await.unwrap();
            assert!(report.is_clean(), "{report}");
            super::common::delete_project(ctx.db.pool().await.unwrap(), &p).await;
            assert_storage_gone(&ctx, &p).await;
        }
    })
    .await;
}

/// 200 projects in a row on a fresh state database get distinct port
/// pairs; the 201st is a clear "range full" error. Also times it.
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_projects_then_range_full() {
    const N: usize = 200;
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("st").await;
    let ctx = Ctx::new(state.config());
    let server =
        HttpServer::start_with(&testbed().config, &[("CODEB_DATABASE__URL", &state.url)]).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let names: Vec<String> = (0..=N).map(|i| format!("t{}-{i}", &run[..8])).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    with_cleanup(&ctx, &state, &refs, async {
        let mut server = server;
        let client = server.client().await;
        let t = Instant::now();
        let mut ports = std::collections::HashSet::new();
        {
            for name in &names[..N] {
                let r = call(&client, "project_create", json!({"project": name})).await;
                ports.extend(ports_of(structured(&r)));
            }
            eprintln!("{N} project_create took {:?}", t.elapsed());
        }
        assert_eq!(ports.len(), 3 * N, "every port pair is distinct");
        assert!(ports.iter().all(|p| p % 2 == 0));

        let r = call(&client, "project_create", json!({"project": names[N]})).await;
        let text = error_text(&r);
        assert!(
            text.contains("no free port pair left in the production range 4100-4499"),
            "{text}"
        );
        assert_storage_gone(&ctx, &names[N]).await;
        drop(client);
        server.kill().await;
    })
    .await;
}
