//! Fault switches: a cut host is reported unreachable within 10 s while
//! the others stay healthy; after heal it is healthy again.

use std::time::Duration;

use serde_json::json;

use super::common::{call, structured, testbed_cmd, HttpServer, FAULT_LOCK};

/// Heals the link even when an assertion fails mid-test.
struct HealOnDrop(&'static str);
impl Drop for HealOnDrop {
    fn drop(&mut self) {
        testbed_cmd(&["heal", self.0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_storage_is_reported_then_heals() {
    let _guard = FAULT_LOCK.write().await;
    let server = HttpServer::start().await;
    let client = server.client().await;

    // Warm: all healthy, and the SSH masters are open.
    let r = call(&client, "health_check", json!({})).await;
    assert_eq!(
        structured(&r)["healthy"],
        json!(true),
        "{}",
        structured(&r)["summary"]
    );

    testbed_cmd(&["cut", "storage"]);
    let heal = HealOnDrop("storage");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        call(&client, "health_check", json!({})),
    )
    .await
    .expect("health_check answers within 10 s with a host cut");
    let v = structured(&r);
    assert_eq!(v["healthy"], json!(false));
    for s in v["servers"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        if name == "storage" {
            assert_eq!(s["reachable"], json!(false), "{s}");
            assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()), "{s}");
        } else {
            assert_eq!(s["healthy"], json!(true), "{name} stays healthy: {s}");
        }
    }
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("storage unreachable"),
        "{}",
        v["summary"]
    );

    drop(heal);
    // After heal the next checks reconnect; bounded number of attempts,
    // each bounded by the probe timeouts.
    let mut healthy = false;
    for _ in 0..10 {
        let r = call(&client, "health_check", json!({"server": "storage"})).await;
        if structured(&r)["healthy"] == json!(true) {
            healthy = true;
            break;
        }
    }
    assert!(healthy, "storage healthy again after heal");
}
