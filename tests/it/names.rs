//! One owner per name (issue 11, findings 2 and 3; DESIGN §2 "Domains",
//! §6 "Names have owners").
//!
//! Finding 2: `{project}-{env}.{base}` let project `shop`'s staging host and
//! project `shop-staging`'s production host be one name. A property test
//! proves that no two valid (project, environment) pairs — nor two
//! (project, environment, slot) preview triples — share a host name or a
//! route rrset name, also when `preview_domain == base_domain`; on the
//! testbed `project_create` refuses the colliding names with a message that
//! says why.
//!
//! Finding 3: `domain_setup` replaced records codeb never made, in any zone,
//! for any team. On the testbed, as a hostile team would try it: a record
//! made outside codeb survives another team's `domain_setup` (and `/tls/ask`
//! does not approve it) until an owner takes it over explicitly (recorded);
//! names codeb generates, another team's domain and another team's zone are
//! refused.

use std::time::{Duration, Instant};

use codeb::config::Config;
use codeb::model::{validate_project_name, Environment, SlotName};
use codeb::ops::pdns::pdns_client;
use codeb::ops::Ctx;
use codeb::plan::dns::{route_rrset_name, zone_for};
use codeb::plan::names::{check_project_name, is_at_or_under, project_hosts, HostNaming};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::app_host::with_cleanup;
use super::common::{
    call, db, delete_teams, error_text, insert_project_of, mint_key, structured, testbed,
    unique_project, unique_team, HttpServer, FAULT_LOCK,
};
use super::domains::{ask, dig_a, forget_domain};

// ------------------------------------------------------------ property --

/// Cases per property.
const CASES: u32 = 2000;

/// A naming like the testbed's, with preview hosts under `preview`.
fn naming(base: &str, preview: &str) -> HostNaming {
    HostNaming {
        base_domain: base.into(),
        preview_domain: preview.into(),
        route_zone: format!("route.{base}"),
        reserved: vec![
            (format!("ns1.{base}"), "a name server".into()),
            (format!("app.route.{base}"), "the SRV target".into()),
            (format!("route.{base}"), "the route zone".into()),
            (preview.into(), "the preview domain".into()),
            (base.into(), "the base domain".into()),
        ],
        managed_zones: vec!["example.test".into()],
    }
}

/// The namings the property covers: preview hosts in their own zone, in
/// the base domain itself, above and below it.
fn namings() -> Vec<HostNaming> {
    vec![
        naming("codeb.test", "preview.codeb.test"),
        naming("codeb.test", "codeb.test"),
        naming("apps.example.net", "example.net"),
        naming("example.net", "pv.apps.example.net"),
    ]
}

/// Who a generated name belongs to: (project, environment, slot).
type Owner = (String, Environment, Option<SlotName>);

/// Every generated host name and route rrset name of `projects`, with its
/// owner; the first name that two owners share, if any.
fn first_shared_name(projects: &[String], n: &HostNaming) -> Option<(String, Owner, Owner)> {
    let mut seen: std::collections::HashMap<String, Owner> = std::collections::HashMap::new();
    for p in projects {
        for h in project_hosts(p, n) {
            let owner = (p.clone(), h.environment, h.slot);
            for name in [h.host.clone(), route_rrset_name(&h.host, &n.route_zone)] {
                if let Some(other) = seen.insert(name.clone(), owner.clone()) {
                    if other != owner {
                        return Some((name, other, owner));
                    }
                }
            }
        }
    }
    None
}

/// Names built the way collisions are: a stem, the stem with environment
/// and slot names (and random words) appended, and unrelated names.
fn related_names() -> impl Strategy<Value = Vec<String>> {
    let word = prop_oneof![
        Just("production".to_string()),
        Just("staging".to_string()),
        Just("preview".to_string()),
        Just("blue".to_string()),
        Just("green".to_string()),
        "[a-z0-9]{1,8}",
    ];
    (
        "[a-z][a-z0-9-]{1,12}[a-z0-9]",
        prop::collection::vec(prop::collection::vec(word, 0..3), 1..6),
        prop::collection::vec("[a-z][a-z0-9-]{1,30}[a-z0-9]", 0..3),
    )
        .prop_map(|(stem, suffixes, others)| {
            let mut names: Vec<String> = suffixes
                .into_iter()
                .map(|words| {
                    std::iter::once(stem.clone())
                        .chain(words)
                        .collect::<Vec<_>>()
                        .join("-")
                })
                .chain(others)
                .collect();
            names.sort();
            names.dedup();
            names
        })
}

/// What a new project name must pass: the grammar and the name rule.
fn allowed(p: &str, n: &HostNaming) -> bool {
    validate_project_name(p).is_ok() && check_project_name(p, n).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// No two distinct (project, environment[, slot]) owners of valid
    /// project names share a host name or a route rrset name, and no
    /// generated host is or holds a name codeb keeps for itself — for
    /// every naming, including preview_domain == base_domain.
    #[test]
    fn generated_names_of_valid_projects_never_collide(names in related_names()) {
        for n in namings() {
            let valid: Vec<String> = names.iter().filter(|p| allowed(p, &n)).cloned().collect();
            prop_assert_eq!(first_shared_name(&valid, &n), None, "{:?} in {:?}", valid, n);
            for p in &valid {
                for h in project_hosts(p, &n) {
                    for (name, _) in n.reserved.iter() {
                        prop_assert!(!is_at_or_under(name, &h.host), "{} holds {}", h.host, name);
                    }
                }
            }
        }
    }
}

/// The property's check finds the collisions of the old rule (any name
/// the grammar allows): it is able to fail.
#[test]
fn the_collision_check_finds_the_old_rules_collisions() {
    let ok = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let separate = naming("codeb.test", "preview.codeb.test");
    let (name, a, b) = first_shared_name(&ok(&["shop", "shop-staging"]), &separate).unwrap();
    assert_eq!(name, "shop-staging.codeb.test");
    assert_eq!(a, ("shop".into(), Environment::Staging, None));
    assert_eq!(b, ("shop-staging".into(), Environment::Production, None));
    let same = naming("codeb.test", "codeb.test");
    let (name, _, _) = first_shared_name(&ok(&["shop", "shop-staging-blue"]), &same).unwrap();
    assert_eq!(name, "shop-staging-blue.codeb.test");
    for p in ["shop-staging", "shop-staging-blue", "shop-production"] {
        assert!(validate_project_name(p).is_ok(), "{p} is in the grammar");
        assert!(check_project_name(p, &same).is_err(), "{p} is refused");
    }
}

// ------------------------------------------------------ project_create --

/// project_create (and its dry run) refuses names ending in a reserved
/// suffix whether or not the project they collide with exists, names whose
/// host is one codeb keeps, and names that would share a host with a
/// project made before the rule (which keeps working).
#[tokio::test(flavor = "multi_thread")]
async fn project_create_refuses_names_whose_hosts_another_owner_has() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = server.client().await;
    let pool = db().await;
    let stem = unique_project("nm");
    let legacy = format!("{}-preview", unique_project("old"));
    let legacy_stem = legacy.trim_end_matches("-preview").to_string();
    let body = async {
        for dry_run in [true, false] {
            let r = call(
                &client,
                "project_create",
                json!({"project": format!("{stem}-staging"), "dry_run": dry_run}),
            )
            .await;
            let text = error_text(&r);
            assert_eq!(
                text,
                format!(
                    "project name `{stem}-staging` ends in `-staging`, which is reserved for the staging host of project `{stem}` ({stem}-staging.codeb.test); choose another name (no project name may end in `-production`, `-staging`, `-preview`, `-blue`, `-green`)"
                ),
                "dry_run {dry_run}"
            );
        }
        for (name, want) in [
            (
                format!("{stem}-blue"),
                "reserved for preview host names of slot blue",
            ),
            (format!("{stem}-production"), "ends in `-production`"),
            (
                "ns1".to_string(),
                "would give the production host ns1.codeb.test, which is a name server",
            ),
            ("route".to_string(), "which is the route zone"),
            ("preview".to_string(), "which is the preview domain"),
        ] {
            let r = call(
                &client,
                "project_create",
                json!({"project": name, "dry_run": true}),
            )
            .await;
            let text = error_text(&r);
            assert!(text.contains(want), "{name}: {text}");
            assert!(text.contains("choose another name"), "{name}: {text}");
        }
        // A project made before the rule (inserted as an old codeb did):
        // the name whose preview host is its production host is refused.
        insert_project_of(&pool, &legacy, "default").await;
        let r = call(
            &client,
            "project_create",
            json!({"project": legacy_stem, "dry_run": true}),
        )
        .await;
        let text = error_text(&r);
        assert!(
            text.contains(&format!("would give the preview host {legacy}.codeb.test, which is already a host name of an existing project")),
            "{text}"
        );
        // The old project itself keeps working.
        let r = call(&client, "slot_status", json!({"project": legacy})).await;
        structured(&r);
        let r = call(&client, "drift_report", json!({"project": legacy})).await;
        structured(&r);
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projects WHERE name = ANY($1) AND deleted_at IS NULL",
        )
        .bind(vec![format!("{stem}-staging"), legacy_stem.clone()])
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 0, "nothing was created");
    };
    let cleanup = async {
        for p in [
            format!("{stem}-staging"),
            legacy.clone(),
            legacy_stem.clone(),
        ] {
            super::common::delete_project(&pool, &p).await;
        }
    };
    with_cleanup(body, cleanup).await;
}

// -------------------------------------------------------- domain_setup --

const MANAGED: (&str, &str) = ("CODEB_DNS__MANAGED_ZONES", "[\"example.test\"]");
/// An address no codeb sets (TEST-NET-1).
const OUTSIDE: &str = "192.0.2.77";

fn ctx() -> Ctx {
    Ctx::new(Config::load(&testbed().config).unwrap())
}

fn app_address() -> String {
    testbed().status["hosts"]["app"]["address"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Puts `rtype content` at `name` in its PowerDNS zone, as someone outside
/// codeb would.
async fn put_outside_record(name: &str, rtype: &str, content: &str) {
    let ctx = ctx();
    let c = pdns_client(&ctx).await.unwrap();
    let zones = c.zones().await.unwrap();
    let zone = zone_for(name, zones.iter().map(String::as_str)).expect("a zone holds it");
    c.patch_rrsets(
        &zone,
        &json!({"rrsets": [{"name": format!("{name}."), "type": rtype, "ttl": 60, "changetype": "REPLACE",
            "records": [{"content": content, "disabled": false}]}]}),
    )
    .await
    .unwrap();
}

/// The enabled contents of `name`'s `rtype` rrset.
async fn records(name: &str, rtype: &str) -> Option<Vec<String>> {
    let ctx = ctx();
    let c = pdns_client(&ctx).await.unwrap();
    let zones = c.zones().await.unwrap();
    let zone = zone_for(name, zones.iter().map(String::as_str))?;
    c.rrset_contents(&zone, name, rtype).await.unwrap()
}

async fn domain_row(name: &str) -> Option<(String, Option<Value>)> {
    sqlx::query_as(
        "SELECT p.name, d.takeover FROM domains d JOIN projects p ON p.id = d.project_id WHERE d.hostname = $1",
    )
    .bind(name)
    .fetch_optional(&db().await)
    .await
    .unwrap()
}

fn setup_args(project: &str, domain: &str) -> Value {
    json!({"project": project, "environment": "staging", "domain": domain})
}

/// A record made outside codeb survives another team's domain_setup (and
/// `/tls/ask` does not approve it); a member or admin passing `takeover`
/// is refused; an owner's takeover replaces it and is recorded in the
/// domain row, the journal, the result and the audit log.
#[tokio::test(flavor = "multi_thread")]
async fn records_made_outside_codeb_are_replaced_only_by_an_owners_takeover() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start_with(&testbed().config, &[MANAGED]).await;
    let pool = db().await;
    let team = unique_team("tko");
    let member = server.client_with_key(&mint_key(&team, "member")).await;
    let admin = server.client_with_key(&mint_key(&team, "admin")).await;
    let owner = server.client_with_key(&mint_key(&team, "owner")).await;
    let p = unique_project("tko");
    let domain = format!("{p}.example.test");
    let cname = format!("cn-{p}.example.test");
    let body = async {
        insert_project_of(&pool, &p, &team).await;
        put_outside_record(&domain, "A", OUTSIDE).await;
        put_outside_record(&cname, "CNAME", "elsewhere.example.net.").await;

        // Without takeover: refused, whoever asks; nothing changes.
        for (who, client) in [("member", &member), ("owner", &owner)] {
            let r = call(client, "domain_setup", setup_args(&p, &domain)).await;
            let text = error_text(&r);
            assert!(
                text.contains("already has records codeb did not make (A 192.0.2.77)")
                    && text.contains("takeover: true"),
                "{who}: {text}"
            );
        }
        let r = call(&member, "domain_setup", setup_args(&p, &cname)).await;
        let text = error_text(&r);
        assert!(text.contains("CNAME elsewhere.example.net."), "{text}");
        assert_eq!(records(&domain, "A").await, Some(vec![OUTSIDE.to_string()]));
        assert_eq!(dig_a(&domain).await, vec![OUTSIDE.to_string()]);
        assert_eq!(domain_row(&domain).await, None);
        assert_eq!(
            ask(&server, Some(&domain)).await,
            404,
            "no certificate for it"
        );

        // takeover needs the owner role.
        for (who, client) in [("member", &member), ("admin", &admin)] {
            let mut args = setup_args(&p, &domain);
            args["takeover"] = json!(true);
            let r = call(client, "domain_setup", args).await;
            let text = error_text(&r);
            assert!(text.contains("needs the owner role"), "{who}: {text}");
        }
        assert_eq!(records(&domain, "A").await, Some(vec![OUTSIDE.to_string()]));

        // An owner's dry run shows the takeover and changes nothing.
        let mut args = setup_args(&p, &domain);
        args["takeover"] = json!(true);
        args["dry_run"] = json!(true);
        let v = structured(&call(&owner, "domain_setup", args).await).clone();
        assert!(
            v["steps"]
                .to_string()
                .contains("take over (owner, recorded): replace A 192.0.2.77"),
            "{v}"
        );
        assert_eq!(records(&domain, "A").await, Some(vec![OUTSIDE.to_string()]));

        // The owner's takeover: replaced, recorded.
        let mut args = setup_args(&p, &domain);
        args["takeover"] = json!(true);
        let v = structured(&call(&owner, "domain_setup", args).await).clone();
        assert!(
            v["summary"]
                .as_str()
                .unwrap()
                .contains("took over (recorded): replaced A 192.0.2.77"),
            "{v}"
        );
        assert!(v["steps"].to_string().contains("took over"), "{v}");
        assert_eq!(dig_a(&domain).await, vec![app_address()]);
        let (project, takeover) = domain_row(&domain).await.expect("a domain row");
        assert_eq!(project, p);
        let takeover = takeover.expect("the takeover is recorded");
        assert_eq!(takeover["replaced"], json!(["A 192.0.2.77"]), "{takeover}");
        assert!(takeover["by"].is_string(), "{takeover}");
        let id = v["deployment_id"].as_str().unwrap();
        let steps = structured(&call(&owner, "deployment_get", json!({"id": id})).await).clone();
        assert!(
            steps["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["step"] == "takeover"),
            "{steps}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM audit_log WHERE tool = 'domain_setup'
                    AND arguments->>'domain' = $1 AND arguments->>'takeover' = 'true'",
            )
            .bind(&domain)
            .fetch_one(&pool)
            .await
            .unwrap();
            if n >= 1 {
                break;
            }
            assert!(Instant::now() < deadline, "no audit row with takeover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A CNAME is taken over the same way (it is deleted with the PATCH
        // that sets the address records).
        let mut args = setup_args(&p, &cname);
        args["takeover"] = json!(true);
        let v = structured(&call(&owner, "domain_setup", args).await).clone();
        assert!(
            v["summary"]
                .as_str()
                .unwrap()
                .contains("replaced CNAME elsewhere.example.net."),
            "{v}"
        );
        assert_eq!(records(&cname, "CNAME").await, None);
        assert_eq!(dig_a(&cname).await, vec![app_address()]);
        // Now codeb's: setting it up again needs no takeover.
        let r = call(&member, "domain_setup", setup_args(&p, &domain)).await;
        assert!(
            structured(&r)["summary"]
                .as_str()
                .unwrap()
                .contains("already"),
            "{r:?}"
        );
    };
    let cleanup = async {
        forget_domain(&domain).await;
        forget_domain(&cname).await;
        let ctx = ctx();
        if let Ok(c) = pdns_client(&ctx).await {
            let _ = c
                .patch_rrsets(
                    "example.test",
                    &json!({"rrsets": [{"name": format!("{cname}."), "type": "CNAME", "changetype": "DELETE"}]}),
                )
                .await;
        }
        delete_teams(&pool, &[&team]).await;
    };
    with_cleanup(body, cleanup).await;
}

/// Names codeb generates itself or keeps for itself are not domains.
#[tokio::test(flavor = "multi_thread")]
async fn names_under_the_base_preview_and_route_zones_are_refused() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start_with(&testbed().config, &[MANAGED]).await;
    let client = server.client().await;
    let pool = db().await;
    let p = unique_project("nmres");
    let body = async {
        super::common::insert_project(&pool, &p).await;
        for (domain, want) in [
            (
                format!("x-{p}.codeb.test"),
                "is in base_domain codeb.test: codeb generates the names there",
            ),
            ("codeb.test".to_string(), "is in base_domain codeb.test"),
            ("ns1.codeb.test".to_string(), "is in base_domain codeb.test"),
            (format!("{p}.codeb.test"), "is in base_domain codeb.test"),
            (
                format!("x-{p}.preview.codeb.test"),
                "is in the preview domain preview.codeb.test",
            ),
            (
                format!("x-{p}.route.codeb.test"),
                "is in the route zone route.codeb.test",
            ),
        ] {
            let r = call(&client, "domain_setup", setup_args(&p, &domain)).await;
            let text = error_text(&r);
            assert!(
                text.contains(want) && text.contains("choose a domain outside it"),
                "{domain}: {text}"
            );
            assert_eq!(domain_row(&domain).await, None, "{domain}");
        }
        assert_eq!(records(&format!("x-{p}.codeb.test"), "A").await, None);
        let r = call(&client, "deployment_list", json!({"project": p})).await;
        assert_eq!(structured(&r)["deployments"], json!([]), "no operation ran");
    };
    let cleanup = async {
        let ctx = ctx();
        for d in [format!("x-{p}.codeb.test")] {
            if let Ok(c) = pdns_client(&ctx).await {
                let _ = c
                    .patch_rrsets(
                        "codeb.test",
                        &codeb::plan::dns::address_restore_body(&d, None, None),
                    )
                    .await;
            }
            let _ = sqlx::query("DELETE FROM domains WHERE hostname = $1")
                .bind(&d)
                .execute(&pool)
                .await;
        }
        super::common::delete_project(&pool, &p).await;
    };
    with_cleanup(body, cleanup).await;
}

type Client = rmcp::service::RunningService<rmcp::RoleClient, ()>;

/// Team A (a member) and team B (a member and an owner), one project each,
/// on a server with `managed` zones.
struct TwoTeams {
    _server: HttpServer,
    team_a: String,
    team_b: String,
    a: Client,
    b: Client,
    b_owner: Client,
    pa: String,
    pb: String,
}

async fn two_teams(managed: &str) -> TwoTeams {
    let server =
        HttpServer::start_with(&testbed().config, &[("CODEB_DNS__MANAGED_ZONES", managed)]).await;
    let pool = db().await;
    let (team_a, team_b) = (unique_team("nma"), unique_team("nmb"));
    let a = server.client_with_key(&mint_key(&team_a, "member")).await;
    let b = server.client_with_key(&mint_key(&team_b, "member")).await;
    let b_owner = server.client_with_key(&mint_key(&team_b, "owner")).await;
    let (pa, pb) = (unique_project("nmpa"), unique_project("nmpb"));
    insert_project_of(&pool, &pa, &team_a).await;
    insert_project_of(&pool, &pb, &team_b).await;
    TwoTeams {
        _server: server,
        team_a,
        team_b,
        a,
        b,
        b_owner,
        pa,
        pb,
    }
}

/// Another team's domain is "taken", without a word about whose it is —
/// for its members and owners, with or without takeover.
#[tokio::test(flavor = "multi_thread")]
async fn another_teams_domain_is_taken_without_saying_whose() {
    let _guard = FAULT_LOCK.read().await;
    let t = two_teams("[\"example.test\"]").await;
    let pool = db().await;
    // Named apart from the project, so that a message naming the domain
    // does not name the project.
    let domain = format!(
        "d-{}.example.test",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let body = async {
        structured(&call(&t.a, "domain_setup", setup_args(&t.pa, &domain)).await);
        for (who, client, takeover) in [
            ("member", &t.b, false),
            ("owner", &t.b_owner, false),
            ("owner", &t.b_owner, true),
        ] {
            let mut args = setup_args(&t.pb, &domain);
            if takeover {
                args["takeover"] = json!(true);
            }
            let text = error_text(&call(client, "domain_setup", args).await);
            assert_eq!(
                text,
                format!(
                    "domain {domain} is taken: another team has set it up; choose another domain"
                ),
                "{who}, takeover {takeover}"
            );
            assert!(!text.contains(&t.pa) && !text.contains(&t.team_a), "{text}");
        }
        assert_eq!(domain_row(&domain).await.map(|r| r.0), Some(t.pa.clone()));
        assert_eq!(dig_a(&domain).await, vec![app_address()]);
    };
    let cleanup = async {
        forget_domain(&domain).await;
        delete_teams(&pool, &[&t.team_a, &t.team_b]).await;
    };
    with_cleanup(body, cleanup).await;
}

/// A zone codeb created for team A (a managed zone) is team A's: team B's
/// members and owners are refused every name in it, its apex too; team A
/// adds more names.
#[tokio::test(flavor = "multi_thread")]
async fn a_zone_codeb_created_for_another_team_is_theirs() {
    let _guard = FAULT_LOCK.read().await;
    let zone = format!(
        "own-{}.test",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let t = two_teams(&format!("[\"example.test\", \"{zone}\"]")).await;
    let pool = db().await;
    let (in_zone, more) = (format!("www.{zone}"), format!("api.{zone}"));
    let body = async {
        let v = structured(&call(&t.a, "domain_setup", setup_args(&t.pa, &in_zone)).await).clone();
        assert_eq!(v["zone_created"], json!(true), "{v}");
        for name in [format!("b.{zone}"), zone.clone()] {
            for client in [&t.b, &t.b_owner] {
                let text =
                    error_text(&call(client, "domain_setup", setup_args(&t.pb, &name)).await);
                assert!(
                    text.contains(&format!(
                        "is in zone {zone}, which codeb created for another team"
                    )),
                    "{name}: {text}"
                );
                assert!(!text.contains(&t.team_a) && !text.contains(&t.pa), "{text}");
            }
            assert_eq!(domain_row(&name).await, None);
        }
        structured(&call(&t.a, "domain_setup", setup_args(&t.pa, &more)).await);
        // Recorded as team A's.
        let owner: Option<String> = sqlx::query_scalar("SELECT team_id FROM zones WHERE zone = $1")
            .bind(&zone)
            .fetch_optional(&pool)
            .await
            .unwrap();
        assert_eq!(owner.as_deref(), Some(t.team_a.as_str()));
    };
    let cleanup = async {
        let _ = sqlx::query("DELETE FROM domains WHERE hostname = ANY($1)")
            .bind(vec![in_zone.clone(), more.clone()])
            .execute(&pool)
            .await;
        let ctx = ctx();
        if let Ok(c) = pdns_client(&ctx).await {
            for d in [&in_zone, &more] {
                let name = route_rrset_name(d, &ctx.config.routing.route_zone);
                let _ = c
                    .patch_rrsets(
                        &ctx.config.routing.route_zone,
                        &json!({"rrsets": [{"name": name, "type": "SRV", "changetype": "DELETE"}]}),
                    )
                    .await;
            }
            let _ = c.delete_zone(&zone).await;
        }
        delete_teams(&pool, &[&t.team_a, &t.team_b]).await;
    };
    with_cleanup(body, cleanup).await;
}

/// domain_delete, like project_delete, removes only address records that
/// still hold what codeb set: a record someone changed outside codeb stays
/// (the plan says so), while the route and the row go.
#[tokio::test(flavor = "multi_thread")]
async fn domain_delete_keeps_address_records_codeb_did_not_set() {
    use codeb::ops::domain_delete::{domain_delete, domain_delete_plan};
    use codeb::ops::lifecycle::Caller;
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start_with(&testbed().config, &[MANAGED]).await;
    let client = server.client().await;
    let pool = db().await;
    let p = unique_project("nmdel");
    let domain = format!("{p}.example.test");
    let body = async {
        super::common::insert_project(&pool, &p).await;
        structured(&call(&client, "domain_setup", setup_args(&p, &domain)).await);
        assert_eq!(dig_a(&domain).await, vec![app_address()]);
        put_outside_record(&domain, "A", OUTSIDE).await;

        let ctx = ctx();
        let plan = domain_delete_plan(&ctx, &p, &domain).await.unwrap();
        assert!(
            plan.summary.contains("none left")
                && plan
                    .summary
                    .contains("kept: 192.0.2.77, which codeb did not set"),
            "{}",
            plan.summary
        );
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let done = domain_delete(&ctx, &p, &domain, &plan.hash(), &Caller::local_owner(), tx)
            .await
            .unwrap();
        assert!(
            !done.steps.iter().any(|s| s.contains("address records")),
            "{:?}",
            done.steps
        );
        assert_eq!(records(&domain, "A").await, Some(vec![OUTSIDE.to_string()]));
        assert_eq!(domain_row(&domain).await, None);
    };
    let cleanup = async {
        forget_domain(&domain).await;
        super::common::delete_project(&pool, &p).await;
    };
    with_cleanup(body, cleanup).await;
}
