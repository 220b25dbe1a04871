//! The PowerDNS route table on the testbed, reached the way codeb reaches
//! it: through an SSH port forward over the app server's master. Each test
//! uses its own host name and removes its rrsets, because other people use
//! the same testbed at the same time.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use codeb::config::Config;
use codeb::exec::pdns::{PdnsClient, PdnsError};
use codeb::ops::pdns::{pdns_client, with_pdns};
use codeb::ops::Ctx;
use codeb::plan::dns::{
    route_rrset_name, srv_patch_body, RrsetChange, SrvTarget, PRIORITY_ACTIVE, PRIORITY_FALLBACK,
};
use futures::FutureExt;

use super::common::{testbed, unique_project, FAULT_LOCK};

fn config() -> Config {
    Config::load(&testbed().config).expect("load the testbed config")
}

/// The app server's DNS address, from `tools/testbed status`.
fn dns_server() -> String {
    let dns = testbed().status["dns"].as_str().expect("dns address");
    dns.split(':').next().unwrap().to_string()
}

/// The authoritative SRV answer for `name`, as a set of record texts.
async fn dig_srv(name: &str) -> BTreeSet<String> {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", dns_server()))
        .args(["SRV", name, "+short", "+time=2", "+tries=2"])
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

fn records(targets: &[SrvTarget], route_target: &str) -> BTreeSet<String> {
    targets
        .iter()
        .map(|t| format!("{} 0 {} {}.", t.priority, t.port, route_target))
        .collect()
}

async fn delete(client: &PdnsClient, zone: &str, name: &str) {
    let body = srv_patch_body(
        &[RrsetChange::Delete {
            name: name.to_string(),
        }],
        "unused",
    );
    client
        .patch_rrsets(zone, &body)
        .await
        .expect("delete the test rrset");
}

#[tokio::test(flavor = "multi_thread")]
async fn route_rrset_is_written_served_switched_and_deleted() {
    let _guard = FAULT_LOCK.read().await;
    let ctx = Ctx::new(config());
    let zone = ctx.config.routing.route_zone.clone();
    let target = ctx.config.routing.route_target.clone();
    let host = format!("{}.{}", unique_project("t"), ctx.config.routing.base_domain);
    let name = route_rrset_name(&host, &zone);

    let client = pdns_client(&ctx).await.expect("PowerDNS client");
    assert!(
        client.base_url().starts_with("http://127.0.0.1:"),
        "{client:?}"
    );
    client.ping().await.expect("ping through the forward");

    let body = AssertUnwindSafe(async {
        assert_eq!(client.srv_rrset(&zone, &name).await.unwrap(), None);
        // Asked before it exists: PowerDNS must not serve a cached NXDOMAIN
        // after the PATCH.
        assert!(dig_srv(&name).await.is_empty());

        let both = vec![
            SrvTarget {
                priority: PRIORITY_ACTIVE,
                port: 4398,
            },
            SrvTarget {
                priority: PRIORITY_FALLBACK,
                port: 4399,
            },
        ];
        let patch = srv_patch_body(
            &[RrsetChange::Replace {
                name: name.clone(),
                targets: both.clone(),
            }],
            &target,
        );
        client.patch_rrsets(&zone, &patch).await.expect("create");
        assert_eq!(
            client.srv_rrset(&zone, &name).await.unwrap(),
            Some(both.clone())
        );
        let all = client.srv_rrsets(&zone).await.unwrap();
        assert!(
            all.iter().any(|(n, t)| *n == name && *t == both),
            "{name} in {all:?}"
        );
        assert_eq!(dig_srv(&name).await, records(&both, &target));

        // A switch is one PATCH: the other slot first.
        let switched = vec![
            SrvTarget {
                priority: PRIORITY_ACTIVE,
                port: 4399,
            },
            SrvTarget {
                priority: PRIORITY_FALLBACK,
                port: 4398,
            },
        ];
        let patch = srv_patch_body(
            &[RrsetChange::Replace {
                name: name.clone(),
                targets: switched.clone(),
            }],
            &target,
        );
        // The same client again: the forward is reused, not reopened.
        let again = pdns_client(&ctx).await.unwrap();
        assert_eq!(again.base_url(), client.base_url());
        again.patch_rrsets(&zone, &patch).await.expect("switch");
        assert_eq!(
            client.srv_rrset(&zone, &name).await.unwrap(),
            Some(switched.clone())
        );
        assert_eq!(dig_srv(&name).await, records(&switched, &target));

        delete(&client, &zone, &name).await;
        assert_eq!(client.srv_rrset(&zone, &name).await.unwrap(), None);
        assert!(dig_srv(&name).await.is_empty());
        // Deleting what is gone is fine (retries are safe).
        delete(&client, &zone, &name).await;
    })
    .catch_unwind()
    .await;
    if body.is_err() {
        delete(&client, &zone, &name).await;
    }
    ctx.fleet.close().await;
    if let Err(p) = body {
        std::panic::resume_unwind(p);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_change_and_missing_zone_are_api_errors() {
    let _guard = FAULT_LOCK.read().await;
    let ctx = Ctx::new(config());
    let zone = ctx.config.routing.route_zone.clone();
    let client = pdns_client(&ctx).await.expect("PowerDNS client");

    // A name outside the zone: PowerDNS refuses the whole PATCH with 422.
    let patch = srv_patch_body(
        &[RrsetChange::Replace {
            name: route_rrset_name("x.codeb.test", "elsewhere.test"),
            targets: vec![SrvTarget {
                priority: 0,
                port: 4100,
            }],
        }],
        &ctx.config.routing.route_target,
    );
    let e = client.patch_rrsets(&zone, &patch).await.unwrap_err();
    match &e {
        PdnsError::Api { status, message } => {
            assert_eq!(*status, 422, "{e}");
            assert!(message.contains("out of zone"), "{e}");
        }
        other => panic!("want Api 422, got {other:?}"),
    }

    let missing = format!("{}.test", unique_project("nozone"));
    let e = client
        .srv_rrset(&missing, &format!("a.{missing}"))
        .await
        .unwrap_err();
    assert!(matches!(e, PdnsError::Api { status: 404, .. }), "{e:?}");
    assert!(e.to_string().contains("routing.route_zone"), "{e}");
    ctx.fleet.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_is_refused_with_a_clear_message() {
    let _guard = FAULT_LOCK.read().await;
    let canary = format!("wrong-key-{}", unique_project("k"));
    let dir = std::env::temp_dir().join(format!("codeb-it-pdns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("wrong_key");
    std::fs::write(&key_file, &canary).unwrap();
    let mut config = config();
    config.pdns.api_key_file = Some(key_file);
    let ctx = Ctx::new(config);

    let client = pdns_client(&ctx).await.expect("the forward needs no key");
    let e = client.ping().await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(&canary), "key leaked: {shown}");
    assert!(matches!(e, PdnsError::Api { status: 401, .. }), "{e:?}");
    assert!(e.to_string().contains("refused the key"), "{e}");
    assert!(e.to_string().contains("pdns.api_key_file"), "{e}");
    ctx.fleet.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_is_reopened_after_the_master_is_gone() {
    let _guard = FAULT_LOCK.read().await;
    let ctx = Ctx::new(config());
    let old = pdns_client(&ctx).await.expect("PowerDNS client");
    old.ping().await.expect("ping");

    // Closing the fleet ends the SSH master and with it the forward.
    ctx.fleet.close().await;
    let new = pdns_client(&ctx).await.expect("a new forward");
    if new.base_url() != old.base_url() {
        let e = old.ping().await.unwrap_err();
        assert!(matches!(e, PdnsError::Unreachable(_)), "{e:?}");
    }
    new.ping().await.expect("ping through the new forward");

    // with_pdns gets through too, within the client's time limit.
    tokio::time::timeout(
        Duration::from_secs(30),
        with_pdns(&ctx, |c| async move { c.ping().await }),
    )
    .await
    .expect("in time")
    .expect("ping");
    ctx.fleet.close().await;
}
