//! project_delete on the testbed, through the operations layer (the MCP
//! tool and its confirmation live elsewhere): a project with a running,
//! promoted staging slot, a managed domain, an env value that travels as a
//! podman secret, Redis keys and a backup is planned and deleted with the
//! plan's hash. Afterwards nothing of it is left on the servers, its
//! ports and name are free, and its history and backup remain. Refusals
//! change nothing: a busy environment, a wrong hash, a stale plan. A
//! deletion that fails midway says what it removed, leaves the project
//! registered, and a new plan finishes the job.
//!
//! codeb's state lives in a fresh database (`FreshStateDb`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use codeb::exec::Remote;
use codeb::model::{Environment, ServerRole, StorageNames};
use codeb::ops::lifecycle::{self, Caller, OpError, Outcome, Progress};
use codeb::ops::pdns::pdns_client;
use codeb::ops::project_delete::{project_delete, project_delete_plan, ProjectDeleteOutcome};
use codeb::ops::Ctx;
use codeb::plan::cmd::RemoteCmd;
use codeb::plan::dns::route_rrset_name;
use codeb::plan::envvars::EnvChange;
use codeb::plan::podman;
use codeb::plan::storage::{parse_redis_replies, redis_cli_session, redis_quote, RedisReply};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_util::sync::CancellationToken;

use super::app_host::with_cleanup;
use super::common::{unique_project, FreshStateDb, FAULT_LOCK};
use super::lifecycle::image;

fn sink() -> UnboundedSender<Progress> {
    unbounded_channel().0
}

fn remote(ctx: &Ctx, role: ServerRole) -> Arc<dyn Remote> {
    ctx.fleet.for_role(role).expect("server").1.clone()
}

/// Runs `argv` on a server and returns (exit status, stdout).
async fn sh(ctx: &Ctx, role: ServerRole, cmd: RemoteCmd) -> (Option<i32>, String) {
    let out = remote(ctx, role).run(&cmd).await.expect("run");
    (out.status, out.stdout_text())
}

fn test_e(path: &str) -> RemoteCmd {
    RemoteCmd::new("test").args(["-e", path])
}

/// Redis commands as the admin; the replies after AUTH's.
async fn redis(ctx: &Ctx, lines: &[String]) -> Vec<RedisReply> {
    let pw = ctx
        .config
        .redis_admin_password()
        .unwrap()
        .expect("admin pw");
    let cmd = redis_cli_session(ctx.config.storage.redis_port, Some(&pw), lines);
    let out = remote(ctx, ServerRole::Storage).run(&cmd).await.unwrap();
    assert!(out.success(), "{}", out.stderr_tail());
    let mut r = parse_redis_replies(&out.stdout_text());
    assert!(r.remove(0).is_ok());
    r
}

/// The names of the project's containers on the app server.
async fn containers(ctx: &Ctx, p: &str) -> Vec<String> {
    let (status, out) = sh(ctx, ServerRole::App, podman::ps(Some(p)).unwrap()).await;
    assert_eq!(status, Some(0));
    podman::parse_ps(&out)
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

async fn secrets(ctx: &Ctx, p: &str) -> Vec<String> {
    let (_, out) = sh(ctx, ServerRole::App, podman::secret_names()).await;
    out.lines()
        .filter(|l| l.starts_with(&format!("{p}-")))
        .map(str::to_string)
        .collect()
}

async fn pg_objects(ctx: &Ctx, name: &str) -> (bool, bool) {
    sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
                EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
    )
    .bind(name)
    .fetch_one(ctx.db.pool().await.unwrap())
    .await
    .unwrap()
}

fn refused(r: Result<ProjectDeleteOutcome, OpError>) -> String {
    match r {
        Err(OpError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Every host name of the plan.
fn plan_hosts(details: &Value) -> Vec<(String, String)> {
    details["environments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["hostnames"].as_array().unwrap().clone())
        .map(|h| {
            (
                h["hostname"].as_str().unwrap().to_string(),
                h["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn project_delete_removes_everything_once_confirmed_and_finishes_after_a_failure() {
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("pd").await;
    let ctx = Ctx::new(state.config());
    let caller = Caller::local_owner();
    let p = unique_project("pd");
    let domain = format!("{p}.example.test");
    let staging = StorageNames::new(&p, Environment::Staging).unwrap();
    let preview = StorageNames::new(&p, Environment::Preview).unwrap();
    let keep_key = format!("{p}-keep:k");
    let body = async {
        let t = Instant::now();
        // Containers of projects in the shared state database use the low
        // port pairs of the same app server: this database's staging pair
        // is taken from higher up (filler rows below it).
        let fillers = 100 + i32::from(uuid::Uuid::new_v4().as_bytes()[0]) % 150;
        sqlx::raw_sql(&format!(
            "WITH f AS (INSERT INTO projects (name, team_id)
                        SELECT 'filler-' || g, 'default' FROM generate_series(1, {fillers}) g
                        RETURNING id, name)
             INSERT INTO project_environments (project_id, environment, base_port)
             SELECT id, 'staging', 4500 + 2 * (substr(name, 8)::int - 1) FROM f"
        ))
        .execute(ctx.db.pool().await.unwrap())
        .await
        .unwrap();
        let created = codeb::ops::project::create_project(&ctx, &p, "default", "node", "test")
            .await
            .expect("project_create");
        // A value with a line break reaches the container as a podman secret.
        let change = EnvChange {
            set: BTreeMap::from([("CERT".to_string(), "line one\nline two".to_string())]),
            unset: Vec::new(),
        };
        codeb::ops::env::set(
            &ctx,
            &p,
            Environment::Staging,
            &change,
            false,
            false,
            &caller,
        )
        .await
        .expect("env_set");
        let deployed = match lifecycle::deploy(
            &ctx,
            &p,
            Environment::Staging,
            &image("v1"),
            None,
            None,
            false,
            &caller,
            sink(),
            CancellationToken::new(),
        )
        .await
        .expect("deploy")
        {
            Outcome::Done(d) => d,
            Outcome::Planned(_) => panic!("not a dry run"),
        };
        // The slot runs the deploy's digest (`REPOSITORY@DIGEST`).
        let pinned = format!(
            "{}@{}",
            image("v1").rsplit_once(':').unwrap().0,
            deployed.digest.as_deref().expect("the deploy's digest")
        );
        match lifecycle::promote(
            &ctx,
            &p,
            Environment::Staging,
            false,
            &caller,
            sink(),
            CancellationToken::new(),
        )
        .await
        .expect("promote")
        {
            Outcome::Done(_) => {}
            Outcome::Planned(_) => panic!("not a dry run"),
        }
        let setup = codeb::ops::domains::domain_setup(
            &ctx,
            &p,
            Environment::Staging,
            &domain,
            false,
            false,
            &caller,
            sink(),
            CancellationToken::new(),
        )
        .await
        .expect("domain_setup");
        assert_eq!(setup.route_state, "ok");
        let backup = match codeb::ops::backup::backup_create(
            &ctx,
            &p,
            Environment::Production,
            false,
            &caller,
            sink(),
        )
        .await
        .expect("backup_create")
        {
            codeb::ops::backup::BackupOutcome::Done(d) => d,
            other => panic!("{other:?}"),
        };
        let keys: Vec<String> = (0..5).map(|i| format!("{p}:staging:k{i}")).collect();
        let mut lines: Vec<String> = keys
            .iter()
            .map(|k| format!("SET {} v", redis_quote(k)))
            .collect();
        lines.push(format!("SET {} v", redis_quote(&keep_key)));
        redis(&ctx, &lines).await;
        assert_eq!(
            containers(&ctx, &p).await,
            vec![format!("{p}-staging-blue")]
        );
        assert_eq!(
            secrets(&ctx, &p).await,
            vec![format!("{p}-staging-blue-env-CERT")]
        );
        for (role, dir) in [
            (ServerRole::App, format!("/opt/codeb/env/{p}")),
            (ServerRole::Backup, format!("/opt/codeb/env-backup/{p}")),
        ] {
            assert_eq!(
                sh(&ctx, role, test_e(&dir)).await.0,
                Some(0),
                "{dir} exists"
            );
        }
        eprintln!("set up in {} ms", t.elapsed().as_millis());

        // The plan: what exists now, per environment.
        let plan = project_delete_plan(&ctx, &p).await.expect("plan");
        assert_eq!(plan.tool, "project_delete");
        assert_eq!(plan.details["backups_kept"], 1);
        let envs = plan.details["environments"].as_array().unwrap();
        assert_eq!(
            envs.iter()
                .map(|e| e["environment"].clone())
                .collect::<Vec<_>>(),
            vec![json!("production"), json!("staging"), json!("preview")]
        );
        let st = &envs[1];
        let port = created.environments[1].base_port;
        assert_eq!(st["ports"], json!([port, port + 1]));
        assert_eq!(st["slots"][0]["state"], "active");
        assert_eq!(st["slots"][0]["image"], json!(pinned));
        assert_eq!(st["slots"][1]["state"], "empty");
        assert_eq!(st["env_version"], 2);
        assert_eq!(st["storage"]["database"], json!(staging.pg));
        assert_eq!(st["storage"]["redis_prefix"], json!(staging.redis_prefix));
        let hosts = plan_hosts(&plan.details);
        for (h, kind) in [
            (format!("{p}.codeb.test"), "env"),
            (format!("{p}-staging.codeb.test"), "env"),
            (format!("{p}-staging-blue.preview.codeb.test"), "preview"),
            (domain.clone(), "managed"),
        ] {
            assert!(
                hosts.contains(&(h.clone(), kind.to_string())),
                "{h} {kind} in {hosts:?}"
            );
        }
        assert!(!plan.details.to_string().contains("line two"));
        assert_eq!(
            project_delete_plan(&ctx, &p).await.unwrap().hash(),
            plan.hash()
        );

        // Busy: another operation runs on preview; the locks taken are released.
        let pool = ctx.db.pool().await.unwrap();
        let other = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO deployments (id, project_id, environment, operation, principal, lease_owner, lease_expires_at)
             VALUES ($1, $2, 'preview', 'env_sync', 'test', 'elsewhere', now() + interval '1 hour')",
        )
        .bind(other)
        .bind(created.id)
        .execute(pool)
        .await
        .unwrap();
        match project_delete(&ctx, &p, &plan.hash(), &caller, sink()).await {
            Err(OpError::Busy {
                running_id,
                environment,
                ..
            }) => {
                assert_eq!(running_id, other);
                assert_eq!(environment, Environment::Preview);
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deployments WHERE status = 'running'")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(running, 1, "only the other operation still runs");
        sqlx::query("DELETE FROM deployments WHERE id = $1")
            .bind(other)
            .execute(pool)
            .await
            .unwrap();

        // A wrong hash, then a stale one (env_set after the plan): refused,
        // nothing changed.
        let e = refused(project_delete(&ctx, &p, &"0".repeat(64), &caller, sink()).await);
        assert!(
            e.contains("no longer matches") && e.contains("Nothing was"),
            "{e}"
        );
        let change = EnvChange {
            set: BTreeMap::from([("FLAG".to_string(), "on".to_string())]),
            unset: Vec::new(),
        };
        codeb::ops::env::set(
            &ctx,
            &p,
            Environment::Staging,
            &change,
            false,
            false,
            &caller,
        )
        .await
        .unwrap();
        let e = refused(project_delete(&ctx, &p, &plan.hash(), &caller, sink()).await);
        assert!(e.contains("no longer matches"), "{e}");
        assert_eq!(
            containers(&ctx, &p).await,
            vec![format!("{p}-staging-blue")]
        );
        assert!(codeb::state::projects::project_by_name(pool, &p)
            .await
            .unwrap()
            .is_some());
        assert_eq!(pg_objects(&ctx, &staging.pg).await, (true, true));

        // A failure midway: the preview role cannot be dropped while it holds
        // a privilege in another database.
        sqlx::raw_sql(&format!(
            "CREATE TABLE pd_dependency (x INT); GRANT SELECT ON pd_dependency TO \"{}\"",
            preview.pg
        ))
        .execute(pool)
        .await
        .unwrap();
        let plan = project_delete_plan(&ctx, &p).await.unwrap();
        assert_eq!(plan.details["environments"][1]["env_version"], 3);
        let e = match project_delete(&ctx, &p, &plan.hash(), &caller, sink()).await {
            Err(e @ OpError::Failed { .. }) => e.to_string(),
            other => panic!("expected a failure, got {other:?}"),
        };
        eprintln!("{e}");
        assert!(e.contains("failed at storage"), "{e}");
        // (The role's name equals the protected POSTGRES_USER value, which
        // codeb registers for redaction, so the message may scrub it.)
        assert!(
            e.contains("cannot be dropped because some objects depend on it"),
            "{e}"
        );
        assert!(e.contains(&format!("containers {p}-staging-blue")), "{e}");
        assert!(e.contains(&format!("address records {domain} A")), "{e}");
        assert!(
            e.contains("Not done or not finished: storage, redis keys, records"),
            "{e}"
        );
        assert!(e.contains("still registered"), "{e}");
        assert!(codeb::state::projects::project_by_name(pool, &p)
            .await
            .unwrap()
            .is_some());
        assert!(containers(&ctx, &p).await.is_empty());
        sqlx::raw_sql("DROP TABLE pd_dependency")
            .execute(pool)
            .await
            .unwrap();

        // A new plan finishes the job.
        let plan = project_delete_plan(&ctx, &p).await.unwrap();
        let (tx, mut rx) = unbounded_channel();
        let t = Instant::now();
        let out = project_delete(&ctx, &p, &plan.hash(), &caller, tx)
            .await
            .expect("project_delete");
        eprintln!("deleted in {} ms: {}", t.elapsed().as_millis(), out.summary);
        let mut phases = std::collections::BTreeSet::new();
        while let Ok(m) = rx.try_recv() {
            phases.insert(m.phase);
        }
        assert_eq!(phases, (1..=9).collect());
        assert!(
            out.containers_removed.is_empty(),
            "removed by the first attempt"
        );
        assert!(out.hostnames_unrouted.contains(&domain));
        assert_eq!(out.databases_dropped.len(), 3);
        assert_eq!(out.roles_dropped.len(), 3);
        assert_eq!(
            out.redis_users_deleted,
            vec![
                format!("{p}-production"),
                format!("{p}-staging"),
                format!("{p}-preview")
            ]
        );
        assert_eq!(out.redis_keys_deleted, 5);
        assert_eq!(out.env_versions_deleted, 5, "1 + 3 + 1");
        assert_eq!(out.ports_freed.len(), 6);
        assert_eq!(out.backups_kept, 1);
        assert_eq!(out.deployment_ids.len(), 3);

        // Nothing is left on the servers ...
        assert!(containers(&ctx, &p).await.is_empty());
        assert!(secrets(&ctx, &p).await.is_empty());
        let pdns = pdns_client(&ctx).await.unwrap();
        let zone = &ctx.config.routing.route_zone;
        for (h, _) in plan_hosts(&plan.details) {
            assert_eq!(
                pdns.srv_rrset(zone, &route_rrset_name(&h, zone))
                    .await
                    .unwrap(),
                None,
                "{h}"
            );
        }
        assert_eq!(
            pdns.rrset_contents("example.test", &domain, "A")
                .await
                .unwrap(),
            None
        );
        for env in Environment::ALL {
            let n = StorageNames::new(&p, env).unwrap();
            assert_eq!(pg_objects(&ctx, &n.pg).await, (false, false), "{}", n.pg);
            let r = redis(&ctx, &[format!("ACL GETUSER {}", n.redis_user)]).await;
            assert_eq!(r[0], RedisReply::Value(Value::Null), "{}", n.redis_user);
        }
        let mut lines: Vec<String> = keys
            .iter()
            .map(|k| format!("EXISTS {}", redis_quote(k)))
            .collect();
        lines.push(format!("EXISTS {}", redis_quote(&keep_key)));
        let r = redis(&ctx, &lines).await;
        assert_eq!(r[..5], vec![RedisReply::Value(json!(0)); 5][..]);
        assert_eq!(
            r[5],
            RedisReply::Value(json!(1)),
            "another prefix's key stays"
        );
        for (role, dir) in [
            (ServerRole::App, format!("/opt/codeb/env/{p}")),
            (ServerRole::Backup, format!("/opt/codeb/env-backup/{p}")),
        ] {
            assert_eq!(
                sh(&ctx, role, test_e(&dir)).await.0,
                Some(1),
                "{dir} is gone"
            );
        }
        assert_eq!(
            sh(&ctx, ServerRole::Backup, test_e(&backup.path)).await.0,
            Some(0),
            "the dump is kept"
        );

        // ... the project is gone from the list, its history stays ...
        assert!(codeb::state::projects::project_by_name(pool, &p)
            .await
            .unwrap()
            .is_none());
        let listed = codeb::state::projects::projects_page(pool, None, None, 1000)
            .await
            .unwrap();
        assert!(listed.iter().all(|r| r.name != p));
        let history: Vec<(String, String)> = sqlx::query_as(
            "SELECT operation, status FROM deployments WHERE project_id = $1 ORDER BY created_at",
        )
        .bind(created.id)
        .fetch_all(pool)
        .await
        .unwrap();
        for op in ["deploy", "promote", "domain_setup"] {
            assert!(
                history.contains(&(op.to_string(), "succeeded".to_string())),
                "{op} in {history:?}"
            );
        }
        let deleted = history
            .iter()
            .filter(|(o, s)| o == "project_delete" && s == "succeeded")
            .count();
        assert_eq!(deleted, 3);
        let backups: i64 = sqlx::query_scalar("SELECT count(*) FROM backups WHERE project_id = $1")
            .bind(created.id)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(backups, 1);

        // ... and its name (and ports) can be used again.
        let again = codeb::ops::project::create_project(&ctx, &p, "default", "node", "test")
            .await
            .expect("the name is free again");
        assert_ne!(again.id, created.id);
        assert_eq!(
            again.environments[1].base_port, port,
            "the lowest free pair is its old one"
        );
        let plan = project_delete_plan(&ctx, &p).await.unwrap();
        assert_eq!(
            plan.details["backups_kept"], 0,
            "the old project's backups are not its"
        );
        let out = project_delete(&ctx, &p, &plan.hash(), &caller, sink())
            .await
            .expect("delete again");
        assert_eq!(out.redis_keys_deleted, 0);
        assert!(codeb::state::projects::project_by_name(pool, &p)
            .await
            .unwrap()
            .is_none());
    };
    let cleanup = async {
        let pool = ctx.db.pool().await.ok();
        if let Some(pool) = pool {
            let _ = sqlx::raw_sql("DROP TABLE IF EXISTS pd_dependency")
                .execute(pool)
                .await;
        }
        let app = remote(&ctx, ServerRole::App);
        for env in Environment::ALL {
            for slot in ["blue", "green"] {
                if let Ok(cmd) = podman::rm_force(&format!("{p}-{env}-{slot}")) {
                    let _ = app.run(&cmd).await;
                }
            }
        }
        for (role, dir) in [
            (ServerRole::App, format!("/opt/codeb/env/{p}")),
            (ServerRole::Backup, format!("/opt/codeb/env-backup/{p}")),
            (ServerRole::Backup, format!("/opt/codeb/backups/{p}")),
        ] {
            let _ = remote(&ctx, role)
                .run(&RemoteCmd::new("rm").args(["-rf", "--", dir.as_str()]))
                .await;
        }
        if let Ok(c) = pdns_client(&ctx).await {
            let _ = c
                .patch_rrsets(
                    "example.test",
                    &codeb::plan::dns::address_restore_body(&domain, None, None),
                )
                .await;
        }
        if let Ok(c) = pdns_client(&ctx).await {
            let zone = ctx.config.routing.route_zone.clone();
            let mut hosts = vec![domain.clone()];
            for env in Environment::ALL {
                hosts.extend(codeb::plan::dns::env_hostnames(
                    &p,
                    env,
                    &ctx.config.routing.base_domain,
                ));
                for slot in codeb::model::SlotName::ALL {
                    hosts.push(codeb::plan::dns::preview_hostname(
                        &p,
                        env,
                        slot,
                        &ctx.config.routing.preview_domain,
                    ));
                }
            }
            let changes: Vec<_> = hosts
                .iter()
                .map(|h| codeb::plan::dns::RrsetChange::Delete {
                    name: route_rrset_name(h, &zone),
                })
                .collect();
            let body = codeb::plan::dns::srv_patch_body(&changes, &ctx.config.routing.route_target);
            let _ = c.patch_rrsets(&zone, &body).await;
        }
        let _ = redis(&ctx, &[format!("DEL {}", redis_quote(&keep_key))]).await;
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
