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
    assert!(
        error_text(&r).contains("cannot create"),
        "{}",
        error_text(&r)
    );
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
    // Creating it anyway fails, saying only that the name is taken.
    let taken = error_text(&call(&other, "project_create", json!({"project": p})).await);
    assert!(
        taken.contains("is taken") && !taken.contains("default"),
        "{taken}"
    );
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

/// DESIGN §6, a team sees only its own projects: without `project`,
/// deployment_list, domain_list, drift_report, slot_cleanup and
/// health_check cover the caller's team's projects only — viewers and
/// owners alike — and their cursors page within the team.
#[tokio::test(flavor = "multi_thread")]
async fn listings_without_project_cover_only_the_callers_team() {
    use super::app_host::with_cleanup;
    use super::common::{db, delete_teams, insert_project_of, unique_project, unique_team};
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let pool = db().await;
    let (team_a, team_b) = (unique_team("ta"), unique_team("tb"));
    let a_viewer = server.client_with_key(&mint_key(&team_a, "viewer")).await;
    let a_owner = server.client_with_key(&mint_key(&team_a, "owner")).await;
    let b_viewer = server.client_with_key(&mint_key(&team_b, "viewer")).await;
    let b_owner = server.client_with_key(&mint_key(&team_b, "owner")).await;
    let p = unique_project("teamlist");
    let domain = format!("{p}.example.test");
    let older = uuid::Uuid::new_v4();
    let newer = uuid::Uuid::new_v4();
    let body = async {
        // Team A's project: staging has an active slot (no container: an
        // unhealthy environment, drift) and an expired grace slot (for
        // slot_cleanup); two finished deployments; a domain.
        let pid = insert_project_of(&pool, &p, &team_a).await;
        for (slot, state, grace) in [("blue", "active", None), ("green", "grace", Some(3600.0))] {
            sqlx::query(
                "UPDATE slots SET state = $3, image = '10.77.0.12:5000/none:v1',
                        grace_expires_at = now() - make_interval(secs => $4)
                  WHERE project_id = $1 AND environment = 'staging' AND slot = $2",
            )
            .bind(pid)
            .bind(slot)
            .bind(state)
            .bind(grace)
            .execute(&pool)
            .await
            .unwrap();
        }
        for (id, env, age) in [(older, "production", 60.0), (newer, "staging", 1.0)] {
            sqlx::query(
                "INSERT INTO deployments (id, project_id, environment, operation, status, principal, created_at, finished_at)
                 VALUES ($1, $2, $3, 'deploy', 'succeeded', 'test', now() - make_interval(secs => $4), now())",
            )
            .bind(id)
            .bind(pid)
            .bind(env)
            .bind(age)
            .execute(&pool)
            .await
            .unwrap();
        }
        codeb::state::domains::domain_insert(&pool, &domain, pid, "staging", "custom")
            .await
            .unwrap();

        // Team B, viewer and owner: none of it, not even through A's cursor.
        for (who, b) in [("viewer", &b_viewer), ("owner", &b_owner)] {
            let mut seen = Vec::new();
            for (tool, args) in [
                ("deployment_list", json!({})),
                ("deployment_list", json!({"cursor": newer.to_string()})),
                ("domain_list", json!({})),
                ("drift_report", json!({})),
                ("health_check", json!({})),
                ("project_list", json!({})),
            ] {
                let r = structured(&call(b, tool, args).await).clone();
                assert!(
                    !r.to_string().contains(&p),
                    "B {who} {tool} shows A's project: {r}"
                );
                seen.push(r);
            }
            assert_eq!(seen[0]["deployments"], json!([]), "B {who}: {}", seen[0]);
            assert_eq!(seen[1]["deployments"], json!([]), "B {who}: {}", seen[1]);
            assert_eq!(seen[2]["domains"], json!([]), "B {who}: {}", seen[2]);
            assert_eq!(
                seen[3]["projects"],
                json!(0),
                "B {who}: {}",
                seen[3]["summary"]
            );
            assert_eq!(
                seen[4]["environments"],
                json!([]),
                "B {who}: {}",
                seen[4]["summary"]
            );
            assert_no_other_teams_project(&pool, &seen[3], None).await;
        }
        let r = call(&b_owner, "slot_cleanup", json!({"dry_run": true})).await;
        assert_eq!(structured(&r)["cleaned"], json!([]), "{r:?}");
        // A viewer is refused slot_cleanup for its role, not for the scope.
        let r = call(&b_viewer, "slot_cleanup", json!({"dry_run": true})).await;
        assert!(error_text(&r).contains("needs the admin role"), "{r:?}");

        // Team A sees its own, a page at a time.
        let page = |cursor: Option<String>| {
            let mut args = json!({"limit": 1});
            if let Some(c) = cursor {
                args["cursor"] = json!(c);
            }
            call(&a_viewer, "deployment_list", args)
        };
        let first = structured(&page(None).await).clone();
        assert_eq!(
            first["deployments"][0]["id"],
            json!(newer.to_string()),
            "{first}"
        );
        assert_eq!(first["next_cursor"], json!(newer.to_string()), "{first}");
        let second = structured(&page(Some(newer.to_string())).await).clone();
        assert_eq!(
            second["deployments"][0]["id"],
            json!(older.to_string()),
            "{second}"
        );
        assert_eq!(second["deployments"][0]["project"], json!(p));
        assert_eq!(second["next_cursor"], Value::Null, "{second}");
        let r = structured(&call(&a_viewer, "domain_list", json!({})).await).clone();
        let domains: Vec<&Value> = r["domains"].as_array().unwrap().iter().collect();
        assert_eq!(domains.len(), 1, "{r}");
        assert_eq!(domains[0]["domain"], json!(domain));
        let r = structured(&call(&a_viewer, "health_check", json!({})).await).clone();
        let envs = r["environments"].as_array().unwrap();
        assert_eq!(envs.len(), 1, "{}", r["summary"]);
        assert_eq!(
            (&envs[0]["project"], &envs[0]["environment"]),
            (&json!(p), &json!("staging"))
        );
        for (who, a) in [("viewer", &a_viewer), ("owner", &a_owner)] {
            let r = structured(&call(a, "drift_report", json!({})).await).clone();
            assert_eq!(r["projects"], json!(1), "A {who}: {}", r["summary"]);
            let findings = r["findings"].as_array().unwrap();
            assert!(
                findings.iter().any(|f| f["kind"] == "container_missing"
                    && f["object"] == json!(format!("{p}-staging-blue"))),
                "A {who}: {r}"
            );
            if who == "viewer" {
                // Findings that belong to no project are for owners.
                assert!(findings.iter().all(|f| f["project"] == json!(p)), "{r}");
            }
            assert_no_other_teams_project(&pool, &r, Some(&p)).await;
        }
        let r = call(&a_owner, "slot_cleanup", json!({"dry_run": true})).await;
        let cleaned = structured(&r)["cleaned"].clone();
        assert_eq!(cleaned.as_array().unwrap().len(), 1, "{cleaned}");
        assert_eq!(
            (
                &cleaned[0]["project"],
                &cleaned[0]["environment"],
                &cleaned[0]["slot"]
            ),
            (&json!(p), &json!("staging"), &json!("green"))
        );
    };
    with_cleanup(body, delete_teams(&pool, &[&team_a, &team_b])).await;
}

/// Every finding of a drift report belongs to `own` or to no project
/// recorded at all (an owner's orphans), never to another project.
async fn assert_no_other_teams_project(pool: &sqlx::PgPool, report: &Value, own: Option<&str>) {
    for f in report["findings"].as_array().unwrap() {
        let Some(project) = f["project"].as_str() else {
            continue;
        };
        if Some(project) == own {
            continue;
        }
        let recorded: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE name = $1)")
                .bind(project)
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(
            !recorded,
            "a finding about another team's project {project}: {f}"
        );
    }
}

/// Resources and completion see only the caller's team too: another
/// team's project slots and deployment log read exactly like missing ones,
/// and its project names are never offered.
#[tokio::test(flavor = "multi_thread")]
async fn resources_and_completion_show_only_the_callers_team() {
    use super::app_host::with_cleanup;
    use super::common::{db, delete_teams, insert_project_of, unique_project, unique_team};
    use rmcp::model::{ReadResourceRequestParams, ResourceContents};
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let pool = db().await;
    let (team_a, team_b) = (unique_team("ra"), unique_team("rb"));
    let a = server.client_with_key(&mint_key(&team_a, "viewer")).await;
    let b = server.client_with_key(&mint_key(&team_b, "owner")).await;
    let (p, nope) = (unique_project("resteam"), unique_project("resnone"));
    let (dep, no_dep) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let body = async {
        let pid = insert_project_of(&pool, &p, &team_a).await;
        sqlx::query(
            "INSERT INTO deployments (id, project_id, environment, operation, status, principal, finished_at)
             VALUES ($1, $2, 'staging', 'deploy', 'succeeded', 'test', now())",
        )
        .bind(dep)
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
        let slots = |p: &str| format!("codeb://projects/{p}/staging/slots");
        let log = |id: uuid::Uuid| format!("codeb://deployments/{id}/log");
        for (mine, theirs, missing, token, missing_token) in [
            (slots(&p), slots(&p), slots(&nope), p.clone(), nope.clone()),
            (
                log(dep),
                log(dep),
                log(no_dep),
                dep.to_string(),
                no_dep.to_string(),
            ),
        ] {
            let r = a
                .read_resource(ReadResourceRequestParams::new(mine.clone()))
                .await
                .unwrap_or_else(|e| panic!("team A reads {mine}: {e}"));
            let ResourceContents::TextResourceContents { text, .. } = &r.contents[0] else {
                panic!("text contents expected: {r:?}")
            };
            assert!(text.contains(&token) || text.contains("blue"), "{text}");
            let read_err = |uri: String| {
                let b = &b;
                async move {
                    b.read_resource(ReadResourceRequestParams::new(uri.clone()))
                        .await
                        .map(|r| format!("{r:?}"))
                        .expect_err(&format!("team B must not read {uri}"))
                        .to_string()
                }
            };
            let theirs = read_err(theirs).await;
            let missing = read_err(missing).await;
            assert!(theirs.contains("not found"), "{theirs}");
            assert_eq!(
                theirs.replace(&token, "X"),
                missing.replace(&missing_token, "X")
            );
        }
        let template = "codeb://projects/{project}/{environment}/slots";
        for (client, want) in [(&a, vec![p.clone()]), (&b, vec![])] {
            let offered = client
                .complete_resource_simple(template, "project", p.as_str())
                .await
                .unwrap();
            assert_eq!(offered, want);
        }
    };
    with_cleanup(body, delete_teams(&pool, &[&team_a, &team_b])).await;
}

/// stdio with `CODEB_API_KEY`: the key is verified again on every call,
/// so revoking it (here from another process, straight in the database)
/// stops the running server from acting with it at once.
#[tokio::test(flavor = "multi_thread")]
async fn stdio_key_revoked_while_serving_is_refused() {
    use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
    use rmcp::ServiceExt;
    let team = super::common::unique_team("stdio-key");
    let key = mint_key(&team, "admin");
    let config = super::common::testbed().config.clone();
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(super::common::codeb_bin()).configure(|c| {
            c.arg("--config")
                .arg(&config)
                .arg("serve")
                .env("CODEB_LOG", "warn")
                .env("CODEB_API_KEY", &key);
        }),
    )
    .expect("spawn codeb serve");
    let client = ().serve(transport).await.expect("stdio initialize");
    let r = call(&client, "project_list", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{}", error_text(&r));
    let pool = super::common::db().await;
    let revoked = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_sha256 = $1")
        .bind(codeb::auth::hash_key(&key).to_vec())
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(revoked, 1);
    let r = call(&client, "project_list", json!({})).await;
    assert_eq!(r.is_error, Some(true), "a revoked key still acts");
    let text = error_text(&r);
    assert!(
        text.contains("CODEB_API_KEY") && text.contains("revoked"),
        "{text}"
    );
    assert!(!text.contains(&key), "{text}");
    client.cancel().await.unwrap();
    super::common::delete_teams(&pool, &[&team]).await;
}

/// Requests refused before MCP are audited (DESIGN §6): 401s as
/// `unauthenticated` without the presented key, a 429 as `rate_limited`
/// under the key's principal and team. The server has a state database of
/// its own, so the rows counted are exactly this test's.
#[tokio::test(flavor = "multi_thread")]
async fn refused_requests_are_audited() {
    use super::common::{FreshStateDb, RATE_LIMIT_VAR};
    use std::time::{Duration, Instant};
    let _guard = FAULT_LOCK.read().await;
    let fresh = FreshStateDb::create("audit401").await;
    let env = [
        ("CODEB_DATABASE__URL", fresh.url.as_str()),
        (RATE_LIMIT_VAR, "2"),
    ];
    let server = HttpServer::start_with(&super::common::testbed().config, &env).await;
    // A well-formed key that does not exist: its token is the canary.
    let canary = format!("Canary{}", uuid::Uuid::new_v4().simple());
    let unknown = format!("codeb_default_owner_{canary}");
    let refused = [
        post_raw(&server.url, &[]).await.status(),
        post_raw(&server.url, &[("x-api-key", "codeb_nonsense")])
            .await
            .status(),
        post_raw(&server.url, &[("x-api-key", unknown.as_str())])
            .await
            .status(),
    ];
    assert_eq!(refused.map(|s| s.as_u16()), [401, 401, 401]);
    let key = server.key.as_str();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            post_raw(&server.url, &[("x-api-key", key)])
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses[2], 429, "{statuses:?}");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!(
            "{}/{}",
            super::common::testbed()
                .database_url()
                .rsplit_once('/')
                .unwrap()
                .0,
            fresh.name
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    /// outcome, principal, team, error, the whole row as JSON.
    type Row = (String, String, Option<String>, Option<String>, String);
    let rows: Vec<Row> = loop {
        let rows = sqlx::query_as(
            "SELECT outcome, principal, team_id, error, row_to_json(a)::text
               FROM audit_log a ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if rows.len() >= 4 {
            break rows;
        }
        assert!(Instant::now() < deadline, "rows so far: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let outcomes: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "unauthenticated",
            "unauthenticated",
            "unauthenticated",
            "rate_limited"
        ],
        "{rows:?}"
    );
    for (_, principal, _, error, _) in &rows[..3] {
        assert_eq!(principal, "unauthenticated");
        assert!(
            error.as_deref().unwrap_or("").contains("API key"),
            "{error:?}"
        );
    }
    let limited = &rows[3];
    assert!(limited.1.starts_with("key:"), "{limited:?}");
    assert_eq!(limited.2.as_deref(), Some("default"));
    for row in &rows {
        assert!(
            !row.4.contains(&canary),
            "the presented key is audited: {}",
            row.4
        );
        assert!(!row.4.contains(key), "{}", row.4);
    }
    pool.close().await;
    drop(server);
    fresh.drop().await;
}

/// Two people means two principals (finding 4): every key belongs to a
/// principal and records who made it; admins mint only viewer and member
/// keys, owners any; admins revoke lesser keys and their own principal's,
/// never an owner's or another person's admin key.
#[tokio::test(flavor = "multi_thread")]
async fn only_owners_mint_admin_keys_and_admins_revoke_only_lesser_or_their_own() {
    use super::app_host::with_cleanup;
    use super::common::{db, delete_teams, mint_key_for, unique_team};
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let team = unique_team("keys");
    let owner = server
        .client_with_key(&mint_key_for(&team, "owner", "olga"))
        .await;
    let alice = server
        .client_with_key(&mint_key_for(&team, "admin", "alice"))
        .await;
    let key_id =
        |r: &rmcp::model::CallToolResult| structured(r)["key"]["id"].as_str().unwrap().to_string();
    let body = async {
        // An admin cannot make a second admin (or an owner) — for anyone.
        for (role, principal) in [
            ("admin", "mallory"),
            ("owner", "mallory"),
            ("admin", "alice"),
        ] {
            let r = call(
                &alice,
                "key_create",
                json!({"role": role, "principal": principal}),
            )
            .await;
            let text = error_text(&r);
            assert!(
                text.contains("cannot create") && text.contains("only an owner"),
                "{role}: {text}"
            );
        }
        let keys = structured(&call(&owner, "key_list", json!({})).await).clone();
        assert_eq!(
            keys["keys"].as_array().unwrap().len(),
            2,
            "nothing minted: {keys}"
        );
        // Member keys: her own by default, or another person's; each
        // records who made it.
        let r = call(&alice, "key_create", json!({"role": "member"})).await;
        let made = structured(&r).clone();
        assert_eq!(made["key"]["principal"], "alice", "{made}");
        assert!(
            made["key"]["created_by"]
                .as_str()
                .unwrap()
                .starts_with("alice (key "),
            "{made}"
        );
        let alices_member = key_id(&r);
        let r = call(
            &alice,
            "key_create",
            json!({"role": "viewer", "principal": "ci-deploy"}),
        )
        .await;
        assert_eq!(structured(&r)["key"]["principal"], "ci-deploy");
        let ci_viewer = key_id(&r);
        // A principal is one lowercase name; `legacy` is codeb's own.
        for bad in ["Alice", "legacy", "a b", "", "-x", "$(id)"] {
            let r = call(
                &alice,
                "key_create",
                json!({"role": "viewer", "principal": bad}),
            )
            .await;
            assert!(error_text(&r).contains("principal"), "{bad}");
        }
        // The owner mints admins for people, Alice's second one included.
        let r = call(
            &owner,
            "key_create",
            json!({"role": "admin", "principal": "bob"}),
        )
        .await;
        let made = structured(&r).clone();
        assert!(
            made["key"]["created_by"]
                .as_str()
                .unwrap()
                .starts_with("olga (key "),
            "{made}"
        );
        let bobs_admin = key_id(&r);
        let r = call(
            &owner,
            "key_create",
            json!({"role": "admin", "principal": "alice", "label": "alice laptop"}),
        )
        .await;
        let alices_second = key_id(&r);
        let owners_key = structured(&call(&owner, "key_list", json!({})).await)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["principal"] == "olga")
            .map(|k| k["id"].as_str().unwrap().to_string())
            .unwrap();
        // Alice cannot revoke the owner's key nor Bob's admin key ...
        for id in [&owners_key, &bobs_admin] {
            let r = call(&alice, "key_revoke", json!({"id": id})).await;
            let text = error_text(&r);
            assert!(
                text.contains("an admin cannot revoke") && text.contains("only an owner"),
                "{text}"
            );
        }
        assert!(
            structured(&call(&owner, "key_list", json!({})).await)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k["revoked_at"].is_null()),
            "nothing revoked"
        );
        // ... but lesser keys, and her own.
        for id in [&alices_member, &ci_viewer, &alices_second] {
            structured(&call(&alice, "key_revoke", json!({"id": id})).await);
        }
        // The owner revokes anyone's.
        structured(&call(&owner, "key_revoke", json!({"id": bobs_admin})).await);
    };
    with_cleanup(body, async { delete_teams(&db().await, &[&team]).await }).await;
}

/// Finding 8: a flood of guessed keys cannot hammer the state database.
/// Each key this server never verified spends one of a global budget of
/// lookups (here 10 a minute); the rest get 429 with Retry-After, a
/// repeated unknown key is answered from memory, and a key verified
/// before keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_keys_costs_a_bounded_number_of_lookups() {
    let _guard = FAULT_LOCK.read().await;
    const BUDGET: u64 = 10;
    let server = HttpServer::start_with(
        &super::common::testbed().config,
        &[("CODEB_AUTH__UNKNOWN_KEY_LOOKUPS_PER_MINUTE", "10")],
    )
    .await;
    let good = mint_key("default", "viewer");
    let before = post_raw(&server.url, &[("x-api-key", good.as_str())]).await;
    assert_ne!(before.status(), 401);
    let started = std::time::Instant::now();
    const GUESSES: usize = 200;
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..GUESSES {
        let guess = codeb::auth::generate_key("default", codeb::model::Role::Owner).unwrap();
        let resp = post_raw(&server.url, &[("x-api-key", guess.as_str())]).await;
        if resp.status() == 429 {
            assert!(resp.headers().contains_key("retry-after"));
        }
        *statuses.entry(resp.status().as_u16()).or_insert(0usize) += 1;
    }
    // One guess, again and again: looked up once at most.
    let same = codeb::auth::generate_key("default", codeb::model::Role::Owner).unwrap();
    for _ in 0..20 {
        let s = post_raw(&server.url, &[("x-api-key", same.as_str())])
            .await
            .status();
        assert!(s == 401 || s == 429, "{s}");
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    // The budget refills evenly: 10 at once, then 10 a minute.
    let allowed = BUDGET + (minutes * BUDGET as f64).ceil() as u64 + 1;
    let throttled = statuses.get(&429).copied().unwrap_or(0);
    assert!(
        throttled as u64 >= GUESSES as u64 - allowed,
        "most guesses must be refused without a lookup: {statuses:?}"
    );
    let metrics = reqwest::get(server.url.replace("/mcp", "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lookups: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("codeb_api_key_lookups_total "))
        .unwrap_or_else(|| panic!("no lookup counter in {metrics}"))
        .trim()
        .parse()
        .unwrap();
    // The good key's one lookup, and the budget.
    assert!(
        lookups <= allowed + 1,
        "{lookups} database lookups for {GUESSES} + 20 guesses (at most {allowed} allowed)"
    );
    // The key verified before the flood still works.
    let after = post_raw(&server.url, &[("x-api-key", good.as_str())]).await;
    assert!(
        after.status() != 401 && after.status() != 429,
        "{}",
        after.status()
    );
}
