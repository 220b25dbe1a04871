//! drift_report end to end on the testbed, through MCP over HTTP: empty
//! after a normal lifecycle; each hand-made change (container removed,
//! container with another image, route rrset edited, DNS record deleted,
//! env file edited) reported exactly once with the right kind, and gone
//! again after the suggested fix; on 50 projects the same fixed number of
//! round trips as on one.
//!
//! The testbed is shared, so reports here are scoped to the test's project
//! (or, for 50 projects, run on a fresh state database and only findings
//! about the test's own projects are counted).

use std::collections::BTreeMap;

use codeb::config::Config;
use codeb::ops::Ctx;
use codeb::plan::cmd::RemoteCmd;
use codeb::plan::dns::{route_rrset_name, srv_patch_body, RrsetChange, SrvTarget};
use codeb::plan::podman::{self, RunSpec};
use rmcp::service::RunningService;
use rmcp::RoleClient;
use serde_json::{json, Value};

use super::app_host::{app_remote, run_ok, with_cleanup};
use super::common::{
    call, error_text, structured, testbed, unique_project, FreshStateDb, HttpServer, FAULT_LOCK,
};
use super::lifecycle::image;

/// SSH commands + PowerDNS calls + database queries of one report.
const ROUND_TRIPS: u64 = 7;
const ROUTE_ZONE: &str = "route.codeb.test";
const BASE_ZONE: &str = "codeb.test";

fn config() -> Config {
    Config::load(&testbed().config).expect("load the testbed config")
}

/// drift_report for `project`: (findings, whole result).
async fn report(client: &RunningService<RoleClient, ()>, project: &str) -> (Vec<Value>, Value) {
    let r = call(client, "drift_report", json!({"project": project})).await;
    let v = structured(&r).clone();
    assert_eq!(v["unobserved"], json!([]), "every observation ran: {v}");
    assert_eq!(v["round_trips"], json!(ROUND_TRIPS), "{v}");
    (v["findings"].as_array().unwrap().clone(), v)
}

/// Asserts the report of `project` holds exactly one finding, of `kind`
/// about `object`.
async fn expect_one(
    client: &RunningService<RoleClient, ()>,
    project: &str,
    kind: &str,
    object: &str,
) -> Value {
    let (findings, v) = report(client, project).await;
    assert_eq!(findings.len(), 1, "exactly one finding: {v}");
    let f = findings[0].clone();
    assert_eq!(f["kind"], json!(kind), "{f}");
    assert_eq!(f["object"], json!(object), "{f}");
    assert_eq!(f["project"], json!(project), "{f}");
    assert!(!f["fix"].as_str().unwrap().is_empty(), "{f}");
    assert!(
        v["summary"].as_str().unwrap().contains(kind),
        "{}",
        v["summary"]
    );
    f
}

async fn expect_clean(client: &RunningService<RoleClient, ()>, project: &str) {
    let (findings, v) = report(client, project).await;
    assert_eq!(findings, Vec::<Value>::new(), "no drift expected: {v}");
    assert!(
        v["summary"].as_str().unwrap().contains("no drift"),
        "{}",
        v["summary"]
    );
}

async fn patch(ctx: &Ctx, zone: &str, body: &Value) {
    codeb::ops::pdns::pdns_client(ctx)
        .await
        .expect("PowerDNS client")
        .patch_rrsets(zone, body)
        .await
        .expect("PATCH rrsets");
}

fn a_rrset(host: &str, change: &str, address: &str) -> Value {
    let mut rrset = json!({"name": format!("{host}."), "type": "A", "changetype": change});
    if change == "REPLACE" {
        rrset["ttl"] = json!(60);
        rrset["records"] = json!([{"content": address, "disabled": false}]);
    }
    json!({"rrsets": [rrset]})
}

#[tokio::test(flavor = "multi_thread")]
async fn each_hand_made_change_is_reported_once() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = server.client().await;
    let p = unique_project("dr");
    let ctx = Ctx::new(config());
    let (fleet, app) = app_remote();
    let custom = format!("www-{p}.{BASE_ZONE}");
    let custom_route = route_rrset_name(&custom, ROUTE_ZONE);
    let app_address = testbed().status["hosts"]["app"]["address"]
        .as_str()
        .unwrap()
        .to_string();

    let body = async {
        // Bad input and unknown projects are tool errors.
        let r = call(&client, "drift_report", json!({"project": "-rf"})).await;
        assert!(error_text(&r).contains("project name"), "{r:?}");
        let r = call(&client, "drift_report", json!({"project": p})).await;
        assert!(error_text(&r).contains("not found"), "{r:?}");

        // A normal lifecycle: create, deploy, promote, deploy, env change.
        structured(&call(&client, "project_create", json!({"project": p})).await);
        let env = |extra: Value| {
            let mut a = json!({"project": p, "environment": "production"});
            a.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            a
        };
        structured(&call(&client, "deploy", env(json!({"image": image("v1"), "override_reason": "test: no staging in this test"}))).await);
        structured(&call(&client, "promote", env(json!({}))).await);
        let r = call(
            &client,
            "deploy",
            env(json!({"image": image("v2"), "override_reason": "test: no staging in this test"})),
        )
        .await;
        let green = structured(&r).clone();
        assert_eq!(green["slot"], json!("green"), "{green}");
        structured(
            &call(
                &client,
                "env_set",
                env(json!({"set": {"DRIFT_FLAG": "one"}})),
            )
            .await,
        );
        structured(&call(&client, "env_sync", env(json!({}))).await);
        expect_clean(&client, &p).await;

        let green_name = format!("{p}-production-green");
        let green_port = green["port"].as_u64().unwrap() as u16;
        let blue_port = green_port - 1;

        // 1. A container removed by hand.
        run_ok(&*app, &podman::rm_force(&green_name).unwrap()).await;
        expect_one(&client, &p, "container_missing", &green_name).await;
        structured(&call(&client, "deploy", env(json!({"image": image("v2"), "override_reason": "test: no staging in this test"}))).await);
        expect_clean(&client, &p).await;

        // 2. Another image started under the slot's name, with codeb labels.
        let deployment = structured(&call(&client, "slot_status", json!({"project": p})).await)
            ["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["environment"] == "production" && s["slot"] == "green")
            .map(|s| s["container"]["name"].clone())
            .unwrap();
        assert_eq!(deployment, json!(green_name));
        let recorded_id: String = sqlx::query_scalar(
            "SELECT s.deployment_id::text FROM slots s JOIN projects p ON p.id = s.project_id
              WHERE p.name = $1 AND p.deleted_at IS NULL AND s.environment = 'production' AND s.slot = 'green'",
        )
        .bind(&p)
        .fetch_one(ctx.db.pool().await.unwrap())
        .await
        .unwrap();
        run_ok(&*app, &podman::rm_force(&green_name).unwrap()).await;
        let labels: BTreeMap<String, String> = [
            (podman::LABEL_PROJECT, p.clone()),
            (podman::LABEL_ENVIRONMENT, "production".to_string()),
            (podman::LABEL_SLOT, "green".to_string()),
            (podman::LABEL_DEPLOYMENT, recorded_id),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let spec = RunSpec {
            name: green_name.clone(),
            image: image("v1"),
            labels,
            network: podman::NETWORK.to_string(),
            host_port: green_port,
            container_port: 3000,
            memory: "64m".into(),
            cpus: "0.5".into(),
            env_file: None,
            env_secrets: Vec::new(),
        };
        run_ok(&*app, &podman::run(&spec).unwrap()).await;
        let f = expect_one(&client, &p, "container_image", &green_name).await;
        assert!(f["found"].as_str().unwrap().contains("demo:v1"), "{f}");
        structured(&call(&client, "deploy", env(json!({"image": image("v2"), "override_reason": "test: no staging in this test"}))).await);
        expect_clean(&client, &p).await;

        // 3. A route rrset edited through the PowerDNS API.
        let route = route_rrset_name(&format!("{p}.{BASE_ZONE}"), ROUTE_ZONE);
        let target = &ctx.config.routing.route_target;
        let edited = srv_patch_body(
            &[RrsetChange::Replace {
                name: route.clone(),
                targets: vec![SrvTarget {
                    priority: 0,
                    port: green_port,
                }],
            }],
            target,
        );
        patch(&ctx, ROUTE_ZONE, &edited).await;
        expect_one(&client, &p, "route_mismatch", &route).await;
        let restored = srv_patch_body(
            &[RrsetChange::Replace {
                name: route.clone(),
                targets: vec![
                    SrvTarget {
                        priority: 0,
                        port: blue_port,
                    },
                    SrvTarget {
                        priority: 10,
                        port: green_port,
                    },
                ],
            }],
            target,
        );
        patch(&ctx, ROUTE_ZONE, &restored).await;
        expect_clean(&client, &p).await;

        // 4. A custom domain (row, A record and route made by hand, as
        //    domain_setup would), then its A record deleted.
        patch(&ctx, BASE_ZONE, &a_rrset(&custom, "REPLACE", &app_address)).await;
        let mut route_body = restored.clone();
        route_body["rrsets"][0]["name"] = json!(custom_route);
        patch(&ctx, ROUTE_ZONE, &route_body).await;
        sqlx::query(
            "INSERT INTO domains (hostname, project_id, environment, kind, dns_state, route_state)
             SELECT $1, id, 'production', 'custom', 'ok', 'ok' FROM projects WHERE name = $2 AND deleted_at IS NULL",
        )
        .bind(&custom)
        .bind(&p)
        .execute(ctx.db.pool().await.unwrap())
        .await
        .unwrap();
        expect_clean(&client, &p).await;
        patch(&ctx, BASE_ZONE, &a_rrset(&custom, "DELETE", "")).await;
        let f = expect_one(&client, &p, "dns_missing", &format!("{custom}.")).await;
        assert!(
            f["expected"].as_str().unwrap().contains(&app_address),
            "{f}"
        );
        patch(&ctx, BASE_ZONE, &a_rrset(&custom, "REPLACE", &app_address)).await;
        expect_clean(&client, &p).await;

        // 5. The env file edited on the app server; env_sync is the fix.
        let path = format!("/opt/codeb/env/{p}/.env.production");
        run_ok(
            &*app,
            &RemoteCmd::new("tee")
                .args(["-a", "--"])
                .arg(path.clone())
                .stdin(b"EDITED_BY_HAND=1\n".to_vec()),
        )
        .await;
        let f = expect_one(&client, &p, "env_file_edited", &path).await;
        assert!(f["fix"].as_str().unwrap().contains("env_sync"), "{f}");
        assert!(!f.to_string().contains("one"), "no values in findings: {f}");
        structured(&call(&client, "env_sync", env(json!({}))).await);
        expect_clean(&client, &p).await;
    };
    let cleanup = async {
        let _ = sqlx::query("DELETE FROM domains WHERE hostname = $1")
            .bind(&custom)
            .execute(ctx.db.pool().await.unwrap())
            .await;
        if let Ok(client) = codeb::ops::pdns::pdns_client(&ctx).await {
            let _ = client
                .patch_rrsets(BASE_ZONE, &a_rrset(&custom, "DELETE", ""))
                .await;
            let _ = client
                .patch_rrsets(
                    ROUTE_ZONE,
                    &srv_patch_body(
                        &[RrsetChange::Delete {
                            name: custom_route.clone(),
                        }],
                        "x.",
                    ),
                )
                .await;
        }
    };
    with_cleanup(body, cleanup).await;
    fleet.close().await;
    ctx.fleet.close().await;
}

/// The findings of a whole-fleet report that concern `projects`.
fn findings_about(v: &Value, projects: &[String]) -> Vec<Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["project"]
                .as_str()
                .is_some_and(|p| projects.iter().any(|q| q == p))
        })
        .cloned()
        .collect()
}

/// An even port pair near the top of the production range that no
/// container on the app server publishes (the fresh database would hand
/// out 4100, which the shared testbed's projects use).
async fn free_production_pair(app: &dyn codeb::exec::Remote) -> u16 {
    let out = run_ok(app, &podman::ps(None).unwrap()).await;
    let used: Vec<u16> = podman::parse_ps(&out.stdout_text())
        .unwrap()
        .into_iter()
        .flat_map(|c| c.host_ports)
        .collect();
    (4300..4498)
        .rev()
        .step_by(2)
        .map(|p| p & !1)
        .find(|p| !used.contains(p) && !used.contains(&(p + 1)))
        .expect("a free production port pair")
}

/// 50 projects on a fresh state database, one deployed: drift_report over
/// all of them takes the same number of round trips as over one.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_projects_take_the_same_round_trips_as_one() {
    const N: usize = 50;
    let _guard = FAULT_LOCK.read().await;
    let state = FreshStateDb::create("dr").await;
    let server =
        HttpServer::start_with(&testbed().config, &[("CODEB_DATABASE__URL", &state.url)]).await;
    let mut cfg = config();
    cfg.database.url = state.url.clone();
    let ctx = Ctx::new(cfg);
    let (fleet, app) = app_remote();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let names: Vec<String> = (0..N).map(|i| format!("dr{}-{i}", &run[..8])).collect();
    let first = names[0].clone();
    let body = async {
        let client = server.client().await;
        let pool = ctx.db.pool().await.unwrap();
        // Projects are registered directly: project_create would also
        // provision 50 databases and Redis users, which drift does not look at.
        codeb::state::projects::project_insert(pool, &first, "default", "node")
            .await
            .unwrap();
        let pair = free_production_pair(&*app).await;
        sqlx::query(
            "UPDATE project_environments SET base_port = $1
              WHERE environment = 'production' AND project_id = (SELECT id FROM projects WHERE name = $2)",
        )
        .bind(i32::from(pair))
        .bind(&first)
        .execute(pool)
        .await
        .unwrap();
        let r = call(
            &client,
            "deploy",
            json!({"project": first, "environment": "production", "image": image("v1"), "override_reason": "test: no staging in this test"}),
        )
        .await;
        assert_eq!(structured(&r)["port"], json!(pair), "{r:?}");

        let one = structured(&call(&client, "drift_report", json!({})).await).clone();
        assert_eq!(one["projects"], json!(1), "{one}");
        assert_eq!(one["unobserved"], json!([]), "{one}");
        assert_eq!(findings_about(&one, &names), Vec::<Value>::new(), "{one}");

        for name in &names[1..] {
            codeb::state::projects::project_insert(pool, name, "default", "node")
                .await
                .unwrap();
        }
        let fifty = structured(&call(&client, "drift_report", json!({})).await).clone();
        assert_eq!(fifty["projects"], json!(N), "{}", fifty["summary"]);
        assert_eq!(fifty["unobserved"], json!([]), "{}", fifty["summary"]);
        assert_eq!(
            findings_about(&fifty, &names),
            Vec::<Value>::new(),
            "{fifty}"
        );
        assert_eq!(fifty["round_trips"], one["round_trips"]);
        assert_eq!(fifty["ssh_commands"], one["ssh_commands"]);
        assert_eq!(fifty["pdns_calls"], one["pdns_calls"]);
        // An owner's report without `project` reads one more thing: the
        // names other teams' projects own (they are not its orphans).
        assert_eq!(fifty["round_trips"], json!(ROUND_TRIPS + 1));
        eprintln!(
            "drift_report: 1 project {} ms, {N} projects {} ms, {} round trips",
            one["duration_ms"], fifty["duration_ms"], fifty["round_trips"]
        );
    };
    let cleanup = async {
        let container = format!("{first}-production-blue");
        let _ = app.run(&podman::rm_force(&container).unwrap()).await;
        if let Ok(client) = codeb::ops::pdns::pdns_client(&ctx).await {
            let preview = format!("{first}-production-blue.preview.codeb.test");
            let _ = client
                .patch_rrsets(
                    ROUTE_ZONE,
                    &srv_patch_body(
                        &[RrsetChange::Delete {
                            name: route_rrset_name(&preview, ROUTE_ZONE),
                        }],
                        "x.",
                    ),
                )
                .await;
        }
        if let Ok(pool) = ctx.db.pool().await {
            pool.close().await;
        }
        state.drop().await;
    };
    with_cleanup(body, cleanup).await;
    drop(server);
    fleet.close().await;
    ctx.fleet.close().await;
}
