//! MCP over streamable HTTP: both protocol eras, Host/Origin allowlists,
//! the body limit, and the plain endpoints.

use serde_json::{json, Value};

use super::common::{testbed, HttpServer, FAULT_LOCK};
use super::mcp_stdio::exercise_tools;

#[tokio::test(flavor = "multi_thread")]
async fn http_tools_against_testbed() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = server.client().await;
    exercise_tools(&client).await;
    client.cancel().await.unwrap();
}

/// Reads a JSON-RPC response from a plain JSON body or an SSE stream.
pub(super) async fn rpc_body(resp: reqwest::Response) -> Value {
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    if ct.starts_with("text/event-stream") {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.trim())
            .filter(|d| !d.is_empty())
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v.get("id").is_some())
            .unwrap_or_else(|| panic!("no response in SSE body: {text}"))
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }
}

fn post(server: &HttpServer) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(&server.url)
        .bearer_auth(&server.key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
}

/// The legacy era: initialize with 2025-06-18, session id, then a call.
#[tokio::test(flavor = "multi_thread")]
async fn legacy_2025_06_18_session() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let resp = post(&server)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"legacy","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp
        .headers()
        .get("mcp-session-id")
        .expect("session id")
        .to_str()
        .unwrap()
        .to_string();
    let init = rpc_body(resp).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "codeb");

    let resp = post(&server)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    let resp = post(&server)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"health_check","arguments":{"server":"backup"}}}"#)
        .send()
        .await
        .unwrap();
    let v = rpc_body(resp).await;
    assert_eq!(
        v["result"]["structuredContent"]["servers"][0]["name"], "backup",
        "{v}"
    );

    // A version codeb does not speak is answered with one it does.
    let resp = post(&server)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"old","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    let v = rpc_body(resp).await;
    let negotiated = v["result"]["protocolVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        ["2025-06-18", "2025-11-25"].contains(&negotiated.as_str()) || v.get("error").is_some(),
        "unsupported version is not accepted as is: {v}"
    );
}

/// The 2026-07-28 era: no initialize, per-request metadata, no session.
#[tokio::test(flavor = "multi_thread")]
async fn stateless_2026_07_28_call() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": "health_check",
            "arguments": {"server": "streaming"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "stateless", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let resp = post(&server)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "health_check")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("mcp-session-id").is_none(),
        "no session in 2026-07-28"
    );
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/json",
        "plain JSON where nothing streams"
    );
    let v = rpc_body(resp).await;
    assert_eq!(
        v["result"]["structuredContent"]["servers"][0]["name"], "streaming",
        "{v}"
    );
    assert_eq!(
        v["result"]["structuredContent"]["healthy"],
        json!(true),
        "{v}"
    );

    let discover = json!({"jsonrpc": "2.0", "id": 8, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "stateless", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let resp = post(&server)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .body(discover.to_string())
        .send()
        .await
        .unwrap();
    let v = rpc_body(resp).await;
    let versions = v["result"]["supportedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        versions,
        vec![
            json!("2026-07-28"),
            json!("2025-11-25"),
            json!("2025-06-18")
        ],
        "discover lists exactly the supported versions: {v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_origin_and_body_limits() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

    let resp = post(&server)
        .header("host", "evil.example:80")
        .body(init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "foreign Host refused");

    let resp = post(&server)
        .header("origin", "http://evil.example")
        .body(init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "foreign Origin refused");

    let resp = post(&server)
        .header("origin", "http://localhost:9101")
        .body(init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "configured Origin accepted");

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"slot_status","arguments":{{"project":"{}"}}}}}}"#,
        "a".repeat(1024 * 1024 + 1)
    );
    let resp = post(&server).body(big).send().await.unwrap();
    assert_eq!(resp.status(), 413, "bodies over 1 MiB refused");

    let plain = reqwest::Client::new();
    let base = server.url.trim_end_matches("/mcp").to_string();
    assert_eq!(
        plain
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        plain
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = plain
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("codeb_http_requests_total "), "{metrics}");
    let _ = testbed();
}

/// `/readyz` and `/tls/ask` answer without a key, so an unready state
/// database is reported without its cause: database, role and host names
/// stay in codeb's log. The fresh state database's random name is the
/// canary; dropping the database under the running server makes every new
/// connection fail with an error that names it.
#[tokio::test(flavor = "multi_thread")]
async fn open_endpoints_do_not_echo_database_errors() {
    use super::common::FreshStateDb;
    use std::time::{Duration, Instant};
    let fresh = FreshStateDb::create("ready").await;
    let env = [("CODEB_DATABASE__URL", fresh.url.as_str())];
    let server = HttpServer::start_with(&testbed().config, &env).await;
    let base = server.url.trim_end_matches("/mcp").to_string();
    let plain = reqwest::Client::new();
    let get = |path: &str| plain.get(format!("{base}{path}")).send();
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    fresh.drop().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let resp = get("/readyz").await.unwrap();
        if resp.status() == 503 {
            break resp.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "readyz never became 503");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        body,
        "not ready: the state database does not answer (details in codeb's log)\n"
    );
    let resp = get("/tls/ask?domain=shop.codeb.test").await.unwrap();
    assert_eq!(resp.status(), 503);
    let ask = resp.text().await.unwrap();
    for text in [&body, &ask] {
        assert!(!text.contains(&fresh.name), "database name echoed: {text}");
        assert!(!text.contains("codeb@"), "{text}");
    }
    // The cause is in the operator's log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log.lock().unwrap().contains(&fresh.name) {
        assert!(
            Instant::now() < deadline,
            "cause not logged: {}",
            server.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
