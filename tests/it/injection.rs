//! The injection corpus (issue [5] acceptance): every string field of every
//! tool in `tools/list` — strings inside maps and arrays too (env_set keys,
//! values and unset items) — receives each hostile value, with the tool's
//! other required fields valid (a real project created for the test). Each
//! call must come back as an `isError` with a clear, bounded message that
//! does not echo the value, except where the field is data (listed in
//! `data_field`, each with its reason): those values are checked to be
//! accepted only as inert data. Afterwards the deployment journal shows no
//! operation and no command for the project, and the server still serves.

use std::time::Instant;

use rmcp::model::CallToolRequestParams;
use serde_json::{json, Map, Value};

use super::common::{call, db, structured, unique_project, HttpServer, FAULT_LOCK};
use super::lifecycle::image;

/// Longest error text accepted.
const MAX_ERROR_BYTES: usize = 2048;
/// Longest wait for one answer: a refusal takes milliseconds.
const CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);
/// Size of the huge value: under the 1 MiB body limit with the JSON around it.
const HUGE_BYTES: usize = 1_000_000;

/// The hostile values: (label, value).
fn corpus() -> Vec<(&'static str, String)> {
    vec![
        ("leading -", "-rf".into()),
        ("option", "--help".into()),
        ("semicolon", "shop;id".into()),
        ("command substitution", "$(id)".into()),
        ("backticks", "`id`".into()),
        ("newline", "shop\nid".into()),
        ("NUL", "shop\0id".into()),
        ("path traversal", "../../etc/passwd".into()),
        ("Cyrillic look-alike", "\u{0455}hop".into()),
        (
            "fullwidth look-alike",
            "\u{ff53}\u{ff48}\u{ff4f}\u{ff50}".into(),
        ),
        ("RTL override", "shop\u{202e}pohs".into()),
        ("1 MB", "x".repeat(HUGE_BYTES)),
    ]
}

/// Where a value goes in a tool's arguments.
#[derive(Debug, Clone)]
enum Slot {
    /// A top-level string (or string enum) field.
    Field(String),
    /// A key of a string map (env_set `set`).
    MapKey(String),
    /// A value of a string map.
    MapValue(String),
    /// An item of a string array (env_set `unset`).
    ArrayItem(String),
}

impl Slot {
    fn name(&self) -> String {
        match self {
            Slot::Field(f) => f.clone(),
            Slot::MapKey(f) => format!("{f}.<key>"),
            Slot::MapValue(f) => format!("{f}.<value>"),
            Slot::ArrayItem(f) => format!("{f}[]"),
        }
    }

    fn field(&self) -> &str {
        match self {
            Slot::Field(f) | Slot::MapKey(f) | Slot::MapValue(f) | Slot::ArrayItem(f) => f,
        }
    }
}

/// How a data field is judged instead of "always an error".
struct DataField {
    /// Whether the tool should accept this value as data.
    accepts: fn(&str) -> bool,
    /// Text of the error when the value is refused.
    refusal: &'static str,
    /// Arguments added so that an accepted value changes nothing
    /// (a dry run), or nothing at all when storing it is the point.
    extra: Value,
}

/// The documented exceptions: fields whose values are data, not names.
/// Each is bound only as an SQL parameter or encrypted, never placed in a
/// command, a path or a host name.
fn data_field(tool: &str, slot: &Slot) -> Option<DataField> {
    match (tool, slot) {
        // An env value is the application's data: any text but NUL (no
        // process environment holds NUL), at most 64 KiB. It is encrypted
        // at rest and reaches the container through podman's --env-file,
        // never a command line.
        ("env_set", Slot::MapValue(_)) => Some(DataField {
            accepts: |v| !v.contains('\0') && v.len() <= 64 * 1024,
            refusal: "the value of",
            extra: json!({}),
        }),
        // A rollback reason is free text recorded in the deployments row.
        ("rollback", Slot::Field(f)) if f == "reason" => Some(DataField {
            accepts: |v| v.len() <= 1000 && !v.chars().any(|c| c.is_control() && c != '\n'),
            refusal: "reason must be",
            extra: json!({"dry_run": true}),
        }),
        // An override reason is free text recorded in the deployments row;
        // bidirectional overrides are refused as they would mislead a
        // human reading it.
        ("deploy", Slot::Field(f)) if f == "override_reason" => Some(DataField {
            accepts: |v| codeb::plan::policy::validate_override_reason(v).is_ok(),
            refusal: "override_reason must be",
            extra: json!({"dry_run": true, "environment": "production"}),
        }),
        // An idempotency key is the client's opaque token (e.g. a CI run
        // id), compared as an SQL parameter: printable ASCII, 1-128.
        ("deploy", Slot::Field(f)) if f == "idempotency_key" => Some(DataField {
            accepts: |v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()),
            refusal: "idempotency_key must be",
            extra: json!({"dry_run": true}),
        }),
        _ => None,
    }
}

/// The string slots of one input schema.
fn string_slots(schema: &Value) -> Vec<Slot> {
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let is_stringish = |s: &Value| -> bool {
        let resolve = |s: &Value| -> Value {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => defs[r.trim_start_matches("#/$defs/")].clone(),
                None => s.clone(),
            }
        };
        let s = resolve(s);
        let ty_has_string = |t: &Value| match t {
            Value::String(t) => t == "string",
            Value::Array(ts) => ts.iter().any(|t| t == "string"),
            _ => false,
        };
        ty_has_string(&s["type"])
            || s["enum"].is_array()
            || s["anyOf"].as_array().is_some_and(|alts| {
                alts.iter().any(|a| {
                    let a = resolve(a);
                    ty_has_string(&a["type"]) || a["enum"].is_array()
                })
            })
    };
    let mut out = Vec::new();
    for (field, s) in schema["properties"].as_object().into_iter().flatten() {
        if s["type"] == "object" && s["additionalProperties"]["type"] == "string" {
            out.push(Slot::MapKey(field.clone()));
            out.push(Slot::MapValue(field.clone()));
        } else if s["type"] == "array" && s["items"]["type"] == "string" {
            out.push(Slot::ArrayItem(field.clone()));
        } else if is_stringish(s) {
            out.push(Slot::Field(field.clone()));
        }
    }
    out
}

/// Valid arguments for a tool's required fields.
fn valid_args(tool: &str, schema: &Value, project: &str, fresh: &str) -> Map<String, Value> {
    let mut args = Map::new();
    for field in schema["required"].as_array().into_iter().flatten() {
        let field = field.as_str().unwrap();
        let value = match (tool, field) {
            // A name that does not exist: a project_create that wrongly
            // accepted a value would create it, which the end checks.
            ("project_create", "project") => json!(fresh),
            (_, "project") => json!(project),
            (_, "environment") => json!("staging"),
            (_, "image") => json!(image("v1")),
            (_, "domain") => json!(format!("{project}.example.test")),
            (_, "id" | "approval_id" | "backup_id") => json!(uuid::Uuid::new_v4().to_string()),
            ("key_create", "role") => json!("viewer"),
            (tool, field) => panic!("{tool}: no valid value known for required field {field}"),
        };
        args.insert(field.to_string(), value);
    }
    args
}

fn with_value(mut args: Map<String, Value>, slot: &Slot, value: &str) -> Map<String, Value> {
    let v = match slot {
        Slot::Field(_) => json!(value),
        Slot::MapKey(_) => json!({ value: "x" }),
        Slot::MapValue(_) => json!({ "INJECTION_VALUE": value }),
        Slot::ArrayItem(_) => json!([value]),
    };
    args.insert(slot.field().to_string(), v);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_string_field_of_every_tool_refuses_the_injection_corpus() {
    let _shared = FAULT_LOCK.read().await;
    let server = HttpServer::start().await;
    let client = server.client().await;
    let p = unique_project("inj");
    let fresh = unique_project("injnew");
    structured(&call(&client, "project_create", json!({"project": p})).await);
    let pool = db().await;
    let project_id: i64 = sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
        .bind(&p)
        .fetch_one(&pool)
        .await
        .unwrap();

    let tools = client.list_all_tools().await.expect("tools/list");
    let corpus = corpus();
    let started = Instant::now();
    let (mut calls, mut data_accepted, mut fields) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for tool in &tools {
        let schema = Value::Object((*tool.input_schema).clone());
        let base = valid_args(&tool.name, &schema, &p, &fresh);
        for slot in string_slots(&schema) {
            fields += 1;
            let data = data_field(&tool.name, &slot);
            for (label, value) in &corpus {
                let mut args = with_value(base.clone(), &slot, value);
                if let Some(d) = &data {
                    args.extend(d.extra.as_object().unwrap().clone());
                }
                let what = format!("{} {} ({label})", tool.name, slot.name());
                let call = client.call_tool(
                    CallToolRequestParams::new(tool.name.to_string()).with_arguments(args),
                );
                let r = match tokio::time::timeout(CALL_DEADLINE, call).await {
                    Ok(r) => r.unwrap_or_else(|e| {
                        panic!("{what}: protocol error instead of isError: {e}")
                    }),
                    Err(_) => {
                        failures.push(format!("{what}: no answer within {CALL_DEADLINE:?}"));
                        continue;
                    }
                };
                calls += 1;
                let text: String = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join("\n");
                let accepted_data = data.as_ref().is_some_and(|d| (d.accepts)(value));
                if r.is_error != Some(true) {
                    if accepted_data {
                        data_accepted += 1;
                    } else {
                        failures.push(format!("{what}: accepted: {}", bounded(&text)));
                    }
                    continue;
                }
                if text.len() > MAX_ERROR_BYTES {
                    failures.push(format!(
                        "{what}: error of {} bytes: {}",
                        text.len(),
                        bounded(&text)
                    ));
                    continue;
                }
                if text.trim().is_empty() {
                    failures.push(format!("{what}: empty error"));
                    continue;
                }
                if text.contains(['\0', '\u{202e}'])
                    || (value.contains('\n') && text.contains(value.as_str()))
                {
                    failures.push(format!("{what}: error echoes the raw value: {text:?}"));
                    continue;
                }
                if let Some(d) = &data {
                    // Refused data must be refused for its form, accepted
                    // data must not be blamed on the value.
                    let blamed = text.contains(d.refusal);
                    if accepted_data == blamed {
                        failures.push(format!(
                            "{what}: accepted={accepted_data} but error is {text:?}"
                        ));
                    } else if accepted_data {
                        data_accepted += 1;
                    }
                }
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {calls} injection calls misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "injection corpus: {} tools, {fields} string fields, {} values, {calls} calls ({data_accepted} accepted as data) in {:.1} s",
        tools.len(),
        corpus.len(),
        elapsed.as_secs_f64()
    );
    assert!(
        tools.len() >= 19 && fields >= 40,
        "the corpus covers every tool"
    );

    // Nothing executed: no operation and no journaled command for the
    // project, no project created by a hostile name.
    let (ops, steps): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM deployments WHERE project_id = $1),
                (SELECT count(*) FROM deployment_steps s JOIN deployments d ON d.id = s.deployment_id
                  WHERE d.project_id = $1)",
    )
    .bind(project_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((ops, steps), (0, 0), "no operation or command ran for {p}");
    let hostile: Vec<&str> = corpus
        .iter()
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.contains('\0'))
        .collect();
    let hostile_projects: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projects WHERE name = ANY($1)")
            .bind(&hostile)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(hostile_projects, 0, "no project named by a hostile value");
    let fresh_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE name = $1)")
            .bind(&fresh)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!fresh_exists, "project_create created nothing");

    // Env values were stored as data: encrypted versions, shown only as
    // fingerprints; the last accepted value is the current one.
    let env = structured(
        &call(
            &client,
            "env_get",
            json!({"project": p, "environment": "staging"}),
        )
        .await,
    )
    .clone();
    let shown = env.to_string();
    assert!(shown.contains("INJECTION_VALUE"), "{shown}");
    assert!(
        !shown.contains("$(id)") && !shown.contains("etc/passwd"),
        "values never shown: {shown}"
    );

    // The server still serves: ping, a tool, and /healthz.
    client
        .send_request(rmcp::model::ClientRequest::PingRequest(Default::default()))
        .await
        .expect("ping after the corpus");
    structured(&call(&client, "project_list", json!({})).await);
    let healthz = server.url.trim_end_matches("/mcp").to_string() + "/healthz";
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(healthz)
        .send()
        .await
        .expect("healthz");
    assert!(r.status().is_success(), "{}", r.status());
    super::common::delete_project(&pool, &p).await;
}

fn bounded(s: &str) -> String {
    s.chars().take(300).collect()
}
