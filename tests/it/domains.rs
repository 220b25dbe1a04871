//! Domains end to end on the testbed, through MCP over HTTP (issue [4]
//! parts 1, 2 and 4): domain_setup answers over DNS and routes through
//! Caddy, promote/rollback move the domain, PowerDNS stopped leaves nothing
//! half-made, invalid domains change nothing, domain_list, the on-demand
//! TLS `ask` endpoint, and health_check per project environment.
//!
//! `example.test` is a managed zone here (`CODEB_DNS__MANAGED_ZONES`):
//! codeb creates it in PowerDNS on first use.

use std::time::{Duration, Instant};

use codeb::config::Config;
use codeb::ops::pdns::pdns_client;
use codeb::ops::Ctx;
use codeb::plan::dns::route_rrset_name;
use rmcp::service::RunningService;
use rmcp::RoleClient;
use serde_json::{json, Value};

use super::app_host::with_cleanup;
use super::common::{
    call, db, error_text, structured, testbed, testbed_cmd, unique_project, HttpServer, FAULT_LOCK,
};
use super::lifecycle::{expect_served, image, through_caddy};

const MANAGED: (&str, &str) = ("CODEB_DNS__MANAGED_ZONES", "[\"example.test\"]");

type Client = RunningService<RoleClient, ()>;

fn app_address() -> String {
    testbed().status["hosts"]["app"]["address"]
        .as_str()
        .expect("app address")
        .to_string()
}

/// `dig @<app host> +short A name`, as the acceptance line says.
pub(super) async fn dig_a(name: &str) -> Vec<String> {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", app_address()))
        .args(["A", name, "+short", "+norecurse", "+time=2", "+tries=2"])
        .output()
        .await
        .expect("run dig");
    assert!(out.status.success(), "dig failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn env_args(p: &str) -> Value {
    json!({"project": p, "environment": "production"})
}

async fn deploy_and_promote(client: &Client, p: &str, tag: &str) {
    let r = call(
        client,
        "deploy",
        json!({"project": p, "environment": "production", "image": image(tag), "override_reason": "test: no staging in this test"}),
    )
    .await;
    structured(&r);
    let r = call(client, "promote", env_args(p)).await;
    structured(&r);
}

/// Removes a test domain everywhere: its row, A/AAAA and SRV rrsets.
pub(super) async fn forget_domain(domain: &str) {
    let pool = db().await;
    let _ = sqlx::query("DELETE FROM domains WHERE hostname = $1")
        .bind(domain)
        .execute(&pool)
        .await;
    let ctx = Ctx::new(Config::load(&testbed().config).unwrap());
    if let Ok(c) = pdns_client(&ctx).await {
        let name = route_rrset_name(domain, &ctx.config.routing.route_zone);
        let _ = c
            .patch_rrsets(
                &ctx.config.routing.route_zone,
                &json!({"rrsets": [{"name": name, "type": "SRV", "changetype": "DELETE"}]}),
            )
            .await;
        let _ = c
            .patch_rrsets(
                "example.test",
                &codeb::plan::dns::address_restore_body(domain, None, None),
            )
            .await;
    }
}

/// Removes a test project's containers and rows.
async fn remove_project(p: &str) {
    let (fleet, app) = super::app_host::app_remote();
    for slot in ["blue", "green"] {
        if let Ok(cmd) = codeb::plan::podman::rm_force(&format!("{p}-production-{slot}")) {
            let _ = app.run(&cmd).await;
        }
    }
    fleet.close().await;
    super::common::delete_project(&db().await, p).await;
}

/// What PowerDNS holds for `domain`: (A contents, SRV route present).
pub(super) async fn pdns_state(domain: &str) -> (Option<Vec<String>>, bool) {
    let ctx = Ctx::new(Config::load(&testbed().config).unwrap());
    let c = pdns_client(&ctx).await.expect("PowerDNS client");
    let a = match c.zones().await.unwrap().contains(&"example.test.".into()) {
        true => c.rrset_contents("example.test", domain, "A").await.unwrap(),
        false => None,
    };
    let srv = c
        .srv_rrset(
            &ctx.config.routing.route_zone,
            &route_rrset_name(domain, &ctx.config.routing.route_zone),
        )
        .await
        .unwrap()
        .is_some();
    (a, srv)
}

async fn list_domains(client: &Client, p: &str) -> Vec<Value> {
    let r = call(client, "domain_list", json!({"project": p})).await;
    structured(&r)["domains"].as_array().unwrap().clone()
}

pub(super) async fn ask(server: &HttpServer, domain: Option<&str>) -> u16 {
    let base = server.url.trim_end_matches("/mcp");
    let url = match domain {
        Some(d) => format!("{base}/tls/ask?domain={d}"),
        None => format!("{base}/tls/ask"),
    };
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .expect("ask endpoint answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn domain_setup_answers_dns_routes_and_moves_with_promote_and_rollback() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start_with(&testbed().config, &[MANAGED]).await;
    let client = server.client().await;
    let p = unique_project("dom");
    let other = unique_project("dom2");
    let domain = "shop.example.test";
    // A row left by an earlier run (its project gone) must not block this one.
    forget_domain(domain).await;
    with_cleanup(
        async {
            structured(&call(&client, "project_create", json!({"project": p})).await);
            structured(&call(&client, "project_create", json!({"project": other})).await);
            deploy_and_promote(&client, &p, "v1").await;

            // Dry run: a plan, nothing changed.
            let r = call(
                &client,
                "domain_setup",
                json!({"project": p, "environment": "production", "domain": domain, "dry_run": true}),
            )
            .await;
            let v = structured(&r);
            assert_eq!(v["dry_run"], json!(true), "{v}");
            assert!(v["steps"].as_array().unwrap().len() >= 4, "{v}");
            assert!(list_domains(&client, &p).await.is_empty());

            let started = Instant::now();
            let r = call(
                &client,
                "domain_setup",
                json!({"project": p, "environment": "production", "domain": "Shop.Example.Test."}),
            )
            .await;
            let v = structured(&r).clone();
            eprintln!("domain_setup took {:?}: {}", started.elapsed(), v["summary"]);
            assert_eq!(v["domain"], json!(domain), "normalised: {v}");
            assert_eq!(v["dns_answer"], json!([app_address()]), "{v}");
            assert_eq!(v["route_state"], json!("ok"), "{v}");
            let port = v["route"]["port"].as_u64().unwrap();

            // dig at the authoritative server answers the app server.
            assert_eq!(dig_a(domain).await, vec![app_address()]);
            // Through Caddy the active slot answers.
            let (status, body, upstream) = through_caddy(domain).await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("demo v1"), "{body}");
            assert_eq!(upstream, port.to_string());

            // The journal has every step.
            let id = v["deployment_id"].as_str().unwrap();
            let r = call(&client, "deployment_get", json!({"id": id})).await;
            let steps: Vec<String> = structured(&r)["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["step"].as_str().unwrap().to_string())
                .collect();
            for want in ["zone", "address", "dns_verify", "route", "verify"] {
                assert!(steps.iter().any(|s| s == want), "{want} in {steps:?}");
            }

            // Idempotent; another project cannot take it.
            let r = call(
                &client,
                "domain_setup",
                json!({"project": p, "environment": "production", "domain": domain}),
            )
            .await;
            assert!(
                structured(&r)["summary"].as_str().unwrap().contains("already"),
                "{r:?}"
            );
            let r = call(
                &client,
                "domain_setup",
                json!({"project": other, "environment": "production", "domain": domain}),
            )
            .await;
            let text = error_text(&r);
            assert!(text.contains("already belongs to") && text.contains(&p), "{text}");

            // domain_list.
            let listed = list_domains(&client, &p).await;
            assert_eq!(listed.len(), 1, "{listed:?}");
            assert_eq!(listed[0]["dns_state"], json!("ok"));
            assert_eq!(listed[0]["route_state"], json!("ok"));
            assert_eq!(listed[0]["route"]["port"], json!(port));

            // The TLS ask endpoint answers from the route table.
            assert_eq!(ask(&server, Some(domain)).await, 200);
            assert_eq!(ask(&server, Some(&format!("{p}.codeb.test"))).await, 200);
            assert_eq!(
                ask(&server, Some(&format!("{p}-production-blue.preview.codeb.test"))).await,
                200,
                "preview host of a non-empty slot"
            );
            assert_eq!(
                ask(&server, Some(&format!("{p}-production-green.preview.codeb.test"))).await,
                404,
                "preview host of an empty slot"
            );
            assert_eq!(ask(&server, Some("nobody.example.test")).await, 404);
            assert_eq!(ask(&server, Some("-bad..name")).await, 404);
            assert_eq!(ask(&server, None).await, 400);

            // promote v2 → the domain serves v2; rollback → v1.
            deploy_and_promote(&client, &p, "v2").await;
            expect_served(domain, "demo v2").await;
            let r = call(
                &client,
                "rollback",
                json!({"project": p, "environment": "production", "reason": "domain test"}),
            )
            .await;
            structured(&r);
            expect_served(domain, "demo v1").await;
            let (_, _, upstream) = through_caddy(domain).await;
            assert_eq!(upstream, port.to_string(), "back on the first slot");

            // health_check: the environment's active and deployed slots and
            // its route through Caddy (or, past the cap, a say-so).
            let started = Instant::now();
            let r = call(&client, "health_check", json!({})).await;
            let v = structured(&r);
            eprintln!("health_check took {:?}: {}", started.elapsed(), v["summary"]);
            let envs = v["environments"].as_array().unwrap();
            match envs.iter().find(|e| e["project"] == json!(p)) {
                Some(e) => {
                    assert_eq!(e["route_ok"], json!(true), "{e}");
                    let states: Vec<&str> = e["slots"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s["state"].as_str().unwrap())
                        .collect();
                    assert_eq!(states, ["active", "deployed"], "{e}");
                    assert!(e["slots"].as_array().unwrap().iter().all(|s| s["healthy"] == json!(true)), "{e}");
                }
                None => {
                    assert!(v["environments_skipped"].as_u64().unwrap() > 0, "{v}");
                    assert!(v["summary"].as_str().unwrap().contains("not checked"), "{v}");
                }
            }
        },
        async {
            forget_domain(domain).await;
            remove_project(&p).await;
            remove_project(&other).await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn domain_without_active_slot_waits_for_the_first_promote() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start_with(&testbed().config, &[MANAGED]).await;
    let client = server.client().await;
    let p = unique_project("domp");
    let domain = format!("{p}.example.test");
    with_cleanup(
        async {
            structured(&call(&client, "project_create", json!({"project": p})).await);
            let r = call(
                &client,
                "domain_setup",
                json!({"project": p, "environment": "production", "domain": domain}),
            )
            .await;
            let v = structured(&r);
            assert_eq!(v["dns_state"], json!("ok"), "{v}");
            assert_eq!(v["route_state"], json!("pending"), "{v}");
            assert!(v["summary"].as_str().unwrap().contains("pending"), "{v}");
            assert_eq!(dig_a(&domain).await, vec![app_address()]);
            assert!(!pdns_state(&domain).await.1, "no route yet");
            deploy_and_promote(&client, &p, "v1").await;
            expect_served(&domain, "demo v1").await;
            let listed = list_domains(&client, &p).await;
            assert_eq!(listed[0]["route_state"], json!("ok"), "{listed:?}");
        },
        async {
            forget_domain(&domain).await;
            remove_project(&p).await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_domains_are_refused_and_change_nothing() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start_with(&testbed().config, &[MANAGED]).await;
    let client = server.client().await;
    let p = unique_project("domi");
    let long = format!("{}.example.test", "a".repeat(287));
    assert_eq!(long.len(), 300);
    with_cleanup(
        async {
            structured(&call(&client, "project_create", json!({"project": p})).await);
            for bad in [
                "",
                "shop..example.test",
                ".example.test",
                long.as_str(),
                "-shop.example.test",
                &format!("-{p}.example.test"),
                &format!("{p}..example.test"),
                "shop-.example.test",
                "bücher.example.test",
                "*.example.test",
                "shop.*.example.test",
                "shop example.test",
                "shop.example.test\n",
                "localhost",
                "10.77.0.11",
                "x.route.codeb.test",
                &format!("{p}.codeb.test"),
            ] {
                let r = call(
                    &client,
                    "domain_setup",
                    json!({"project": p, "environment": "production", "domain": bad}),
                )
                .await;
                let text = error_text(&r);
                assert!(!text.is_empty() && text.len() < 600, "{bad:?}: {text}");
                if bad.contains('ü') {
                    assert!(text.contains("punycode"), "{text}");
                }
            }
            assert!(list_domains(&client, &p).await.is_empty());
            let r = call(&client, "deployment_list", json!({"project": p})).await;
            let ops: Vec<&str> = structured(&r)["deployments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["operation"].as_str().unwrap())
                .collect();
            assert!(!ops.contains(&"domain_setup"), "no operation ran: {ops:?}");
            assert_eq!(
                pdns_state(&format!("{p}.example.test")).await,
                (None, false),
                "no record, no route"
            );
        },
        async { remove_project(&p).await },
    )
    .await;
}

/// Starts PowerDNS again when dropped, also when the test panics.
struct StartPdnsOnDrop;

impl Drop for StartPdnsOnDrop {
    fn drop(&mut self) {
        testbed_cmd(&["start", "app", "pdns"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn powerdns_down_fails_cleanly_and_existing_domains_keep_serving() {
    let p = unique_project("domf");
    let keep = format!("keep-{p}.example.test");
    let fresh = format!("new-{p}.example.test");
    let server = HttpServer::start_with(&testbed().config, &[MANAGED]).await;
    let client = server.client().await;
    with_cleanup(
        async {
            let read = FAULT_LOCK.read().await;
            structured(&call(&client, "project_create", json!({"project": p})).await);
            deploy_and_promote(&client, &p, "v1").await;
            let r = call(
                &client,
                "domain_setup",
                json!({"project": p, "environment": "production", "domain": keep}),
            )
            .await;
            structured(&r);
            expect_served(&keep, "demo v1").await;
            drop(read);

            let guard = FAULT_LOCK.write().await;
            testbed_cmd(&["stop", "app", "pdns"]);
            let pdns = StartPdnsOnDrop;
            let started = Instant::now();
            let r = call(
                &client,
                "domain_setup",
                json!({"project": p, "environment": "production", "domain": fresh}),
            )
            .await;
            let took = started.elapsed();
            let text = error_text(&r);
            eprintln!("domain_setup with PowerDNS stopped failed after {took:?}: {text}");
            assert!(text.contains("PowerDNS"), "{text}");
            assert!(
                text.contains("domain record removed"),
                "says what was reverted: {text}"
            );
            assert!(
                text.contains("domain_setup again"),
                "says what to do: {text}"
            );
            assert!(took < Duration::from_secs(30), "{took:?}");
            // Caddy keeps its last SRV answers meanwhile (grace_period).
            for _ in 0..3 {
                let (status, body, _) = through_caddy(&keep).await;
                assert_eq!(status, 200, "{body}");
                assert!(body.contains("demo v1"), "{body}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            drop(pdns);
            drop(guard);

            // Nothing half-made: no record, no route, no row.
            let (a, srv) = pdns_state(&fresh).await;
            assert_eq!(a, None, "no A record left");
            assert!(!srv, "no route left");
            let names: Vec<String> = list_domains(&client, &p)
                .await
                .iter()
                .map(|d| d["domain"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(names, vec![keep.clone()]);
            // With PowerDNS back the same call succeeds.
            let r = call(
                &client,
                "domain_setup",
                json!({"project": p, "environment": "production", "domain": fresh}),
            )
            .await;
            assert_eq!(structured(&r)["route_state"], json!("ok"));
        },
        async {
            forget_domain(&keep).await;
            forget_domain(&fresh).await;
            remove_project(&p).await;
        },
    )
    .await;
}

/// Two setups of domains in a managed zone that does not exist yet, at the
/// same moment: one creates the zone, the other finds it created (PowerDNS
/// answers it 409) and goes on; both domains answer.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_setups_share_a_new_managed_zone() {
    let _guard = FAULT_LOCK.read().await;
    let zone = format!(
        "race-{}.test",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let managed = format!("[\"{zone}\"]");
    let server = HttpServer::start_with(
        &testbed().config,
        &[("CODEB_DNS__MANAGED_ZONES", managed.as_str())],
    )
    .await;
    let client = server.client().await;
    let pool = db().await;
    let (p1, p2) = (unique_project("zra"), unique_project("zrb"));
    super::common::insert_project(&pool, &p1).await;
    super::common::insert_project(&pool, &p2).await;
    let (d1, d2) = (format!("a.{zone}"), format!("b.{zone}"));
    let (r1, r2) = tokio::join!(
        call(
            &client,
            "domain_setup",
            json!({"project": p1, "environment": "staging", "domain": d1}),
        ),
        call(
            &client,
            "domain_setup",
            json!({"project": p2, "environment": "staging", "domain": d2}),
        ),
    );
    let (r1, r2) = (structured(&r1).clone(), structured(&r2).clone());
    let created = [&r1, &r2]
        .iter()
        .filter(|r| r["zone_created"] == json!(true))
        .count();
    assert!(created <= 1, "at most one created the zone: {r1} {r2}");
    assert_eq!(dig_a(&d1).await, vec![app_address()]);
    assert_eq!(dig_a(&d2).await, vec![app_address()]);
    // Clean up: rows, then the zone with its records.
    for d in [&d1, &d2] {
        let _ = sqlx::query("DELETE FROM domains WHERE hostname = $1")
            .bind(d)
            .execute(&pool)
            .await;
    }
    super::common::delete_project(&pool, &p1).await;
    super::common::delete_project(&pool, &p2).await;
    let ctx = Ctx::new(Config::load(&testbed().config).unwrap());
    let c = pdns_client(&ctx).await.unwrap();
    for d in [&d1, &d2] {
        let name = route_rrset_name(d, &ctx.config.routing.route_zone);
        let _ = c
            .patch_rrsets(
                &ctx.config.routing.route_zone,
                &json!({"rrsets": [{"name": name, "type": "SRV", "changetype": "DELETE"}]}),
            )
            .await;
    }
    c.delete_zone(&zone).await.unwrap();
}
