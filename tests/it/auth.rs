//! Access control over HTTP with real keys (DESIGN §6): 401 before MCP,
//! tools/list by role, role and team enforced on tools/call, rate limit.

use serde_json::{json, Value};

use super::common::{call, error_text, mint_key, structured, HttpServer, FAULT_LOCK};

async fn post_raw(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .expect("post")
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_get_401_before_mcp() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    // A key made and revoked through the tools.
    let revoked = {
        let c = server.client().await;
        let made = call(
            &c,
            "key_create",
            json!({"role": "viewer", "label": "to revoke"}),
        )
        .await;
        let made = structured(&made).clone();
        let id = made["key"]["id"].as_str().unwrap();
        structured(&call(&c, "key_revoke", json!({"id": id})).await);
        made["api_key_shown_once"].as_str().unwrap().to_string()
    };
    // A key whose expiry has passed (set in the database, as time passing
    // would; it was never used, so no cache holds it).
    let expired = {
        let c = server.client().await;
        let made = call(
            &c,
            "key_create",
            json!({"role": "viewer", "label": "to expire", "expires_in_days": 1}),
        )
        .await;
        let made = structured(&made).clone();
        let id = made["key"]["id"].as_str().unwrap().to_string();
        sqlx::query(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
        )
        .bind(&id)
        .execute(&super::common::db().await)
        .await
        .unwrap();
        made["api_key_shown_once"].as_str().unwrap().to_string()
    };
    let unknown = format!("codeb_default_owner_{}", "A".repeat(40));
    for (what, headers) in [
        (
            "expired",
            vec![("authorization", format!("Bearer {expired}"))],
        ),
        ("missing", vec![]),
        (
            "malformed",
            vec![("authorization", "Bearer nope".to_string())],
        ),
        ("unknown", vec![("x-api-key", unknown.clone())]),
        ("revoked", vec![("x-api-key", revoked.clone())]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = post_raw(&server.url, &headers).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert!(resp.headers().contains_key("www-authenticate"), "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], json!(-32001), "{what}: {body}");
        assert_eq!(body["id"], Value::Null);
    }
    let ok = post_raw(&server.url, &[("x-api-key", server.key.as_str())]).await;
    assert_ne!(ok.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_and_teams_are_enforced() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let viewer = server.client_with_key(&mint_key("default", "viewer")).await;
    let tools = viewer.list_all_tools().await.unwrap();
    assert!(!tools.is_empty());
    for t in &tools {
        let ro = t.annotations.as_ref().and_then(|a| a.read_only_hint);
        assert_eq!(ro, Some(true), "viewer sees mutating tool {}", t.name);
    }
    // Listing is not enforcement: a viewer calling deploy is refused.
    let r = call(
        &viewer,
        "deploy",
        json!({"project": "nope-x", "environment": "staging", "image": "x:1"}),
    )
    .await;
    assert!(error_text(&r).contains("needs the member role"));
    // An admin cannot mint an owner key.
    let admin = server.client_with_key(&mint_key("default", "admin")).await;
    let r = call(&admin, "key_create", json!({"role": "owner"})).await;
    assert!(error_text(&r).contains("cannot create"));
    let r = call(
        &admin,
        "key_create",
        json!({"role": "viewer", "label": "t"}),
    )
    .await;
    assert!(structured(&r)["api_key_shown_once"]
        .as_str()
        .unwrap()
        .starts_with("codeb_default_viewer_"));
    // Another team's project answers like a missing one.
    let other = server
        .client_with_key(&mint_key("other-team", "owner"))
        .await;
    let owner = server.client().await;
    let p = super::common::unique_project("authp");
    let pool = super::common::db().await;
    super::common::insert_project(&pool, &p).await;
    let mine = call(&owner, "slot_status", json!({"project": p})).await;
    structured(&mine);
    let theirs = error_text(&call(&other, "slot_status", json!({"project": p})).await);
    let missing =
        error_text(&call(&other, "slot_status", json!({"project": "no-such-proj"})).await);
    assert_eq!(
        theirs.replace(&p, "P"),
        missing.replace("no-such-proj", "P")
    );
    let listed = call(&other, "project_list", json!({})).await;
    assert!(!structured(&listed).to_string().contains(&p));
    super::common::delete_project(&pool, &p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_101st_request_in_a_minute_is_refused() {
    let _guard = FAULT_LOCK.read().await;
    // The default limit: 100 requests / 60 s per key.
    let server = HttpServer::start_with_default_limits().await;
    let a = mint_key("default", "viewer");
    let b = mint_key("default", "viewer");
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses.push(
            post_raw(&server.url, &[("x-api-key", a.as_str())])
                .await
                .status()
                .as_u16(),
        );
    }
    // Past authentication (rmcp answers a session-less ping itself).
    assert!(
        statuses.iter().all(|s| *s != 401 && *s != 429),
        "{statuses:?}"
    );
    let last = post_raw(&server.url, &[("x-api-key", a.as_str())]).await;
    assert_eq!(last.status(), 429);
    assert!(last.headers().contains_key("retry-after"));
    let other = post_raw(&server.url, &[("x-api-key", b.as_str())]).await;
    assert_ne!(other.status(), 429);
}
