//! Critical operations (issue [5] part 4, DESIGN §6) end to end over HTTP
//! with real keys: a confirmation the model cannot forge — the human through
//! elicitation (legacy) or input-required (2026-07-28), otherwise a second
//! admin key approving a pending approval bound to the plan hash, once,
//! before it expires, and only while the live state still matches.
//!
//! Two people means two principals: an approval needs another principal
//! than the request (not only another key); production `project_delete`
//! needs that second person even when the client could confirm itself;
//! an approval never carries over to a namesake project; and a database
//! with data is not deleted without a recent verified backup.

use std::sync::{Arc, Mutex};

use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    Implementation,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::{ErrorData, RoleClient};
use serde_json::{json, Value};

use super::common::{
    call, db, delete_project, delete_teams, error_text, insert_project, mint_key, mint_key_for,
    structured, unique_project, unique_team, HttpServer, FAULT_LOCK,
};
use super::domains::{dig_a, forget_domain, pdns_state};
use super::mcp_http::rpc_body;

/// A client whose human answers every elicitation: types `typed`, or
/// declines when None. Remembers the messages it was shown.
#[derive(Clone)]
pub(super) struct Human {
    pub typed: Option<String>,
    pub shown: Arc<Mutex<Vec<String>>>,
}

impl Human {
    pub fn typing(word: Option<&str>) -> Self {
        Self {
            typed: word.map(str::to_string),
            shown: Arc::default(),
        }
    }
}

impl rmcp::ClientHandler for Human {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("human-test", "1"),
        )
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = &request {
            self.shown.lock().unwrap().push(message.clone());
        }
        Ok(match &self.typed {
            Some(w) => {
                ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": w}))
            }
            None => ElicitResult::new(ElicitationAction::Decline),
        })
    }
}

/// A client that declares elicitation but fails every request for it
/// (no UI to show the form).
#[derive(Clone)]
struct NoUi;

impl rmcp::ClientHandler for NoUi {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("no-ui-test", "1"),
        )
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        Err(ErrorData::internal_error("no user interface here", None))
    }
}

pub(super) type Client = RunningService<RoleClient, ()>;

fn app_address() -> String {
    super::common::testbed().status["hosts"]["app"]["address"]
        .as_str()
        .expect("app address")
        .to_string()
}

/// A project (team `default`) with a domain set up for staging.
async fn project_with_domain(admin: &Client, prefix: &str) -> (String, String) {
    let p = unique_project(prefix);
    insert_project(&db().await, &p).await;
    let d = format!("{p}.example.test");
    let r = call(
        admin,
        "domain_setup",
        json!({"project": p, "environment": "staging", "domain": d}),
    )
    .await;
    structured(&r);
    assert_eq!(dig_a(&d).await, vec![app_address()], "domain is up");
    (p, d)
}

async fn cleanup(p: &str, d: &str) {
    forget_domain(d).await;
    delete_project(&db().await, p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn domain_delete_waits_for_a_second_admin_key() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let admin1 = server.client_with_key(&mint_key("default", "admin")).await;
    let admin2 = server.client_with_key(&mint_key("default", "admin")).await;
    let member = server.client_with_key(&mint_key("default", "member")).await;
    let stranger = server
        .client_with_key(&mint_key("other-team", "admin"))
        .await;
    let (p, d) = project_with_domain(&admin1, "crit").await;
    let args = json!({"project": p, "domain": d});

    // A dry run shows the plan and its hash; nothing changes.
    let dry = call(
        &admin1,
        "domain_delete",
        json!({"project": p, "domain": d, "dry_run": true}),
    )
    .await;
    let dry = structured(&dry).clone();
    assert_eq!(dry["status"], "planned", "{dry}");
    let hash = dry["plan"]["hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    assert_eq!(dry["plan"]["details"]["a"], json!([app_address()]), "{dry}");
    // A member may not even ask.
    let r = call(&member, "domain_delete", args.clone()).await;
    assert!(error_text(&r).contains("needs the admin role"));

    // Without elicitation: a pending approval, nothing changed yet.
    let r = call(&admin1, "domain_delete", args.clone()).await;
    let pending = structured(&r).clone();
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    assert_eq!(
        pending["plan"]["hash"],
        json!(hash),
        "bound to the plan shown"
    );
    let id = pending["approval_id"].as_str().unwrap().to_string();
    assert!(pending["summary"].as_str().unwrap().contains(&id));
    assert_eq!(dig_a(&d).await, vec![app_address()], "nothing changed");

    // The second admin sees it with its plan.
    let listed = call(&admin2, "approval_list", json!({})).await;
    let listed = structured(&listed).clone();
    let entry = listed["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == json!(id))
        .unwrap_or_else(|| panic!("{id} listed: {listed}"))
        .clone();
    assert_eq!(entry["tool"], "domain_delete");
    assert_eq!(entry["plan"]["hash"], json!(hash));
    assert_eq!(entry["status"], "pending");
    // Another team sees neither the approval nor can approve it.
    let theirs = call(&stranger, "approval_list", json!({})).await;
    assert!(!structured(&theirs).to_string().contains(&id));
    let r = call(&stranger, "approve", json!({"approval_id": id})).await;
    assert!(error_text(&r).contains("not found"), "{}", error_text(&r));
    // A member cannot approve; the requesting key cannot approve itself.
    let r = call(&member, "approve", json!({"approval_id": id})).await;
    assert!(error_text(&r).contains("needs the admin role"));
    let r = call(&admin1, "approve", json!({"approval_id": id})).await;
    assert!(
        error_text(&r).contains("a different principal"),
        "{}",
        error_text(&r)
    );
    assert_eq!(
        dig_a(&d).await,
        vec![app_address()],
        "still nothing changed"
    );

    // A dry run of approve says it would run.
    let r = call(
        &admin2,
        "approve",
        json!({"approval_id": id, "dry_run": true}),
    )
    .await;
    assert_eq!(structured(&r)["status"], "would_execute");
    // The second admin approves: it runs.
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    let done = structured(&r).clone();
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["outcome"]["domain"], json!(d));
    assert!(dig_a(&d).await.is_empty(), "A record gone");
    assert_eq!(pdns_state(&d).await, (None, false), "A and SRV gone");
    let listed = call(&admin2, "domain_list", json!({"project": p})).await;
    assert!(!structured(&listed).to_string().contains(&d));
    // Single use.
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    assert!(
        error_text(&r).contains("already used"),
        "{}",
        error_text(&r)
    );
    let all = call(&admin2, "approval_list", json!({"all": true})).await;
    let all = structured(&all).clone();
    let entry = all["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == json!(id))
        .unwrap()
        .clone();
    assert_eq!(entry["status"], "executed");
    assert!(entry["approved_by"].as_str().is_some());
    cleanup(&p, &d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_of_a_changed_state_or_past_expiry_are_refused() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let admin1 = server.client_with_key(&mint_key("default", "admin")).await;
    let admin2 = server.client_with_key(&mint_key("default", "admin")).await;
    let (p, d) = project_with_domain(&admin1, "crits").await;
    let args = json!({"project": p, "domain": d});

    // The live state changes after the request: the approval no longer applies.
    let r = call(&admin1, "domain_delete", args.clone()).await;
    let id = structured(&r)["approval_id"].as_str().unwrap().to_string();
    let ctx = codeb::ops::Ctx::new(
        codeb::config::Config::load(&super::common::testbed().config).unwrap(),
    );
    let pdns = codeb::ops::pdns::pdns_client(&ctx).await.unwrap();
    pdns.patch_rrsets(
        "example.test",
        &json!({"rrsets": [{"name": format!("{d}."), "type": "A", "ttl": 60, "changetype": "REPLACE",
            "records": [{"content": "10.77.0.99", "disabled": false}]}]}),
    )
    .await
    .unwrap();
    let r = call(
        &admin2,
        "approve",
        json!({"approval_id": id, "dry_run": true}),
    )
    .await;
    assert_eq!(structured(&r)["status"], "stale");
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    let text = error_text(&r);
    assert!(text.contains("live state changed"), "{text}");
    assert_eq!(dig_a(&d).await, vec!["10.77.0.99"], "nothing was deleted");
    assert!(
        !pdns_state(&d).await.1,
        "no route (staging has no active slot)"
    );
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    assert!(
        error_text(&r).contains("already used (refused"),
        "{}",
        error_text(&r)
    );

    // Expired: the request's time ran out (set in the database, as time
    // passing would).
    let r = call(&admin1, "domain_delete", args.clone()).await;
    let id = structured(&r)["approval_id"].as_str().unwrap().to_string();
    sqlx::query(
        "UPDATE approvals SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&db().await)
    .await
    .unwrap();
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    assert!(error_text(&r).contains("expired"), "{}", error_text(&r));
    assert_eq!(dig_a(&d).await, vec!["10.77.0.99"], "nothing was deleted");
    // Not a UUID, unknown id: clear errors without echoing the input.
    let r = call(&admin2, "approve", json!({"approval_id": "$(id)"})).await;
    let text = error_text(&r);
    assert!(
        text.contains("not a UUID") && !text.contains("$(id)"),
        "{text}"
    );
    let r = call(
        &admin2,
        "approve",
        json!({"approval_id": uuid::Uuid::new_v4().to_string()}),
    )
    .await;
    assert!(error_text(&r).contains("not found"));
    cleanup(&p, &d).await;
}

/// Two admins approving the same request at the same moment: it runs once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_approvals_run_the_operation_once() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let admin1 = server.client_with_key(&mint_key("default", "admin")).await;
    let admin2 = server.client_with_key(&mint_key("default", "admin")).await;
    let admin3 = server.client_with_key(&mint_key("default", "admin")).await;
    let (p, d) = project_with_domain(&admin1, "critc").await;
    let r = call(&admin1, "domain_delete", json!({"project": p, "domain": d})).await;
    let id = structured(&r)["approval_id"].as_str().unwrap().to_string();
    let (a, b) = tokio::join!(
        call(&admin2, "approve", json!({"approval_id": id})),
        call(&admin3, "approve", json!({"approval_id": id})),
    );
    let ran = [&a, &b].iter().filter(|r| r.is_error != Some(true)).count();
    assert_eq!(ran, 1, "exactly one approval runs: {a:?} {b:?}");
    let refused = if a.is_error == Some(true) { &a } else { &b };
    let text = error_text(refused);
    assert!(text.contains("used"), "{text}");
    let ops: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deployments d JOIN projects p ON p.id = d.project_id
          WHERE p.name = $1 AND d.operation = 'domain_delete'",
    )
    .bind(&p)
    .fetch_one(&db().await)
    .await
    .unwrap();
    assert_eq!(ops, 1, "one domain_delete operation");
    assert!(dig_a(&d).await.is_empty());
    cleanup(&p, &d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn elicitation_capable_clients_ask_the_human() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let admin = server.client_with_key(&mint_key("default", "admin")).await;
    let key = mint_key("default", "admin");
    let (p, d) = project_with_domain(&admin, "criti").await;
    let args = json!({"project": p, "domain": d});

    // Declined: nothing changes.
    let human = Human::typing(None);
    let client = server.client_as(&key, human.clone()).await;
    let r = call(&client, "domain_delete", args.clone()).await;
    assert_eq!(structured(&r)["status"], "declined");
    let shown = human.shown.lock().unwrap().clone();
    assert_eq!(shown.len(), 1);
    assert!(
        shown[0].contains(&d) && shown[0].contains("not the assistant"),
        "{shown:?}"
    );
    assert_eq!(dig_a(&d).await, vec![app_address()], "nothing changed");
    client.cancel().await.unwrap();
    // Accepted with the wrong name: refused, nothing changes.
    let client = server
        .client_as(&key, Human::typing(Some("something-else")))
        .await;
    let r = call(&client, "domain_delete", args.clone()).await;
    assert!(error_text(&r).contains("was not"), "{}", error_text(&r));
    assert_eq!(dig_a(&d).await, vec![app_address()], "nothing changed");
    client.cancel().await.unwrap();
    // A client that cannot ask: a pending approval instead, nothing changed.
    let client = server.client_as(&key, NoUi).await;
    let r = call(&client, "domain_delete", args.clone()).await;
    let pending = structured(&r).clone();
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    assert!(
        pending["summary"]
            .as_str()
            .unwrap()
            .contains("could not ask the user"),
        "{pending}"
    );
    assert_eq!(dig_a(&d).await, vec![app_address()], "nothing changed");
    client.cancel().await.unwrap();
    // Accepted with the name: done at once, no approval needed.
    let client = server.client_as(&key, Human::typing(Some(&d))).await;
    let r = call(&client, "domain_delete", args.clone()).await;
    let done = structured(&r).clone();
    assert_eq!(done["status"], "executed", "{done}");
    assert!(dig_a(&d).await.is_empty(), "A record gone");
    client.cancel().await.unwrap();
    cleanup(&p, &d).await;
}

/// Over stdio (how Claude Code usually runs codeb) the local operator's
/// client is asked the same way.
#[tokio::test(flavor = "multi_thread")]
async fn stdio_clients_ask_the_human_too() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let admin = server.client_with_key(&mint_key("default", "admin")).await;
    let (p, d) = project_with_domain(&admin, "critio").await;
    let args = json!({"project": p, "domain": d});
    let human = Human::typing(None);
    let client = super::common::stdio_client_as(human.clone()).await;
    let r = call(&client, "domain_delete", args.clone()).await;
    assert_eq!(structured(&r)["status"], "declined");
    assert_eq!(human.shown.lock().unwrap().len(), 1);
    assert_eq!(dig_a(&d).await, vec![app_address()], "nothing changed");
    client.cancel().await.unwrap();
    let client = super::common::stdio_client_as(Human::typing(Some(&d))).await;
    let r = call(&client, "domain_delete", args).await;
    assert_eq!(structured(&r)["status"], "executed");
    assert!(dig_a(&d).await.is_empty(), "A record gone");
    client.cancel().await.unwrap();
    cleanup(&p, &d).await;
}

/// A 2026-07-28 `tools/call` of `tool` over plain HTTP, declaring
/// elicitation, optionally answering an earlier input-required result.
pub(super) async fn call_2026(
    server: &HttpServer,
    key: &str,
    tool: &str,
    args: Value,
    answer: Option<(&str, Value)>,
) -> Value {
    let mut params = json!({
        "name": tool,
        "arguments": args,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "stateless-human", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}
        }
    });
    if let Some((state, response)) = answer {
        params["requestState"] = json!(state);
        params["inputResponses"] = json!({"confirm": response});
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
    let resp = reqwest::Client::new()
        .post(&server.url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    rpc_body(resp).await
}

#[tokio::test(flavor = "multi_thread")]
async fn input_required_confirmation_for_2026_07_28_clients() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let admin = server.client_with_key(&mint_key("default", "admin")).await;
    let key = mint_key("default", "admin");
    let other_key = mint_key("default", "admin");
    let (p, d) = project_with_domain(&admin, "critr").await;
    let args = json!({"project": p, "domain": d});

    let first = call_2026(&server, &key, "domain_delete", args.clone(), None).await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let request = &result["inputRequests"]["confirm"];
    assert_eq!(request["method"], "elicitation/create", "{first}");
    assert!(request["params"]["message"].as_str().unwrap().contains(&d));
    let state = result["requestState"].as_str().unwrap().to_string();
    assert_eq!(dig_a(&d).await, vec![app_address()], "nothing changed yet");

    // Declined: nothing changes, and the state is used up.
    let declined = call_2026(
        &server,
        &key,
        "domain_delete",
        args.clone(),
        Some((&state, json!({"action": "decline"}))),
    )
    .await;
    assert_eq!(
        declined["result"]["structuredContent"]["status"], "declined",
        "{declined}"
    );
    assert_eq!(dig_a(&d).await, vec![app_address()], "nothing changed");
    let accept = json!({"action": "accept", "content": {"confirm": d}});
    let replay = call_2026(
        &server,
        &key,
        "domain_delete",
        args.clone(),
        Some((&state, accept.clone())),
    )
    .await;
    assert_eq!(replay["result"]["isError"], true, "{replay}");
    assert_eq!(
        dig_a(&d).await,
        vec![app_address()],
        "a used state does nothing"
    );

    // A fresh request; its state is bound to the key that asked.
    let again = call_2026(&server, &key, "domain_delete", args.clone(), None).await;
    let state = again["result"]["requestState"]
        .as_str()
        .unwrap()
        .to_string();
    let stolen = call_2026(
        &server,
        &other_key,
        "domain_delete",
        args.clone(),
        Some((&state, accept.clone())),
    )
    .await;
    assert_eq!(stolen["result"]["isError"], true, "{stolen}");
    assert_eq!(dig_a(&d).await, vec![app_address()], "nothing changed");
    let forged = call_2026(
        &server,
        &key,
        "domain_delete",
        args.clone(),
        Some(("not-a-state", accept.clone())),
    )
    .await;
    assert_eq!(forged["result"]["isError"], true, "{forged}");
    // The human accepts with the name: done.
    let done = call_2026(
        &server,
        &key,
        "domain_delete",
        args.clone(),
        Some((&state, accept)),
    )
    .await;
    assert_eq!(
        done["result"]["structuredContent"]["status"], "executed",
        "{done}"
    );
    assert!(dig_a(&d).await.is_empty(), "A record gone");
    cleanup(&p, &d).await;
}

/// Whether `p` is a live project (slot_status answers for it).
pub(super) async fn exists(client: &Client, p: &str) -> bool {
    call(client, "slot_status", json!({"project": p}))
        .await
        .is_error
        != Some(true)
}

/// A project created through MCP, with a staging deploy running when
/// `deploy`.
pub(super) async fn live_project(admin: &Client, prefix: &str, deploy: bool) -> String {
    let p = unique_project(prefix);
    structured(&call(admin, "project_create", json!({"project": p})).await);
    if deploy {
        let r = call(
            admin,
            "deploy",
            json!({"project": p, "environment": "staging", "image": super::lifecycle::image("v1")}),
        )
        .await;
        structured(&r);
    }
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn project_delete_by_the_human_or_a_second_admin() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let key1 = mint_key("default", "admin");
    let admin1 = server.client_with_key(&key1).await;
    let admin2 = server.client_with_key(&mint_key("default", "admin")).await;

    // An elicitation-capable client: decline changes nothing, accept deletes.
    let p1 = live_project(&admin1, "pdelh", true).await;
    let human = Human::typing(None);
    let client = server.client_as(&key1, human.clone()).await;
    let r = call(&client, "project_delete", json!({"project": p1})).await;
    assert_eq!(structured(&r)["status"], "declined");
    assert!(human.shown.lock().unwrap()[0].contains(&p1));
    assert!(
        exists(&admin1, &p1).await,
        "declined: the project is still there"
    );
    let slots = call(&admin1, "slot_status", json!({"project": p1})).await;
    assert!(
        structured(&slots).to_string().contains("\"deployed\""),
        "its deploy still runs: {}",
        structured(&slots)
    );
    client.cancel().await.unwrap();
    let client = server.client_as(&key1, Human::typing(Some(&p1))).await;
    let r = call(&client, "project_delete", json!({"project": p1})).await;
    let done = structured(&r).clone();
    assert_eq!(done["status"], "executed", "{done}");
    assert!(!exists(&admin1, &p1).await, "deleted");
    let listed = call(&admin1, "project_list", json!({"limit": 100})).await;
    assert!(!structured(&listed).to_string().contains(&p1));
    // The name is free again.
    structured(&call(&admin1, "project_create", json!({"project": p1})).await);
    let r = call(&client, "project_delete", json!({"project": p1})).await;
    assert_eq!(structured(&r)["status"], "executed");
    client.cancel().await.unwrap();

    // Without elicitation: a pending approval for a second admin key.
    let p2 = live_project(&admin1, "pdela", true).await;
    let r = call(&admin1, "project_delete", json!({"project": p2})).await;
    let pending = structured(&r).clone();
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_string();
    assert!(exists(&admin1, &p2).await, "nothing changed yet");
    let r = call(&admin1, "approve", json!({"approval_id": id})).await;
    assert!(error_text(&r).contains("a different principal"));
    assert!(exists(&admin1, &p2).await, "the requester cannot approve");
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    let done = structured(&r).clone();
    assert_eq!(done["status"], "executed", "{done}");
    assert!(!exists(&admin1, &p2).await, "deleted by the second admin");
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    assert!(
        error_text(&r).contains("already used"),
        "{}",
        error_text(&r)
    );

    // The project changes after the request: refused, nothing deleted.
    let p3 = live_project(&admin1, "pdels", false).await;
    let r = call(&admin1, "project_delete", json!({"project": p3})).await;
    let id = structured(&r)["approval_id"].as_str().unwrap().to_string();
    let r = call(
        &admin1,
        "env_set",
        json!({"project": p3, "environment": "staging", "set": {"FEATURE": "on"}}),
    )
    .await;
    structured(&r);
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    assert!(
        error_text(&r).contains("live state changed"),
        "{}",
        error_text(&r)
    );
    assert!(
        exists(&admin1, &p3).await,
        "a stale approval deletes nothing"
    );
    // After expiry: refused, nothing deleted.
    let r = call(&admin1, "project_delete", json!({"project": p3})).await;
    let id = structured(&r)["approval_id"].as_str().unwrap().to_string();
    sqlx::query(
        "UPDATE approvals SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&db().await)
    .await
    .unwrap();
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    assert!(error_text(&r).contains("expired"), "{}", error_text(&r));
    assert!(
        exists(&admin1, &p3).await,
        "an expired approval deletes nothing"
    );
    // Clean up through the tool itself.
    let r = call(&admin1, "project_delete", json!({"project": p3})).await;
    let id = structured(&r)["approval_id"].as_str().unwrap().to_string();
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    assert_eq!(structured(&r)["status"], "executed");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_restore_runs_only_after_approval_and_counts_rows() {
    use sqlx::{Connection, Executor};
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let admin1 = server.client_with_key(&mint_key("default", "admin")).await;
    let admin2 = server.client_with_key(&mint_key("default", "admin")).await;
    let p = live_project(&admin1, "rst", false).await;
    let names = codeb::model::StorageNames::new(&p, codeb::model::Environment::Staging).unwrap();
    let url = {
        let base = super::common::testbed().database_url();
        format!("{}/{}", base.rsplit_once('/').unwrap().0, names.pg)
    };
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    // Tables as the application makes them: owned by the project's role.
    c.execute(format!("SET ROLE {}", names.pg).as_str())
        .await
        .unwrap();
    c.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .await
        .unwrap();
    c.execute("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    let r = call(
        &admin1,
        "backup_create",
        json!({"project": p, "environment": "staging"}),
    )
    .await;
    let backup_id = structured(&r)["backup_id"].as_str().unwrap().to_string();
    c.execute("DELETE FROM items WHERE id > 400").await.unwrap();
    assert_eq!(count_items(&mut c).await, 400);

    let args = json!({"project": p, "backup_id": backup_id});
    let r = call(
        &admin1,
        "backup_restore",
        json!({"project": p, "backup_id": backup_id, "dry_run": true}),
    )
    .await;
    let plan = structured(&r).clone();
    assert_eq!(plan["status"], "planned", "{plan}");
    assert!(
        plan["plan"]["details"].to_string().contains(&names.pg),
        "{plan}"
    );
    let r = call(&admin1, "backup_restore", args.clone()).await;
    let pending = structured(&r).clone();
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_string();
    assert_eq!(
        count_items(&mut c).await,
        400,
        "nothing restored before approval"
    );
    let r = call(&admin1, "approve", json!({"approval_id": id})).await;
    assert!(error_text(&r).contains("a different principal"));
    assert_eq!(
        count_items(&mut c).await,
        400,
        "nothing restored by the requester"
    );
    let r = call(&admin2, "approve", json!({"approval_id": id})).await;
    let done = structured(&r).clone();
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(
        count_items(&mut c).await,
        1000,
        "the backed-up rows are back"
    );
    let reported = done["outcome"].to_string();
    assert!(
        reported.contains("items") && reported.contains("1000"),
        "row counts reported: {done}"
    );
    assert!(done["summary"].as_str().unwrap().contains("1000") || reported.contains("1000"));
    // The application's role still owns and uses its table.
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'items'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(owner, names.pg);
    c.execute("INSERT INTO items VALUES (5000, 'after restore')")
        .await
        .unwrap();
    drop(c);
    let r = call(&admin1, "project_delete", json!({"project": p})).await;
    let id = structured(&r)["approval_id"].as_str().unwrap().to_string();
    structured(&call(&admin2, "approve", json!({"approval_id": id})).await);
}

async fn count_items(c: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(c)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// Two people means two principals (issue [6] findings 4 and 7, DESIGN §6).

/// Makes `rows` rows in a table owned by the project's role in the
/// database of `p`'s `environment`, as its application would.
async fn put_rows(p: &str, environment: codeb::model::Environment, rows: i64) {
    use sqlx::{Connection, Executor};
    let names = codeb::model::StorageNames::new(p, environment).unwrap();
    let base = super::common::testbed().database_url();
    let url = format!("{}/{}", base.rsplit_once('/').unwrap().0, names.pg);
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    c.execute(format!("SET ROLE {}", names.pg).as_str())
        .await
        .unwrap();
    c.execute("CREATE TABLE orders (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .await
        .unwrap();
    c.execute(
        format!("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, {rows}) g")
            .as_str(),
    )
    .await
    .unwrap();
}

/// The id of a new pending approval of `tool` with `args`, asked by `client`.
async fn request(client: &Client, tool: &str, args: Value) -> (String, Value) {
    let r = call(client, tool, args).await;
    let pending = structured(&r).clone();
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    (
        pending["approval_id"].as_str().unwrap().to_string(),
        pending,
    )
}

/// Deletes `p` through the tools: `asker` requests, `approver` approves.
async fn delete_through_approval(asker: &Client, approver: &Client, p: &str) {
    let (id, _) = request(asker, "project_delete", json!({"project": p})).await;
    let r = call(approver, "approve", json!({"approval_id": id})).await;
    assert_eq!(structured(&r)["status"], "executed", "{:?}", r.content);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_needs_another_principal_not_another_key() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let team = unique_team("twokeys");
    // One person, two admin keys (say, laptop and CI); another person.
    let alice1 = server
        .client_with_key(&mint_key_for(&team, "admin", "alice"))
        .await;
    let alice2 = server
        .client_with_key(&mint_key_for(&team, "admin", "alice"))
        .await;
    let bob = server
        .client_with_key(&mint_key_for(&team, "admin", "bob"))
        .await;
    let body = async {
        let p = live_project(&alice1, "twok", false).await;
        let (id, pending) = request(&alice1, "project_delete", json!({"project": p})).await;
        let summary = pending["summary"].as_str().unwrap();
        assert!(
            summary.contains("second person") && summary.contains("other than principal alice"),
            "{summary}"
        );
        // Alice's other key is still Alice (finding 4): refused, also as a
        // dry run, and nothing changes.
        for dry_run in [true, false] {
            let r = call(
                &alice2,
                "approve",
                json!({"approval_id": id, "dry_run": dry_run}),
            )
            .await;
            let text = error_text(&r);
            assert!(
                text.contains("requested by principal alice")
                    && text.contains("a different principal"),
                "{text}"
            );
        }
        assert!(exists(&alice1, &p).await, "one person cannot approve alone");
        // Another person approves: it runs, and the list says who did what.
        let r = call(&bob, "approve", json!({"approval_id": id})).await;
        assert_eq!(structured(&r)["status"], "executed", "{:?}", r.content);
        assert!(!exists(&alice1, &p).await, "deleted by the second person");
        let all = call(&bob, "approval_list", json!({"all": true})).await;
        let entry = structured(&all)["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == json!(id))
            .cloned()
            .unwrap();
        assert!(
            entry["requested_by"]
                .as_str()
                .unwrap()
                .starts_with("alice (key:"),
            "{entry}"
        );
        assert!(
            entry["approved_by"]
                .as_str()
                .unwrap()
                .starts_with("bob (key:"),
            "{entry}"
        );
    };
    super::app_host::with_cleanup(body, async { delete_teams(&db().await, &[&team]).await }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn elicitation_alone_never_confirms_a_production_project_delete() {
    use codeb::model::Environment;
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let team = unique_team("polic");
    let alice_key = mint_key_for(&team, "admin", "alice");
    let alice = server.client_with_key(&alice_key).await;
    let bob = server
        .client_with_key(&mint_key_for(&team, "admin", "bob"))
        .await;
    let body = async {
        // Production holds data (backed up, so the backup rule is met).
        let p = live_project(&alice, "polp", false).await;
        put_rows(&p, Environment::Production, 10).await;
        let r = call(
            &alice,
            "backup_create",
            json!({"project": p, "environment": "production"}),
        )
        .await;
        structured(&r);
        let r = call(
            &alice,
            "project_delete",
            json!({"project": p, "dry_run": true}),
        )
        .await;
        let dry = structured(&r).clone();
        assert!(
            dry["summary"]
                .as_str()
                .unwrap()
                .contains("approval by a second person (auth.approval_required: project_delete in production)"),
            "{dry}"
        );
        assert_eq!(
            dry["plan"]["details"]["environments"][0]["database_has_data"], true,
            "{dry}"
        );
        // A client whose human — or model — would answer the form is not
        // asked: the call becomes a pending approval, nothing is deleted.
        let human = Human::typing(Some(&p));
        let client = server.client_as(&alice_key, human.clone()).await;
        let r = call(&client, "project_delete", json!({"project": p})).await;
        let pending = structured(&r).clone();
        assert_eq!(pending["status"], "pending_approval", "{pending}");
        let summary = pending["summary"].as_str().unwrap();
        assert!(
            summary.contains("auth.approval_required") && summary.contains("needs a second person"),
            "{summary}"
        );
        assert!(human.shown.lock().unwrap().is_empty(), "no form was shown");
        client.cancel().await.unwrap();
        // The same for a 2026-07-28 client: no input-required round.
        let v = call_2026(
            &server,
            &alice_key,
            "project_delete",
            json!({"project": p}),
            None,
        )
        .await;
        assert_eq!(
            v["result"]["structuredContent"]["status"], "pending_approval",
            "{v}"
        );
        assert!(exists(&alice, &p).await, "nothing was deleted");
        // A second person approves.
        let id = pending["approval_id"].as_str().unwrap();
        let r = call(&bob, "approve", json!({"approval_id": id})).await;
        assert_eq!(structured(&r)["status"], "executed", "{:?}", r.content);
        assert!(!exists(&alice, &p).await);

        // Outside production the human's confirmation still suffices.
        let q = live_project(&alice, "polq", false).await;
        put_rows(&q, Environment::Staging, 10).await;
        let r = call(
            &alice,
            "backup_create",
            json!({"project": q, "environment": "staging"}),
        )
        .await;
        structured(&r);
        let human = Human::typing(Some(&q));
        let client = server.client_as(&alice_key, human.clone()).await;
        let r = call(&client, "project_delete", json!({"project": q})).await;
        assert_eq!(structured(&r)["status"], "executed", "{:?}", r.content);
        assert_eq!(human.shown.lock().unwrap().len(), 1);
        assert!(!exists(&alice, &q).await);
        client.cancel().await.unwrap();
    };
    super::app_host::with_cleanup(body, async { delete_teams(&db().await, &[&team]).await }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_never_applies_to_a_project_created_again_under_its_name() {
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let (team_a, team_b) = (unique_team("again-a"), unique_team("again-b"));
    let a1 = server
        .client_with_key(&mint_key_for(&team_a, "admin", "alice"))
        .await;
    let a2 = server
        .client_with_key(&mint_key_for(&team_a, "admin", "bob"))
        .await;
    let b_key = mint_key_for(&team_b, "admin", "carol");
    let b1 = server.client_with_key(&b_key).await;
    let p = unique_project("again");
    let body = async {
        structured(&call(&a1, "project_create", json!({"project": p})).await);
        // Alice asks to delete p; the approval waits. Meanwhile p is
        // deleted (another approval) and created again by the same team —
        // with the very same plan: ports, env versions, storage names. (A
        // concurrent test may take the freed ports in between; then the
        // old request is stale anyway, and the round is tried again, a
        // bounded number of times.)
        let mut old_id = None;
        for _ in 0..10 {
            let (id, old) = request(&a1, "project_delete", json!({"project": p})).await;
            delete_through_approval(&a1, &a2, &p).await;
            structured(&call(&a1, "project_create", json!({"project": p})).await);
            let r = call(
                &a1,
                "project_delete",
                json!({"project": p, "dry_run": true}),
            )
            .await;
            let now = structured(&r)["plan"].clone();
            if now["details"] == old["plan"]["details"] {
                assert_ne!(
                    now["hash"], old["plan"]["hash"],
                    "the hash binds the project id"
                );
                old_id = Some(id);
                break;
            }
        }
        let old_id = old_id.expect("a round where the recreated project's plan equals the old one");
        // Bob approving Alice's old request: refused, as a dry run too,
        // and nothing is deleted (finding 7).
        let r = call(
            &a2,
            "approve",
            json!({"approval_id": old_id, "dry_run": true}),
        )
        .await;
        let stale = structured(&r).clone();
        assert_eq!(stale["status"], "stale", "{stale}");
        assert!(
            stale["summary"]
                .as_str()
                .unwrap()
                .contains("deleted and created again"),
            "{stale}"
        );
        let r = call(&a2, "approve", json!({"approval_id": old_id})).await;
        let text = error_text(&r);
        assert!(text.contains("deleted and created again"), "{text}");
        assert!(exists(&a1, &p).await, "the new project is untouched");
        let r = call(&a2, "approve", json!({"approval_id": old_id})).await;
        assert!(
            error_text(&r).contains("already used (refused"),
            "{}",
            error_text(&r)
        );

        // Across teams: Alice asks again; p is deleted and team B creates
        // its own p with the same plan. Team A's approval does not reach
        // it, and the answer does not tell that B's project exists.
        let mut old_id = None;
        for _ in 0..10 {
            let (id, old) = request(&a1, "project_delete", json!({"project": p})).await;
            delete_through_approval(&a1, &a2, &p).await;
            structured(&call(&b1, "project_create", json!({"project": p})).await);
            let r = call(
                &b1,
                "project_delete",
                json!({"project": p, "dry_run": true}),
            )
            .await;
            let now = structured(&r)["plan"].clone();
            if now["details"] == old["plan"]["details"] {
                assert_ne!(
                    now["hash"], old["plan"]["hash"],
                    "the hash binds id and team"
                );
                old_id = Some(id);
                break;
            }
            // Back to team A for another round.
            let c = server.client_as(&b_key, Human::typing(Some(&p))).await;
            let r = call(&c, "project_delete", json!({"project": p})).await;
            assert_eq!(structured(&r)["status"], "executed", "{:?}", r.content);
            c.cancel().await.unwrap();
            structured(&call(&a1, "project_create", json!({"project": p})).await);
        }
        let old_id = old_id.expect("a round where team B's project has the same plan");
        let r = call(&a2, "approve", json!({"approval_id": old_id})).await;
        let text = error_text(&r);
        assert!(text.contains("no longer exists"), "{text}");
        assert!(exists(&b1, &p).await, "team B's project is untouched");
        // Team B removes its project (nothing in production: its human's
        // confirmation suffices).
        let c = server.client_as(&b_key, Human::typing(Some(&p))).await;
        let r = call(&c, "project_delete", json!({"project": p})).await;
        assert_eq!(structured(&r)["status"], "executed", "{:?}", r.content);
        c.cancel().await.unwrap();
    };
    super::app_host::with_cleanup(body, async {
        delete_teams(&db().await, &[&team_a, &team_b]).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn project_delete_needs_a_recent_verified_backup_of_every_database_with_data() {
    use codeb::model::Environment;
    let _guard = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let team = unique_team("bkrule");
    let a1 = server
        .client_with_key(&mint_key_for(&team, "admin", "alice"))
        .await;
    let a2 = server
        .client_with_key(&mint_key_for(&team, "admin", "bob"))
        .await;
    let body = async {
        let p = live_project(&a1, "bkr", false).await;
        put_rows(&p, Environment::Staging, 3).await;
        let fix = format!(r#"backup_create {{"project": "{p}", "environment": "staging"}}"#);
        // Refused, as a dry run and for real, naming the exact call that
        // fixes it; the empty databases need nothing.
        for dry_run in [true, false] {
            let r = call(
                &a1,
                "project_delete",
                json!({"project": p, "dry_run": dry_run}),
            )
            .await;
            let text = error_text(&r);
            assert!(text.contains(&fix), "{text}");
            assert!(text.contains("Nothing was changed"), "{text}");
            assert!(!text.contains("production"), "{text}");
        }
        assert!(exists(&a1, &p).await);
        let listed = call(&a1, "approval_list", json!({})).await;
        assert!(
            !structured(&listed).to_string().contains(&p),
            "no approval was requested"
        );
        // A backup older than the limit (24 h by default) does not count.
        let r = call(
            &a1,
            "backup_create",
            json!({"project": p, "environment": "staging"}),
        )
        .await;
        let backup_id = structured(&r)["backup_id"].as_str().unwrap().to_string();
        sqlx::query(
            "UPDATE backups SET created_at = now() - interval '25 hours',
                    finished_at = now() - interval '25 hours' WHERE id = $1::uuid",
        )
        .bind(&backup_id)
        .execute(&db().await)
        .await
        .unwrap();
        let r = call(&a1, "project_delete", json!({"project": p})).await;
        assert!(error_text(&r).contains(&fix), "{}", error_text(&r));
        // A fresh one: the delete goes ahead (to approval).
        structured(
            &call(
                &a1,
                "backup_create",
                json!({"project": p, "environment": "staging"}),
            )
            .await,
        );
        delete_through_approval(&a1, &a2, &p).await;
        assert!(!exists(&a1, &p).await);
    };
    super::app_host::with_cleanup(body, async { delete_teams(&db().await, &[&team]).await }).await;
}
