//! MCP over stdio against the testbed, with rmcp's client. The checks in
//! `exercise_tools` run over HTTP as well (mcp_http).

use rmcp::service::RunningService;
use rmcp::RoleClient;
use serde_json::{json, Value};

use super::common::{
    call, db, delete_project, error_text, insert_project, stdio_client, structured, unique_project,
    FAULT_LOCK,
};

/// Every tool through a real client: the healthy testbed, a registered
/// project, and bad input that must come back as isError.
pub async fn exercise_tools(client: &RunningService<RoleClient, ()>) {
    let info = client.peer_info().expect("initialized");
    let server_info = info.server_info.as_ref().expect("serverInfo set");
    assert_eq!(server_info.name, "codeb");
    assert_eq!(server_info.version, env!("CARGO_PKG_VERSION"));

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for t in ["health_check", "project_list", "slot_status"] {
        assert!(names.contains(&t), "{t} listed: {names:?}");
    }

    // health_check: all four servers with per-service detail.
    let r = call(client, "health_check", json!({})).await;
    let v = structured(&r);
    // Servers only: the environments of other tests running meanwhile may
    // be mid-deploy or broken on purpose (they count in `healthy`).
    assert!(
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["healthy"] == json!(true)),
        "testbed servers healthy: {}",
        v["summary"]
    );
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("4/4 servers healthy"),
        "{}",
        v["summary"]
    );
    let services = |server: &str| -> Vec<String> {
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == server)
            .unwrap_or_else(|| panic!("{server} reported"))["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["service"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(services("app"), ["podman", "caddy_admin", "pdns_api"]);
    assert_eq!(services("storage"), ["postgres", "redis", "registry"]);
    assert_eq!(services("streaming"), ["streaming_health"]);
    assert_eq!(services("backup"), ["backup_disk"]);
    assert!(v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["latency_ms"].is_u64()));
    assert_eq!(v["database"]["healthy"], json!(true));

    // project_list / slot_status over a project registered in the database.
    let pool = db().await;
    let name = unique_project("mcp");
    insert_project(&pool, &name).await;
    let mut cursor: Option<String> = None;
    let mut seen = false;
    for _ in 0..100 {
        let mut args = json!({"limit": 50});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let r = call(client, "project_list", args).await;
        let v = structured(&r).clone();
        assert!(v["summary"].is_string());
        seen |= v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == json!(name));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(seen, "project_list shows {name}");

    let r = call(
        client,
        "slot_status",
        json!({"project": name, "environment": "production"}),
    )
    .await;
    let v = structured(&r);
    let slots = v["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    assert!(
        slots
            .iter()
            .all(|s| s["state"] == "empty" && s["container"].is_null() && s["mismatch"].is_null()),
        "{v}"
    );
    assert_eq!(v["observe_error"], Value::Null, "podman was asked: {v}");
    assert!(
        v["summary"].as_str().unwrap().contains("active: none"),
        "{}",
        v["summary"]
    );

    let r = call(client, "slot_status", json!({"project": name})).await;
    assert_eq!(structured(&r)["slots"].as_array().unwrap().len(), 6);

    // Bad input: isError with a message that says what to do.
    // 1 MB of text: under the 1 MiB body limit with the JSON-RPC envelope.
    let huge = "a".repeat(1_000_000);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("slot_status", json!({"project": ""}), "empty string"),
        ("slot_status", json!({"project": "-rf"}), "is invalid"),
        ("slot_status", json!({"project": "shop\nrm"}), "is invalid"),
        (
            "slot_status",
            json!({"project": huge}),
            "a value of 1000000 bytes",
        ),
        (
            "slot_status",
            json!({"project": "no-such-project"}),
            "not found",
        ),
        (
            "slot_status",
            json!({"project": name, "environment": "prod"}),
            "environment \"prod\" is unknown; use production, staging or preview",
        ),
        ("slot_status", json!({}), "missing field"),
        (
            "slot_status",
            json!({"project": name, "extra": 1}),
            "unknown field",
        ),
        (
            "health_check",
            json!({"server": "-oProxyCommand=x"}),
            "unknown server",
        ),
        ("health_check", json!({"server": ""}), "unknown server"),
        ("project_list", json!({"limit": 0}), "between 1 and 200"),
        ("project_list", json!({"cursor": "$(id)"}), "cursor"),
    ];
    for (tool, args, expect) in cases {
        let r = call(client, tool, args.clone()).await;
        let text = error_text(&r);
        assert!(text.contains(expect), "{tool} {}: {text}", short(&args));
        assert!(text.len() < 1000, "error text stays short");
    }

    // Prompts and resources.
    let prompts = client.list_all_prompts().await.unwrap();
    let mut prompt_names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    prompt_names.sort();
    assert_eq!(prompt_names, ["incident_rollback", "ship"]);
    let Value::Object(args) = json!({"project": name}) else {
        unreachable!()
    };
    let p = client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("ship").with_arguments(args))
        .await
        .unwrap();
    assert!(format!("{:?}", p.messages).contains(&name));
    let Value::Object(bad) = json!({"project": "-x"}) else {
        unreachable!()
    };
    assert!(client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("ship").with_arguments(bad))
        .await
        .is_err());
    let templates = client.list_all_resource_templates().await.unwrap();
    assert_eq!(templates.len(), 2);
    let uri = format!("codeb://projects/{name}/staging/slots");
    let r = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
        .await
        .unwrap();
    let text = match &r.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("text contents expected: {other:?}"),
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["slots"].as_array().unwrap().len(), 2, "{v}");
    let missing = format!("codeb://deployments/{}/log", uuid::Uuid::new_v4());
    assert!(client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(missing))
        .await
        .is_err());

    delete_project(&pool, &name).await;
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(80).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_tools_against_testbed() {
    let _guard = FAULT_LOCK.read().await;
    let client = stdio_client().await;
    exercise_tools(&client).await;
    client.cancel().await.unwrap();
}
