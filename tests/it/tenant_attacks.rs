//! A hostile tenant against codeb's PostgreSQL work (issue 11, DESIGN §6:
//! nothing codeb runs with more privilege than the project ever executes
//! in a database the project owns or can write to).
//!
//! The tenant acts with its own credentials from inside its deployed
//! container (`demo:tools` has psql). It plants, in `public` of its own
//! database:
//! - a shadow with exact argument types of every operator and function
//!   codeb's SQL has used against that database (`SHADOWS`: the database
//!   identity query, the row counts, the restore prelude);
//! - restored data that runs its code during a restore: a CHECK
//!   constraint and a domain CHECK (evaluated while rows are copied in),
//!   and a materialized view whose refresh inserts into a table with a
//!   column DEFAULT and a trigger — each function tries `RESET ROLE`.
//!
//! Every tenant function is SECURITY INVOKER and calls `codeb_attack`,
//! which tries `RESET ROLE`, `ALTER ROLE <project role> SUPERUSER` and
//! `GRANT pg_execute_server_program`, then logs `session_user`,
//! `current_user`, whether it is superuser and whether an escalation
//! worked into a table the tenant owns. After every codeb operation that
//! touches the database (backup_create, backup_restore with and without
//! `dry_run`, both approvals, project_delete) the test checks that the
//! project role's attributes, memberships and database privileges are
//! unchanged, that the cluster has no new superuser, and that the log
//! shows only the project role. It also checks that the restore really
//! ran the tenant's code (so the check above is not vacuous) and that the
//! tenant cannot connect to `postgres`, `template1` or codeb's state
//! database, let alone create anything there.

use std::sync::Arc;

use codeb::exec::{CmdOutput, Fleet, Remote};
use codeb::model::{Environment, ServerRole, StorageNames};
use codeb::plan::cmd::RemoteCmd;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

use super::app_host::with_cleanup;
use super::common::{
    call, error_text, mint_key_with, structured, testbed, unique_project, FreshStateDb, HttpServer,
    FAULT_LOCK,
};

/// The two tests here take this: one re-opens `postgres` to PUBLIC for a
/// moment, which the other must not see.
static CLUSTER_ACL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The operators and functions codeb's SQL has used inside a project's
/// database — `DATABASE_IDENTITY_SQL` (`oid::text || '|' ||
/// pg_get_userbyid(..)`, `datname = current_database()`), `ROW_COUNT_SQL`
/// (`json_agg`, `json_build_array`, `xpath`, `query_to_xml`, `format`,
/// `count(*)`, `=`, `<>`, `NOT LIKE`, `IN`), the restore prelude
/// (`format`, `current_setting`, `set_config`, `<>`, `NOT LIKE`) and the
/// cluster hardening (`has_database_privilege`) — as (label, SQL creating
/// a shadow of it in `public` with exact argument types). Each shadow logs
/// through `codeb_attack` and then answers like the original (its body
/// runs with `search_path = pg_catalog`, so it calls the original).
const SHADOWS: &[(&str, &str)] = &[
    (
        "operator ||(text, name)",
        "CREATE FUNCTION public.codeb_shadow_cat_name(a text, b name) RETURNS text \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator ||(text, name)'); RETURN a || b::text; END $f$; \
         CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = name, \
         FUNCTION = public.codeb_shadow_cat_name);",
    ),
    (
        "operator ||(text, text)",
        "CREATE FUNCTION public.codeb_shadow_cat_text(a text, b text) RETURNS text \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator ||(text, text)'); RETURN a || b; END $f$; \
         CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, \
         FUNCTION = public.codeb_shadow_cat_text);",
    ),
    (
        "operator =(name, name)",
        "CREATE FUNCTION public.codeb_shadow_eq_name(a name, b name) RETURNS boolean \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator =(name, name)'); RETURN a = b; END $f$; \
         CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, \
         FUNCTION = public.codeb_shadow_eq_name);",
    ),
    (
        "operator =(name, text)",
        "CREATE FUNCTION public.codeb_shadow_eq_name_text(a name, b text) RETURNS boolean \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator =(name, text)'); RETURN a = b; END $f$; \
         CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, \
         FUNCTION = public.codeb_shadow_eq_name_text);",
    ),
    (
        "operator =(oid, oid)",
        "CREATE FUNCTION public.codeb_shadow_eq_oid(a oid, b oid) RETURNS boolean \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator =(oid, oid)'); RETURN a = b; END $f$; \
         CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, \
         FUNCTION = public.codeb_shadow_eq_oid);",
    ),
    (
        "operator =(\"char\", \"char\")",
        "CREATE FUNCTION public.codeb_shadow_eq_char(a \"char\", b \"char\") RETURNS boolean \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator =(\"char\", \"char\")'); RETURN a = b; END $f$; \
         CREATE OPERATOR public.= (LEFTARG = \"char\", RIGHTARG = \"char\", \
         FUNCTION = public.codeb_shadow_eq_char);",
    ),
    (
        "operator <>(name, name)",
        "CREATE FUNCTION public.codeb_shadow_ne_name(a name, b name) RETURNS boolean \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator <>(name, name)'); RETURN a <> b; END $f$; \
         CREATE OPERATOR public.<> (LEFTARG = name, RIGHTARG = name, \
         FUNCTION = public.codeb_shadow_ne_name);",
    ),
    (
        "operator <>(name, text)",
        "CREATE FUNCTION public.codeb_shadow_ne_name_text(a name, b text) RETURNS boolean \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator <>(name, text)'); RETURN a <> b; END $f$; \
         CREATE OPERATOR public.<> (LEFTARG = name, RIGHTARG = text, \
         FUNCTION = public.codeb_shadow_ne_name_text);",
    ),
    (
        "operator !~~(name, text)",
        "CREATE FUNCTION public.codeb_shadow_not_like(a name, b text) RETURNS boolean \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('operator !~~(name, text)'); RETURN a NOT LIKE b; END $f$; \
         CREATE OPERATOR public.!~~ (LEFTARG = name, RIGHTARG = text, \
         FUNCTION = public.codeb_shadow_not_like);",
    ),
    (
        "function pg_get_userbyid(oid)",
        "CREATE FUNCTION public.pg_get_userbyid(o oid) RETURNS name \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function pg_get_userbyid(oid)'); \
         RETURN pg_get_userbyid(o); END $f$;",
    ),
    (
        "function current_database()",
        "CREATE FUNCTION public.current_database() RETURNS name \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function current_database()'); \
         RETURN current_database(); END $f$;",
    ),
    (
        "function format(text, name, name)",
        "CREATE FUNCTION public.format(f text, a name, b name) RETURNS text \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function format(text, name, name)'); \
         RETURN format(f, a, b); END $f$;",
    ),
    (
        "function format(text, name)",
        "CREATE FUNCTION public.format(f text, a name) RETURNS text \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function format(text, name)'); \
         RETURN format(f, a); END $f$;",
    ),
    (
        "function json_build_array(name, name, bigint)",
        "CREATE FUNCTION public.json_build_array(a name, b name, c bigint) RETURNS json \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function json_build_array(name, name, bigint)'); \
         RETURN json_build_array(a, b, c); END $f$;",
    ),
    (
        "function xpath(text, xml)",
        "CREATE FUNCTION public.xpath(p text, x xml) RETURNS xml[] \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function xpath(text, xml)'); \
         RETURN xpath(p, x); END $f$;",
    ),
    (
        "function query_to_xml(text, boolean, boolean, text)",
        "CREATE FUNCTION public.query_to_xml(q text, n boolean, t boolean, ns text) RETURNS xml \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function query_to_xml(text, boolean, boolean, text)'); \
         RETURN query_to_xml(q, n, t, ns); END $f$;",
    ),
    (
        "function current_setting(text)",
        "CREATE FUNCTION public.current_setting(s text) RETURNS text \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function current_setting(text)'); \
         RETURN current_setting(s); END $f$;",
    ),
    (
        "function set_config(text, text, boolean)",
        "CREATE FUNCTION public.set_config(s text, v text, l boolean) RETURNS text \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function set_config(text, text, boolean)'); \
         RETURN set_config(s, v, l); END $f$;",
    ),
    (
        "function has_database_privilege(text, text, text)",
        "CREATE FUNCTION public.has_database_privilege(r text, d text, p text) RETURNS boolean \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('function has_database_privilege(text, text, text)'); \
         RETURN has_database_privilege(r, d, p); END $f$;",
    ),
    (
        "aggregate json_agg(json)",
        "CREATE FUNCTION public.codeb_shadow_json_agg_step(s json[], v json) RETURNS json[] \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('aggregate json_agg(json)'); \
         RETURN array_append(s, v); END $f$; \
         CREATE FUNCTION public.codeb_shadow_json_agg_final(s json[]) RETURNS json \
         LANGUAGE sql SET search_path = pg_catalog AS $f$ SELECT array_to_json(s) $f$; \
         CREATE AGGREGATE public.json_agg(json) (SFUNC = public.codeb_shadow_json_agg_step, \
         STYPE = json[], FINALFUNC = public.codeb_shadow_json_agg_final);",
    ),
    (
        "aggregate count(*)",
        "CREATE FUNCTION public.codeb_shadow_count_step(n bigint) RETURNS bigint \
         LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ BEGIN \
         PERFORM public.codeb_attack('aggregate count(*)'); RETURN n + 1; END $f$; \
         CREATE AGGREGATE public.count(*) (SFUNC = public.codeb_shadow_count_step, \
         STYPE = bigint, INITCOND = '0');",
    ),
];

/// What the restore must have run of the tenant's code (the `via` of its
/// log rows): proof that the tenant's functions did run during it.
const RESTORE_TIME_CODE: &[&str] = &[
    "check constraint",
    "domain check",
    "materialized view",
    "column default",
    "trigger",
];

/// The tenant's logger and the restored data that runs tenant code.
fn attack_setup_sql(role: &str) -> String {
    format!(
        r#"
CREATE TABLE public.codeb_attack_log (
  via text NOT NULL,
  session_role text NOT NULL,
  current_role_name text NOT NULL,
  superuser boolean NOT NULL,
  escalated boolean NOT NULL
);
CREATE FUNCTION public.codeb_attack(via text) RETURNS boolean
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog AS $f$
DECLARE
  escalated boolean := false;
BEGIN
  BEGIN
    EXECUTE 'RESET ROLE';
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  BEGIN
    EXECUTE 'ALTER ROLE "{role}" SUPERUSER CREATEROLE CREATEDB BYPASSRLS';
    escalated := true;
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  BEGIN
    EXECUTE 'GRANT pg_execute_server_program, pg_read_server_files TO "{role}"';
    escalated := true;
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  INSERT INTO public.codeb_attack_log VALUES
    (via, session_user, current_user, current_setting('is_superuser') = 'on', escalated);
  RETURN true;
END
$f$;
CREATE DOMAIN public.guarded_text AS text CHECK (public.codeb_attack('domain check'));
CREATE TABLE public.guarded (
  id int NOT NULL,
  body public.guarded_text,
  CHECK (public.codeb_attack('check constraint'))
);
INSERT INTO public.guarded VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE TABLE public.poke (
  note text,
  hit boolean DEFAULT public.codeb_attack('column default')
);
CREATE FUNCTION public.codeb_attack_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $f$
BEGIN PERFORM public.codeb_attack('trigger'); RETURN NEW; END
$f$;
CREATE TRIGGER poke_attack BEFORE INSERT ON public.poke
  FOR EACH ROW EXECUTE FUNCTION public.codeb_attack_trigger();
CREATE FUNCTION public.codeb_poke() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $f$
BEGIN
  PERFORM public.codeb_attack('materialized view');
  INSERT INTO public.poke (note) VALUES ('refresh');
  RETURN true;
END
$f$;
CREATE MATERIALIZED VIEW public.poked AS SELECT public.codeb_poke() AS ok;
"#
    )
}

/// Runs SQL as the PostgreSQL superuser on the storage server (the
/// test's own administration, never codeb's code path).
async fn as_superuser(storage: &dyn Remote, sql: &str) -> CmdOutput {
    storage
        .run(
            &RemoteCmd::new("runuser")
                .args(["-u", "postgres", "--", "psql", "-X", "-q", "-tA"])
                .args(["-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql"])
                .args(["-d", "postgres", "-f", "-"])
                .stdin(sql.to_string()),
        )
        .await
        .expect("runuser psql on the storage server")
}

/// Re-opens `postgres` and `template1` to PUBLIC, as a stock cluster has
/// them, under the lock codeb's hardening takes.
const REOPEN_SQL: &str = "BEGIN; SELECT pg_catalog.pg_advisory_xact_lock(427070612834); \
    GRANT CONNECT, TEMPORARY ON DATABASE postgres, template1 TO PUBLIC; COMMIT;";
/// What tools/testbed leaves: both closed to PUBLIC.
const CLOSE_SQL: &str = "BEGIN; SELECT pg_catalog.pg_advisory_xact_lock(427070612834); \
    REVOKE ALL ON DATABASE postgres, template1 FROM PUBLIC; COMMIT;";

/// A role's attributes, memberships and privileges on the databases that
/// matter, as one comparable value.
async fn role_snapshot(pool: &sqlx::PgPool, role: &str, own_db: &str) -> Option<Value> {
    // `pool` is on codeb's state database, which is listed too.
    let row: Option<(Value,)> = sqlx::query_as(
        "SELECT json_build_object(
           'attributes', json_build_array(r.rolsuper, r.rolcreaterole, r.rolcreatedb,
                                          r.rolreplication, r.rolbypassrls, r.rolinherit,
                                          r.rolcanlogin),
           'member_of', ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members m
                               WHERE m.member = r.oid ORDER BY 1),
           'databases', ARRAY(SELECT d.datname || ':' ||
                                     has_database_privilege(r.oid, d.oid, 'CONNECT')::text || ',' ||
                                     has_database_privilege(r.oid, d.oid, 'CREATE')::text || ',' ||
                                     has_database_privilege(r.oid, d.oid, 'TEMPORARY')::text
                                FROM pg_database d
                               WHERE d.datname IN ('postgres', 'template1', 'codeb', $2,
                                                   current_database())
                               ORDER BY 1),
           'state_db_grants', (SELECT count(*) FROM information_schema.role_table_grants g
                                WHERE g.grantee = r.rolname))
           FROM pg_roles r WHERE r.rolname = $1",
    )
    .bind(role)
    .bind(own_db)
    .fetch_optional(pool)
    .await
    .expect("read the role");
    row.map(|(v,)| v)
}

async fn superusers(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolsuper ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The tenant's log, read with the tenant's own credentials.
async fn attack_log(url: &str) -> Vec<(String, String, String, bool, bool)> {
    let mut c = PgConnection::connect(url).await.expect("tenant login");
    let rows = sqlx::query_as(
        "SELECT via, session_role, current_role_name, superuser, escalated \
         FROM public.codeb_attack_log",
    )
    .fetch_all(&mut c)
    .await
    .expect("read the attack log");
    let _ = c.close().await;
    rows
}

/// Everything that must hold after each codeb operation.
struct Watch {
    pool: sqlx::PgPool,
    role: String,
    url: String,
    baseline: Value,
    superusers: Vec<String>,
}

impl Watch {
    async fn check(&self, after: &str) -> Vec<(String, String, String, bool, bool)> {
        let now = role_snapshot(&self.pool, &self.role, &self.role)
            .await
            .unwrap_or_else(|| panic!("after {after}: role {} is gone", self.role));
        assert_eq!(
            now, self.baseline,
            "after {after}: the project role's attributes, memberships or privileges changed"
        );
        assert_eq!(
            superusers(&self.pool).await,
            self.superusers,
            "after {after}: the cluster has another superuser"
        );
        let log = attack_log(&self.url).await;
        for (via, session, current, superuser, escalated) in &log {
            assert!(
                session == &self.role && current == &self.role && !superuser && !escalated,
                "after {after}: tenant code ({via}) ran as session user {session}, current \
                 user {current}, superuser {superuser}, escalated {escalated}: {log:?}"
            );
        }
        log
    }
}

fn storage_remote(fleet: &Fleet) -> Arc<dyn Remote> {
    fleet
        .for_role(ServerRole::Storage)
        .expect("storage")
        .1
        .clone()
}

fn app_remote(fleet: &Fleet) -> Arc<dyn Remote> {
    fleet.for_role(ServerRole::App).expect("app").1.clone()
}

/// Runs `script` with busybox sh inside `container`, `stdin` piped in.
async fn in_container(app: &dyn Remote, container: &str, script: &str, stdin: &str) -> CmdOutput {
    app.run(
        &RemoteCmd::new("podman")
            .args(["exec", "-i", container, "/bin/busybox", "sh", "-c", script])
            .stdin(stdin.to_string()),
    )
    .await
    .expect("podman exec runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn codeb_never_runs_tenant_code_with_more_than_the_tenants_privileges() {
    let _guard = FAULT_LOCK.read().await;
    let _acl = CLUSTER_ACL.lock().await;
    // codeb's state in a database of its own (the shared one may carry
    // other branches' migrations).
    let state = FreshStateDb::create("tatk").await;
    let env = [("CODEB_DATABASE__URL", state.url.as_str())];
    let server = HttpServer::start_with(&testbed().config, &env).await;
    let key = || mint_key_with(&testbed().config, &env, "default", "admin");
    let admin1 = server.client_with_key(&key()).await;
    let admin2 = server.client_with_key(&key()).await;
    let config = state.config();
    let fleet = Fleet::from_config(&config);
    let (app, storage) = (app_remote(&fleet), storage_remote(&fleet));
    let p = unique_project("hostile");
    let role = StorageNames::new(&p, Environment::Staging).unwrap().pg;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&format!(
            "{}/{}",
            testbed().database_url().rsplit_once('/').unwrap().0,
            state.name
        ))
        .await
        .expect("connect to the fresh state database");

    let body = async {
        structured(&call(&admin1, "project_create", json!({"project": p})).await);
        let r = call(
            &admin1,
            "deploy",
            json!({"project": p, "environment": "staging",
                   "image": super::lifecycle::image("tools")}),
        )
        .await;
        let slot = structured(&r)["slot"].as_str().unwrap().to_string();
        let container = format!("{p}-staging-{slot}");
        let env = |key: &'static str| {
            let (app, container) = (app.clone(), container.clone());
            async move {
                let out = in_container(&*app, &container, &format!("echo \"${key}\""), "").await;
                assert!(out.success(), "{key}: {}", out.stderr_tail());
                out.stdout_text().trim().to_string()
            }
        };
        let url = env("DATABASE_URL").await;
        let password = env("POSTGRES_PASSWORD").await;
        assert!(url.contains(&format!("/{role}")), "{url}");

        // The tenant plants its logger, its shadows and its data.
        let mut sql = attack_setup_sql(&role);
        for (_, shadow) in SHADOWS {
            sql.push_str(shadow);
            sql.push('\n');
        }
        let out = in_container(
            &*app,
            &container,
            "psql -X -q -v ON_ERROR_STOP=1 \"$DATABASE_URL\" -f -",
            &sql,
        )
        .await;
        assert!(out.success(), "the tenant's setup: {}", out.stderr_tail());
        {
            let mut c = PgConnection::connect(&url).await.unwrap();
            let (ops, procs): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM pg_catalog.pg_operator o
                          JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
                         WHERE n.nspname = 'public'),
                        (SELECT count(*) FROM pg_catalog.pg_proc f
                          JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace
                         WHERE n.nspname = 'public' AND f.proname NOT LIKE 'codeb%')",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            assert_eq!((ops, procs), (9, 12), "every shadow of SHADOWS exists");
            // The setup itself ran the functions as the tenant; start clean.
            c.execute("TRUNCATE public.codeb_attack_log").await.unwrap();
            let _ = c.close().await;
        }
        let watch = Watch {
            pool: pool.clone(),
            role: role.clone(),
            url: url.clone(),
            baseline: role_snapshot(&pool, &role, &role).await.expect("role"),
            superusers: superusers(&pool).await,
        };
        eprintln!("project role before any operation: {}", watch.baseline);
        watch.check("the tenant's setup").await;

        // backup_create: pg_dump in the tenant's database.
        let r = call(
            &admin1,
            "backup_create",
            json!({"project": p, "environment": "staging"}),
        )
        .await;
        let backup_id = structured(&r)["backup_id"].as_str().unwrap().to_string();
        watch.check("backup_create").await;

        // backup_restore with dry_run: the plan reads the database's identity.
        let r = call(
            &admin1,
            "backup_restore",
            json!({"project": p, "backup_id": backup_id, "dry_run": true}),
        )
        .await;
        assert_eq!(structured(&r)["status"], "planned", "{}", structured(&r));
        watch.check("backup_restore dry_run").await;

        // backup_restore: pending, refused to the requester, approved by a second admin.
        let r = call(
            &admin1,
            "backup_restore",
            json!({"project": p, "backup_id": backup_id}),
        )
        .await;
        let pending = structured(&r).clone();
        assert_eq!(pending["status"], "pending_approval", "{pending}");
        let approval = pending["approval_id"].as_str().unwrap().to_string();
        watch.check("backup_restore's request").await;
        let r = call(&admin1, "approve", json!({"approval_id": approval})).await;
        assert!(
            error_text(&r).contains("of a different principal"),
            "{}",
            error_text(&r)
        );
        watch.check("the requester's refused approve").await;
        let r = call(&admin2, "approve", json!({"approval_id": approval})).await;
        let done = structured(&r).clone();
        assert_eq!(done["status"], "executed", "{done}");
        assert!(
            done["outcome"].to_string().contains("guarded"),
            "row counts reported: {done}"
        );
        let log = watch.check("approve (the restore)").await;
        eprintln!("tenant code run by the restore: {log:?}");
        for via in RESTORE_TIME_CODE {
            assert!(
                log.iter().any(|(v, ..)| v == via),
                "the restore ran the tenant's {via} (so it was tested): {log:?}"
            );
        }
        // The restore journal: its password file, written from stdin, gone.
        let deployment = done["outcome"]["deployment_id"]
            .as_str()
            .unwrap()
            .to_string();
        let journal: Vec<String> = sqlx::query_scalar(
            "SELECT step || ' ' || argv::text || ' ' || coalesce(stderr_tail, '')
               FROM deployment_steps WHERE deployment_id = $1::uuid ORDER BY seq",
        )
        .bind(&deployment)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(
            journal.iter().all(|l| !l.contains(&password)),
            "{journal:?}"
        );
        let passfile = journal
            .iter()
            .find(|l| l.starts_with("passfile ") && l.contains("/dev/stdin"))
            .and_then(|l| l.split('"').find(|a| a.starts_with("/run/codeb/pgpass/")))
            .unwrap_or_else(|| panic!("the journal names the password file: {journal:?}"))
            .to_string();
        let out = storage
            .run(&RemoteCmd::new("test").args(["-e", passfile.as_str()]))
            .await
            .unwrap();
        assert_eq!(out.status, Some(1), "{passfile} is removed");

        // The tenant reaches no other database, so it creates nothing there.
        for other in ["postgres", "template1", "codeb", state.name.as_str()] {
            let out = in_container(
                &*app,
                &container,
                &format!(
                    "psql -X -v ON_ERROR_STOP=1 \"${{DATABASE_URL%/*}}/{other}\" \
                     -c 'CREATE TABLE public.codeb_attack_foothold (x int)'"
                ),
                "",
            )
            .await;
            assert!(!out.success(), "the tenant created a table in {other}");
            assert!(
                out.stderr_tail()
                    .contains(&format!("permission denied for database \"{other}\"")),
                "{other}: {}",
                out.stderr_tail()
            );
        }

        // project_delete: pending, approved by the second admin.
        let r = call(&admin1, "project_delete", json!({"project": p})).await;
        let pending = structured(&r).clone();
        assert_eq!(pending["status"], "pending_approval", "{pending}");
        watch.check("project_delete's request").await;
        let approval = pending["approval_id"].as_str().unwrap().to_string();
        let r = call(&admin2, "approve", json!({"approval_id": approval})).await;
        assert_eq!(structured(&r)["status"], "executed", "{}", structured(&r));
        assert_eq!(
            role_snapshot(&pool, &role, &role).await,
            None,
            "project_delete dropped the role"
        );
        assert_eq!(
            superusers(&pool).await,
            watch.superusers,
            "after project_delete: the cluster has another superuser"
        );
    };
    let cleanup = async {
        // Whatever happened: no project role keeps a privilege, then it goes.
        let mut sql = String::new();
        for env in Environment::ALL {
            let r = StorageNames::new(&p, env).unwrap().pg;
            sql.push_str(&format!(
                "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{r}') THEN \
                 ALTER ROLE \"{r}\" NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS; \
                 END IF; END $$;\n"
            ));
        }
        let out = as_superuser(&*storage, &sql).await;
        if !out.success() {
            eprintln!("cleanup of {p}'s roles: {}", out.stderr_tail());
        }
        let ctx = codeb::ops::Ctx::new(config.clone());
        match codeb::ops::storage::drop_project_storage(&ctx, &p).await {
            Ok(r) if r.is_clean() => {}
            other => eprintln!("storage of {p} not fully dropped: {other:?}"),
        }
        for slot in ["blue", "green"] {
            let name = format!("{p}-staging-{slot}");
            let _ = app
                .run(&RemoteCmd::new("podman").args(["rm", "-f", "--time", "0", name.as_str()]))
                .await;
        }
        pool.close().await;
        fleet.close().await;
        drop(server);
        state.drop().await;
    };
    with_cleanup(body, cleanup).await;
}

/// project_create closes `postgres`, `template1` and codeb's state
/// database to every project role, even on a cluster where PUBLIC may
/// connect to them (a stock one), and codeb keeps its own way in.
#[tokio::test(flavor = "multi_thread")]
async fn project_roles_cannot_connect_to_postgres_template1_or_the_state_database() {
    let _guard = FAULT_LOCK.read().await;
    let _acl = CLUSTER_ACL.lock().await;
    let state = FreshStateDb::create("ta").await;
    let config = state.config();
    let fleet = Fleet::from_config(&config);
    let storage = storage_remote(&fleet);
    let ctx = codeb::ops::Ctx::new(config.clone());
    let p = unique_project("tacl");
    let body = async {
        let out = as_superuser(&*storage, REOPEN_SQL).await;
        assert!(out.success(), "re-open: {}", out.stderr_tail());
        let created = codeb::ops::project::create_project(&ctx, &p, "default", "node", "test")
            .await
            .expect("project_create");
        let vars = codeb::ops::env::latest_rendered(&ctx, created.id, &p, Environment::Production)
            .await
            .unwrap()
            .expect("protected env")
            .vars;
        let url = vars["DATABASE_URL"].clone();
        let own = StorageNames::new(&p, Environment::Production).unwrap().pg;
        assert!(url.ends_with(&format!("/{own}")), "{url}");
        let base = url.rsplit_once('/').unwrap().0.to_string();

        // Its own database: in, and it may create there.
        let mut c = PgConnection::connect(&url).await.expect("own database");
        c.execute("CREATE TABLE mine (x int)").await.unwrap();
        let _ = c.close().await;
        // Nowhere else.
        for other in ["postgres", "template1", state.name.as_str()] {
            match PgConnection::connect(&format!("{base}/{other}")).await {
                Ok(mut c) => {
                    let created = c
                        .execute("CREATE TABLE public.codeb_foothold (x int)")
                        .await;
                    panic!("the project role connected to {other} (CREATE: {created:?})");
                }
                Err(e) => assert!(
                    e.to_string()
                        .contains(&format!("permission denied for database \"{other}\"")),
                    "{other}: {e}"
                ),
            }
        }
        // Nor does any other role through PUBLIC, and codeb still gets in.
        let pool = ctx.db.pool().await.unwrap();
        let public: Vec<(String, bool)> = sqlx::query_as(
            "SELECT d.datname::text, has_database_privilege('public', d.datname, 'CONNECT')
                 OR has_database_privilege('public', d.datname, 'TEMPORARY')
                 OR has_database_privilege('public', d.datname, 'CREATE')
               FROM pg_database d WHERE d.datname IN ('postgres', 'template1', $1) ORDER BY 1",
        )
        .bind(&state.name)
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(public.iter().all(|(_, open)| !open), "{public:?}");
        assert_eq!(public.len(), 3, "{public:?}");
        sqlx::query("SELECT 1").execute(pool).await.expect("codeb");
    };
    let cleanup = async {
        let out = as_superuser(&*storage, CLOSE_SQL).await;
        assert!(out.success(), "close again: {}", out.stderr_tail());
        match codeb::ops::storage::drop_project_storage(&ctx, &p).await {
            Ok(r) if r.is_clean() => {}
            other => eprintln!("storage of {p} not fully dropped: {other:?}"),
        }
        if let Ok(pool) = ctx.db.pool().await {
            pool.close().await;
        }
        state.drop().await;
        fleet.close().await;
    };
    with_cleanup(body, cleanup).await;
}
