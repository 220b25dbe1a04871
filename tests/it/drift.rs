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
    call, error_text, structured, testbed, unique_project, HttpServer, FAULT_LOCK,
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
        structured(&call(&client, "deploy", env(json!({"image": image("v1")}))).await);
        structured(&call(&client, "promote", env(json!({}))).await);
        let r = call(&client, "deploy", env(json!({"image": image("v2")}))).await;
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
        structured(&call(&client, "deploy", env(json!({"image": image("v2")}))).await);
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
        structured(&call(&client, "deploy", env(json!({"image": image("v2")}))).await);
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
