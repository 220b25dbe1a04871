//! The blue-green lifecycle end to end on the testbed, through MCP over
//! HTTP: project_create, deploy, promote, rollback, slot_cleanup, a broken
//! image, idempotency, the journal, logs and progress notifications.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ClientRequest, ProgressNotificationParam, Request};
use rmcp::service::{PeerRequestOptions, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};

use super::common::{error_text, structured, testbed, unique_project, HttpServer, FAULT_LOCK};

/// A client that records progress notifications.
#[derive(Clone, Default)]
pub struct Recorder {
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _c: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

/// Calls a tool with a progress token; returns the result and the progress seen.
pub async fn call_with_progress(
    client: &RunningService<RoleClient, Recorder>,
    tool: &str,
    args: Value,
) -> (rmcp::model::CallToolResult, Vec<ProgressNotificationParam>) {
    let Value::Object(map) = args else {
        panic!("object")
    };
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(
                CallToolRequestParams::new(tool.to_string()).with_arguments(map),
            )),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("send");
    let token = handle.progress_token.clone();
    let response = handle.await_response().await.expect("response");
    let result = match response {
        rmcp::model::ServerResult::CallToolResult(r) => r,
        other => panic!("unexpected response {other:?}"),
    };
    let seen = client
        .service()
        .progress
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.progress_token == token)
        .cloned()
        .collect();
    (result, seen)
}

/// GET / through Caddy with `host`: (status, body, X-CodeB-Upstream).
pub async fn through_caddy(host: &str) -> (u16, String, String) {
    let caddy = testbed().status["caddy_http"].as_str().unwrap().to_string();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client
        .get(format!("http://{caddy}/"))
        .header("host", host)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let upstream = r
                .headers()
                .get("x-codeb-upstream")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (status, r.text().await.unwrap_or_default(), upstream)
        }
        Err(e) => (0, e.to_string(), String::new()),
    }
}

/// Waits (bounded) until Caddy serves `want` for `host`; Caddy re-reads
/// routes every second, so a fresh preview route may take that long.
pub async fn expect_served(host: &str, want: &str) {
    let mut last = (0, String::new(), String::new());
    for _ in 0..40 {
        last = through_caddy(host).await;
        if last.0 == 200 && last.1.contains(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{host} did not serve {want:?} through Caddy; last: {last:?}");
}

pub fn image(tag: &str) -> String {
    format!(
        "{}/demo:{tag}",
        testbed().status["registry"].as_str().unwrap()
    )
}

async fn call(
    client: &RunningService<RoleClient, Recorder>,
    tool: &str,
    args: Value,
) -> rmcp::model::CallToolResult {
    call_with_progress(client, tool, args).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_lifecycle() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start_with(
        &testbed().config,
        &[
            ("CODEB_LIFECYCLE__GRACE_PERIOD_SECS", "8"),
            ("CODEB_LIFECYCLE__HEALTH_DEADLINE_SECS", "5"),
        ],
    )
    .await;
    let transport = server.transport();
    let client = Recorder::default()
        .serve(transport)
        .await
        .expect("initialize");
    let p = unique_project("lc");
    let domain = format!("{p}.codeb.test");

    // project_create, twice.
    let r = call(&client, "project_create", json!({"project": p})).await;
    assert!(
        structured(&r)["summary"]
            .as_str()
            .unwrap()
            .contains("created"),
        "{r:?}"
    );
    let r = call(&client, "project_create", json!({"project": p})).await;
    assert!(error_text(&r).contains("already exists"));

    // Dry run changes nothing.
    let r = call(
        &client,
        "deploy",
        json!({"project": p, "environment": "production", "image": image("v1"), "dry_run": true, "override_reason": "test: no staging in this test"}),
    )
    .await;
    let v = structured(&r);
    assert_eq!(v["dry_run"], json!(true));
    assert_eq!(v["slot"], json!("blue"));
    assert!(v["plan"].as_array().unwrap().len() >= 6);

    // deploy v1 → preview serves v1; progress for every phase.
    let (r, progress) = call_with_progress(
        &client,
        "deploy",
        json!({"project": p, "environment": "production", "image": image("v1"), "override_reason": "test: no staging in this test"}),
    )
    .await;
    let v = structured(&r).clone();
    assert_eq!(v["slot"], json!("blue"), "{v}");
    let preview_host = format!("{p}-production-blue.preview.codeb.test");
    assert_eq!(v["preview_url"], json!(format!("http://{preview_host}")));
    assert!(progress.len() >= 6, "progress per phase: {progress:?}");
    assert!(progress
        .iter()
        .any(|p| p.message.as_deref().is_some_and(|m| m.contains("health"))));
    expect_served(&preview_host, "demo v1").await;
    let (status, _, _) = through_caddy(&domain).await;
    assert_ne!(status, 200, "the domain has no route before promote");

    // promote → the domain serves v1.
    let (r, progress) = call_with_progress(
        &client,
        "promote",
        json!({"project": p, "environment": "production"}),
    )
    .await;
    let v = structured(&r).clone();
    assert_eq!(v["active"], json!("blue"), "{v}");
    assert!(progress.len() >= 4, "{progress:?}");
    expect_served(&domain, "demo v1").await;

    // deploy v2 → preview serves v2 while the domain still serves v1.
    let r = call(
        &client,
        "deploy",
        json!({"project": p, "environment": "production", "image": image("v2"), "override_reason": "test: no staging in this test"}),
    )
    .await;
    assert_eq!(structured(&r)["slot"], json!("green"));
    expect_served(
        &format!("{p}-production-green.preview.codeb.test"),
        "demo v2",
    )
    .await;
    let (_, body, _) = through_caddy(&domain).await;
    assert!(body.contains("demo v1"), "domain still v1: {body}");

    // promote → v2; blue becomes grace.
    let r = call(
        &client,
        "promote",
        json!({"project": p, "environment": "production"}),
    )
    .await;
    let v = structured(&r).clone();
    assert_eq!(
        (v["active"].clone(), v["previous_state"].clone()),
        (json!("green"), json!("grace")),
        "{v}"
    );
    expect_served(&domain, "demo v2").await;

    // rollback → v1, reason recorded.
    let r = call(
        &client,
        "rollback",
        json!({"project": p, "environment": "production", "reason": "test incident"}),
    )
    .await;
    let v = structured(&r).clone();
    assert_eq!(v["active"], json!("blue"), "{v}");
    expect_served(&domain, "demo v1").await;
    let dep = call(&client, "deployment_get", json!({"id": v["deployment_id"]})).await;
    assert_eq!(
        structured(&dep)["deployment"]["reason"],
        json!("test incident")
    );

    // rollback again: no grace slot.
    let r = call(
        &client,
        "rollback",
        json!({"project": p, "environment": "production"}),
    )
    .await;
    assert!(error_text(&r).contains("no grace slot"), "{r:?}");

    // promote v2 again; after the (shortened) grace period cleanup empties blue.
    let r = call(
        &client,
        "promote",
        json!({"project": p, "environment": "production"}),
    )
    .await;
    assert_eq!(structured(&r)["active"], json!("green"));
    let r = call(&client, "slot_cleanup", json!({"project": p})).await;
    assert_eq!(structured(&r)["cleaned"], json!([]), "not expired yet");
    let s = call(
        &client,
        "slot_status",
        json!({"project": p, "environment": "production"}),
    )
    .await;
    let expiry = structured(&s)["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "grace")
        .unwrap()["grace_expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    let expiry = chrono::DateTime::parse_from_rfc3339(&expiry).unwrap();
    let wait = (expiry.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    assert!(
        wait <= Duration::from_secs(9),
        "grace period comes from config: {wait:?}"
    );
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let r = call(&client, "slot_cleanup", json!({"project": p})).await;
    let v = structured(&r).clone();
    assert_eq!(v["cleaned"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["cleaned"][0]["slot"], json!("blue"));
    let s = call(
        &client,
        "slot_status",
        json!({"project": p, "environment": "production"}),
    )
    .await;
    let blue = structured(&s)["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == "blue")
        .unwrap()
        .clone();
    assert_eq!(blue["state"], json!("empty"));
    assert!(blue["container"].is_null(), "container removed: {blue}");
    expect_served(&domain, "demo v2").await;

    // A broken image: the health gate fails, the slot is cleaned, the domain keeps serving.
    let r = call(
        &client,
        "deploy",
        json!({"project": p, "environment": "production", "image": image("broken"), "override_reason": "test: no staging in this test"}),
    )
    .await;
    let text = error_text(&r);
    assert!(text.contains("health check"), "{text}");
    assert!(text.contains("the active slot was not touched"), "{text}");
    expect_served(&domain, "demo v2").await;
    let s = call(
        &client,
        "slot_status",
        json!({"project": p, "environment": "production"}),
    )
    .await;
    let blue = structured(&s)["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == "blue")
        .unwrap()
        .clone();
    assert_eq!(blue["state"], json!("empty"), "{blue}");
    assert!(blue["container"].is_null(), "{blue}");

    // The pair is free for the next deploy; an idempotency key returns the same deployment.
    let args = json!({"project": p, "environment": "production", "image": image("v1"), "idempotency_key": "ci-1", "override_reason": "test: no staging in this test"});
    let first = call(&client, "deploy", args.clone()).await;
    let again = call(&client, "deploy", args).await;
    assert_eq!(
        structured(&first)["deployment_id"],
        structured(&again)["deployment_id"]
    );
    assert_eq!(structured(&again)["replayed"], json!(true));

    // The journal and the records.
    let list = call(
        &client,
        "deployment_list",
        json!({"project": p, "limit": 100}),
    )
    .await;
    let deps = structured(&list)["deployments"].as_array().unwrap().clone();
    assert!(deps.len() >= 8, "{}", deps.len());
    let deploy_id = structured(&first)["deployment_id"].clone();
    let got = call(&client, "deployment_get", json!({"id": deploy_id})).await;
    let steps = structured(&got)["steps"].as_array().unwrap().clone();
    assert!(
        steps
            .iter()
            .any(|s| s["argv"][0] == "podman" && s["argv"][1] == "run"),
        "{steps:?}"
    );
    assert!(steps.iter().all(|s| s["step"].is_string()));

    // Logs of the active slot, bounded and marked untrusted.
    let r = call(
        &client,
        "logs",
        json!({"project": p, "environment": "production", "lines": 5}),
    )
    .await;
    let v = structured(&r);
    assert!(
        v["content"]
            .as_str()
            .unwrap()
            .starts_with("<untrusted-content"),
        "{v}"
    );

    client.cancel().await.unwrap();
}
